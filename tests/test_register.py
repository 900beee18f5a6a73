"""Rigid registration T1/T2 -> T1W+C, judged by target registration error against truth.

Cases come from the synthetic cohort (DICOM read with ImageSeriesReader, written as
NIfTI, so these tests do not depend on the bids stage); the transforms are read back
from the written .tfm files.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from metsprep.contracts import SCHEMA_VERSION, BidsResult, ImageRecord, Participant
from metsprep.frames import RAS_FROM_LPS
from metsprep.layout import bids_paths, split_case_id
from metsprep.register import register_case, register_pair
from metsprep.settings import RegistrationSettings

SETTINGS = RegistrationSettings()  # the defaults, i.e. what the pipeline runs
N_CASES = 2


# ---------------------------------------------------------------- helpers


def matrix_transform(matrix_4x4) -> sitk.AffineTransform:
    matrix = np.asarray(matrix_4x4, dtype=float)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix[:3, :3].ravel().tolist())
    transform.SetTranslation(matrix[:3, 3].tolist())
    return transform


def tre_mm(estimated: sitk.Transform, truth: sitk.Transform, points_lps) -> np.ndarray:
    return np.array([
        np.linalg.norm(np.subtract(estimated.TransformPoint(p), truth.TransformPoint(p)))
        for p in (tuple(map(float, q)) for q in points_lps)
    ])


def read_series(files: list[Path], copy_dir: Path) -> sitk.Image:
    """Read one DICOM series with ImageSeriesReader (GDCM), slices ordered by GDCM.

    Some series carry SpacingBetweenSlices = 0 (a GE habit the synth reproduces), which
    GDCM takes as the z spacing and ITK refuses; such files are copied without that tag,
    so ITK derives the spacing from Image Position (Patient).
    """
    import pydicom

    copy_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        ds = pydicom.dcmread(path)
        if "SpacingBetweenSlices" in ds and not float(ds.SpacingBetweenSlices):
            del ds.SpacingBetweenSlices
        ds.save_as(copy_dir / path.name)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(copy_dir)))
    return reader.Execute()


def image_record(image: sitk.Image, relative: str) -> ImageRecord:
    """The bids stage's record of an image, from the ITK image's own geometry."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps_from_ijk = np.eye(4)
    lps_from_ijk[:3, :3] = direction * np.array(image.GetSpacing())
    lps_from_ijk[:3, 3] = image.GetOrigin()
    ras = RAS_FROM_LPS @ lps_from_ijk
    size = image.GetSize()
    return ImageRecord(relative, relative.replace(".nii.gz", ".json"), None, (size[0], size[1], size[2]),
                       tuple(tuple(float(v) for v in row) for row in ras),
                       tuple(float(k) * image.GetSpacing()[2] for k in range(size[2])), image.GetSpacing()[2],
                       False, (), None)  # fmt: skip


def write_bids_result(path: Path, case_id: str, images: dict[str, ImageRecord], status: str = "ok",
                      reason: str | None = None) -> Path:
    subject, session = split_case_id(case_id)
    BidsResult(SCHEMA_VERSION, case_id, subject, session, status, reason, (), (), images,  # type: ignore[arg-type]
               Participant(None, None)).write(path)  # fmt: skip
    return path


def write_case(output_dir: Path, case_id: str, images: dict[str, sitk.Image]) -> Path:
    """NIfTI images + the bids.json the bids stage would leave for them."""
    subject, session = split_case_id(case_id)
    paths = bids_paths(subject, session)
    records = {}
    for sequence, image in images.items():
        relative = paths.raw[sequence]
        (output_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(output_dir / relative))
        records[sequence] = image_record(image, relative)
    return write_bids_result(output_dir / "work/cases" / case_id / "bids.json", case_id, records)


