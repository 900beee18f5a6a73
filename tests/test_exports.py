"""Model-training exports (metsprep.export) of constructed cases: the rule for incomplete
cases, one grid for images and labels, hard links or copies, and the cohort layout
(nnU-Net folders, dataset.json, splits_final.json, MONAI datalists) against the splits.

nnU-Net's own integrity check, MONAI's loader and mlcroissant run on a pipeline output in
tests/test_ml_exports.py (marked `ml`: they need torch; `make test-heavy`).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metsprep.contracts import SCHEMA_VERSION, CaseSummary
from metsprep.export import ExportCaseResult, export_case, export_monai, export_nnunet, write_export_table
from metsprep.settings import ExportSettings

SHAPE = (12, 10, 6)
AFFINE = np.array([[-0.9, 0, 0, 50.0], [0, -0.9, 0, 60.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path.name


def make_case(output_dir: Path, case_id: str, *, t2: bool = True, t2_trusted: bool = True,
              t2_affine: np.ndarray = AFFINE, mask_value: int = 1, status: str = "ok") -> CaseSummary:
    rng = np.random.default_rng(abs(hash(case_id)) % 2**32)
    anat = output_dir / "bids" / case_id
    rel = lambda name: f"bids/{case_id}/{name}"  # noqa: E731
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:6, 3:6, 2:4] = 1
    labels[8:10, 6:8, 1:2] = 2
    row = {
        "case_id": case_id, "patient_id": case_id.split("_")[0], "status": status,
        "status_reason": None if status == "ok" else "no T1C series",
        "t1c_nifti": rel(_save(anat / "t1c.nii.gz", rng.integers(0, 900, SHAPE).astype(np.int16))),
        "t1_in_t1c_nifti": rel(_save(anat / "t1.nii.gz", rng.integers(0, 900, SHAPE).astype(np.int16))),
        "t2_in_t1c_nifti": rel(_save(anat / "t2.nii.gz", rng.integers(0, 900, SHAPE).astype(np.int16), t2_affine))
        if t2 else None,
        "lesion_labels_nifti": rel(_save(anat / "labels.nii.gz", labels)),
        "lesion_mask_nifti": rel(_save(anat / "mask.nii.gz", (labels > 0).astype(np.uint8) * mask_value)),
        "t1_registration_trusted": True,
        "t2_registration_trusted": (t2_trusted if t2 else None),
        "t2_registration_flag": None if t2_trusted else "check disagrees by 2.4 mm",
    }
    return CaseSummary(schema_version=SCHEMA_VERSION, case_id=case_id, status=status, row=row,
                       series_nifti={}, series_checks={})


def run(tmp_path: Path, summary: CaseSummary, **settings) -> ExportCaseResult:
    result_path = tmp_path / "work" / f"{summary.case_id}.export.json"
    result = export_case(summary, ExportSettings(**settings), tmp_path, result_path)
    assert ExportCaseResult.read(result_path) == result  # the stage file says what was returned
    return result


def test_complete_case_is_hard_linked_in_channel_order(tmp_path):
    summary = make_case(tmp_path, "sub-A_ses-01")
    result = run(tmp_path, summary)
    assert result.included and result.reason is None and result.max_label == 1
    assert [c.name for c in result.channels] == ["T1C", "T1", "T2"]
    assert [Path(str(c.file)).name for c in result.channels] == [
        "sub-A_ses-01_0000.nii.gz", "sub-A_ses-01_0001.nii.gz", "sub-A_ses-01_0002.nii.gz"]
    for channel, column in zip(result.channels, ("t1c_nifti", "t1_in_t1c_nifti", "t2_in_t1c_nifti")):
        assert (tmp_path / str(channel.file)).samefile(tmp_path / summary.row[column])
    assert (tmp_path / str(result.label)).samefile(tmp_path / summary.row["lesion_mask_nifti"])


def test_copies_and_instance_labels_by_config(tmp_path):
    summary = make_case(tmp_path, "sub-A_ses-01")
    result = run(tmp_path, summary, link="copy", labels="instance")
    label = tmp_path / str(result.label)
    source = tmp_path / summary.row["lesion_labels_nifti"]
    assert not label.samefile(source) and label.read_bytes() == source.read_bytes()
    assert result.max_label == 2 and result.label_kind == "instance"


def test_missing_t2_left_out_or_zero_filled_on_the_t1c_grid(tmp_path):
    summary = make_case(tmp_path, "sub-B_ses-01", t2=False)
    left_out = run(tmp_path, summary)
    assert not left_out.included and "no T2" in str(left_out.reason)
    filled = run(tmp_path, summary, missing_channel="zero_fill")
    assert filled.included and "zeros" in str(filled.reason)
    t2 = filled.channels[2]
    assert t2.zero_filled and t2.source is None
    image, t1c = nib.load(tmp_path / str(t2.file)), nib.load(tmp_path / summary.row["t1c_nifti"])
    assert image.shape == t1c.shape and np.allclose(image.affine, t1c.affine)
    assert not np.asarray(image.dataobj).any()


def test_untrusted_registration_by_policy(tmp_path):
    summary = make_case(tmp_path, "sub-C_ses-01", t2_trusted=False)
    excluded = run(tmp_path, summary)
    assert not excluded.included and "T2 registration is untrusted (check disagrees by 2.4 mm" in str(excluded.reason)
    kept = run(tmp_path, summary, untrusted_registration="keep")
    assert kept.included and kept.channels[2].untrusted_kept and not kept.channels[2].zero_filled
    zeroed = run(tmp_path, summary, untrusted_registration="zero_fill")
    assert zeroed.channels[2].zero_filled


def test_channel_off_the_t1c_grid_is_left_out_with_the_offset(tmp_path):
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    result = run(tmp_path, make_case(tmp_path, "sub-D_ses-01", t2_affine=shifted))
    assert not result.included
    assert "channel T2 is not on the T1C grid" in str(result.reason) and "0.5 mm" in str(result.reason)


def test_binary_mask_with_other_values_and_excluded_case_are_left_out(tmp_path):
    bad_mask = run(tmp_path, make_case(tmp_path, "sub-E_ses-01", mask_value=3))
    assert not bad_mask.included and "value 3" in str(bad_mask.reason)
    excluded = run(tmp_path, make_case(tmp_path, "sub-F_ses-01", status="excluded"))
    assert not excluded.included and excluded.reason == "the case is excluded: no T1C series"


def _splits(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_cohort_layout_follows_the_splits(tmp_path):
    ids = ["sub-A_ses-01", "sub-A_ses-02", "sub-B_ses-01", "sub-C_ses-01", "sub-D_ses-01"]
    sets = {"sub-A_ses-01": ("train", 0), "sub-A_ses-02": ("train", 0), "sub-B_ses-01": ("train", 1),
            "sub-C_ses-01": ("test", None), "sub-D_ses-01": ("train", 1)}
    summaries = [make_case(tmp_path, cid, t2=cid != "sub-D_ses-01") for cid in ids]
    results = []
    for s in summaries:
        path = tmp_path / "work" / f"{s.case_id}.json"
        export_case(s, ExportSettings(), tmp_path, path)
        results.append(path)
    splits = _splits(tmp_path / "splits.parquet", [
        {"case_id": cid, "split": split, "fold": fold, "set_name": "test" if fold is None else f"fold{fold}"}
        for cid, (split, fold) in sets.items()])
    cases = _splits(tmp_path / "cases.parquet", [
        {"case_id": cid, "patient_id": cid[:5], "status_reason": None, "qc_rating": None, "qc_comment": None}
        for cid in ids])
    dataset = tmp_path / "exports" / "nnunet" / "Dataset501_BrainMets"
    export_nnunet(results, splits, cases, ExportSettings(), 2, 5, tmp_path, dataset)

    listed = {p.name for p in (dataset / "imagesTr").iterdir()}
    assert listed == {f"{cid}_{k:04d}.nii.gz" for cid in ("sub-A_ses-01", "sub-A_ses-02", "sub-B_ses-01")
                      for k in range(3)}  # sub-D has no T2: left out
    assert {p.name for p in (dataset / "imagesTs").iterdir()} == {f"sub-C_ses-01_{k:04d}.nii.gz" for k in range(3)}
    assert {p.name for p in (dataset / "labelsTs").iterdir()} == {"sub-C_ses-01.nii.gz"}
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["channel_names"] == {"0": "T1C", "1": "T1", "2": "T2"}
    assert meta["labels"] == {"background": 0, "lesion": 1} and meta["file_ending"] == ".nii.gz"
    folds = json.loads((dataset / "splits_final.json").read_text())
    assert folds == [{"train": ["sub-B_ses-01"], "val": ["sub-A_ses-01", "sub-A_ses-02"]},
                     {"train": ["sub-A_ses-01", "sub-A_ses-02"], "val": ["sub-B_ses-01"]}]

    monai = [tmp_path / "exports" / "monai" / f"fold{k}.json" for k in range(2)]
    export_monai(results, splits, cases, 2, tmp_path, monai)
    fold1 = json.loads(monai[1].read_text())
    assert [i["case_id"] for i in fold1["validation"]] == ["sub-B_ses-01"]
    assert [i["case_id"] for i in fold1["test"]] == ["sub-C_ses-01"]
    item = fold1["training"][0]
    assert (monai[1].parent / item["image"][0]).resolve().samefile(tmp_path / summaries[0].row["t1c_nifti"])
    assert (monai[1].parent / item["label"]).resolve().samefile(tmp_path / summaries[0].row["lesion_mask_nifti"])

    table_path = tmp_path / "exports.parquet"
    write_export_table(results, splits, cases, "exports/nnunet/Dataset501_BrainMets", table_path)
    table = pq.read_table(table_path).to_pandas().set_index("case_id")
    assert table["exported"].to_dict() == {cid: cid != "sub-D_ses-01" for cid in ids}
    assert "no T2" in table.loc["sub-D_ses-01", "export_reason"]
    assert list(table.loc["sub-C_ses-01", "nnunet_images"])[0].endswith("imagesTs/sub-C_ses-01_0000.nii.gz")
    for image in table.loc["sub-A_ses-02", "nnunet_images"]:
        assert (tmp_path / image).exists()

    # a case a reviewer failed leaves the cohort exports, with the comment as the reason
    reviewed = _splits(tmp_path / "reviewed.parquet", [
        {"case_id": cid, "patient_id": cid[:5], "status_reason": None,
         "qc_rating": "fail" if cid == "sub-B_ses-01" else None,
         "qc_comment": "lesion outlined on the wrong slice" if cid == "sub-B_ses-01" else None} for cid in ids])
    write_export_table(results, splits, reviewed, "exports/nnunet/Dataset501_BrainMets", table_path)
    table = pq.read_table(table_path).to_pandas().set_index("case_id")
    assert not table.loc["sub-B_ses-01", "exported"] and len(table.loc["sub-B_ses-01", "nnunet_images"]) == 0
    assert table.loc["sub-B_ses-01", "export_reason"].endswith(": lesion outlined on the wrong slice")
    export_monai(results, splits, reviewed, 2, tmp_path, monai)
    assert "sub-B_ses-01" not in monai[1].read_text()


def test_exported_case_missing_from_the_splits_is_an_error(tmp_path):
    summary = make_case(tmp_path, "sub-A_ses-01")
    path = tmp_path / "r.json"
    export_case(summary, ExportSettings(), tmp_path, path)
    splits = _splits(tmp_path / "splits.parquet", [{"case_id": "sub-Z_ses-01", "split": "train", "fold": 0}])
    cases = _splits(tmp_path / "cases.parquet", [{"case_id": "sub-A_ses-01", "qc_rating": None, "qc_comment": None}])
    with pytest.raises(ValueError, match="not in"):
        export_monai([path], splits, cases, 1, tmp_path, [tmp_path / "f0.json"])
