"""Stage contracts: strict JSON round-trips, and every producer's real output read by its consumer."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from metsprep.contracts import (
    SCHEMA_VERSION,
    BidsResult,
    CasePlan,
    CaseSummary,
    ContractError,
    RegisterResult,
    RtssResult,
    StandardSpaceResult,
)

import stages

CONTRACTS = {"plan": CasePlan, "bids": BidsResult, "rtss": RtssResult, "register": RegisterResult,
             "standard_space": StandardSpaceResult, "case": CaseSummary}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic case through match, bids, rtss, register, standard_space and catalog_case, each stage
    reading the files the previous one really wrote."""
    from metsprep.bids import convert_case
    from metsprep.catalog.case import catalog_case
    from metsprep.register import register_case
    from metsprep.rtss import rasterize_case
    from metsprep.settings import (
        BidsSettings,
        LocationSettings,
        RegistrationSettings,
        RtssSettings,
        StandardSpaceSettings,
    )
    from metsprep.standard_space import standard_space_case
    from metsprep.synth import generate_cohort

    root = tmp_path_factory.mktemp("chain")
    truth = generate_cohort(root / "cohort", 1, 3, layout="per_case")
    (case_id, plan), = stages.match_plans(root / "cohort" / "dicom", root / "match").items()
    assert case_id == stages.truth_case_id(truth["cases"][0])
    out, work = root / "out", root / "out" / "work" / "cases" / case_id
    files = {"plan": plan, **{k: work / f"{k}.json" for k in ("bids", "rtss", "register", "standard_space", "case")}}
    convert_case(plan, out, files["bids"], BidsSettings())
    rasterize_case(plan, files["bids"], out, files["rtss"], work / "rois.parquet", work / "contours.parquet",
                   RtssSettings())  # fmt: skip
    register_case(files["bids"], out, files["register"], RegistrationSettings(levels_mm=(4.0, 2.0), samples_per_level=(4000, 8000)))
    standard_space_case(files["bids"], out, files["standard_space"], StandardSpaceSettings())
    catalog_case(plan, files["bids"], files["rtss"], work / "rois.parquet", files["register"], files["standard_space"],
                 LocationSettings(), out, work / "lesions.parquet", files["case"])  # fmt: skip
    return {**files, "out": out}


@pytest.mark.parametrize("stage", list(CONTRACTS))
def test_each_stage_file_round_trips_exactly(chain: dict[str, Path], stage: str) -> None:
    written = json.loads(chain[stage].read_text())
    result = CONTRACTS[stage].read(chain[stage])
    assert result.status == "ok" if hasattr(result, "status") else True
    assert result.to_dict() == written  # nothing dropped, nothing added, same types


def test_the_chain_carries_the_real_paths(chain: dict[str, Path]) -> None:
    bids, rtss = BidsResult.read(chain["bids"]), RtssResult.read(chain["rtss"])
    register, summary = RegisterResult.read(chain["register"]), CaseSummary.read(chain["case"])
    assert summary.row["t1c_nifti"] == bids.images["T1C"].nifti
    assert rtss.outputs is not None and summary.row["lesion_labels_nifti"] == rtss.outputs.lesion_labels_nifti
    t1 = register.usable("T1")
    assert t1 is not None and summary.row["t1_to_t1c_transform"] == t1.transform
    assert summary.row["t1_rotation_deg"] == t1.rotation_deg
    for relative in (bids.images["T1C"].nifti, rtss.outputs.lesion_mask_nifti, t1.transform, t1.image):
        assert (chain["out"] / relative).is_file(), relative
    assert summary.series_nifti[bids.images["T1C"].series_instance_uid] == bids.images["T1C"].nifti


@pytest.mark.parametrize("stage", ["plan", "bids", "rtss", "register", "case"])
def test_unknown_missing_mistyped_and_other_version_are_errors(chain: dict[str, Path], stage: str, tmp_path: Path) -> None:
    good = json.loads(chain[stage].read_text())
    cls = CONTRACTS[stage]
    bad_files = {
        "unknown key": {**good, "surprise": 1},
        "missing key": {k: v for k, v in good.items() if k != "case_id"},
        "wrong type": {**good, "case_id": 17},
        "other version": {**good, "schema_version": SCHEMA_VERSION + 1},
    }
    for why, payload in bad_files.items():
        path = tmp_path / f"{why}.json"
        path.write_text(json.dumps(payload))
        with pytest.raises(ContractError):
            cls.read(path)


def test_nested_values_are_checked_too(chain: dict[str, Path], tmp_path: Path) -> None:
    good = json.loads(chain["bids"].read_text())
    good["images"]["T1C"]["shape"] = [1, 2]  # a grid needs 3 dimensions
    path = tmp_path / "bids.json"
    path.write_text(json.dumps(good))
    with pytest.raises(ContractError, match="shape"):
        BidsResult.read(path)
    good = json.loads(chain["bids"].read_text())
    good["images"]["FLAIR"] = good["images"]["T1C"]
    path.write_text(json.dumps(good))
    with pytest.raises(ContractError, match="FLAIR"):
        BidsResult.read(path)


def test_plan_case_id_must_match_its_labels(chain: dict[str, Path]) -> None:
    plan = CasePlan.read(chain["plan"])
    with pytest.raises(ContractError, match="does not match"):
        replace(plan, session="99")


def test_non_finite_numbers_are_not_written(chain: dict[str, Path], tmp_path: Path) -> None:
    register = RegisterResult.read(chain["register"])
    t1 = register.registrations["T1"]
    assert t1 is not None
    broken = replace(register, registrations={**register.registrations, "T1": replace(t1, metric_after=float("nan"))})
    with pytest.raises(ContractError, match="non-finite"):
        broken.write(tmp_path / "register.json")
