"""The QC report: per-case figures (lesions, registration) and one offline HTML page.

* `case_figures`: `qc/figures/{case_id}_lesions.png` shows, for each lesion, the T1C
  slice through its centroid, cropped around it, with the lesion outline drawn from the
  **label map boundary** (not re-read from the RTSS polygons) and its ROI name, volume
  and longest axial diameter. `{case_id}_registration.png` shows T1 and T2 resampled on
  the T1C grid as a checkerboard with the T1C, with T1C edges drawn over them, on three
  slices, and below them the template's brain mask (the standard-space fit) outlined on the
  T1C with the fit's check or flag. An excluded case gets a small figure that says why.
* `build_report`: `qc/index.html` (no JavaScript, no external resource; figures linked
  relatively) and `qc/figures/cohort_summary.png` (lesion count, volume and diameter
  distributions, and a "glass head": axial/coronal/sagittal projections of lesion
  centroids in each case's own patient frame, centred on its head centroid, over the
  mean projected outline of the head masks).

Display convention: radiological, as on a DICOM viewer: patient right on the left of the
image, anterior up (axial), superior up (coronal/sagittal).
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metsprep.atomic import write_text, write_with
from metsprep.contracts import CaseSummary
from metsprep.frames import Grid, apply_affine, spacing_mm

log = logging.getLogger("metsprep.qc")

MAX_LESION_PANELS = 40
CROP_MIN_HALF_WIDTH_MM = 20.0


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(figsize: tuple[float, float]) -> Any:
    """A Matplotlib figure drawn by Agg without pyplot (pyplot's import and figure manager
    cost ~0.2 s per job and nothing here is shown on screen)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _records(table: Any) -> list[dict[str, Any]]:
    """Rows of a pandas DataFrame or a list of dicts, as a list of dicts."""
    if table is None:
        return []
    if hasattr(table, "to_dict"):
        return table.to_dict("records")
    return list(table)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """A Parquet table as a list of dicts with pyarrow alone (pandas adds ~0.3 s of import;
    ParquetFile, unlike read_table, does not go through pyarrow.dataset, which imports it)."""
    if not Path(path).exists():
        return []
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read().to_pylist()


def _load(output_dir: Path, rel: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    if not rel or not (Path(output_dir) / rel).exists():
        return None
    import nibabel as nib

    img = nib.load(str(Path(output_dir) / rel))
    data = np.asarray(img.dataobj)
    return data.reshape(data.shape[:3]), Grid.from_nifti(img).lps_from_ijk


def _message_figure(path: Path, title: str, message: str) -> None:
    fig = _figure((6, 2))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.6, title, ha="center", va="center", fontsize=12, weight="bold")
    ax.text(0.5, 0.3, message, ha="center", va="center", fontsize=9, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda name: fig.savefig(name, dpi=80, format="png"))


# ---------------------------------------------------------------------------- display


def axial_view(slice_ij: np.ndarray, lps_from_ijk: np.ndarray) -> np.ndarray:
    """A k slice (indexed [i, j]) turned so rows go anterior->posterior and columns
    patient right->left (radiological), whatever the in-plane voxel axes are."""
    m = lps_from_ijk[:3, :2]
    # which in-plane voxel axis runs mostly along LPS x (left) / y (posterior)
    x_axis = int(np.argmax(np.abs(m[0, :])))
    view = slice_ij if x_axis == 1 else slice_ij.T  # now indexed [y-ish, x-ish]
    y_step = m[1, 1 - x_axis]
    x_step = m[0, x_axis]
    if y_step < 0:  # rows must go to +y (posterior) downwards
        view = view[::-1, :]
    if x_step < 0:  # columns must go to +x (patient left) rightwards
        view = view[:, ::-1]
    return view


