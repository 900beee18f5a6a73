"""Acquisition: stack geometry of each series, the rigid patient motion, and image rendering.

Rendering samples the anatomy at each voxel centre of a series: the series' LPS points are
mapped to the T1C frame (inverse motion), then to MNI voxel coordinates (inverse head pose),
and the per-sequence contrast volume is sampled trilinearly. 2-3 samples across the slab
thickness are averaged (partial volume). Lesions are evaluated analytically in the T1C frame,
then a smooth bias field, a gain and Rician noise are applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metsprep.frames import apply_affine

from .anatomy import TissueMaps, alternate_contrasts, sample_volume
from .lesions import Lesion


def format_ds(value: float, decimals: int) -> str:
    """Decimal string the GE way: fixed decimals, trailing zeros trimmed, '-0' kept."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-") else "0"


@dataclass
class StackGeometry:
    """An axial(-ish) stack: directions, spacing and slice positions as written to the file."""

    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # DICOM order: (between rows, between columns)
    slice_thickness: float
    slice_spacing: float  # true centre-to-centre distance along the normal
    iop_strings: list[str]
    ipp_strings: list[list[str]]  # per slice k (k = InstanceNumber - 1)
    tilt_deg: float

    @property
    def n_slices(self) -> int:
        return len(self.ipp_strings)

    @property
    def row_dir(self) -> np.ndarray:
        return np.array([float(v) for v in self.iop_strings[:3]])

    @property
    def col_dir(self) -> np.ndarray:
        return np.array([float(v) for v in self.iop_strings[3:]])

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    @property
    def positions(self) -> np.ndarray:
        return np.array([[float(v) for v in p] for p in self.ipp_strings])

    @property
    def lps_from_ijk(self) -> np.ndarray:
        """Voxel index (i col, j row, k slice of the full stack) to LPS mm."""
        pos = self.positions
        m = np.eye(4)
        m[:3, 0] = self.row_dir * self.pixel_spacing[1]
        m[:3, 1] = self.col_dir * self.pixel_spacing[0]
        m[:3, 2] = (pos[-1] - pos[0]) / (self.n_slices - 1)
        m[:3, 3] = pos[0]
        return m


def make_stack(
    centre_lps: np.ndarray,
    matrix: int,
    fov_mm: float,
    thickness: float,
    gap: float,
    n_slices: int,
    tilt_deg: float,
    superior_first: bool,
    minus_zero: bool,
) -> StackGeometry:
    spacing_px = fov_mm / matrix
    t = np.deg2rad(tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(t), np.sin(t)])
    if tilt_deg:
        iop = [format_ds(v, 6) for v in (*row, *col)]
    else:
        zero = "-0" if minus_zero else "0"
        iop = ["1", zero, "0", zero, "1", "0" if not minus_zero else "-0"]
    row_w = np.array([float(v) for v in iop[:3]])
    col_w = np.array([float(v) for v in iop[3:]])
    normal = np.cross(row_w, col_w)
    normal /= np.linalg.norm(normal)
    spacing = thickness + gap
    step = -spacing if superior_first else spacing
    half_plane = ((matrix - 1) / 2.0) * spacing_px
    positions = [
        centre_lps - half_plane * row_w - half_plane * col_w + (k - (n_slices - 1) / 2.0) * step * normal
        for k in range(n_slices)
    ]
    ipp = [[format_ds(v, 4) for v in p] for p in positions]
    return StackGeometry(
        rows=matrix,
        columns=matrix,
        pixel_spacing=(float(format_ds(spacing_px, 6)), float(format_ds(spacing_px, 6))),
        slice_thickness=thickness,
        slice_spacing=spacing,
        iop_strings=iop,
        ipp_strings=ipp,
        tilt_deg=tilt_deg,
    )


# --- rigid motion -------------------------------------------------------------------------


