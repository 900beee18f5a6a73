"""Atomic file writes: every file is written to a temporary name beside it and renamed.

A killed job then leaves either the previous file or nothing under the final name, never
a half-written file that looks complete (rename is atomic on one POSIX filesystem).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metsprep.jsonio import to_jsonable


def _temporary_name(path: Path) -> Path:
    # Keep the final suffixes (.nii.gz, .parquet): some writers choose the format by them.
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(final)
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | Path, payload: Any) -> None:
    """Strict JSON (non-finite floats as null, numpy values as Python ones), indented."""
    text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False, ensure_ascii=False)
    write_text(path, text + "\n")


def write_with(path: str | Path, writer: Callable[[str], object]) -> None:
    """Call ``writer(temporary_path)`` (e.g. ``nib.save``, ``pq.write_table``) atomically."""
    with atomic_path(path) as temporary:
        writer(str(temporary))


def write_parquet(path: str | Path, table: Any) -> None:
    import pyarrow.parquet as pq

    write_with(path, lambda name: pq.write_table(table, name))


def write_nifti(path: str | Path, image: Any) -> None:
    import nibabel as nib

    write_with(path, lambda name: nib.save(image, name))
