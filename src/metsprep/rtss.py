"""RT Structure Set -> lesion label map, binary lesion mask, head mask and volumes.

Read top-down:

1. `read_rtss` / `parse_rois`: every ROI of an RTSS as `Roi` / `Contour` dataclasses, with
   the contour points in LPS mm as float64 parsed from the DS strings (never rounded;
   the raw strings of a ROI are parsed by one numpy call, no pydicom Dataset per contour).
2. `SliceGrid`: the target voxel grid (`lps_from_ijk`, shape, the real slice positions
   along the slice normal and the SOP Instance UID of each slice k).
3. `place_contours`: which slice k each contour belongs to (Referenced SOP Instance UID
   when it resolves and agrees with the geometry, otherwise the nearest real slice
   position along the normal), its distance to that plane, its planarity, its in-plane
   polygon in continuous voxel coordinates (i, j) and its area in mm2; or why it cannot
   be used. Vectorised over all contours of a ROI.
4. `even_odd_fill` / `even_odd_fill_planes`: the inclusion rule. A voxel is inside when its
   centre is inside the polygon(s) of its slice by the even-odd crossing-number rule over
   every contour of the ROI on that slice, with half-open edges (see `RASTERIZATION_RULE`);
   all planes of a ROI are filled at once.
5. `rasterize_roi`, `build_label_map`, `head_from_structures`: per-ROI voxel blocks and planimetric
   volumes, the label map with its overlap rule and the head mask (Fortran-ordered
   volumes, as NIfTI stores them, so writing them is a plain copy).
6. `rasterize_case`: the Snakemake stage (plan + bids.json in, BIDS derivatives + tables out).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from metsprep.atomic import write_json, write_nifti, write_text, write_with
from metsprep.contracts import SCHEMA_VERSION, BidsResult, CasePlan, LabelEntry, RtssOutputs, RtssResult, Status
from metsprep.errors import CaseExcluded
from metsprep.frames import Grid, slice_normal_lps, voxel_volume_mm3
from metsprep.layout import bids_paths, remove_stale, sidecar_path
from metsprep.settings import RtssSettings

log = logging.getLogger("metsprep.rtss")

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

CONTOUR_OUTCOMES = ("used", "hole", "off_plane", "outside_fov", "degenerate", "bad_data", "unusable_type")
#: Contours not used because of their own data (not because of where they lie): a lesion
#: that loses one is `partial`, and its row names each lost contour and why.
DATA_OUTCOMES = ("degenerate", "bad_data")


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
    data_problem: str | None = None  # what was wrong with its Contour Data, if anything

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
    try:
        if str(getattr(ds, "Modality", "")) != "RTSTRUCT" and "StructureSetROISequence" not in ds:
            raise CaseExcluded("the RT Structure Set file is not an RTSTRUCT")
        return parse_rois(ds)
    except CaseExcluded:
        raise
    except Exception as exc:  # pydicom parses lazily: a broken element stream surfaces here
        raise CaseExcluded(f"the RT Structure Set is damaged and cannot be parsed ({type(exc).__name__}: {exc})") from exc


# Tags of the ROI Contour Sequence, walked over raw elements (see `parse_rois`).
_ROI_CONTOUR_SEQUENCE = 0x30060039
_REFERENCED_ROI_NUMBER = 0x30060084
_ROI_DISPLAY_COLOR = 0x3006002A
_CONTOUR_SEQUENCE = 0x30060040
_CONTOUR_IMAGE_SEQUENCE = 0x30060016
_CONTOUR_GEOMETRIC_TYPE = 0x30060042
_CONTOUR_DATA = 0x30060050
_REFERENCED_SOP_INSTANCE_UID = 0x00081155


def parse_rois(ds: Any) -> list[Roi]:
    """ROIs of an RTSS pydicom Dataset. A ROI without a ROI Contour item gets no contours.

    The ROI Contour Sequence (nearly all of the file) is walked over pydicom's raw elements
    with `metsprep.scan`'s item splitter, without a `Dataset` per contour: its values are
    all of ASCII-only VRs (IS, CS, UI, DS). The small ROI-level sequences are read as
    pydicom Datasets, so ROI names decode with the file's character set."""
    from metsprep.dicom_items import sequence_items

    contour_items = {}
    wanted = [_REFERENCED_ROI_NUMBER, _ROI_DISPLAY_COLOR, _CONTOUR_SEQUENCE]
    for item in sequence_items(ds.get_item(_ROI_CONTOUR_SEQUENCE), wanted):
        number = _int_or_none(_ascii_value(item.get(_REFERENCED_ROI_NUMBER)))
        if number is not None:
            contour_items[number] = item
    observations = {}
    for item in ds.get("RTROIObservationsSequence", []) or []:
        number = _int_or_none(item.get("ReferencedROINumber"))
        if number is not None:
            observations[number] = item

    names_by_number: dict[int, list[str]] = {}
    for item in ds.get("StructureSetROISequence", []) or []:
        number = _int_or_none(item.get("ROINumber"))
        if number is not None:
            names_by_number.setdefault(number, []).append(str(item.get("ROIName", "") or "").strip())
    shared = {n: names for n, names in names_by_number.items() if len(names) > 1}
    if shared:
        # the ROI Contour items refer to structures by number only: whose contours are whose
        # cannot be told, and merging them would give two lesions one volume
        number, names = next(iter(sorted(shared.items())))
        raise CaseExcluded(
            f"ROI Number {number} is used by {len(names)} structures ({', '.join(repr(n) for n in names)}): "
            "their contours cannot be told apart"
        )
    rois = []
    for item in ds.get("StructureSetROISequence", []) or []:
        number = _int_or_none(item.get("ROINumber"))
        if number is None:
            continue
        contour_item = contour_items.get(number)
        colour = None
        contours: tuple[Contour, ...] = ()
        if contour_item is not None:
            colour = _display_colour(contour_item.get(_ROI_DISPLAY_COLOR))
            contours = _parse_contours(number, contour_item.get(_CONTOUR_SEQUENCE))
        observation = observations.get(number)
        interpreted = observation.get("RTROIInterpretedType") if observation is not None else None
        rois.append(
            Roi(
                roi_number=number,
                roi_name=str(item.get("ROIName", "") or "").strip(),
                generation_algorithm=_str_or_none(item.get("ROIGenerationAlgorithm")),
                display_colour=colour,
                interpreted_type=_str_or_none(interpreted),
                referenced_frame_of_reference_uid=_str_or_none(item.get("ReferencedFrameOfReferenceUID")),
                contours=contours,
            )
        )
    return sorted(rois, key=lambda r: r.roi_number)


