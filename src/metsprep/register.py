"""Rigid registration of T1 and T2 onto T1W+C (the fixed image), with QC.

Convention (ITK's, see docs/design.md): the transform maps a point in T1C LPS mm to the
same anatomical point in the moving series' LPS mm, so
``sitk.Resample(moving, t1c, transform)`` puts the moving image on the T1C grid.

The series of one study share a DICOM Frame of Reference, so registration starts from
the identity in physical space (never from image centres); the rotation centre is put
at the head's centre of mass in the fixed image, which changes the parametrisation but
not the mapping. Settings were chosen by target registration error and time, see
docs/registration.md and benchmarks/bench_register.py.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metsprep.jsonio import to_jsonable

if TYPE_CHECKING:
    import SimpleITK as sitk

METRIC_NAME = "MattesMutualInformation"
MOVING_SEQUENCES = {"T1": "T1w", "T2": "T2w"}


@dataclass(frozen=True)
class RegistrationSettings:
    """Everything that decides a registration's result; see docs/registration.md."""

    number_of_histogram_bins: int = 32
    sampling_strategy: str = "REGULAR"  # REGULAR | RANDOM | NONE
    sampling_percentage: float = 0.10  # of the fixed grid's voxels, before the head mask
    seed: int = 20240611
    shrink_factors: tuple[int, ...] = (4, 2)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 0.0)
    use_head_mask: bool = True
    optimizer: str = "RegularStepGradientDescent"  # or ConjugateGradientLineSearch
    learning_rate: float = 2.0  # first step, in mm of the largest physical shift
    min_step: float = 1e-3
    relaxation_factor: float = 0.5
    gradient_tolerance: float = 1e-6
    max_iterations: int = 200
    # QC bounds: a result beyond them is flagged (kept, not excluded).
    max_rotation_deg: float = 10.0
    max_translation_mm: float = 20.0
    # Mattes MI (nats, sign flipped back) below which the images are deemed not aligned.
    min_mutual_information: float = 0.15

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> RegistrationSettings:
        """Build from the config's ``register:`` section; unknown keys are an error."""
        config = dict(config or {})
        # `threads` is the Snakemake job's thread count; registration always runs on one
        # ITK thread (see single_threaded_itk).
        config.pop("threads", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown register settings: {unknown}")
        for key in ("shrink_factors", "smoothing_sigmas_mm"):
            if key in config:
                config[key] = tuple(config[key])
        settings = cls(**config)
        if len(settings.shrink_factors) != len(settings.smoothing_sigmas_mm):
            raise ValueError("shrink_factors and smoothing_sigmas_mm need one entry per level")
        return settings


@dataclass
class RegistrationResult:
    transform: Any  # sitk.Euler3DTransform, moving LPS from fixed LPS
    metric_before: float  # Mattes MI (negative, lower is better) at the identity
    metric_after: float
    iterations: int  # summed over pyramid levels
    iterations_per_level: list[int]
    stop_condition: str
    converged: bool
    rotation_deg: dict[str, float]  # x, y, z Euler angles and total angle
    translation_mm: dict[str, Any]  # vector (displacement at rotation centre) and norm
    center_lps: list[float]
    seconds: float
    flags: list[str] = field(default_factory=list)

    def qc(self) -> dict[str, Any]:
        """JSON-ready summary (no transform object)."""
        return {
            "metric": METRIC_NAME,
            "metric_before": self.metric_before,
            "metric_after": self.metric_after,
            "iterations": self.iterations,
            "iterations_per_level": self.iterations_per_level,
            "stop_condition": self.stop_condition,
            "converged": self.converged,
            "rotation_deg": self.rotation_deg,
            "translation_mm": self.translation_mm,
            "center_lps": self.center_lps,
            "seconds": round(self.seconds, 3),
            "flag": "; ".join(self.flags) if self.flags else None,
        }


# ---------------------------------------------------------------- registration


# The head mask only restricts where the metric samples and places the rotation centre,
# so it is computed on a grid shrunk 2x in-plane (about 1.8 mm voxels): 4x fewer voxels,
# measured 2.5x faster; ITK looks mask points up in physical space, so the coarser grid is
# used as is. Measured effect on TRE: within noise (docs/registration.md).
HEAD_MASK_SHRINK = (2, 2, 1)
# metric_before/after (QC only) are dense Mattes MI over the head mask on the T1C grid
# shrunk by this factor (SimpleITK's MetricEvaluate ignores the sampling percentage and
# visits every voxel: 0.13 s per call at full resolution, 4 calls per case).
QC_METRIC_SHRINK = (2, 2, 1)
# Images finer than this (mm per voxel, per axis) are averaged in bins down to about it
# before registering (sitk.BinShrink; physical space unchanged, so the transform applies
# to the full-resolution images). Otherwise the work grows with the matrix: a 512x512
# T1C took 2.5 s per pair against 0.6 s for 256x256 at the same anatomy, because the
# samples are a percentage of the grid (docs/registration.md).
WORKING_SPACING_MM = 1.0


def working_resolution(image: sitk.Image) -> sitk.Image:
    """``image`` as float32, binned to about WORKING_SPACING_MM where it is finer."""
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    factors = [max(1, round(WORKING_SPACING_MM / s)) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if any(f > 1 for f in factors) else image


def head_mask(image: sitk.Image, shrink: tuple[int, ...] = (1, 1, 1)) -> sitk.Image:
    """Head (not air) of an MR image: Otsu on a lightly smoothed copy, largest component.

    ``shrink`` > 1 computes it on a coarser grid (same physical extent and frame).
    """
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    if any(f > 1 for f in shrink):
        image = sitk.Shrink(image, list(shrink))
    smooth = sitk.SmoothingRecursiveGaussian(image, 2.0)
    foreground = sitk.OtsuThreshold(smooth, 0, 1)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True)
    # Fill enclosed dark parts (ventricles, sulcal CSF); closing was measured to add nothing.
    return sitk.BinaryFillhole(components == 1)


def _mask_centroid_lps(mask: sitk.Image) -> list[float]:
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return list(stats.GetCentroid(1))


def _image_centre_lps(image: sitk.Image) -> list[float]:
    size = np.array(image.GetSize(), dtype=float)
    return list(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))


