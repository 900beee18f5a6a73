"""RT Structure Set -> lesion label map, binary lesion mask, head mask and volumes.

Read top-down:

1. `read_rtss` / `parse_rois`: every ROI of an RTSS as `Roi` / `Contour` dataclasses, with
   the contour points in LPS mm as float64 parsed from the DS strings (never rounded).
2. `SliceGrid`: the target voxel grid (`lps_from_ijk`, shape, the real slice positions
   along the slice normal and the SOP Instance UID of each slice k).
3. `place_contour`: which slice k a contour belongs to (Referenced SOP Instance UID when it
   resolves and agrees with the geometry, otherwise the nearest real slice position along
   the normal), its distance to that plane, its planarity, its in-plane polygon in
   continuous voxel coordinates (i, j) and its area in mm2; or why it cannot be used.
4. `even_odd_fill`: the inclusion rule. A voxel is inside when its centre is inside the
   polygon(s) of its slice by the even-odd crossing-number rule over every contour of the
   ROI on that slice, with half-open edges (see `RASTERIZATION_RULE`).
5. `rasterize_roi`, `contour_volume_mm3`, `build_label_map`, `head_mask`: per-ROI voxels,
   planimetric volumes, the label map with its overlap rule and the head mask.
6. `rasterize_case`: the Snakemake stage (plan + bids.json in, BIDS derivatives + tables out).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from metsprep.errors import CaseExcluded

log = logging.getLogger("metsprep.rtss")

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

RASTERIZATION_RULE = (
    "A voxel belongs to a structure when its centre lies inside the structure's contour "
    "polygons in the slice plane, by the even-odd (crossing-number) rule over all contours "
    "of the structure on that slice (holes and separate islands), with half-open edges: an "
    "edge from (x0, y0) to (x1, y1) crosses the row y when exactly one of y0, y1 is greater "
    "than y, and counts for voxel centres strictly left of the crossing. A centre exactly on "
    "a left or bottom edge is inside, on a right or top edge outside, so two polygons that "
    "share an edge never both claim a voxel. Vertices are used at their unrounded positions; "
    "each contour goes to the slice named by its Referenced SOP Instance UID when that "
    "resolves and lies within half the local slice spacing, else to the nearest real slice "
    "position along the slice normal; contours farther than half the local spacing from "
    "every slice are reported and not used."
)
OVERLAP_RULE = (
    "Where lesions overlap, the voxel gets the label of the smaller lesion (fewer voxels in "
    "its own raster; ties: smaller planimetric volume, then lower label), so a small lesion "
    "is never swallowed by a large one; the case is flagged 'lesions_overlap'."
)
LABEL_RULE = (
    "Lesion ROIs (names not starting with the non-lesion prefix) that have at least one "
    "usable contour are numbered 1..n in increasing ROI Number; the label depends only on "
    "the RTSS content, so it is stable across reruns."
)

#: Report a contour whose points lie farther than this from their slice plane (still used).
OFF_PLANE_REPORT_MM = 0.05
#: A contour at exactly half the spacing between two slices belongs to neither (ambiguous).
HALF_SPACING_TIE_MM = 1e-3

CONTOUR_OUTCOMES = ("used", "hole", "off_plane", "outside_fov", "degenerate", "unusable_type")


# ---------------------------------------------------------------------------------------
# 1. RTSS parsing
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contour:
    """One item of a ROI Contour Sequence. `points_lps_mm` is (n, 3) float64, unrounded."""

    index: int  # position in the ROI's Contour Sequence (0-based)
    geometric_type: str
    points_lps_mm: np.ndarray
    referenced_sop_instance_uid: str | None

    @property
    def n_points(self) -> int:
        return int(self.points_lps_mm.shape[0])


@dataclass(frozen=True)
class Roi:
    """A Structure Set ROI joined with its ROI Contour and RT ROI Observations items."""

    roi_number: int
    roi_name: str
    generation_algorithm: str | None
    display_colour: tuple[int, int, int] | None
    interpreted_type: str | None
    referenced_frame_of_reference_uid: str | None
    contours: tuple[Contour, ...] = field(default=())


def read_rtss(path: str | Path) -> list[Roi]:
    """Every ROI of the RT Structure Set file at `path`, in ROI Number order."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), force=True)
    except Exception as exc:  # pydicom raises many kinds on a damaged file
        raise CaseExcluded(f"the RT Structure Set could not be read ({exc})") from exc
    if str(getattr(ds, "Modality", "")) != "RTSTRUCT" and "StructureSetROISequence" not in ds:
        raise CaseExcluded("the RT Structure Set file is not an RTSTRUCT")
    return parse_rois(ds)


