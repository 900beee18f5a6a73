"""Registration settings on the stress corpus: TRE, flags and core-seconds per variant.

    .venv/bin/python benchmarks/study_register_stress.py --cases 12 --seed 1

One corpus (benchmarks/bench_register.py stress_pairs), every variant on the same pairs,
in one process, one ITK thread; results printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from bench_register import stress_pairs, target_registration_errors

from metsprep.register import register_pair
from metsprep.settings import RegistrationSettings

VARIANTS = {
    "defaults": {},
    "fixed mask": {"head_masks": "fixed"},
    "masks on both": {"head_masks": "both"},
    "min step 0.01, relaxation 0.5": {"min_step": 0.01, "relaxation_factor": 0.5},
    "more samples": {"samples_per_level": (4000, 8000, 30000)},
    "fewer samples": {"samples_per_level": (3000, 6000, 12000)},
    "no rotated starts": {"start_rotation_deg": 0.0},
    "check through 2 levels": {"check_levels": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = stress_pairs(Path(tmp), args.cases, args.seed)
        images = [(sitk.ReadImage(str(p["fixed_path"])), sitk.ReadImage(str(p["moving_path"]))) for p in pairs]
        print(f"{len(pairs)} pairs\n")
        print("| variant | median TRE | p95 | max | > 1 mm | > 2 mm | > 2 mm unflagged | flag FP rate | core-s mean |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name in args.variants:
            settings = replace(RegistrationSettings(), **VARIANTS[name])
            medians, flagged, seconds = [], [], []
            for pair, (fixed, moving) in zip(pairs, images):
                start = time.process_time()
                result = register_pair(fixed, moving, settings)
                seconds.append(time.process_time() - start)
                medians.append(float(np.median(target_registration_errors(result.transform, pair["truth"], pair["points"]))))
                flagged.append(bool(result.flags))
            med, flag = np.array(medians), np.array(flagged)
            good = med <= 2
            print(f"| {name} | {np.median(med):.3f} | {np.percentile(med, 95):.3f} | {med.max():.2f} | {(med > 1).sum()} | "
                  f"{(med > 2).sum()} | {((med > 2) & ~flag).sum()} | {(flag & good).sum()}/{good.sum()} | "
                  f"{np.mean(seconds):.2f} |", flush=True)
            for pair, m, f in zip(pairs, med, flag):
                if m > 1 or f:
                    print(f"  {pair['name']}: {m:.2f} mm, flagged={f}, options={sorted(pair['options'])}", flush=True)


if __name__ == "__main__":
    main()
