"""Variants of the independent check on one persisted stress corpus; one JSONL row per pair.

    .venv/bin/python benchmarks/study_register_check.py WORKDIR N_CASES SEED NAME [JSON]

JSON: {"average": true} (final = mean of the main and the check transform),
{"check_seed": S} (the check draws other metric samples), {"settings": {...}} (RegistrationSettings
fields). The corpus (NIfTI + truth) is made once in WORKDIR and reused by every variant, so rows
of different variants compare the same pairs. Results of 2026-12-02: results/register_check_variants.md.
"""

import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, "benchmarks")
from bench_register import stress_pairs, target_registration_errors

import metsprep.register as R
from metsprep.settings import RegistrationSettings


def corpus(work: Path, n, seed):
    meta = work / "pairs.pkl"
    if not meta.exists():
        pairs = stress_pairs(work, n, seed)
        for p in pairs:
            p["truth"] = list(p["truth"].GetParameters()), list(p["truth"].GetFixedParameters())
        meta.write_bytes(pickle.dumps(pairs))
    pairs = pickle.loads(meta.read_bytes())
    for p in pairs:
        t = sitk.AffineTransform(3)
        t.SetParameters(p["truth"][0])
        t.SetFixedParameters(p["truth"][1])
        p["truth"] = t
    return pairs


def variant_register(prepared, moving_image, settings, check_seed=None, average=False):
    fixed = prepared.pyramid
    moving = R.Pyramid.of(moving_image, settings)
    center = prepared.center_lps
    n_levels = len(settings.levels_mm)
    starts = R._starts(settings, center, fixed, moving)
    ranked = sorted(starts, key=lambda t: R._metric_at(settings, fixed, moving, 0, t))[: R.STARTS_OPTIMISED]
    coarse = [R._optimise(settings, fixed, moving, 0, t) for t in ranked]
    transform, _, _, stop = min(coarse, key=lambda r: r[1])
    for level in range(1, n_levels):
        transform, _, _, stop = R._optimise(settings, fixed, moving, level, transform)
    cs = settings if check_seed is None else replace(settings, seed=check_seed)
    check = R._perturbed(transform, settings)
    for level in range(max(0, n_levels - settings.check_levels), n_levels):
        check, _, _, _ = R._optimise(cs, fixed, moving, level, check)
    dis = R.distance_p95_mm(transform, check, prepared.check_points_lps)
    final = transform
    if average:
        p = (np.array(transform.GetParameters()) + np.array(check.GetParameters())) / 2
        final = sitk.Euler3DTransform(transform)
        final.SetParameters(p.tolist())
    return transform, final, dis, stop


if __name__ == "__main__":
    work = Path(sys.argv[1])
    n = int(sys.argv[2])
    seed = int(sys.argv[3])
    name = sys.argv[4]
    kw = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    settings = replace(
        RegistrationSettings(), **{k: tuple(v) if isinstance(v, list) else v for k, v in kw.pop("settings", {}).items()}
    )
    pairs = corpus(work, n, seed)
    with open(work / f"{name}.jsonl", "w") as out:
        for p in pairs:
            f = sitk.ReadImage(str(p["fixed_path"]))
            m = sitk.ReadImage(str(p["moving_path"]))
            t0 = time.process_time()
            with R.single_threaded_itk():
                prep = R.FixedImage.prepare(f, settings)
                main, final, dis, stop = variant_register(prep, m, settings, **kw)
            cpu = time.process_time() - t0
            tre_main = target_registration_errors(main, p["truth"], p["points"])
            tre = target_registration_errors(final, p["truth"], p["points"])
            out.write(
                json.dumps(
                    {
                        "name": p["name"],
                        "tre": float(np.median(tre)),
                        "tre_main": float(np.median(tre_main)),
                        "tre_max": float(tre.max()),
                        "dis": dis,
                        "cpu": cpu,
                        "maxit": "maximum number" in stop.lower(),
                    }
                )
                + "\n"
            )
            out.flush()