def _parse_contours(roi_number: int, sequence: Any) -> tuple[Contour, ...]:
    from metsprep.dicom_items import sequence_items

    wanted = [_CONTOUR_IMAGE_SEQUENCE, _CONTOUR_GEOMETRIC_TYPE, _CONTOUR_DATA]
    items = sequence_items(sequence, wanted)
    points, problems = _contour_points([item.get(_CONTOUR_DATA) for item in items])
    contours = []
    for index, (item, item_points, problem) in enumerate(zip(items, points, problems)):
        uid = None
        for image in sequence_items(item.get(_CONTOUR_IMAGE_SEQUENCE), [_REFERENCED_SOP_INSTANCE_UID]):
            uid = _str_or_none(_ascii_value(image.get(_REFERENCED_SOP_INSTANCE_UID)))
            if uid:
                break
        kind = _ascii_value(item.get(_CONTOUR_GEOMETRIC_TYPE))
        contours.append(Contour(index, str(kind or "").strip().upper(), item_points, uid, problem))
    return tuple(contours)


def _contour_points(elements: Sequence[Any]) -> tuple[list[np.ndarray], list[str | None]]:
    """Contour Data of each contour as (n, 3) float64, exact (correctly rounded, never via
    pydicom's DSfloat objects), and what was wrong with it, per contour: a bad value costs
    its own contour only. The raw DS strings of all contours of a ROI are joined and parsed
    by one numpy call; where that fails, contour by contour. Already decoded values (a
    Dataset built in memory) are used as they are."""
    values: list[np.ndarray | None] = [None] * len(elements)
    problems: list[str | None] = [None] * len(elements)
    raw: dict[int, bytes] = {}
    for position, element in enumerate(elements):
        value = None if element is None else element.value
        if isinstance(value, bytes | bytearray):
            raw[position] = bytes(value).strip(b"\x00 ")
        elif value is None or isinstance(value, str) and not value.strip():
            values[position] = np.zeros(0)
        else:
            items = [value] if isinstance(value, str | int | float) else list(value)
            try:
                values[position] = np.asarray([float(v) for v in items], dtype=np.float64)
            except (TypeError, ValueError):
                values[position], problems[position] = np.zeros(0), "Contour Data has values that are not numbers"
    texts = [text for text in raw.values() if text]
    try:
        parsed = np.array(b"\\".join(texts).split(b"\\"), dtype=np.float64) if texts else np.zeros(0)
        counts = [text.count(b"\\") + 1 if text else 0 for text in raw.values()]
        if parsed.size != sum(counts):
            raise ValueError("value count")
        for position, chunk in zip(raw, np.split(parsed, np.cumsum(counts)[:-1])):
            values[position] = chunk
    except ValueError:  # empty values between separators, or not numbers: contour by contour
        for position, text in raw.items():
            try:
                values[position] = np.asarray([float(v) for v in text.split(b"\\") if v.strip()], dtype=np.float64)
            except ValueError:
                shown = next((v for v in text.split(b"\\") if not _is_number(v)), b"").decode("ascii", "replace")
                values[position] = np.zeros(0)
                problems[position] = f"Contour Data has a value that is not a number ({shown[:20]!r})"
    points = []
    for position, v in enumerate(values):
        assert v is not None
        usable = (v.size // 3) * 3
        if v.size != usable and problems[position] is None:
            problems[position] = f"Contour Data has {v.size} values, not a multiple of 3"
        if not np.all(np.isfinite(v)) and problems[position] is None:
            problems[position] = "Contour Data has non-finite values (NaN or infinity)"
        points.append(v[:usable].reshape(-1, 3))
    return points, problems


def _is_number(text: bytes) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _ascii_value(element: Any) -> Any:
    """Value of a raw or decoded element; raw bytes (of an ASCII-only VR) become a str."""
    if element is None:
        return None
    value = element.value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", errors="replace").strip("\x00 ")
    return value


def _display_colour(element: Any) -> tuple[int, int, int] | None:
    value = _ascii_value(element)
    if value is None:
        return None
    parts = value.split("\\") if isinstance(value, str) else list(value) if not isinstance(value, int) else [value]
    try:
        colour = tuple(int(c) for c in parts)
    except (TypeError, ValueError):
        return None
    return colour if len(colour) == 3 else None


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
        self.normal_lps = slice_normal_lps(self.lps_from_ijk)
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
        return voxel_volume_mm3(self.lps_from_ijk)

    def local_spacing_mm(self, k: int) -> float:
        """Centre-to-centre spacing at plane k: mean of the gaps to its neighbours."""
        return float(self.local_spacings_mm[k])

    @cached_property
    def local_spacings_mm(self) -> np.ndarray:
        """`local_spacing_mm` of every plane k."""
        positions = self.positions_mm
        if len(positions) < 2:
            return np.full(len(positions), abs(self._k_step_along_normal))
        gaps = np.abs(np.diff(positions))
        return np.concatenate([gaps[:1], (gaps[:-1] + gaps[1:]) / 2, gaps[-1:]])

    def lps_from_voxels(self, ijk: np.ndarray) -> np.ndarray:
        """LPS mm of voxel centres (n, 3) integer (i, j, k), honouring real plane positions."""
        ijk = np.asarray(ijk)
        m = self.lps_from_ijk[:3, :3]
        return self._plane_origins[ijk[:, 2]] + ijk[:, 0:1] * m[:, 0] + ijk[:, 1:2] * m[:, 1]

    def in_plane(self, points_lps: np.ndarray, k: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (i, j) of points projected along the normal onto plane k (one k, or
        one per point), and their signed distances (mm) from that plane."""
        ijd = (points_lps - self._plane_origins[k]) @ self._ijd_from_offset.T
        return ijd[:, :2], ijd[:, 2]

    def nearest_plane(self, position_mm: float) -> tuple[int, float, float]:
        """Plane k nearest a position along the normal, signed distance to it, and the
        local gap on that side (the gap to the neighbouring plane the point lies towards;
        at the ends of the stack the only neighbouring gap)."""
        k, distance, gap = self.nearest_planes(np.array([position_mm], dtype=np.float64))
        return int(k[0]), float(distance[0]), float(gap[0])

    def nearest_planes(self, positions_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`nearest_plane` of many positions at once: arrays k, signed distance, gap.
        Of two equally near planes the lower position wins."""
        sp, n = self._sorted_positions, len(self._sorted_positions)
        positions = np.asarray(positions_mm, dtype=np.float64)
        upper = np.clip(np.searchsorted(sp, positions), 0, n - 1)
        lower = np.maximum(upper - 1, 0)
        use_lower = (upper > 0) & (np.abs(sp[lower] - positions) <= np.abs(sp[upper] - positions))
        best = np.where(use_lower, lower, upper)
        distance = positions - sp[best]
        if n == 1:
            gap = np.full(positions.shape, abs(self._k_step_along_normal))
        else:
            above, below = np.minimum(best + 1, n - 1), np.maximum(best - 1, 0)
            gap_up = np.where(best + 1 < n, sp[above] - sp[best], sp[best] - sp[below])
            gap_down = np.where(best > 0, sp[best] - sp[below], sp[1] - sp[0])
            gap = np.where(distance >= 0, gap_up, gap_down)
        return self._sorted_k[best], distance, gap


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
    self_intersecting: bool = False  # the polygon crosses itself (filled by the even-odd rule)
    polygon_ij: np.ndarray | None = None

    @property
    def is_used(self) -> bool:
        return self.outcome in ("used", "hole")


def place_contour(roi_number: int, contour: Contour, grid: SliceGrid) -> PlacedContour:
    """Assign a contour to a plane of `grid` or say why it cannot be used."""
    return place_contours(roi_number, [contour], grid)[0]


def place_contours(roi_number: int, contours: Sequence[Contour], grid: SliceGrid) -> list[PlacedContour]:
    """`place_contour` for all contours of a ROI at once: the geometry (areas, planarity,
    nearest planes, in-plane polygons) is computed over the concatenated points, per
    contour by segment reductions; only the decisions are made contour by contour."""
    placed = [
        PlacedContour(
            roi_number=roi_number,
            contour_index=c.index,
            n_points=c.n_points,
            geometric_type=c.geometric_type,
            referenced_sop_instance_uid=c.referenced_sop_instance_uid,
            outcome="used",
        )
        for c in contours
    ]
    candidates, candidate_points = [], []
    for p, c in zip(placed, contours):
        if c.geometric_type != "CLOSED_PLANAR":
            p.outcome, p.reason = "unusable_type", f"geometric type {c.geometric_type or 'missing'} is not CLOSED_PLANAR"
        elif c.data_problem is not None and (c.n_points == 0 or not np.all(np.isfinite(c.points_lps_mm))):
            p.outcome, p.reason = "bad_data", c.data_problem
        elif c.n_points < 3:
            p.outcome, p.reason = "degenerate", f"{c.n_points} point(s): a polygon needs at least 3"
        else:
            candidates.append(p)
            candidate_points.append(c.points_lps_mm)
            continue
        if p.outcome in DATA_OUTCOMES and p.referenced_sop_instance_uid in grid.uid_to_k:
            p.slice_k = grid.uid_to_k[p.referenced_sop_instance_uid]  # where it was drawn, for the report
    if not candidates:
        return placed
    points = np.concatenate(candidate_points)
    segments = _Segments(np.array([p.n_points for p in candidates]))
    centred = points - segments.mean(points)[segments.of_point]
    # area: 3D shoelace projected on the slice normal
    cross_sums = segments.sum(np.cross(centred, centred[segments.next_point]))
    areas = np.abs(cross_sums @ grid.normal_lps) / 2.0
    # planarity: distance from the best-fit plane (normal = least eigenvector of the scatter)
    scatter = segments.sum((centred[:, :, None] * centred[:, None, :]).reshape(-1, 9)).reshape(-1, 3, 3)
    fit_normals = np.linalg.eigh(scatter)[1][:, :, 0]
    nonplanarity = segments.max(np.abs(np.einsum("ij,ij->i", centred, fit_normals[segments.of_point])))
    along_normal = points @ grid.normal_lps
    centres = segments.mean(along_normal)
    nearest_k, nearest_distance, gaps = grid.nearest_planes(centres)

    ks = nearest_k.copy()
    for n, p in enumerate(candidates):
        p.area_mm2 = float(areas[n])
        if p.area_mm2 < 1e-9:
            p.outcome, p.reason = "degenerate", "the polygon has no area in the slice plane"
            continue
        p.max_nonplanarity_mm = float(nonplanarity[n])
        centre, k, distance, method = float(centres[n]), int(nearest_k[n]), float(nearest_distance[n]), "position"
        uid = p.referenced_sop_instance_uid
        if uid is not None and uid in grid.uid_to_k:
            k_uid = grid.uid_to_k[uid]
            distance_uid = centre - float(grid.positions_mm[k_uid])
            if abs(distance_uid) < 0.5 * grid.local_spacing_mm(k_uid):
                k, distance, method = k_uid, distance_uid, "sop_uid"
            else:
                p.reason = f"Referenced SOP Instance UID names slice {k_uid}, {distance_uid:.2f} mm away; placed by position"
        p.slice_method, p.slice_k, p.distance_to_slice_mm = method, k, distance
        ks[n] = k
        if method == "position" and abs(distance) >= 0.5 * gaps[n] - HALF_SPACING_TIE_MM:
            first, last = grid._sorted_positions[0], grid._sorted_positions[-1]
            beyond_stack = centre < first or centre > last
            p.outcome = "outside_fov" if beyond_stack else "off_plane"
            p.reason = (
                f"{abs(distance):.2f} mm from the nearest slice (k={k}); more than half the local spacing "
                f"({gaps[n]:.2f} mm)" + (", beyond the ends of the stack" if beyond_stack else "")
            )
            p.slice_k = None

    point_ks = ks[segments.of_point]
    max_off_plane = segments.max(np.abs(along_normal - grid.positions_mm[point_ks]))
    polygons_ij, _ = grid.in_plane(points, point_ks)
    lo, hi = segments.min(polygons_ij), segments.max(polygons_ij)
    ni, nj = grid.shape[0], grid.shape[1]
    for n, p in enumerate(candidates):
        if p.slice_method is None:  # degenerate
            continue
        p.max_off_plane_mm = float(max_off_plane[n])
        if p.slice_k is None:  # off plane or beyond the stack
            continue
        (lo_i, lo_j), (hi_i, hi_j) = lo[n], hi[n]
        if hi_i < -0.5 or hi_j < -0.5 or lo_i > ni - 0.5 or lo_j > nj - 0.5:
            p.outcome, p.reason = "outside_fov", "the polygon lies outside the image in its slice"
            p.slice_k = None
            continue
        p.clipped_at_fov = bool(lo_i < -0.5 or lo_j < -0.5 or hi_i > ni - 0.5 or hi_j > nj - 0.5)
        p.polygon_ij = polygons_ij[segments.starts[n] : segments.starts[n] + segments.counts[n]]
        if not _is_simple(p.polygon_ij):
            # kept: the inclusion rule (even-odd) defines its voxels; the planimetric area of a
            # crossing polygon sums its loops with their signs, so the two volumes disagree
            p.self_intersecting = True
            p.reason = "the polygon crosses itself: voxels by the even-odd rule, its planimetric area is not its area"
    return placed


def _is_simple(polygon_ij: np.ndarray) -> bool:
    """True when the closed polygon does not cross or touch itself (shapely)."""
    from shapely.geometry import LinearRing

    return bool(LinearRing(polygon_ij).is_simple)


class _Segments:
    """Consecutive runs of points (one run per polygon) in a concatenated point array:
    per-run reductions and, per point, its run and the next point around its polygon."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.of_point = np.repeat(np.arange(len(self.counts)), self.counts)
        self.next_point = np.arange(int(self.counts.sum())) + 1
        self.next_point[self.starts + self.counts - 1] = self.starts

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, self.starts, axis=0)

    def mean(self, values: np.ndarray) -> np.ndarray:
        sums = self.sum(values)
        return sums / self.counts.reshape((-1,) + (1,) * (sums.ndim - 1))

    def min(self, values: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(values, self.starts, axis=0)

    def max(self, values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(values, self.starts, axis=0)


# ---------------------------------------------------------------------------------------
# 4. The inclusion rule
# ---------------------------------------------------------------------------------------


def even_odd_fill(polygons_ij: Sequence[np.ndarray], shape_ij: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Voxel centres of one plane inside `polygons_ij` by the even-odd rule with half-open
    edges (see `RASTERIZATION_RULE`). Returns a boolean (n_i, n_j) block over the polygons'
    bounding box, clipped to the grid, and the (i0, j0) of its first element."""
    polygons = [np.asarray(p, dtype=np.float64) for p in polygons_ij if len(p) >= 3]
    block, (i0, j0) = even_odd_fill_planes(polygons, np.zeros(len(polygons), dtype=np.int64), shape_ij)
    return block[:, :, 0] if block.size else np.zeros(block.shape[:2], dtype=bool), (i0, j0)


def even_odd_fill_planes(
    polygons_ij: Sequence[np.ndarray], plane_of_polygon: np.ndarray, shape_ij: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """`even_odd_fill` of several planes at once: polygon n lies on plane
    `plane_of_polygon[n]` (0 .. n_planes - 1). Returns a boolean (n_i, n_j, n_planes)
    block over the bounding box of all polygons,
    clipped to the grid, and its (i0, j0).

    Only the (edge, row) pairs that cross are generated: an edge crosses the integer rows
    j with min(y0, y1) <= j < max(y0, y1), exactly the rows where one end is above j and
    the other not. Each crossing toggles the centres left of it; the "left of" decision
    uses the exact orientation test, not the rounded crossing abscissa, so a centre exactly
    on an edge is decided by the half-open rule."""
    if not len(polygons_ij):
        return np.zeros((0, 0, 0), dtype=bool), (0, 0)
    n_planes = int(np.max(plane_of_polygon)) + 1
    points = np.concatenate(polygons_ij)
    i0 = max(int(np.ceil(points[:, 0].min())), 0)
    i1 = min(int(np.floor(points[:, 0].max())), shape_ij[0] - 1)
    j0 = max(int(np.ceil(points[:, 1].min())), 0)
    j1 = min(int(np.floor(points[:, 1].max())), shape_ij[1] - 1)
    if i1 < i0 or j1 < j0:
        return np.zeros((0, 0, n_planes), dtype=bool), (0, 0)
    width, height = i1 - i0 + 1, j1 - j0 + 1

    segments = _Segments(np.array([len(p) for p in polygons_ij]))
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = x0[segments.next_point], y0[segments.next_point]
    plane = np.asarray(plane_of_polygon, dtype=np.int64)[segments.of_point]
    # "y > row" is false for NaN as for -inf, so a NaN end counts as -inf here.
    y0_above, y1_above = np.where(np.isnan(y0), -np.inf, y0), np.where(np.isnan(y1), -np.inf, y1)
    y_low, y_high = np.minimum(y0_above, y1_above), np.maximum(y0_above, y1_above)
    first_row = np.maximum(np.ceil(y_low), j0)
    last_row = np.minimum(np.ceil(y_high) - 1, j1)
    n_rows = np.where(last_row >= first_row, last_row - first_row + 1, 0).astype(np.int64)
    e = np.repeat(np.arange(len(x0)), n_rows)
    if e.size == 0:
        return np.zeros((width, height, n_planes), dtype=bool, order="F"), (i0, j0)
    y = first_row[e] + (np.arange(e.size) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows))
    ex0, ey0, ex1, ey1 = x0[e], y0[e], x1[e], y1[e]
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = ex0 + (y - ey0) * (ex1 - ex0) / (ey1 - ey0)
        # t = number of integer columns c with c < x_cross, as ceil(x_cross), corrected exactly.
        t = np.ceil(x_cross)
        t = np.where(np.isfinite(t), t, 0.0)
        t -= ~_left_of_crossing(t - 1, y, ex0, ey0, ex1, ey1)  # c = t-1 must be left of the crossing
        t += _left_of_crossing(t, y, ex0, ey0, ex1, ey1)  # c = t must not be
    toggled = np.clip(t - i0, 0, width).astype(np.int64)  # columns i0 .. i0+toggled-1 toggle
    # Column q is inside when an odd number of crossings have toggled > q. Every closed
    # polygon crosses a row an even number of times, so that is the parity of the
    # crossings with toggled <= q. Rows of width + 1 (toggled == width included) each hold
    # an even number of toggles, so over all rows laid end to end the running parity
    # restarts at 0 with every row: the block is runs of alternating parity between the
    # toggle positions (a position toggled twice does nothing), written by one np.repeat.
    row_id = plane[e] * height + (y.astype(np.int64) - j0)
    positions, times = np.unique(row_id * (width + 1) + toggled, return_counts=True)
    boundaries = positions[times % 2 == 1]
    size = n_planes * height * (width + 1)
    run_lengths = np.diff(boundaries, prepend=0, append=size)
    parity = (np.arange(run_lengths.size) % 2).astype(bool)
    inside = np.repeat(parity, run_lengths).reshape(n_planes, height, width + 1)[:, :, :width]
    return inside.transpose(2, 1, 0), (i0, j0)


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
    """A ROI's voxels as one boolean block `block[i, j, k]` at grid index
    `origin_ijk` (empty planes inside its k range are all False), and how each contour
    was placed."""

    roi: Roi
    block: np.ndarray
    origin_ijk: tuple[int, int, int]
    contours: list[PlacedContour]
    contour_volume_mm3: float

    @property
    def n_slices(self) -> int:
        return len({c.slice_k for c in self.contours if c.is_used})

    @property
    def region(self) -> tuple[slice, slice, slice]:
        """Index of the block in the grid: `volume[raster.region]` has the block's shape."""
        return tuple(slice(o, o + s) for o, s in zip(self.origin_ijk, self.block.shape))  # type: ignore[return-value]

    @cached_property
    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.block))

    @cached_property
    def voxels_ijk(self) -> np.ndarray:
        """(n, 3) int64 (i, j, k) of the voxels inside, by k, then i, then j."""
        k, i, j = np.nonzero(self.block.transpose(2, 0, 1))
        return np.column_stack([i, j, k]).astype(np.int64) + np.asarray(self.origin_ijk, dtype=np.int64)

    def paint(self, volume: np.ndarray, value: Any) -> None:
        """volume[voxels inside] = value."""
        if self.block.size:
            np.copyto(volume[self.region], value, where=self.block)