def parse_rois(ds: Any) -> list[Roi]:
    """ROIs of an RTSS pydicom Dataset. A ROI without a ROI Contour item gets no contours."""
    contour_items = {}
    for item in ds.get("ROIContourSequence", []) or []:
        number = _int_or_none(item.get("ReferencedROINumber"))
        if number is not None:
            contour_items[number] = item
    observations = {}
    for item in ds.get("RTROIObservationsSequence", []) or []:
        number = _int_or_none(item.get("ReferencedROINumber"))
        if number is not None:
            observations[number] = item

    rois = []
    for item in ds.get("StructureSetROISequence", []) or []:
        number = _int_or_none(item.get("ROINumber"))
        if number is None:
            continue
        contour_item = contour_items.get(number)
        colour = None
        contours: tuple[Contour, ...] = ()
        if contour_item is not None:
            raw_colour = contour_item.get("ROIDisplayColor")
            if raw_colour is not None and len(raw_colour) == 3:
                colour = tuple(int(c) for c in raw_colour)
            contours = tuple(
                _parse_contour(index, c) for index, c in enumerate(contour_item.get("ContourSequence", []) or [])
            )
        observation = observations.get(number)
        interpreted = observation.get("RTROIInterpretedType") if observation is not None else None
        rois.append(
            Roi(
                roi_number=number,
                roi_name=str(item.get("ROIName", "") or "").strip(),
                generation_algorithm=_str_or_none(item.get("ROIGenerationAlgorithm")),
                display_colour=colour,  # type: ignore[arg-type]
                interpreted_type=_str_or_none(interpreted),
                referenced_frame_of_reference_uid=_str_or_none(item.get("ReferencedFrameOfReferenceUID")),
                contours=contours,
            )
        )
    return sorted(rois, key=lambda r: r.roi_number)


def _parse_contour(index: int, item: Any) -> Contour:
    points = _contour_points(item)
    uid = None
    for image in item.get("ContourImageSequence", []) or []:
        uid = _str_or_none(image.get("ReferencedSOPInstanceUID"))
        if uid:
            break
    return Contour(
        index=index,
        geometric_type=str(item.get("ContourGeometricType", "") or "").strip().upper(),
        points_lps_mm=points,
        referenced_sop_instance_uid=uid,
    )


