"""Generate a synthetic GammaPlan-style brain-metastasis cohort and its ground truth.

Order of work per case (one patient, one or more studies): draw every random parameter
first (so a case option changes only what it names), build the head pose and the T1C stack,
place lesions in brain tissue inside the T1C slab, derive T1/T2 stacks moved by a known rigid
motion, render and write the MR series, trace the lesion and head cross-sections on the T1C
slice planes, write the RT Structure Set, and record everything in truth.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metsprep.atomic import write_text
from metsprep.frames import apply_affine
from metsprep.jsonio import to_jsonable
from metsprep.standard_space import region_of_mni_ras

from . import anatomy
from .acquisition import (
    RenderParams,
    StackGeometry,
    format_ds,
    itk_euler_zxy_deg,
    make_stack,
    render_series,
    rigid_about,
    rotation_matrix,
)
from .anatomy import sample_volume
from .dicom_writer import (
    TRANSFER_SYNTAXES,
    UNSUPPORTED_TRANSFER_SYNTAXES,
    UidFactory,
    mr_dataset,
    quantise,
    set_pixels,
    write_dataset,
)
from .lesions import (
    Lesion,
    ShapeTerm,
    draw_diameters_mm,
    draw_lesion_count,
    polygon_area_in_plane,
    random_shape_terms,
    random_unit_vector,
)
from .rtss_writer import Roi, RoiContour, contour_strings, rtss_dataset

GENERATOR_VERSION = "1.0.0"
LAYOUTS = ("per_case", "nested", "flat")
SEQUENCES = ("T1C", "T1", "T2")
KNOWN_OPTIONS = {
    "tilt_deg", "matrix", "missing_slice", "rescale", "transfer_syntax", "n_lesions", "lesions",
    "omit_series", "contrast_agent", "regenerate_uids", "studies", "longitudinal",
    # acquisition stress options (see STRESS_OPTIONS)
    "motion", "fov_offset_mm", "coverage", "thickness_mm", "gap_mm", "series_matrix", "series_fov_mm",
    "slice_order", "bias_scale", "noise_scale", "contrast",
}
#: Options that make a case harder to register, per series where they take a {role: value}
#: mapping: motion {role: {"angle_deg", "translation_mm"}} (axis and direction stay drawn);
#: fov_offset_mm [x, y, z] (every series' FOV centre moved off the head); coverage
#: {role: fraction of the brain slab}, the partial slab kept towards the vertex;
#: thickness_mm / gap_mm / series_matrix / series_fov_mm {role: value}; slice_order
#: {role: "ascending" | "descending" | "shuffled"} (shuffled: files and Instance Numbers in
#: random order, so only Image Position orders the slices); bias_scale and noise_scale
#: (factors on the drawn bias field and noise); contrast "alternate" (other tissue signal
#: ratios for every sequence, anatomy.ALTERNATE_TISSUE_SIGNAL).
STRESS_OPTIONS = ("motion", "fov_offset_mm", "coverage", "thickness_mm", "gap_mm", "series_matrix", "series_fov_mm",
                  "slice_order", "bias_scale", "noise_scale", "contrast")

T1C_DESCRIPTIONS = ["AXI T1 SE+C", "AX T1 +C", "AXIAL T1 POST GD", "Ax T1 SE post"]
T1_DESCRIPTIONS = ["AXI T1 SE", "AX T1 PRE", "AX T1"]
T2_DESCRIPTIONS = ["AXI T2 FSE", "AX T2", "AXIAL T2 FSE"]
MODELS = ["SIGNA EXCITE", "SIGNA HDx", "Signa HDxt", "GENESIS_SIGNA", "DISCOVERY MR750", "Optima MR450w"]
SOFTWARE = {
    "SIGNA EXCITE": "11\\LX\\MR Software release:11.0_M4_0446.a",
    "SIGNA HDx": "14\\LX\\MR Software release:14.0_M5_0737.f",
    "Signa HDxt": "15\\LX\\MR Software release:15.0_M4_0910.a",
    "GENESIS_SIGNA": "09\\LX\\MR Software release:9.1_M4_0245.a",
    "DISCOVERY MR750": "DV24.0_R01_1344.a",
    "Optima MR450w": "DV25.0_R02_1549.b",
}
CONTRAST_AGENTS = ["MAGNEVIST", "GAD", "MAGNEVIST 15CC", "OMNISCAN"]
PROTOCOLS = ["BRAIN GAMMA KNIFE", "GK BRAIN", "BRAIN W/WO", "GAMMA KNIFE PLANNING"]
ROI_COLORS = [(255, 0, 0), (0, 255, 0), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0)]
MNI_BRAIN_Z_RANGE = (-58.0, 80.0)  # cerebellum bottom to vertex (MNI mm), the slab's target


def _mat(m: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in m]


def _vec(v: np.ndarray) -> list[float]:
    return [float(x) for x in v]


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+]+", "_", text).strip("_")


# --- drawing the parameters -------------------------------------------------------------


def _draw_patient(rng: np.random.Generator, used_ids: set[str]) -> dict[str, Any]:
    while True:
        pid = str(int(rng.integers(1_000_000_000, 9_999_999_999)))
        if pid not in used_ids:
            used_ids.add(pid)
            break
    model = str(rng.choice(MODELS))
    field = 3.0 if model.startswith("DISCOVERY") and rng.uniform() < 0.5 else 1.5
    birth = "" if rng.uniform() < 0.6 else f"1901{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    agent_draw = rng.uniform()
    agent_name = str(rng.choice(CONTRAST_AGENTS))
    return {
        "patient_id": pid,
        "patient_name": f"{pid}_Name",
        "sex": str(rng.choice(["F", "M"])),
        "age": int(rng.integers(28, 86)),
        "birth_date": birth,
        "head_scale": float(rng.uniform(0.92, 1.08)),
        "model": model,
        "field_strength": field,
        "matrix": 512 if rng.uniform() < 0.10 else 256,
        "transfer_syntax": "explicit" if rng.uniform() < 0.15 else "implicit",
        # ~30% filled on T1C; otherwise half empty, half absent (None)
        "contrast_agent": agent_name if agent_draw < 0.30 else ("" if agent_draw < 0.65 else None),
        "ambiguous_t1_descriptions": bool(rng.uniform() < 0.08),
        "interpreted_type_lesion": str(rng.choice(["PTV", ""])),
        "interpreted_type_skull": str(rng.choice(["ORGAN", ""])),
        "skull_first": bool(rng.uniform() < 0.5),
        "protocol": str(rng.choice(PROTOCOLS)),
        "lesion_rng_seed": int(rng.integers(0, 2**63 - 1)),
        "noise_rng_seed": int(rng.integers(0, 2**63 - 1)),
        "gamma_plan_version": str(rng.choice(["8.3.1", "9.0", "10.1.1", "11.0.3"])),
    }


def _draw_series(rng: np.random.Generator, role: str, fov: float) -> dict[str, Any]:
    thickness = float(rng.choice([3.0, 4.0, 5.0, 6.0], p=[0.25, 0.2, 0.4, 0.15]))
    gap = float(rng.choice([0.0, 0.5, 1.0, 1.5], p=[0.3, 0.2, 0.3, 0.2]))
    if role == "T2":
        tr, te, etl = float(rng.uniform(3000, 5000)), float(rng.uniform(80, 110)), int(rng.choice([8, 12, 16, 20]))
        variant, options = "SK\\OSP", ["FAST_GEMS", "EDR_GEMS", "FILTERED_GEMS", "FC_SLICE_AX_GEMS"]
    else:
        tr, te, etl = float(rng.uniform(400, 700)), float(rng.uniform(8, 20)), 1
        variant, options = "SK\\OSP" if rng.uniform() < 0.5 else "SK", ["SAT_GEMS", "EDR_GEMS", "FILTERED_GEMS"]
    keep = [o for o in options if rng.uniform() < 0.7] or options[:1]
    return {
        "fov": float(np.clip(fov + rng.uniform(-8, 8), 220.0, 256.0)),
        "thickness": thickness,
        "gap": gap,
        "superior_first": bool(rng.uniform() < 0.5),
        "minus_zero": bool(rng.uniform() < 0.4),
        "spacing_tag_is_gap": bool(rng.uniform() < 0.2),
        "centre_offset": rng.uniform(-4, 4, size=3),
        "tr": round(tr, 1), "te": round(te, 3), "etl": etl,
        "variant": variant, "scan_options": keep,
        "averages": int(rng.choice([1, 2])),
        "phase_fov": float(rng.choice([75.0, 80.0, 100.0])),
        "bandwidth": float(rng.choice([122.07, 162.77, 244.14])),
        "gain": float(rng.uniform(0.8, 1.2)),
        "bias": rng.normal(0.0, 0.08, size=6),
        "noise": float(rng.uniform(0.018, 0.035)) * 850.0,
        "description": str(rng.choice({"T1C": T1C_DESCRIPTIONS, "T1": T1_DESCRIPTIONS, "T2": T2_DESCRIPTIONS}[role])),
        "motion_axis": random_unit_vector(rng),
        "motion_angle": float(rng.uniform(0.5, 5.0)),
        "motion_translation": random_unit_vector(rng) * float(rng.uniform(1.0, 8.0)),
        "missing_index_fraction": float(rng.uniform()),
        "phase_dir": str(rng.choice(["ROW", "COL"])),
    }


def _draw_study(rng: np.random.Generator) -> dict[str, Any]:
    fov = float(rng.uniform(220, 256))
    return {
        "pose_axis": random_unit_vector(rng),
        "pose_angle": float(rng.uniform(0.0, 4.0)),
        "head_position": np.array([rng.uniform(-6, 6), rng.uniform(-20, 10), rng.uniform(-20, 30)]),
        "series_order": [str(s) for s in rng.permutation(["T1", "T2"])] + ["T1C"],
        "series_numbers": sorted(int(v) for v in rng.choice(np.arange(2, 10), size=3, replace=False)),
        "rtss_series_number": int(rng.integers(100, 1000)),
        "study_time_min": int(rng.integers(7 * 60, 18 * 60)),
        "study_description": str(rng.choice(["MRI BRAIN W/WO CONTRAST", "MR HEAD GAMMA KNIFE", "BRAIN GK PLAN"])),
        "series": {role: _draw_series(rng, role, fov) for role in SEQUENCES},
        "lesion_growth_seed": int(rng.integers(0, 2**63 - 1)),
    }


# --- geometry helpers -------------------------------------------------------------------


def _pose(scale: float, study: dict[str, Any]) -> np.ndarray:
    """t1c_lps_from_mni_lps: scale and rotate about the brain centroid, then place it."""
    _, _, centroid = anatomy.brain_candidates()
    rot = rotation_matrix(study["pose_axis"], study["pose_angle"])
    m = np.eye(4)
    m[:3, :3] = scale * rot
    m[:3, 3] = study["head_position"] - scale * rot @ centroid
    return m


def _stack_for(
    role: str, draw: dict[str, Any], pose: np.ndarray, scale: float, matrix: int, tilt: float,
    series_lps_from_t1c: np.ndarray, coverage: float = 1.0,
) -> StackGeometry:
    z_lo, z_hi = MNI_BRAIN_Z_RANGE
    _, _, centroid = anatomy.brain_candidates()
    mid = centroid.copy()
    mid[2] = 0.5 * (z_lo + z_hi)
    centre = apply_affine(series_lps_from_t1c @ pose, mid) + draw["centre_offset"]
    spacing = draw["thickness"] + draw["gap"]
    coverage_mm = (z_hi - z_lo) * scale + 12.0
    n = int(np.clip(np.ceil(coverage_mm / spacing) + 1, 20, 50))
    if coverage < 1.0:  # a partial slab, kept towards the vertex (+z, superior, in LPS)
        partial = max(6, int(round(n * coverage)))
        centre = centre + np.array([0.0, 0.0, 1.0]) * (n - partial) / 2.0 * spacing
        n = partial
    return make_stack(
        centre, matrix, draw["fov"], draw["thickness"], draw["gap"], n,
        tilt if role == "T1C" else 0.0, draw["superior_first"], draw["minus_zero"],
    )


def _slab_interval(geom: StackGeometry, point_lps: np.ndarray) -> tuple[float, float, float]:
    """Signed distance of a point along the stack normal, and the interval of slice centres."""
    pos = geom.positions
    s = pos @ geom.normal
    return float(point_lps @ geom.normal), float(s.min()), float(s.max())


def _inside_fov(geom: StackGeometry, points_lps: np.ndarray, margin_mm: float) -> np.ndarray:
    ijk = apply_affine(np.linalg.inv(geom.lps_from_ijk), points_lps)
    k_margin = margin_mm / geom.slice_spacing
    px = margin_mm / geom.pixel_spacing[0]
    return (
        (ijk[:, 0] > px) & (ijk[:, 0] < geom.columns - 1 - px)
        & (ijk[:, 1] > px) & (ijk[:, 1] < geom.rows - 1 - px)
        & (ijk[:, 2] > k_margin) & (ijk[:, 2] < geom.n_slices - 1 - k_margin)
    )


# --- lesions ----------------------------------------------------------------------------


def _fits_in_brain(lesion: Lesion, mni_ijk_from_t1c: np.ndarray) -> bool:
    """GM+WM probability > 0.5 on the surface and inside (sampled) of the lesion."""
    maps = anatomy.tissue_maps()
    from .lesions import _sphere_quadrature

    dirs, _ = _sphere_quadrature()
    dirs = dirs[::7]
    r = lesion.radius_along(dirs)[:, None]
    pts = np.concatenate([lesion.centre_lps + f * r * dirs for f in (1.0, 0.75, 0.5, 0.25)] + [lesion.centre_lps[None]])
    return bool(np.all(sample_volume(maps.brain, apply_affine(mni_ijk_from_t1c, pts)) > 0.5))


def _lesion_attributes(rng: np.random.Generator, diameter: float) -> dict[str, Any]:
    ring = diameter >= 15.0 and rng.uniform() < 0.6
    return {
        "ring_enhancing": bool(ring),
        "core_fraction": float(rng.uniform(0.35, 0.6)) if ring else 0.0,
        "oedema_extent": float(rng.uniform(0.4, 1.2) if diameter >= 8 else rng.uniform(0.0, 0.4)),
        "terms": random_shape_terms(rng),
    }


def _place_lesions(
    rng: np.random.Generator,
    requests: list[dict[str, Any]],
    pose: np.ndarray,
    scale: float,
    t1c: StackGeometry,
    avoid: list[Lesion] | None = None,
) -> list[tuple[Lesion, dict[str, Any]]]:
    """Place lesions (largest first) in brain tissue, inside the T1C slab, not overlapping
    each other or the lesions in ``avoid``."""
    cand_lps, cand_depth, _ = anatomy.brain_candidates()
    maps = anatomy.tissue_maps()
    mni_ijk_from_t1c = np.linalg.inv(maps.lps_from_ijk) @ np.linalg.inv(pose)
    cand_t1c = apply_affine(pose, cand_lps)
    in_slab = _inside_fov(t1c, cand_t1c, 0.0)
    off_midline = np.abs(cand_lps[:, 0]) >= 6.0
    placed: list[tuple[Lesion, dict[str, Any]]] = [(les, {}) for les in avoid or []]
    order = sorted(range(len(requests)), key=lambda i: -requests[i]["diameter_mm"])
    result: dict[int, tuple[Lesion, dict[str, Any]]] = {}
    for idx in order:
        req = requests[idx]
        attrs = _lesion_attributes(rng, req["diameter_mm"])
        diameter = float(req["diameter_mm"])
        lesion = None
        if req.get("center_lps_mm") is not None:
            lesion = Lesion(np.asarray(req["center_lps_mm"], float), diameter / 2.0, attrs["terms"],
                            attrs["ring_enhancing"], attrs["core_fraction"], attrs["oedema_extent"])
        for _shrink in range(12):
            if lesion is not None:
                break
            rmax = diameter / 2.0 * (1.0 + sum(abs(t.coefficient) for t in attrs["terms"]))
            ok = in_slab & off_midline & (cand_depth >= rmax / scale + 1.0)
            # stay a slice plus the lesion radius inside the first/last T1C slice
            s, lo, hi = (cand_t1c @ t1c.normal), *_slab_interval(t1c, np.zeros(3))[1:]
            ok &= (s > lo + rmax + t1c.slice_spacing) & (s < hi - rmax - t1c.slice_spacing)
            for other, _ in placed:
                ok &= np.linalg.norm(cand_t1c - other.centre_lps, axis=1) > rmax + other.max_radius_mm + 2.0
            choices = np.flatnonzero(ok)
            for _try in range(40 if len(choices) else 0):
                centre = cand_t1c[int(rng.choice(choices))] + rng.uniform(-0.5, 0.5, size=3) * scale
                if diameter < 2.5 * t1c.slice_spacing:
                    # small lesions sit near a slice plane, as a planner would only contour what a slice shows
                    planes = t1c.positions @ t1c.normal
                    s_c = float(centre @ t1c.normal)
                    nearest = planes[int(np.argmin(np.abs(planes - s_c)))]
                    centre = centre + (nearest + rng.uniform(-0.3, 0.3) * diameter / 2.0 - s_c) * t1c.normal
                trial = Lesion(centre, diameter / 2.0, attrs["terms"], attrs["ring_enhancing"],
                               attrs["core_fraction"], attrs["oedema_extent"])
                if _fits_in_brain(trial, mni_ijk_from_t1c):
                    lesion = trial
                    break
            else:
                diameter *= 0.85
        if lesion is None:
            raise RuntimeError(f"could not place a lesion of {req['diameter_mm']:.1f} mm")
        info = {"requested_diameter_mm": float(req["diameter_mm"]), "roi_name": req.get("roi_name")}
        placed.append((lesion, info))
        result[idx] = (lesion, info)
    return [result[i] for i in range(len(requests))]


def _anatomical_labels(lesion: Lesion, pose: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    c_mni_lps = apply_affine(np.linalg.inv(pose), lesion.true_centroid_lps())
    x, y, z = -c_mni_lps[0], -c_mni_lps[1], c_mni_lps[2]
    region = region_of_mni_ras(x, y, z)  # the rule the catalog uses (metsprep.standard_space)
    return {
        "hemisphere": anatomy.hemisphere_of_mni_lps_x(c_mni_lps[0]),
        "region": region,
        "site": anatomy.site_name(region, x, y, z, rng),
        "centre_mni_ras_mm": [float(x), float(y), float(z)],
    }


def _renamed(name: str) -> str:
    """Another planner's name for the same lesion: a shorter site and a suffix
    (L_parietal -> L_par_recurr)."""
    side, _, site = name.partition("_")
    return f"{side}_{site[:3] or 'les'}_recurr"


def _roi_name(labels: dict[str, Any], rng: np.random.Generator, used: set[str]) -> str:
    hemi = labels["hemisphere"]
    side = {"L": ["L", "L", "L", "Lt"], "R": ["R", "R", "R", "Rt"]}.get(hemi, ["mid"])
    name = f"{rng.choice(side)}_{labels['site']}"
    base, n = name, 2
    while name in used:
        name = f"{base}_{n}"
        n += 1
    used.add(name)
    return name


# --- contours ---------------------------------------------------------------------------


def _lesion_contours(lesion: Lesion, t1c: StackGeometry) -> list[RoiContour]:
    contours = []
    row, col = t1c.row_dir, t1c.col_dir
    for k, origin in enumerate(t1c.positions):
        pts = lesion.cross_section(origin, row, col)
        if pts is not None:
            contours.append(RoiContour(k, contour_strings(pts)))
    return contours


def _skull_contours(t1c: StackGeometry, mni_ijk_from_t1c: np.ndarray) -> list[RoiContour]:
    """Outer head surface (head map = 0.5) on every T1C slice where the head is present.

    The head map is sampled on a 1.5 mm grid in each slice plane and its 0.5 iso-line traced
    (contourpy, marching squares); the longest closed line is the outer surface.
    """
    import contourpy

    maps = anatomy.tissue_maps()
    row, col = t1c.row_dir, t1c.col_dir
    extent = t1c.columns * t1c.pixel_spacing[1]
    g = np.arange(-2.0, extent + 2.0, 1.5)
    a, b = np.meshgrid(g, g, indexing="ij")
    contours = []
    for k, origin in enumerate(t1c.positions):
        grid = origin + a[..., None] * row + b[..., None] * col
        head = sample_volume(maps.head, apply_affine(mni_ijk_from_t1c, grid))
        if (head > 0.5).sum() * 1.5**2 < 400.0:
            continue
        lines = contourpy.contour_generator(g, g, head.T, name="serial").lines(0.5)
        closed = [np.asarray(ln) for ln in lines if len(ln) >= 8 and np.allclose(np.asarray(ln)[0], np.asarray(ln)[-1])]
        if not closed:
            continue
        outer = max(closed, key=len)[:-1]  # (x = along row, y = along col), last point repeats the first
        pts = origin + outer[:, :1] * row + outer[:, 1:2] * col
        contours.append(RoiContour(k, contour_strings(pts)))
    return contours


def _parse_contour(data: list[str]) -> np.ndarray:
    return np.array([float(v) for v in data]).reshape(-1, 3)


# --- the cohort -------------------------------------------------------------------------


def generate_cohort(
    out_dir: Path,
    n_cases: int,
    seed: int,
    layout: str = "per_case",
    case_options: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write out_dir/dicom/ and out_dir/truth/truth.json; return the truth dict.

    Deterministic for a given (n_cases, seed, layout, case_options): same bytes.
    """
    out_dir = Path(out_dir)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    case_options = {int(k): dict(v) for k, v in (case_options or {}).items()}
    for idx, opts in case_options.items():
        unknown = set(opts) - KNOWN_OPTIONS
        if unknown:
            raise ValueError(f"case {idx}: unknown options {sorted(unknown)}")
        ts = opts.get("transfer_syntax")
        if ts is not None and ts not in TRANSFER_SYNTAXES:
            why = UNSUPPORTED_TRANSFER_SYNTAXES.get(ts, "unknown transfer syntax")
            raise ValueError(f"case {idx}: transfer_syntax {ts!r} not supported: {why}")
    from pydicom import config as pydicom_config

    dicom_dir = out_dir / "dicom"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    # every value written is built to be valid; skipping pydicom's per-value checks halves write time
    saved_mode = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        cases = _generate_all(dicom_dir, layout, seed, n_cases, case_options)
    finally:
        pydicom_config.settings.reading_validation_mode = saved_mode
    truth = {
        "generator": "metsprep.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_cases": n_cases,
        "n_studies": len(cases),
        "layout": layout,
        "case_options": {str(k): to_jsonable(v) for k, v in case_options.items()},
        "template": "MNI152 ICBM 2009a symmetric (nilearn datasets/data), 1 mm",
        "conventions": {
            "patient_frame": "DICOM LPS mm",
            "lps_from_ijk": "i = column, j = row, k = slice index of the full stack (k = InstanceNumber - 1), voxel centres",
            "transform": "moving_lps_from_t1c_lps maps a T1C LPS point to the same anatomy in the moving series' LPS (ITK, T1C fixed)",
        },
        "cases": cases,
    }
    write_text(out_dir / "truth" / "truth.json", json.dumps(truth, indent=1, sort_keys=False) + "\n")
    return truth


