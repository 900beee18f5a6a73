"""Each T1W+C onto the MNI152 2009a template, and what the catalog takes from it.

The template is the MNI152 ICBM 2009a symmetric T1 (1 mm) with its grey- and white-matter
probability maps, as the installed nilearn wheel ships them (``nilearn/datasets/data``;
nothing is downloaded at run time). Name in BIDS: ``MNI152NLin2009aSym``.

Convention (ITK's, as in ``metsprep.register``): the registration has the T1C fixed and the
template moving, so its affine maps a point **in T1C LPS mm** to the same anatomy **in MNI
LPS mm** (``mni_lps_from_t1c_lps``). A lesion centroid goes to MNI through it; a template
map goes onto the T1C grid with ``sitk.Resample(template_map, t1c, transform)``. The file
written as ``from-T1wCE_to-MNI152NLin2009aSym_mode-image_xfm.tfm`` is its inverse, the one
that resamples the T1C into MNI space (fMRIPrep's and ANTs' reading of that name).

Method, read top-down (measurements: docs/standard_space.md):
1. Both images binned to a coarse pyramid (``levels_mm``); a slice axis coarser than a
   level is not binned (``metsprep.register.binned``).
2. Starts: the head-mask centroid shift (the template's head mask cut at the level of the
   cerebellum, as a brain MRI covers it) and shifts of it along z, ranked by the metric.
3. A similarity transform (rotation, translation, one scale) at the coarse levels, then a
   full affine (12 parameters) at the finest level. Mattes MI, random samples, seeded.
4. An independent check: the affine level again from a start perturbed by a rotation, a
   shift and a scale change; the 95th percentile of the distance between where the two
   results put T1C head points is ``check_disagreement_mm``. More than
   ``max_disagreement_mm``, scales outside ``scale_range``, or a metric no better than at
   the start flag the result: kept, marked untrusted, and every lesion's MNI columns say so.

The brain mask on the T1C grid is the template's GM + WM probability resampled onto it
(linear) and cut at 0.5: a skull-stripping that needs no model weights, as good as the
affine fit of the template's brain to this one (a real brain's own folds are not followed).

Regions: a coarse lobar division of MNI space by planes (``region_of_mni_ras``; documented
in docs/standard_space.md), not an anatomical atlas: no parcellation ships with an
installed package, and nilearn's atlases are downloads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metsprep.atomic import write_json, write_with
from metsprep.contracts import SCHEMA_VERSION, BidsResult, StandardSpaceResult, affine_rows
from metsprep.frames import LPS_FROM_RAS, apply_affine
from metsprep.layout import TEMPLATE_SPACE, bids_paths, derivative_sidecar_spatial_reference, remove_stale
from metsprep.masks import head_mask
from metsprep.register import (
    affine_of,
    binned,
    distance_p95_mm,
    mask_centroid_lps,
    mask_points_lps,
    single_threaded_itk,
)
from metsprep.settings import StandardSpaceSettings

if TYPE_CHECKING:
    import SimpleITK as sitk

TEMPLATE_DESCRIPTION = "MNI152 ICBM 2009a symmetric, 1 mm (nilearn datasets/data)"
#: The template's head mask is cut below this MNI z (mm): a brain MRI stops near the
#: foramen magnum, the template goes down to the chin, and the head centroids must compare.
TEMPLATE_HEAD_FLOOR_Z_MM = -70.0
#: Shifts along z (mm) tried besides the centroid shift: the T1C slab may cover more or
#: less of the neck than the cut template does.
START_Z_SHIFTS_MM = (0.0, -15.0, 15.0)
METRIC_NAME = "MattesMutualInformation"
#: The metric is taken where the template is intracranial or within this many 2 mm voxels
#: of it: scalp and neck differ between heads far more than brains do.
METRIC_MASK_MARGIN_VOXELS = 3
BRAIN_PROBABILITY_CUT = 0.5


# ---------------------------------------------------------------- the template


def template_dir() -> Path:
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


def template_file(name: str) -> Path:
    """``t1``, ``gm`` or ``wm`` of the template, as shipped."""
    return template_dir() / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"


@dataclass(frozen=True)
class Template:
    t1: Any  # sitk.Image, LPS physical space
    brain_probability: Any  # sitk.Image, GM + WM, clipped to [0, 1]
    metric_mask: Any  # sitk.Image (2 mm): the intracranial volume and a margin of skull
    head_centroid_lps: tuple[float, float, float]


@lru_cache(maxsize=1)
def template() -> Template:
    """The template images (read once per process)."""
    import SimpleITK as sitk

    t1 = sitk.ReadImage(str(template_file("t1")), sitk.sitkFloat32)
    gm = sitk.ReadImage(str(template_file("gm")), sitk.sitkFloat32)
    wm = sitk.ReadImage(str(template_file("wm")), sitk.sitkFloat32)
    # the probability maps are stored as uint8, 255 = certain
    brain = sitk.Clamp((gm + wm) / 255.0, sitk.sitkFloat32, 0.0, 1.0)
    brain.CopyInformation(t1)
    mask = head_mask(binned(t1, 2.0))
    array = sitk.GetArrayFromImage(mask)
    z_lps = np.array([mask.TransformIndexToPhysicalPoint([0, 0, k])[2] for k in range(mask.GetSize()[2])])
    array[z_lps < TEMPLATE_HEAD_FLOOR_Z_MM, :, :] = 0
    cut = sitk.GetImageFromArray(array)
    cut.CopyInformation(mask)
    centroid = mask_centroid_lps(cut)
    coarse_brain = binned(brain, 2.0) > 0.3
    intracranial = sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(coarse_brain, [3, 3, 3]))
    metric_mask = sitk.BinaryDilate(intracranial, [METRIC_MASK_MARGIN_VOXELS] * 3)
    return Template(t1, brain, metric_mask, (centroid[0], centroid[1], centroid[2]))


# ---------------------------------------------------------------- registration


@dataclass
class TemplateFit:
    """One T1C's affine onto the template (``transform``: MNI LPS from T1C LPS)."""

    transform: Any  # sitk.AffineTransform
    metric_start: float
    metric_after: float
    scales: tuple[float, float, float]  # singular values of the linear part
    check_disagreement_mm: float
    seconds: float
    flags: list[str]

    @property
    def mni_lps_from_t1c_lps(self) -> np.ndarray:
        return affine_of(self.transform)


