"""The synthetic cohort is the ground truth of every other test: check it against itself
(headers vs truth), against independent computations (Monte Carlo volumes, SimpleITK
registration, a derived sampling-error bound) and against the DICOM rules pydicom enforces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage, RTStructureSetStorage

from metsprep.frames import apply_affine
from metsprep.synth import generate_cohort
from metsprep.synth.lesions import Lesion, ShapeTerm, draw_diameters_mm, draw_lesion_count

FEATURE_SEED = 4242
FEATURE_OPTIONS = {
    0: {"rescale": {"slope": 2.0, "intercept": -1024.0}, "transfer_syntax": "rle"},
    1: {"tilt_deg": 14.0, "n_lesions": 4},
    2: {"matrix": 512, "missing_slice": "T1C", "n_lesions": 2},
    3: {"n_lesions": 10},
    4: {"regenerate_uids": True, "studies": 2, "omit_series": ["T2"], "transfer_syntax": "j2k", "contrast_agent": "MAGNEVIST"},
}


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_features")
    truth = generate_cohort(root, 5, FEATURE_SEED, layout="per_case", case_options=FEATURE_OPTIONS)
    return root, truth


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Case 0 of the feature seed without options, in the nested layout."""
    root = tmp_path_factory.mktemp("synth_reference")
    truth = generate_cohort(root, 1, FEATURE_SEED, layout="nested")
    return root, truth


def _cohorts(synth_cohort, features):
    return [(synth_cohort.root, synth_cohort.truth), features]


def _all_files(truth):
    for case in truth["cases"]:
        for series in case["series"].values():
            if series:
                yield from (f for f in series["files"] if f)
        yield case["rtss"]["file"]


def _lesion_from_truth(lesion: dict) -> Lesion:
    terms = [ShapeTerm(t["degree"], tuple(t["axis_lps"]), t["coefficient"]) for t in lesion["shape_terms"]]
    return Lesion(np.array(lesion["centre_lps_mm"]), lesion["radius_mm"], terms)


def _case(truth, case_index, study_index=0):
    return next(c for c in truth["cases"] if c["case_index"] == case_index and c["study_index"] == study_index)


# --- files and headers ------------------------------------------------------------------


def test_every_file_reads_with_correct_meta(synth_cohort, features):
    for root, truth in _cohorts(synth_cohort, features):
        files = sorted(p.relative_to(root / "dicom").as_posix() for p in (root / "dicom").rglob("*") if p.is_file())
        assert files == sorted(_all_files(truth)), "files on disk and in truth differ"
        for rel in files:
            head = pydicom.dcmread(root / "dicom" / rel, stop_before_pixels=True)
            full = pydicom.dcmread(root / "dicom" / rel)
            meta = full.file_meta
            assert meta.MediaStorageSOPClassUID == full.SOPClassUID in (MRImageStorage, RTStructureSetStorage)
            assert meta.MediaStorageSOPInstanceUID == full.SOPInstanceUID == head.SOPInstanceUID
            assert meta.ImplementationClassUID == "1.2.276.0.7230010.3.0.3.6.4"
            assert meta.ImplementationVersionName == "OFFIS_DCMTK_364"
            assert not any(elem.tag.is_private for elem in full.iterall())
            for uid in (full.SOPInstanceUID, full.SeriesInstanceUID, full.StudyInstanceUID):
                assert uid.startswith("1.2.276.0.7230010.3.1.") and len(uid) <= 64
            assert full.StudyDate.startswith("1901") and len(full.PatientID) == 10
            if full.SOPClassUID == MRImageStorage:
                assert full.Manufacturer == "GE MEDICAL SYSTEMS"
                assert full.pixel_array.shape == (full.Rows, full.Columns)


