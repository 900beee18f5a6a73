"""The head (not air) of an MR image: the one head-mask rule every stage uses.

Otsu threshold of a copy smoothed by a Gaussian of ``HEAD_SMOOTHING_MM``, largest
connected component, enclosed holes (ventricles, sulcal CSF) filled. Registration uses
it to restrict the metric and place the rotation centre; the catalog uses it as the head
where the RTSS has no ``*Skull`` structure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from metsprep.frames import spacing_mm

if TYPE_CHECKING:
    import SimpleITK as sitk

HEAD_SMOOTHING_MM = 2.0


def head_mask(image: sitk.Image, shrink: tuple[int, int, int] = (1, 1, 1)) -> sitk.Image:
    """Head mask of a SimpleITK image (uint8, same frame); ``shrink`` > 1 computes it on a
    coarser grid of the same physical extent."""
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    if any(f > 1 for f in shrink):
        image = sitk.Shrink(image, list(shrink))
    smooth = sitk.SmoothingRecursiveGaussian(image, HEAD_SMOOTHING_MM)
    foreground = sitk.OtsuThreshold(smooth, 0, 1)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True)
    filled: sitk.Image = sitk.BinaryFillhole(components == 1)
    return filled


def head_mask_ijk(data_ijk: NDArray[Any], lps_from_ijk: NDArray[np.float64]) -> NDArray[np.bool_]:
    """The same rule on a numpy volume indexed [i, j, k] with its grid (for the smoothing
    in mm); returns a boolean volume indexed [i, j, k]."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data_ijk, (2, 1, 0)), dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing_mm(lps_from_ijk)])
    mask = sitk.GetArrayFromImage(head_mask(image)).astype(bool)
    return np.asarray(np.transpose(mask, (2, 1, 0)))
