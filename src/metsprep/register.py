"""Rigid registration of T1 and T2 onto T1W+C (the fixed image), with QC.

Convention (ITK's, see docs/design.md): the transform maps a point in T1C LPS mm to the
same anatomical point in the moving series' LPS mm, so
``sitk.Resample(moving, t1c, transform)`` puts the moving image on the T1C grid.

The method (anisotropic pyramid, several starts, an independent check from a perturbed
start) is described where it is implemented, below; settings were
chosen by target registration error and time on the stress corpus, see
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
from metsprep.layout import (
    MOVING_SUFFIX,
    bids_paths,
    derivative_sidecar_spatial_reference,
    registration_paths,
    remove_stale,
)
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
    check_disagreement_mm: float | None = None  # between this result and one from a perturbed start
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
            check_disagreement_mm=self.check_disagreement_mm,
        )  # fmt: skip


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- registration
#
# The method, read top-down (settings and their measurements: docs/registration.md):
# 1. A pyramid that respects anisotropic voxels: each level bins the images to about
#    `levels_mm[l]` in-plane (sitk.BinShrink, box averaging), never coarser than the target
#    along an axis, so 3-7 mm slices are not thinned out further (a uniform shrink of 4
#    turned 6 mm slices into 24 mm ones).
# 2. Random metric samples, a fixed number per level (`samples_per_level`), seeded for
#    reproducibility; head masks restrict the metric only where `head_masks` says (default
#    none: an Otsu mask of a strongly biased T1C cut away parts of the head).
# 3. Starts at the coarsest level that do not depend on where the scanner put the head:
#    the identity (one Frame of Reference), the head-mask centroid shift, and rotations of
#    +-`start_rotation_deg` about each axis; the best `STARTS_OPTIMISED` by metric are
#    optimised at the coarsest level and the best result goes on through the finer levels.
# 4. Starts along the moving image's slice axis: the result shifted by +-1 moving slice
#    spacing (`slice_shift_starts`), each optimised at the second-finest level; one with a
#    better metric there than the result goes on through the finest level. A thick-slice or
#    partial slab can lock one slice off, into an optimum so deep that the check below finds
#    it again (a stress pair 6.6 mm off, the check agreeing within 0.1 mm; from the shifted
#    starts 0.97 mm).
# 5. An independent check: the finest `check_levels` levels are run again from a start
#    perturbed by `check_rotation_deg` and `check_translation_mm`; a good optimum is found
#    again. The 95th percentile of the distances between the two results at head points is
#    reported, and a registration whose two results are farther apart than
#    `max_disagreement_mm` is flagged.

# Head masks are computed at this working spacing (mm); ITK looks mask points up in
# physical space, so one coarse mask serves every level.
MASK_SPACING_MM = 2.0
# How many of the best starts (by their metric before optimisation) are optimised at the
# coarsest level.
STARTS_OPTIMISED = 2


def binned(image: sitk.Image, target_mm: float) -> sitk.Image:
    """``image`` as float32, binned to about ``target_mm`` per axis where it is finer."""
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    factors = [max(1, int(round(target_mm / s))) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if any(f > 1 for f in factors) else image


def mask_centroid_lps(mask: sitk.Image) -> list[float]:
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return list(stats.GetCentroid(1))


def mask_points_lps(mask: sitk.Image, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` voxel centres of a mask, in LPS mm (for comparing two transforms)."""
    import SimpleITK as sitk

    kji = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    if len(kji) > n:
        kji = kji[np.random.default_rng(seed).choice(len(kji), n, replace=False)]
    return np.array([mask.TransformIndexToPhysicalPoint([int(i), int(j), int(k)]) for k, j, i in kji])


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


def affine_of(transform: Any) -> np.ndarray:
    """The 4x4 matrix of an ITK matrix-offset transform (Euler, similarity, affine): the point
    mapping, LPS mm to LPS mm."""
    linear = np.array(transform.GetMatrix(), dtype=float).reshape(3, 3)
    centre = np.array(transform.GetCenter(), dtype=float)
    translation = np.array(transform.GetTranslation(), dtype=float)
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = translation + centre - linear @ centre
    return matrix


