"""Case options for a registration stress corpus: every way the real collection can differ.

`stress_case_options(n_cases, seed)` draws, per case, the acquisition stress options of
`cohort.STRESS_OPTIONS` (and `matrix`) so that the corpus as a whole covers: motions up to
10 degrees and 15 mm, heads off-centre in the FOV, partial T2 slabs (50-70% of the brain),
ascending, descending and shuffled slice order, 3-7 mm slices with gaps, 512x512 at
~0.47 mm beside 256x256, a T2 with its own FOV and matrix, strong bias fields, low SNR and
another contrast model. Case 0..5 force one hard feature each (so a small corpus already
holds them); the rest are random mixtures. Deterministic for (n_cases, seed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORCED: list[dict[str, Any]] = [
    {"motion": {"T1": {"angle_deg": 10.0, "translation_mm": 15.0}, "T2": {"angle_deg": 9.0, "translation_mm": 14.0}}},
    {"coverage": {"T2": 0.55}},
    {"slice_order": {"T1C": "descending", "T1": "shuffled", "T2": "descending"}},
    {"fov_offset_mm": [25.0, -20.0, 0.0], "series_fov_mm": {"T2": 200.0}, "series_matrix": {"T2": 256}},
    {"bias_scale": 4.0, "noise_scale": 2.5, "contrast": "alternate"},
    {"thickness_mm": {"T1C": 3.0, "T1": 7.0, "T2": 6.0}, "gap_mm": {"T1": 1.5}, "matrix": 512},
]


def _random_options(rng: np.random.Generator) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    opts["motion"] = {
        role: {"angle_deg": float(rng.uniform(0.5, 10.0)), "translation_mm": float(rng.uniform(1.0, 15.0))}
        for role in ("T1", "T2")
    }
    if rng.uniform() < 0.4:
        opts["fov_offset_mm"] = [float(v) for v in rng.uniform(-25, 25, 2)] + [0.0]
    if rng.uniform() < 0.35:
        opts["coverage"] = {"T2": float(rng.uniform(0.5, 0.7))}
    orders = ("ascending", "descending", "shuffled")
    opts["slice_order"] = {role: str(rng.choice(orders)) for role in ("T1C", "T1", "T2")}
    opts["thickness_mm"] = {role: float(rng.choice([3.0, 4.0, 5.0, 6.0, 7.0])) for role in ("T1C", "T1", "T2")}
    opts["gap_mm"] = {role: float(rng.choice([0.0, 0.5, 1.0, 2.0])) for role in ("T1C", "T1", "T2")}
    if rng.uniform() < 0.3:
        opts["matrix"] = 512
    if rng.uniform() < 0.4:
        opts["series_matrix"] = {"T2": int(rng.choice([256, 512]))}
        opts["series_fov_mm"] = {"T2": float(rng.uniform(200, 250))}
    if rng.uniform() < 0.3:
        opts["bias_scale"] = float(rng.uniform(2.0, 4.0))
    if rng.uniform() < 0.3:
        opts["noise_scale"] = float(rng.uniform(1.5, 3.0))
    if rng.uniform() < 0.3:
        opts["contrast"] = "alternate"
    return opts


def stress_case_options(n_cases: int, seed: int = 0) -> dict[int, dict[str, Any]]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57E55]))
    options = {}
    for index in range(n_cases):
        drawn = _random_options(rng)
        options[index] = dict(FORCED[index]) if index < len(FORCED) else drawn
    return options
