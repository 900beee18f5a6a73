"""The pipeline on good cases mixed with every kind of broken input (issue: no silent wrong
results on broken input).

One cohort; each fault is planted in its own case; junk files are added; the input is made
read-only. The run must exit 0, leave every input byte as it was, keep the good cases with their
truth volumes, and for each fault either exclude the case with a reason or keep it with every
affected lesion flagged on its own row; no two lesions of a case share a label; and no
identifying value planted in the input reaches any output byte.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from pydicom.uid import generate_uid

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ["duplicate_roi_number", "nan_contour", "text_contour", "self_intersecting", "foreign_frame",
          "empty_roi", "missing_t1c_slice", "identifying_and_malformed", "t2_labelled_t1"]  # fmt: skip
GOOD = 2  # the first cases stay untouched
NAME, BIRTH, INSTITUTION, PHYSICIAN = "Mustermann^Erika", "19640124", "Klinikum Nirgendwo", "Zhivago^Yuri"
TEXT_MARKER = "12345.678901"


def damaged_roi(case: dict) -> int:
    """The lesion a contour fault is planted in: the one with most contours (one contour lost
    leaves it partial, not unusable)."""
    return max(case["lesions"], key=lambda les: les["n_contours"])["roi_number"]


def _lesion_contours(ds, number):
    item = next(i for i in ds.ROIContourSequence if int(i.ReferencedROINumber) == number)
    return item


def _plant(fault: str, case: dict, dicom: Path) -> None:
    rtss_path = dicom / case["rtss"]["file"]
    lesion = damaged_roi(case)
    if fault in ("duplicate_roi_number", "nan_contour", "text_contour", "self_intersecting", "foreign_frame",
                 "empty_roi"):  # fmt: skip
        ds = pydicom.dcmread(rtss_path)
        contours = _lesion_contours(ds, lesion).ContourSequence
        middle = contours[len(contours) // 2]
        if fault == "duplicate_roi_number":
            first, last = ds.StructureSetROISequence[0], ds.StructureSetROISequence[-1]
            last.ROINumber = first.ROINumber
        elif fault == "nan_contour":
            middle.ContourData = ["nan", *list(middle.ContourData)[1:]]
        elif fault == "text_contour":
            middle.ContourData = [TEXT_MARKER, *list(middle.ContourData)[1:]]
        elif fault == "self_intersecting":
            pts = np.array(middle.ContourData, dtype=float).reshape(-1, 3)
            (cx, cy), z = pts[:, :2].mean(axis=0), pts[0, 2]
            r = max(2.0, float(np.ptp(pts[:, 0])) / 2)
            tie = [(cx - r, cy - r), (cx + r, cy + 0.5 * r), (cx + r, cy - r), (cx - r, cy + 0.3 * r)]
            middle.ContourData = [f"{v:.4f}" for x, y in tie for v in (x, y, z)]
            middle.NumberOfContourPoints = 4
        elif fault == "foreign_frame":
            other = generate_uid()
            for item in ds.ReferencedFrameOfReferenceSequence:
                item.FrameOfReferenceUID = other
            for item in ds.StructureSetROISequence:
                item.ReferencedFrameOfReferenceUID = other
            for roi in ds.ROIContourSequence:  # and references that resolve to nothing
                for contour in roi.ContourSequence:
                    for image in contour.get("ContourImageSequence", []):
                        image.ReferencedSOPInstanceUID = generate_uid()
            for item in ds.ReferencedFrameOfReferenceSequence:
                for study in item.get("RTReferencedStudySequence", []):
                    for series in study.get("RTReferencedSeriesSequence", []):
                        series.SeriesInstanceUID = generate_uid()
        elif fault == "empty_roi":
            del _lesion_contours(ds, lesion).ContourSequence
        ds.save_as(rtss_path)
        if fault == "text_contour":
            raw = rtss_path.read_bytes()
            rtss_path.write_bytes(raw.replace(TEXT_MARKER.encode(), b"abc".ljust(len(TEXT_MARKER)), 1))
    elif fault == "missing_t1c_slice":
        files = [f for f in case["series"]["T1C"]["files"] if f]
        (dicom / files[len(files) // 3]).unlink()
    elif fault == "identifying_and_malformed":
        for role in ("T1C", "T1", "T2"):
            for rel in case["series"][role]["files"]:
                if not rel:
                    continue
                ds = pydicom.dcmread(dicom / rel)
                ds.PatientName, ds.PatientBirthDate = NAME, BIRTH
                ds.InstitutionName, ds.ReferringPhysicianName = INSTITUTION, PHYSICIAN
                ds.StudyDate = "19011345"
                ds.SpecificCharacterSet = "ISO_IR 999"
                ds.add_new(0x00291010, "LO", "PRIVATE-" + INSTITUTION)
                ds.save_as(dicom / rel)


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}  # fmt: skip


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from metsprep.synth import generate_cohort

    import faults

    root = tmp_path_factory.mktemp("hostile")
    n = GOOD + len(FAULTS)
    # two lesions per case, one large enough for many contours (a lost contour leaves it partial)
    options = {i: {"lesions": [{"diameter_mm": 18.0}, {"diameter_mm": 6.0}]} for i in range(n)}
    options[GOOD + FAULTS.index("t2_labelled_t1")]["omit_series"] = ["T1"]  # its T2 is then labelled T1
    truth = generate_cohort(root / "cohort", n, seed=41, case_options=options)
    dicom = root / "cohort" / "dicom"
    planted = {}
    for k, fault in enumerate(FAULTS):
        case = truth["cases"][GOOD + k]
        _plant(fault, case, dicom)
        planted[fault] = case
    faults.add_junk_files(dicom)
    faults.add_dicomdir(dicom)
    faults.symlink_loop(dicom)
    (dicom / "zero.dcm").write_bytes(b"")
    before = _checksums(dicom)
    for path in [dicom, *dicom.rglob("*")]:  # read-only input
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    config = root / "config.yaml"
    mislabelled = planted["t2_labelled_t1"]["series"]["T2"]["series_instance_uid"]
    config.write_text(yaml.safe_dump({"input_dir": str(dicom), "output_dir": str(root / "out"), "scan": {"shards": 2},
                                      "match": {"sequence_overrides": {mislabelled: "T1"}}}))  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1500)  # fmt: skip
    for path in [dicom, *dicom.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    out = root / "out" / "catalog"
    cases = pd.read_parquet(out / "cases.parquet") if run.returncode == 0 else None
    return {
        "run": run, "truth": truth, "planted": planted, "root": root, "before": before, "after": _checksums(dicom),
        "cases": cases.set_index("study_instance_uid") if cases is not None else None,
        "lesions": pd.read_parquet(out / "lesions.parquet") if run.returncode == 0 else None,
        "audit": pd.read_parquet(out / "deid_audit.parquet") if run.returncode == 0 else None,
        "series": pd.read_parquet(out / "series.parquet") if run.returncode == 0 else None,
    }  # fmt: skip


def _case(h, fault):
    return h["cases"].loc[h["planted"][fault]["study_instance_uid"]]


def _lesions(h, fault):
    return h["lesions"][h["lesions"].case_id == _case(h, fault)["case_id"]].set_index("roi_number")


def test_run_exits_0_and_leaves_the_input_as_it_was(hostile):
    assert hostile["run"].returncode == 0, hostile["run"].stderr[-5000:]
    assert hostile["after"] == hostile["before"]


def test_good_cases_are_ok_with_truth_volumes(hostile):
    for case in hostile["truth"]["cases"][:GOOD]:
        row = hostile["cases"].loc[case["study_instance_uid"]]
        assert row["status"] == "ok", row["status_reason"]
        lesions = hostile["lesions"][hostile["lesions"].case_id == row["case_id"]].set_index("roi_number")
        for les in case["lesions"]:
            got = lesions.loc[les["roi_number"]]
            assert got["roi_status"] == "ok" and pd.isna(got["intensity_flag"])
            assert got["contour_volume_mm3"] == pytest.approx(les["planimetric_volume_mm3"], rel=1e-3)


def test_duplicate_roi_number_excludes_with_a_reason(hostile):
    row = _case(hostile, "duplicate_roi_number")
    assert row["status"] == "excluded" and "ROI Number" in row["status_reason"]


@pytest.mark.parametrize("fault, status, why", [
    ("nan_contour", "partial", "non-finite"),
    ("text_contour", "partial", "not a number"),
    ("self_intersecting", "self_intersecting", "crosses itself"),
])
def test_a_damaged_contour_is_named_on_its_lesion_only(hostile, fault, status, why):
    row = _case(hostile, fault)
    assert row["status"] == "ok", row["status_reason"]
    case = hostile["planted"][fault]
    lesions = _lesions(hostile, fault)
    damaged = damaged_roi(case)
    assert lesions.loc[damaged, "roi_status"] == status and why in lesions.loc[damaged, "roi_status_reason"]
    others = [les["roi_number"] for les in case["lesions"] if les["roi_number"] != damaged]
    assert (lesions.loc[others, "roi_status"] == "ok").all()


def test_structure_set_of_another_frame_is_not_placed(hostile):
    row = _case(hostile, "foreign_frame")
    assert row["status"] == "excluded" and "Frame of Reference" in row["status_reason"]


def test_empty_roi_is_listed_not_counted(hostile):
    row = _case(hostile, "empty_roi")
    case = hostile["planted"]["empty_roi"]
    empty = damaged_roi(case)
    assert row["status"] == "ok"
    assert row["n_lesions"] == len(case["lesions"]) - 1 and row["n_lesion_rois"] == len(case["lesions"])
    assert _lesions(hostile, "empty_roi").loc[empty, "roi_status"] == "empty"


def test_one_missing_t1c_slice_is_interpolated_and_flagged(hostile):
    row = _case(hostile, "missing_t1c_slice")
    assert row["status"] == "ok", row["status_reason"]
    assert "t1c_missing_slices_interpolated" in list(row["flags"])


def test_malformed_date_is_flagged_and_identifying_values_are_audited_not_copied(hostile):
    row = _case(hostile, "identifying_and_malformed")
    assert "study_date_malformed" in list(row["flags"])
    audit = hostile["audit"]
    files = {rel for role in ("T1C", "T1", "T2") for rel in hostile["planted"]["identifying_and_malformed"]["series"][role]["files"] if rel}
    found = audit[audit.path.isin(files)]
    assert set(audit.path) == files  # every planted file, and no clean one
    assert {"PatientName", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "private",
            "SpecificCharacterSet", "StudyDate"} <= set(found.keyword)  # fmt: skip


def test_a_t2_labelled_t1_is_caught_by_the_pixels_on_series_case_lesions_and_qc(hostile):
    series = hostile["series"].set_index("series_instance_uid")
    t2_uid = hostile["planted"]["t2_labelled_t1"]["series"]["T2"]["series_instance_uid"]
    assert (series.loc[t2_uid, "role"], series.loc[t2_uid, "pixel_check"], series.loc[t2_uid, "pixel_label"]) == (
        "T1", "disagrees", "T2")
    for case in hostile["truth"]["cases"][:GOOD]:  # the good cases' T1 and T2 agree with their pixels
        for role in ("T1", "T2"):
            assert series.loc[case["series"][role]["series_instance_uid"], "pixel_check"] == "agrees"
    row = _case(hostile, "t2_labelled_t1")
    assert "t1_pixels_disagree_with_label" in list(row["flags"])
    lesions = _lesions(hostile, "t2_labelled_t1")
    assert len(lesions) and lesions.intensity_flag.str.contains("T1 pixels disagree with its label").all()
    report = (hostile["root"] / "out" / "qc" / "index.html").read_text()
    assert "Sequence labels the pixels or the header doubt" in report and "looks T2-weighted" in report


def test_no_two_lesions_of_a_case_share_a_label(hostile):
    labelled = hostile["lesions"].dropna(subset=["label"])
    assert not labelled.duplicated(["case_id", "label"]).any()


def test_no_identifying_value_in_any_output_byte(hostile):
    import gzip

    needles = [v.encode() for v in (NAME, "Mustermann", BIRTH, INSTITUTION, "Nirgendwo", PHYSICIAN, "Zhivago")]
    leaks = []
    for path in (hostile["root"] / "out").rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blobs = [data, gzip.decompress(data)] if path.suffix == ".gz" else [data]
        leaks += [(str(path), n) for blob in blobs for n in needles if n in blob]
    assert leaks == []
    assert os.access(hostile["root"], os.W_OK)