def rotation_angles_deg(transform: sitk.Euler3DTransform) -> dict[str, float]:
    """Euler angles about x, y, z and the total rotation angle (axis-angle), degrees."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    cos_total = float(np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0))
    return {
        "x": math.degrees(transform.GetAngleX()),
        "y": math.degrees(transform.GetAngleY()),
        "z": math.degrees(transform.GetAngleZ()),
        "total": math.degrees(math.acos(cos_total)),
    }


def translation_at(transform: sitk.Transform, point_lps: list[float]) -> dict[str, Any]:
    """Displacement of one point (mm, LPS) and its norm."""
    moved = np.array(transform.TransformPoint(tuple(point_lps)))
    vector = moved - np.array(point_lps)
    return {"vector": vector.tolist(), "norm": float(np.linalg.norm(vector))}


def _configure_method(settings: RegistrationSettings, fixed_mask: sitk.Image | None):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.number_of_histogram_bins)
    strategy = settings.sampling_strategy.upper()
    if strategy != "NONE":
        method.SetMetricSamplingStrategy(getattr(method, strategy))
        method.SetMetricSamplingPercentage(settings.sampling_percentage, settings.seed)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    # Gradients computed at the sample points only: cheaper than gradient images.
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if settings.optimizer == "RegularStepGradientDescent":
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=settings.learning_rate,
            minStep=settings.min_step,
            numberOfIterations=settings.max_iterations,
            relaxationFactor=settings.relaxation_factor,
            gradientMagnitudeTolerance=settings.gradient_tolerance,
        )
    elif settings.optimizer == "ConjugateGradientLineSearch":
        method.SetOptimizerAsConjugateGradientLineSearch(
            learningRate=settings.learning_rate,
            numberOfIterations=settings.max_iterations,
            convergenceMinimumValue=1e-6,
            convergenceWindowSize=10,
        )
    elif settings.optimizer == "GradientDescent":
        method.SetOptimizerAsGradientDescent(
            learningRate=settings.learning_rate,
            numberOfIterations=settings.max_iterations,
            convergenceMinimumValue=1e-6,
            convergenceWindowSize=10,
            estimateLearningRate=method.EachIteration,
            maximumStepSizeInPhysicalUnits=settings.learning_rate,
        )
    else:
        raise ValueError(f"unknown optimizer {settings.optimizer!r}")
    # Scales so that one unit of every parameter moves the image about the same distance.
    method.SetOptimizerScalesFromPhysicalShift()
    return method


def _stopped_converged(stop_condition: str) -> bool:
    text = stop_condition.lower()
    return "maximum number of iterations" not in text


@contextmanager
def single_threaded_itk() -> Iterator[None]:
    """Run ITK on one thread, restoring the caller's default afterwards.

    Measured (docs/registration.md): with 2 threads the Mattes MI metric accumulates its
    joint histogram derivatives in a thread-dependent order, so two runs on the same
    images differ in the last bits (about 1e-9 mm), even run to run at the same thread
    count; ``ImageRegistrationMethod.SetNumberOfThreads`` does not reach the metric, only
    the global default does. One thread is bitwise reproducible and, on this 2-core
    machine with one registration per Snakemake job, no slower.
    """
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


@dataclass
class FixedImage:
    """What one case's registrations share: the T1C at working resolution (float32), its
    head mask and the rotation centre."""

    image: Any  # sitk.Image, float32, see working_resolution
    mask: Any  # sitk.Image (coarse grid, see HEAD_MASK_SHRINK) or None
    center_lps: list[float]
    seconds: float

    @classmethod
    def prepare(cls, fixed: sitk.Image, settings: RegistrationSettings) -> FixedImage:
        start = time.perf_counter()
        with single_threaded_itk():
            image = working_resolution(fixed)
            mask = head_mask(image, HEAD_MASK_SHRINK) if settings.use_head_mask else None
            center = _mask_centroid_lps(mask) if mask is not None else _image_centre_lps(image)
        return cls(image, mask, center, time.perf_counter() - start)


def register_pair(
    fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings,
    prepared: FixedImage | None = None,
) -> RegistrationResult:
    """Rigidly register ``moving`` onto ``fixed``; the transform maps fixed LPS to moving LPS.

    ``prepared`` (from ``FixedImage.prepare(fixed, settings)``) lets the registrations of
    one case share the fixed image's head mask; without it the mask is computed here and
    its time counts in ``seconds``.
    """
    if prepared is None:
        prepared = FixedImage.prepare(fixed, settings)
        extra_seconds = prepared.seconds
    else:
        extra_seconds = 0.0
    with single_threaded_itk():
        result = _register_pair(prepared, moving, settings)
    result.seconds += extra_seconds
    return result


def _register_pair(
    prepared: FixedImage, moving: sitk.Image, settings: RegistrationSettings
) -> RegistrationResult:
    import SimpleITK as sitk

    start = time.perf_counter()
    fixed_f, mask, center = prepared.image, prepared.mask, prepared.center_lps
    moving_f = working_resolution(moving)

    # Identity in physical space (shared Frame of Reference); centre only re-parametrises.
    initial = sitk.Euler3DTransform()
    initial.SetCenter(center)

    method = _configure_method(settings, mask)
    method.SetInitialTransform(initial, inPlace=False)

    iterations_per_level: list[int] = []

    def on_level() -> None:
        iterations_per_level.append(0)

    def on_iteration() -> None:
        iterations_per_level[-1] += 1

    method.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)
    method.AddCommand(sitk.sitkIterationEvent, on_iteration)

    metric_before = _metric_value(fixed_f, moving_f, initial, settings, mask)
    optimized = method.Execute(fixed_f, moving_f)
    transform = sitk.Euler3DTransform(sitk.CompositeTransform(optimized).GetBackTransform()) \
        if optimized.GetName() == "CompositeTransform" else sitk.Euler3DTransform(optimized)
    metric_after = _metric_value(fixed_f, moving_f, transform, settings, mask)
    stop = method.GetOptimizerStopConditionDescription()
    converged = _stopped_converged(stop)
    result = RegistrationResult(
        transform=transform,
        metric_before=metric_before,
        metric_after=metric_after,
        iterations=int(sum(iterations_per_level)),
        iterations_per_level=iterations_per_level,
        stop_condition=stop,
        converged=converged,
        rotation_deg=rotation_angles_deg(transform),
        translation_mm=translation_at(transform, center),
        center_lps=[float(c) for c in center],
        seconds=time.perf_counter() - start,
    )
    result.flags = registration_flags(result, settings)
    return result


def _metric_value(
    fixed: sitk.Image,
    moving: sitk.Image,
    transform: sitk.Transform,
    settings: RegistrationSettings,
    mask: sitk.Image | None,
) -> float:
    """Mattes MI over every voxel of the head mask on the T1C grid shrunk by
    QC_METRIC_SHRINK (moving sampled by linear interpolation), for before/after QC."""
    import SimpleITK as sitk

    if any(f > 1 for f in QC_METRIC_SHRINK):
        fixed = sitk.Shrink(fixed, list(QC_METRIC_SHRINK))
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.number_of_histogram_bins)
    if mask is not None:
        method.SetMetricFixedMask(mask)
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def registration_flags(result: RegistrationResult, settings: RegistrationSettings) -> list[str]:
    """Reasons a registration looks implausible (it is kept; a person should look)."""
    flags = []
    if result.rotation_deg["total"] > settings.max_rotation_deg:
        flags.append(
            f"rotation {result.rotation_deg['total']:.1f} deg exceeds {settings.max_rotation_deg} deg"
        )
    if result.translation_mm["norm"] > settings.max_translation_mm:
        flags.append(
            f"translation {result.translation_mm['norm']:.1f} mm exceeds "
            f"{settings.max_translation_mm} mm"
        )
    # Mattes MI is negated: lower is better.
    if not result.metric_after < result.metric_before:
        flags.append(
            f"metric after ({result.metric_after:.4f}) not better than identity "
            f"({result.metric_before:.4f})"
        )
    if -result.metric_after < settings.min_mutual_information:
        flags.append(
            f"mutual information after registration ({-result.metric_after:.3f}) below "
            f"{settings.min_mutual_information}"
        )
    if not result.converged:
        flags.append(f"optimizer did not converge: {result.stop_condition}")
    return flags


# ---------------------------------------------------------------- per-case stage


def _derivative_paths(case_id: str, subject: str, session: str, sequence: str) -> dict[str, str]:
    """Paths (relative to output_dir) of one moving series' registration derivatives."""
    try:
        from metsprep.bids import bids_paths
    except ImportError:  # the bids module is optional here: same names, built locally
        suffix = MOVING_SEQUENCES[sequence]
        anat = f"bids/derivatives/metsprep/sub-{subject}/ses-{session}/anat"
        return {
            "xfm": f"{anat}/{case_id}_from-{suffix}_to-T1wCE_mode-image_xfm.tfm",
            "image": f"{anat}/{case_id}_space-T1wCE_{suffix}.nii.gz",
            "sidecar": f"{anat}/{case_id}_space-T1wCE_{suffix}.json",
        }
    paths = bids_paths(subject, session)
    key = sequence.lower()  # t1 | t2
    return {
        "xfm": getattr(paths, f"{key}_to_t1c_transform"),
        "image": getattr(paths, f"{key}_in_t1c"),
        "sidecar": getattr(paths, f"{key}_in_t1c_sidecar"),
    }