def _generate_all(
    dicom_dir: Path, layout: str, seed: int, n_cases: int, case_options: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    uids = UidFactory(seed)
    master = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    used_ids: set[str] = set()
    cases: list[dict[str, Any]] = []
    for case_index in range(n_cases):
        patient = _draw_patient(master, used_ids)
        case_rng = np.random.default_rng(np.random.SeedSequence([seed, case_index]))
        cases.extend(_generate_patient(dicom_dir, layout, uids, case_index, patient, case_rng,
                                       case_options.get(case_index, {})))
    return cases


def _generate_patient(
    dicom_dir: Path, layout: str, uids: UidFactory, case_index: int, patient: dict[str, Any],
    rng: np.random.Generator, opts: dict[str, Any],
) -> list[dict[str, Any]]:
    n_studies = int(opts.get("studies", 1))
    studies = [_apply_stress_options(_draw_study(rng), opts) for _ in range(n_studies)]
    days = sorted(int(d) for d in rng.choice(np.arange(1, 365), size=n_studies, replace=False))
    lesion_rng = np.random.default_rng(patient["lesion_rng_seed"])
    count = draw_lesion_count(lesion_rng)
    diameters = draw_diameters_mm(lesion_rng, 16)
    if "lesions" in opts:
        requests = [dict(r) for r in opts["lesions"]]
    else:
        n = int(opts.get("n_lesions", count))
        if n > len(diameters):
            diameters = np.concatenate([diameters, draw_diameters_mm(lesion_rng, n - len(diameters))])
        requests = [{"diameter_mm": float(d)} for d in diameters[:n]]
    # effective per-case settings: defaults drawn above, then the options
    settings = {
        "matrix": int(opts.get("matrix", patient["matrix"])),
        "transfer_syntax": opts.get("transfer_syntax", patient["transfer_syntax"]),
        "contrast_agent": opts.get("contrast_agent", patient["contrast_agent"]),
        "tilt_deg": float(opts.get("tilt_deg", 0.0)),
        "missing_slice": opts.get("missing_slice"),
        "rescale": opts.get("rescale"),
        "omit_series": list(opts.get("omit_series", [])),
        "regenerate_uids": bool(opts.get("regenerate_uids", False)),
        "ambiguous_t1_descriptions": patient["ambiguous_t1_descriptions"] and "T1" not in opts.get("omit_series", []),
        "series_matrix": {str(k): int(v) for k, v in (opts.get("series_matrix") or {}).items()},
        "coverage": {str(k): float(v) for k, v in (opts.get("coverage") or {}).items()},
        "contrast": str(opts.get("contrast", "default")),
    }
    if settings["ambiguous_t1_descriptions"] and "contrast_agent" not in opts:
        settings["contrast_agent"] = None
    if settings["matrix"] not in (256, 512):
        raise ValueError(f"case {case_index}: matrix must be 256 or 512")
    anatomical_lesions = None
    results = []
    for study_index, study in enumerate(studies):
        date = f"1901{_month_day(days[study_index])}"
        context = StudyContext(dicom_dir, layout, uids, case_index, study_index, n_studies, patient, study, date,
                               settings, opts)  # fmt: skip
        entry, anatomical_lesions = _generate_study(context, requests, lesion_rng, anatomical_lesions)
        results.append(entry)
    return results


def _apply_stress_options(study: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """The drawn study with the acquisition stress options applied (STRESS_OPTIONS); a
    case without them keeps every drawn value, so its files stay byte-identical."""
    series = study["series"]
    for role, motion in (opts.get("motion") or {}).items():
        d = series[role]
        if "angle_deg" in motion:
            d["motion_angle"] = float(motion["angle_deg"])
        if "translation_mm" in motion:
            direction = d["motion_translation"] / np.linalg.norm(d["motion_translation"])
            d["motion_translation"] = direction * float(motion["translation_mm"])
    if "fov_offset_mm" in opts:
        for d in series.values():
            d["centre_offset"] = d["centre_offset"] + np.asarray(opts["fov_offset_mm"], dtype=float)
    for key, field in (("thickness_mm", "thickness"), ("gap_mm", "gap"), ("series_fov_mm", "fov")):
        for role, value in (opts.get(key) or {}).items():
            series[role][field] = float(value)
    for role, order in (opts.get("slice_order") or {}).items():
        if order not in ("ascending", "descending", "shuffled"):
            raise ValueError(f"slice_order {order!r} is not ascending, descending or shuffled")
        series[role]["superior_first"] = order == "descending"
        series[role]["shuffled"] = order == "shuffled"
    for d in series.values():
        if "bias_scale" in opts:
            d["bias"] = d["bias"] * float(opts["bias_scale"])
        if "noise_scale" in opts:
            d["noise"] = d["noise"] * float(opts["noise_scale"])
    if opts.get("contrast", "default") not in ("default", "alternate"):
        raise ValueError(f"contrast {opts['contrast']!r} is not default or alternate")
    return study


def _month_day(day_of_year: int) -> str:
    import datetime

    d = datetime.date(1901, 1, 1) + datetime.timedelta(days=day_of_year - 1)
    return f"{d.month:02d}{d.day:02d}"


@dataclass(frozen=True)
class StudyContext:
    """What one study of one patient is generated from (drawn values, options, where to write)."""

    dicom_dir: Path
    layout: str
    uids: UidFactory
    case_index: int
    study_index: int
    n_studies: int
    patient: dict[str, Any]
    study: dict[str, Any]
    date: str
    settings: dict[str, Any]
    opts: dict[str, Any]

    @property
    def key(self) -> tuple[int, int]:
        return (self.case_index, self.study_index)

    @property
    def case_folder(self) -> str:
        return f"{self.patient['patient_id']}_{self.study_index + 1}"

    def relative_path(self, series_number: int, description: str, file_number: int | None, k: int | None,
                      study_uid: str) -> str:  # fmt: skip
        return _relative_path(self.layout, self.patient, self.case_index, self.study_index, study_uid, self.date,
                              series_number, description, self.case_folder, file_number, k)  # fmt: skip


@dataclass(frozen=True)
class StudyFrame:
    """Where the head is: the T1C pose in MNI, each series' motion and slice stack."""

    scale: float
    pose: np.ndarray  # t1c_lps_from_mni_lps
    mni_lps_from_t1c: np.ndarray
    mni_ijk_from_t1c: np.ndarray
    rotation_centre: np.ndarray
    motions: dict[str, np.ndarray]  # moving LPS from T1C LPS (T1C: identity)
    transforms: dict[str, dict[str, Any]]  # truth of each motion
    stacks: dict[str, StackGeometry]


@dataclass(frozen=True)
class StudyUids:
    study: str
    frame: str
    series: dict[str, str]
    sops: dict[str, list[str]]


def _generate_study(
    ctx: StudyContext, requests: list[dict[str, Any]], lesion_rng: np.random.Generator,
    anatomical_lesions: list[dict[str, Any]] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write one study (three MR series and the RTSS) and return its truth entry."""
    frame = _study_frame(ctx)
    lesions, anatomical_lesions = _study_lesions(ctx, frame, requests, lesion_rng, anatomical_lesions)
    ids = StudyUids(
        study=ctx.uids.uid("study", *ctx.key),
        frame=ctx.uids.uid("frame", *ctx.key),
        series={r: ctx.uids.uid("series", *ctx.key, r) for r in SEQUENCES},
        sops={r: [ctx.uids.uid("instance", *ctx.key, r, k) for k in range(frame.stacks[r].n_slices)] for r in SEQUENCES},
    )
    common = _study_attributes(ctx, ids)
    series_truth, t_min = _write_series(ctx, frame, lesions, ids, common)
    structure_set = _write_structure_set(ctx, frame, lesions, ids, common, t_min)
    present = [r for r in SEQUENCES if r not in ctx.settings["omit_series"]]
    status, reason, flags, faults = _expected_outcome(ctx.settings, series_truth, present)
    settings, patient, layout = ctx.settings, ctx.patient, ctx.layout
    rtss_rel = structure_set["rtss"]["file"]
    entry = {
        "case_index": ctx.case_index,
        "study_index": ctx.study_index,
        "n_studies": ctx.n_studies,
        "patient_id": patient["patient_id"],
        "patient_name": patient["patient_name"],
        "patient_sex": patient["sex"],
        "patient_age": common["PatientAge"],
        "study_instance_uid": ids.study,
        "study_date": ctx.date,
        "frame_of_reference_uid": ids.frame,
        "folder": None if layout == "flat" else (ctx.case_folder if layout == "per_case" else str(Path(rtss_rel).parent.parent)),
        "expected_status": status,
        "expected_status_reason": reason,
        "expected_flags": flags,
        "faults": faults,
        "options": to_jsonable(ctx.opts),
        "settings": to_jsonable(settings),
        "manufacturer_model_name": patient["model"],
        "magnetic_field_strength": patient["field_strength"],
        "t1c_identified_only_by_rtss": bool(settings["ambiguous_t1_descriptions"] and "T1C" in present),
        "head": {"scale": frame.scale, "t1c_lps_from_mni_lps": _mat(frame.pose)},
        "series": series_truth,
        "transforms": {r: (frame.transforms[r] if series_truth.get(r) else None) for r in ("T1", "T2")},
        "brain_points_t1c_lps": [_vec(p) for p in _brain_points(ctx, frame)],
        **structure_set,
    }
    return entry, anatomical_lesions


def _study_frame(ctx: StudyContext) -> StudyFrame:
    """The head's pose, the known motions of T1 and T2 (T1C is the reference) and the stacks."""
    maps = anatomy.tissue_maps()
    scale = ctx.patient["head_scale"]
    pose = _pose(scale, ctx.study)  # t1c_lps_from_mni_lps
    mni_lps_from_t1c = np.linalg.inv(pose)
    _, _, centroid_mni = anatomy.brain_candidates()
    rotation_centre = apply_affine(pose, centroid_mni)
    motions = {"T1C": np.eye(4)}
    transforms = {}
    for role in ("T1", "T2"):
        d = ctx.study["series"][role]
        rot = rotation_matrix(d["motion_axis"], d["motion_angle"])
        m = rigid_about(rot, rotation_centre, d["motion_translation"])
        motions[role] = m
        transforms[role] = {
            "moving_lps_from_t1c_lps": _mat(m),
            "rotation_axis": _vec(d["motion_axis"]),
            "rotation_angle_deg": d["motion_angle"],
            "rotation_deg": itk_euler_zxy_deg(rot),
            "rotation_convention": "ITK Euler3DTransform angles (x, y, z), R = Rz @ Rx @ Ry",
            "translation_mm": _vec(d["motion_translation"]),
            "center_of_rotation_lps_mm": _vec(rotation_centre),
        }
    settings = ctx.settings
    stacks = {
        role: _stack_for(role, ctx.study["series"][role], pose, scale, settings["series_matrix"].get(role, settings["matrix"]),
                         settings["tilt_deg"], motions[role], settings["coverage"].get(role, 1.0))
        for role in SEQUENCES
    }  # fmt: skip
    return StudyFrame(scale, pose, mni_lps_from_t1c, np.linalg.inv(maps.lps_from_ijk) @ mni_lps_from_t1c,
                      rotation_centre, motions, transforms, stacks)  # fmt: skip


def _study_lesions(
    ctx: StudyContext, frame: StudyFrame, requests: list[dict[str, Any]], lesion_rng: np.random.Generator,
    anatomical_lesions: list[dict[str, Any]] | None,
) -> tuple[list[tuple[Lesion, dict[str, Any]]], list[dict[str, Any]]]:
    """Lesions in the T1C frame: placed anew at a patient's first study, then the same
    lesions (in MNI) grown or shrunk at the later ones."""
    t1c, pose, scale = frame.stacks["T1C"], frame.pose, frame.scale
    if anatomical_lesions is None:
        placed = _place_lesions(lesion_rng, requests, pose, scale, t1c)
        for track, (_, info) in enumerate(placed):
            info.update(track=track, first_study_index=ctx.study_index)
        anatomical_lesions = [_anatomical_entry(frame, les, info) for les, info in placed]
        return [(a["lesion"], a["info"]) for a in anatomical_lesions], anatomical_lesions
    growth_rng = np.random.default_rng(ctx.study["lesion_growth_seed"])
    changes = _longitudinal_changes(ctx, len(anatomical_lesions))
    lesions = []
    rot = pose[:3, :3] / scale
    for track, a in enumerate(anatomical_lesions):
        base = a["lesion"]
        drawn = float(growth_rng.uniform(0.6, 1.2))  # drawn for every lesion: the other draws stay as they were
        if track in changes["gone"]:
            a["gone_from"] = ctx.study_index
        if a.get("gone_from") is not None and ctx.study_index >= a["gone_from"]:
            continue  # resolved after treatment: no contour from this session on
        first = changes["growth"].get(track, drawn)
        for growth in (first, 0.8, 0.6, 0.4):
            les = Lesion(apply_affine(pose, a["centre_mni_lps"]), a["radius_mni"] * scale * growth,
                         [ShapeTerm(t.degree, tuple(rot @ np.asarray(t.axis)), t.coefficient) for t in a["terms_mni"]],
                         base.ring_enhancing, base.core_fraction, base.oedema_extent)  # fmt: skip
            if _fits_in_brain(les, frame.mni_ijk_from_t1c):
                break
        s, lo, hi = _slab_interval(t1c, les.centre_lps)
        if lo + les.max_radius_mm + t1c.slice_spacing < s < hi - les.max_radius_mm - t1c.slice_spacing:
            renamed = track in changes["rename"]
            lesions.append((les, dict(a["info"], growth_factor=growth, renamed=renamed)))
    if changes["new"]:
        new_rng = np.random.default_rng(np.random.SeedSequence([ctx.patient["lesion_rng_seed"], 13, ctx.study_index]))
        placed = _place_lesions(new_rng, changes["new"], pose, scale, t1c, avoid=[les for les, _ in lesions])
        for les, info in placed:
            info.update(track=len(anatomical_lesions), first_study_index=ctx.study_index)
            anatomical_lesions.append(_anatomical_entry(frame, les, info))
            lesions.append((les, info))
    return lesions, anatomical_lesions


def _anatomical_entry(frame: StudyFrame, les: Lesion, info: dict[str, Any]) -> dict[str, Any]:
    """A lesion in MNI terms, so that later sessions can place it in their own pose."""
    scale = frame.scale
    return {
        "centre_mni_lps": apply_affine(frame.mni_lps_from_t1c, les.centre_lps),
        "radius_mni": les.radius_mm / scale,
        "terms_mni": [ShapeTerm(t.degree, tuple(frame.mni_lps_from_t1c[:3, :3] @ np.asarray(t.axis) * scale), t.coefficient)
                      for t in les.terms],
        "lesion": les, "info": info,
    }  # fmt: skip


def _longitudinal_changes(ctx: StudyContext, n_tracks: int) -> dict[str, Any]:
    """What happens to a patient's lesions at this (later) session: option `longitudinal`.

    A mapping {study_index: {"gone": [track, ...], "growth": {track: radius factor},
    "rename": [track, ...], "new": [{"diameter_mm": d}, ...]}} (tracks: 0-based, in order of
    first appearance; growth relative to the first appearance), or true: drawn per later
    session (each lesion gone with p 0.15, renamed with p 0.25, radius x 0.5-1.5; new
    lesions Poisson(0.5)). Without it, nothing goes or comes and growth is drawn 0.6-1.2."""
    none: dict[str, Any] = {"gone": set(), "growth": {}, "rename": set(), "new": []}
    spec = ctx.opts.get("longitudinal")
    if not spec or ctx.study_index == 0:
        return none
    if spec is True:
        rng = np.random.default_rng(np.random.SeedSequence([ctx.patient["lesion_rng_seed"], 17, ctx.study_index]))
        return {
            "gone": {t for t in range(n_tracks) if rng.random() < 0.15},
            "growth": {t: float(rng.uniform(0.5, 1.5)) for t in range(n_tracks)},
            "rename": {t for t in range(n_tracks) if rng.random() < 0.25},
            "new": [{"diameter_mm": float(d)} for d in draw_diameters_mm(rng, int(rng.poisson(0.5)))],
        }
    here = dict(spec.get(str(ctx.study_index)) or spec.get(ctx.study_index) or {})
    return {
        "gone": {int(t) for t in here.get("gone", [])},
        "growth": {int(t): float(f) for t, f in (here.get("growth") or {}).items()},
        "rename": {int(t) for t in here.get("rename", [])},
        "new": [dict(r) for r in here.get("new", [])],
    }


def _descriptions(ctx: StudyContext) -> dict[str, str]:
    descriptions = {r: str(ctx.study["series"][r]["description"]) for r in SEQUENCES}
    if ctx.settings["ambiguous_t1_descriptions"]:
        descriptions["T1C"] = descriptions["T1"] = "AX T1"
    elif descriptions["T1"] == "AX T1" and descriptions["T1C"] == "AX T1":
        descriptions["T1"] = "AX T1 PRE"
    return descriptions


def _study_attributes(ctx: StudyContext, ids: StudyUids) -> dict[str, Any]:
    """Patient and study attributes shared by every file of the study."""
    patient, study = ctx.patient, ctx.study
    return {
        "PatientName": patient["patient_name"],
        "PatientID": patient["patient_id"],
        "PatientBirthDate": patient["birth_date"],
        "PatientSex": patient["sex"],
        "PatientAge": f"{patient['age'] + ctx.study_index // 4:03d}Y",
        "StudyInstanceUID": ids.study,
        "StudyDate": ctx.date,
        "StudyTime": _hhmmss(study["study_time_min"] * 60),
        "StudyID": str(1000 + (int(patient["patient_id"]) + ctx.study_index) % 9000),
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "StudyDescription": study["study_description"],
    }


def _write_series(
    ctx: StudyContext, frame: StudyFrame, lesions: list[tuple[Lesion, dict[str, Any]]], ids: StudyUids,
    common: dict[str, Any],
) -> tuple[dict[str, Any], int]:
    """Render and write the three MR series (files numbered over the study in series-number
    order); returns their truth and the acquisition clock after the last one (minutes)."""
    maps = anatomy.tissue_maps()
    study, settings = ctx.study, ctx.settings
    present = [r for r in SEQUENCES if r not in settings["omit_series"]]
    descriptions = _descriptions(ctx)
    order = list(study["series_order"])
    numbers = dict(zip(order, study["series_numbers"]))
    file_counter = 0
    series_truth: dict[str, Any] = {}
    noise_seed = np.random.SeedSequence([ctx.patient["noise_rng_seed"], ctx.study_index])
    noise_rngs = dict(zip(SEQUENCES, [np.random.default_rng(s) for s in noise_seed.spawn(3)]))
    t_min = study["study_time_min"]
    for position, role in enumerate(order):
        geom = frame.stacks[role]
        d = study["series"][role]
        t_min += int(4 + 3 * position)
        n = geom.n_slices
        missing = None
        if settings["missing_slice"] == role:
            missing = 2 + int(d["missing_index_fraction"] * (n - 4))
        rel_paths: list[str] = []
        for k in range(n):
            file_counter += 1
            rel_paths.append(ctx.relative_path(numbers[role], descriptions[role], file_counter, k, ids.study))
        if role not in present:
            series_truth[role] = None
            continue
        real = render_series(
            maps, geom, np.linalg.inv(frame.motions[role]), frame.mni_lps_from_t1c,
            [les for les, _ in lesions],
            RenderParams(role, d["gain"], d["bias"], np.asarray(apply_affine(frame.motions[role], frame.rotation_centre)), d["noise"],
                         ctx.settings["contrast"]),
            noise_rngs[role],
        )  # fmt: skip
        series_truth[role] = _write_one_series(ctx, role, geom, real, ids, common, numbers[role], descriptions[role],
                                               rel_paths, missing, t_min)  # fmt: skip
    return series_truth, t_min


def _write_one_series(
    ctx: StudyContext, role: str, geom: StackGeometry, real: np.ndarray, ids: StudyUids, common: dict[str, Any],
    number: int, description: str, rel_paths: list[str], missing: int | None, t_min: int,
) -> dict[str, Any]:
    patient, settings, d = ctx.patient, ctx.settings, ctx.study["series"][role]
    n = geom.n_slices
    rescale = settings["rescale"]
    slope = float(rescale["slope"]) if rescale else 1.0
    intercept = float(rescale["intercept"]) if rescale else 0.0
    stored, pixel_rep = quantise(real, slope, intercept)
    agent = settings["contrast_agent"] if role == "T1C" else None
    spacing_tag = d["gap"] if d["spacing_tag_is_gap"] else geom.slice_spacing
    series_attrs = {
        "Modality": "MR",
        "Manufacturer": "GE MEDICAL SYSTEMS",
        "ManufacturerModelName": patient["model"],
        "SoftwareVersions": SOFTWARE[patient["model"]],
        "MagneticFieldStrength": format_ds(patient["field_strength"], 1),
        "SeriesInstanceUID": ids.series[role],
        "SeriesNumber": number,
        "SeriesDescription": description,
        "ProtocolName": patient["protocol"],
        "SeriesDate": ctx.date,
        "SeriesTime": _hhmmss(t_min * 60),
        "AcquisitionDate": ctx.date,
        "ContentDate": ctx.date,
        "FrameOfReferenceUID": ids.frame,
        "PositionReferenceIndicator": "",
        "BodyPartExamined": "HEAD",
        "PatientPosition": "HFS",
        "ScanningSequence": "SE",
        "SequenceVariant": d["variant"].split("\\"),
        "ScanOptions": d["scan_options"],
        "MRAcquisitionType": "2D",
        "SliceThickness": format_ds(geom.slice_thickness, 4),
        "RepetitionTime": format_ds(d["tr"], 3),
        "EchoTime": format_ds(d["te"], 3),
        "NumberOfAverages": str(d["averages"]),
        "ImagingFrequency": "63.86" if patient["field_strength"] == 1.5 else "127.77",
        "ImagedNucleus": "1H",
        "EchoNumbers": "1",
        "SpacingBetweenSlices": format_ds(spacing_tag, 4),
        "NumberOfPhaseEncodingSteps": str(int(geom.rows * 0.75)),
        "EchoTrainLength": str(d["etl"]),
        "PercentSampling": "100",
        "PercentPhaseFieldOfView": format_ds(d["phase_fov"], 1),
        "PixelBandwidth": format_ds(d["bandwidth"], 4),
        "ReceiveCoilName": "HEAD",
        "AcquisitionMatrix": [0, geom.rows, int(geom.rows * 0.75), 0],
        "InPlanePhaseEncodingDirection": d["phase_dir"],
        "FlipAngle": "90",
        "ContrastBolusAgent": agent,
        "ImageOrientationPatient": geom.iop_strings,
        "PixelSpacing": [format_ds(v, 6) for v in geom.pixel_spacing],
        "WindowCenter": "600" if role != "T2" else "900",
        "WindowWidth": "1200" if role != "T2" else "1800",
    }
    if rescale:
        series_attrs.update(RescaleIntercept=format_ds(intercept, 6), RescaleSlope=format_ds(slope, 6), RescaleType="US")
    used_ts = None
    ds = mr_dataset(common, series_attrs, {})  # reused: only per-instance attributes change
    # file and Instance Number of slice k: in slice order, or shuffled (only Image Position orders them)
    slot = list(range(n))
    if d.get("shuffled"):
        slot = [int(v) for v in np.random.default_rng(np.random.SeedSequence([patient["noise_rng_seed"], 13, n])).permutation(n)]
        rel_paths = [rel_paths[slot[k]] for k in range(n)]
    for k in range(n):
        if k == missing:
            continue
        pos = geom.positions[k]
        ds.SOPInstanceUID = ids.sops[role][k]
        ds.InstanceNumber = slot[k] + 1
        ds.ImagePositionPatient = geom.ipp_strings[k]
        ds.SliceLocation = format_ds(float(pos @ geom.normal), 4)
        ds.AcquisitionTime = ds.ContentTime = _hhmmss(t_min * 60 + k)
        set_pixels(ds, stored[k], pixel_rep)
        used_ts = write_dataset(ds, ctx.dicom_dir / rel_paths[k], settings["transfer_syntax"])
    return {
        "series_instance_uid": ids.series[role],
        "series_number": number,
        "series_description": description,
        "expected_sequence": role,
        "description_marks_contrast": role == "T1C" and description != "AX T1",
        "contrast_agent": agent,
        "n_instances": n - (1 if missing is not None else 0),
        "n_slices_full": n,
        "rows": geom.rows,
        "columns": geom.columns,
        "pixel_spacing_mm": list(geom.pixel_spacing),
        "slice_thickness_mm": geom.slice_thickness,
        "slice_spacing_mm": geom.slice_spacing,
        "spacing_between_slices_tag_mm": spacing_tag,
        "spacing_between_slices_is_gap": bool(d["spacing_tag_is_gap"]),
        "gap_mm": d["gap"],
        "tilt_deg": geom.tilt_deg,
        "superior_first": d["superior_first"],
        "shuffled": bool(d.get("shuffled", False)),
        "instance_numbers": [slot[k] + 1 for k in range(n)],
        "image_orientation_patient": [float(v) for v in geom.iop_strings],
        "lps_from_ijk": _mat(geom.lps_from_ijk),
        "files": [None if k == missing else rel_paths[k] for k in range(n)],
        "sop_instance_uids": ids.sops[role],
        "missing_slice_index": missing,
        "missing_sop_instance_uid": None if missing is None else ids.sops[role][missing],
        "transfer_syntax": settings["transfer_syntax"],
        "transfer_syntax_uid": used_ts,
        "rescale": {"slope": slope, "intercept": intercept} if rescale else None,
        "pixel_representation": pixel_rep,
        "repetition_time_ms": d["tr"],
        "echo_time_ms": d["te"],
        "echo_train_length": d["etl"],
        "noise_sigma": d["noise"] * d["gain"],
        "gain": d["gain"],
    }


def _write_structure_set(
    ctx: StudyContext, frame: StudyFrame, lesions: list[tuple[Lesion, dict[str, Any]]], ids: StudyUids,
    common: dict[str, Any], t_min: int,
) -> dict[str, Any]:
    """The GammaPlan-style RTSS on the T1C slices; returns its part of the truth entry."""
    patient, settings, t1c = ctx.patient, ctx.settings, frame.stacks["T1C"]
    label_rng = np.random.default_rng(np.random.SeedSequence([patient["lesion_rng_seed"], 7]))
    used_names: set[str] = set()
    lesion_truth, rois = [], []
    skull_contours = _skull_contours(t1c, frame.mni_ijk_from_t1c)
    roi_number = 2 if patient["skull_first"] else 1
    lesions_without_contours = []
    for les, info in lesions:
        labels = _anatomical_labels(les, frame.pose, label_rng)
        contours = _lesion_contours(les, t1c)
        if not contours:  # falls between two slice planes: nobody could have drawn it
            lesions_without_contours.append({"centre_lps_mm": _vec(les.centre_lps), "true_volume_mm3": les.true_volume_mm3()})
            continue
        if ctx.opts.get("longitudinal") and info.get("track_name"):
            # the planner reuses a lesion's first name at later sessions, unless it renames it
            name = _renamed(info["track_name"]) if info.get("renamed") else info["track_name"]
            while name in used_names:
                name += "b"
        else:
            name = info.get("roi_name") or _roi_name(labels, label_rng, used_names)
            if ctx.opts.get("longitudinal"):
                info["track_name"] = name
        used_names.add(name)
        lesion_truth.append(_lesion_truth(les, info, labels, contours, t1c, roi_number, name, patient))
        rois.append(Roi(roi_number, name, patient["interpreted_type_lesion"], ROI_COLORS[(roi_number - 1) % len(ROI_COLORS)], contours))
        roi_number += 1
    skull_number = 1 if patient["skull_first"] else roi_number
    skull = Roi(skull_number, "*Skull", patient["interpreted_type_skull"], (255, 255, 255), skull_contours)
    rois = [skull, *rois] if patient["skull_first"] else [*rois, skull]

    referenced_series = ids.series["T1C"]
    referenced_sops = ids.sops["T1C"]
    if settings["regenerate_uids"]:
        referenced_series = ctx.uids.uid("series", *ctx.key, "regenerated")
        referenced_sops = [ctx.uids.uid("instance", *ctx.key, "regenerated", k) for k in range(t1c.n_slices)]
    rtss_sop = ctx.uids.uid("instance", *ctx.key, "rtss")
    rtss_series_uid = ctx.uids.uid("series", *ctx.key, "rtss")
    rtss = rtss_dataset(
        common,
        sop_instance_uid=rtss_sop,
        series_instance_uid=rtss_series_uid,
        frame_of_reference_uid=ids.frame,
        study_instance_uid=ids.study,
        referenced_series_uid=referenced_series,
        referenced_sop_uids=referenced_sops,
        rois=rois,
        series_number=ctx.study["rtss_series_number"],
        structure_set_date=ctx.date,
        structure_set_time=_hhmmss((t_min + 45) * 60),
        software_version=patient["gamma_plan_version"],
    )
    rtss_rel = ctx.relative_path(ctx.study["rtss_series_number"], "RTSTRUCT", None, None, ids.study)
    rtss_ts = settings["transfer_syntax"] if settings["transfer_syntax"] in ("implicit", "explicit") else "implicit"
    write_dataset(rtss, ctx.dicom_dir / rtss_rel, rtss_ts)
    present = [r for r in SEQUENCES if r not in settings["omit_series"]]
    return {
        "rtss": {
            "file": rtss_rel,
            "sop_instance_uid": rtss_sop,
            "series_instance_uid": rtss_series_uid,
            "structure_set_label": "ROIs in axC",
            "references_resolvable": not settings["regenerate_uids"] and "T1C" in present,
            "referenced_series_instance_uid": referenced_series,
            "transfer_syntax": rtss_ts,
        },
        "n_lesions": len(lesion_truth),
        "lesions": lesion_truth,
        "lesions_without_contours": lesions_without_contours,
        "non_lesion_rois": [{
            "roi_number": skull_number, "roi_name": "*Skull", "interpreted_type": patient["interpreted_type_skull"],
            "n_contours": len(skull_contours), "slice_indices": [c.slice_index for c in skull_contours],
        }],
    }  # fmt: skip


def _lesion_truth(
    les: Lesion, info: dict[str, Any], labels: dict[str, Any], contours: list[RoiContour], t1c: StackGeometry,
    roi_number: int, name: str, patient: dict[str, Any],
) -> dict[str, Any]:
    areas = [polygon_area_in_plane(_parse_contour(c.data), t1c.row_dir, t1c.col_dir) for c in contours]
    volume = les.true_volume_mm3()
    return {
        "roi_number": roi_number,
        "roi_name": name,
        "hemisphere": labels["hemisphere"],
        "region": labels["region"],
        "site": labels["site"],
        "centre_lps_mm": _vec(les.centre_lps),
        "centroid_lps_mm": _vec(les.true_centroid_lps()),
        "centre_mni_ras_mm": labels["centre_mni_ras_mm"],
        "radius_mm": les.radius_mm,
        "mean_radius_mm": float((3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0)),
        "equivalent_diameter_mm": float((6.0 * volume / np.pi) ** (1.0 / 3.0)),
        "max_diameter_mm": les.max_diameter_mm(),
        "max_radius_mm": les.max_radius_mm,
        "requested_diameter_mm": info["requested_diameter_mm"],
        "true_volume_mm3": volume,
        "planimetric_volume_mm3": float(sum(areas) * t1c.slice_spacing),
        "n_contours": len(contours),
        "slice_indices": [c.slice_index for c in contours],
        "n_contour_points": [len(c.data) // 3 for c in contours],
        "ring_enhancing": les.ring_enhancing,
        "core_fraction": les.core_fraction,
        "oedema_extent": les.oedema_extent,
        "growth_factor": info.get("growth_factor"),
        "track_id": f"T{int(info['track']) + 1:02d}" if info.get("track") is not None else None,
        "first_study_index": info.get("first_study_index"),
        "renamed": bool(info.get("renamed")),
        "shape_terms": [{"degree": t.degree, "axis_lps": list(t.axis), "coefficient": t.coefficient} for t in les.terms],
        "interpreted_type": patient["interpreted_type_lesion"],
    }


def _brain_points(ctx: StudyContext, frame: StudyFrame) -> np.ndarray:
    """Points for registration checks: in the brain and inside all three slabs (T1C LPS)."""
    cand_lps, _, _ = anatomy.brain_candidates()
    point_rng = np.random.default_rng(np.random.SeedSequence([ctx.patient["lesion_rng_seed"], 11, ctx.study_index]))
    picks = cand_lps[point_rng.choice(len(cand_lps), size=1500, replace=False)] + point_rng.uniform(-1, 1, size=(1500, 3))
    pts = apply_affine(frame.pose, picks)
    ok = _inside_fov(frame.stacks["T1C"], pts, 2.0)
    for role in ("T1", "T2"):
        ok &= _inside_fov(frame.stacks[role], apply_affine(frame.motions[role], pts), 2.0)
    return pts[ok][:200]


def _expected_outcome(
    settings: dict[str, Any], series_truth: dict[str, Any], present: list[str]
) -> tuple[str, str | None, list[str], list[dict[str, Any]]]:
    """What the pipeline should make of the study: status, reason, flags and the faults."""
    faults: list[dict[str, Any]] = []
    flags: list[str] = []
    status, reason = "ok", None
    if settings["missing_slice"]:
        faults.append({"kind": "missing_slice", "series": settings["missing_slice"],
                       "slice_index": series_truth.get(settings["missing_slice"], {}) and series_truth[settings["missing_slice"]]["missing_slice_index"]})  # fmt: skip
        flags.append(f"{settings['missing_slice']}_missing_slice")
    for role in settings["omit_series"]:
        faults.append({"kind": "omitted_series", "series": role})
        flags.append(f"no_{role}")
    if "T1C" in settings["omit_series"]:
        status, reason = "excluded", "no T1C series: the RT Structure Set references images that are not in the input"
    if settings["regenerate_uids"]:
        faults.append({"kind": "rtss_references_unresolvable"})
        flags.append("rtss_references_unresolved")
    if settings["ambiguous_t1_descriptions"] and "T1C" in present:
        flags.append("t1c_identified_only_by_rtss")
    if settings["tilt_deg"]:
        flags.append("gantry_tilt")
    return status, reason, flags, faults


def _hhmmss(seconds: int) -> str:
    seconds = int(seconds) % 86400
    return f"{seconds // 3600:02d}{(seconds % 3600) // 60:02d}{seconds % 60:02d}"


def _relative_path(
    layout: str, patient: dict[str, Any], case_index: int, study_index: int, study_uid: str, date: str,
    series_number: int, description: str, case_folder: str, file_number: int | None, k: int | None,
) -> str:
    name = "rtss.dcm" if file_number is None else f"mr.{file_number}.dcm"
    if layout == "per_case":
        return f"{case_folder}/{name}"
    if layout == "flat":
        return f"c{case_index:04d}s{study_index + 1}_{name}"
    study_folder = f"ST_{date}_{study_uid.rsplit('.', 2)[-2][-6:]}"
    series_folder = f"SE{series_number:03d}_{_sanitize(description)}"
    leaf = "rtss.dcm" if file_number is None or k is None else f"IM{k + 1:04d}.dcm"
    return f"{patient['patient_id']}/{study_folder}/{series_folder}/{leaf}"