def rasterize_roi(roi: Roi, grid: SliceGrid) -> RoiRaster:
    """Place every contour, mark holes by even-odd nesting and fill all planes at once."""
    placed = place_contours(roi.roi_number, roi.contours, grid)
    by_slice: dict[int, list[PlacedContour]] = {}
    for p in placed:
        if p.is_used:
            by_slice.setdefault(int(p.slice_k), []).append(p)  # type: ignore[arg-type]
    volume = 0.0
    for k, on_slice in sorted(by_slice.items()):
        _mark_holes(on_slice)
        signed_area = sum((float(p.area_mm2 or 0.0) * (-1.0 if p.outcome == "hole" else 1.0) for p in on_slice), 0.0)
        volume += signed_area * grid.local_spacing_mm(k)
    block, origin = np.zeros((0, 0, 0), dtype=bool), (0, 0, 0)
    if by_slice:
        k0 = min(by_slice)
        used = [p for on_slice in by_slice.values() for p in on_slice]
        planes = np.array([p.slice_k - k0 for p in used])  # type: ignore[operator]
        block, (i0, j0) = even_odd_fill_planes([p.polygon_ij for p in used], planes, grid.shape[:2])  # type: ignore[misc]
        origin = (i0, j0, k0)
    return RoiRaster(roi=roi, block=block, origin_ijk=origin, contours=placed, contour_volume_mm3=float(volume))