def fit_template(t1c: sitk.Image, settings: StandardSpaceSettings) -> TemplateFit:
    """Affine registration of the template onto one T1C (see the module's method)."""
    start_time = time.perf_counter()
    with single_threaded_itk():
        fit = _fit_template(t1c, settings)
    fit.seconds = time.perf_counter() - start_time
    return fit


def _method(settings: StandardSpaceSettings, fixed: sitk.Image, level: int) -> sitk.ImageRegistrationMethod:
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.number_of_histogram_bins)
    n_voxels = float(np.prod(fixed.GetSize()))
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(min(1.0, settings.samples_per_level[level] / n_voxels), settings.seed)
    method.SetMetricMovingMask(template().metric_mask)
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    spacing = settings.levels_mm[level]
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.learning_rate * spacing,
        minStep=settings.min_step * spacing,
        numberOfIterations=settings.max_iterations,
        relaxationFactor=settings.relaxation_factor,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    return method


def _run(settings: StandardSpaceSettings, fixed: sitk.Image, moving: sitk.Image, level: int, start: Any) -> tuple[Any, float]:
    import SimpleITK as sitk

    method = _method(settings, fixed, level)
    method.SetInitialTransform(start, inPlace=False)
    result = method.Execute(fixed, moving)
    if result.GetName() == "CompositeTransform":
        result = sitk.CompositeTransform(result).GetBackTransform()
    return type(start)(result), float(method.GetMetricValue())


def _metric(settings: StandardSpaceSettings, fixed: sitk.Image, moving: sitk.Image, level: int, transform: Any) -> float:
    method = _method(settings, fixed, level)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def _as_affine(similarity: Any) -> Any:
    import SimpleITK as sitk

    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    return affine


def _perturbed(affine: Any, settings: StandardSpaceSettings) -> Any:
    """``affine`` composed with a fixed rotation (oblique axis), shift and scale change."""
    import SimpleITK as sitk

    angle = math.radians(settings.check_rotation_deg)
    axis = np.array([0.6, -0.5, 0.62]) / np.linalg.norm([0.6, -0.5, 0.62])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    linear = np.array(affine.GetMatrix()).reshape(3, 3) @ rotation * (1.0 + settings.check_scale_change)
    out = sitk.AffineTransform(affine)
    out.SetMatrix([float(v) for v in linear.ravel()])
    shift = settings.check_translation_mm * np.array([0.58, 0.58, -0.58])
    out.SetTranslation([float(a + b) for a, b in zip(affine.GetTranslation(), shift, strict=True)])
    return out


