"""Python and numpy values to what `json.dumps` writes as strict JSON."""

import math
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Dict keys as strings, tuples and arrays as lists, numpy scalars as Python numbers,
    and non-finite floats as null (JSON has no NaN or Infinity)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