def _split_case_id(case_id: str) -> tuple[str, str]:
    sub, ses = case_id.split("_", 1)
    return sub.removeprefix("sub-"), ses.removeprefix("ses-")


def register_case(
    bids_json: Path, output_dir: Path, result_json: Path, settings: dict[str, Any]
) -> None:
    """Register a case's T1 and T2 onto its T1C; write transforms, resampled images, QC JSON."""
    import SimpleITK as sitk

    bids_json, output_dir, result_json = Path(bids_json), Path(output_dir), Path(result_json)
    case = json.loads(bids_json.read_text())
    case_id = case["case_id"]
    result: dict[str, Any] = {
        "case_id": case_id,
        "status": case.get("status", "ok"),
        "status_reason": case.get("status_reason"),
        "flags": [],
        "registrations": {},
    }
    images = case.get("images") or {}
    if result["status"] != "excluded" and "T1C" not in images:
        result.update(status="excluded", status_reason="no T1W+C image to register onto")
    if result["status"] == "excluded":
        _write_json(result_json, result)
        return

    reg_settings = RegistrationSettings.from_config(settings)
    subject = case.get("subject") or _split_case_id(case_id)[0]
    session = case.get("session") or _split_case_id(case_id)[1]
    fixed_rel = images["T1C"]["nifti"]
    try:
        fixed = sitk.ReadImage(str(output_dir / fixed_rel))
        fixed_error = None
        prepared = FixedImage.prepare(fixed, reg_settings)  # shared by T1 and T2
    except RuntimeError as error:
        # ITK images need orthonormal direction cosines; a sheared (gantry-tilted) T1C
        # grid cannot be opened, so its registrations are missing, with the reason.
        fixed, prepared = None, None
        fixed_error = f"the T1W+C image could not be opened for registration: {error}"
    for sequence, suffix in MOVING_SEQUENCES.items():
        entry = images.get(sequence)
        if not entry or not entry.get("nifti"):
            result["registrations"][sequence] = None
            continue
        if fixed_error is not None:
            qc = {"missing": True, "reason": fixed_error.splitlines()[0][:300]}
            result["flags"].append(f"registration_failed_{sequence}")
            result["registrations"][sequence] = result[sequence] = qc
            continue
        try:
            qc = _register_one(
                fixed, prepared, fixed_rel, entry["nifti"], output_dir, case_id, subject, session,
                sequence, reg_settings,
            )
        except Exception as error:  # noqa: BLE001 - one failed derivative must not stop the case
            qc = {"missing": True, "reason": f"registration failed: {type(error).__name__}: {error}"}
            result["flags"].append(f"registration_failed_{sequence}")
        else:
            if qc["flag"]:
                result["flags"].append(f"registration_flag_{sequence}")
        result["registrations"][sequence] = qc
        result[sequence] = qc  # {"T1": {...}, "T2": {...}} at top level, as in the issue
    _write_json(result_json, result)


