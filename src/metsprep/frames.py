"""Coordinate frames and affines: the one place that knows LPS, RAS and voxel indices.

* LPS: the DICOM patient frame, millimetres (x to patient left, y posterior, z superior).
  RTSS points, Image Position (Patient) and ITK/SimpleITK physical space are LPS.
* RAS: the NIfTI frame. ``ras_from_lps = diag(-1, -1, 1, 1)``.
* ijk: voxel indices, i = column, j = row, k = slice, zero-based, voxel centres.

Affines are named ``<to>_from_<from>``; a 4x4 homogeneous matrix maps column vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Affine = NDArray[np.float64]

RAS_FROM_LPS: Affine = np.diag([-1.0, -1.0, 1.0, 1.0])
LPS_FROM_RAS: Affine = RAS_FROM_LPS  # the flip is its own inverse

#: Two grids whose affines differ by less than this (mm per entry) are the same grid.
SAME_GRID_TOLERANCE_MM = 1e-3


def apply_affine(matrix: ArrayLike, points: ArrayLike) -> NDArray[np.float64]:
    """Points (n x 3, or one point of 3) through a 4x4 affine; same shape back."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    flat = p.reshape(-1, 3)
    out = flat @ m[:3, :3].T + m[:3, 3]
    return out.reshape(p.shape)


def spacing_mm(lps_from_ijk: ArrayLike) -> NDArray[np.float64]:
    """Length of the i, j and k steps (mm)."""
    return np.asarray(np.linalg.norm(np.asarray(lps_from_ijk, np.float64)[:3, :3], axis=0))


def voxel_volume_mm3(lps_from_ijk: ArrayLike) -> float:
    return float(abs(np.linalg.det(np.asarray(lps_from_ijk, np.float64)[:3, :3])))


def slice_normal_lps(lps_from_ijk: ArrayLike) -> NDArray[np.float64]:
    """Unit normal of the ij planes: i step x j step (DICOM's row x column direction)."""
    m = np.asarray(lps_from_ijk, np.float64)[:3, :3]
    normal = np.cross(m[:, 0], m[:, 1])
    return np.asarray(normal / np.linalg.norm(normal))


@dataclass(frozen=True)
class Grid:
    """A voxel grid: its shape (i, j, k) and ``lps_from_ijk``."""

    shape: tuple[int, int, int]
    lps_from_ijk: Affine

    @classmethod
    def from_ras_from_ijk(cls, shape: ArrayLike, ras_from_ijk: ArrayLike) -> Grid:
        dims = tuple(int(n) for n in np.asarray(shape).ravel()[:3])
        if len(dims) != 3:
            raise ValueError(f"a grid needs 3 dimensions, got {dims}")
        matrix = np.asarray(ras_from_ijk, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"ras_from_ijk must be 4x4, got {matrix.shape}")
        return cls((dims[0], dims[1], dims[2]), LPS_FROM_RAS @ matrix)

    @classmethod
    def from_nifti(cls, image: Any) -> Grid:
        """The grid of a nibabel image (its best affine: the sform where it is set)."""
        return cls.from_ras_from_ijk(image.shape[:3], image.affine)

    def same_as(self, other: Grid, tolerance_mm: float = SAME_GRID_TOLERANCE_MM) -> bool:
        return self.shape == other.shape and bool(
            np.allclose(self.lps_from_ijk, other.lps_from_ijk, atol=tolerance_mm)
        )
