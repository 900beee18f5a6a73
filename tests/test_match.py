"""Matching RTSS to images, cases and their exclusion reasons, labels, plans."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from metsprep.match import REASON_NO_RTSS, REASON_NO_T1C, run_match, sanitize_label, subject_labels
from metsprep.scan import scan_all
from metsprep.settings import MatchSettings

import faults


def run(dicom: Path, work: Path, **options):
    inv = work / "inventory.parquet"
    scan_all(dicom, inv)
    run_match(inv, dicom, MatchSettings.from_config(options), work / "series.parquet", work / "cases.parquet", work / "plans")
    series = pd.read_parquet(work / "series.parquet")
    cases = pd.read_parquet(work / "cases.parquet").set_index("case_id")
    plans = {p.stem: json.loads(p.read_text()) for p in sorted((work / "plans").glob("*.json"))}
    return series, cases, plans


def rel(dicom: Path, paths) -> list[str]:
    return sorted(Path(p).relative_to(dicom).as_posix() for p in paths)


# ----------------------------------------------------------------------------- labels

@pytest.mark.parametrize("value, expected", [
    ("1706922010", "1706922010"), ("GK-2008_017", "GK2008017"), ("../../x", "x"),
    ("Müller 01", "Mller01"), ("a/b\\c", "abc"),
])
def test_sanitize_label(value, expected):
    assert sanitize_label(value) == expected


@pytest.mark.parametrize("value", ["", None, "../..", "ééé", "__"])
def test_sanitize_label_never_empty_and_safe(value):
    label = sanitize_label(value)
    assert label.isascii() and label.isalnum() and label.startswith("anon")


def test_colliding_patient_ids_get_distinct_flagged_labels():
    labels, flagged = subject_labels(["AB-1", "AB_1", "CD"])
    assert labels["CD"] == "CD" and flagged == {"AB-1", "AB_1"}
    assert labels["AB-1"] != labels["AB_1"]
    assert all(labels[p].startswith("AB1") and labels[p].isalnum() for p in ("AB-1", "AB_1"))
    assert subject_labels(["AB_1", "AB-1", "CD"])[0] == labels  # order independent


# ----------------------------------------------------------------------------- cohort

@pytest.fixture()
def cohort(tmp_path):
    dicom = tmp_path / "dicom"
    later = faults.write_mini_study(dicom, "P001", "20090315")
    earlier = faults.write_mini_study(dicom, "P001", "20080101")
    unannotated = faults.write_mini_study(dicom, "P002", "20080101", with_rtss=False)
    return dicom, {"later": later, "earlier": earlier, "unannotated": unannotated}


def test_cases_sessions_and_plans(cohort, tmp_path):
    dicom, studies = cohort
    series, cases, plans = run(dicom, tmp_path / "w")
    assert list(cases.index) == ["sub-P001_ses-01", "sub-P001_ses-02", "sub-P002_ses-01"]
    assert cases.loc["sub-P001_ses-01", "study_instance_uid"] == studies["earlier"].study_uid
    assert cases.loc["sub-P001_ses-02", "study_instance_uid"] == studies["later"].study_uid
    assert list(cases.status) == ["ok", "ok", "excluded"]
    assert cases.loc["sub-P002_ses-01", "status_reason"] == REASON_NO_RTSS
    assert set(plans) == {"sub-P001_ses-01", "sub-P001_ses-02"}
    plan = plans["sub-P001_ses-02"]
    later = studies["later"]
    for role in ("T1C", "T1", "T2"):
        assert plan["series"][role]["series_instance_uid"] == later.series[role].uid
        assert plan["series"][role]["files"] == rel(dicom, later.series[role].files)
    assert plan["rtss"] == {"file": rel(dicom, [later.rtss_path])[0], "sop_instance_uid": later.rtss_sop_uid,
                            "match_method": "sop_uid"}
    assert plan["input_dir"] == str(dicom.resolve())
    assert (plan["subject"], plan["session"], plan["patient_id"]) == ("P001", "02", "P001")
    # series table: one row per series, contract columns
    assert len(series) == 3 * 4 - 1 and series.series_instance_uid.is_unique
    t1c = series.set_index("series_instance_uid").loc[later.series["T1C"].uid]
    assert (t1c.sequence, t1c.role, t1c.match_method, t1c.n_instances) == ("T1C", "T1C", "sop_uid", 6)
    assert t1c.slice_spacing_mm == pytest.approx(3.0)
    assert (t1c.pixel_spacing_row_mm, t1c.pixel_spacing_col_mm, t1c.rows, t1c.columns) == (1.0, 1.0, 8, 8)
    assert set(series[series.case_id == "sub-P002_ses-01"].role.dropna()) == set()


def test_include_unannotated_takes_the_study_in_without_rtss(cohort, tmp_path):
    dicom, studies = cohort
    _, cases, plans = run(dicom, tmp_path / "w", include_unannotated=True)
    assert cases.loc["sub-P002_ses-01", "status"] == "ok"
    assert "unannotated" in cases.loc["sub-P002_ses-01", "flags"]
    assert plans["sub-P002_ses-01"]["rtss"] is None


def test_regenerated_image_uids_resolve_by_geometry(cohort, tmp_path):
    dicom, studies = cohort
    faults.regenerate_image_uids(dicom, studies["later"].study_uid)
    series, cases, plans = run(dicom, tmp_path / "w")
    case = cases.loc["sub-P001_ses-02"]
    assert (case.status, case.match_method) == ("ok", "geometry")
    t1c = plans["sub-P001_ses-02"]["series"]["T1C"]
    assert t1c["series_description"] == "AX T1 +C"
    assert t1c["series_instance_uid"] != studies["later"].series["T1C"].uid
    assert cases.loc["sub-P001_ses-01", "match_method"] == "sop_uid"


def test_geometry_picks_the_referenced_series_without_contrast_marker(tmp_path):
    dicom = tmp_path / "dicom"
    study = faults.write_mini_study(dicom, "P003", t1c_description="AX T1 SE", with_t2=False)
    faults.regenerate_image_uids(dicom, study.study_uid)
    series, cases, plans = run(dicom, tmp_path / "w")
    case = cases.iloc[0]
    assert (case.status, case.match_method) == ("ok", "geometry")
    t1c = series[series.role == "T1C"].iloc[0]
    assert (t1c.series_description, t1c.sequence_source) == ("AX T1 SE", "rtss_reference")


def test_all_referenced_images_missing_excludes_with_reason(cohort, tmp_path):
    dicom, studies = cohort
    faults.delete_referenced_images(dicom, studies["later"].rtss_path)
    _, cases, plans = run(dicom, tmp_path / "w")
    case = cases.loc["sub-P001_ses-02"]
    assert case.status == "excluded" and "missing" in case.status_reason
    assert case.match_method == "series_uid"
    assert cases.loc["sub-P001_ses-01", "status"] == "ok" and "sub-P001_ses-01" in plans


def test_one_missing_referenced_t1c_slice_is_kept_for_interpolation(cohort, tmp_path):
    dicom, studies = cohort
    faults.delete_referenced_images(dicom, studies["later"].rtss_path, count=1)
    _, cases, plans = run(dicom, tmp_path / "w")
    case = cases.loc["sub-P001_ses-02"]
    assert case.status == "ok" and "rtss_references_missing_images" in case["flags"]
    assert "t1c_missing_slices" in case["flags"] and "sub-P001_ses-02" in plans


def test_missing_referenced_t1c_slices_beyond_interpolation_exclude(cohort, tmp_path):
    dicom, studies = cohort
    faults.delete_referenced_images(dicom, studies["later"].rtss_path, count=1)
    _, cases, _ = run(dicom, tmp_path / "w", max_missing_run=0)
    case = cases.loc["sub-P001_ses-02"]
    assert case.status == "excluded" and "1 of the 2 images" in case.status_reason


def test_dangling_reference_with_complete_t1c_is_flagged_and_kept(tmp_path):
    dicom = tmp_path / "dicom"
    study = faults.write_mini_study(dicom, "P004", with_rtss=False)
    t1c = study.series["T1C"]
    dangling = faults.MiniSeries(t1c.uid, t1c.description, t1c.files, list(t1c.sop_uids), t1c.z_mm)
    dangling.sop_uids[3] = "1.2.3.4.5.6.7.8.9"
    faults.write_rtss(dicom / "rtss.dcm", "P004", study.study_uid, study.study_date, study.frame_uid,
                      dangling, [2, 3])
    _, cases, plans = run(dicom, tmp_path / "w")
    case = cases.iloc[0]
    assert case.status == "ok" and case.match_method == "sop_uid"
    assert "rtss_references_missing_images" in case["flags"]


def test_rtss_without_images_is_excluded_and_others_kept(cohort, tmp_path):
    dicom, studies = cohort
    faults.rtss_without_images(dicom, studies["later"].study_uid)
    series, cases, plans = run(dicom, tmp_path / "w")
    excluded = cases[cases.status == "excluded"]
    assert len(excluded) == 2
    orphan = excluded[excluded.study_instance_uid == studies["later"].study_uid].iloc[0]
    assert "no post-contrast" not in orphan.status_reason and "images" in orphan.status_reason
    assert orphan.rtss_file == rel(dicom, [studies["later"].rtss_path])[0] and orphan.n_rtss == 1
    assert set(plans) == {"sub-P001_ses-01"}


def test_missing_t1c_is_excluded(cohort, tmp_path):
    dicom, studies = cohort
    faults.remove_series(dicom, studies["later"].series["T1C"].uid)
    _, cases, plans = run(dicom, tmp_path / "w")
    case = cases.loc["sub-P001_ses-02"]
    assert case.status == "excluded" and case.status_reason.startswith(REASON_NO_T1C)
    assert "sub-P001_ses-01" in plans


def test_rtss_on_a_non_t1_series_gives_no_t1c(tmp_path):
    dicom = tmp_path / "dicom"
    faults.write_mini_study(dicom, "P005", t1c_description="AX T2 FLAIR", with_t1=False)
    _, cases, _ = run(dicom, tmp_path / "w")
    case = cases.iloc[0]
    assert case.status == "excluded"
    assert case.status_reason.startswith(REASON_NO_T1C) and "AX T2 FLAIR" in case.status_reason


@pytest.mark.parametrize("order", ["copy_first", "copy_last"])
def test_second_t1c_prefers_the_rtss_referenced_series(cohort, tmp_path, order):
    """Run in both UID, series-number and folder orders: the choice must not be chance."""
    dicom, studies = cohort
    later = studies["later"]
    first = order == "copy_first"
    faults.add_copy_of_series(dicom, later.series["T1C"].uid, "0_extra_t1c" if first else "zz_extra_t1c",
                              series_number=1 if first else 99, new_uid="1.2.0.1" if first else "9.9.9.1")
    series, cases, plans = run(dicom, tmp_path / "w")
    assert cases.loc["sub-P001_ses-02", "status"] == "ok"
    chosen = series[(series.case_id == "sub-P001_ses-02") & (series.role == "T1C")]
    assert list(chosen.series_instance_uid) == [later.series["T1C"].uid]
    assert "referenced by the RTSS" in chosen.iloc[0].selection_reason
    t1c_rows = series[(series.case_id == "sub-P001_ses-02") & (series.sequence == "T1C")]
    assert len(t1c_rows) == 2


def test_unmarked_copy_of_the_t1c_after_the_injection_is_not_taken_as_t1(tmp_path):
    """"AX T1" before the injection and "AX T1" after it: the later one is post-contrast
    (acquisition order), so a copy of the T1C is never the case's T1."""
    dicom = tmp_path / "dicom"
    study = faults.write_mini_study(dicom, "P009", t1c_description="AX T1")
    faults.add_copy_of_series(dicom, study.series["T1"].uid, "t1_unmarked", series_number=1, description="AX T1",
                              new_uid="1.2.0.9")  # fmt: skip
    copy = faults.add_copy_of_series(dicom, study.series["T1C"].uid, "t1c_copy", series_number=9,
                                     description="AX T1", new_uid="9.9.9.9")  # fmt: skip
    series, cases, _ = run(dicom, tmp_path / "w")
    row = series.set_index("series_instance_uid").loc[copy]
    assert (row.sequence, row.sequence_source) == ("T1C", "acquisition_order")
    assert "post_contrast_by_acquisition_order" in list(row.sequence_flags)
    case_id = cases.index[0]
    t1 = series[(series.case_id == case_id) & (series.role == "T1")].series_instance_uid
    assert list(t1) == [study.series["T1"].uid]
    t1c = series[(series.case_id == case_id) & (series.role == "T1C")].series_instance_uid
    assert list(t1c) == [study.series["T1C"].uid]