def _contour_points(item: Any) -> np.ndarray:
    """Contour Data as (n, 3) float64. Parses the raw DS bytes when pydicom has not yet
    converted them: exact (correctly rounded) and ~20x faster than DSfloat objects."""
    tag = 0x30060050
    if tag not in item:
        return np.zeros((0, 3))
    element = item.get_item(tag)
    value = element.value
    if isinstance(value, bytes | bytearray):
        text = value.decode("ascii", errors="replace").strip(" \x00")
        values = np.array(text.split("\\"), dtype=np.float64) if text else np.zeros(0)
    elif value is None:
        values = np.zeros(0)
    else:
        values = np.asarray([float(v) for v in (value if isinstance(value, list | tuple) else list(value))], dtype=np.float64)
    usable = (values.size // 3) * 3
    return values[:usable].reshape(-1, 3)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# ---------------------------------------------------------------------------------------
# 2. Target grid
# ---------------------------------------------------------------------------------------


@dataclass
class SliceGrid:
    """A voxel grid of planes. `slice_positions_mm[k]` is the real position of plane k along
    the unit normal (i step x j step), e.g. from Image Position (Patient); when not given it
    follows from `lps_from_ijk`. Plane k's voxel (0, 0) lies on the line origin + t * k_step
    (so gantry-tilted, sheared stacks keep their shear)."""

    lps_from_ijk: np.ndarray
    shape: tuple[int, int, int]
    slice_sop_instance_uids: Sequence[str | None] | None = None
    slice_positions_mm: Sequence[float] | None = None

    def __post_init__(self) -> None:
        self.lps_from_ijk = np.asarray(self.lps_from_ijk, dtype=np.float64)
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        m = self.lps_from_ijk[:3, :3]
        normal = np.cross(m[:, 0], m[:, 1])
        self.normal_lps = normal / np.linalg.norm(normal)
        origin = self.lps_from_ijk[:3, 3]
        k_step = m[:, 2]
        self._k_step_along_normal = float(self.normal_lps @ k_step)
        if abs(self._k_step_along_normal) < 1e-9:
            raise ValueError("the k step of lps_from_ijk lies in the slice plane")
        affine_positions = self.normal_lps @ origin + self._k_step_along_normal * np.arange(self.shape[2])
        positions = affine_positions
        if self.slice_positions_mm is not None and len(self.slice_positions_mm) == self.shape[2]:
            positions = np.asarray(self.slice_positions_mm, dtype=np.float64)
        self.positions_mm = positions
        self._plane_origins = origin + np.outer((positions - positions[0]) / self._k_step_along_normal, k_step)
        # In-plane solve: p - origin_k = i * i_step + j * j_step + d * normal.
        self._ijd_from_offset = np.linalg.inv(np.column_stack([m[:, 0], m[:, 1], self.normal_lps]))
        order = np.argsort(positions)
        self._sorted_positions = positions[order]
        self._sorted_k = order
        self.uid_to_k: dict[str, int] = {}
        if self.slice_sop_instance_uids is not None and len(self.slice_sop_instance_uids) == self.shape[2]:
            self.uid_to_k = {str(u): k for k, u in enumerate(self.slice_sop_instance_uids) if u}

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.lps_from_ijk[:3, :3])))

    def local_spacing_mm(self, k: int) -> float:
        """Centre-to-centre spacing at plane k: mean of the gaps to its neighbours."""
        positions = self.positions_mm
        if len(positions) < 2:
            return abs(self._k_step_along_normal)
        gaps = []
        if k > 0:
            gaps.append(abs(positions[k] - positions[k - 1]))
        if k < len(positions) - 1:
            gaps.append(abs(positions[k + 1] - positions[k]))
        return float(np.mean(gaps))

    def lps_from_voxels(self, ijk: np.ndarray) -> np.ndarray:
        """LPS mm of voxel centres (n, 3) integer (i, j, k), honouring real plane positions."""
        ijk = np.asarray(ijk)
        m = self.lps_from_ijk[:3, :3]
        return self._plane_origins[ijk[:, 2]] + ijk[:, 0:1] * m[:, 0] + ijk[:, 1:2] * m[:, 1]

    def in_plane(self, points_lps: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (i, j) of points projected along the normal onto plane k, and their
        signed distances (mm) from that plane."""
        ijd = (points_lps - self._plane_origins[k]) @ self._ijd_from_offset.T
        return ijd[:, :2], ijd[:, 2]

    def nearest_plane(self, position_mm: float) -> tuple[int, float, float]:
        """Plane k nearest a position along the normal, signed distance to it, and the
        local gap on that side (the gap to the neighbouring plane the point lies towards;
        at the ends of the stack the only neighbouring gap)."""
        sp = self._sorted_positions
        idx = int(np.clip(np.searchsorted(sp, position_mm), 0, len(sp) - 1))
        candidates = [c for c in (idx - 1, idx) if 0 <= c < len(sp)]
        best = min(candidates, key=lambda c: abs(sp[c] - position_mm))
        distance = float(position_mm - sp[best])
        if len(sp) == 1:
            gap = abs(self._k_step_along_normal)
        elif distance >= 0:
            gap = sp[best + 1] - sp[best] if best + 1 < len(sp) else sp[best] - sp[best - 1]
        else:
            gap = sp[best] - sp[best - 1] if best > 0 else sp[1] - sp[0]
        return int(self._sorted_k[best]), distance, float(gap)


# ---------------------------------------------------------------------------------------
# 3. Contour placement
# ---------------------------------------------------------------------------------------


@dataclass
class PlacedContour:
    """Where a contour went and why. `polygon_ij` is (n, 2) continuous (i, j) on plane k."""

    roi_number: int
    contour_index: int
    n_points: int
    geometric_type: str
    referenced_sop_instance_uid: str | None
    outcome: str
    reason: str | None = None
    slice_k: int | None = None
    slice_method: str | None = None  # "sop_uid" | "position"
    distance_to_slice_mm: float | None = None  # mean signed distance of the points to plane k
    max_off_plane_mm: float | None = None  # max |distance| of a point from plane k
    max_nonplanarity_mm: float | None = None  # max distance of a point from its best-fit plane
    area_mm2: float | None = None  # polygon area in the slice plane (always positive)
    clipped_at_fov: bool = False
    polygon_ij: np.ndarray | None = None

    @property
    def is_used(self) -> bool:
        return self.outcome in ("used", "hole")


def place_contour(roi_number: int, contour: Contour, grid: SliceGrid) -> PlacedContour:
    """Assign a contour to a plane of `grid` or say why it cannot be used."""
    placed = PlacedContour(
        roi_number=roi_number,
        contour_index=contour.index,
        n_points=contour.n_points,
        geometric_type=contour.geometric_type,
        referenced_sop_instance_uid=contour.referenced_sop_instance_uid,
        outcome="used",
    )
    if contour.geometric_type != "CLOSED_PLANAR":
        placed.outcome, placed.reason = "unusable_type", f"geometric type {contour.geometric_type or 'missing'} is not CLOSED_PLANAR"
        return placed
    points = contour.points_lps_mm
    if len(points) < 3 or not np.all(np.isfinite(points)):
        placed.outcome, placed.reason = "degenerate", "fewer than 3 points"
        return placed
    placed.area_mm2 = polygon_area_mm2(points, grid.normal_lps)
    if placed.area_mm2 < 1e-9:
        placed.outcome, placed.reason = "degenerate", "the polygon has no area in the slice plane"
        return placed
    placed.max_nonplanarity_mm = _nonplanarity_mm(points)

    along_normal = points @ grid.normal_lps
    centre = float(along_normal.mean())
    k, distance, gap = grid.nearest_plane(centre)
    method = "position"
    uid = contour.referenced_sop_instance_uid
    if uid is not None and uid in grid.uid_to_k:
        k_uid = grid.uid_to_k[uid]
        distance_uid = centre - float(grid.positions_mm[k_uid])
        if abs(distance_uid) < 0.5 * grid.local_spacing_mm(k_uid):
            k, distance, method = k_uid, distance_uid, "sop_uid"
        else:
            placed.reason = (
                f"Referenced SOP Instance UID names slice {k_uid}, {distance_uid:.2f} mm away; placed by position"
            )
    placed.slice_method = method
    placed.slice_k = k
    placed.distance_to_slice_mm = distance
    placed.max_off_plane_mm = float(np.abs(along_normal - grid.positions_mm[k]).max())

    if method == "position" and abs(distance) >= 0.5 * gap - HALF_SPACING_TIE_MM:
        first, last = grid._sorted_positions[0], grid._sorted_positions[-1]
        beyond_stack = centre < first or centre > last
        placed.outcome = "outside_fov" if beyond_stack else "off_plane"
        placed.reason = (
            f"{abs(distance):.2f} mm from the nearest slice (k={k}); more than half the local spacing "
            f"({gap:.2f} mm)" + (", beyond the ends of the stack" if beyond_stack else "")
        )
        placed.slice_k = None
        return placed

    polygon_ij, _ = grid.in_plane(points, k)
    ni, nj = grid.shape[0], grid.shape[1]
    lo, hi = polygon_ij.min(axis=0), polygon_ij.max(axis=0)
    if hi[0] < -0.5 or hi[1] < -0.5 or lo[0] > ni - 0.5 or lo[1] > nj - 0.5:
        placed.outcome, placed.reason = "outside_fov", "the polygon lies outside the image in its slice"
        placed.slice_k = None
        return placed
    placed.clipped_at_fov = bool(lo[0] < -0.5 or lo[1] < -0.5 or hi[0] > ni - 0.5 or hi[1] > nj - 0.5)
    placed.polygon_ij = polygon_ij
    return placed


def polygon_area_mm2(points_lps: np.ndarray, normal_lps: np.ndarray) -> float:
    """Area of a planar polygon projected on the plane with unit normal `normal_lps`
    (shoelace in 3D: half the normal component of the summed cross products)."""
    p = points_lps - points_lps.mean(axis=0)
    cross = np.cross(p, np.roll(p, -1, axis=0)).sum(axis=0)
    return float(abs(cross @ normal_lps) / 2.0)


def _nonplanarity_mm(points: np.ndarray) -> float:
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return float(np.abs(centred @ vt[-1]).max())


# ---------------------------------------------------------------------------------------
# 4. The inclusion rule
# ---------------------------------------------------------------------------------------


def even_odd_fill(polygons_ij: Sequence[np.ndarray], shape_ij: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Voxel centres of one plane inside `polygons_ij` by the even-odd rule with half-open
    edges (see `RASTERIZATION_RULE`). Returns a boolean (n_i, n_j) block over the polygons'
    bounding box, clipped to the grid, and the (i0, j0) of its first element.

    Vectorised over edges x rows: each crossing of an edge with a row j at x = i_cross
    toggles every centre i < i_cross; a difference array turns the toggles into counts.
    The i < i_cross decision is made with the exact orientation test, not the rounded
    i_cross, so a centre exactly on an edge is decided by the half-open rule."""
    polygons = [np.asarray(p, dtype=np.float64) for p in polygons_ij if len(p) >= 3]
    if not polygons:
        return np.zeros((0, 0), dtype=bool), (0, 0)
    allpts = np.concatenate(polygons)
    i0 = max(int(np.ceil(allpts[:, 0].min())), 0)
    i1 = min(int(np.floor(allpts[:, 0].max())), shape_ij[0] - 1)
    j0 = max(int(np.ceil(allpts[:, 1].min())), 0)
    j1 = min(int(np.floor(allpts[:, 1].max())), shape_ij[1] - 1)
    if i1 < i0 or j1 < j0:
        return np.zeros((0, 0), dtype=bool), (0, 0)
    width, height = i1 - i0 + 1, j1 - j0 + 1

    start = np.concatenate(polygons)
    end = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    x0, y0, x1, y1 = start[:, 0], start[:, 1], end[:, 0], end[:, 1]
    rows = np.arange(j0, j1 + 1, dtype=np.float64)
    crosses = (y0[None, :] > rows[:, None]) != (y1[None, :] > rows[:, None])  # (rows, edges)
    r, e = np.nonzero(crosses)
    if r.size == 0:
        return np.zeros((width, height), dtype=bool), (i0, j0)
    y = rows[r]
    ex0, ey0, ex1, ey1 = x0[e], y0[e], x1[e], y1[e]
    x_cross = ex0 + (y - ey0) * (ex1 - ex0) / (ey1 - ey0)
    # t = number of integer columns c with c < x_cross, as ceil(x_cross), corrected exactly.
    t = np.ceil(x_cross)
    t = np.where(np.isfinite(t), t, 0.0)
    t -= ~_left_of_crossing(t - 1, y, ex0, ey0, ex1, ey1)  # c = t-1 must be left of the crossing
    t += _left_of_crossing(t, y, ex0, ey0, ex1, ey1)  # c = t must not be
    toggled = np.clip(t - i0, 0, width).astype(np.int64)  # columns i0 .. i0+toggled-1 toggle
    counts = np.bincount(r * (width + 1) + toggled, minlength=height * (width + 1)).reshape(height, width + 1)
    # Column q is toggled by every crossing with toggled > q: a suffix sum from q + 1.
    suffix = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    inside_rows_cols = (suffix[:, 1:] % 2).astype(bool)  # (rows j, columns i)
    return inside_rows_cols.T, (i0, j0)


def _left_of_crossing(c: np.ndarray, y: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
    """c < x where the edge crosses row y, by the sign of a cross product (exact for
    coordinates with few significant bits, robust otherwise)."""
    orient = (c - x0) * (y1 - y0) - (y - y0) * (x1 - x0)
    return np.where(y1 > y0, orient < 0, orient > 0)


def points_in_polygon(points_ij: np.ndarray, polygon_ij: np.ndarray) -> np.ndarray:
    """Even-odd membership of arbitrary points (n, 2) in one polygon, same half-open rule."""
    px, py = points_ij[:, 0:1], points_ij[:, 1:2]
    x0, y0 = polygon_ij[:, 0][None, :], polygon_ij[:, 1][None, :]
    x1, y1 = np.roll(polygon_ij[:, 0], -1)[None, :], np.roll(polygon_ij[:, 1], -1)[None, :]
    crosses = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = _left_of_crossing(px, py, x0, y0, x1, y1)
    return (np.count_nonzero(crosses & left, axis=1) % 2).astype(bool)


# ---------------------------------------------------------------------------------------
# 5. Per-ROI rasters, volumes, label map and head mask
# ---------------------------------------------------------------------------------------


@dataclass
class RoiRaster:
    """A ROI's voxels as per-slice boolean blocks `(k, i0, j0, block[i, j])`, and how each
    contour was placed."""

    roi: Roi
    blocks: list[tuple[int, int, int, np.ndarray]]
    contours: list[PlacedContour]
    contour_volume_mm3: float

    @property
    def n_slices(self) -> int:
        return len({c.slice_k for c in self.contours if c.is_used})

    @property
    def voxel_count(self) -> int:
        return int(sum(np.count_nonzero(block) for *_, block in self.blocks))

    @cached_property
    def voxels_ijk(self) -> np.ndarray:
        """(n, 3) int64 (i, j, k) of the voxels inside."""
        parts = []
        for k, i0, j0, block in self.blocks:
            ii, jj = np.nonzero(block)
            parts.append(np.column_stack([ii + i0, jj + j0, np.full(ii.size, k)]))
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 3), dtype=np.int64)

    def paint(self, volume: np.ndarray, value: Any) -> None:
        """volume[voxels inside] = value."""
        for k, i0, j0, block in self.blocks:
            volume[i0 : i0 + block.shape[0], j0 : j0 + block.shape[1], k][block] = value


