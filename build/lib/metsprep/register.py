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

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metsprep.atomic import write_json, write_with
from metsprep.contracts import SCHEMA_VERSION, BidsResult, RegisterResult, RegistrationRecord
from metsprep.jsonio import to_jsonable
from metsprep.layout import MOVING_SUFFIX, bids_paths, derivative_sidecar_spatial_reference, registration_paths
from metsprep.masks import head_mask
from metsprep.settings import RegistrationSettings

if TYPE_CHECKING:
    import SimpleITK as sitk

METRIC_NAME = "MattesMutualInformation"


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

    def record(self, transform: str, image: str, sidecar: str) -> RegistrationRecord:
        """The stage's record of this result and the files written from it."""
        return RegistrationRecord(
            missing=False, reason=None, flag="; ".join(self.flags) if self.flags else None,
            transform=transform, image=image, sidecar=sidecar, metric=METRIC_NAME,
            metric_before=_finite_or_none(self.metric_before), metric_after=_finite_or_none(self.metric_after),
            iterations=self.iterations, iterations_per_level=tuple(self.iterations_per_level),
            stop_condition=self.stop_condition, converged=self.converged,
            rotation_deg=self.rotation_deg["total"],
            rotation_xyz_deg=(self.rotation_deg["x"], self.rotation_deg["y"], self.rotation_deg["z"]),
            translation_mm=float(self.translation_mm["norm"]),
            translation_xyz_mm=tuple(float(v) for v in self.translation_mm["vector"]),  # type: ignore[arg-type]
            center_lps=(self.center_lps[0], self.center_lps[1], self.center_lps[2]),
            seconds=round(self.seconds, 3),
        )  # fmt: skip


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


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


def _configure_method(settings: RegistrationSettings, fixed_mask: sitk.Image | None) -> sitk.ImageRegistrationMethod:
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


def register_case(bids_json: Path, output_dir: Path, result_json: Path, settings: RegistrationSettings) -> None:
    """Register a case's T1 and T2 onto its T1C; write transforms, resampled images, QC JSON."""
    import SimpleITK as sitk

    bids = BidsResult.read(bids_json)
    output_dir = Path(output_dir)
    status, reason = bids.status, bids.status_reason
    flags: list[str] = []
    registrations: dict[str, RegistrationRecord | None] = {}
    if status == "ok":
        fixed_rel = bids.images["T1C"].nifti
        try:
            fixed = sitk.ReadImage(str(output_dir / fixed_rel))
            prepared = FixedImage.prepare(fixed, settings)  # shared by T1 and T2
            fixed_error = None
        except RuntimeError as error:
            # ITK images need orthonormal direction cosines; a sheared (gantry-tilted) T1C
            # grid cannot be opened, so its registrations are missing, with the reason.
            fixed_error = f"the T1W+C image could not be opened for registration: {error}"
        for sequence in MOVING_SUFFIX:
            entry = bids.images.get(sequence)
            if entry is None:
                registrations[sequence] = None
                continue
            if fixed_error is not None:
                registrations[sequence] = RegistrationRecord.missing_because(fixed_error.splitlines()[0][:300])
                flags.append(f"registration_failed_{sequence}")
                continue
            try:
                record = _register_one(fixed, prepared, entry.nifti, output_dir, bids, sequence, settings)
            except Exception as error:
                record = RegistrationRecord.missing_because(f"registration failed: {type(error).__name__}: {error}")
                flags.append(f"registration_failed_{sequence}")
            else:
                if record.flag:
                    flags.append(f"registration_flag_{sequence}")
            registrations[sequence] = record
    RegisterResult(
        schema_version=SCHEMA_VERSION, case_id=bids.case_id, status=status, status_reason=reason,
        flags=tuple(flags), registrations=registrations,
    ).write(result_json)  # fmt: skip


def resample_onto(moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """``moving`` on the ``fixed`` grid by linear interpolation, in the moving pixel type.

    Integer images are rounded to the nearest integer (a plain cast truncates towards
    zero, which biases every intensity by about -0.5)."""
    import SimpleITK as sitk

    resampled = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    pixel_type = moving.GetPixelID()
    if pixel_type in (sitk.sitkFloat32, sitk.sitkFloat64):
        return sitk.Cast(resampled, pixel_type)
    return sitk.Cast(sitk.Round(resampled), pixel_type)


def _register_one(
    fixed: sitk.Image,
    prepared: FixedImage,
    moving_rel: str,
    output_dir: Path,
    bids: BidsResult,
    sequence: str,
    settings: RegistrationSettings,
) -> RegistrationRecord:
    import SimpleITK as sitk

    moving = sitk.ReadImage(str(output_dir / moving_rel))
    registration = register_pair(fixed, moving, settings, prepared)
    xfm_rel, image_rel, sidecar_rel = registration_paths(bids_paths(bids.subject, bids.session), sequence)
    write_with(output_dir / xfm_rel, lambda name: sitk.WriteTransform(registration.transform, name))
    resampled = resample_onto(moving, fixed, registration.transform)
    write_with(output_dir / image_rel, lambda name: sitk.WriteImage(resampled, name, useCompression=True))
    record = registration.record(xfm_rel, image_rel, sidecar_rel)
    sidecar = {
        "Description": f"{MOVING_SUFFIX[sequence]} rigidly registered and resampled onto the T1w+C grid",
        "SkullStripped": False,
        **derivative_sidecar_spatial_reference(bids.subject, bids.session),
        "Sources": [moving_rel, xfm_rel],
        "TransformFile": xfm_rel,
        "TransformDirection": "maps T1w+C LPS mm points to the same point in source LPS mm "
        "(ITK registration convention, fixed = T1w+C)",
        "Interpolation": "linear",
        "RegistrationMetric": METRIC_NAME,
        "RegistrationMetricBefore": record.metric_before,
        "RegistrationMetricAfter": record.metric_after,
        "RegistrationSettings": to_jsonable(asdict(settings)),
        "RegistrationFlag": record.flag,
    }
    write_json(output_dir / sidecar_rel, sidecar)
    return record