def test_several_rtss_newest_wins(cohort, tmp_path):
    dicom, studies = cohort
    later = studies["later"]
    newer = faults.write_rtss(dicom / "second_rtss.dcm", "P001", later.study_uid, later.study_date,
                              later.frame_uid, later.series["T1C"], [1, 2], ss_date="20090316")
    series, cases, plans = run(dicom, tmp_path / "w")
    case = cases.loc["sub-P001_ses-02"]
    assert case.status == "ok" and case.n_rtss == 2 and case.rtss_sop_instance_uid == newer
    assert "several_rtss_newest_used" in case["flags"]
    assert plans["sub-P001_ses-02"]["rtss"]["file"] == "second_rtss.dcm"


def test_identical_duplicate_keeps_one_file(cohort, tmp_path):
    dicom, studies = cohort
    t1c = studies["later"].series["T1C"]
    faults.duplicate_sop_uid(t1c.files[0], dicom / "dup" / "copy.dcm", identical=True)
    series, cases, plans = run(dicom, tmp_path / "w")
    assert cases.loc["sub-P001_ses-02", "status"] == "ok"
    files = plans["sub-P001_ses-02"]["series"]["T1C"]["files"]
    assert len(files) == 6 and "dup/copy.dcm" not in files
    row = series.set_index("series_instance_uid").loc[t1c.uid]
    assert "duplicate_files_identical_kept_one" in row["flags"] and row.n_instances == 6