def rasterize_roi(roi: Roi, grid: SliceGrid) -> RoiRaster:
    """Place every contour, mark holes by even-odd nesting and fill each plane."""
    placed = [place_contour(roi.roi_number, c, grid) for c in roi.contours]
    by_slice: dict[int, list[PlacedContour]] = {}
    for p in placed:
        if p.is_used:
            by_slice.setdefault(int(p.slice_k), []).append(p)  # type: ignore[arg-type]
    blocks = []
    volume = 0.0
    for k, on_slice in sorted(by_slice.items()):
        _mark_holes(on_slice)
        signed_area = sum(p.area_mm2 * (-1.0 if p.outcome == "hole" else 1.0) for p in on_slice)  # type: ignore[operator]
        volume += signed_area * grid.local_spacing_mm(k)
        inside, (i0, j0) = even_odd_fill([p.polygon_ij for p in on_slice], grid.shape[:2])  # type: ignore[misc]
        if inside.any():
            blocks.append((k, i0, j0, inside))
    return RoiRaster(roi=roi, blocks=blocks, contours=placed, contour_volume_mm3=float(volume))


def _mark_holes(on_slice: list[PlacedContour]) -> None:
    """A contour inside an odd number of the ROI's other contours on its slice is a hole."""
    if len(on_slice) < 2:
        return
    for a in on_slice:
        probe = a.polygon_ij[:1]  # type: ignore[index]
        depth = sum(bool(points_in_polygon(probe, b.polygon_ij)[0]) for b in on_slice if b is not a)  # type: ignore[arg-type]
        a.outcome = "hole" if depth % 2 else "used"


