"""The lesion catalog: per-lesion features of one case, then the Parquet catalog of the cohort.

Stage functions (called by `workflow/scripts/catalog_case.py` and `catalog.py`):

* `catalog_case`: one case's lesions (`work/cases/{case_id}/lesions.parquet`, one row per
  lesion ROI) and its case row (`work/cases/{case_id}/case.json`).
* `build_catalog`: `catalog/series.parquet`, `catalog/cases.parquet`,
  `catalog/lesions.parquet` and the data dictionary `catalog/README.md`, generated from
  the tables' pyarrow schemas so the two cannot drift.

Definitions (all measured on the T1C voxel grid, from the lesion label map, voxel centres
mapped to LPS mm through the T1C's `lps_from_ijk`):

* `max_diameter_mm`: maximum 3D diameter, the largest distance between two voxel centres
  of the lesion (found among the vertices of their convex hull).
* `longest_axial_diameter_mm` (RANO-BM): the largest in-plane distance between two voxel
  centres of the lesion on any single slice (k plane of the T1C, which is the axial
  acquisition plane for stereotactic T1C). `rano_measurable`: that diameter >= 10 mm and
  the lesion is seen on >= 2 slices (RANO-BM measurable disease).
  Voxel centre to voxel centre distances are a lower bound of the true extent: a sphere
  of diameter D gives between D - (voxel diagonal) and D.
* `equivalent_diameter_mm`: diameter of the sphere of the lesion's volume, (6 V / pi)^(1/3).
* Normal-appearing brain (enhancement ratio reference): inside the head mask (the RTSS
  `*Skull` head, or the Otsu foreground of the T1C where there is none) at least
  `BRAIN_DEPTH_MM` from its surface (this strips scalp, skull and most of the CSF),
  farther than `LESION_MARGIN_MM` from any lesion, and with T1C intensity between the
  10th and 90th percentile of those voxels (drops residual CSF, vessels and dura).
  `enhancement_ratio` = lesion T1C mean / normal-appearing brain T1C mean.
* Distance to the inner skull surface (only where the RTSS has a head structure): the
  Euclidean distance transform of the head mask gives, for the lesion's voxel closest to
  the surface, its distance to the head (scalp) surface; the inner skull surface is
  approximated as the head surface moved inwards by `SCALP_AND_SKULL_MM` (adult scalp +
  calvarium), so `distance_to_inner_skull_mm = max(0, distance_to_head_surface_mm - 10)`.
* Hemisphere and region: `metsprep.location`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metsprep.jsonio import to_jsonable
import pyarrow as pa

log = logging.getLogger("metsprep.catalog")

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
RANO_MEASURABLE_MM = 10.0
RANO_MIN_SLICES = 2
BRAIN_DEPTH_MM = 15.0
LESION_MARGIN_MM = 5.0
NAB_PERCENTILES = (10.0, 90.0)
SCALP_AND_SKULL_MM = 10.0
CREATED_BY = "metsprep.catalog"


# ============================================================================ column specs


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    unit: str | None = None

    def field(self) -> pa.Field:
        meta = {"description": self.description}
        if self.unit:
            meta["unit"] = self.unit
        return pa.field(self.name, self.type, nullable=True, metadata=meta)


def _c(name: str, type_: pa.DataType, description: str, unit: str | None = None) -> Column:
    return Column(name, type_, description, unit)


S, F, I, B = pa.string(), pa.float64(), pa.int64(), pa.bool_()
STRINGS = pa.list_(pa.string())


def _intensity_columns() -> list[Column]:
    out = []
    for seq, where in (("t1c", "native T1C"), ("t1", "T1 registered onto the T1C grid"), ("t2", "T2 registered onto the T1C grid")):
        for stat, what in (("mean", "mean"), ("median", "median"), ("p95", "95th percentile")):
            out.append(_c(f"{seq}_{stat}", F, f"{what.capitalize()} intensity of the {where} inside the lesion (image units; null without that image)", "a.u."))
    return out


LESION_COLUMNS: list[Column] = [
    _c("case_id", S, "Case identifier sub-<subject>_ses-<session>"),
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("roi_number", I, "ROI Number (3006,0022) of the structure in the RT Structure Set"),
    _c("roi_name", S, "ROI Name (3006,0026) as written by the planning system"),
    _c("label", I, "Value of the lesion in the lesion label map (lesion_labels_nifti); null when the ROI has no voxel"),
    _c("volume_mm3", F, "Voxel count of the lesion in the label map times the T1C voxel volume (voxel centre inside the contour, even-odd rule)", "mm3"),
    _c("contour_volume_mm3", F, "Planimetric volume of the RTSS polygons: sum of polygon areas (holes subtract) times the T1C slice spacing", "mm3"),
    _c("voxel_count", I, "Number of voxels of the lesion in the label map", "voxel"),
    _c("centroid_lps_x_mm", F, "Centroid of the lesion voxels, DICOM patient x (LPS: + = patient left)", "mm"),
    _c("centroid_lps_y_mm", F, "Centroid of the lesion voxels, DICOM patient y (LPS: + = posterior)", "mm"),
    _c("centroid_lps_z_mm", F, "Centroid of the lesion voxels, DICOM patient z (LPS: + = superior)", "mm"),
    _c("centroid_ras_x_mm", F, "Centroid in the NIfTI RAS frame, x (+ = patient right)", "mm"),
    _c("centroid_ras_y_mm", F, "Centroid in the NIfTI RAS frame, y (+ = anterior)", "mm"),
    _c("centroid_ras_z_mm", F, "Centroid in the NIfTI RAS frame, z (+ = superior)", "mm"),
    _c("centroid_i", F, "Centroid voxel index i (column) on the T1C grid, zero-based", "voxel"),
    _c("centroid_j", F, "Centroid voxel index j (row) on the T1C grid, zero-based", "voxel"),
    _c("centroid_k", F, "Centroid voxel index k (slice) on the T1C grid, zero-based", "voxel"),
    _c("n_slices", I, "Number of T1C slices (k planes) the lesion occupies in the label map"),
    _c("n_contours", I, "Number of contours of the ROI in the RT Structure Set"),
    _c("n_contours_used", I, "Number of contours placed on a T1C slice and rasterized"),
    _c("max_diameter_mm", F, "Maximum 3D diameter: largest distance between two lesion voxel centres", "mm"),
    _c("longest_axial_diameter_mm", F, "RANO-BM longest diameter: largest in-plane distance between two lesion voxel centres on a single T1C slice", "mm"),
    _c("longest_axial_diameter_slice_k", I, "T1C slice index k on which the longest axial diameter lies"),
    _c("rano_measurable", B, "RANO-BM measurable: longest axial diameter >= 10 mm and seen on >= 2 slices"),
    _c("equivalent_diameter_mm", F, "Diameter of the sphere with the lesion's volume, (6 V / pi)^(1/3)", "mm"),
    *[_c(f"bbox_{a}_{m}", I, f"{'Smallest' if m == 'min' else 'Largest'} voxel index {a} of the lesion on the T1C grid", "voxel") for a in "ijk" for m in ("min", "max")],
    *[_c(f"bbox_lps_{a}_{m}_mm", F, f"{'Smallest' if m == 'min' else 'Largest'} LPS {a} of the lesion voxel centres", "mm") for a in "xyz" for m in ("min", "max")],
    _c("hemisphere", S, "L, R, midline or unknown: from the ROI name where it says, else from the geometry"),
    _c("region", S, "Region (frontal, temporal, parietal, occipital, insula, deep, cerebellum, brainstem, unknown): from the ROI name, else the geometry"),
    _c("subregion", S, "Finer location from the ROI name (thalamus, basal ganglia, pons, vermis, ...)"),
    _c("hemisphere_name", S, "Hemisphere read from the ROI name through config/location_vocabulary.yaml"),
    _c("hemisphere_geometry", S, "Hemisphere from the signed distance of the centroid to the estimated midsagittal plane"),
    _c("region_name", S, "Region read from the ROI name"),
    _c("region_geometry", S, "Region from the geometry (unknown: not estimated)"),
    _c("location_source", S, "Where hemisphere/region come from: name, geometry, name+geometry or none"),
    _c("location_flag", S, "Set where the name and the geometry disagree (or the name names both sides)"),
    _c("midsagittal_distance_mm", F, "Signed distance of the centroid to the estimated midsagittal plane (+ = patient left)", "mm"),
    _c("distance_to_head_surface_mm", F, "Distance of the lesion voxel closest to the head surface to that surface (head mask distance transform); null without a head mask", "mm"),
    _c("distance_to_inner_skull_mm", F, "Approximate distance to the inner skull surface: max(0, distance_to_head_surface_mm - 10 mm scalp and skull)", "mm"),
    *_intensity_columns(),
    _c("nab_t1c_mean", F, "Mean T1C intensity of the case's normal-appearing brain (see the definitions)", "a.u."),
    _c("enhancement_ratio", F, "Lesion T1C mean / normal-appearing brain T1C mean", "1"),
    _c("generation_algorithm", S, "ROI Generation Algorithm (3006,0036): MANUAL, SEMIAUTOMATIC, AUTOMATIC"),
    _c("roi_status", S, "ok, or why the ROI has no voxel (from the rtss stage)"),
    _c("roi_status_reason", S, "Reason given by the rtss stage when roi_status is not ok"),
]

_REG_COLUMNS = [
    col
    for seq in ("t1", "t2")
    for col in (
        _c(f"{seq}_metric_before", F, f"Mattes mutual information between T1C and {seq.upper()} before registration (lower is better)", "1"),
        _c(f"{seq}_metric_after", F, f"Mattes mutual information between T1C and {seq.upper()} after registration", "1"),
        _c(f"{seq}_iterations", I, f"Optimizer iterations of the {seq.upper()} registration"),
        _c(f"{seq}_stop_condition", S, f"Optimizer stop condition of the {seq.upper()} registration"),
        _c(f"{seq}_rotation_deg", F, f"Total rotation angle of the {seq.upper()} -> T1C rigid transform", "deg"),
        _c(f"{seq}_translation_mm", F, f"Translation norm of the {seq.upper()} -> T1C rigid transform at the rotation centre", "mm"),
        _c(f"{seq}_registration_flag", S, f"Why the {seq.upper()} registration looks suspicious (null when it does not)"),
    )
]

CASE_COLUMNS: list[Column] = [
    _c("case_id", S, "Case identifier sub-<subject>_ses-<session>"),
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("study_instance_uid", S, "Study Instance UID (0020,000D) of the imaging study"),
    _c("session", S, "BIDS session label"),
    _c("subject", S, "BIDS subject label"),
    _c("status", S, "ok or excluded"),
    _c("status_reason", S, "Null when ok; otherwise why the case was excluded, for a person"),
    _c("excluded_at", S, "Stage that excluded the case (match, bids, rtss, register, catalog); null when ok"),
    _c("t1c_nifti", S, "Native T1w+C image (path relative to output_dir)"),
    _c("t1_nifti", S, "Native T1w image; null when the case has no T1"),
    _c("t2_nifti", S, "Native T2w image; null when the case has no T2"),
    _c("t1_in_t1c_nifti", S, "T1w registered and resampled onto the T1C grid"),
    _c("t2_in_t1c_nifti", S, "T2w registered and resampled onto the T1C grid"),
    _c("t1_to_t1c_transform", S, "ITK rigid transform (T1C LPS point -> T1 LPS point; SimpleITK ReadTransform)"),
    _c("t2_to_t1c_transform", S, "ITK rigid transform (T1C LPS point -> T2 LPS point; SimpleITK ReadTransform)"),
    _c("lesion_labels_nifti", S, "Integer lesion label map on the T1C grid, 0 = background, value = lesion label"),
    _c("lesion_mask_nifti", S, "Binary union of all lesions on the T1C grid"),
    _c("head_mask_nifti", S, "Head mask from the RTSS *Skull structure on the T1C grid; null where there is none"),
    _c("n_lesions", I, "Number of lesion ROIs (rows of lesions.parquet for this case)"),
    _c("n_lesions_labelled", I, "Number of lesions with at least one voxel in the label map"),
    _c("n_rano_measurable", I, "Number of RANO-BM measurable lesions"),
    _c("total_lesion_volume_mm3", F, "Sum of the lesion volumes (label map)", "mm3"),
    _c("largest_lesion_volume_mm3", F, "Volume of the largest lesion", "mm3"),
    _c("largest_diameter_mm", F, "Largest maximum 3D diameter of the case's lesions", "mm"),
    _c("largest_axial_diameter_mm", F, "Largest RANO-BM longest axial diameter of the case's lesions", "mm"),
    *_REG_COLUMNS,
    _c("nab_t1c_mean", F, "Mean T1C intensity of normal-appearing brain (enhancement ratio reference)", "a.u."),
    _c("midsagittal_source", S, "Mask the midsagittal plane was estimated from: head_mask or t1c_foreground"),
    _c("midsagittal_point_lps_x_mm", F, "Head mask centroid (a point of the midsagittal plane), LPS x", "mm"),
    _c("midsagittal_point_lps_y_mm", F, "Head mask centroid, LPS y", "mm"),
    _c("midsagittal_point_lps_z_mm", F, "Head mask centroid, LPS z", "mm"),
    _c("midsagittal_normal_lps", pa.list_(pa.float64()), "Unit normal of the midsagittal plane in LPS, pointing to patient left"),
    _c("midsagittal_tilt_deg", F, "Angle between the midsagittal plane normal and the LPS x axis", "deg"),
    _c("sex", S, "Patient's Sex (0010,0040): M, F or null"),
    _c("age_years", F, "Patient's Age (0010,1010) in years", "year"),
    _c("t1c_series_instance_uid", S, "Series Instance UID of the T1C series"),
    _c("t1_series_instance_uid", S, "Series Instance UID of the T1 series"),
    _c("t2_series_instance_uid", S, "Series Instance UID of the T2 series"),
    _c("rtss_sop_instance_uid", S, "SOP Instance UID of the RT Structure Set"),
    _c("rtss_file", S, "RT Structure Set file, relative to the input folder"),
    _c("non_lesion_rois", STRINGS, "Names of the RTSS structures that are not lesions (e.g. *Skull)"),
    _c("flags", STRINGS, "Short flags of all stages (matching, conversion, rasterization, registration, location)"),
    _c("matching_flags", STRINGS, "Flags of the match stage"),
    _c("registration_flags", STRINGS, "Flags of the register stage"),
    _c("location_flags", STRINGS, "Lesions whose name and geometry disagree: '<roi_name>: <flag>'"),
]

SERIES_COLUMNS: list[Column] = [
    _c("case_id", S, "Case the series belongs to (null for series of no case)"),
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("study_instance_uid", S, "Study Instance UID (0020,000D)"),
    _c("series_instance_uid", S, "Series Instance UID (0020,000E)"),
    _c("modality", S, "Modality (0008,0060): MR, RTSTRUCT, ..."),
    _c("series_description", S, "Series Description (0008,103E)"),
    _c("sequence", S, "T1, T1C, T2, OTHER (RTSS: RTSTRUCT)"),
    _c("sequence_source", S, "What decided the sequence: description, acquisition, config_override, ..."),
    _c("n_instances", I, "Number of DICOM instances of the series"),
    _c("rows", I, "Rows (0028,0010)", "pixel"),
    _c("columns", I, "Columns (0028,0011)", "pixel"),
    _c("pixel_spacing_row_mm", F, "Pixel Spacing (0028,0030) between rows", "mm"),
    _c("pixel_spacing_col_mm", F, "Pixel Spacing (0028,0030) between columns", "mm"),
    _c("slice_thickness_mm", F, "Slice Thickness (0018,0050)", "mm"),
    _c("slice_spacing_mm", F, "Distance between slice centres measured from Image Position (Patient)", "mm"),
    _c("nifti", S, "Exported NIfTI image (path relative to output_dir); null where not exported"),
]

SORT_KEYS = {
    "series": ["case_id", "series_number", "series_instance_uid"],
    "cases": ["case_id"],
    "lesions": ["case_id", "roi_number"],
}
TABLE_DESCRIPTIONS = {
    "inventory": "One row per input file (written by the scan stage).",
    "series": "One row per DICOM series (from the match stage, with the exported NIfTI).",
    "cases": "One row per case: one imaging study with its RT Structure Set, ok or excluded.",
    "lesions": "One row per lesion ROI of the cases that are ok.",
}


def table_schema(columns: list[Column], table: str, extra_metadata: dict[str, str] | None = None) -> pa.Schema:
    from metsprep import __version__

    metadata = {
        "table": table,
        "description": TABLE_DESCRIPTIONS.get(table, ""),
        "sort_keys": json.dumps(SORT_KEYS.get(table, [])),
        "metsprep_version": __version__,
        "created_by": CREATED_BY,
        **(extra_metadata or {}),
    }
    return pa.schema([c.field() for c in columns], metadata=metadata)


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the run's configuration."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ============================================================================ features (pure)


def spacing_mm(lps_from_ijk: np.ndarray) -> np.ndarray:
    """Voxel step lengths along i, j, k in mm."""
    return np.linalg.norm(np.asarray(lps_from_ijk)[:3, :3], axis=0)


def to_lps(ijk: np.ndarray, lps_from_ijk: np.ndarray) -> np.ndarray:
    ijk = np.asarray(ijk, dtype=np.float64).reshape(-1, 3)
    return ijk @ lps_from_ijk[:3, :3].T + lps_from_ijk[:3, 3]


def max_pairwise_distance_mm(ijk: np.ndarray, lps_from_ijk: np.ndarray, dims: int = 3) -> float:
    """Largest distance in mm between voxel centres `ijk` (n x 3 indices).

    The extreme pair lies on the convex hull; the hull is taken in index space (an affine
    map keeps convexity) over the first `dims` index axes, distances in LPS mm.
    """
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    ijk = np.unique(np.asarray(ijk, dtype=np.int64).reshape(-1, 3), axis=0)
    if len(ijk) < 2:
        return 0.0
    candidates = ijk
    if len(ijk) > dims + 1:
        try:
            hull = ConvexHull(ijk[:, :dims].astype(np.float64), qhull_options="QJ")
            candidates = ijk[np.unique(hull.vertices)]
        except (QhullError, ValueError):
            candidates = ijk if len(ijk) <= 5000 else ijk[_extreme_points(ijk)]
    return float(pdist(to_lps(candidates, lps_from_ijk)).max())


def _extreme_points(ijk: np.ndarray, n_directions: int = 64) -> np.ndarray:
    """Indices of points extreme along many directions (fallback for degenerate hulls)."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(n_directions, ijk.shape[1]))
    proj = ijk @ directions.T
    return np.unique(np.concatenate([proj.argmin(axis=0), proj.argmax(axis=0)]))