def test_conflicting_duplicate_excludes_the_case(cohort, tmp_path):
    dicom, studies = cohort
    t1c = studies["later"].series["T1C"]
    faults.duplicate_sop_uid(t1c.files[0], dicom / "dup" / "copy.dcm", identical=False)
    _, cases, plans = run(dicom, tmp_path / "w")
    case = cases.loc["sub-P001_ses-02"]
    assert case.status == "excluded" and "share SOP Instance UID" in case.status_reason
    assert "sub-P001_ses-01" in plans


def test_mixed_geometry_is_flagged_not_excluded(cohort, tmp_path):
    dicom, studies = cohort
    path = studies["later"].series["T1C"].files[4]
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0.9, 0.9]
    ds.save_as(path)
    series, cases, _ = run(dicom, tmp_path / "w")
    assert cases.loc["sub-P001_ses-02", "status"] == "ok"
    assert "t1c_mixed_geometry" in cases.loc["sub-P001_ses-02", "flags"]
    assert "mixed_geometry" in series.set_index("series_instance_uid").loc[studies["later"].series["T1C"].uid]["flags"]


def test_junk_dicomdir_loop_and_truncated_files_lose_no_good_case(cohort, tmp_path):
    dicom, studies = cohort
    faults.add_junk_files(dicom)
    faults.add_dicomdir(dicom)
    faults.symlink_loop(dicom)
    faults.truncate_file(studies["unannotated"].series["T2"].files[0], 0.7)
    series, cases, plans = run(dicom, tmp_path / "w")
    assert set(plans) == {"sub-P001_ses-01", "sub-P001_ses-02"}
    assert series.series_instance_uid.is_unique
    t2 = series.set_index("series_instance_uid").loc[studies["unannotated"].series["T2"].uid]
    assert t2.n_instances == 5