def _synth_cases(root: Path) -> list[dict]:
    from metsprep.synth import generate_cohort

    generate_cohort(root / "cohort", n_cases=N_CASES, seed=11, layout="per_case")
    truth = json.loads((root / "cohort/truth/truth.json").read_text())
    cases = []
    for case in truth["cases"]:
        images = {
            seq: read_series([root / "cohort/dicom" / f for f in series["files"]],
                             root / "series" / series["series_instance_uid"])
            for seq, series in case["series"].items() if seq in ("T1C", "T1", "T2")
        }
        cases.append({
            "case_id": f"sub-{case['patient_id']}_ses-{case['study_index'] + 1:02d}",
            "images": images,
            "points": case["brain_points_t1c_lps"],
            "truth": {seq: matrix_transform(t["moving_lps_from_t1c_lps"])
                      for seq, t in case["transforms"].items()},
        })
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[dict]:
    return _synth_cases(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def registered(cases, tmp_path_factory) -> tuple[Path, list[dict]]:
    output_dir = tmp_path_factory.mktemp("out")
    for case in cases:
        bids_json = write_case(output_dir, case["case_id"], case["images"])
        case["register_json"] = output_dir / "work/cases" / case["case_id"] / "register.json"
        register_case(bids_json, output_dir, case["register_json"], SETTINGS)
    return output_dir, cases


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize("sequence", ["T1", "T2"])
def test_tre_of_written_transform_is_sub_millimetre(registered, sequence):
    output_dir, cases = registered
    for case in cases:
        result = json.loads(case["register_json"].read_text())
        assert result["status"] == "ok"
        qc = result["registrations"][sequence]
        transform = sitk.ReadTransform(str(output_dir / qc["transform"]))
        errors = tre_mm(transform, case["truth"][sequence], case["points"])
        identity_errors = tre_mm(sitk.Transform(3, sitk.sitkIdentity), case["truth"][sequence],
                                 case["points"])
        print(f"{case['case_id']} {sequence}: TRE median {np.median(errors):.3f} "
              f"max {errors.max():.3f} mm (identity median {np.median(identity_errors):.2f})")
        assert np.median(errors) <= 0.5
        assert errors.max() <= 1.0
        assert qc["flag"] is None
        assert qc["metric_after"] < qc["metric_before"]
        assert qc["converged"]
        # Reported motion agrees with the truth's displacement at the rotation centre.
        centre = tuple(qc["center_lps"])
        truth_shift = np.subtract(case["truth"][sequence].TransformPoint(centre), centre)
        assert np.allclose(qc["translation_xyz_mm"], truth_shift, atol=0.5)


def test_derivatives_on_t1c_grid_with_sidecars(registered):
    output_dir, cases = registered
    case = cases[0]
    result = json.loads(case["register_json"].read_text())
    fixed = case["images"]["T1C"]
    for sequence, suffix in (("T1", "T1w"), ("T2", "T2w")):
        qc = result["registrations"][sequence]
        assert qc["image"].endswith(f"_space-T1wCE_{suffix}.nii.gz")
        assert qc["transform"].endswith(f"_from-{suffix}_to-T1wCE_mode-image_xfm.tfm")
        assert qc["transform"].startswith("bids/derivatives/metsprep/")
        image = sitk.ReadImage(str(output_dir / qc["image"]))
        assert image.GetSize() == fixed.GetSize()
        assert np.allclose(image.GetOrigin(), fixed.GetOrigin(), atol=1e-3)
        assert np.allclose(image.GetDirection(), fixed.GetDirection(), atol=1e-5)
        assert image.GetPixelID() == case["images"][sequence].GetPixelID()
        sidecar = json.loads((output_dir / qc["sidecar"]).read_text())
        assert sidecar["SkullStripped"] is False
        assert qc["transform"] in sidecar["Sources"]
        assert sidecar["RegistrationMetric"] == "MattesMutualInformation"
        assert sidecar["RegistrationMetricAfter"] == qc["metric_after"]
        # The written image equals the moving image resampled with the TRUE transform
        # (to interpolation noise), and clearly differs from the identity resampling.
        def resampled_with(transform, sequence=sequence):
            return sitk.GetArrayFromImage(sitk.Resample(
                case["images"][sequence], fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        written = sitk.GetArrayFromImage(image).astype(np.float32)
        truth = resampled_with(case["truth"][sequence])
        identity = resampled_with(sitk.Transform(3, sitk.sitkIdentity))
        head = truth > np.percentile(truth, 60)
        scale = np.percentile(truth[head], 99)
        error_written = np.median(np.abs(written - truth)[head]) / scale
        error_identity = np.median(np.abs(identity - truth)[head]) / scale
        assert error_written < 0.02
        assert error_written < error_identity / 3


# ---------------------------------------------------------------- flags and failures


def test_flag_fires_on_grossly_misplaced_image(cases):
    case = cases[0]
    moving = sitk.Image(case["images"]["T2"])
    # Misplace by 60 mm and tilt by 25 degrees: the header no longer matches the T1C.
    tilt = sitk.Euler3DTransform((0, 0, 0), np.radians(25), 0, 0)
    moving.SetDirection(np.array(tilt.GetMatrix()).reshape(3, 3).ravel().tolist())
    moving.SetOrigin(tuple(np.add(moving.GetOrigin(), (60.0, 0.0, 0.0))))
    result = register_pair(case["images"]["T1C"], moving, RegistrationSettings())
    assert result.flags
    assert result.record("x.tfm", "x.nii.gz", "x.json").flag


def test_case_without_t2_and_failed_t1(tmp_path, cases):
    case = cases[0]
    bids_json = write_case(tmp_path, case["case_id"], {"T1C": case["images"]["T1C"],
                                                        "T1": case["images"]["T1"]})
    bids = BidsResult.read(bids_json)
    images = {**bids.images, "T1": replace(bids.images["T1"], nifti="bids/does/not/exist_T1w.nii.gz")}
    replace(bids, images=images).write(bids_json)
    result_json = tmp_path / "register.json"
    register_case(bids_json, tmp_path, result_json, SETTINGS)
    result = json.loads(result_json.read_text())
    assert result["status"] == "ok"
    assert result["registrations"]["T2"] is None
    assert result["registrations"]["T1"]["missing"] is True
    assert "registration failed" in result["registrations"]["T1"]["reason"]
    assert "registration_failed_T1" in result["flags"]


def test_excluded_case_passes_through(tmp_path):
    bids_json = write_bids_result(tmp_path / "bids.json", "sub-1_ses-01", {}, "excluded", "T1C has missing slices")
    result_json = tmp_path / "register.json"
    register_case(bids_json, tmp_path, result_json, SETTINGS)
    result = json.loads(result_json.read_text())
    assert result["status"] == "excluded"
    assert result["status_reason"] == "T1C has missing slices"
    assert not (tmp_path / "bids").exists()


def test_settings_from_config_rejects_unknown_keys():
    settings = RegistrationSettings.from_config({"levels_mm": [2.0, 1.0], "samples_per_level": [5000, 10000],
                                                 "threads": 1})  # fmt: skip
    assert settings.levels_mm == (2.0, 1.0) and settings.samples_per_level == (5000, 10000)
    with pytest.raises(ValueError, match="one entry per level"):
        RegistrationSettings.from_config({"levels_mm": [2.0, 1.0]})
    with pytest.raises(ValueError, match="unknown"):
        RegistrationSettings.from_config({"learning_rat": 1.0})
    with pytest.raises(ValueError, match="coarse to fine"):
        RegistrationSettings.from_config({"levels_mm": [1.0, 4.0], "samples_per_level": [1000, 1000]})


# ---------------------------------------------------------------- determinism


def test_deterministic_across_runs_and_thread_counts(cases):
    case = cases[1]
    fixed, moving = case["images"]["T1C"], case["images"]["T1"]
    settings = RegistrationSettings()
    default_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    parameters = []
    try:
        for threads in (1, 1, 2):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
            parameters.append(register_pair(fixed, moving, settings).transform.GetParameters())
            # The caller's thread setting is restored after the pinned registration.
            assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == threads
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default_threads)
    assert all(p == parameters[0] for p in parameters), parameters
    # A different sampling seed is a different (if equally good) result: the seed is used.
    other = register_pair(fixed, moving, replace(settings, seed=1))
    assert other.transform.GetParameters() != parameters[0]


def test_sheared_t1c_marks_registrations_missing_and_case_stays_ok(tmp_path):
    """A gantry-tilted (sheared) T1C grid cannot become an ITK image: reason, not a crash."""
    import json

    import nibabel as nib
    import numpy as np

    from metsprep.register import register_case

    ras_from_ijk = np.array([[1.0, 0, 0, -10], [0, 1.0, 0.5, -10], [0, 0, 3.0, -10], [0, 0, 0, 1]])
    anat = tmp_path / "bids" / "sub-1" / "ses-01" / "anat"
    anat.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 100, size=(20, 20, 8)).astype(np.int16)
    for name in ("t1c", "t1"):
        image = nib.Nifti1Image(data, ras_from_ijk)
        image.set_qform(None, code=0)
        image.set_sform(ras_from_ijk, code=1)
        nib.save(image, anat / f"{name}.nii.gz")
    ras = tuple(tuple(float(v) for v in row) for row in ras_from_ijk)
    records = {seq: ImageRecord(f"bids/sub-1/ses-01/anat/{name}.nii.gz", "x.json", None, (20, 20, 8), ras,
                                tuple(3.0 * k for k in range(8)), 3.0, False, (), None)
               for seq, name in (("T1C", "t1c"), ("T1", "t1"))}  # fmt: skip
    bids_json = write_bids_result(tmp_path / "bids.json", "sub-1_ses-01", records)
    result_json = tmp_path / "register.json"
    register_case(bids_json, tmp_path, result_json, SETTINGS)
    result = json.loads(result_json.read_text())
    assert result["status"] == "ok"
    assert result["registrations"]["T1"]["missing"] is True
    assert "could not be opened" in result["registrations"]["T1"]["reason"]
    assert result["registrations"]["T2"] is None
    assert "registration_failed_T1" in result["flags"]


# ---------------------------------------------------------------- stress corpus


@pytest.fixture(scope="module")
def stress_run(tmp_path_factory) -> dict:
    """Three stress cases (10 deg / 15 mm motion; a T2 slab of 55% of the brain; descending
    T1C and T2, shuffled T1 files) through the real match, bids and register stages."""
    from metsprep.bids import convert_case
    from metsprep.settings import BidsSettings
    from metsprep.synth import generate_cohort
    from metsprep.synth.stress import FORCED

    import stages

    root = tmp_path_factory.mktemp("stress")
    truth = generate_cohort(root / "cohort", 3, 4, layout="per_case", case_options=dict(enumerate(FORCED[:3])))
    plans = stages.match_plans(root / "cohort" / "dicom", root / "match")
    out = root / "out"
    runs = {}
    for case in truth["cases"]:
        case_id = stages.truth_case_id(case)
        work = out / "work" / "cases" / case_id
        convert_case(plans[case_id], out, work / "bids.json", BidsSettings())
        register_case(work / "bids.json", out, work / "register.json", SETTINGS)
        runs[case["case_index"]] = {"truth": case, "result": json.loads((work / "register.json").read_text())}
    return {"out": out, "runs": runs}


@pytest.mark.parametrize("case_index, what", [(0, "10 deg / 15 mm motion"), (1, "partial T2 slab"),
                                              (2, "descending and shuffled slices")])
def test_stress_tre_of_written_transforms(stress_run, case_index, what):
    run = stress_run["runs"][case_index]
    assert run["result"]["status"] == "ok"
    for sequence in ("T1", "T2"):
        record = run["result"]["registrations"][sequence]
        transform = sitk.ReadTransform(str(stress_run["out"] / record["transform"]))
        truth = matrix_transform(run["truth"]["transforms"][sequence]["moving_lps_from_t1c_lps"])
        errors = tre_mm(transform, truth, run["truth"]["brain_points_t1c_lps"])
        identity = tre_mm(sitk.Transform(3, sitk.sitkIdentity), truth, run["truth"]["brain_points_t1c_lps"])
        print(f"{what} {sequence}: TRE median {np.median(errors):.3f} max {errors.max():.3f} mm "
              f"(identity {np.median(identity):.1f}); check {record['check_disagreement_mm']:.3f} mm")
        assert np.median(errors) <= 0.5 and errors.max() <= 1.5, (what, sequence)
        assert record["flag"] is None, record["flag"]
        assert record["check_disagreement_mm"] < SETTINGS.max_disagreement_mm


def test_another_patients_image_is_flagged(cases):
    """A deliberately wrong pair: the T2 of one synthetic patient onto another's T1C."""
    result = register_pair(cases[0]["images"]["T1C"], cases[1]["images"]["T2"], SETTINGS)
    assert result.flags, "registering another patient's image must be flagged"


def test_integer_resampling_is_not_biased(cases):
    """Rounding, not truncation: an integer image and the same image as float resample to
    the same mean (a truncating cast was 0.5 low)."""
    from metsprep.register import resample_onto

    fixed, moving = cases[0]["images"]["T1C"], cases[0]["images"]["T1"]
    transform = sitk.Euler3DTransform()
    transform.SetTranslation((0.37, -0.41, 0.23))
    as_int = sitk.GetArrayFromImage(resample_onto(sitk.Cast(moving, sitk.sitkInt16), fixed, transform)).astype(float)
    as_float = sitk.GetArrayFromImage(resample_onto(sitk.Cast(moving, sitk.sitkFloat32), fixed, transform))
    inside = as_float > 50
    assert abs(float((as_int - as_float)[inside].mean())) < 0.02
    assert np.abs(as_int - as_float)[inside].max() <= 0.5 + 1e-3


def test_a_slab_locked_one_slice_off_is_brought_back_by_the_slice_starts(stress_run):
    """The partial T2 slab, started from its true pose moved one T2 slice along the T2 slice
    axis (the lock-off a held-out stress pair showed: 6.6 mm, unflagged, as the perturbed check
    found the same optimum): the slice-axis starts return to the truth, without them it stays."""
    from metsprep import register as R

    run = stress_run["runs"][1]
    case_id = run["result"]["case_id"]
    bids = BidsResult.read(stress_run["out"] / "work" / "cases" / case_id / "bids.json")
    fixed_image = sitk.ReadImage(str(stress_run["out"] / bids.images["T1C"].nifti), sitk.sitkFloat32)
    moving_image = sitk.ReadImage(str(stress_run["out"] / bids.images["T2"].nifti), sitk.sitkFloat32)
    truth = matrix_transform(run["truth"]["transforms"]["T2"]["moving_lps_from_t1c_lps"])
    points = run["truth"]["brain_points_t1c_lps"]
    with R.single_threaded_itk():
        prepared = R.FixedImage.prepare(fixed_image, SETTINGS)
        fixed, moving = prepared.pyramid, R.Pyramid.of(moving_image, SETTINGS)
        good = R._register_pair(prepared, moving_image, SETTINGS).transform
        slice_axis = np.array(moving_image.GetDirection()).reshape(3, 3)[:, 2]
        locked = sitk.Euler3DTransform(good)
        params = list(locked.GetParameters())
        params[3:6] = list(np.add(params[3:6], moving_image.GetSpacing()[2] * slice_axis))
        locked.SetParameters(params)
        back, _ = R._best_along_slices(SETTINGS, fixed, moving, moving_image, locked, "")
        stays, _ = R._best_along_slices(replace(SETTINGS, slice_shift_starts=0), fixed, moving, moving_image,
                                        locked, "")  # fmt: skip
    assert np.median(tre_mm(locked, truth, points)) > 0.8 * moving_image.GetSpacing()[2] - 1.0
    assert np.median(tre_mm(back, truth, points)) <= 0.5
    assert stays is locked