def build_label_map(lesions: Sequence[tuple[int, RoiRaster]], shape: tuple[int, int, int]) -> tuple[np.ndarray, dict[int, int]]:
    """uint16 label map from (label, raster) pairs by `OVERLAP_RULE`; returns the map and,
    per label, the number of its voxels also claimed by another lesion."""
    label_map = np.zeros(shape, dtype=np.uint16)
    claims = np.zeros(shape, dtype=np.uint8)
    for _, raster in lesions:
        for k, i0, j0, block in raster.blocks:
            claims[i0 : i0 + block.shape[0], j0 : j0 + block.shape[1], k] += block
    # Paint larger first so the smaller lesion wins.
    order = sorted(lesions, key=lambda lr: (-lr[1].voxel_count, -lr[1].contour_volume_mm3, -lr[0]))
    for label, raster in order:
        raster.paint(label_map, label)
    overlaps = {}
    for label, raster in lesions:
        overlaps[label] = int(sum(
            np.count_nonzero(claims[i0 : i0 + b.shape[0], j0 : j0 + b.shape[1], k][b] > 1) for k, i0, j0, b in raster.blocks
        ))  # fmt: skip
    return label_map, overlaps


def head_mask(rasters: Iterable[RoiRaster], grid: SliceGrid) -> np.ndarray:
    """uint8 mask: union of the given (skull) ROIs' rasters with every hole filled per
    slice (an inner skull outline makes an even-odd ring; filling restores the head).
    Holes are background components, in-plane 4-connected, that do not touch the slice
    border: one labelling pass over the volume instead of iterative dilation."""
    from scipy.ndimage import label

    mask = np.zeros(grid.shape, dtype=bool)
    for raster in rasters:
        raster.paint(mask, True)
    occupied = [np.nonzero(mask.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1))]
    if occupied[2].size:
        # Crop to the mask's box plus a one-voxel background margin: the margin is one
        # connected background component, so "touches the crop border" = "outside".
        (i0, i1), (j0, j1), (k0, k1) = ((max(int(o[0]) - 1, 0), int(o[-1]) + 2) for o in occupied)
        box = mask[i0:i1, j0:j1, k0:k1]
        background = ~box
        in_plane = np.zeros((3, 3, 3), dtype=bool)
        in_plane[:, 1, 1] = in_plane[1, :, 1] = True
        components, n = label(background, structure=in_plane)
        outside = np.zeros(n + 1, dtype=bool)
        for face in (components[0], components[-1], components[:, 0], components[:, -1]):
            outside[face.ravel()] = True
        box |= background & ~outside[components]
    return mask.astype(np.uint8)