def test_series_headers_match_truth(synth_cohort, features):
    for root, truth in _cohorts(synth_cohort, features):
        for case in truth["cases"]:
            frames = set()
            for role, series in case["series"].items():
                if series is None:
                    continue
                lps_from_ijk = np.array(series["lps_from_ijk"])
                for k, rel in enumerate(series["files"]):
                    if rel is None:
                        assert k == series["missing_slice_index"]
                        continue
                    ds = pydicom.dcmread(root / "dicom" / rel, stop_before_pixels=True)
                    assert ds.SeriesInstanceUID == series["series_instance_uid"]
                    assert ds.SeriesDescription == series["series_description"]
                    assert ds.InstanceNumber == k + 1 and ds.SOPInstanceUID == series["sop_instance_uids"][k]
                    assert (ds.Rows, ds.Columns) == (series["rows"], series["columns"])
                    assert ds.file_meta.TransferSyntaxUID == series["transfer_syntax_uid"]
                    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], lps_from_ijk[:3, 3] + k * lps_from_ijk[:3, 2], atol=1e-3)
                    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
                    np.testing.assert_allclose(row * float(ds.PixelSpacing[1]), lps_from_ijk[:3, 0], atol=1e-6)
                    np.testing.assert_allclose(col * float(ds.PixelSpacing[0]), lps_from_ijk[:3, 1], atol=1e-6)
                    frames.add(ds.FrameOfReferenceUID)
                    has_agent = "ContrastBolusAgent" in ds and ds.ContrastBolusAgent
                    assert not has_agent or role == "T1C"
                step = np.linalg.norm(lps_from_ijk[:3, 2])
                assert step == pytest.approx(series["slice_spacing_mm"], abs=1e-3)
                assert 20 <= series["n_slices_full"] <= 50
            assert frames == {case["frame_of_reference_uid"]}


# --- RT Structure Sets ------------------------------------------------------------------


def _image_planes(root, case):
    """SOP UID -> (origin, normal) read from the T1C files themselves."""
    planes = {}
    for rel in case["series"]["T1C"]["files"]:
        if rel:
            ds = pydicom.dcmread(root / "dicom" / rel, stop_before_pixels=True)
            iop = np.array(ds.ImageOrientationPatient, float)
            normal = np.cross(iop[:3], iop[3:])
            planes[ds.SOPInstanceUID] = (np.array(ds.ImagePositionPatient, float), normal / np.linalg.norm(normal))
    return planes


def test_contours_reference_t1c_images_and_lie_on_their_planes(synth_cohort, features):
    checked_tilted = False
    for root, truth in _cohorts(synth_cohort, features):
        for case in truth["cases"]:
            rtss = pydicom.dcmread(root / "dicom" / case["rtss"]["file"])
            t1c = case["series"]["T1C"]
            lps_from_ijk = np.array(t1c["lps_from_ijk"])
            planes = _image_planes(root, case)
            sop_to_k = {u: k for k, u in enumerate(t1c["sop_instance_uids"])}
            if not case["rtss"]["references_resolvable"]:
                sop_to_k = {u: k for k, u in enumerate(
                    rtss.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
                    .RTReferencedSeriesSequence[0].ContourImageSequence[i].ReferencedSOPInstanceUID
                    for i in range(t1c["n_slices_full"]))}
                assert not set(sop_to_k) & set(planes), "regenerated references must not resolve"
            normal = np.cross(lps_from_ijk[:3, 0], lps_from_ijk[:3, 1])
            normal /= np.linalg.norm(normal)
            names = {r.ROINumber: r.ROIName for r in rtss.StructureSetROISequence}
            assert rtss.StructureSetLabel == "ROIs in axC" and rtss.Modality == "RTSTRUCT"
            assert rtss.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == case["frame_of_reference_uid"]
            for roi in rtss.ROIContourSequence:
                for contour in roi.ContourSequence:
                    uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
                    k = sop_to_k[uid]
                    pts = np.array(contour.ContourData, float).reshape(-1, 3)
                    assert contour.NumberOfContourPoints == len(pts) >= 8
                    if uid in planes:  # resolvable: the plane comes from the image file
                        origin, n = planes[uid]
                    else:  # missing slice or regenerated UID: the plane from the stack geometry
                        origin, n = lps_from_ijk[:3, 3] + k * lps_from_ijk[:3, 2], normal
                    assert np.max(np.abs((pts - origin) @ n)) < 0.01, names[roi.ReferencedROINumber]
                    seg = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1)
                    assert seg.max() < (3.0 if names[roi.ReferencedROINumber] == "*Skull" else 2.5)
                    checked_tilted |= t1c["tilt_deg"] != 0
            assert sorted(names.values()) == sorted([lesion["roi_name"] for lesion in case["lesions"]] + ["*Skull"])
    assert checked_tilted