def distance_p95_mm(a: sitk.Transform, b: sitk.Transform, points_lps: np.ndarray) -> float:
    """95th percentile of the distances between where two transforms put the same points."""
    pa = np.array([a.TransformPoint(tuple(map(float, p))) for p in points_lps])
    pb = np.array([b.TransformPoint(tuple(map(float, p))) for p in points_lps])
    return float(np.percentile(np.linalg.norm(pa - pb, axis=1), 95)) if len(points_lps) else 0.0


@contextmanager
def single_threaded_itk() -> Iterator[None]:
    """Run ITK on one thread, restoring the caller's default afterwards.

    Measured (docs/registration.md): with 2 threads the Mattes MI metric accumulates its
    joint histogram derivatives in a thread-dependent order, so two runs on the same
    images differ in the last bits (about 1e-9 mm), even run to run at the same thread
    count; ``ImageRegistrationMethod.SetNumberOfThreads`` does not reach the metric, only
    the global default does. One thread is bitwise reproducible and, with one
    registration per Snakemake job, the cheapest in core-seconds.
    """
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


@dataclass
class Pyramid:
    """One image at every level of the pyramid, with its head mask."""

    levels: list[Any]  # sitk.Image per level, coarse to fine
    mask: Any  # sitk.Image on the MASK_SPACING_MM grid
    mask_fraction: float  # share of that grid inside the mask

    @classmethod
    def of(cls, image: sitk.Image, settings: RegistrationSettings) -> Pyramid:
        import SimpleITK as sitk

        levels = [binned(image, mm) for mm in settings.levels_mm]
        # Always made: it places the rotation centre, the centroid start and the check's
        # points; whether it restricts the metric is `head_masks`.
        mask = head_mask(binned(image, MASK_SPACING_MM))
        fraction = float(sitk.GetArrayViewFromImage(mask).mean()) or 1.0
        return cls(levels, mask, fraction)


@dataclass
class FixedImage:
    """What one case's registrations share: the T1C pyramid, its mask and the rotation centre."""

    pyramid: Pyramid
    center_lps: list[float]
    check_points_lps: np.ndarray
    seconds: float

    @classmethod
    def prepare(cls, fixed: sitk.Image, settings: RegistrationSettings) -> FixedImage:
        start = time.perf_counter()
        with single_threaded_itk():
            pyramid = Pyramid.of(fixed, settings)
            center = mask_centroid_lps(pyramid.mask)
            points = mask_points_lps(pyramid.mask, 2000, settings.seed)
        return cls(pyramid, center, points, time.perf_counter() - start)


