"""Lesion morphometry on the T1C voxel grid: pure functions over voxel indices and masks.

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

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from metsprep.frames import RAS_FROM_LPS, apply_affine, spacing_mm, voxel_volume_mm3

RANO_MEASURABLE_MM = 10.0
RANO_MIN_SLICES = 2
BRAIN_DEPTH_MM = 15.0
LESION_MARGIN_MM = 5.0
NAB_PERCENTILES = (10.0, 90.0)
SCALP_AND_SKULL_MM = 10.0


def to_lps(ijk: NDArray[Any], lps_from_ijk: NDArray[np.float64]) -> NDArray[np.float64]:
    """Voxel indices (n x 3) to LPS mm, as an n x 3 array."""
    return apply_affine(lps_from_ijk, np.asarray(ijk, dtype=np.float64).reshape(-1, 3))


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


def mask_box(mask: np.ndarray, margin: np.ndarray | int = 0) -> tuple[slice, ...] | None:
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
    """For each voxel of `mask`, the distance (mm) to the nearest voxel centre outside it
    (0 outside the mask), float32.

    Exact: ITK's Maurer distance map of the outside, whose nearest voxel to any mask voxel
    is always one face-adjacent to the mask (else a neighbour of it would be nearer), i.e.
    on the contour the map measures to. Computed on the mask's bounding box plus one voxel:
    every voxel outside the box is outside the mask, and the volume border counts as outside
    (a head cut by the field of view). ITK's map is 2-3x faster than scipy's feature
    transform at 512x512x45 and needs a fraction of its memory.
    """
    import SimpleITK as sitk

    mask = mask.astype(bool, copy=False)
    distance = np.zeros(mask.shape, dtype=np.float32)
    box = mask_box(mask)
    if box is None:
        return distance
    outside = np.pad(~mask[box], 1, constant_values=True).astype(np.uint8)
    image = sitk.GetImageFromArray(outside)  # numpy axes (i, j, k) are ITK's (z, y, x)
    image.SetSpacing([float(s) for s in spacing_mm(lps_from_ijk)[::-1]])
    signed = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    inside = sitk.GetArrayViewFromImage(signed)[1:-1, 1:-1, 1:-1]
    distance[box] = np.where(mask[box], inside, 0.0)
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
    box = mask_box(mask, np.ceil(radius_mm / spacing).astype(np.int64) + 1)
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


def lesion_geometry(ijk: np.ndarray, lps_from_ijk: np.ndarray) -> dict[str, Any]:
    """Size, position and extent of one lesion from its voxel indices (n x 3)."""
    voxel_volume = voxel_volume_mm3(lps_from_ijk)
    volume = len(ijk) * voxel_volume
    centroid_ijk = ijk.mean(axis=0)
    centroid_lps = to_lps(centroid_ijk, lps_from_ijk)[0]
    centroid_ras = apply_affine(RAS_FROM_LPS, centroid_lps)
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