def longest_axial_diameter_mm(ijk: np.ndarray, lps_from_ijk: np.ndarray) -> tuple[float, int | None]:
    """RANO-BM longest diameter: the largest in-plane voxel-centre distance on one k slice."""
    ijk = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
    best, best_k = 0.0, None
    for k in np.unique(ijk[:, 2]):
        d = max_pairwise_distance_mm(ijk[ijk[:, 2] == k], lps_from_ijk, dims=2)
        if best_k is None or d > best:
            best, best_k = d, int(k)
    return best, best_k


def equivalent_diameter_mm(volume_mm3: float) -> float:
    return float((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0)) if volume_mm3 > 0 else 0.0


def bounding_box(ijk: np.ndarray, lps_from_ijk: np.ndarray) -> dict[str, Any]:
    ijk = np.asarray(ijk).reshape(-1, 3)
    lo, hi = ijk.min(axis=0), ijk.max(axis=0)
    lps = to_lps(ijk, lps_from_ijk)
    out: dict[str, Any] = {}
    for n, a in enumerate("ijk"):
        out[f"bbox_{a}_min"], out[f"bbox_{a}_max"] = int(lo[n]), int(hi[n])
    for n, a in enumerate("xyz"):
        out[f"bbox_lps_{a}_min_mm"], out[f"bbox_lps_{a}_max_mm"] = float(lps[:, n].min()), float(lps[:, n].max())
    return out