# ----------------------------------------------------------------------------- synthetic cohort

synth = pytest.importorskip("metsprep.synth")

SYNTH_OPTIONS = {1: {"studies": 2}, 2: {"regenerate_uids": True}}
N_SYNTH = 3


@pytest.fixture(scope="module")
def synth_cohorts(tmp_path_factory):
    """The same cohort (seed, cases, options) written in all three layouts."""
    out = {}
    for layout in ("per_case", "nested", "flat"):
        root = tmp_path_factory.mktemp(f"synth_{layout}")
        synth.generate_cohort(root, N_SYNTH, seed=11, layout=layout, case_options=SYNTH_OPTIONS)
        truth = json.loads((root / "truth" / "truth.json").read_text())
        out[layout] = (root / "dicom", truth)
    return out


def _case_key(cases: pd.DataFrame) -> pd.DataFrame:
    cols = ["patient_id", "session", "study_instance_uid", "status", "status_reason", "match_method",
            "t1c_series_instance_uid", "t1_series_instance_uid", "t2_series_instance_uid"]
    return cases.reset_index()[["case_id"] + cols].sort_values("case_id", ignore_index=True)


def test_synthetic_cohort_matches_truth_in_every_layout(synth_cohorts, tmp_path):
    results = {}
    for layout, (dicom, truth) in synth_cohorts.items():
        series, cases, plans = run(dicom, tmp_path / layout)
        results[layout] = (series, cases)
        by_study = cases.reset_index().set_index("study_instance_uid")
        for entry in truth["cases"]:
            case = by_study.loc[entry["study_instance_uid"]]
            assert case.status == entry["expected_status"], (layout, entry["case_index"], case.status_reason)
            if entry["expected_status"] == "excluded":
                assert case.status_reason.startswith(REASON_NO_T1C)
                continue
            plan = plans[case.case_id]
            for role, info in entry["series"].items():
                if info is None:
                    assert plan["series"][role] is None
                    continue
                assert plan["series"][role]["series_instance_uid"] == info["series_instance_uid"]
                assert plan["series"][role]["files"] == sorted(info["files"])
            expected_method = "geometry" if entry["settings"]["regenerate_uids"] else "sop_uid"
            assert case.match_method == expected_method
            for flag in entry["expected_flags"]:
                if flag.startswith("rtss_"):
                    assert flag in case["flags"]
        indexed = series.set_index("series_instance_uid")
        for entry in truth["cases"]:
            for info in filter(None, entry["series"].values()):
                row = indexed.loc[info["series_instance_uid"]]
                assert row.sequence == info["expected_sequence"]
                assert row.n_instances == info["n_instances"]
                assert row.slice_spacing_mm == pytest.approx(info["slice_spacing_mm"], abs=1e-3)
    # longitudinal: sessions in date order
    long_entries = sorted((e for e in synth_cohorts["per_case"][1]["cases"] if e["n_studies"] == 2),
                          key=lambda e: e["study_date"])
    cases = results["per_case"][1].reset_index().set_index("study_instance_uid")
    assert [cases.loc[e["study_instance_uid"], "session"] for e in long_entries] == ["01", "02"]
    # all three layouts: same cases and series
    ref_series, ref_cases = results["per_case"]
    for layout in ("nested", "flat"):
        series, cases = results[layout]
        pd.testing.assert_frame_equal(_case_key(cases), _case_key(ref_cases))
        cols = ["case_id", "series_instance_uid", "sequence", "role", "n_instances", "slice_spacing_mm"]
        pd.testing.assert_frame_equal(series[cols].sort_values("series_instance_uid", ignore_index=True),
                                      ref_series[cols].sort_values("series_instance_uid", ignore_index=True))