def _planimetric_from_file(root, case):
    """Per ROI name: sum of shoelace areas in the slice plane times the IPP slice spacing."""
    t1c = case["series"]["T1C"]
    lps_from_ijk = np.array(t1c["lps_from_ijk"])
    row = lps_from_ijk[:3, 0] / np.linalg.norm(lps_from_ijk[:3, 0])
    col = lps_from_ijk[:3, 1] / np.linalg.norm(lps_from_ijk[:3, 1])
    positions = [np.array(pydicom.dcmread(root / "dicom" / f, stop_before_pixels=True).ImagePositionPatient, float)
                 for f in t1c["files"] if f]
    spacing = np.median(np.linalg.norm(np.diff(positions, axis=0), axis=1))
    rtss = pydicom.dcmread(root / "dicom" / case["rtss"]["file"])
    names = {r.ROINumber: r.ROIName for r in rtss.StructureSetROISequence}
    volumes = {}
    for roi in rtss.ROIContourSequence:
        total = 0.0
        for contour in roi.ContourSequence:
            pts = np.array(contour.ContourData, float).reshape(-1, 3)
            a, b = pts @ row, pts @ col
            total += 0.5 * abs(np.dot(a, np.roll(b, -1)) - np.dot(b, np.roll(a, -1)))
        volumes[names[roi.ReferencedROINumber]] = total * spacing
    return volumes


def test_planimetric_truth_recomputes_from_the_rtss_file(synth_cohort, features):
    for root, truth in _cohorts(synth_cohort, features):
        for case in truth["cases"]:
            from_file = _planimetric_from_file(root, case)
            for lesion in case["lesions"]:
                assert from_file[lesion["roi_name"]] == pytest.approx(lesion["planimetric_volume_mm3"], rel=2e-5)


def test_true_volume_and_centroid_match_monte_carlo(features):
    _, truth = features
    rng = np.random.default_rng(0)
    lesions = [lesion for c in truth["cases"] for lesion in c["lesions"]][:6]
    for lesion in lesions:
        body = _lesion_from_truth(lesion)
        half = body.max_radius_mm
        pts = body.centre_lps + rng.uniform(-half, half, size=(400_000, 3))
        inside = body.radial_ratio(pts) <= 1.0
        box = (2 * half) ** 3
        p = inside.mean()
        se = box * np.sqrt(p * (1 - p) / len(pts))
        assert abs(box * p - lesion["true_volume_mm3"]) < 4 * se + 1e-9
        np.testing.assert_allclose(pts[inside].mean(axis=0), lesion["centroid_lps_mm"], atol=4 * half / np.sqrt(inside.sum()))


def _sampling_error_bound(body: Lesion, normal: np.ndarray, row: np.ndarray, col: np.ndarray, spacing: float,
                          n_points: list[int], areas: list[float]) -> float:
    """Bound on |planimetric - true| volume for slices every `spacing` mm.

    Sum_k h A(z0 + k h) - ∫A = -∫ Ψ(z) dA'(z), with Ψ the periodic antiderivative of the
    sawtooth, Ψ = h² B2(t)/2 ranging over h²[-1/24, 1/12]; ∫dA' = 0, so
    |error| <= h²/16 · TV(A'). TV(A') is measured on A(z) sampled every 0.25 mm (A from
    exact cross-sections). The inscribed polygons add at most Σ h A_k (2π/n_k)²/6.
    (For a sphere TV(A') = 8πR: relative bound 1.5 (h/D)².)
    """
    rmax = body.max_radius_mm
    c = float(body.centre_lps @ normal)
    zs = np.arange(c - rmax - 0.1, c + rmax + 0.1, 0.25)
    area = []
    for z in zs:
        origin = body.centre_lps + (z - c) * normal
        pts = body.cross_section(origin, row, col, point_spacing_mm=0.5)
        area.append(0.0 if pts is None else 0.5 * abs(np.dot(pts @ row, np.roll(pts @ col, -1)) - np.dot(pts @ col, np.roll(pts @ row, -1))))
    slope = np.diff(area) / 0.25
    tv = np.sum(np.abs(np.diff(slope))) + abs(slope[0]) + abs(slope[-1])
    polygon = sum(spacing * a * (2 * np.pi / n) ** 2 / 6 for a, n in zip(areas, n_points))
    return spacing**2 / 16 * tv * 1.05 + polygon