def intensity_stats(values: np.ndarray | None) -> dict[str, float | None]:
    if values is None or len(values) == 0:
        return {"mean": None, "median": None, "p95": None}
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "median": float(np.median(values)), "p95": float(np.percentile(values, 95))}


def _box(mask: np.ndarray, margin: np.ndarray | int = 0) -> tuple[slice, ...] | None:
    """Bounding box of `mask`'s voxels widened by `margin` voxels per axis (clipped), or None."""
    margin = np.broadcast_to(np.asarray(margin, dtype=np.int64), (mask.ndim,))
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(max(0, int(hit[0]) - int(margin[axis])),
                         min(mask.shape[axis], int(hit[-1]) + 1 + int(margin[axis]))))
    return tuple(box)


def inside_distance_mm(mask: np.ndarray, lps_from_ijk: np.ndarray) -> np.ndarray:
    """For each voxel of `mask`, the distance (mm) to the nearest voxel centre outside it.

    Exact, computed on the mask's bounding box plus one voxel: every voxel outside the
    box is outside the mask, and the volume border counts as outside (a head cut by the
    field of view), so the nearest outside voxel of any mask voxel is always in the
    padded box.
    """
    from scipy import ndimage as ndi

    mask = mask.astype(bool, copy=False)
    distance = np.zeros(mask.shape, dtype=np.float64)
    box = _box(mask)
    if box is None:
        return distance
    padded = np.pad(mask[box], 1, constant_values=False)
    distance[box] = ndi.distance_transform_edt(padded, sampling=spacing_mm(lps_from_ijk))[1:-1, 1:-1, 1:-1]
    return distance