def _truth_entry(truth, case_index, study_index=0):
    return next(e for e in truth["cases"] if e["case_index"] == case_index and e["study_index"] == study_index)


def _rtss_path(dicom: Path, study_uid: str) -> Path:
    return next(Path(h["path"]) for h in faults.headers(dicom)
                if h["study"] == study_uid and h["modality"] == "RTSTRUCT")


def test_injected_faults_on_synthetic_cohort(synth_cohorts, tmp_path):
    src, truth = synth_cohorts["per_case"]
    dicom = faults.copy_cohort(src, tmp_path / "dicom")
    c0, c1a, c1b = _truth_entry(truth, 0), _truth_entry(truth, 1, 0), _truth_entry(truth, 1, 1)
    faults.add_junk_files(dicom)
    faults.add_dicomdir(dicom)
    faults.symlink_loop(dicom)
    faults.truncate_file(dicom / c0["series"]["T2"]["files"][0], 0.8)
    faults.duplicate_sop_uid(dicom / c0["series"]["T1C"]["files"][0], dicom / "extra" / "dup.dcm", identical=True)
    second = faults.add_copy_of_series(dicom, c0["series"]["T1C"]["series_instance_uid"], "second_t1c",
                                       series_number=50)
    faults.delete_referenced_images(dicom, _rtss_path(dicom, c1b["study_instance_uid"]))
    series, cases, plans = run(dicom, tmp_path / "w")
    by_study = cases.reset_index().set_index("study_instance_uid")

    case0 = by_study.loc[c0["study_instance_uid"]]
    assert case0.status == "ok" and case0.t1c_series_instance_uid == c0["series"]["T1C"]["series_instance_uid"]
    assert plans[case0.case_id]["series"]["T1C"]["files"] == sorted(c0["series"]["T1C"]["files"])
    assert len(plans[case0.case_id]["series"]["T2"]["files"]) == c0["series"]["T2"]["n_instances"] - 1
    indexed = series.set_index("series_instance_uid")
    assert indexed.loc[second].sequence == "T1C" and pd.isna(indexed.loc[second].role)
    assert "referenced by the RTSS" in indexed.loc[case0.t1c_series_instance_uid].selection_reason

    case1b = by_study.loc[c1b["study_instance_uid"]]
    assert case1b.status == "excluded" and "not in the input" in case1b.status_reason
    assert by_study.loc[c1a["study_instance_uid"]].status == "ok"

    # no good case lost: every other expected-ok study is still ok
    ok = {e["study_instance_uid"] for e in truth["cases"] if e["expected_status"] == "ok"}
    assert set(by_study[by_study.status == "ok"].index) == ok - {c1b["study_instance_uid"]}