def _register_one(
    fixed: sitk.Image,
    prepared: FixedImage,
    fixed_rel: str,
    moving_rel: str,
    output_dir: Path,
    case_id: str,
    subject: str,
    session: str,
    sequence: str,
    settings: RegistrationSettings,
) -> dict[str, Any]:
    import SimpleITK as sitk

    suffix = MOVING_SEQUENCES[sequence]
    moving = sitk.ReadImage(str(output_dir / moving_rel))
    registration = register_pair(fixed, moving, settings, prepared)
    paths = _derivative_paths(case_id, subject, session, sequence)
    xfm_path = output_dir / paths["xfm"]
    image_path = output_dir / paths["image"]
    xfm_path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteTransform(registration.transform, str(xfm_path))
    resampled = sitk.Resample(
        moving, fixed, registration.transform, sitk.sitkLinear, 0.0, moving.GetPixelID()
    )
    sitk.WriteImage(resampled, str(image_path), useCompression=True)
    qc = registration.qc()
    sidecar = {
        "Description": f"{suffix} rigidly registered and resampled onto the T1w+C grid",
        "SkullStripped": False,
        "SpatialReference": _spatial_reference(subject, session, fixed_rel),
        "Sources": [moving_rel, paths["xfm"]],
        "TransformFile": paths["xfm"],
        "TransformDirection": "maps T1w+C LPS mm points to the same point in source LPS mm "
        "(ITK registration convention, fixed = T1w+C)",
        "Interpolation": "linear",
        "RegistrationMetric": METRIC_NAME,
        "RegistrationMetricBefore": qc["metric_before"],
        "RegistrationMetricAfter": qc["metric_after"],
        "RegistrationSettings": to_jsonable(asdict(settings)),
        "RegistrationFlag": qc["flag"],
    }
    _write_json(output_dir / paths["sidecar"], sidecar)
    qc.update(missing=False, reason=None, transform=paths["xfm"], image=paths["image"],
              sidecar=paths["sidecar"])
    return qc


def _spatial_reference(subject: str, session: str, fixed_rel: str) -> str:
    """The raw T1w+C image as a BIDS URI where the bids module defines one."""
    try:
        from metsprep.bids import derivative_sidecar_spatial_reference
    except ImportError:
        return fixed_rel
    return str(derivative_sidecar_spatial_reference(subject, session)["SpatialReference"])


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(payload), indent=2) + "\n")