def flattened(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    """``image`` divided by its smooth trend inside the head (a homomorphic bias correction):
    a receive-coil bias field varies over centimetres, anatomy over millimetres, so the
    Gaussian-weighted local mean of the head's voxels (``sigma_mm``) is the bias to remove."""
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    mask_image = sitk.Cast(head_mask(image), sitk.sitkFloat32)
    mask = sitk.GetArrayFromImage(mask_image)
    weight = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(mask_image, sigma_mm))
    trend = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image * mask_image, sigma_mm)) / (weight + 1e-3)
    level = float(np.median(trend[mask > 0])) if (mask > 0).any() else 1.0
    values = sitk.GetArrayViewFromImage(image) * mask / np.maximum(trend, 1e-3 * level) * level
    flat = sitk.GetImageFromArray(values.astype(np.float32))
    flat.CopyInformation(image)
    return flat


def _fit_template(t1c: sitk.Image, settings: StandardSpaceSettings) -> TemplateFit:
    import SimpleITK as sitk

    atlas = template()
    fixed_levels = [binned(t1c, mm) for mm in settings.levels_mm]
    if settings.flatten_sigma_mm > 0:
        fixed_levels = [flattened(level, settings.flatten_sigma_mm) for level in fixed_levels]
    moving_levels = [binned(atlas.t1, mm) for mm in settings.levels_mm]
    mask = head_mask(binned(t1c, 2.0))
    centre = mask_centroid_lps(mask)
    points = mask_points_lps(mask, 2000, settings.seed)

    def similarity(shift: np.ndarray) -> Any:
        transform = sitk.Similarity3DTransform()
        transform.SetCenter(centre)
        transform.SetTranslation([float(v) for v in shift])
        return transform

    base = np.subtract(atlas.head_centroid_lps, centre)
    starts = [similarity(base + np.array([0.0, 0.0, dz])) for dz in START_Z_SHIFTS_MM]
    scored = sorted(starts, key=lambda t: _metric(settings, fixed_levels[0], moving_levels[0], 0, t))
    metric_start = _metric(settings, fixed_levels[-1], moving_levels[-1], len(fixed_levels) - 1, scored[0])
    coarse = [_run(settings, fixed_levels[0], moving_levels[0], 0, t) for t in scored[:2]]
    transform, _ = min(coarse, key=lambda r: r[1])
    last = len(settings.levels_mm) - 1
    for level in range(1, last):
        transform, _ = _run(settings, fixed_levels[level], moving_levels[level], level, transform)
    affine, metric_after = _run(settings, fixed_levels[last], moving_levels[last], last, _as_affine(transform))

    check, _ = _run(settings, fixed_levels[last], moving_levels[last], last, _perturbed(affine, settings))
    disagreement = distance_p95_mm(affine, check, points)
    scales = tuple(float(s) for s in np.linalg.svd(np.array(affine.GetMatrix()).reshape(3, 3), compute_uv=False))
    fit = TemplateFit(affine, metric_start, metric_after, (scales[0], scales[1], scales[2]), disagreement, 0.0, [])
    fit.flags = template_fit_flags(fit, settings)
    return fit


def template_fit_flags(fit: TemplateFit, settings: StandardSpaceSettings) -> list[str]:
    """Reasons an affine fit to the template may be wrong (it is kept; a person should look)."""
    flags = []
    if fit.check_disagreement_mm > settings.max_disagreement_mm:
        flags.append(
            f"a second fit from a perturbed start ended {fit.check_disagreement_mm:.1f} mm away "
            f"(more than {settings.max_disagreement_mm} mm)"
        )
    low, high = settings.scale_range
    if min(fit.scales) < low or max(fit.scales) > high:
        flags.append(
            f"scale factors {', '.join(f'{s:.2f}' for s in fit.scales)} outside {low}-{high}: "
            "not a head of a plausible size, or a wrong fit"
        )
    if not fit.metric_after < fit.metric_start:
        flags.append(f"metric after ({fit.metric_after:.4f}) not better than at the start ({fit.metric_start:.4f})")
    return flags


# ---------------------------------------------------------------- what the catalog uses