def _mark_holes(on_slice: list[PlacedContour]) -> None:
    """A contour inside an odd number of the ROI's other contours on its slice is a hole."""
    if len(on_slice) < 2:
        return
    for a in on_slice:
        probe = a.polygon_ij[:1]  # type: ignore[index]
        depth = sum(bool(points_in_polygon(probe, b.polygon_ij)[0]) for b in on_slice if b is not a)  # type: ignore[arg-type]
        a.outcome = "hole" if depth % 2 else "used"


def build_label_map(lesions: Sequence[tuple[int, RoiRaster]], shape: tuple[int, int, int]) -> tuple[np.ndarray, dict[int, int]]:
    """uint16 label map (Fortran order) from (label, raster) pairs by `OVERLAP_RULE`;
    returns the map and, per label, the number of its voxels also claimed by another lesion."""
    label_map = np.zeros(shape, dtype=np.uint16, order="F")
    claims = np.zeros(shape, dtype=np.uint8, order="F")
    for _, raster in lesions:
        if raster.block.size:
            claims[raster.region] += raster.block
    # Paint larger first so the smaller lesion wins.
    order = sorted(lesions, key=lambda lr: (-lr[1].voxel_count, -lr[1].contour_volume_mm3, -lr[0]))
    for label, raster in order:
        raster.paint(label_map, label)
    overlaps = {}
    for label, raster in lesions:
        overlaps[label] = int(np.count_nonzero(claims[raster.region][raster.block] > 1)) if raster.block.size else 0
    return label_map, overlaps


