"""What every stage script does first (Snakemake puts this folder on sys.path).

The library of this checkout goes first on sys.path, so the scripts run it even where
metsprep is not installed (e.g. `--sdm conda`); stderr and logging go to the rule's log.
"""

import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


def start(snakemake: Any) -> None:
    from metsprep.logs import start_log

    start_log(snakemake.log[0])


def optional_input(snakemake: Any, name: str) -> Path | None:
    """The one file of an input that is either empty or a single path (a list or a str)."""
    value = snakemake.input.get(name) or []
    paths = [value] if isinstance(value, str) else list(value)
    return Path(paths[0]) if paths else None
