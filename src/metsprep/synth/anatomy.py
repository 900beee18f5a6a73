"""A real brain for the synthetic cohort: MNI152 2009a tissue maps from the nilearn wheel.

Everything here lives on the MNI grid (1 mm, RAS affine in the NIfTI files). Maps are built
once per process: GM and WM probabilities come from the templates; CSF, dura, skull and scalp
are shells at given distances outside a closed intracranial mask. Per-sequence contrast
volumes are weighted sums of the tissue maps. Lesions are added later, in the T1C frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from metsprep.frames import LPS_FROM_RAS, apply_affine

# Relative signal of each tissue (arbitrary units near GE magnitude images).
TISSUE_SIGNAL = {
    #         gm    wm    csf   dura  skull marrow scalp
    "T1": (600.0, 850.0, 250.0, 450.0, 60.0, 450.0, 1150.0),
    "T1C": (620.0, 860.0, 260.0, 1050.0, 60.0, 500.0, 1150.0),
    "T2": (800.0, 520.0, 1900.0, 300.0, 40.0, 300.0, 900.0),
}
# Another scanner's contrast (case option contrast="alternate"): weaker grey/white contrast
# and brighter CSF on T1, strongly enhancing dura and bright marrow on T1C, darker CSF and
# brighter fat on T2. Registration and classification must not depend on the default ratios.
ALTERNATE_TISSUE_SIGNAL = {
    #         gm    wm    csf   dura  skull marrow scalp
    "T1": (700.0, 820.0, 420.0, 380.0, 90.0, 900.0, 1400.0),
    "T1C": (720.0, 830.0, 430.0, 1400.0, 90.0, 950.0, 1400.0),
    "T2": (950.0, 700.0, 1400.0, 250.0, 60.0, 700.0, 1300.0),
}


def template_dir() -> Path:
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


@dataclass(frozen=True)
class TissueMaps:
    """Float32 maps on the MNI grid and its lps_from_ijk."""

    lps_from_ijk: np.ndarray
    brain: np.ndarray  # GM + WM probability
    wm: np.ndarray
    head: np.ndarray  # 1 inside the scalp surface, soft edge
    brain_depth_mm: np.ndarray  # lower bound of the distance to non-brain (prob <= 0.5), on the 2 mm grid [::2]
    contrasts: dict[str, np.ndarray]
    head_bbox_ijk: tuple[np.ndarray, np.ndarray]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.brain.shape


def _ramp(x: np.ndarray, lo: float, hi: float, width: float = 1.0) -> np.ndarray:
    """Soft indicator of lo < x < hi with linear edges of the given width."""
    up = np.clip((x - lo) / width + 0.5, 0.0, 1.0)
    down = np.clip((hi - x) / width + 0.5, 0.0, 1.0)
    return (up * down).astype(np.float32)


def _weighted(tissues: tuple[np.ndarray, ...], table: Mapping[str, tuple[float, ...]]) -> dict[str, np.ndarray]:
    contrasts = {}
    for seq, weights in table.items():
        vol = np.zeros_like(tissues[0])
        for w, t in zip(weights, tissues):
            vol += np.float32(w) * t
        contrasts[seq] = vol
    return contrasts


@lru_cache(maxsize=1)
def alternate_contrasts() -> dict[str, np.ndarray]:
    """The sequences' volumes with ALTERNATE_TISSUE_SIGNAL (computed on first use; the tissue
    volumes are rebuilt rather than kept, so the default path holds no extra memory)."""
    tissues, _, _ = _tissue_volumes()
    return _weighted(tissues, ALTERNATE_TISSUE_SIGNAL)


@lru_cache(maxsize=1)
def tissue_maps() -> TissueMaps:
    """The tissue maps and each sequence's signal volume on the MNI grid (once per process)."""
    tissues, ras_from_ijk, head = _tissue_volumes()
    gm, wm = tissues[0], tissues[1]
    brain = np.clip(gm + wm, 0.0, 1.0)
    contrasts = _weighted(tissues, TISSUE_SIGNAL)
    from scipy import ndimage as ndi

    # depth of brain tissue on the 2 mm grid, made conservative by the coarse grid's half diagonal
    depth = ndi.distance_transform_edt(brain[::2, ::2, ::2] > 0.5, sampling=2.0).astype(np.float32) - 1.8
    nz = np.argwhere(head > 0.01)
    return TissueMaps(
        lps_from_ijk=LPS_FROM_RAS @ ras_from_ijk,
        brain=brain,
        wm=wm,
        head=head,
        brain_depth_mm=depth,
        contrasts=contrasts,
        head_bbox_ijk=(nz.min(axis=0).astype(float), nz.max(axis=0).astype(float)),
    )