def test_planimetric_volume_agrees_with_analytic_within_derived_bound(synth_cohort, features):
    tested = 0
    for _root, truth in _cohorts(synth_cohort, features):
        for case in truth["cases"]:
            t1c = case["series"]["T1C"]
            m = np.array(t1c["lps_from_ijk"])
            row, col = m[:3, 0] / np.linalg.norm(m[:3, 0]), m[:3, 1] / np.linalg.norm(m[:3, 1])
            normal = np.cross(row, col)
            many = case["n_lesions"] >= 10
            for lesion in case["lesions"]:
                if lesion["equivalent_diameter_mm"] < 15 and not many:
                    continue
                body = _lesion_from_truth(lesion)
                rtss_areas = lesion["planimetric_volume_mm3"] / t1c["slice_spacing_mm"]
                bound = _sampling_error_bound(body, normal, row, col, t1c["slice_spacing_mm"],
                                              lesion["n_contour_points"], [rtss_areas / max(1, lesion["n_contours"])] * lesion["n_contours"])
                error = lesion["planimetric_volume_mm3"] - lesion["true_volume_mm3"]
                assert abs(error) <= bound, (lesion["roi_name"], error, bound)
                if lesion["equivalent_diameter_mm"] >= 15:
                    # and the bound itself is the expected order, 1.5 (h/D)² for near-spheres
                    assert bound / lesion["true_volume_mm3"] < 3.0 * (t1c["slice_spacing_mm"] / lesion["equivalent_diameter_mm"]) ** 2 + 0.02
                tested += 1
    assert tested >= 8


# --- anatomy, lesions and labels --------------------------------------------------------


def test_lesions_are_in_brain_apart_and_labelled_by_true_side(synth_cohort, features):
    from metsprep.synth import anatomy

    maps = anatomy.tissue_maps()
    for _, truth in _cohorts(synth_cohort, features):
        for case in truth["cases"]:
            pose = np.array(case["head"]["t1c_lps_from_mni_lps"])
            mni_ijk_from_t1c = np.linalg.inv(maps.lps_from_ijk) @ np.linalg.inv(pose)
            bodies = [_lesion_from_truth(lesion) for lesion in case["lesions"]]
            for lesion, body in zip(case["lesions"], bodies):
                dirs = np.random.default_rng(1).normal(size=(300, 3))
                dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
                surface = body.centre_lps + dirs * body.radius_along(dirs)[:, None] * 0.98
                ijk = apply_affine(mni_ijk_from_t1c, surface)
                assert anatomy.sample_volume(maps.brain, ijk).min() > 0.45
                mni = apply_affine(np.linalg.inv(pose), np.array(lesion["centroid_lps_mm"]))
                assert lesion["hemisphere"] == ("L" if mni[0] > 0 else "R")
                assert lesion["roi_name"].startswith(lesion["hemisphere"])
                assert lesion["region"] in {"frontal", "temporal", "parietal", "occipital", "cerebellum", "brainstem", "deep"}
            for a in range(len(bodies)):
                for b in range(a + 1, len(bodies)):
                    gap = np.linalg.norm(bodies[a].centre_lps - bodies[b].centre_lps)
                    assert gap > bodies[a].max_radius_mm + bodies[b].max_radius_mm


def test_lesions_enhance_on_t1c(features):
    root, truth = features
    case = _case(truth, 3)  # many lesions
    t1c = case["series"]["T1C"]
    vol = np.stack([pydicom.dcmread(root / "dicom" / f).pixel_array for f in t1c["files"]]).astype(float)
    ijk_from_lps = np.linalg.inv(np.array(t1c["lps_from_ijk"]))
    brain = [vol[tuple(np.round(anatomy_ijk).astype(int)[::-1])] for anatomy_ijk in
             (ijk_from_lps[:3, :3] @ np.array(case["brain_points_t1c_lps"]).T + ijk_from_lps[:3, 3:]).T]
    for lesion in case["lesions"]:
        if lesion["equivalent_diameter_mm"] < 8 or lesion["ring_enhancing"]:
            continue
        i, j, k = np.round(ijk_from_lps[:3, :3] @ lesion["centre_lps_mm"] + ijk_from_lps[:3, 3]).astype(int)
        assert vol[k, j, i] > np.percentile(brain, 90), lesion["roi_name"]


def test_draw_distributions_look_like_a_gamma_knife_cohort():
    rng = np.random.default_rng(3)
    counts = np.array([draw_lesion_count(rng) for _ in range(20000)])
    assert 0.42 < np.mean(counts == 1) < 0.48
    assert 0.30 < np.mean((counts >= 2) & (counts <= 4)) < 0.40
    assert counts.max() <= 15 and np.mean(counts >= 10) > 0.03
    d = draw_diameters_mm(rng, 20000)
    assert d.min() >= 2 and d.max() <= 40 and 8 < np.median(d) < 10


