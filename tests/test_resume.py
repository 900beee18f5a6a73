"""A run killed with SIGKILL mid-way and resumed as README says equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

pytestmark = pytest.mark.slow


def _config(tmp: Path, input_dir: Path, output_dir: Path) -> Path:
    path = tmp / f"{output_dir.name}.yaml"
    path.write_text(f"input_dir: '{input_dir}'\noutput_dir: '{output_dir}'\nscan:\n  shards: 1\n")
    return path


def _snakemake(config: Path, workdir: Path, *extra: str) -> list[str]:
    # each run its own working directory: its own .snakemake/ (locks, incomplete markers)
    return [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "1",
            "--configfile", str(config), *extra]  # fmt: skip


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    from metsprep.synth import generate_cohort

    generate_cohort(tmp_path / "cohort", 2, 31, layout="per_case")
    input_dir = tmp_path / "cohort" / "dicom"
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for out in (reference, killed):
        (tmp_path / f"wd-{out.name}").mkdir()

    done = subprocess.run(_snakemake(_config(tmp_path, input_dir, reference), tmp_path / "wd-reference"),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]

    config = _config(tmp_path, input_dir, killed)
    workdir = tmp_path / "wd-killed"
    process = subprocess.Popen(_snakemake(config, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while not list((killed / "work" / "cases").glob("*/bids.json")):  # the per-case stages have begun
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.5)  # inside a later job
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "catalog" / "cases.parquet").exists(), "killed too late to test anything"

    # resume as README says: unlock, then run again (incomplete outputs are rerun)
    for extra in (("--unlock",), ("--rerun-incomplete",)):
        resumed = subprocess.run(_snakemake(config, workdir, *extra), capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-4000:]

    for table in ("series", "cases", "lesions", "inventory"):
        a = pd.read_parquet(reference / "catalog" / f"{table}.parquet")
        b = pd.read_parquet(killed / "catalog" / f"{table}.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    images = sorted(p.relative_to(reference) for p in (reference / "bids").rglob("*.nii.gz"))
    assert images == sorted(p.relative_to(killed) for p in (killed / "bids").rglob("*.nii.gz"))
    for relative in images:
        assert np.array_equal(np.asarray(nib.load(reference / relative).dataobj),
                              np.asarray(nib.load(killed / relative).dataobj)), relative  # fmt: skip
    # a job killed while writing can leave a `.tmp-<pid>-<name>` beside its output (never a
    # file under the final name): the equality above is what matters