def brain_mask_on(t1c: sitk.Image, fit_transform: Any) -> sitk.Image:
    """The template's brain (GM + WM probability >= 0.5) on the T1C grid (uint8)."""
    import SimpleITK as sitk

    probability = sitk.Resample(template().brain_probability, t1c, fit_transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    mask: sitk.Image = sitk.Cast(probability >= BRAIN_PROBABILITY_CUT, sitk.sitkUInt8)
    return mask


def mni_ras_of(t1c_lps: np.ndarray, mni_lps_from_t1c_lps: np.ndarray) -> np.ndarray:
    """T1C LPS points (n x 3 or 3) in MNI RAS mm, the coordinates papers quote."""
    return apply_affine(LPS_FROM_RAS @ np.asarray(mni_lps_from_t1c_lps, float), t1c_lps)


def region_of_mni_ras(x: float, y: float, z: float) -> str:
    """Coarse lobe or region of an MNI RAS point, by planes (good to a few mm at borders).

    cerebellum and brainstem below the tentorium (z < -12, behind y = -42); brainstem
    near the midline down from the midbrain; deep grey matter (basal ganglia, thalamus) in a
    central box; occipital behind y = -70; temporal lateral (|x| > 28) and low (z < 6);
    frontal in front of a central sulcus that leans back with height; parietal behind it.
    """
    ax = abs(x)
    if z < -12 and -100 < y < -42:
        return "cerebellum" if ax > 10 or z < -40 else "brainstem"
    if ax < 14 and -42 <= y < -12 and z < -8:
        return "brainstem"
    if ax < 30 and -35 < y < 22 and -8 < z < 22:
        return "deep"
    if y < -70:
        return "occipital"
    if ax > 28 and z < 6 and -70 <= y < 18:
        return "temporal"
    central_sulcus_y = -10.0 - max(0.0, z - 30.0) * 0.65
    if y > central_sulcus_y:
        return "frontal"
    return "parietal"


def hemisphere_of_mni_ras_x(x: float, midline_mm: float = 3.0) -> str:
    """RAS x > 0 is the patient's right."""
    if abs(x) < midline_mm:
        return "midline"
    return "R" if x > 0 else "L"


# ---------------------------------------------------------------- per-case stage


def standard_space_case(bids_json: Path, output_dir: Path, result_json: Path, settings: StandardSpaceSettings) -> None:
    """Fit the template to one case's T1C; write the transform, the brain mask and the result."""
    import SimpleITK as sitk

    bids = BidsResult.read(bids_json)
    output_dir = Path(output_dir)
    result = StandardSpaceResult.not_fitted(bids.case_id, bids.status, bids.status_reason, None)
    written: set[str] = set()
    if bids.status == "ok":
        try:
            t1c = sitk.ReadImage(str(output_dir / bids.images["T1C"].nifti))
            fit = fit_template(t1c, settings)
        except Exception as error:  # a T1C ITK cannot open (sheared grid) or a failed fit
            reason = f"fit to the template failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
            result = StandardSpaceResult.not_fitted(bids.case_id, bids.status, bids.status_reason, reason)
        else:
            result, written = _write_fit(t1c, fit, bids, output_dir, settings)
    remove_stale(output_dir, bids.subject, bids.session, "standard_space", written)
    result.write(result_json)


def _write_fit(
    t1c: sitk.Image, fit: TemplateFit, bids: BidsResult, output_dir: Path, settings: StandardSpaceSettings
) -> tuple[StandardSpaceResult, set[str]]:
    import SimpleITK as sitk

    paths = bids_paths(bids.subject, bids.session)
    flag = "; ".join(fit.flags) if fit.flags else None
    write_with(output_dir / paths.t1c_to_mni_transform,
               lambda name: sitk.WriteTransform(fit.transform.GetInverse(), name))  # fmt: skip
    mask = brain_mask_on(t1c, fit.transform)
    write_with(output_dir / paths.brain_mask, lambda name: sitk.WriteImage(mask, name, useCompression=True))
    voxel_ml = float(np.prod(t1c.GetSpacing())) / 1000.0
    brain_ml = float(sitk.GetArrayViewFromImage(mask).sum()) * voxel_ml
    write_json(output_dir / paths.brain_mask_sidecar, {
        "Description": f"brain mask: the {TEMPLATE_SPACE} template's grey + white matter probability "
                       f"(>= {BRAIN_PROBABILITY_CUT}) through an affine fit, on the T1w+C grid",
        "Type": "Brain",
        **derivative_sidecar_spatial_reference(bids.subject, bids.session),
        "Sources": [bids.images["T1C"].nifti, paths.t1c_to_mni_transform],
        "Template": TEMPLATE_DESCRIPTION,
        "RegistrationFlag": flag,
    })  # fmt: skip
    matrix = fit.mni_lps_from_t1c_lps
    result = StandardSpaceResult(
        schema_version=SCHEMA_VERSION, case_id=bids.case_id, status=bids.status, status_reason=bids.status_reason,
        template=TEMPLATE_SPACE, fitted=True, reason=None, flag=flag, trusted=flag is None,
        transform=paths.t1c_to_mni_transform, brain_mask=paths.brain_mask,
        mni_lps_from_t1c_lps=affine_rows(matrix),
        scales=fit.scales, metric_start=fit.metric_start, metric_after=fit.metric_after,
        check_disagreement_mm=round(fit.check_disagreement_mm, 3), brain_volume_ml=round(brain_ml, 1),
        seconds=round(fit.seconds, 3),
    )  # fmt: skip
    return result, {paths.t1c_to_mni_transform, paths.brain_mask, paths.brain_mask_sidecar}


# ---------------------------------------------------------------- cohort: lesion frequency

#: Spacing of the lesion-frequency map (mm): the template binned by 2.
FREQUENCY_SPACING_MM = 2.0


def frequency_grid() -> sitk.Image:
    """The MNI grid of the lesion-frequency map (the template binned to 2 mm), uint16 zeros."""
    import SimpleITK as sitk

    grid = binned(template().t1, FREQUENCY_SPACING_MM)
    empty = sitk.Image(grid.GetSize(), sitk.sitkUInt16)
    empty.CopyInformation(grid)
    return empty


def lesion_frequency(cases_parquet: Path, output_dir: Path, out_nifti: Path, out_sidecar: Path, out_png: Path) -> None:
    """Voxel = number of lesions covering it, over every ok case whose fit is trusted.

    Each case's lesion label map goes onto the 2 mm MNI grid by nearest neighbour through
    its fitted affine; a case's lesions do not share voxels, so a voxel counts each case's
    lesion there once. Every session of a patient counts (a lesion seen twice counts twice);
    cases left out are named with the reason in the sidecar."""
    import pyarrow.parquet as pq
    import SimpleITK as sitk

    from metsprep.qc import lesion_frequency_figure

    output_dir = Path(output_dir)
    columns = ["case_id", "status", "lesion_labels_nifti", "mni_transform", "mni_trusted", "mni_flag", "n_lesions"]
    rows = pq.ParquetFile(cases_parquet).read(columns=columns).to_pylist()
    reference = frequency_grid()
    total = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.uint32)
    counted, left_out = [], []
    for row in rows:
        if row["status"] != "ok":
            continue
        if not row["mni_transform"] or not row["mni_trusted"]:
            left_out.append({"case_id": row["case_id"], "reason": row["mni_flag"] or "no fit to the template"})
            continue
        if not row["lesion_labels_nifti"] or not row["n_lesions"]:
            continue  # nothing to count
        labels = sitk.ReadImage(str(output_dir / row["lesion_labels_nifti"]))
        transform = sitk.ReadTransform(str(output_dir / row["mni_transform"]))
        moved = sitk.Resample(labels, reference, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
        total += sitk.GetArrayViewFromImage(moved) > 0
        counted.append(row["case_id"])
    image = sitk.GetImageFromArray(np.minimum(total, np.iinfo(np.uint16).max).astype(np.uint16))
    image.CopyInformation(reference)
    write_with(Path(out_nifti), lambda name: sitk.WriteImage(image, name, useCompression=True))
    write_json(Path(out_sidecar), {
        "Description": "lesion frequency: voxel value = number of lesions (of all counted cases) covering the voxel",
        "Space": TEMPLATE_SPACE, "Template": TEMPLATE_DESCRIPTION, "Resolution": f"{FREQUENCY_SPACING_MM} mm",
        "Method": "each case's lesion label map, nearest neighbour through its affine fit to the template",
        "CasesCounted": len(counted), "MaximumCount": int(total.max()) if total.size else 0,
        "CasesLeftOut": left_out,
    })  # fmt: skip
    background = sitk.GetArrayFromImage(binned(template().t1, FREQUENCY_SPACING_MM))
    lesion_frequency_figure(total, background, len(counted), Path(out_png))