# ---------------------------------------------------------------------------------------
# 6. The stage
# ---------------------------------------------------------------------------------------

DEFAULT_OPTIONS: dict[str, Any] = {
    "non_lesion_prefix": "*",
    "head_structure_pattern": "SKULL",
    # Raw-dataset BIDS URI prefix for Sources/SpatialReference; the derivative dataset's
    # dataset_description.json must link "raw" to the raw dataset (DatasetLinks).
    "bids_uri_prefix": "bids:raw:",
}


@dataclass
class CaseRasters:
    """Everything the stage computes for one case, before writing."""

    grid: SliceGrid
    rasters: list[RoiRaster]
    labels: dict[int, int]  # roi_number -> label
    label_map: np.ndarray
    overlaps: dict[int, int]  # label -> overlapping voxels
    head: np.ndarray | None
    flags: list[str]


def rasterize_rois(rois: Sequence[Roi], grid: SliceGrid, options: dict | None = None) -> CaseRasters:
    """Rasterize all ROIs of a case onto `grid`: labels, label map, head mask, flags."""
    opts = {**DEFAULT_OPTIONS, **(options or {})}
    prefix = opts["non_lesion_prefix"]
    rasters = [rasterize_roi(roi, grid) for roi in rois]
    lesion_rasters = [r for r in rasters if not r.roi.roi_name.startswith(prefix)]
    labelled = [r for r in lesion_rasters if any(c.is_used for c in r.contours)]
    labels = {r.roi.roi_number: rank for rank, r in enumerate(sorted(labelled, key=lambda r: r.roi.roi_number), start=1)}
    label_map, overlaps = build_label_map([(labels[r.roi.roi_number], r) for r in labelled], grid.shape)

    pattern = str(opts["head_structure_pattern"]).upper()
    skulls = [r for r in rasters if r.roi.roi_name.startswith(prefix) and pattern in r.roi.roi_name.upper()]
    head = head_mask(skulls, grid) if skulls else None

    flags = []
    if not lesion_rasters:
        flags.append("no_lesion_rois")
    if any(v > 0 for v in overlaps.values()):
        flags.append("lesions_overlap")
    if head is None:
        flags.append("no_head_structure")
    if len(lesion_rasters) > len(labelled):
        flags.append("lesion_roi_without_usable_contours")
    if any(r.voxel_count == 0 for r in labelled):
        flags.append("lesion_without_voxels")
    all_contours = [c for r in rasters for c in r.contours]
    for outcome in ("off_plane", "outside_fov", "degenerate", "unusable_type"):
        if any(c.outcome == outcome for c in all_contours):
            flags.append(f"contours_{outcome}")
    if any(c.is_used and (c.max_off_plane_mm or 0) > OFF_PLANE_REPORT_MM for c in all_contours):
        flags.append("contours_not_on_slice_plane")
    if any(c.is_used and c.slice_method == "position" and c.referenced_sop_instance_uid for c in all_contours):
        flags.append("contour_references_unresolved")
    if any(c.clipped_at_fov for c in all_contours):
        flags.append("contours_clipped_at_fov")
    return CaseRasters(grid, rasters, labels, label_map, overlaps, head, flags)


def roi_table(case: CaseRasters, options: dict | None = None) -> list[dict[str, Any]]:
    """One row per ROI (see docs/rasterization.md for the columns)."""
    opts = {**DEFAULT_OPTIONS, **(options or {})}
    grid = case.grid
    rows = []
    for raster in case.rasters:
        roi = raster.roi
        label = case.labels.get(roi.roi_number)
        is_lesion = not roi.roi_name.startswith(opts["non_lesion_prefix"])
        if label is not None:
            voxels = raster.voxels_ijk
            voxels = voxels[case.label_map[voxels[:, 0], voxels[:, 1], voxels[:, 2]] == label]
        else:
            voxels = raster.voxels_ijk
        centroid = grid.lps_from_voxels(voxels).mean(axis=0) if len(voxels) else np.full(3, np.nan)
        used = [c for c in raster.contours if c.is_used]
        status, reason = "ok", None
        if not roi.contours:
            status, reason = "empty", "ROI has no contours"
        elif not used:
            status = "unusable"
            reason = "no usable contour (" + ", ".join(sorted({c.outcome for c in raster.contours})) + ")"
        elif len(voxels) == 0:
            status, reason = "ok", "contours enclose no voxel centre"
        rows.append(
            {
                "roi_number": roi.roi_number,
                "roi_name": roi.roi_name,
                "label": label,
                "is_lesion": is_lesion,
                "generation_algorithm": roi.generation_algorithm,
                "interpreted_type": roi.interpreted_type,
                "colour": _hex_colour(roi.display_colour),
                "n_contours": len(roi.contours),
                "n_contours_used": len(used),
                "n_slices": raster.n_slices,
                "voxel_count": int(len(voxels)),
                "raster_voxel_count": raster.voxel_count,
                "overlap_voxel_count": case.overlaps.get(label, 0) if label is not None else 0,
                "volume_mm3": float(len(voxels) * grid.voxel_volume_mm3),
                "contour_volume_mm3": raster.contour_volume_mm3,
                "centroid_lps_x_mm": float(centroid[0]),
                "centroid_lps_y_mm": float(centroid[1]),
                "centroid_lps_z_mm": float(centroid[2]),
                "max_off_plane_mm": max((c.max_off_plane_mm or 0.0 for c in used), default=None),
                "status": status,
                "reason": reason,
            }
        )
    return rows