def _window(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def case_figures(
    case_json: Path, lesions_parquet: Path, output_dir: Path, out_lesions_png: Path, out_registration_png: Path,
    out_page: Path | None = None,
) -> None:
    """Write the lesion and registration figures of one case (always both files) and its review page."""
    from metsprep.qc_pages import write_case_page

    summary = CaseSummary.read(case_json)
    output_dir = Path(output_dir)
    lesions = _read_rows(lesions_parquet) if summary.status == "ok" else []
    _case_figures(summary, lesions, output_dir, Path(out_lesions_png), Path(out_registration_png))
    if out_page is not None:
        write_case_page(summary.row, lesions, output_dir, Path(out_page),
                        [Path(out_lesions_png), Path(out_registration_png)])


def _case_figures(summary: CaseSummary, lesions: list[dict[str, Any]], output_dir: Path, out_lesions_png: Path,
                  out_registration_png: Path) -> None:
    case = summary.row
    case_id = summary.case_id
    if summary.status != "ok":
        reason = case.get("status_reason") or "excluded"
        for path in (out_lesions_png, out_registration_png):
            _message_figure(Path(path), f"{case_id}: excluded", reason)
        return
    t1c = _load(output_dir, case.get("t1c_nifti"))
    if t1c is None:
        for path in (out_lesions_png, out_registration_png):
            _message_figure(Path(path), case_id, "the T1C image is missing")
        return
    labels = _load(output_dir, case.get("lesion_labels_nifti"))
    lesion_figure(case_id, t1c, labels, lesions, Path(out_lesions_png))
    moving = {seq: _load(output_dir, case.get(f"{seq.lower()}_in_t1c_nifti")) for seq in ("T1", "T2")}
    brain = _load(output_dir, case.get("brain_mask_nifti"))
    registration_figure(case_id, t1c, moving, labels, Path(out_registration_png), brain, mni_fit_note(case))


def mni_fit_note(case: dict[str, Any]) -> str:
    """One line on the case's standard-space fit for the figure: its flag, else its check."""
    if case.get("mni_flag"):
        return f"MNI fit FLAGGED: {case['mni_flag']}"
    if _finite(case.get("mni_check_mm")):
        return f"MNI fit, check {float(case['mni_check_mm']):.1f} mm"
    return "MNI fit"


def lesion_figure(case_id: str, t1c: tuple[np.ndarray, np.ndarray], labels: tuple[np.ndarray, np.ndarray] | None, lesions: Any, path: Path) -> None:
    image, lps_from_ijk = t1c
    rows = [r for r in _records(lesions) if _finite(r.get("centroid_k"))]
    if not rows or labels is None:
        _message_figure(path, case_id, "no lesion in the label map" if not rows else "the lesion label map is missing")
        return
    shown = rows[:MAX_LESION_PANELS]
    n_cols = min(4, len(shown))
    n_rows = math.ceil(len(shown) / n_cols)
    height = 3.5 * n_rows + 1.0
    # at least 5 in wide so the two-line title is not cut when there are only 1-2 panels
    fig = _figure((max(3.2 * n_cols, 5.0), height))
    # fixed margins instead of tight_layout (which lays the figure out twice): room for
    # the two-line panel titles and the suptitle
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 1.0 / height, wspace=0.05, hspace=0.3)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    spacing = spacing_mm(lps_from_ijk)
    label_map = labels[0]
    for ax, row in zip(axes.ravel(), shown, strict=False):
        k = int(round(row["centroid_k"]))
        ci, cj = row["centroid_i"], row["centroid_j"]
        half_mm = max(CROP_MIN_HALF_WIDTH_MM, 1.5 * float(row.get("max_diameter_mm") or 0.0))
        hi_, hj = int(math.ceil(half_mm / spacing[0])), int(math.ceil(half_mm / spacing[1]))
        i0, i1 = max(0, int(ci) - hi_), min(image.shape[0], int(ci) + hi_ + 1)
        j0, j1 = max(0, int(cj) - hj), min(image.shape[1], int(cj) + hj + 1)
        crop = image[i0:i1, j0:j1, k].astype(np.float32)
        mask = label_map[i0:i1, j0:j1, k] == row["label"] if row.get("label") is not None else np.zeros_like(crop, bool)
        view, view_mask = axial_view(crop, lps_from_ijk), axial_view(mask, lps_from_ijk)
        aspect = spacing[1] / spacing[0] if int(np.argmax(np.abs(lps_from_ijk[0, :2]))) == 0 else spacing[0] / spacing[1]
        lo, hi = _window(image[..., k])
        ax.imshow(view, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect=aspect)
        if view_mask.any():
            ax.contour(view_mask.astype(float), levels=[0.5], colors="red", linewidths=1.0)
        volume = row.get("volume_mm3")
        axial = row.get("longest_axial_diameter_mm")
        ax.set_title(
            f"{row.get('roi_name')} (label {row.get('label')})\n"
            f"{_num(volume, '.0f')} mm³, axial Ø {_num(axial, '.1f')} mm, k={k}",
            fontsize=8,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.02, 0.5, "R", transform=ax.transAxes, color="yellow", fontsize=7, va="center")
        ax.text(0.95, 0.5, "L", transform=ax.transAxes, color="yellow", fontsize=7, va="center")
    for ax in axes.ravel()[len(shown):]:
        ax.axis("off")
    more = f" (first {MAX_LESION_PANELS} of {len(rows)})" if len(rows) > len(shown) else ""
    fig.suptitle(f"{case_id}: T1C through each lesion centroid{more}\nred = label-map boundary", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda name: fig.savefig(name, dpi=80, format="png"))


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any, fmt: str) -> str:
    return format(float(value), fmt) if _finite(value) else "n/a"


