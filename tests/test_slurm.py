"""The pipeline through the SLURM executor on a real (one-node, localhost) SLURM cluster.

Needs root and apt (installs Debian's slurmctld, slurmd, slurm-client and munge when
missing); skipped otherwise. The same two-case synthetic cohort goes through a local run
and through `--profile profiles/slurm-ci`; the SLURM run must have really gone through
the scheduler and must give the same catalog, label maps and transforms.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from slurm.cluster import ClusterUnavailable, LocalSlurmCluster, check_can_host

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
N_CASES = 2
SEED = 20261125
# Snakemake stops on SIGTERM only after its running jobs finish: bound it hard. A bound on a
# hang, not a timing: the two runs share 2 cores and took 3.5 min once the standard-space and
# longitudinal stages came (the former 200 s cut a healthy run).
RUN_TIMEOUT_S = 480

CASE_KEY_COLUMNS = ["case_id", "status", "n_lesions", "n_lesions_labelled", "t1c_series_instance_uid",
                    "rtss_sop_instance_uid"]
CASE_NUMERIC_COLUMNS = ["total_lesion_volume_mm3", "t1_rotation_deg", "t1_translation_mm",
                        "t2_rotation_deg", "t2_translation_mm"]
LESION_KEY_COLUMNS = ["case_id", "roi_number", "roi_name", "label", "voxel_count", "n_slices", "hemisphere"]
LESION_NUMERIC_COLUMNS = ["volume_mm3", "contour_volume_mm3", "centroid_lps_x_mm", "centroid_lps_y_mm",
                          "centroid_lps_z_mm"]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> LocalSlurmCluster:
    import importlib.util

    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("the Snakemake SLURM executor plugin is not installed (pip install -e '.[slurm]')")
    try:
        check_can_host()
    except ClusterUnavailable as reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    cluster = LocalSlurmCluster(state_dir=tmp_path_factory.mktemp("slurm_state"))
    # Registered before start(): daemons started by a start() that fails half-way stop too.
    request.addfinalizer(cluster.stop)
    try:
        cluster.start()
    except ClusterUnavailable as reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    return cluster


def snakemake_command(workdir: Path, configfile: Path, output_dir: Path, *options: str) -> list[str]:
    # Each run in its own working directory: its own .snakemake/ (locks, SLURM logs).
    return ["timeout", "-k", "15", str(RUN_TIMEOUT_S), str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(configfile),
            "--config", f"output_dir={output_dir}", *options]


def run_log(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def test_pipeline_on_slurm_matches_local_run(slurm_cluster: LocalSlurmCluster, tmp_path: Path) -> None:
    from metsprep.synth import generate_cohort

    generate_cohort(tmp_path / "cohort", N_CASES, SEED, layout="per_case")
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump({"input_dir": str(tmp_path / "cohort" / "dicom"), "scan": {"shards": 2}}))
    local_out, slurm_out = tmp_path / "local", tmp_path / "slurm"
    for folder in ("wd_local", "wd_slurm"):
        (tmp_path / folder).mkdir()

    # The local reference runs beside the SLURM run: the SLURM run mostly waits on polls.
    local_log = tmp_path / "local.log"
    with open(local_log, "w") as log:
        local = subprocess.Popen(
            snakemake_command(tmp_path / "wd_local", configfile, local_out, "--cores", "1"),
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    try:
        slurm = subprocess.run(
            snakemake_command(tmp_path / "wd_slurm", configfile, slurm_out, "--profile", str(REPO / "profiles/slurm-ci")),
            capture_output=True, text=True, cwd=tmp_path,
        )
    finally:
        local_rc = local.wait(timeout=RUN_TIMEOUT_S + 30)
    assert slurm.returncode == 0, (
        f"SLURM run failed ({slurm.returncode}):\n{slurm.stderr[-6000:]}\n{slurm_cluster.log_tail()}"
    )
    assert local_rc == 0, f"local run failed ({local_rc}):\n{run_log(local_log)}"

    # The jobs went through the scheduler: one sbatch log per SLURM job, per-case work in groups.
    slurm_logs = tmp_path / "wd_slurm" / ".snakemake" / "slurm_logs"
    job_logs = sorted(p.relative_to(slurm_logs).parts[0] for p in slurm_logs.rglob("*.log"))
    assert any(name.startswith("group_case") for name in job_logs), job_logs
    # match runs on the cluster; the aggregation steps (scan, catalog, ...) are localrules.
    assert "rule_match" in job_logs and "rule_catalog" not in job_logs, job_logs
    states = subprocess.run(["squeue", "-h", "--states=all", "-o", "%T"], capture_output=True, text=True).stdout
    assert states.split() and set(states.split()) == {"COMPLETED"}, states
    assert len(states.split()) == len(job_logs)

    # Same results.
    for table, keys, numeric in (("cases", CASE_KEY_COLUMNS, CASE_NUMERIC_COLUMNS),
                                 ("lesions", LESION_KEY_COLUMNS, LESION_NUMERIC_COLUMNS)):
        local_rows = pd.read_parquet(local_out / f"catalog/{table}.parquet").sort_values(keys[:2], ignore_index=True)
        slurm_rows = pd.read_parquet(slurm_out / f"catalog/{table}.parquet").sort_values(keys[:2], ignore_index=True)
        assert len(local_rows) == len(slurm_rows) > 0, table
        pd.testing.assert_frame_equal(local_rows[keys], slurm_rows[keys], obj=f"catalog/{table}")
        pd.testing.assert_frame_equal(local_rows[numeric], slurm_rows[numeric], rtol=1e-6, atol=1e-6,
                                      obj=f"catalog/{table}")
    assert (pd.read_parquet(slurm_out / "catalog/cases.parquet")["status"] == "ok").all()

    import nibabel as nib
    import SimpleITK as sitk

    derivatives = Path("bids/derivatives/metsprep")
    label_maps = sorted(p.relative_to(local_out) for p in (local_out / derivatives).rglob("*_dseg.nii.gz"))
    assert len(label_maps) == N_CASES
    for path in label_maps:
        local_img, slurm_img = nib.load(local_out / path), nib.load(slurm_out / path)
        np.testing.assert_array_equal(np.asarray(local_img.dataobj), np.asarray(slurm_img.dataobj), err_msg=str(path))
        np.testing.assert_allclose(local_img.affine, slurm_img.affine, atol=1e-6, err_msg=str(path))
        assert np.asarray(slurm_img.dataobj).max() > 0, f"{path}: no lesion voxels"

    transforms = sorted(p.relative_to(local_out) for p in (local_out / derivatives).rglob("*_xfm.tfm"))
    # per case T1 -> T1C and T2 -> T1C (rigid) and the T1C's affine to the MNI template
    assert len(transforms) == 3 * N_CASES
    assert sum("to-MNI152NLin2009aSym" in p.name for p in transforms) == N_CASES
    for path in transforms:
        local_tfm, slurm_tfm = sitk.ReadTransform(str(local_out / path)), sitk.ReadTransform(str(slurm_out / path))
        # Parameters: rotation angles (rad) then translation (mm); the matrix then translation (affine).
        np.testing.assert_allclose(local_tfm.GetParameters(), slurm_tfm.GetParameters(), atol=1e-5, err_msg=str(path))
        np.testing.assert_allclose(local_tfm.GetFixedParameters(), slurm_tfm.GetFixedParameters(), atol=1e-6)

    assert os.path.getsize(slurm_out / "qc/index.html") > 0
