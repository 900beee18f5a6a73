"""The affine fit to the MNI template on the registration stress corpus, against the truth.

    .venv/bin/python benchmarks/bench_standard_space.py --cases N [--seed S] [--out FILE]

Every case of `metsprep.synth.stress` (motions, heads off-centre, slice orders, 3-7 mm
slices, 512 and 256 matrices, bias x2-4, noise x1.5-3, the other contrast model) is read
from its DICOM files (metsprep.dicom_series, as the bids stage does) and fitted; the error
is the distance between the fitted and the true MNI position of the truth's brain points
(median / max per case) and of each lesion centroid. Reported: errors, flags, whether a
case over `--gross` mm is flagged (it must be), false flags, seconds per fit.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from metsprep.frames import apply_affine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--gross", type=float, default=3.0, help="an error above this (mm, brain-point max) must be flagged")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "standard_space_stress.json")
    args = parser.parse_args()

    import SimpleITK as sitk

    from metsprep.bids import nifti_image
    from metsprep.dicom_series import read_series
    from metsprep.settings import StandardSpaceSettings
    from metsprep.standard_space import fit_template, mni_ras_of
    from metsprep.synth import generate_cohort
    from metsprep.synth.stress import stress_case_options

    settings = StandardSpaceSettings()
    options = stress_case_options(args.cases, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        truth = generate_cohort(Path(tmp) / "stress", args.cases, args.seed, layout="per_case", case_options=options)
        for case in truth["cases"]:
            series = case["series"]["T1C"]
            converted = read_series(Path(tmp) / "stress" / "dicom", [f for f in series["files"] if f])
            path = Path(tmp) / f"{case['case_index']}.nii.gz"
            nifti_image(converted.data, converted.geometry).to_filename(str(path))
            t1c = sitk.ReadImage(str(path))
            start = time.process_time()
            fit = fit_template(t1c, settings)
            seconds = time.process_time() - start
            mni_from_t1c = np.linalg.inv(np.array(case["head"]["t1c_lps_from_mni_lps"]))
            points = np.array(case["brain_points_t1c_lps"])
            error = np.linalg.norm(apply_affine(fit.mni_lps_from_t1c_lps, points) - apply_affine(mni_from_t1c, points), axis=1)
            lesion_errors = [float(np.linalg.norm(mni_ras_of(np.array(les["centroid_lps_mm"]), fit.mni_lps_from_t1c_lps)
                                                  - les["centre_mni_ras_mm"])) for les in case["lesions"]]  # fmt: skip
            rows.append({
                "case": case["case_index"], "options": sorted(options[case["case_index"]]),
                "contrast": options[case["case_index"]].get("contrast", "default"),
                "bias_scale": options[case["case_index"]].get("bias_scale", 1.0),
                "error_median_mm": float(np.median(error)), "error_max_mm": float(error.max()),
                "lesion_error_max_mm": max(lesion_errors) if lesion_errors else None,
                "check_mm": fit.check_disagreement_mm, "flags": fit.flags, "cpu_seconds": seconds,
            })  # fmt: skip
            print(json.dumps(rows[-1]))
    gross = [r for r in rows if r["error_max_mm"] > args.gross]
    flagged = [r for r in rows if r["flags"]]
    summary = {
        "cases": len(rows), "seed": args.seed, "settings": settings.to_config(),
        "error_median_of_medians_mm": float(np.median([r["error_median_mm"] for r in rows])),
        "error_max_mm": float(max(r["error_max_mm"] for r in rows)),
        "lesion_error_max_mm": float(max((r["lesion_error_max_mm"] or 0.0) for r in rows)),
        "gross": len(gross), "gross_unflagged": sum(1 for r in gross if not r["flags"]),
        "flagged": len(flagged), "false_flags": sum(1 for r in flagged if r["error_max_mm"] <= args.gross),
        "cpu_seconds_median": float(np.median([r["cpu_seconds"] for r in rows])),
    }  # fmt: skip
    print(json.dumps(summary, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