def near_mask(mask: np.ndarray, lps_from_ijk: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels whose centre lies within `radius_mm` (inclusive) of a voxel centre of `mask`.

    Exact: the Euclidean distance transform is computed only on the mask's bounding box
    widened by the radius (in voxels per axis), since no voxel outside it can be that close.
    """
    from scipy import ndimage as ndi

    mask = mask.astype(bool, copy=False)
    near = np.zeros(mask.shape, dtype=bool)
    spacing = spacing_mm(lps_from_ijk)
    box = _box(mask, np.ceil(radius_mm / spacing).astype(np.int64) + 1)
    if box is None:
        return near
    near[box] = ndi.distance_transform_edt(~mask[box], sampling=spacing) <= radius_mm
    return near


def normal_appearing_brain(
    t1c: np.ndarray,
    head: np.ndarray,
    lesions: np.ndarray,
    lps_from_ijk: np.ndarray,
    head_depth_mm: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of normal-appearing brain (see the module docstring)."""
    if head_depth_mm is None:
        head_depth_mm = inside_distance_mm(head, lps_from_ijk)
    candidate = head_depth_mm >= BRAIN_DEPTH_MM
    if lesions.any():
        candidate &= ~near_mask(lesions, lps_from_ijk, LESION_MARGIN_MM)
    if not candidate.any():
        return candidate
    values = t1c[candidate]
    lo, hi = np.percentile(values, NAB_PERCENTILES)
    return candidate & (t1c >= lo) & (t1c <= hi)


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Head (not air) of an MR image: Otsu threshold (SimpleITK), largest component, holes filled."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(image, dtype=np.float32))
    foreground = sitk.OtsuThreshold(sitk.SmoothingRecursiveGaussian(img, 1.0), 0, 1)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True)
    return sitk.GetArrayFromImage(sitk.BinaryFillhole(components == 1)).astype(bool)


def lesion_geometry(ijk: np.ndarray, lps_from_ijk: np.ndarray) -> dict[str, Any]:
    """Size, position and extent of one lesion from its voxel indices (n x 3)."""
    voxel_volume = float(abs(np.linalg.det(lps_from_ijk[:3, :3])))
    volume = len(ijk) * voxel_volume
    centroid_ijk = ijk.mean(axis=0)
    centroid_lps = to_lps(centroid_ijk, lps_from_ijk)[0]
    centroid_ras = RAS_FROM_LPS[:3, :3] @ centroid_lps
    axial, axial_k = longest_axial_diameter_mm(ijk, lps_from_ijk)
    n_slices = int(len(np.unique(ijk[:, 2])))
    return {
        "voxel_count": int(len(ijk)),
        "volume_mm3": volume,
        **{f"centroid_lps_{a}_mm": float(v) for a, v in zip("xyz", centroid_lps, strict=True)},
        **{f"centroid_ras_{a}_mm": float(v) for a, v in zip("xyz", centroid_ras, strict=True)},
        **{f"centroid_{a}": float(v) for a, v in zip("ijk", centroid_ijk, strict=True)},
        "n_slices": n_slices,
        "max_diameter_mm": max_pairwise_distance_mm(ijk, lps_from_ijk),
        "longest_axial_diameter_mm": axial,
        "longest_axial_diameter_slice_k": axial_k,
        "rano_measurable": bool(axial >= RANO_MEASURABLE_MM and n_slices >= RANO_MIN_SLICES),
        "equivalent_diameter_mm": equivalent_diameter_mm(volume),
        **bounding_box(ijk, lps_from_ijk),
    }