def test_rtss_without_images_and_conflicting_duplicate_on_synthetic_cohort(synth_cohorts, tmp_path):
    src, truth = synth_cohorts["per_case"]
    dicom = faults.copy_cohort(src, tmp_path / "dicom")
    c0, c1a = _truth_entry(truth, 0), _truth_entry(truth, 1, 0)
    faults.rtss_without_images(dicom, c0["study_instance_uid"])
    faults.duplicate_sop_uid(dicom / c1a["series"]["T1C"]["files"][3], dicom / "extra" / "dup.dcm", identical=False)
    _, cases, plans = run(dicom, tmp_path / "w")
    by_study = cases.reset_index().set_index("study_instance_uid")
    case0 = by_study.loc[c0["study_instance_uid"]]
    assert case0.status == "excluded" and "without images" in case0.status_reason
    case1a = by_study.loc[c1a["study_instance_uid"]]
    assert case1a.status == "excluded" and "share SOP Instance UID" in case1a.status_reason
    ok = {e["study_instance_uid"] for e in truth["cases"] if e["expected_status"] == "ok"}
    assert set(by_study[by_study.status == "ok"].index) == ok - {c0["study_instance_uid"], c1a["study_instance_uid"]}


@pytest.mark.parametrize("value, valid", [("19010908", True), ("19011345", False), ("abc", False),
                                          ("1901-09-08", False), ("19010230", False)])
def test_dicom_dates_are_checked(value, valid):
    from metsprep.dicom_dates import valid_dicom_date

    assert valid_dicom_date(value) is valid


def test_malformed_study_date_is_flagged_not_silently_kept(cohort, tmp_path):
    dicom, studies = cohort
    for header in faults.headers(dicom):
        if header["study"] == studies["later"].study_uid:
            ds = pydicom.dcmread(header["path"])
            ds.StudyDate = "19011345"
            ds.save_as(header["path"])
    _, cases, _ = run(dicom, tmp_path / "w")
    flags = [f for fl in cases["flags"] for f in fl]
    assert "study_date_malformed" in flags


@pytest.mark.parametrize("frame", ["absent", "another"])
def test_rtss_of_another_or_no_frame_is_not_placed_by_geometry(cohort, tmp_path, frame):
    """References that do not resolve and a Frame of Reference that is not the images':
    the contours may fit the slice planes, but the case is excluded with a reason."""
    dicom, studies = cohort
    later = studies["later"]
    faults.regenerate_image_uids(dicom, later.study_uid)
    ds = pydicom.dcmread(later.rtss_path)
    for item in ds.StructureSetROISequence:
        if frame == "absent":
            del item.ReferencedFrameOfReferenceUID
        else:
            item.ReferencedFrameOfReferenceUID = "1.2.3.999"
    if frame == "absent":
        del ds.ReferencedFrameOfReferenceSequence
    else:
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.999"
    ds.save_as(later.rtss_path)
    _, cases, plans = run(dicom, tmp_path / "w")
    case = cases.loc["sub-P001_ses-02"]
    assert case.status == "excluded" and "Frame of Reference" in case.status_reason
    assert "sub-P001_ses-02" not in plans and cases.loc["sub-P001_ses-01", "status"] == "ok"
