"""Lesion features on analytic shapes, one constructed case end to end, the catalog schema."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from metsprep.catalog.case import catalog_case
from metsprep.catalog.dictionary import data_dictionary
from metsprep.catalog.lesion_features import lesion_geometry, normal_appearing_brain, to_lps
from metsprep.catalog.merge import build_catalog
from metsprep.catalog.schemas import config_digest
from metsprep.contracts import (
    SCHEMA_VERSION,
    BidsResult,
    CasePlan,
    CaseSummary,
    ImageRecord,
    Participant,
    RegisterResult,
    RegistrationRecord,
    RtssOutputs,
    RtssPlan,
    RtssResult,
    SeriesPlan,
    StandardSpaceResult,
    affine_rows,
)
from metsprep.frames import RAS_FROM_LPS
from metsprep.match import CASE_COLUMNS as MATCH_CASE_COLUMNS
from metsprep.match import SERIES_COLUMNS as MATCH_SERIES_COLUMNS
from metsprep.rtss import ROI_COLUMNS
from metsprep.rtss import _write_table as write_roi_table
from metsprep.scan import SCHEMA as INVENTORY_SCHEMA
from metsprep.settings import LocationSettings

CONTRACT = {
    "series": ["case_id", "patient_id", "study_instance_uid", "series_instance_uid", "modality", "series_description",
               "sequence", "sequence_source", "n_instances", "rows", "columns", "pixel_spacing_row_mm",
               "pixel_spacing_col_mm", "slice_thickness_mm", "slice_spacing_mm", "nifti"],
    "cases": ["case_id", "patient_id", "study_instance_uid", "session", "status", "status_reason", "t1c_nifti",
              "t1_nifti", "t2_nifti", "t1_in_t1c_nifti", "t2_in_t1c_nifti", "t1_to_t1c_transform",
              "t2_to_t1c_transform", "lesion_labels_nifti", "lesion_mask_nifti", "n_lesions"],
    "lesions": ["case_id", "patient_id", "roi_number", "roi_name", "label", "volume_mm3", "contour_volume_mm3",
                "centroid_lps_x_mm", "centroid_lps_y_mm", "centroid_lps_z_mm", "n_slices", "max_diameter_mm",
                "equivalent_diameter_mm", "hemisphere", "region"],
}  # fmt: skip


def sphere_voxels(radius_mm: float, spacing: tuple[float, float, float], centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    n = [int(math.ceil(radius_mm / s)) + 2 for s in spacing]
    grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in n], indexing="ij"), axis=-1).reshape(-1, 3)
    mm = grid * np.asarray(spacing)
    inside = np.linalg.norm(mm - np.asarray(centre_mm), axis=1) <= radius_mm
    return grid[inside] - grid[inside].min(axis=0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 1.0)])
def test_sphere_diameters(spacing):
    radius = 8.0
    ijk = sphere_voxels(radius, spacing)
    lps_from_ijk = np.diag([*spacing, 1.0])
    feats = lesion_geometry(ijk, lps_from_ijk)
    voxel_diagonal = float(np.linalg.norm(spacing))
    assert feats["equivalent_diameter_mm"] == pytest.approx(2 * radius, abs=max(spacing))
    assert 2 * radius - voxel_diagonal <= feats["max_diameter_mm"] <= 2 * radius + 1e-9
    assert 2 * radius - voxel_diagonal <= feats["longest_axial_diameter_mm"] <= 2 * radius + 1e-9
    # the longest axial diameter lies on the equatorial slice
    assert abs(feats["longest_axial_diameter_slice_k"] - ijk[:, 2].mean()) <= 1
    assert feats["rano_measurable"]
    assert feats["n_slices"] == len(np.unique(ijk[:, 2]))


def test_diameters_follow_the_affine_and_obliquity():
    # a 1 x 1 x 21 voxel rod along k with 2 mm slices: 40 mm long in 3D, 0 in plane
    ijk = np.array([[0, 0, k] for k in range(21)])
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lps_from_ijk = np.eye(4)
    lps_from_ijk[:3, :3] = rotation @ np.diag([0.9, 0.9, 2.0])
    lps_from_ijk[:3, 3] = [10.0, -20.0, 30.0]
    feats = lesion_geometry(ijk, lps_from_ijk)
    assert feats["max_diameter_mm"] == pytest.approx(40.0)
    assert feats["longest_axial_diameter_mm"] == pytest.approx(0.0)
    assert not feats["rano_measurable"]
    # an in-plane 12 x 1 voxel bar on 2 slices: 11 * 0.9 mm in plane
    bar = np.array([[i, 0, k] for i in range(12) for k in (3, 4)])
    feats = lesion_geometry(bar, lps_from_ijk)
    assert feats["longest_axial_diameter_mm"] == pytest.approx(11 * 0.9)
    assert feats["rano_measurable"] is False  # 9.9 mm < 10 mm


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inside_distance_equals_scipys_exact_transform(seed):
    # an independent exact EDT (scipy's feature transform) on a blobby mask that touches the
    # volume border (which counts as outside), anisotropic and oblique voxels
    from scipy import ndimage as ndi

    from metsprep.catalog.lesion_features import inside_distance_mm

    rng = np.random.default_rng(seed)
    mask = ndi.gaussian_filter(rng.random((40, 36, 12)), 2.0) > 0.5
    mask[:, :, 0] |= mask[:, :, 1]
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    spacing = rng.uniform(0.4, 4.0, 3)
    lps_from_ijk = np.eye(4)
    lps_from_ijk[:3, :3] = rotation * spacing
    expected = ndi.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    got = inside_distance_mm(mask, lps_from_ijk)
    assert mask.any() and not mask.all()
    np.testing.assert_allclose(got, expected, atol=1e-4 * spacing.max())
    assert not got[~mask].any()


def test_bounding_box_and_centroid():
    ijk = np.array([[2, 3, 4], [5, 3, 4], [2, 7, 6]])
    lps_from_ijk = np.diag([-1.0, 2.0, 3.0, 1.0])
    lps_from_ijk[:3, 3] = [100.0, 0.0, -10.0]
    feats = lesion_geometry(ijk, lps_from_ijk)
    assert (feats["bbox_i_min"], feats["bbox_i_max"], feats["bbox_j_min"], feats["bbox_j_max"]) == (2, 5, 3, 7)
    assert (feats["bbox_k_min"], feats["bbox_k_max"]) == (4, 6)
    assert feats["bbox_lps_x_min_mm"] == pytest.approx(95.0) and feats["bbox_lps_x_max_mm"] == pytest.approx(98.0)
    assert feats["bbox_lps_z_min_mm"] == pytest.approx(2.0) and feats["bbox_lps_z_max_mm"] == pytest.approx(8.0)
    assert feats["centroid_lps_x_mm"] == pytest.approx(100.0 - 3.0)
    assert feats["centroid_ras_x_mm"] == pytest.approx(-97.0)
    assert feats["centroid_k"] == pytest.approx(14 / 3)
    assert feats["volume_mm3"] == pytest.approx(3 * 6.0)


def test_enhancement_ratio_on_constructed_image():
    shape = (80, 80, 60)
    idx = np.indices(shape).transpose(1, 2, 3, 0) - np.array([40, 40, 30])
    head = np.linalg.norm(idx, axis=-1) < 35
    lps = np.eye(4)
    t1c = np.where(head, 100.0, 0.0)
    scalp = head & (np.linalg.norm(idx, axis=-1) > 30)
    t1c[scalp] = 900.0  # bright scalp must not enter the reference
    lesion = np.linalg.norm(idx - np.array([8, 0, 0]), axis=-1) <= 4
    t1c[lesion] = 300.0
    rim = (np.linalg.norm(idx - np.array([8, 0, 0]), axis=-1) <= 7) & ~lesion
    t1c[rim] = 50.0  # oedema around the lesion must not enter the reference either
    nab = normal_appearing_brain(t1c, head, lesion, lps)
    assert nab.any() and np.all(t1c[nab] == 100.0)
    assert not (nab & lesion).any()
    assert t1c[lesion].mean() / t1c[nab].mean() == pytest.approx(3.0)


# ---------------------------------------------------------------------------- one constructed case


def _save(path: Path, data: np.ndarray, ras_from_ijk: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, ras_from_ijk), str(path))


# A made-up fit to the template: MNI LPS = T1C LPS shifted; MNI RAS = flip of x and y.
MNI_LPS_FROM_T1C_LPS = np.array([[1.0, 0, 0, 10.0], [0, 1.0, 0, -20.0], [0, 0, 1.0, 5.0], [0, 0, 0, 1.0]])


def make_case(root: Path, case_id: str = "sub-01_ses-01", *, mni_flag: str | None = None, with_t2: bool = True, with_head: bool = True,
              lesions: bool = True, head_shift_mm: float = 12.0) -> dict[str, Path]:  # fmt: skip
    """A small case on a 1 x 1 x 2 mm grid whose head is off the image centre, with two
    lesions (one on the patient's left named 'R_front' on purpose, one on the right)."""
    subject, session = case_id.split("_")[0][4:], case_id.split("_")[1][4:]
    shape = (96, 96, 40)
    lps_from_ijk = np.diag([1.0, 1.0, 2.0, 1.0])
    lps_from_ijk[:3, 3] = [-48.0, -48.0, -40.0]
    ras_from_ijk = RAS_FROM_LPS @ lps_from_ijk
    ijk = np.indices(shape).reshape(3, -1).T
    lps = to_lps(ijk, lps_from_ijk).reshape(*shape, 3)
    centre = np.array([head_shift_mm, 3.0, 0.0])
    radii = np.array([30.0, 38.0, 34.0])
    head = (((lps - centre) / radii) ** 2).sum(-1) <= 1
    t1c = np.where(head, 100.0, 5.0).astype(np.float32)
    lesion_centres = {1: centre + [15.0, 0, 0], 2: centre + [-14.0, 5.0, 6.0]}  # + x: patient left
    radii_lesion = {1: 6.0, 2: 4.0}
    labels = np.zeros(shape, np.int16)
    if lesions:
        for label, c in lesion_centres.items():
            labels[np.linalg.norm(lps - c, axis=-1) <= radii_lesion[label]] = label
    t1c[labels > 0] = 250.0
    paths = {
        "t1c": f"bids/sub-{subject}/ses-{session}/anat/{case_id}_ce-gadolinium_T1w.nii.gz",
        "t2": f"bids/sub-{subject}/ses-{session}/anat/{case_id}_T2w.nii.gz",
        "t2_in": f"bids/derivatives/metsprep/sub-{subject}/ses-{session}/anat/{case_id}_space-T1wCE_T2w.nii.gz",
        "labels": f"bids/derivatives/metsprep/sub-{subject}/ses-{session}/anat/{case_id}_space-T1wCE_desc-lesions_dseg.nii.gz",
        "mask": f"bids/derivatives/metsprep/sub-{subject}/ses-{session}/anat/{case_id}_space-T1wCE_desc-lesions_mask.nii.gz",
        "head": f"bids/derivatives/metsprep/sub-{subject}/ses-{session}/anat/{case_id}_space-T1wCE_desc-head_mask.nii.gz",
    }  # fmt: skip
    _save(root / paths["t1c"], t1c, ras_from_ijk)
    _save(root / paths["labels"], labels, ras_from_ijk)
    _save(root / paths["mask"], (labels > 0).astype(np.uint8), ras_from_ijk)
    if with_head:
        _save(root / paths["head"], head.astype(np.uint8), ras_from_ijk)
    if with_t2:
        t2 = np.where(head, 80.0, 0.0).astype(np.float32)
        t2[labels > 0] = 400.0
        _save(root / paths["t2"], t2, ras_from_ijk)
        _save(root / paths["t2_in"], t2, ras_from_ijk)
    work = root / "work" / "cases" / case_id
    work.mkdir(parents=True, exist_ok=True)
    # the stage results through their contracts (a producer that changes its output breaks this)
    plan = CasePlan(SCHEMA_VERSION, case_id, subject, session, f"P{subject}", f"1.2.3.{subject}", str(root / "input"),
                    {"T1C": SeriesPlan(f"1.2.3.{subject}.1", "T1 +C", ("a.dcm",), "description", ()), "T1": None,
                     "T2": SeriesPlan(f"1.2.3.{subject}.3", "T2", ("b.dcm",), "description", ()) if with_t2 else None},
                    RtssPlan("rtss.dcm", f"1.2.3.{subject}.9", "sop_uid"), ("rtss_matched_by_frame",))  # fmt: skip
    ras = tuple(tuple(float(v) for v in row) for row in ras_from_ijk)
    positions = tuple(2.0 * k - 40.0 for k in range(shape[2]))

    def record(nifti: str, uid: str) -> ImageRecord:
        return ImageRecord(nifti, nifti.replace(".nii.gz", ".json"), uid, shape, ras, positions, 2.0, False, (), None)

    images = {"T1C": record(paths["t1c"], f"1.2.3.{subject}.1")}
    if with_t2:
        images["T2"] = record(paths["t2"], f"1.2.3.{subject}.3")
    bids = BidsResult(SCHEMA_VERSION, case_id, subject, session, "ok", None, (), (), images, Participant("F", 61.0))
    derivative = paths["labels"].replace("_desc-lesions_dseg.nii.gz", "")
    outputs = RtssOutputs(paths["labels"], derivative + "_desc-lesions_dseg.json", derivative + "_desc-lesions_dseg.tsv",
                          paths["mask"], derivative + "_desc-lesions_mask.json",
                          paths["head"] if with_head else None, derivative + "_desc-head_mask.json" if with_head else None)  # fmt: skip
    rtss = RtssResult(SCHEMA_VERSION, case_id, "ok", None, (), "rule", "rule", "rule", (), outputs)
    t2 = None
    if with_t2:
        t2 = RegistrationRecord(
            missing=False, reason=None, flag=None, transform="t2.tfm", image=paths["t2_in"], sidecar="t2.json",
            metric="MattesMutualInformation", metric_before=-0.3, metric_after=-0.6, iterations=40,
            iterations_per_level=(20, 20), stop_condition="converged", converged=True, rotation_deg=1.0,
            rotation_xyz_deg=(1.0, 0.0, 0.0), translation_mm=3.0, translation_xyz_mm=(1.0, 2.0, 2.0),
            center_lps=(0.0, 0.0, 0.0), seconds=1.0, check_disagreement_mm=0.1,
        )  # fmt: skip
    register = RegisterResult(SCHEMA_VERSION, case_id, "ok", None, (), {"T1": None, "T2": t2})
    standard = StandardSpaceResult(
        schema_version=SCHEMA_VERSION, case_id=case_id, status="ok", status_reason=None, template="MNI152NLin2009aSym",
        fitted=True, reason=None, flag=mni_flag, trusted=mni_flag is None, transform="mni.tfm", brain_mask="brain.nii.gz",
        mni_lps_from_t1c_lps=affine_rows(MNI_LPS_FROM_T1C_LPS), scales=(1.0, 1.0, 1.0), metric_start=-0.3,
        metric_after=-0.6, check_disagreement_mm=0.2, brain_volume_ml=1200.0, seconds=1.0,
    )  # fmt: skip
    rois = [
        {"roi_number": 1, "roi_name": "*Skull", "label": None, "is_lesion": False, "contour_volume_mm3": 1.0e6, "n_contours": 40},
        {"roi_number": 3, "roi_name": "R_front", "label": 1, "is_lesion": True, "contour_volume_mm3": 900.0, "n_contours": 6},
        {"roi_number": 2, "roi_name": "met 2", "label": 2, "is_lesion": True, "contour_volume_mm3": 270.0, "n_contours": 4},
    ]  # fmt: skip
    for row in rois:
        row.update(n_contours_used=row["n_contours"], status="ok", generation_algorithm="MANUAL", n_slices=3,
                   voxel_count=0, raster_voxel_count=0, overlap_voxel_count=0, volume_mm3=0.0)  # fmt: skip
    if not lesions:
        rois = rois[:1]
    files = {"plan": work / "plan.json", "bids": work / "bids.json", "rtss": work / "rtss.json", "register": work / "register.json",
             "standard_space": work / "standard_space.json",
             "rois": work / "rois.parquet", "lesions": work / "lesions.parquet", "case": work / "case.json"}  # fmt: skip
    for key, result in (("plan", plan), ("bids", bids), ("rtss", rtss), ("register", register), ("standard_space", standard)):
        result.write(files[key])
    write_roi_table(rois, ROI_COLUMNS, files["rois"])  # the rtss stage's own table writer
    return files


def run_case(root: Path, files: dict[str, Path]) -> tuple[dict, pd.DataFrame]:
    catalog_case(
        plan_json=files["plan"], bids_json=files["bids"], rtss_json=files["rtss"], rois_parquet=files["rois"],
        register_json=files["register"], standard_space_json=files["standard_space"], settings=LocationSettings(),
        output_dir=root,
        out_lesions=files["lesions"], out_case=files["case"],
    )  # fmt: skip
    return CaseSummary.read(files["case"]).row, pd.read_parquet(files["lesions"])


def test_catalog_case_constructed(tmp_path):
    files = make_case(tmp_path)
    case, lesions = run_case(tmp_path, files)
    assert case["status"] == "ok" and case["status_reason"] is None
    assert case["non_lesion_rois"] == ["*Skull"]
    assert list(lesions["roi_number"]) == [2, 3]  # sorted, *Skull excluded
    by_name = lesions.set_index("roi_name")
    big = by_name.loc["R_front"]
    assert big["volume_mm3"] == pytest.approx(4 / 3 * math.pi * 6.0**3, rel=0.08)
    assert big["equivalent_diameter_mm"] == pytest.approx(12.0, abs=1.0)
    assert 12.0 - math.sqrt(6) <= big["max_diameter_mm"] <= 12.0
    assert big["enhancement_ratio"] == pytest.approx(2.5)
    assert big["t2_mean"] == pytest.approx(400.0) and pd.isna(big["t1_mean"])
    # named right, lies on the patient's left (+x LPS) of a head shifted off the image centre
    assert big["hemisphere_name"] == "R" and big["hemisphere_geometry"] == "L"
    assert big["hemisphere"] == "R" and "hemisphere_name_R_geometry_L" in big["location_flag"]
    assert big["midsagittal_distance_mm"] == pytest.approx(15.0, abs=1.0)
    small = by_name.loc["met 2"]
    assert small["hemisphere"] == "R" and small["location_source"] == "geometry" and small["region"] == "unknown"
    assert small["centroid_lps_x_mm"] == pytest.approx(12.0 - 14.0, abs=0.3)
    # closest voxel of lesion 1 to the head surface: the head's half-width 30 mm minus 15 minus 6
    assert big["distance_to_head_surface_mm"] == pytest.approx(30 - 15 - 6, abs=1.5)
    assert case["n_lesions"] == 2 and case["total_lesion_volume_mm3"] == pytest.approx(lesions["volume_mm3"].sum())
    assert case["t2_translation_mm"] == 3.0 and case["t1_metric_after"] is None
    # the MNI centroid through the case's fit, in RAS; trusted, so no lesion doubt
    assert (big["mni_x_mm"], big["mni_y_mm"], big["mni_z_mm"]) == pytest.approx(
        (-(big["centroid_lps_x_mm"] + 10.0), -(big["centroid_lps_y_mm"] - 20.0), big["centroid_lps_z_mm"] + 5.0))
    assert pd.isna(big["mni_flag"]) and case["mni_trusted"] is True and case["brain_volume_ml"] == 1200.0


def test_a_flagged_template_fit_reaches_every_lesion_row(tmp_path):
    files = make_case(tmp_path, mni_flag="a second fit from a perturbed start ended 4.1 mm away")
    case, lesions = run_case(tmp_path, files)
    assert case["mni_trusted"] is False and "standard_space_flag" in case["flags"]
    assert all("4.1 mm away" in flag for flag in lesions["mni_flag"])
    assert case["midsagittal_point_lps_x_mm"] == pytest.approx(12.0, abs=0.5)
    assert any("R_front" in f for f in case["location_flags"])


def test_catalog_case_excluded_and_empty(tmp_path):
    files = make_case(tmp_path, with_t2=False, with_head=False, lesions=False)
    case, lesions = run_case(tmp_path, files)
    assert case["status"] == "ok" and case["n_lesions"] == 0 and len(lesions) == 0
    assert case["midsagittal_source"] == "t1c_foreground"
    assert set(CONTRACT["lesions"]) <= set(lesions.columns)
    rtss = RtssResult.read(files["rtss"])
    replace(rtss, status="excluded", status_reason="the RT Structure Set references another frame of reference",
            outputs=None).write(files["rtss"])  # fmt: skip
    case, lesions = run_case(tmp_path, files)
    assert case["status"] == "excluded" and case["excluded_at"] == "rtss"
    assert case["status_reason"].startswith("the RT Structure Set")
    assert len(lesions) == 0


def _write_match_tables(root: Path, extra_column: bool = False) -> tuple[Path, Path]:
    """The match stage's tables, with exactly its columns (match.SERIES_COLUMNS / CASE_COLUMNS)."""
    series = pd.DataFrame([
        {"case_id": "sub-01_ses-01", "patient_id": "P01", "study_instance_uid": "1.2.3.01", "series_instance_uid": "1.2.3.01.1",
         "modality": "MR", "series_description": "T1 +C", "sequence": "T1C", "sequence_source": "description", "n_instances": 40,
         "rows": 96, "columns": 96, "pixel_spacing_row_mm": 1.0, "pixel_spacing_col_mm": 1.0, "slice_thickness_mm": 2.0,
         "slice_spacing_mm": 2.0},
        {"case_id": None, "patient_id": "P09", "study_instance_uid": "1.2.3.09", "series_instance_uid": "1.2.3.09.1",
         "modality": "MR", "series_description": "loc", "sequence": "OTHER", "sequence_source": "description", "n_instances": 3,
         "rows": 256, "columns": 256, "pixel_spacing_row_mm": 1.0, "pixel_spacing_col_mm": 1.0, "slice_thickness_mm": 5.0,
         "slice_spacing_mm": None},
    ])  # fmt: skip
    cases = pd.DataFrame([
        {"case_id": "sub-01_ses-01", "patient_id": "P01", "study_instance_uid": "1.2.3.01", "session": "01", "status": "ok", "status_reason": None},
        {"case_id": "sub-09_ses-01", "patient_id": "P09", "study_instance_uid": "1.2.3.09", "session": "01", "status": "excluded",
         "status_reason": "the study has no T1 post-contrast series"},
    ])  # fmt: skip
    series = series.reindex(columns=MATCH_SERIES_COLUMNS + (["extra_note"] if extra_column else []))
    cases = cases.reindex(columns=MATCH_CASE_COLUMNS)
    (root / "work" / "match").mkdir(parents=True, exist_ok=True)
    (root / "catalog").mkdir(parents=True, exist_ok=True)
    pq.write_table(INVENTORY_SCHEMA.empty_table(), root / "catalog" / "inventory.parquet")
    series.to_parquet(root / "work/match/series.parquet")
    cases.to_parquet(root / "work/match/cases.parquet")
    return root / "work/match/series.parquet", root / "work/match/cases.parquet"


def build(root: Path, files: dict[str, Path], config: dict | None = None) -> dict[str, Path]:
    series, cases = _write_match_tables(root)
    out = {name: root / "catalog" / f"{name}.parquet" for name in ("inventory", "series", "cases", "lesions")}
    out["dictionary"] = root / "catalog" / "README.md"
    build_catalog(
        inventory_parquet=root / "catalog" / "inventory.parquet", match_series_parquet=series, match_cases_parquet=cases,
        case_jsons=[files["case"]], lesion_parquets=[files["lesions"]], out_series=out["series"],
        out_cases=out["cases"], out_lesions=out["lesions"], out_dictionary=out["dictionary"], config=config or {"seed": 1},
    )  # fmt: skip
    return out


def test_build_catalog_schema_and_dictionary(tmp_path):
    files = make_case(tmp_path)
    run_case(tmp_path, files)
    out = build(tmp_path, files, {"b": 1, "a": [1, 2]})
    for table, required in CONTRACT.items():
        schema = pq.read_schema(out[table])
        assert set(required) <= set(schema.names), table
        for f in schema:
            assert f.metadata and f.metadata.get(b"description"), (table, f.name)
        meta = schema.metadata
        assert meta[b"config_sha256"].decode() == config_digest({"a": [1, 2], "b": 1})
        assert meta[b"metsprep_version"] and meta[b"created_by"]
        assert len(pd.read_parquet(out[table])) >= 1
    assert pq.read_schema(out["lesions"]).field("volume_mm3").metadata[b"unit"] == b"mm3"
    cases = pd.read_parquet(out["cases"]).set_index("case_id")
    assert cases.loc["sub-09_ses-01", "status"] == "excluded" and cases.loc["sub-09_ses-01", "excluded_at"] == "match"
    assert cases.loc["sub-01_ses-01", "n_lesions"] == 2 and pd.isna(cases.loc["sub-01_ses-01", "status_reason"])
    series = pd.read_parquet(out["series"])
    assert list(series["case_id"].isna()) == [False, True]  # nulls last
    assert series.loc[0, "nifti"].endswith("_ce-gadolinium_T1w.nii.gz") and pd.isna(series.loc[1, "nifti"])
    # the dictionary is exactly what the written schemas generate
    from metsprep.catalog.schemas import EXPORT_COLUMNS, LESION_TRACK_COLUMNS, SPLIT_COLUMNS, table_schema
    from metsprep.deid import AUDIT_SCHEMA

    schemas = {t: pq.read_schema(out[t]) for t in ("inventory", "series", "cases", "lesions")}
    later = {"splits": table_schema(SPLIT_COLUMNS, "splits"), "exports": table_schema(EXPORT_COLUMNS, "exports"),
             "lesion_tracks": table_schema(LESION_TRACK_COLUMNS, "lesion_tracks")}
    assert out["dictionary"].read_text() == data_dictionary({**schemas, "deid_audit": AUDIT_SCHEMA, **later})
    assert "| `sequence_rule` | string |" in out["dictionary"].read_text()


def test_build_catalog_refuses_an_undeclared_column(tmp_path):
    files = make_case(tmp_path)
    run_case(tmp_path, files)
    _write_match_tables(tmp_path, extra_column=True)
    with pytest.raises(ValueError, match="extra_note"):
        build_catalog(
            inventory_parquet=tmp_path / "catalog" / "inventory.parquet",
            match_series_parquet=tmp_path / "work/match/series.parquet",
            match_cases_parquet=tmp_path / "work/match/cases.parquet", case_jsons=[files["case"]],
            lesion_parquets=[files["lesions"]], out_series=tmp_path / "s.parquet", out_cases=tmp_path / "c.parquet",
            out_lesions=tmp_path / "l.parquet", out_dictionary=tmp_path / "README.md", config={},
        )  # fmt: skip


def test_catalog_readable_by_pyarrow_dataset_and_pandas(tmp_path):
    files = make_case(tmp_path)
    run_case(tmp_path, files)
    out = build(tmp_path, files)
    lesions = pq.read_table(out["lesions"]).to_pandas()
    assert lesions["rano_measurable"].dtype == bool
    assert lesions["label"].tolist() == [2, 1]


def test_column_types_never_depend_on_the_data(tmp_path):
    """Every catalog column has its declared Arrow type, even where every value is null or
    every list is empty (a list column of empty lists once came out as list<null>)."""
    from metsprep.catalog.schemas import CASE_COLUMNS, LESION_COLUMNS, SERIES_COLUMNS

    files = make_case(tmp_path, with_t2=False, with_head=False, lesions=False)
    run_case(tmp_path, files)
    out = build(tmp_path, files)
    for table, columns in (("series", SERIES_COLUMNS), ("cases", CASE_COLUMNS), ("lesions", LESION_COLUMNS)):
        schema = pq.read_schema(out[table])
        assert [f.name for f in schema] == [c.name for c in columns], table
        for column in columns:
            assert schema.field(column.name).type == column.type, (table, column.name)