def head_from_structures(rasters: Iterable[RoiRaster], grid: SliceGrid) -> np.ndarray:
    """uint8 mask (Fortran order): union of the given (skull) ROIs' rasters with every hole
    filled per slice (an inner skull outline makes an even-odd ring; filling restores the
    head). Holes are background components, in-plane 4-connected, that do not reach the
    slice border; `_hole_candidates` keeps the search away from most of the volume."""
    from scipy.ndimage import label

    mask = np.zeros(grid.shape, dtype=bool, order="F")
    painted = [r for r in rasters if r.block.size]
    if not painted:
        return mask.view(np.uint8)
    for raster in painted:
        raster.paint(mask, True)
    box = mask[tuple(slice(min(r.region[a].start for r in painted), max(r.region[a].stop for r in painted)) for a in range(3))]
    for k, (ii, jj) in _hole_candidates(box).items():
        # Candidates have mask voxels on both sides along i and j: the margin stays inside.
        i0, j0 = int(ii.min()) - 1, int(jj.min()) - 1
        window = box[i0 : int(ii.max()) + 2, j0 : int(jj.max()) + 2, k]
        candidate = np.zeros(window.shape, dtype=bool)
        candidate[ii - i0, jj - j0] = True
        background = ~window
        components, n = label(background)  # 4-connected in the plane
        outside = np.zeros(n + 1, dtype=bool)
        outside[components[background & ~candidate]] = True  # a non-candidate sees the border
        window |= background & ~outside[components]
    return mask.view(np.uint8)