def _tissue_volumes() -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """(gm, wm, csf, dura, skull, marrow, scalp) on the MNI grid, its ras_from_ijk, the head."""
    import nibabel as nib
    from scipy import ndimage as ndi

    folder = template_dir()

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        img = nib.load(str(folder / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"))
        return np.asarray(img.dataobj, dtype=np.float32) / 255.0, img.affine

    gm, ras_from_ijk = load("gm")
    wm, _ = load("wm")
    brain = np.clip(gm + wm, 0.0, 1.0)
    # Distances on a 2 mm grid (8x cheaper), trilinearly upsampled: shells need ~1 mm accuracy.
    coarse = brain[::2, ::2, ::2] > 0.3
    coarse = ndi.binary_dilation(coarse, iterations=2)
    coarse = ndi.binary_erosion(coarse, iterations=2, border_value=1)
    coarse = ndi.binary_fill_holes(coarse)  # close sulci and ventricles into one intracranial volume
    outside_coarse = ndi.distance_transform_edt(~coarse, sampling=2.0).astype(np.float32)
    # distance is 0 inside; shift the zero level out by half a coarse voxel before upsampling
    outside_mm = _upsample(outside_coarse, brain.shape)
    inside_ic = np.clip(2.5 - outside_mm, 0.0, 1.0)  # intracranial incl. ~2 mm subarachnoid CSF
    csf = np.clip(inside_ic - brain, 0.0, 1.0)
    dura = _ramp(outside_mm, 2.0, 3.2)
    skull_outer = _ramp(outside_mm, 3.2, 9.0)
    marrow = _ramp(outside_mm, 5.0, 7.0, 1.5)
    skull = np.clip(skull_outer - marrow, 0.0, 1.0)
    scalp = _ramp(outside_mm, 9.0, 14.0)
    head = np.clip(14.0 - outside_mm + 0.5, 0.0, 1.0).astype(np.float32)

    return (gm, wm, csf, dura, skull, marrow, scalp), ras_from_ijk, head


@lru_cache(maxsize=1)
def brain_candidates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI LPS coordinates of 2 mm-grid brain voxels, their depth (mm) and the brain centroid (LPS)."""
    maps = tissue_maps()
    ijk = np.argwhere(maps.brain_depth_mm >= 1.0)
    depth = maps.brain_depth_mm[tuple(ijk.T)]
    lps = apply_affine(maps.lps_from_ijk, 2.0 * ijk.astype(float))
    centroid = lps.mean(axis=0)
    return lps, depth, centroid


def _upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from scipy import ndimage as ndi

    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) / 2.0 for n in shape], indexing="ij", sparse=True)
    coords = np.broadcast_arrays(*grids)
    return ndi.map_coordinates(coarse, coords, order=1, mode="nearest", output=np.float32)


def sample_volume(volume: np.ndarray, mni_ijk: np.ndarray, order: int = 1) -> np.ndarray:
    """Trilinear samples of an MNI-grid volume at (..., 3) voxel coordinates; 0 outside."""
    from scipy import ndimage as ndi

    flat = mni_ijk.reshape(-1, 3).T
    out = ndi.map_coordinates(volume, flat, order=order, mode="constant", cval=0.0, output=np.float32)
    return out.reshape(mni_ijk.shape[:-1])


# --- anatomical labels from MNI coordinates (RAS mm) ---------------------------------------

_SITES = {
    "frontal": ["frontal", "sup_front", "mid_front", "front"],
    "temporal": ["lat_temp", "temporal", "temp", "med_temp"],
    "parietal": ["parietal", "sup_par", "par"],
    "occipital": ["occipole", "occipital", "occ"],
    "cerebellum": ["mid_cblm", "cblm", "lat_cblm", "cerebellum"],
    "brainstem": ["pons", "brainstem"],
    "deep": ["thal", "basal_gang", "caud"],
}


def site_name(region: str, x: float, y: float, z: float, rng: np.random.Generator) -> str:
    """Site token in the planners' style, chosen from the true location where it matters."""
    ax = abs(x)
    if region == "temporal":
        return "lat_temp" if ax > 48 else ("temp_pole" if y > 0 else str(rng.choice(["temporal", "temp"])))
    if region == "occipital":
        return "occipole" if y < -92 else str(rng.choice(["occipital", "occ"]))
    if region == "cerebellum":
        return "mid_cblm" if ax < 20 else str(rng.choice(["cblm", "lat_cblm", "cerebellum"]))
    if region == "deep":
        return "thal" if y < -8 else str(rng.choice(["basal_gang", "caud"]))
    if region == "frontal":
        return "sup_front" if z > 50 else str(rng.choice(["frontal", "mid_front", "front"]))
    if region == "parietal":
        return "sup_par" if z > 55 else str(rng.choice(["parietal", "par"]))
    return str(rng.choice(_SITES[region]))


def hemisphere_of_mni_lps_x(x_lps: float, midline_mm: float = 3.0) -> str:
    """LPS x > 0 is the patient's left."""
    if abs(x_lps) < midline_mm:
        return "midline"
    return "L" if x_lps > 0 else "R"