# --- motion -----------------------------------------------------------------------------


def test_truth_angles_follow_the_itk_euler_convention(synth_cohort):
    sitk = pytest.importorskip("SimpleITK")
    for case in synth_cohort.truth["cases"]:
        for role in ("T1", "T2"):
            t = case["transforms"][role]
            euler = sitk.Euler3DTransform(t["center_of_rotation_lps_mm"], *np.deg2rad(t["rotation_deg"]), t["translation_mm"])
            m = np.array(t["moving_lps_from_t1c_lps"])
            np.testing.assert_allclose(np.array(euler.GetMatrix()).reshape(3, 3), m[:3, :3], atol=1e-9)
            p = np.array(case["brain_points_t1c_lps"][0])
            np.testing.assert_allclose(euler.TransformPoint(p.tolist()), m[:3, :3] @ p + m[:3, 3], atol=1e-6)


def _read_series(root, series):
    """Read with GDCM's own file sorting (by position), independent of the truth's k order."""
    sitk = pytest.importorskip("SimpleITK")
    folder = root / "dicom" / Path(series["files"][0]).parent
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series["series_instance_uid"]))
    return sitk.Cast(reader.Execute(), sitk.sitkFloat32)


def test_registration_recovers_the_true_t1_motion(synth_cohort):
    sitk = pytest.importorskip("SimpleITK")
    root, case = synth_cohort.root, synth_cohort.truth["cases"][0]
    fixed = _read_series(root, case["series"]["T1C"])
    moving = _read_series(root, case["series"]["T1"])
    # an independent reader puts the stack where the truth says
    t1c = case["series"]["T1C"]
    lps_from_ijk = np.array(t1c["lps_from_ijk"])
    corners = [lps_from_ijk @ [0, 0, k, 1] for k in (0, t1c["n_slices_full"] - 1)]
    lowest = min(corners, key=lambda p: p[2])[:3]
    np.testing.assert_allclose(fixed.GetOrigin(), lowest, atol=1e-3)
    assert fixed.GetSize() == (t1c["columns"], t1c["rows"], t1c["n_instances"])
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.05, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-4, 300, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SetInitialTransform(init, inPlace=False)
    estimate = reg.Execute(fixed, moving)
    truth = np.array(case["transforms"]["T1"]["moving_lps_from_t1c_lps"])
    pts = np.array(case["brain_points_t1c_lps"])
    errors = [np.linalg.norm(np.array(estimate.TransformPoint(p.tolist())) - (truth[:3, :3] @ p + truth[:3, 3])) for p in pts]
    identity = np.linalg.norm(pts - (pts @ truth[:3, :3].T + truth[:3, 3]), axis=1)
    assert np.mean(identity) > 1.5, "motion too small to test"
    assert np.mean(errors) < 1.0 and np.percentile(errors, 95) < 1.5, (np.mean(errors), np.max(errors))


# --- forced features --------------------------------------------------------------------