# ============================================================================ one case


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None or not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text())


def _load_volume(output_dir: Path, rel: str | None, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray] | None:
    """(data indexed [i, j, k], lps_from_ijk) of a NIfTI under output_dir, or None."""
    if not rel:
        return None
    path = Path(output_dir) / rel
    if not path.exists():
        log.warning("image %s is missing", path)
        return None
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim > 3:
        data = data.reshape(data.shape[:3])
    return data.astype(dtype, copy=False), RAS_FROM_LPS @ img.affine


def _registration_entry(register: dict[str, Any], seq: str) -> dict[str, Any] | None:
    entry = register.get(seq)
    if entry is None:
        entry = (register.get("registrations") or {}).get(seq)
    return entry if isinstance(entry, dict) and not entry.get("missing") else None


def _scalar(value: Any, key: str) -> float | None:
    """A number from a scalar or from {total|norm: ...} dicts of the register stage."""
    if isinstance(value, dict):
        value = value.get(key)
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _registration_qc(register: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for seq in ("T1", "T2"):
        entry = _registration_entry(register, seq) or {}
        p = seq.lower()
        out[f"{p}_metric_before"] = _scalar(entry.get("metric_before"), "value")
        out[f"{p}_metric_after"] = _scalar(entry.get("metric_after"), "value")
        iterations = entry.get("iterations")
        out[f"{p}_iterations"] = int(iterations) if isinstance(iterations, (int, float)) else None
        out[f"{p}_stop_condition"] = entry.get("stop_condition")
        out[f"{p}_rotation_deg"] = _scalar(entry.get("rotation_deg"), "total")
        out[f"{p}_translation_mm"] = _scalar(entry.get("translation_mm"), "norm")
        out[f"{p}_registration_flag"] = entry.get("flag") or None
    return out


def _first_excluded(stages: list[tuple[str, dict[str, Any]]]) -> tuple[str, str | None, str | None]:
    for stage, result in stages:
        if result and result.get("status", "ok") != "ok":
            return "excluded", result.get("status_reason") or f"excluded by the {stage} stage", stage
    return "ok", None, None


def _unique(items: list[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(str(item), None)
    return list(seen)


def _case_base(plan: dict[str, Any], bids: dict[str, Any], rtss: dict[str, Any], register: dict[str, Any]) -> dict[str, Any]:
    images = bids.get("images") or {}
    outputs = rtss.get("outputs") or {}
    subject, session = plan.get("subject"), plan.get("session")
    case_id = plan.get("case_id") or bids.get("case_id") or rtss.get("case_id")
    if (subject is None or session is None) and case_id and "_" in case_id:
        sub, ses = case_id.split("_", 1)
        subject, session = subject or sub.removeprefix("sub-"), session or ses.removeprefix("ses-")
    t1 = _registration_entry(register, "T1") or {}
    t2 = _registration_entry(register, "T2") or {}
    participant = bids.get("participant") or {}
    series = plan.get("series") or {}
    rtss_plan = plan.get("rtss") or {}

    def image(seq: str, key: str) -> Any:
        return (images.get(seq) or {}).get(key)

    def series_uid(seq: str) -> Any:
        return image(seq, "series_instance_uid") or (series.get(seq) or {}).get("series_instance_uid")

    return {
        "case_id": case_id,
        "patient_id": plan.get("patient_id"),
        "study_instance_uid": plan.get("study_instance_uid"),
        "session": session,
        "subject": subject,
        "t1c_nifti": image("T1C", "nifti"),
        "t1_nifti": image("T1", "nifti"),
        "t2_nifti": image("T2", "nifti"),
        "t1_in_t1c_nifti": t1.get("image"),
        "t2_in_t1c_nifti": t2.get("image"),
        "t1_to_t1c_transform": t1.get("transform"),
        "t2_to_t1c_transform": t2.get("transform"),
        "lesion_labels_nifti": outputs.get("lesion_labels_nifti"),
        "lesion_mask_nifti": outputs.get("lesion_mask_nifti"),
        "head_mask_nifti": outputs.get("head_mask_nifti"),
        "sex": participant.get("sex"),
        "age_years": _scalar(participant.get("age_years"), "value"),
        "t1c_series_instance_uid": series_uid("T1C"),
        "t1_series_instance_uid": series_uid("T1"),
        "t2_series_instance_uid": series_uid("T2"),
        "rtss_sop_instance_uid": rtss_plan.get("sop_instance_uid"),
        "rtss_file": rtss_plan.get("file"),
        # series_instance_uid -> native NIfTI, for catalog/series.parquet
        "series_nifti": {image(seq, "series_instance_uid"): image(seq, "nifti") for seq in images if image(seq, "series_instance_uid")},
        **_registration_qc(register),
    }


def _read_rois(path: Path) -> list[dict[str, Any]]:
    """The rtss stage's ROI rows (pyarrow alone: pandas would add ~0.35 s of import)."""
    if path is None or not Path(path).exists():
        return []
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, which imports pandas
    return [{k: _none_if_nan(v) for k, v in row.items()} for row in pq.ParquetFile(path).read().to_pylist()]


def _is_lesion(roi: dict[str, Any]) -> bool:
    if "is_lesion" in roi:
        return bool(roi["is_lesion"])
    return roi.get("label") is not None


def _none_if_nan(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if "pandas" in sys.modules:  # pd.NA / NaT can only exist where pandas is loaded
        import pandas as pd

        try:
            if pd.isna(value):
                return None
        except (TypeError, ValueError):
            pass
    return value


def catalog_case(
    plan_json: Path,
    bids_json: Path,
    rtss_json: Path,
    rois_parquet: Path,
    register_json: Path,
    vocabulary_yaml: Path,
    output_dir: Path,
    out_lesions: Path,
    out_case: Path,
) -> None:
    """One case's lesion table and case row; always writes both files."""
    from metsprep.errors import CaseExcluded

    output_dir = Path(output_dir)
    plan, bids, rtss, register = (_read_json(p) for p in (plan_json, bids_json, rtss_json, register_json))
    case = _case_base(plan, bids, rtss, register)
    status, reason, stage = _first_excluded([("bids", bids), ("rtss", rtss), ("register", register)])
    rois = _read_rois(rois_parquet)
    case["non_lesion_rois"] = [str(r.get("roi_name")) for r in rois if not _is_lesion(r)]
    case["matching_flags"] = _unique(list(plan.get("flags") or []))
    case["registration_flags"] = _unique(list(register.get("flags") or []))
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if status == "ok":
        try:
            rows, extra = _lesion_rows(case, [r for r in rois if _is_lesion(r)], output_dir, vocabulary_yaml)
        except CaseExcluded as exc:
            status, reason, stage = "excluded", exc.reason, "catalog"
            rows, extra = [], {}
    case.update(extra)
    case["location_flags"] = [f"{r['roi_name']}: {r['location_flag']}" for r in rows if r.get("location_flag")]
    case["flags"] = _unique(
        case["matching_flags"] + list(bids.get("flags") or []) + list(rtss.get("flags") or [])
        + case["registration_flags"] + (["location_name_geometry_disagree"] if case["location_flags"] else [])
        + list(extra.get("catalog_flags") or [])
    )  # fmt: skip
    case.pop("catalog_flags", None)
    case.update(status=status, status_reason=reason, excluded_at=stage)
    case.update(_case_totals(rows))
    write_table(rows, LESION_COLUMNS, "lesions", Path(out_lesions))
    Path(out_case).parent.mkdir(parents=True, exist_ok=True)
    Path(out_case).write_text(json.dumps(to_jsonable(case), indent=2) + "\n")


def _case_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    volumes = [r["volume_mm3"] for r in rows if r.get("volume_mm3") is not None]
    diameters = [r["max_diameter_mm"] for r in rows if r.get("max_diameter_mm") is not None]
    axial = [r["longest_axial_diameter_mm"] for r in rows if r.get("longest_axial_diameter_mm") is not None]
    return {
        "n_lesions": len(rows),
        "n_lesions_labelled": sum(1 for r in rows if r.get("voxel_count")),
        "n_rano_measurable": sum(1 for r in rows if r.get("rano_measurable")),
        "total_lesion_volume_mm3": float(sum(volumes)),
        "largest_lesion_volume_mm3": max(volumes) if volumes else None,
        "largest_diameter_mm": max(diameters) if diameters else None,
        "largest_axial_diameter_mm": max(axial) if axial else None,
    }


def _lesion_rows(
    case: dict[str, Any], rois: list[dict[str, Any]], output_dir: Path, vocabulary_yaml: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from scipy import ndimage as ndi

    from metsprep import location
    from metsprep.errors import CaseExcluded

    vocabulary = location.read_vocabulary(vocabulary_yaml)
    t1c_loaded = _load_volume(output_dir, case["t1c_nifti"])
    if t1c_loaded is None:
        raise CaseExcluded("the T1C image is missing, so the lesions cannot be measured")
    t1c, lps_from_ijk = t1c_loaded
    flags: list[str] = []
    labels_loaded = _load_volume(output_dir, case["lesion_labels_nifti"], dtype=np.int32)
    if labels_loaded is None:
        if len(rois):
            raise CaseExcluded("the lesion label map is missing, so the lesions cannot be measured")
        label_map = np.zeros(t1c.shape, dtype=np.int32)
    else:
        label_map = labels_loaded[0]
        if label_map.shape != t1c.shape or not np.allclose(labels_loaded[1], lps_from_ijk, atol=1e-3):
            raise CaseExcluded("the lesion label map is not on the T1C grid")
    head_loaded = _load_volume(output_dir, case["head_mask_nifti"], dtype=bool)
    head = head_loaded[0] if head_loaded is not None and head_loaded[0].shape == t1c.shape else None
    registered: dict[str, np.ndarray | None] = {}
    for seq in ("t1", "t2"):
        loaded = _load_volume(output_dir, case[f"{seq}_in_t1c_nifti"])
        if loaded is not None and loaded[0].shape != t1c.shape:
            flags.append(f"{seq}_in_t1c_not_on_t1c_grid")
            loaded = None
        registered[seq] = loaded[0] if loaded is not None else None

    # the head: the RTSS head structure where present, else the T1C foreground
    if head is not None and head.any():
        head_for_brain, plane_source = head, "head_mask"
    else:
        head_for_brain, plane_source = foreground_mask(t1c), "t1c_foreground"
    head_depth = inside_distance_mm(head_for_brain, lps_from_ijk)
    lesion_union = label_map > 0
    nab = normal_appearing_brain(t1c, head_for_brain, lesion_union, lps_from_ijk, head_depth)
    nab_mean = float(t1c[nab].mean()) if nab.any() else None
    if nab_mean is None:
        flags.append("no_normal_appearing_brain")
    plane = location.midsagittal_plane(head_for_brain, lps_from_ijk, source=plane_source)
    extra: dict[str, Any] = {"nab_t1c_mean": nab_mean, "midsagittal_source": plane.source if plane else None}
    if plane is not None:
        extra.update({f"midsagittal_point_lps_{a}_mm": float(v) for a, v in zip("xyz", plane.point_lps, strict=True)})
        extra.update(midsagittal_normal_lps=[float(v) for v in plane.normal_lps], midsagittal_tilt_deg=plane.tilt_deg)

    objects = ndi.find_objects(label_map) if label_map.max() > 0 else []
    rows = []
    by_number = sorted(rois, key=lambda r: (r.get("roi_number") is None, r.get("roi_number") or 0))
    for roi in by_number:
        label = int(roi["label"]) if roi.get("label") is not None else None
        row: dict[str, Any] = {
            "case_id": case["case_id"], "patient_id": case["patient_id"], "roi_number": roi.get("roi_number"),
            "roi_name": roi.get("roi_name"), "label": label, "contour_volume_mm3": roi.get("contour_volume_mm3"),
            "n_contours": roi.get("n_contours"), "n_contours_used": roi.get("n_contours_used"),
            "generation_algorithm": roi.get("generation_algorithm"),
            "roi_status": roi.get("status") or "ok", "roi_status_reason": roi.get("reason"), "nab_t1c_mean": nab_mean,
        }  # fmt: skip
        box = objects[label - 1] if label is not None and 0 < label <= len(objects) else None
        name_location = location.location_from_name(row["roi_name"], vocabulary)
        distance = None
        if box is not None:
            inside = label_map[box] == label
            ijk = np.argwhere(inside) + np.array([s.start for s in box])
            row.update(lesion_geometry(ijk, lps_from_ijk))
            index = tuple(ijk.T)
            for seq, image in (("t1c", t1c), ("t1", registered["t1"]), ("t2", registered["t2"])):
                stats = intensity_stats(image[index] if image is not None else None)
                row.update({f"{seq}_{k}": v for k, v in stats.items()})
            row["enhancement_ratio"] = row["t1c_mean"] / nab_mean if nab_mean else None
            if head is not None and head.any():
                d = float(head_depth[index].min())
                row["distance_to_head_surface_mm"] = d
                row["distance_to_inner_skull_mm"] = max(0.0, d - SCALP_AND_SKULL_MM)
            if plane is not None:
                distance = float(plane.signed_distance_mm(np.array([row[f"centroid_lps_{a}_mm"] for a in "xyz"]))[0])
        else:
            # a lesion ROI without voxels: the rtss stage's centroid (contour points), if any
            for a in "xyz":
                row[f"centroid_lps_{a}_mm"] = roi.get(f"centroid_lps_{a}_mm")
            row["volume_mm3"] = 0.0 if label is None else None
            if row["roi_status"] == "ok":
                row["roi_status"] = "no_voxels"
        loc = location.combine(name_location, distance, vocabulary)
        row.update(
            hemisphere=loc.hemisphere, region=loc.region, subregion=loc.subregion,
            hemisphere_name=loc.hemisphere_name, hemisphere_geometry=loc.hemisphere_geometry,
            region_name=loc.region_name, region_geometry=loc.region_geometry,
            location_source=loc.location_source, location_flag=loc.location_flag,
            midsagittal_distance_mm=loc.midsagittal_distance_mm,
        )  # fmt: skip
        rows.append(row)
    extra["catalog_flags"] = flags
    return rows, extra


# ============================================================================ tables


def _coerce(value: Any, type_: pa.DataType) -> Any:
    value = _none_if_nan(value) if not isinstance(value, (list, tuple, np.ndarray)) else value
    if value is None:
        return None
    try:
        if pa.types.is_list(type_):
            if isinstance(value, str):
                value = [v for v in value.split(";") if v.strip()]
            return [_coerce(v, type_.value_type) for v in list(value)]
        if pa.types.is_string(type_):
            return str(value)
        if pa.types.is_integer(type_):
            return int(value)
        if pa.types.is_floating(type_):
            out = float(value)
            return out if math.isfinite(out) else None
        if pa.types.is_boolean(type_):
            return bool(value)
    except (TypeError, ValueError):
        return None
    return value


def rows_to_table(rows: list[dict[str, Any]], columns: list[Column], table: str, extra_metadata: dict[str, str] | None = None) -> pa.Table:
    keys = [k for k in SORT_KEYS.get(table, []) if any(c.name == k for c in columns)]
    schema = table_schema(columns, table, {**(extra_metadata or {}), "sort_keys": json.dumps(keys)})

    def sort_key(row: dict[str, Any]) -> tuple:
        return tuple((row.get(k) is None, row.get(k) if row.get(k) is not None else 0) for k in keys)

    rows = sorted(rows, key=sort_key)
    values = [{c.name: _coerce(r.get(c.name), c.type) for c in columns} for r in rows]
    if all(_json_representable(c.type) for c in columns):
        return _table_via_json(values, schema)
    arrays = {c.name: pa.array([v[c.name] for v in values], type=c.type) for c in columns}
    return pa.Table.from_pydict(arrays, schema=schema)


def _json_representable(type_: pa.DataType) -> bool:
    if pa.types.is_list(type_):
        return _json_representable(type_.value_type)
    return any(check(type_) for check in (pa.types.is_string, pa.types.is_int64, pa.types.is_float64, pa.types.is_boolean))


def _table_via_json(values: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """The rows (already coerced to the column types) as a table, through pyarrow's JSON reader.

    Why not ``pa.array``: it imports pandas on first use where pandas is installed
    (pyarrow checks for pandas-like inputs), ~0.3 s of every per-case catalog job. JSON
    keeps every value (floats are written with ``repr``'s round-trip precision, NaN and
    infinities are already None) and the explicit schema fixes the types.
    """
    import io

    import pyarrow.json as pajson

    if not values:
        return schema.empty_table()
    ndjson = "\n".join(json.dumps(v, allow_nan=False, ensure_ascii=False) for v in values).encode()
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    table = pajson.read_json(io.BytesIO(ndjson), read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(ndjson), 1 << 20) + 1), parse_options=parse)
    return table.select(schema.names).cast(schema)


def write_table(rows: list[dict[str, Any]], columns: list[Column], table: str, path: Path, extra_metadata: dict[str, str] | None = None) -> pa.Table:
    import pyarrow.parquet as pq

    out = rows_to_table(rows, columns, table, extra_metadata)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(out, str(path))
    return out


# ============================================================================ the cohort


def _read_parquet_table(path: Path) -> pa.Table | None:
    import pyarrow.parquet as pq

    if path is None or not Path(path).exists():
        return None
    return pq.read_table(str(path))


def _columns_from_source(source: pa.Schema | None, known: list[Column], origin: str) -> list[Column]:
    """Known columns first (in their order), then the source's other columns, each with a
    description (the source field's own, else a generic one naming where it comes from)."""
    columns = list(known)
    names = {c.name for c in known}
    for f in source or []:
        if f.name in names:
            continue
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        type_ = f.type if not pa.types.is_dictionary(f.type) else f.type.value_type
        if pa.types.is_null(type_):
            type_ = pa.string()
        columns.append(Column(f.name, type_, meta.get("description") or f"`{f.name}` as written by {origin}", meta.get("unit")))
    return columns


def build_catalog(
    inventory_parquet: Path,
    match_series_parquet: Path,
    match_cases_parquet: Path,
    case_jsons: list[Path],
    lesion_parquets: list[Path],
    output_dir: Path,
    out_series: Path,
    out_cases: Path,
    out_lesions: Path,
    out_dictionary: Path,
    config: dict[str, Any],
) -> None:
    """Merge the per-case results into catalog/{series,cases,lesions}.parquet and the data dictionary."""
    import pyarrow.parquet as pq

    meta = {"config_sha256": config_digest(config or {})}
    case_results = [json.loads(Path(p).read_text()) for p in case_jsons if Path(p).exists()]

    # series
    series_source = _read_parquet_table(match_series_parquet)
    series_columns = _columns_from_source(series_source.schema if series_source is not None else None, SERIES_COLUMNS, "the match stage (work/match/series.parquet)")
    nifti_by_uid: dict[str, str] = {}
    case_by_uid: dict[str, str] = {}
    for result in case_results:
        for uid, path in (result.get("series_nifti") or {}).items():
            nifti_by_uid[uid] = path
            case_by_uid[uid] = result.get("case_id")
    series_rows = series_source.to_pylist() if series_source is not None else []
    for row in series_rows:
        uid = row.get("series_instance_uid")
        row["nifti"] = nifti_by_uid.get(uid) or row.get("nifti")
        if not row.get("case_id") and uid in case_by_uid:
            row["case_id"] = case_by_uid[uid]
    series_table = write_table(series_rows, series_columns, "series", Path(out_series), meta)

    # cases: every row of work/match/cases.parquet; a case JSON, where there is one, wins
    match_cases = _read_parquet_table(match_cases_parquet)
    match_rows = {r.get("case_id"): r for r in (match_cases.to_pylist() if match_cases is not None else [])}
    case_columns = _columns_from_source(match_cases.schema if match_cases is not None else None, CASE_COLUMNS, "the match stage (work/match/cases.parquet)")
    case_rows = []
    for result in case_results:
        row = dict(match_rows.pop(result.get("case_id"), {}) or {})
        if row.get("flags") and not result.get("matching_flags"):
            result["matching_flags"] = _coerce(row["flags"], STRINGS)
        row.update({k: v for k, v in result.items() if v is not None or k not in row})
        case_rows.append(row)
    for case_id, row in match_rows.items():
        row = dict(row)
        if row.get("status", "excluded") != "ok":
            row.setdefault("excluded_at", "match")
        else:
            # a case the match stage let through but without a case result: say so
            row.update(status="excluded", status_reason=row.get("status_reason") or "no result from the per-case stages", excluded_at="catalog")
        flags = _coerce(row.get("flags"), STRINGS) or []
        row["flags"], row["matching_flags"] = flags, flags
        row.setdefault("n_lesions", 0)
        case_rows.append(row)
    cases_table = write_table(case_rows, case_columns, "cases", Path(out_cases), meta)

    # lesions
    lesion_rows: list[dict[str, Any]] = []
    for path in lesion_parquets:
        if Path(path).exists():
            lesion_rows.extend(pq.read_table(str(path)).to_pylist())
    lesions_table = write_table(lesion_rows, LESION_COLUMNS, "lesions", Path(out_lesions), meta)

    inventory = _read_parquet_table(inventory_parquet)
    schemas = {"series": series_table.schema, "cases": cases_table.schema, "lesions": lesions_table.schema}
    if inventory is not None:
        schemas = {"inventory": inventory.schema, **schemas}
    Path(out_dictionary).parent.mkdir(parents=True, exist_ok=True)
    Path(out_dictionary).write_text(data_dictionary(schemas))


# ============================================================================ data dictionary


def _field_meta(f: pa.Field) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}


def _schema_meta(schema: pa.Schema) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if not k.startswith(b"ARROW:") and k != b"pandas"}


def _type_name(type_: pa.DataType) -> str:
    """Type as written in the dictionary (list<double>, not the list's child field name)."""
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return f"list<{_type_name(type_.value_type)}>"
    return str(type_)


def _sort_keys(value: str | None) -> list[str]:
    """A table's ``sort_keys`` metadata: a JSON list (catalog tables) or a plain
    comma-separated string (``inventory.parquet`` writes ``"path"``)."""
    if not value:
        return []
    try:
        keys = json.loads(value)
    except json.JSONDecodeError:
        keys = value.split(",")
    return [str(k).strip() for k in ([keys] if isinstance(keys, str) else keys) if str(k).strip()]


def data_dictionary(schemas: dict[str, pa.Schema]) -> str:
    """Markdown data dictionary of the catalog tables, generated from their schemas."""
    lines = [
        "# metsprep catalog: data dictionary",
        "",
        "Generated by `metsprep.catalog.data_dictionary` from the Parquet schemas; do not edit.",
        "All paths are relative to the output folder, POSIX style. LPS = DICOM patient frame",
        "(x to patient left, y posterior, z superior); RAS = NIfTI frame.",
        "",
    ]
    for table, schema in schemas.items():
        meta = _schema_meta(schema)
        lines += [f"## `catalog/{table}.parquet`", ""]
        description = meta.get("description") or TABLE_DESCRIPTIONS.get(table, "")
        if description:
            lines += [description, ""]
        sort_keys = _sort_keys(meta.get("sort_keys"))
        if sort_keys:
            lines += [f"Row order: sorted by {', '.join(f'`{k}`' for k in sort_keys)} (nulls last).", ""]
        provenance = [f"{k} `{meta[k]}`" for k in ("metsprep_version", "config_sha256", "created_by") if meta.get(k)]
        if provenance:
            lines += ["File metadata: " + ", ".join(provenance) + ".", ""]
        lines += ["| column | type | unit | description |", "| --- | --- | --- | --- |"]
        for f in schema:
            fm = _field_meta(f)
            text = (fm.get("description") or "").replace("|", "\\|")
            lines.append(f"| `{f.name}` | {_type_name(f.type)} | {fm.get('unit', '')} | {text} |")
        lines.append("")
    return "\n".join(lines)
