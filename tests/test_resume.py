"""A run killed with SIGKILL mid-way and resumed as README says equals an uninterrupted run;
a rerun after adding cases reruns only what changed and moves no case between split sets.

Both tests start from one uninterrupted run of a two-case cohort (the `first_run` fixture):
the first compares against it, the second then adds to it (so it runs last)."""

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

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


def _config(tmp: Path, input_dir: Path, output_dir: Path) -> Path:
    path = tmp / f"{output_dir.name}.yaml"
    path.write_text(f"input_dir: '{input_dir}'\noutput_dir: '{output_dir}'\nscan:\n  shards: 1\n")
    return path


def _snakemake(config: Path, workdir: Path, *extra: str) -> list[str]:
    # each run its own working directory: its own .snakemake/ (locks, incomplete markers)
    return [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "1",
            "--configfile", str(config), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory):
    from metsprep.synth import generate_cohort

    root = tmp_path_factory.mktemp("resume")
    truth = generate_cohort(root / "first", 2, 31, layout="per_case")
    input_dir, output_dir = root / "first" / "dicom", root / "reference"
    config = _config(root, input_dir, output_dir)
    (root / "wd-reference").mkdir()
    done = subprocess.run(_snakemake(config, root / "wd-reference"), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return root, truth, input_dir, output_dir, config


def test_sigkill_then_resume_equals_uninterrupted_run(first_run, tmp_path: Path) -> None:
    _, _, input_dir, reference, _ = first_run
    killed = tmp_path / "killed"
    (tmp_path / "wd-killed").mkdir()

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

    for table in ("series", "cases", "lesions", "inventory", "splits", "exports"):
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


def test_a_rerun_after_adding_cases_and_a_change_reruns_only_what_changed(first_run, tmp_path: Path) -> None:
    """Cases are added (rescan as README says) and one processed case changes (its T2 relabelled
    OTHER by an override). The new case runs; the changed case runs again and leaves no file of
    its previous run (its T2 NIfTI, sidecar, registered image, transform); the untouched case is
    not run again: matching rewrites every plan, but Snakemake compares the content of small
    changed inputs (checksums in .snakemake/metadata). No earlier case changes split set: the
    split ledger (the first split) is not rerun and the new case is placed around it."""
    import shutil

    import yaml

    from metsprep.synth import generate_cohort

    root, truth, input_dir, output_dir, config = first_run
    generate_cohort(tmp_path / "later", 1, 77, layout="per_case")
    cases = pd.read_parquet(output_dir / "catalog" / "cases.parquet").set_index("study_instance_uid")
    changed_case, kept_case = (cases.loc[c["study_instance_uid"], "case_id"] for c in truth["cases"])
    t2_files = sorted((output_dir / "bids").rglob(f"{changed_case}*T2w*"))
    assert len(t2_files) >= 4  # raw NIfTI + JSON, registered NIfTI + JSON, transform
    # every file of the untouched case but its plan (matching rewrites all plans, same bytes)
    kept = {p: p.stat().st_mtime_ns for p in output_dir.rglob(f"*{kept_case}*")
            if p.is_file() and "match" not in p.parts}  # fmt: skip
    kept |= {p: p.stat().st_mtime_ns for p in (output_dir / "work" / "cases" / kept_case).rglob("*") if p.is_file()}
    assert len(kept) > 15
    sets_before = pd.read_parquet(output_dir / "catalog" / "splits.parquet").set_index("case_id")["set_name"]
    ledger = output_dir / "catalog" / "split_ledger.parquet"
    ledger_written = ledger.stat().st_mtime_ns

    shutil.copytree(tmp_path / "later" / "dicom", input_dir / "added")
    settings = yaml.safe_load(config.read_text())
    settings["match"] = {"sequence_overrides": {truth["cases"][0]["series"]["T2"]["series_instance_uid"]: "OTHER"}}
    config.write_text(yaml.safe_dump(settings))
    second = subprocess.run(_snakemake(config, root / "wd-reference", "--forcerun", "scan_list"),
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert [p for p in (output_dir / "bids").rglob(f"{changed_case}*T2w*")] == []
    assert [str(p) for p, ns in kept.items() if p.stat().st_mtime_ns != ns] == []
    cases = pd.read_parquet(output_dir / "catalog" / "cases.parquet").set_index("case_id")
    assert len(cases) == 3 and (cases["status"] == "ok").all()
    assert pd.isna(cases.loc[changed_case, "t2_nifti"]) and not pd.isna(cases.loc[kept_case, "t2_nifti"])

    splits = pd.read_parquet(output_dir / "catalog" / "splits.parquet").set_index("case_id")
    assert ledger.stat().st_mtime_ns == ledger_written
    assert splits.loc[sets_before.index, "set_name"].to_dict() == sets_before.to_dict()
    added = sorted(set(splits.index) - set(sets_before.index))
    assert len(added) == 1 and splits.loc[added[0], "assigned_by"] == "balanced"