def test_tilted_stack_steps_along_its_normal(features):
    root, truth = features
    t1c = _case(truth, 1)["series"]["T1C"]
    assert t1c["tilt_deg"] == 14.0
    first = pydicom.dcmread(root / "dicom" / t1c["files"][0], stop_before_pixels=True)
    second = pydicom.dcmread(root / "dicom" / t1c["files"][1], stop_before_pixels=True)
    iop = np.array(first.ImageOrientationPatient, float)
    np.testing.assert_allclose(iop, [1, 0, 0, 0, np.cos(np.deg2rad(14)), np.sin(np.deg2rad(14))], atol=1e-6)
    step = np.array(second.ImagePositionPatient, float) - np.array(first.ImagePositionPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    assert np.linalg.norm(np.cross(step, normal)) < 1e-3
    assert abs(step @ normal) == pytest.approx(t1c["slice_spacing_mm"], abs=1e-3)


def test_512_matrix_and_missing_slice(features):
    root, truth = features
    case = _case(truth, 2)
    t1c = case["series"]["T1C"]
    assert t1c["rows"] == t1c["columns"] == 512 and t1c["pixel_spacing_mm"][0] < 0.51
    missing = t1c["missing_slice_index"]
    assert 2 <= missing <= t1c["n_slices_full"] - 3 and t1c["files"][missing] is None
    datasets = [pydicom.dcmread(root / "dicom" / f, stop_before_pixels=True) for f in t1c["files"] if f]
    assert len(datasets) == t1c["n_instances"] == t1c["n_slices_full"] - 1
    gaps = np.diff(sorted(float(np.array(d.ImagePositionPatient, float) @ [0, 0, 1]) for d in datasets))
    assert np.isclose(gaps, 2 * t1c["slice_spacing_mm"], atol=1e-3).sum() == 1
    assert np.isclose(gaps, t1c["slice_spacing_mm"], atol=1e-3).sum() == len(gaps) - 1
    assert case["expected_flags"] == ["T1C_missing_slice"] or "T1C_missing_slice" in case["expected_flags"]


def test_rescaled_rle_case_decodes_to_the_same_real_values(features, reference):
    from pydicom.pixels import apply_modality_lut

    (root, truth), (ref_root, ref_truth) = features, reference
    case, ref = truth["cases"][0], ref_truth["cases"][0]
    assert case["series"]["T1C"]["sop_instance_uids"] == ref["series"]["T1C"]["sop_instance_uids"]
    for role in ("T1C", "T1", "T2"):
        series, ref_series = case["series"][role], ref["series"][role]
        assert series["transfer_syntax_uid"] == pydicom.uid.RLELossless
        for rel, ref_rel in list(zip(series["files"], ref_series["files"]))[::5]:
            ds = pydicom.dcmread(root / "dicom" / rel)
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
            assert float(ds.RescaleSlope) == 2.0 and float(ds.RescaleIntercept) == -1024.0
            real = apply_modality_lut(ds.pixel_array, ds)
            plain = pydicom.dcmread(ref_root / "dicom" / ref_rel).pixel_array.astype(float)
            assert np.max(np.abs(real - plain)) <= 1.0  # slope / 2
            assert plain.max() > 500


def test_j2k_regenerated_uids_and_longitudinal_studies(features):
    root, truth = features
    studies = [c for c in truth["cases"] if c["case_index"] == 4]
    assert len(studies) == 2
    assert len({s["patient_id"] for s in studies}) == 1 and studies[0]["study_date"] < studies[1]["study_date"]
    assert studies[0]["study_instance_uid"] != studies[1]["study_instance_uid"]
    all_sops = {u for c in truth["cases"] for s in c["series"].values() if s for u in s["sop_instance_uids"]}
    for study in studies:
        assert study["series"]["T2"] is None and study["transforms"]["T2"] is None
        assert study["expected_status"] == "ok" and "rtss_references_unresolved" in study["expected_flags"]
        rtss = pydicom.dcmread(root / "dicom" / study["rtss"]["file"])
        refs = {c.ContourImageSequence[0].ReferencedSOPInstanceUID for r in rtss.ROIContourSequence for c in r.ContourSequence}
        assert refs and not refs & all_sops
        ds = pydicom.dcmread(root / "dicom" / study["series"]["T1C"]["files"][10])
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
        assert ds.ContrastBolusAgent == "MAGNEVIST" and ds.pixel_array.max() > 500


def test_cli_is_deterministic_and_layout_independent(reference, tmp_path):
    from metsprep.synth.__main__ import main

    ref_root, ref_truth = reference
    assert main([str(tmp_path), "--cases", "1", "--seed", str(FEATURE_SEED), "--layout", "flat"]) == 0
    truth = json.loads((tmp_path / "truth" / "truth.json").read_text())
    files = sorted(p.name for p in (tmp_path / "dicom").iterdir())
    assert all(name.startswith("c0000s1_") for name in files)
    case, ref = truth["cases"][0], ref_truth["cases"][0]
    for role in ("T1C", "T2"):
        for rel, ref_rel in list(zip(case["series"][role]["files"], ref["series"][role]["files"]))[::7]:
            assert (tmp_path / "dicom" / rel).read_bytes() == (ref_root / "dicom" / ref_rel).read_bytes()
    assert (tmp_path / "dicom" / case["rtss"]["file"]).read_bytes() == (ref_root / "dicom" / ref["rtss"]["file"]).read_bytes()
    assert Path(ref["rtss"]["file"]).parts[0] == ref["patient_id"] and len(Path(ref["rtss"]["file"]).parts) == 4