def rotation_matrix(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    a = np.deg2rad(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def rigid_about(rotation: np.ndarray, centre: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """x -> R (x - c) + c + t, the ITK Euler3D/VersorRigid3D parameterisation."""
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = centre - rotation @ centre + translation
    return m


def itk_euler_zxy_deg(rotation: np.ndarray) -> list[float]:
    """Angles (x, y, z) of ITK Euler3DTransform (ComputeZYX off: R = Rz @ Rx @ Ry)."""
    ax = np.arcsin(np.clip(rotation[2, 1], -1.0, 1.0))
    ay = np.arctan2(-rotation[2, 0], rotation[2, 2])
    az = np.arctan2(-rotation[0, 1], rotation[1, 1])
    return [float(np.rad2deg(v)) for v in (ax, ay, az)]


def _map(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0, output=np.float32)


def _head_rows_cols(
    maps: TissueMaps, mni_ijk_from_ijk: np.ndarray, k: float, i0: int, i1: int, j0: int, j1: int, step: int = 8
) -> tuple[int, int, int, int]:
    """Row range [b0, b1) and column range [c0, c1) of slice k that can contain head signal."""
    jj, ii = np.meshgrid(np.arange(j0, j1 + step, step, dtype=float), np.arange(i0, i1 + step, step, dtype=float),
                         indexing="ij")
    coords = np.stack([mni_ijk_from_ijk[d, 0] * ii + mni_ijk_from_ijk[d, 1] * jj + mni_ijk_from_ijk[d, 2] * k
                       + mni_ijk_from_ijk[d, 3] for d in range(3)])
    # the head map is smooth over a few mm; dilate the coarse hit by one coarse cell plus slab reach
    head = np.zeros(jj.shape, dtype=bool)
    for dk in (-1.0, 0.0, 1.0):
        shifted = coords + mni_ijk_from_ijk[:3, 2:3, None] * dk
        head |= _map(maps.head, shifted) > 0.0
    if not head.any():
        return 0, 0, 0, 0
    rows_hit = np.flatnonzero(head.any(axis=1))
    cols_hit = np.flatnonzero(head.any(axis=0))
    b0 = max(j0, j0 + (rows_hit[0] - 1) * step)
    b1 = min(j1, j0 + (rows_hit[-1] + 2) * step)
    c0 = max(i0, i0 + (cols_hit[0] - 1) * step)
    c1 = min(i1, i0 + (cols_hit[-1] + 2) * step)
    return b0, b1, c0, c1


# --- rendering ----------------------------------------------------------------------------

# Lesion signal (same units as anatomy.TISSUE_SIGNAL): solid/rim, necrotic core, oedema.
LESION_SIGNAL = {"T1C": (1320.0, 330.0, 700.0), "T1": (560.0, 380.0, 690.0), "T2": (1150.0, 1750.0, 1450.0)}


@dataclass
class RenderParams:
    sequence: str  # T1C | T1 | T2 (contrast and lesion signal)
    gain: float
    bias_coeffs: np.ndarray  # 6 coefficients: linear x,y,z and squares, on (lps - centre)/100
    bias_centre_lps: np.ndarray
    noise_sigma: float
    contrast: str = "default"  # or "alternate" (anatomy.ALTERNATE_TISSUE_SIGNAL)


def render_series(
    maps: TissueMaps,
    geometry: StackGeometry,
    t1c_lps_from_series_lps: np.ndarray,
    mni_lps_from_t1c_lps: np.ndarray,
    lesions: list[Lesion],
    params: RenderParams,
    noise_rng: np.random.Generator,
) -> np.ndarray:
    """Real-valued magnitude image (n_slices, rows, cols), float32, before quantisation."""
    lps_from_ijk = geometry.lps_from_ijk
    t1c_from_ijk = t1c_lps_from_series_lps @ lps_from_ijk
    mni_ijk_from_ijk = np.linalg.inv(maps.lps_from_ijk) @ mni_lps_from_t1c_lps @ t1c_from_ijk
    contrast = maps.contrasts[params.sequence] if params.contrast == "default" else alternate_contrasts()[params.sequence]
    rows, cols, n = geometry.rows, geometry.columns, geometry.n_slices

    # crop to the projection of the head's bounding box (plus a margin)
    lo, hi = maps.head_bbox_ijk
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    in_series = apply_affine(np.linalg.inv(mni_ijk_from_ijk), corners)
    i0 = int(np.clip(np.floor(in_series[:, 0].min()) - 2, 0, cols))
    i1 = int(np.clip(np.ceil(in_series[:, 0].max()) + 3, 0, cols))
    j0 = int(np.clip(np.floor(in_series[:, 1].min()) - 2, 0, rows))
    j1 = int(np.clip(np.ceil(in_series[:, 1].max()) + 3, 0, rows))

    n_sub = 3 if geometry.slice_thickness > 4.0 else 2
    offsets_mm = geometry.slice_thickness * ((np.arange(n_sub) + 0.5) / n_sub - 0.5)
    offsets_k = offsets_mm / geometry.slice_spacing * np.sign(lps_from_ijk[:3, 2] @ geometry.normal)
    signal = LESION_SIGNAL[params.sequence]
    series_ijk_from_t1c = np.linalg.inv(t1c_from_ijk)
    centres_ijk = [apply_affine(series_ijk_from_t1c, les.centre_lps) for les in lesions]
    px_i, px_j = geometry.pixel_spacing[1], geometry.pixel_spacing[0]
    a = mni_ijk_from_ijk

    image = np.zeros((n, rows, cols), dtype=np.float32)
    for k in range(n):
        # tighter per-slice crop from a coarse look at the head map
        b0, b1, c0, c1 = _head_rows_cols(maps, a, k, i0, i1, j0, j1)
        if b1 <= b0 or c1 <= c0:
            continue
        jj, ii = np.meshgrid(np.arange(b0, b1, dtype=np.float64), np.arange(c0, c1, dtype=np.float64), indexing="ij")
        in_plane = [a[d, 0] * ii + a[d, 1] * jj + a[d, 3] for d in range(3)]
        acc = np.zeros(ii.shape, dtype=np.float32)
        for dk in offsets_k:
            kk = k + dk
            coords = np.stack([in_plane[d] + a[d, 2] * kk for d in range(3)])
            values = _map(contrast, coords)
            for les, c in zip(lesions, centres_ijk):
                reach = les.outer_radius_mm
                if abs(c[2] - kk) * geometry.slice_spacing > reach:
                    continue
                p0 = int(max(c0, np.floor(c[0] - reach / px_i) - 1)) - c0
                p1 = int(min(c1, np.ceil(c[0] + reach / px_i) + 2)) - c0
                q0 = int(max(b0, np.floor(c[1] - reach / px_j) - 1)) - b0
                q1 = int(min(b1, np.ceil(c[1] + reach / px_j) + 2)) - b0
                if p1 <= p0 or q1 <= q0:
                    continue
                sub = np.stack([ii[q0:q1, p0:p1], jj[q0:q1, p0:p1], np.full((q1 - q0, p1 - p0), kk)], axis=-1)
                ratio = les.radial_ratio(apply_affine(t1c_from_ijk, sub))
                patch = values[q0:q1, p0:p1]
                if les.oedema_extent > 0:
                    band = (ratio > 1.0) & (ratio < 1.0 + les.oedema_extent)
                    if band.any():
                        wm = sample_volume(maps.wm, apply_affine(a, sub[band]))
                        falloff = np.clip((1.0 + les.oedema_extent - ratio[band]) / les.oedema_extent, 0, 1) ** 0.7
                        w = np.clip(wm * 1.2, 0, 1) * falloff
                        patch[band] = patch[band] * (1 - w) + signal[2] * w
                inside = ratio <= 1.0
                if les.ring_enhancing:
                    core = ratio < les.core_fraction
                    patch[inside & ~core] = signal[0]
                    patch[core] = signal[1]
                else:
                    patch[inside] = signal[0]
            acc += values
        image[k, b0:b1, c0:c1] = acc / n_sub

    # smooth multiplicative bias field in the scanner frame, evaluated at pixel centres
    jg, ig = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    for k in range(n):
        lps = apply_affine(lps_from_ijk, np.stack([ig, jg, np.full_like(ig, k)], axis=-1))
        x = (lps - params.bias_centre_lps) / 100.0
        log_bias = x @ params.bias_coeffs[:3] + (x * x) @ params.bias_coeffs[3:]
        image[k] *= (params.gain * np.exp(log_bias)).astype(np.float32)
    # Rician magnitude noise
    n1 = noise_rng.normal(0.0, params.noise_sigma, size=image.shape).astype(np.float32)
    n2 = noise_rng.normal(0.0, params.noise_sigma, size=image.shape).astype(np.float32)
    return np.sqrt((image + n1) ** 2 + n2**2)
