"""Shared fixtures. `synth_cohort`: a small synthetic cohort generated once per session."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

SYNTH_SEED = 20261125
SYNTH_CASES = 4


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """4 default cases (seed 20261125, per_case layout).

    Returns an object with `root` (cohort folder), `dicom_dir` (root/dicom, the pipeline
    input) and `truth` (the parsed truth/truth.json dict, see src/metsprep/synth/README.md).
    """
    from metsprep.synth import generate_cohort

    root: Path = tmp_path_factory.mktemp("synth_cohort")
    truth = generate_cohort(root, SYNTH_CASES, SYNTH_SEED, layout="per_case")
    return SimpleNamespace(root=root, dicom_dir=root / "dicom", truth=truth)
