"""Geometry of a DICOM image series: slice order, voxel grid and `lps_from_ijk`.

Pure functions over per-slice header values (no pixel data, no I/O). The rules:

* Slice order comes from Image Position (Patient) projected on the slice normal
  (`normal = row_direction x column_direction`), never from Instance Number or file names.
* Voxel index convention: i = column index, j = row index, k = slice index, zero-based,
  voxel centres. `lps_from_ijk` columns are the i step, j step and k step in LPS mm, and
  the position of voxel (0, 0, 0). `ras_from_ijk = diag(-1, -1, 1, 1) @ lps_from_ijk`.
* The k step is fitted from the slice positions themselves (least squares over the grid
  index), so a gantry-tilted stack keeps its true sheared geometry: its k step is not
  parallel to the normal.
* Every slice must have the same Rows, Columns, Pixel Spacing and Image Orientation;
  otherwise the series is rejected with a reason (`GeometryError`).
* Duplicated positions: the same SOP Instance UID at the same position (a file copied
  twice) keeps the first copy and is flagged; distinct images at one position (multi-echo,
  repeated acquisition, duplicates) reject the series - we cannot choose a volume safely.
* Missing slices: when the positions lie on a uniform grid with gaps, the grid keeps the
  true slice planes of the real slices (their k is fixed by their position), and each
  missing plane is marked for linear interpolation between its neighbours along the
  normal (`order[k] is None`, flag `missing_slices_interpolated`). Gaps longer than
  `max_missing_run` consecutive planes, or positions that are not on a uniform grid at
  all, reject the series: a wrong affine is never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metsprep.frames import RAS_FROM_LPS

#: Tolerances. Positions in real headers are printed with a few decimals.
ORIENTATION_TOLERANCE = 1e-4  # direction cosines
PIXEL_SPACING_TOLERANCE_MM = 1e-3
DUPLICATE_POSITION_TOLERANCE_MM = 1e-3
#: A slice position may differ from its grid plane by this much (mm, or this fraction of
#: the slice spacing, whichever is larger) and still count as on the grid.
GRID_TOLERANCE_MM = 0.02
GRID_TOLERANCE_FRACTION = 0.02
#: Tilt below this angle (degrees) is rounding noise, not a gantry tilt.
TILT_TOLERANCE_DEG = 0.01


class GeometryError(ValueError):
    """The slices do not form one regular volume; the message says why, for a person."""


@dataclass(frozen=True)
class SliceHeader:
    """The header values of one slice that define its place in patient space (LPS mm)."""

    image_position_lps: tuple[float, float, float]
    image_orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as in DICOM
    rows: int
    columns: int
    sop_instance_uid: str | None = None

    @classmethod
    def from_dataset(cls, ds: Any) -> SliceHeader:
        """Read the values from a pydicom Dataset (or anything with the same attributes)."""
        try:
            position = tuple(float(v) for v in ds.ImagePositionPatient)
            orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
            spacing = tuple(float(v) for v in ds.PixelSpacing)
            rows, columns = int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError) as exc:
            raise GeometryError(
                "an image lacks Image Position/Orientation (Patient), Pixel Spacing, Rows "
                f"or Columns ({exc})"
            ) from exc
        if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2:
            raise GeometryError("an image has a malformed Image Position/Orientation or Pixel Spacing")
        uid = getattr(ds, "SOPInstanceUID", None)
        return cls(position, orientation, spacing, rows, columns, str(uid) if uid else None)


@dataclass(frozen=True)
class SeriesGeometry:
    """The voxel grid of a series. `order[k]` is the index (into the input header list)
    of the slice written at k, or None where the plane is missing and interpolated."""

    lps_from_ijk: np.ndarray
    shape: tuple[int, int, int]  # (columns, rows, slices) = (i, j, k)
    slice_positions_mm: tuple[float, ...]  # position of plane k along the normal
    slice_spacing_mm: float  # distance between planes, along the normal
    uniform: bool  # True when every plane has a real slice (nothing interpolated)
    order: tuple[int | None, ...]
    normal_lps: np.ndarray
    tilt_deg: float  # angle between the k step and the slice normal
    flags: tuple[str, ...] = field(default=())
    dropped: tuple[int, ...] = field(default=())  # input indices dropped as duplicate files

    @property
    def ras_from_ijk(self) -> np.ndarray:
        return RAS_FROM_LPS @ self.lps_from_ijk

    @property
    def sheared(self) -> bool:
        return self.tilt_deg > TILT_TOLERANCE_DEG

    @property
    def missing_k(self) -> tuple[int, ...]:
        return tuple(k for k, index in enumerate(self.order) if index is None)

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """In-plane column and row spacing, and the plane spacing along the normal."""
        m = self.lps_from_ijk[:3, :3]
        return float(np.linalg.norm(m[:, 0])), float(np.linalg.norm(m[:, 1])), self.slice_spacing_mm


def rigid_lps_from_ijk(geometry: SeriesGeometry) -> np.ndarray:
    """Closest rigid (rotation + zooms) grid: exact i and j steps and origin, k step along
    the normal with the plane spacing. For an untilted stack this equals `lps_from_ijk`;
    for a tilted one, each voxel stays on its true slice plane and is off in-plane by the
    shear (k * spacing * tan(tilt)). NIfTI's qform cannot hold shear, so it gets this."""
    rigid = geometry.lps_from_ijk.copy()
    rigid[:3, 2] = geometry.normal_lps * geometry.slice_spacing_mm
    return rigid


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _check_common_frame(headers: Sequence[SliceHeader]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same size, spacing and orientation on every slice; returns row/col unit vectors and spacing."""
    sizes = {(h.rows, h.columns) for h in headers}
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise GeometryError(f"the series mixes image sizes ({shown} rows x columns)")
    orientations = np.array([h.image_orientation for h in headers], dtype=float)
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise GeometryError("the series mixes image orientations (Image Orientation (Patient) differs between slices)")
    spacings = np.array([h.pixel_spacing for h in headers], dtype=float)
    if np.abs(spacings - spacings[0]).max() > PIXEL_SPACING_TOLERANCE_MM:
        raise GeometryError("the series mixes pixel spacings between slices")
    if np.any(spacings[0] <= 0):
        raise GeometryError("the series has a non-positive Pixel Spacing")
    row_direction = np.asarray(orientations[0, :3])
    column_direction = np.asarray(orientations[0, 3:])
    if abs(np.linalg.norm(row_direction) - 1) > 1e-3 or abs(np.linalg.norm(column_direction) - 1) > 1e-3:
        raise GeometryError("Image Orientation (Patient) is not made of unit vectors")
    if abs(float(row_direction @ column_direction)) > 1e-3:
        raise GeometryError("Image Orientation (Patient) row and column directions are not perpendicular")
    # GE writes "-0" and rounded cosines: re-orthonormalise so the grid is exactly rigid in-plane.
    row_direction = _unit(row_direction)
    column_direction = _unit(column_direction - (column_direction @ row_direction) * row_direction)
    return row_direction, column_direction, spacings[0]


def _drop_duplicate_files(
    headers: Sequence[SliceHeader], distances: np.ndarray
) -> tuple[list[int], list[int]]:
    """Indices to keep and to drop. Same SOP Instance UID and position: a copied file."""
    keep: list[int] = []
    dropped: list[int] = []
    seen: dict[str, float] = {}
    for index, header in enumerate(headers):
        uid = header.sop_instance_uid
        if uid is not None and uid in seen and abs(seen[uid] - distances[index]) <= DUPLICATE_POSITION_TOLERANCE_MM:
            dropped.append(index)
            continue
        if uid is not None:
            seen[uid] = float(distances[index])
        keep.append(index)
    return keep, dropped


def _reject_duplicate_positions(sorted_distances: np.ndarray) -> None:
    gaps = np.diff(sorted_distances)
    duplicates = int(np.count_nonzero(gaps <= DUPLICATE_POSITION_TOLERANCE_MM))
    if duplicates == 0:
        return
    n_positions = len(sorted_distances) - duplicates
    if len(sorted_distances) % n_positions == 0 and len(sorted_distances) // n_positions > 1:
        per_position = len(sorted_distances) // n_positions
        raise GeometryError(
            f"the series holds {per_position} images at each of {n_positions} slice positions "
            "(multi-echo or repeated acquisition); no single volume can be chosen"
        )
    raise GeometryError(f"the series has {duplicates} images at an already occupied slice position (duplicates)")


@dataclass(frozen=True)
class SliceGaps:
    """Where sorted slice positions sit on a uniform grid of planes (the one slice-gap rule:
    the bids stage builds the grid from it, the match stage flags gaps with it)."""

    spacing_mm: float  # fitted plane spacing
    grid_k: tuple[int, ...]  # plane index of each slice
    missing_planes: int
    longest_missing_run: int


def slice_gaps(sorted_distances: np.ndarray) -> SliceGaps:
    """Fit a uniform grid to distinct sorted positions along the normal; GeometryError when
    they do not lie on one (irregular spacing)."""
    gaps = np.diff(sorted_distances)
    if len(gaps) == 0:
        return SliceGaps(0.0, (0,), 0, 0)
    smallest = float(gaps.min())
    # Base spacing: the median of the gaps close to the smallest (the regular ones).
    regular = gaps[gaps <= smallest * 1.5]
    spacing = float(np.median(regular))
    indices = np.concatenate([[0], np.cumsum(np.rint(gaps / spacing))]).astype(int)
    # Refit the spacing over the whole stack, then check every slice against its plane.
    spacing, offset = np.polyfit(indices, sorted_distances, 1)
    residual = np.abs(sorted_distances - (offset + spacing * indices))
    tolerance = max(GRID_TOLERANCE_MM, GRID_TOLERANCE_FRACTION * spacing)
    if residual.max() > tolerance:
        steps = ", ".join(f"{g:.3f}" for g in np.unique(np.round(gaps, 3))[:6])
        raise GeometryError(
            f"slice spacing is not uniform (steps between slice positions: {steps} mm) and the "
            "positions do not lie on a regular grid with gaps"
        )
    runs = np.diff(indices) - 1
    return SliceGaps(float(spacing), tuple(int(k) for k in indices), int(runs.sum()), int(runs.max()))


def _grid_indices(sorted_distances: np.ndarray, max_missing_run: int) -> tuple[np.ndarray, float]:
    """Integer plane index of each slice on a uniform grid, and the plane spacing."""
    layout = slice_gaps(sorted_distances)
    if layout.longest_missing_run > max_missing_run:
        raise GeometryError(
            f"{layout.longest_missing_run} consecutive slices are missing from the stack (at most "
            f"{max_missing_run} can be interpolated)"
        )
    return np.array(layout.grid_k), layout.spacing_mm


def series_geometry(headers: Sequence[SliceHeader], max_missing_run: int = 1) -> SeriesGeometry:
    """Sort the slices along the normal and build the voxel grid; see the module rules."""
    if len(headers) == 0:
        raise GeometryError("the series has no images")
    row_direction, column_direction, pixel_spacing = _check_common_frame(headers)
    normal = np.cross(row_direction, column_direction)
    positions = np.array([h.image_position_lps for h in headers], dtype=float)
    distances = positions @ normal

    keep, dropped = _drop_duplicate_files(headers, distances)
    flags: list[str] = ["duplicate_files_dropped"] if dropped else []
    keep_array = np.array(keep)
    by_distance = keep_array[np.argsort(distances[keep_array], kind="stable")]
    sorted_distances = distances[by_distance]
    rows, columns = headers[0].rows, headers[0].columns

    lps_from_ijk = np.eye(4)
    lps_from_ijk[:3, 0] = row_direction * pixel_spacing[1]  # i: along a row, one column apart
    lps_from_ijk[:3, 1] = column_direction * pixel_spacing[0]  # j: down a column, one row apart

    if len(by_distance) == 1:
        # A single slice: its thickness is unknown here; use the normal with unit spacing.
        lps_from_ijk[:3, 2] = normal
        lps_from_ijk[:3, 3] = positions[by_distance[0]]
        return SeriesGeometry(
            lps_from_ijk, (columns, rows, 1), (float(sorted_distances[0]),), 1.0, True,
            (int(by_distance[0]),), normal, 0.0, tuple(flags + ["single_slice"]), tuple(dropped),
        )

    _reject_duplicate_positions(sorted_distances)
    grid_k, spacing = _grid_indices(sorted_distances, max_missing_run)
    n_planes = int(grid_k[-1]) + 1

    # Fit origin and k step in 3-D over the real slices: this keeps the in-plane drift of a
    # gantry-tilted stack (shear) and averages out printed-decimal rounding.
    design = np.column_stack([np.ones(len(grid_k)), grid_k])
    (origin, k_step), *_ = np.linalg.lstsq(design, positions[by_distance], rcond=None)
    fitted = design @ np.vstack([origin, k_step])
    in_plane_residual = float(np.abs(fitted - positions[by_distance]).max())
    if in_plane_residual > max(GRID_TOLERANCE_MM, GRID_TOLERANCE_FRACTION * spacing):
        raise GeometryError(
            f"slice positions do not lie on a straight line (off by up to {in_plane_residual:.3f} mm)"
        )
    cos_tilt = float(np.clip(k_step @ normal / np.linalg.norm(k_step), -1.0, 1.0))
    tilt_deg = float(np.degrees(np.arccos(cos_tilt)))
    if tilt_deg > TILT_TOLERANCE_DEG:
        flags.append("gantry_tilt")
    else:
        # In-plane drift below the tolerance is rounding of printed positions, not shear.
        tilt_deg = 0.0
        k_step = normal * spacing
    lps_from_ijk[:3, 2] = k_step
    lps_from_ijk[:3, 3] = origin

    order: list[int | None] = [None] * n_planes
    for k, index in zip(grid_k, by_distance, strict=True):
        order[int(k)] = int(index)
    uniform = n_planes == len(by_distance)
    if not uniform:
        flags.append("missing_slices_interpolated")
    plane_positions = tuple(float(origin @ normal + spacing * k) for k in range(n_planes))
    return SeriesGeometry(
        lps_from_ijk=lps_from_ijk,
        shape=(columns, rows, n_planes),
        slice_positions_mm=plane_positions,
        slice_spacing_mm=float(spacing),
        uniform=uniform,
        order=tuple(order),
        normal_lps=normal,
        tilt_deg=tilt_deg,
        flags=tuple(flags),
        dropped=tuple(dropped),
    )


def interpolation_weights(order: Sequence[int | None]) -> dict[int, tuple[int, int, float]]:
    """For each missing plane k: (k_below, k_above, weight_of_above) for linear
    interpolation along the normal between the nearest real planes."""
    real = [k for k, index in enumerate(order) if index is not None]
    weights: dict[int, tuple[int, int, float]] = {}
    for k, index in enumerate(order):
        if index is not None:
            continue
        below = max(r for r in real if r < k)
        above = min(r for r in real if r > k)
        weights[k] = (below, above, (k - below) / (above - below))
    return weights