def _hole_candidates(mask: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per slice k, the (i, j) of the background voxels that have mask voxels on both sides
    along i and along j. Any other background voxel sees the slice border along a straight
    line, so it cannot be in a hole. Found from per-row extents, touching whole rows only
    where a row's mask voxels leave a gap."""
    rows = mask.transpose(2, 1, 0)  # (k, j, i) view, i contiguous
    n_i = rows.shape[2]
    first = np.argmax(rows, axis=2)
    last = n_i - 1 - np.argmax(rows[:, :, ::-1], axis=2)
    filled = np.count_nonzero(rows, axis=2)
    gappy = (filled > 0) & (filled < last - first + 1)
    if not gappy.any():
        return {}
    kk, jj = np.nonzero(gappy)
    i_index = np.arange(n_i)
    gaps = ~rows[kk, jj] & (i_index > first[kk, jj, None]) & (i_index < last[kk, jj, None])
    row, ii = np.nonzero(gaps)
    kk, jj = kk[row], jj[row]
    # The same test along j, on the (k, i) columns through these voxels only.
    column_ids, column_of = np.unique(kk * n_i + ii, return_inverse=True)
    columns = mask[column_ids % n_i, :, column_ids // n_i]  # (columns, j)
    n_j = columns.shape[1]
    first_j = np.argmax(columns, axis=1)
    last_j = n_j - 1 - np.argmax(columns[:, ::-1], axis=1)
    keep = (jj > first_j[column_of]) & (jj < last_j[column_of]) & np.asarray(columns.any(axis=1))[column_of]
    kk, ii, jj = kk[keep], ii[keep], jj[keep]
    return {int(k): (ii[kk == k], jj[kk == k]) for k in np.unique(kk)}


# ---------------------------------------------------------------------------------------
# 6. The stage
# ---------------------------------------------------------------------------------------

# Raw-dataset BIDS URI prefix for Sources/SpatialReference; the derivative dataset's
# dataset_description.json links "raw" to the raw dataset (DatasetLinks).
BIDS_URI_PREFIX = "bids:raw:"


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


def rasterize_rois(rois: Sequence[Roi], grid: SliceGrid, settings: RtssSettings | None = None) -> CaseRasters:
    """Rasterize all ROIs of a case onto `grid`: labels, label map, head mask, flags."""
    settings = settings or RtssSettings()
    prefix = settings.non_lesion_prefix
    rasters = [rasterize_roi(roi, grid) for roi in rois]
    lesion_rasters = [r for r in rasters if not r.roi.roi_name.startswith(prefix)]
    labelled = [r for r in lesion_rasters if any(c.is_used for c in r.contours)]
    labels = {r.roi.roi_number: rank for rank, r in enumerate(sorted(labelled, key=lambda r: r.roi.roi_number), start=1)}
    label_map, overlaps = build_label_map([(labels[r.roi.roi_number], r) for r in labelled], grid.shape)

    skulls = [r for r in rasters if settings.is_head_structure(r.roi.roi_name)]
    head = head_from_structures(skulls, grid) if skulls else None

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
    for outcome in ("off_plane", "outside_fov", "degenerate", "bad_data", "unusable_type"):
        if any(c.outcome == outcome for c in all_contours):
            flags.append(f"contours_{outcome}")
    if any(c.is_used and (c.max_off_plane_mm or 0) > OFF_PLANE_REPORT_MM for c in all_contours):
        flags.append("contours_not_on_slice_plane")
    if any(c.is_used and c.slice_method == "position" and c.referenced_sop_instance_uid for c in all_contours):
        flags.append("contour_references_unresolved")
    if any(c.clipped_at_fov for c in all_contours):
        flags.append("contours_clipped_at_fov")
    if any(c.is_used and c.self_intersecting for c in all_contours):
        flags.append("contours_self_intersecting")
    return CaseRasters(grid, rasters, labels, label_map, overlaps, head, flags)


def roi_table(case: CaseRasters, settings: RtssSettings | None = None) -> list[dict[str, Any]]:
    """One row per ROI (see docs/rasterization.md for the columns)."""
    settings = settings or RtssSettings()
    grid = case.grid
    rows = []
    for raster in case.rasters:
        roi = raster.roi
        label = case.labels.get(roi.roi_number)
        is_lesion = not roi.roi_name.startswith(settings.non_lesion_prefix)
        if label is not None:
            voxels = raster.voxels_ijk
            voxels = voxels[case.label_map[voxels[:, 0], voxels[:, 1], voxels[:, 2]] == label]
        else:
            voxels = raster.voxels_ijk
        centroid = grid.lps_from_voxels(voxels).mean(axis=0) if len(voxels) else np.full(3, np.nan)
        used = [c for c in raster.contours if c.is_used]
        status, reason = "ok", None
        lost = [c for c in raster.contours if c.outcome in DATA_OUTCOMES]
        if not roi.contours:
            status, reason = "empty", "ROI has no contours"
        elif not used:
            status = "unusable"
            reason = "no usable contour: " + "; ".join(_lost_contour(c) for c in raster.contours)
        elif lost:
            # the volumes and the label map hold the other contours only: say which are missing
            status = "partial"
            reason = (f"{len(lost)} of {len(roi.contours)} contours not used, volumes are partial: "
                      + "; ".join(_lost_contour(c) for c in lost))  # fmt: skip
        elif any(c.self_intersecting for c in used):
            status = "self_intersecting"
            reason = "; ".join(_lost_contour(c) for c in used if c.self_intersecting)
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


def _lost_contour(contour: PlacedContour) -> str:
    """Which contour, where (if known) and why, for a person."""
    where = f" (slice k={contour.slice_k})" if contour.slice_k is not None else ""
    return f"contour {contour.contour_index}{where}: {contour.reason or contour.outcome}"


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
                    "self_intersecting": c.self_intersecting,
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
    "max_nonplanarity_mm": "float64", "area_mm2": "float64", "clipped_at_fov": "bool", "self_intersecting": "bool",
    "outcome": "string", "reason": "string",
}  # fmt: skip


def rasterize_case(
    plan_json: Path,
    bids_json: Path,
    output_dir: Path,
    result_json: Path,
    rois_parquet: Path,
    contours_parquet: Path,
    settings: RtssSettings,
) -> None:
    """The rtss stage for one case. Always writes `result_json` and both tables; a case
    that cannot be processed gets `status: excluded` with a reason (and empty tables)."""
    plan = CasePlan.read(plan_json)
    bids = BidsResult.read(bids_json)
    output_dir = Path(output_dir)
    rois_rows: list[dict[str, Any]] = []
    contour_rows: list[dict[str, Any]] = []
    flags: list[str] = []
    labels: tuple[LabelEntry, ...] = ()
    outputs: RtssOutputs | None = None
    status: Status = "ok"
    reason: str | None = None
    try:
        if bids.status != "ok":
            raise CaseExcluded(bids.status_reason or "excluded by the bids stage")
        if plan.rtss is None:
            raise CaseExcluded("the case has no RT Structure Set")
        t1c = bids.images["T1C"]
        rois = read_rtss(Path(plan.input_dir) / plan.rtss.file)
        import nibabel as nib

        t1c_img = nib.load(str(output_dir / t1c.nifti))
        if not Grid.from_nifti(t1c_img).same_as(t1c.grid):
            raise CaseExcluded("the T1C NIfTI on disk is not the grid the bids stage recorded")
        grid = SliceGrid(
            t1c.grid.lps_from_ijk,
            t1c.grid.shape,
            slice_sop_instance_uids=t1c.slice_sop_instance_uids,
            slice_positions_mm=t1c.slice_positions_mm,
        )
        case = rasterize_rois(rois, grid, settings)
        rois_rows, contour_rows = roi_table(case, settings), contour_table(case)
        paths = bids_paths(plan.subject, plan.session)
        outputs = RtssOutputs(
            lesion_labels_nifti=paths.lesion_labels, lesion_labels_sidecar=paths.lesion_labels_sidecar,
            lesion_labels_tsv=paths.lesion_labels_tsv, lesion_mask_nifti=paths.lesion_mask,
            lesion_mask_sidecar=paths.lesion_mask_sidecar,
            head_mask_nifti=paths.head_mask if case.head is not None else None,
            head_mask_sidecar=paths.head_mask_sidecar if case.head is not None else None,
        )  # fmt: skip
        _write_derivatives(case, rois_rows, t1c_img, t1c.nifti, outputs, output_dir, settings)
        flags = case.flags
        labels = tuple(
            LabelEntry(label=int(r["label"]), roi_number=int(r["roi_number"]), roi_name=str(r["roi_name"]))
            for r in rois_rows if r["label"] is not None
        )  # fmt: skip
    except CaseExcluded as exc:
        status, reason, outputs = "excluded", exc.reason, None
        log.warning("%s excluded: %s", plan.case_id, exc.reason)
    written: set[str] = set()
    if outputs is not None:
        written = {f for f in (outputs.lesion_labels_nifti, outputs.lesion_labels_sidecar, outputs.lesion_labels_tsv,
                               outputs.lesion_mask_nifti, outputs.lesion_mask_sidecar, outputs.head_mask_nifti,
                               outputs.head_mask_sidecar) if f}  # fmt: skip
    remove_stale(output_dir, plan.subject, plan.session, "rtss", written)
    _write_table(rois_rows, ROI_COLUMNS, Path(rois_parquet))
    _write_table(contour_rows, CONTOUR_COLUMNS, Path(contours_parquet))
    RtssResult(
        schema_version=SCHEMA_VERSION, case_id=plan.case_id, status=status, status_reason=reason,
        flags=tuple(flags), rasterization_rule=RASTERIZATION_RULE, label_rule=LABEL_RULE,
        overlap_rule=OVERLAP_RULE, labels=labels, outputs=outputs,
    ).write(result_json)  # fmt: skip


def _write_derivatives(
    case: CaseRasters, rois_rows: list[dict[str, Any]], t1c_img: Any, t1c_nifti: str,
    outputs: RtssOutputs, output_dir: Path, settings: RtssSettings,
) -> None:  # fmt: skip
    source = BIDS_URI_PREFIX + _bids_relative(t1c_nifti)
    lesion_rows = [r for r in rois_rows if r["label"] is not None]
    manual = bool(lesion_rows) and all((r["generation_algorithm"] or "").upper() == "MANUAL" for r in lesion_rows)
    common = {"Sources": [source], "SpatialReference": source, "RasterizationRule": RASTERIZATION_RULE}
    _save_nifti(case.label_map, t1c_img, output_dir, outputs.lesion_labels_nifti, {
        **common, "Manual": manual, "Description": "Lesion label map from the RT Structure Set",
        "LabelRule": LABEL_RULE, "OverlapRule": OVERLAP_RULE,
    })  # fmt: skip
    mask = (case.label_map > 0).astype(np.uint8)
    _save_nifti(mask, t1c_img, output_dir, outputs.lesion_mask_nifti, {
        **common, "Type": "Lesion", "Manual": manual, "Description": "Union of all lesion ROIs",
    })  # fmt: skip
    if case.head is not None and outputs.head_mask_nifti is not None:
        skulls = [r for r in rois_rows if not r["is_lesion"] and settings.is_head_structure(r["roi_name"])]
        _save_nifti(case.head, t1c_img, output_dir, outputs.head_mask_nifti, {
            **common, "Type": "ROI", "Description": "Head: RTSS skull structure(s) " + ", ".join(r["roi_name"] for r in skulls)
            + " filled per slice", "Manual": all((r["generation_algorithm"] or "").upper() == "MANUAL" for r in skulls),
        })  # fmt: skip
    lines = ["index\tname\troi_number\troi_name\tcolor"]
    for r in lesion_rows:
        name = f"lesion{r['label']}"
        lines.append(f"{r['label']}\t{name}\t{r['roi_number']}\t{_tsv_cell(r['roi_name'])}\t{r['colour'] or 'n/a'}")
    write_text(output_dir / outputs.lesion_labels_tsv, "\n".join(lines) + "\n")


def _save_nifti(data: np.ndarray, t1c_img: Any, output_dir: Path, relative: str, sidecar: dict[str, Any]) -> None:
    """NIfTI with the T1C's exact sform and qform (matrices and codes), and its sidecar."""
    import nibabel as nib

    header = t1c_img.header.copy()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, None, header)
    img.set_sform(t1c_img.header.get_sform(), code=int(t1c_img.header["sform_code"]))
    img.set_qform(t1c_img.header.get_qform(), code=int(t1c_img.header["qform_code"]))
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, float(data.max()) if data.size else 0
    img.header["descrip"] = b"metsprep rtss"
    write_nifti(output_dir / relative, img)
    write_json(output_dir / sidecar_path(relative), sidecar)


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
    write_with(path, lambda name: frame.to_parquet(name, index=False))