def contour_table(case: CaseRasters) -> list[dict[str, Any]]:
    """One row per contour of every ROI."""
    rows = []
    for raster in case.rasters:
        for c in raster.contours:
            rows.append(
                {
                    "roi_number": c.roi_number,
                    "roi_name": raster.roi.roi_name,
                    "contour_index": c.contour_index,
                    "n_points": c.n_points,
                    "geometric_type": c.geometric_type,
                    "referenced_sop_instance_uid": c.referenced_sop_instance_uid,
                    "slice_k": c.slice_k,
                    "slice_method": c.slice_method,
                    "distance_to_slice_mm": c.distance_to_slice_mm,
                    "max_off_plane_mm": c.max_off_plane_mm,
                    "max_nonplanarity_mm": c.max_nonplanarity_mm,
                    "area_mm2": c.area_mm2,
                    "clipped_at_fov": c.clipped_at_fov,
                    "outcome": c.outcome,
                    "reason": c.reason,
                }
            )
    return rows


ROI_COLUMNS = {
    "roi_number": "int64", "roi_name": "string", "label": "Int64", "is_lesion": "bool",
    "generation_algorithm": "string", "interpreted_type": "string", "colour": "string",
    "n_contours": "int64", "n_contours_used": "int64", "n_slices": "int64", "voxel_count": "int64",
    "raster_voxel_count": "int64", "overlap_voxel_count": "int64", "volume_mm3": "float64",
    "contour_volume_mm3": "float64", "centroid_lps_x_mm": "float64", "centroid_lps_y_mm": "float64",
    "centroid_lps_z_mm": "float64", "max_off_plane_mm": "float64", "status": "string", "reason": "string",
}  # fmt: skip
CONTOUR_COLUMNS = {
    "roi_number": "int64", "roi_name": "string", "contour_index": "int64", "n_points": "int64",
    "geometric_type": "string", "referenced_sop_instance_uid": "string", "slice_k": "Int64",
    "slice_method": "string", "distance_to_slice_mm": "float64", "max_off_plane_mm": "float64",
    "max_nonplanarity_mm": "float64", "area_mm2": "float64", "clipped_at_fov": "bool",
    "outcome": "string", "reason": "string",
}  # fmt: skip


def lesion_derivative_paths(subject: str, session: str) -> dict[str, str]:
    """Derivative paths of one case relative to output_dir (from `metsprep.bids.bids_paths`)."""
    from metsprep.bids import bids_paths

    paths = bids_paths(subject, session)
    return {
        "lesion_labels_nifti": paths.lesion_labels,
        "lesion_labels_tsv": paths.lesion_labels_tsv,
        "lesion_mask_nifti": paths.lesion_mask,
        "head_mask_nifti": paths.head_mask,
    }


def rasterize_case(
    plan_json: Path,
    bids_json: Path,
    output_dir: Path,
    result_json: Path,
    rois_parquet: Path,
    contours_parquet: Path,
    options: dict,
) -> None:
    """The rtss stage for one case. Always writes `result_json` and both tables; a case
    that cannot be processed gets `status: excluded` with a reason (and empty tables)."""
    plan = json.loads(Path(plan_json).read_text())
    bids = json.loads(Path(bids_json).read_text())
    output_dir = Path(output_dir)
    opts = {**DEFAULT_OPTIONS, **(options or {})}
    result: dict[str, Any] = {
        "case_id": plan.get("case_id"), "status": "ok", "status_reason": None, "flags": [],
        "rasterization_rule": RASTERIZATION_RULE, "label_rule": LABEL_RULE, "overlap_rule": OVERLAP_RULE,
        "labels": [], "n_lesions": 0, "outputs": {},
    }  # fmt: skip
    rois_rows: list[dict[str, Any]] = []
    contour_rows: list[dict[str, Any]] = []
    try:
        if bids.get("status", "ok") != "ok":
            raise CaseExcluded(bids.get("status_reason") or "excluded by the bids stage")
        rtss_file = Path(plan["input_dir"]) / plan["rtss"]["file"]
        t1c = (bids.get("images") or {}).get("T1C")
        if not t1c or not t1c.get("nifti"):
            raise CaseExcluded("the case has no exported T1C image to rasterize the structures onto")
        rois = read_rtss(rtss_file)
        import nibabel as nib

        t1c_img = nib.load(str(output_dir / t1c["nifti"]))
        grid = SliceGrid(
            RAS_FROM_LPS @ t1c_img.affine,
            t1c_img.shape[:3],
            slice_sop_instance_uids=t1c.get("slice_sop_instance_uids"),
            slice_positions_mm=_scalar_positions(t1c.get("slice_positions_mm") or bids.get("slice_positions_mm"), t1c_img.affine),
        )
        case = rasterize_rois(rois, grid, opts)
        rois_rows, contour_rows = roi_table(case, opts), contour_table(case)
        paths = lesion_derivative_paths(plan["subject"], plan["session"])
        _write_derivatives(case, rois_rows, t1c_img, t1c["nifti"], paths, output_dir, opts)
        result["flags"] = case.flags
        result["labels"] = [
            {"label": r["label"], "roi_number": r["roi_number"], "roi_name": r["roi_name"]}
            for r in rois_rows if r["label"] is not None
        ]  # fmt: skip
        result["n_lesions"] = len(result["labels"])
        result["outputs"] = {k: v for k, v in paths.items() if k != "head_mask_nifti" or case.head is not None}
        result["outputs"].update({k + "_sidecar": _sidecar_path(v) for k, v in result["outputs"].items() if v.endswith(".nii.gz")})
        result["head_mask"] = case.head is not None
    except CaseExcluded as exc:
        result.update(status="excluded", status_reason=exc.reason)
        log.warning("%s excluded: %s", plan.get("case_id"), exc.reason)
    _write_table(rois_rows, ROI_COLUMNS, Path(rois_parquet))
    _write_table(contour_rows, CONTOUR_COLUMNS, Path(contours_parquet))
    Path(result_json).parent.mkdir(parents=True, exist_ok=True)
    Path(result_json).write_text(json.dumps(result, indent=2) + "\n")


