"""The pixels' opinion on the sequence labels of the three series a case uses.

Two checks, on the T1C grid (T1 and T2 resampled onto it by the register stage):

* Weighting. Inside the brain, the darkest tenth of the T1C is mostly cerebrospinal fluid and
  its 70th-95th percentile mostly white matter (vessels and enhancement lie above). CSF is
  darker than white matter on a T1-weighted image and brighter on a T2-weighted one, so the
  sign of ``(csf - wm) / (csf + wm)`` in the other image gives its weighting. It is measured in
  blocks of the brain (a bias field is nearly constant within one) and the median taken.
* Contrast. Metastases enhance: relative to the brain around them they are brighter on the T1C
  than on the pre-contrast T1. ``t1c_lesion_ratio - t1_lesion_ratio`` (each the lesions' mean
  over the brain's median) is clearly positive for a right pair, near zero when the "T1" is a
  post-contrast image too, negative when the two are swapped.

A check that lacks the voxels it needs says so (`unclear` with a reason); it never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from metsprep.catalog.lesion_features import mask_box

#: |csf - wm| / (csf + wm) below which the weighting is not decided
WEIGHTING_MARGIN = 0.05
#: T1C lesion ratio minus T1 lesion ratio below which the T1 is deemed to enhance like the T1C
ENHANCEMENT_MARGIN = 0.10
MIN_VOXELS = 200
MIN_LESION_VOXELS = 20


@dataclass(frozen=True)
class PixelCheck:
    """One series' check: what the pixels say, and whether that agrees with its label."""

    role: str  # T1 | T2 (the series checked; the T1C is the reference)
    pixel_label: str | None  # T1 | T2 | T1C-like | None when unclear
    result: str  # agrees | disagrees | unclear
    score: float | None
    reason: str


def weighting_check(
    role: str, t1c: NDArray[np.floating], moving: NDArray[np.floating], brain: NDArray[np.bool_]
) -> PixelCheck:
    """T1 vs T2 weighting of ``moving`` (``role`` is its label) from CSF vs white matter.

    Measured block by block (a bias field is nearly constant within one) and summarised by
    the median over the blocks, so neither image's bias field decides.
    """
    region = brain & (moving > 0) & np.isfinite(moving)
    if region.sum() < MIN_VOXELS:
        return PixelCheck(role, None, "unclear", None, "too few brain voxels with signal in the image")
    scores, csf_means, wm_means = [], [], []
    for block in _blocks(region):
        reference, values = t1c[block][region[block]], moving[block][region[block]]
        if len(reference) < MIN_VOXELS:
            continue
        low, wm_low, wm_high = np.percentile(reference, [10, 70, 95])
        csf = values[reference <= low]
        wm = values[(reference >= wm_low) & (reference <= wm_high)]
        if len(csf) < MIN_VOXELS // 10 or len(wm) < MIN_VOXELS // 10:
            continue
        csf_mean, wm_mean = float(np.mean(csf)), float(np.mean(wm))
        if csf_mean + wm_mean > 0:
            scores.append((csf_mean - wm_mean) / (csf_mean + wm_mean))
            csf_means.append(csf_mean)
            wm_means.append(wm_mean)
    if not scores:
        return PixelCheck(role, None, "unclear", None, "too few fluid-like or white-matter-like voxels")
    score = float(np.median(scores))
    what = (f"fluid / white matter {np.median(csf_means):.0f} / {np.median(wm_means):.0f} "
            f"(contrast {score:+.2f}, median of {len(scores)} blocks)")  # fmt: skip
    if abs(score) < WEIGHTING_MARGIN:
        return PixelCheck(role, None, "unclear", score, f"{what}: neither T1- nor T2-like")
    pixel_label = "T2" if score > 0 else "T1"
    result = "agrees" if pixel_label == role else "disagrees"
    return PixelCheck(role, pixel_label, result, score, f"{what}: looks {pixel_label}-weighted")


def _blocks(region: NDArray[np.bool_], per_axis: tuple[int, int, int] = (3, 3, 2)) -> list[tuple[slice, ...]]:
    """The bounding box of ``region`` cut into ``per_axis`` blocks (index space)."""
    box = mask_box(region)  # from axis projections: an argwhere of a 512x512x45 region costs ~0.4 s
    if box is None:
        return []
    lo, hi = [s.start for s in box], [s.stop for s in box]
    edges = [np.linspace(lo[a], hi[a], per_axis[a] + 1).round().astype(int) for a in range(3)]
    return [tuple(slice(edges[a][n[a]], edges[a][n[a] + 1]) for a in range(3))
            for n in np.ndindex(*per_axis)]  # fmt: skip


def enhancement_check(
    t1c: NDArray[np.floating], t1: NDArray[np.floating], lesions: NDArray[np.bool_], brain: NDArray[np.bool_]
) -> PixelCheck:
    """Whether the lesions enhance on the T1C more than on the T1 (role T1 checked)."""
    lesion_region = lesions & (t1 > 0)
    brain_region = brain & ~lesions & (t1 > 0)
    if lesion_region.sum() < MIN_LESION_VOXELS or brain_region.sum() < MIN_VOXELS:
        return PixelCheck("T1", None, "unclear", None, "too few lesion or brain voxels to compare enhancement")
    t1c_ratio = float(np.mean(t1c[lesion_region]) / np.median(t1c[brain_region]))
    t1_ratio = float(np.mean(t1[lesion_region]) / np.median(t1[brain_region]))
    score = t1c_ratio - t1_ratio
    what = f"lesions / brain: T1C {t1c_ratio:.2f}, T1 {t1_ratio:.2f}"
    if score >= ENHANCEMENT_MARGIN:
        return PixelCheck("T1", "T1", "agrees", score, f"{what}: the lesions enhance on the T1C only")
    if score <= -ENHANCEMENT_MARGIN:
        return PixelCheck("T1", "T1C-like", "disagrees", score,
                          f"{what}: the lesions are brighter on the T1 than on the T1C (T1 and T1C swapped?)")  # fmt: skip
    return PixelCheck("T1", "T1C-like", "disagrees", score,
                      f"{what}: the T1 enhances like the T1C (a post-contrast series labelled T1?)")  # fmt: skip
