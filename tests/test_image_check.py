"""The image check: T1 vs T2 weighting and T1 vs T1C enhancement from the pixels.

Against a phantom with a bias field and against every T1/T2 of the stress corpus (resampled
onto the T1C with the generator's true transforms, so only the check is tested); in the
pipeline on a planted mislabel (a T2 labelled T1 by an override) in tests/test_hostile.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from metsprep.image_check import enhancement_check, weighting_check

# ---------------------------------------------------------------- phantom


def _phantom(values: dict[str, float], bias: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, brain mask, lesion mask): white matter, grey-matter shell, CSF ventricles, lesions."""
    shape = (64, 64, 40)
    i, j, k = np.indices(shape, dtype=float)
    r = np.sqrt(((i - 32) / 28) ** 2 + ((j - 32) / 28) ** 2 + ((k - 20) / 18) ** 2)
    brain = r < 1.0
    image = np.where(brain, values["wm"], 0.0)
    image[(r > 0.8) & brain] = values["gm"]
    ventricles = (np.abs(i - 32) < 4) & (np.abs(j - 32) < 12) & (np.abs(k - 20) < 8)
    image[ventricles] = values["csf"]
    lesions = ((i - 20) ** 2 + (j - 44) ** 2 + (k - 24) ** 2 < 16) | ((i - 44) ** 2 + (j - 20) ** 2 + (k - 16) ** 2 < 9)
    image[lesions] = values["lesion"]
    if bias:  # a strong smooth bias field: x0.6 to x1.4 across the head
        image = image * (1.0 + 0.4 * np.sin(i / 64 * np.pi - np.pi / 2) * np.cos(k / 40 * np.pi))
    image += np.random.default_rng(0).normal(0, 0.02 * values["wm"], shape) * brain
    return image.astype(np.float32), brain, lesions


T1C = {"wm": 900, "gm": 650, "csf": 250, "lesion": 1600}
T1 = {"wm": 850, "gm": 620, "csf": 240, "lesion": 600}
T2 = {"wm": 500, "gm": 800, "csf": 1500, "lesion": 1000}


@pytest.mark.parametrize("bias", [False, True])
def test_weighting_of_phantom_t1_and_t2(bias):
    t1c, brain, lesions = _phantom(T1C, bias)
    t1, t2 = _phantom(T1, bias)[0], _phantom(T2, bias)[0]
    assert weighting_check("T1", t1c, t1, brain & ~lesions).result == "agrees"
    assert weighting_check("T2", t1c, t2, brain & ~lesions).result == "agrees"
    mislabelled = weighting_check("T1", t1c, t2, brain & ~lesions)
    assert (mislabelled.result, mislabelled.pixel_label) == ("disagrees", "T2")


def test_enhancement_of_phantom_pair_swap_and_copy():
    t1c, brain, lesions = _phantom(T1C)
    t1 = _phantom(T1)[0]
    assert enhancement_check(t1c, t1, lesions, brain).result == "agrees"
    swapped = enhancement_check(t1, t1c, lesions, brain)
    assert swapped.result == "disagrees" and "swapped" in swapped.reason
    copy = enhancement_check(t1c, t1c * 1.1, lesions, brain)
    assert copy.result == "disagrees" and "enhances like the T1C" in copy.reason


def test_too_little_signal_is_unclear_not_a_guess():
    t1c, brain, lesions = _phantom(T1C)
    empty = np.zeros_like(t1c)
    assert weighting_check("T2", t1c, empty, brain).result == "unclear"
    assert enhancement_check(t1c, _phantom(T1)[0], np.zeros_like(lesions), brain).result == "unclear"


# ---------------------------------------------------------------- stress corpus


@pytest.fixture(scope="module")
def stress_images(tmp_path_factory):
    """Every case of the forced stress set: T1C, T1/T2 resampled by the true transform, masks."""
    import nibabel as nib
    import SimpleITK as sitk

    from metsprep.bids import nifti_image
    from metsprep.catalog.lesion_features import BRAIN_DEPTH_MM, inside_distance_mm
    from metsprep.dicom_series import read_series
    from metsprep.frames import Grid
    from metsprep.masks import head_mask_ijk
    from metsprep.synth import generate_cohort
    from metsprep.synth.stress import FORCED, stress_case_options

    root = tmp_path_factory.mktemp("stress_check")
    truth = generate_cohort(root, len(FORCED), seed=4, case_options=stress_case_options(len(FORCED), seed=4))
    out = []
    for case in truth["cases"]:
        paths = {}
        for role in ("T1C", "T1", "T2"):
            series = read_series(root / "dicom", [f for f in case["series"][role]["files"] if f])
            paths[role] = root / f"{case['case_index']}_{role}.nii.gz"
            nifti_image(series.data, series.geometry).to_filename(str(paths[role]))
        fixed = sitk.ReadImage(str(paths["T1C"]), sitk.sitkFloat32)
        t1c_nifti = nib.load(str(paths["T1C"]))
        t1c = np.asarray(t1c_nifti.dataobj, dtype=np.float32)
        lps_from_ijk = Grid.from_nifti(t1c_nifti).lps_from_ijk
        resampled = {}
        for role in ("T1", "T2"):
            matrix = np.array(case["transforms"][role]["moving_lps_from_t1c_lps"])
            truth_transform = sitk.AffineTransform(matrix[:3, :3].ravel().tolist(), matrix[:3, 3].tolist())
            moving = sitk.ReadImage(str(paths[role]), sitk.sitkFloat32)
            image = sitk.Resample(moving, fixed, truth_transform, sitk.sitkLinear, 0.0)
            resampled[role] = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        head = head_mask_ijk(t1c, lps_from_ijk)
        deep = inside_distance_mm(head, lps_from_ijk) >= BRAIN_DEPTH_MM
        ijk = np.indices(t1c.shape).reshape(3, -1).T
        lps = ijk @ lps_from_ijk[:3, :3].T + lps_from_ijk[:3, 3]
        lesions = np.zeros(t1c.shape, bool)
        for lesion in case["lesions"]:
            inside = np.linalg.norm(lps - np.array(lesion["centre_lps_mm"]), axis=1) < lesion["radius_mm"]
            lesions |= inside.reshape(t1c.shape)
        out.append((case["case_index"], t1c, resampled, deep, lesions))
    return out


def test_weighting_is_told_on_every_stress_case(stress_images):
    for index, t1c, resampled, deep, lesions in stress_images:
        for role in ("T1", "T2"):
            check = weighting_check(role, t1c, resampled[role], deep & ~lesions)
            assert check.result == "agrees", (index, role, check.reason)
        planted = weighting_check("T1", t1c, resampled["T2"], deep & ~lesions)
        assert planted.result == "disagrees", (index, planted.reason)


def test_t1_t1c_swap_is_caught_on_every_stress_case(stress_images):
    for index, t1c, resampled, deep, lesions in stress_images:
        if lesions.sum() < 20:
            continue
        right = enhancement_check(t1c, resampled["T1"], lesions, deep)
        assert right.result == "agrees", (index, right.reason)
        swapped = enhancement_check(resampled["T1"], t1c, lesions, deep)
        assert swapped.result == "disagrees", (index, swapped.reason)


# In the pipeline (a T2 labelled T1 by an override): tests/test_hostile.py.