def _scalar_positions(positions: Any, ras_from_ijk: np.ndarray) -> list[float] | None:
    """Slice positions along the normal; accepts scalars or Image Position (Patient) triplets."""
    if not positions:
        return None
    arr = np.asarray([p if p is not None else np.nan for p in positions], dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 3:
        m = (RAS_FROM_LPS @ ras_from_ijk)[:3, :3]
        normal = np.cross(m[:, 0], m[:, 1])
        arr = arr @ (normal / np.linalg.norm(normal))
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        return None
    return arr.tolist()


def _write_derivatives(
    case: CaseRasters, rois_rows: list[dict[str, Any]], t1c_img: Any, t1c_nifti: str,
    paths: dict[str, str], output_dir: Path, opts: dict,
) -> None:  # fmt: skip
    source = opts["bids_uri_prefix"] + _bids_relative(t1c_nifti)
    lesion_rows = [r for r in rois_rows if r["label"] is not None]
    manual = bool(lesion_rows) and all((r["generation_algorithm"] or "").upper() == "MANUAL" for r in lesion_rows)
    common = {"Sources": [source], "SpatialReference": source, "RasterizationRule": RASTERIZATION_RULE}
    _save_nifti(case.label_map, t1c_img, output_dir / paths["lesion_labels_nifti"], {
        **common, "Manual": manual, "Description": "Lesion label map from the RT Structure Set",
        "LabelRule": LABEL_RULE, "OverlapRule": OVERLAP_RULE,
    })  # fmt: skip
    mask = (case.label_map > 0).astype(np.uint8)
    _save_nifti(mask, t1c_img, output_dir / paths["lesion_mask_nifti"], {
        **common, "Type": "Lesion", "Manual": manual, "Description": "Union of all lesion ROIs",
    })  # fmt: skip
    if case.head is not None:
        skulls = [r for r in rois_rows if not r["is_lesion"] and opts["head_structure_pattern"].upper() in r["roi_name"].upper()]
        _save_nifti(case.head, t1c_img, output_dir / paths["head_mask_nifti"], {
            **common, "Type": "ROI", "Description": "Head: RTSS skull structure(s) " + ", ".join(r["roi_name"] for r in skulls)
            + " filled per slice", "Manual": all((r["generation_algorithm"] or "").upper() == "MANUAL" for r in skulls),
        })  # fmt: skip
    tsv = output_dir / paths["lesion_labels_tsv"]
    tsv.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tname\troi_number\troi_name\tcolor"]
    for r in lesion_rows:
        name = f"lesion{r['label']}"
        lines.append(f"{r['label']}\t{name}\t{r['roi_number']}\t{_tsv_cell(r['roi_name'])}\t{r['colour'] or 'n/a'}")
    tsv.write_text("\n".join(lines) + "\n")


def _save_nifti(data: np.ndarray, t1c_img: Any, path: Path, sidecar: dict[str, Any]) -> None:
    """NIfTI with the T1C's exact sform and qform (matrices and codes)."""
    import nibabel as nib

    header = t1c_img.header.copy()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, None, header)
    img.set_sform(t1c_img.header.get_sform(), code=int(t1c_img.header["sform_code"]))
    img.set_qform(t1c_img.header.get_qform(), code=int(t1c_img.header["qform_code"]))
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, float(data.max()) if data.size else 0
    img.header["descrip"] = b"metsprep rtss"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    Path(_sidecar_path(str(path))).write_text(json.dumps(sidecar, indent=2) + "\n")


def _sidecar_path(nifti_path: str) -> str:
    return nifti_path[: -len(".nii.gz")] + ".json" if nifti_path.endswith(".nii.gz") else nifti_path + ".json"


def _bids_relative(path: str) -> str:
    """Path inside the raw BIDS dataset from a path relative to output_dir."""
    parts = Path(path).as_posix().split("/")
    return "/".join(parts[1:]) if parts and parts[0] == "bids" else Path(path).as_posix()


def _tsv_cell(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ") or "n/a"


def _hex_colour(colour: tuple[int, int, int] | None) -> str | None:
    if colour is None:
        return None
    return "#" + "".join(f"{max(0, min(255, c)):02x}" for c in colour)


def _write_table(rows: list[dict[str, Any]], columns: dict[str, str], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns))
    frame = frame.astype(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
