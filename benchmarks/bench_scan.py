"""Scan speed: metsprep.scan (headers only, shard of all files) vs a plain pydicom loop.

Not a test. Generates (or reuses) a synthetic cohort and prints files/s per core of
`scan_shard(..., 0, 1, ...)` and of `pydicom.dcmread(path, stop_before_pixels=True)` over
the same files, and their ratio. Both run in one process, alternately, best of N.

    .venv/bin/python benchmarks/bench_scan.py [COHORT_DIR] [--cases 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import pydicom

from metsprep.scan import list_files, read_file_row, scan_shard


def plain_loop(dicom_dir: Path, files: list[str]) -> None:
    for rel in files:
        with contextlib.suppress(Exception):
            pydicom.dcmread(dicom_dir / rel, stop_before_pixels=True)


def _is_structure_set_name(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1].lower()
    return "rtss" in name or name.startswith("rs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cohort", nargs="?", type=Path)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_scan_"))
    cohort = args.cohort
    if cohort is None:
        from metsprep.synth import generate_cohort

        cohort = work / "cohort"
        generate_cohort(cohort, args.cases, seed=5, layout="per_case")
    dicom_dir = cohort / "dicom" if (cohort / "dicom").is_dir() else cohort
    files = list_files(dicom_dir)
    plain_loop(dicom_dir, files)  # warm the page cache
    best_scan = best_plain = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scan_shard(dicom_dir, 0, 1, work / "shard.parquet")
        best_scan = min(best_scan, time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_loop(dicom_dir, files)
        best_plain = min(best_plain, time.perf_counter() - t0)
    images = [f for f in files if not _is_structure_set_name(f)]
    best_rows = best_plain_images = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for rel in images:
            read_file_row(dicom_dir, rel)
        best_rows = min(best_rows, time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_loop(dicom_dir, images)
        best_plain_images = min(best_plain_images, time.perf_counter() - t0)
    n = len(files)
    print(f"files: {n}")
    print(f"metsprep.scan        : {n / best_scan:8.0f} files/s (one core, incl. walk + parquet write)")
    print(f"plain dcmread loop   : {n / best_plain:8.0f} files/s (stop_before_pixels=True)")
    print(f"ratio scan / plain   : {best_plain / best_scan:.2f}")
    m = len(images)
    print(f"image files only ({m}): read_file_row {m / best_rows:.0f} files/s, plain {m / best_plain_images:.0f} "
          f"files/s, ratio {best_plain_images / best_rows:.2f}")


if __name__ == "__main__":
    main()