def register_pair(
    fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings,
    prepared: FixedImage | None = None,
) -> RegistrationResult:
    """Rigidly register ``moving`` onto ``fixed``; the transform maps fixed LPS to moving LPS.

    ``prepared`` (from ``FixedImage.prepare(fixed, settings)``) lets the registrations of
    one case share the fixed pyramid; without it, it is built here and counts in ``seconds``.
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


def _method(
    settings: RegistrationSettings, fixed: Pyramid, moving: Pyramid, level: int
) -> sitk.ImageRegistrationMethod:
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.number_of_histogram_bins)
    image = fixed.levels[level]
    n_voxels = float(np.prod(image.GetSize()))
    masked = settings.head_masks in ("fixed", "both")
    percentage = min(1.0, settings.samples_per_level[level] / (n_voxels * (fixed.mask_fraction if masked else 1.0)))
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(percentage, settings.seed)
    if masked:
        method.SetMetricFixedMask(fixed.mask)
    if settings.head_masks == "both":
        method.SetMetricMovingMask(moving.mask)
    # Gradients computed at the sample points only: cheaper than gradient images.
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    step = settings.learning_rate * settings.levels_mm[level] / settings.levels_mm[-1]
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step,
        minStep=settings.min_step * (settings.levels_mm[level] / settings.levels_mm[-1]) ** 2,
        numberOfIterations=settings.max_iterations,
        relaxationFactor=settings.relaxation_factor,
        gradientMagnitudeTolerance=settings.gradient_tolerance,
    )
    # Scales so that one unit of every parameter moves the image about the same distance.
    method.SetOptimizerScalesFromPhysicalShift()
    return method


def _optimise(
    settings: RegistrationSettings, fixed: Pyramid, moving: Pyramid, level: int, start: sitk.Euler3DTransform
) -> tuple[sitk.Euler3DTransform, float, int, str]:
    """One pyramid level from ``start``: (transform, final metric, iterations, stop condition)."""
    import SimpleITK as sitk

    method = _method(settings, fixed, moving, level)
    method.SetInitialTransform(sitk.Euler3DTransform(start), inPlace=False)
    iterations = [0]

    def count() -> None:
        iterations[0] += 1

    method.AddCommand(sitk.sitkIterationEvent, count)
    optimized = method.Execute(fixed.levels[level], moving.levels[level])
    if optimized.GetName() == "CompositeTransform":
        optimized = sitk.CompositeTransform(optimized).GetBackTransform()
    transform = sitk.Euler3DTransform(optimized)
    return transform, float(method.GetMetricValue()), iterations[0], method.GetOptimizerStopConditionDescription()


def _metric_at(settings: RegistrationSettings, fixed: Pyramid, moving: Pyramid, level: int,
               transform: sitk.Transform) -> float:  # fmt: skip
    """The level's sampled Mattes MI at ``transform`` (negative: lower is better)."""
    method = _method(settings, fixed, moving, level)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed.levels[level], moving.levels[level]))


def _starts(settings: RegistrationSettings, center: list[float], fixed: Pyramid, moving: Pyramid) -> list[Any]:
    """Candidate starts: identity, the mask-centroid shift, and rotations about each axis."""
    import SimpleITK as sitk

    def euler(angles: tuple[float, float, float] = (0.0, 0.0, 0.0), shift: Any = (0.0, 0.0, 0.0)) -> Any:
        transform = sitk.Euler3DTransform()
        transform.SetCenter(center)
        transform.SetRotation(*[math.radians(a) for a in angles])
        transform.SetTranslation([float(v) for v in shift])
        return transform

    # the identity (one Frame of Reference) and the head-centroid shift (moments; `center`
    # is the fixed head mask's centroid)
    starts = [euler(), euler(shift=np.subtract(mask_centroid_lps(moving.mask), center))]
    angle = settings.start_rotation_deg
    if angle > 0:
        for axis in range(3):
            for sign in (-1.0, 1.0):
                angles = [0.0, 0.0, 0.0]
                angles[axis] = sign * angle
                starts.append(euler(tuple(angles)))  # type: ignore[arg-type]
    return starts


def _best_along_slices(
    settings: RegistrationSettings, fixed: Pyramid, moving: Pyramid, moving_image: sitk.Image,
    transform: sitk.Euler3DTransform, stop: str,
) -> tuple[sitk.Euler3DTransform, str]:  # fmt: skip
    """The best of ``transform`` and its shifts by whole moving slice spacings along the
    moving slice axis. Each shift is optimised at the second-finest level only and compared
    there (the finest level would double a registration's cost); a shift that wins is then
    run through the finest level."""
    import SimpleITK as sitk

    n_levels = len(settings.levels_mm)
    if settings.slice_shift_starts <= 0:
        return transform, stop
    level = max(0, n_levels - 2)
    # the transform maps fixed points into the moving image: a shift of its translation by one
    # moving slice spacing along the moving slice axis moves the slab by one slice
    slice_axis = np.array(moving_image.GetDirection()).reshape(3, 3)[:, 2]
    step_mm = float(moving_image.GetSpacing()[2])
    best, best_metric = None, _metric_at(settings, fixed, moving, level, transform)
    for steps in range(1, settings.slice_shift_starts + 1):
        for sign in (-1.0, 1.0):
            candidate = sitk.Euler3DTransform(transform)
            params = list(candidate.GetParameters())
            for i in range(3):
                params[3 + i] += float(sign * steps * step_mm * slice_axis[i])
            candidate.SetParameters(params)
            candidate, metric, _, _ = _optimise(settings, fixed, moving, level, candidate)
            if metric < best_metric:
                best, best_metric = candidate, metric
    if best is None:
        return transform, stop
    for finer in range(level + 1, n_levels):
        best, _, _, stop = _optimise(settings, fixed, moving, finer, best)
    return best, stop