def checkerboard(a: np.ndarray, b: np.ndarray, tile: int = 16) -> np.ndarray:
    """Tiles of `a` and `b` alternating, both scaled to [0, 1] by their own window."""
    def scaled(x: np.ndarray) -> np.ndarray:
        lo, hi = _window(x)
        return np.clip((x - lo) / (hi - lo), 0, 1)

    ii, jj = np.indices(a.shape)
    board = ((ii // tile) + (jj // tile)) % 2 == 0
    return np.where(board, scaled(a.astype(np.float32)), scaled(b.astype(np.float32)))


def edges(image: np.ndarray) -> np.ndarray:
    """Strong edges of a 2D image: Sobel gradient magnitude above its 90th percentile.

    Display only. The Sobel operator (central difference along one axis, [1, 2, 1]
    smoothing across it) is a few numpy slices; scipy.ndimage's Gaussian gradient, used
    before, looks the same here and its import cost each QC job ~0.2 s.
    """
    padded = np.pad(image.astype(np.float32), 1, mode="edge")
    across_0 = padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]  # smooth along axis 1
    across_1 = padded[:-2, :] + 2 * padded[1:-1, :] + padded[2:, :]  # smooth along axis 0
    gradient_0 = across_0[2:, :] - across_0[:-2, :]
    gradient_1 = across_1[:, 2:] - across_1[:, :-2]
    magnitude = np.hypot(gradient_0, gradient_1)
    positive = magnitude[magnitude > 0]
    return magnitude > np.percentile(positive, 90) if positive.size else np.zeros(image.shape, bool)


def registration_figure(
    case_id: str, t1c: tuple[np.ndarray, np.ndarray], moving: dict[str, tuple[np.ndarray, np.ndarray] | None],
    labels: tuple[np.ndarray, np.ndarray] | None, path: Path,
    brain: tuple[np.ndarray, np.ndarray] | None = None, mni_note: str = "MNI fit",
) -> None:  # fmt: skip
    image, lps_from_ijk = t1c
    # display window of the whole volume from every 4th voxel in-plane: percentiles of a
    # 512x512x45 volume cost ~0.3 s each and a display needs no exact quantile
    lo, hi = _window(image[::4, ::4, :])
    nz = np.flatnonzero(image.reshape(-1, image.shape[2]).max(axis=0) > lo)
    k_lo, k_hi = (int(nz.min()), int(nz.max())) if nz.size else (0, image.shape[2] - 1)
    slices = [int(round(k_lo + f * (k_hi - k_lo))) for f in (0.35, 0.55, 0.75)]
    spacing = spacing_mm(lps_from_ijk)
    aspect = spacing[1] / spacing[0] if int(np.argmax(np.abs(lps_from_ijk[0, :2]))) == 0 else spacing[0] / spacing[1]
    fig = _figure((3.2 * len(slices), 10.5))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.94, wspace=0.05, hspace=0.12)
    axes = fig.subplots(3, len(slices), squeeze=False)
    for r, seq in enumerate(("T1", "T2")):
        entry = moving.get(seq)
        for c, k in enumerate(slices):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if entry is None or entry[0].shape != image.shape:
                ax.text(0.5, 0.5, f"{seq} in T1C space\nnot available", ha="center", va="center", transform=ax.transAxes)
                ax.set_facecolor("0.9")
                continue
            fixed_slice = image[..., k].astype(np.float32)
            board = axial_view(checkerboard(fixed_slice, entry[0][..., k]), lps_from_ijk)
            ax.imshow(board, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect=aspect)
            edge = axial_view(edges(fixed_slice), lps_from_ijk)
            overlay = np.zeros((*edge.shape, 4), np.float32)
            overlay[edge] = (0.0, 1.0, 1.0, 0.6)
            ax.imshow(overlay, interpolation="nearest", aspect=aspect)
            ax.set_title(f"{seq} / T1C checkerboard, k={k}", fontsize=8)
    for c, k in enumerate(slices):
        ax = axes[2, c]
        ax.set_xticks([])
        ax.set_yticks([])
        ax.imshow(axial_view(image[..., k].astype(np.float32), lps_from_ijk), cmap="gray", vmin=lo, vmax=hi,
                  interpolation="nearest", aspect=aspect)
        if brain is None or brain[0].shape != image.shape:
            ax.text(0.5, 0.5, "no brain mask\n(no standard-space fit)", ha="center", va="center", color="white",
                    transform=ax.transAxes)
        elif brain[0][..., k].any():
            ax.contour(axial_view(brain[0][..., k] > 0, lps_from_ijk).astype(float), levels=[0.5], colors="yellow",
                       linewidths=1.0)
        note = mni_note if len(mni_note) <= 60 else mni_note[:59] + "…"  # the case page lists it whole
        ax.set_title(f"{note}, k={k}" if c == 0 else f"template brain on T1C, k={k}", fontsize=8)
    fig.suptitle(f"{case_id}: registration check (cyan = T1C edges; yellow = the MNI template's brain)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda name: fig.savefig(name, dpi=80, format="png"))


# ---------------------------------------------------------------------------- cohort report


def _head_outlines(cases: Any, output_dir: Path, max_cases: int = 12, bin_mm: float = 3.0) -> dict[str, Any] | None:
    """Mean projected head-mask occupancy, in each case's LPS frame centred on its plane point."""
    extent = 120.0
    edges_mm = np.arange(-extent, extent + bin_mm, bin_mm)
    sums = {name: np.zeros((len(edges_mm) - 1,) * 2) for name in ("axial", "coronal", "sagittal")}
    n = 0
    for row in cases.to_dict("records"):
        if n >= max_cases:
            break
        if row.get("status") != "ok" or not row.get("head_mask_nifti") or not _finite(row.get("midsagittal_point_lps_x_mm")):
            continue
        loaded = _load(output_dir, row["head_mask_nifti"])
        if loaded is None:
            continue
        mask, lps_from_ijk = loaded
        ijk = np.argwhere(mask > 0)[::7]
        lps = apply_affine(lps_from_ijk, ijk)
        lps -= np.array([row[f"midsagittal_point_lps_{a}_mm"] for a in "xyz"])
        for name, (a, b) in {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}.items():
            hist, _, _ = np.histogram2d(lps[:, a], lps[:, b], bins=[edges_mm, edges_mm])
            occupied = hist > 0
            if b == 2:  # thick slices leave empty z bins between them: fill each column's span
                occupied = (np.maximum.accumulate(occupied, axis=1)
                            & np.maximum.accumulate(occupied[:, ::-1], axis=1)[:, ::-1])
            sums[name] += occupied
        n += 1
    if n == 0:
        return None
    return {"edges": edges_mm, "n": n, **{k: v / n for k, v in sums.items()}}


def summary_figure(cases: Any, lesions: Any, output_dir: Path, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    ok = cases[cases["status"] == "ok"] if len(cases) else cases
    ax = axes[0, 0]
    counts = ok["n_lesions"].fillna(0).astype(int) if len(ok) else []
    ax.hist(counts, bins=np.arange(-0.5, (max(counts) if len(counts) else 0) + 1.5, 1.0), color="steelblue")
    ax.set(title=f"lesions per case (ok cases: {len(ok)})", xlabel="lesions", ylabel="cases")
    ax = axes[0, 1]
    volumes = lesions["volume_mm3"].dropna() if len(lesions) else []
    volumes = np.asarray(volumes, float)
    if volumes.size and (volumes > 0).any():
        ax.hist(np.log10(volumes[volumes > 0]), bins=20, color="indianred")
    ax.set(title=f"lesion volume (n={volumes.size})", xlabel="log10 volume [mm³]", ylabel="lesions")
    ax = axes[0, 2]
    diam = np.asarray(lesions["longest_axial_diameter_mm"].dropna() if len(lesions) else [], float)
    if diam.size:
        ax.hist(diam, bins=20, color="seagreen")
    ax.axvline(10.0, color="k", ls="--", lw=1)
    ax.set(title="RANO-BM longest axial diameter (--: 10 mm)", xlabel="mm", ylabel="lesions")
    outlines = _head_outlines(cases, output_dir)
    centres = {}
    for row in ok.to_dict("records") if len(ok) else []:
        if _finite(row.get("midsagittal_point_lps_x_mm")):
            centres[row["case_id"]] = np.array([row[f"midsagittal_point_lps_{a}_mm"] for a in "xyz"])
    pts, sizes = [], []
    for row in lesions.to_dict("records") if len(lesions) else []:
        c = centres.get(row["case_id"])
        if c is None or not _finite(row.get("centroid_lps_x_mm")):
            continue
        pts.append(np.array([row[f"centroid_lps_{a}_mm"] for a in "xyz"]) - c)
        sizes.append(max(4.0, float(row.get("volume_mm3") or 0.0) ** (2 / 3)))
    pts_arr = np.array(pts).reshape(-1, 3)
    # radiological display: patient right on the left of the axial/coronal views
    views = {"axial": (0, 1, "x (R ← → L) mm", "y (A ↑ ↓ P) mm"),
             "coronal": (0, 2, "x (R ← → L) mm", "z (I ↓ ↑ S) mm"),
             "sagittal": (1, 2, "y (A ← → P) mm", "z (I ↓ ↑ S) mm")}  # fmt: skip
    for ax, (name, (a, b, xl, yl)) in zip(axes[1], views.items(), strict=True):
        if outlines is not None:
            e = outlines["edges"]
            ax.contour((e[:-1] + e[1:]) / 2, (e[:-1] + e[1:]) / 2, outlines[name].T, levels=[0.5], colors="0.4")
        if len(pts_arr):
            ax.scatter(pts_arr[:, a], pts_arr[:, b], s=sizes, alpha=0.6, color="crimson", edgecolor="k", linewidth=0.3)
        ax.set(title=f"{name} projection, head-centred patient frame", xlabel=xl, ylabel=yl)
        ax.set_aspect("equal")
        if name == "axial":
            ax.invert_yaxis()  # anterior (−y) up
    fig.suptitle("metsprep cohort summary (lesion dots sized by volume; outline: mean head mask)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda name: fig.savefig(name, dpi=80, format="png"))
    plt.close(fig)


def lesion_frequency_figure(frequency_kji: np.ndarray, template_kji: np.ndarray, n_cases: int, path: Path) -> None:
    """Maximum projections of the MNI lesion-frequency map over the template's mean
    projections (arrays indexed [k, j, i] of an LPS grid: i to the left, j posterior)."""
    fig = _figure((12, 4.4))
    axes = fig.subplots(1, 3)
    peak = max(1, int(frequency_kji.max()))
    views = [("axial", 0, "R ← → L", "A ↑ ↓ P"), ("coronal", 1, "R ← → L", "I ↓ ↑ S"), ("sagittal", 2, "A ← → P", "I ↓ ↑ S")]
    for ax, (name, axis, xl, yl) in zip(axes, views, strict=True):
        back = template_kji.mean(axis=axis)
        front = np.ma.masked_equal(frequency_kji.max(axis=axis), 0)
        origin = "upper" if name == "axial" else "lower"  # axial: anterior up; others: superior up
        ax.imshow(back, cmap="gray", origin=origin)
        shown = ax.imshow(front, cmap="YlOrRd", vmin=0, vmax=peak, origin=origin)
        ax.set(title=f"{name} maximum projection", xlabel=xl, ylabel=yl, xticks=[], yticks=[])
    fig.colorbar(shown, ax=list(axes), shrink=0.8, label="lesions covering the voxel")
    fig.suptitle(f"Lesion frequency in MNI152 2009a space ({n_cases} cases; radiological view)", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda name: fig.savefig(name, dpi=80, format="png"))


MAX_TRACK_PANELS = 24


def lesion_tracks_figure(tracks_parquet: Path, path: Path) -> None:
    """Per patient (up to MAX_TRACK_PANELS), each track's volume by session, the session's
    response on top; a message where no patient has two sessions."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(tracks_parquet).read().to_pylist()
    patients = sorted({r["patient_id"] for r in rows})
    if not patients:
        _message_figure(path, "Lesions across sessions", "no patient has two ok sessions")
        return
    shown = patients[:MAX_TRACK_PANELS]
    n_cols = min(4, len(shown))
    n_rows = math.ceil(len(shown) / n_cols)
    fig = _figure((3.4 * n_cols, 2.8 * n_rows))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax, patient in zip(axes, shown, strict=False):
        own = [r for r in rows if r["patient_id"] == patient]
        sessions = sorted({r["session"] for r in own})
        x_of = {s: i for i, s in enumerate(sessions)}
        for track in sorted({r["track_id"] for r in own if r["track_id"]}):
            points = sorted((x_of[r["session"]], r["volume_mm3"] or 0.0) for r in own if r["track_id"] == track)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, lw=1)
        for s, i in x_of.items():
            response = next((r["response"] for r in own if r["session"] == s), None)
            ax.annotate(str(response or ""), (i, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(sessions)), [f"ses-{s}" for s in sessions], fontsize=7)
        ax.set_ylabel("volume [mm³]", fontsize=7)
        ax.set_title(str(patient), fontsize=8, pad=12)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    more = f" (first {MAX_TRACK_PANELS} of {len(patients)} patients)" if len(patients) > len(shown) else ""
    fig.suptitle(f"Lesion volume by session, one line per tracked lesion{more}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda name: fig.savefig(name, dpi=80, format="png"))


def _cell(value: Any, fmt: str | None = None) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return html.escape(", ".join(str(v) for v in value))
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    try:
        import pandas as pd

        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    if fmt and _finite(value):
        return format(float(value), fmt)
    return html.escape(str(value))


def _table(records: list[dict[Any, Any]], columns: list[tuple[str, str, str | None]]) -> str:
    if not records:
        return "<p class='none'>none</p>"
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(key), fmt)}</td>" for key, _, fmt in columns) + "</tr>" for r in records
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _deid_section(deid_parquet: Path | None) -> str:
    """What the de-identification audit found, by attribute and finding (files counted)."""
    import pandas as pd

    head = "<h3>De-identification audit (catalog/deid_audit.parquet)</h3>"
    if deid_parquet is None or not Path(deid_parquet).exists():
        return head + "<p>Not run.</p>"
    audit = pd.read_parquet(deid_parquet)
    if not len(audit):
        return head + "<p>No finding: every input file matches the de-identification profile.</p>"
    counts = (audit.groupby(["keyword", "finding"], dropna=False)["path"].nunique().reset_index(name="files")
              .sort_values("files", ascending=False))  # fmt: skip
    return head + f"<p>{audit['path'].nunique()} files with findings.</p>" + _table(
        counts.to_dict("records"), [("keyword", "attribute", None), ("finding", "finding", None), ("files", "files", None)])


def build_report(
    series_parquet: Path, cases_parquet: Path, lesions_parquet: Path, output_dir: Path, out_html: Path, out_summary_png: Path,
    deid_parquet: Path | None = None, cohort_figures: Sequence[tuple[str, Path]] = (),
) -> None:
    """The cohort QC index qc/index.html (with qc/assets/) and its summary figure;
    ``cohort_figures`` (title, PNG) are shown after it (lesion frequency, lesion tracks)."""
    import pandas as pd

    from metsprep.qc_pages import index_html, index_rows, write_assets

    output_dir, out_html = Path(output_dir), Path(out_html)
    series = pd.read_parquet(series_parquet) if Path(series_parquet).exists() else pd.DataFrame()
    cases = pd.read_parquet(cases_parquet)
    lesions = pd.read_parquet(lesions_parquet)
    summary_figure(cases, lesions, output_dir, Path(out_summary_png))
    html_dir = out_html.parent

    def link(path: Path) -> str | None:
        return os.path.relpath(path, html_dir).replace(os.sep, "/") if path.exists() else None

    records = _records(cases)
    summary = link(Path(out_summary_png))
    summary_html = (f"<h2>Cohort summary</h2><img loading='lazy' src='{html.escape(summary)}' alt='cohort summary'>"
                    if summary else "")
    for title, png in cohort_figures:
        src = link(Path(png))
        if src:
            summary_html += f"<h2>{html.escape(title)}</h2><img loading='lazy' src='{html.escape(src)}' alt='{html.escape(title)}'>"
    sections = ["<h2>Across the cohort</h2>"]
    excluded = [r for r in records if r.get("status") != "ok"]
    reasons: dict[str, int] = {}
    for r in excluded:
        reasons[str(r.get("status_reason") or "unknown")] = reasons.get(str(r.get("status_reason") or "unknown"), 0) + 1
    sections.append("<h3>Exclusion reasons</h3>")
    sections.append(_table([{"reason": k, "n": v} for k, v in sorted(reasons.items())], [("reason", "reason", None), ("n", "cases", None)]))
    sections.append("<details><summary>Registration flags</summary>")
    reg = [r for r in records if r.get("t1_registration_flag") or r.get("t2_registration_flag") or len(_as_list(r.get("registration_flags")))]
    sections.append(_table(reg, [
        ("case_id", "case", None), ("t1_registration_flag", "T1 flag", None), ("t1_rotation_deg", "T1 rot °", ".2f"),
        ("t1_translation_mm", "T1 transl mm", ".1f"), ("t1_registration_check_mm", "T1 check mm", ".2f"),
        ("t2_registration_flag", "T2 flag", None), ("t2_rotation_deg", "T2 rot °", ".2f"),
        ("t2_translation_mm", "T2 transl mm", ".1f"), ("t2_registration_check_mm", "T2 check mm", ".2f"),
        ("registration_flags", "flags", None),
    ]))  # fmt: skip
    sections.append("</details><details><summary>Sequence labels the pixels or the header doubt</summary>")
    doubted = []
    if len(series) and "pixel_check" in series:
        doubted = series[(series["pixel_check"] == "disagrees") | (series["sequence_confidence"] == "low")].to_dict("records")
    sections.append(_table(doubted, [
        ("case_id", "case", None), ("role", "role", None), ("series_description", "description", None),
        ("sequence", "label", None), ("sequence_confidence", "confidence", None), ("pixel_check", "pixels", None),
        ("pixel_check_reason", "pixel evidence", None), ("sequence_why", "why", None),
    ]))  # fmt: skip
    sections.append("</details><details><summary>Location (ROI name vs geometry)</summary>")
    loc = lesions[lesions["location_flag"].notna()].to_dict("records") if len(lesions) else []
    sections.append(_table(loc, [
        ("case_id", "case", None), ("roi_name", "ROI", None), ("hemisphere_name", "name says", None),
        ("hemisphere_geometry", "geometry says", None), ("midsagittal_distance_mm", "distance to midplane mm", ".1f"),
        ("location_flag", "flag", None),
    ]))  # fmt: skip
    sections.append("</details>")
    sections.append(_deid_section(deid_parquet))
    with_page = {p.stem for p in (html_dir / "cases").glob("*.html")}
    rows = index_rows(records, _records(series) if len(series) else [],
                      _records(lesions) if len(lesions) else [], with_page)
    write_assets(html_dir / "assets")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    write_text(out_html, index_html(rows, summary_html, "\n".join(sections)))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return [value] if isinstance(value, str) and value else []