def _perturbed(transform: sitk.Euler3DTransform, settings: RegistrationSettings) -> sitk.Euler3DTransform:
    """``transform`` moved by the check's rotation (about a fixed oblique axis) and shift."""
    import SimpleITK as sitk

    out = sitk.Euler3DTransform(transform)
    angles = np.radians(settings.check_rotation_deg) * np.array([0.6, -0.5, 0.62])
    params = list(out.GetParameters())
    for i in range(3):
        params[i] += float(angles[i])
    shift = settings.check_translation_mm * np.array([0.58, 0.58, -0.58])
    for i in range(3):
        params[3 + i] += float(shift[i])
    out.SetParameters(params)
    return out


def _register_pair(prepared: FixedImage, moving_image: sitk.Image, settings: RegistrationSettings) -> RegistrationResult:
    start_time = time.perf_counter()
    fixed = prepared.pyramid
    moving = Pyramid.of(moving_image, settings)
    center = prepared.center_lps
    n_levels = len(settings.levels_mm)
    qc_level = max(0, n_levels - 2)  # QC metrics on the second-finest level (cheap, dense enough)

    starts = _starts(settings, center, fixed, moving)
    identity = starts[0]
    metric_before = _metric_at(settings, fixed, moving, qc_level, identity)
    ranked = sorted(starts, key=lambda t: _metric_at(settings, fixed, moving, 0, t))[:STARTS_OPTIMISED]
    coarse = [_optimise(settings, fixed, moving, 0, t) for t in ranked]
    transform, _, iterations, stop = min(coarse, key=lambda r: r[1])
    iterations_per_level = [sum(r[2] for r in coarse)]
    for level in range(1, n_levels):
        transform, _, n_iterations, stop = _optimise(settings, fixed, moving, level, transform)
        iterations_per_level.append(n_iterations)

    transform, stop = _best_along_slices(settings, fixed, moving, moving_image, transform, stop)

    # the independent check: the finest `check_levels` levels again, from a perturbed start
    check = _perturbed(transform, settings)
    for level in range(max(0, n_levels - settings.check_levels), n_levels):
        check, _, _, _ = _optimise(settings, fixed, moving, level, check)
    disagreement = distance_p95_mm(transform, check, prepared.check_points_lps)

    metric_after = _metric_at(settings, fixed, moving, qc_level, transform)
    result = RegistrationResult(
        transform=transform,
        metric_before=metric_before,
        metric_after=metric_after,
        iterations=int(sum(iterations_per_level)),
        iterations_per_level=iterations_per_level,
        stop_condition=stop,
        converged="maximum number of iterations" not in stop.lower(),
        rotation_deg=rotation_angles_deg(transform),
        translation_mm=translation_at(transform, center),
        center_lps=[float(c) for c in center],
        seconds=time.perf_counter() - start_time,
        check_disagreement_mm=disagreement,
    )
    result.flags = registration_flags(result, settings)
    return result


def registration_flags(result: RegistrationResult, settings: RegistrationSettings) -> list[str]:
    """Reasons a registration may be wrong (it is kept; a person should look)."""
    flags = []
    if result.check_disagreement_mm is not None and result.check_disagreement_mm > settings.max_disagreement_mm:
        flags.append(
            f"a second registration from a perturbed start ended {result.check_disagreement_mm:.1f} mm away "
            f"(more than {settings.max_disagreement_mm} mm): the optimum is not well defined"
        )
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
    if not result.metric_after <= result.metric_before:
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
    written = {f for r in registrations.values() if r is not None for f in (r.transform, r.image, r.sidecar) if f}
    remove_stale(output_dir, bids.subject, bids.session, "register", written)
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
