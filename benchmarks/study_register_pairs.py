"""metsprep's register_pair (the pipeline's code path) or elastix on a persisted stress corpus.

    .venv/bin/python benchmarks/study_register_pairs.py metsprep CORPUS_DIR OUT.jsonl PART PARTS [SETTINGS_JSON]
    .venv/bin/python benchmarks/study_register_pairs.py elastix  CORPUS_DIR OUT.jsonl PART PARTS

CORPUS_DIR holds pairs.pkl as study_register_check.py makes it (`corpus(dir, n_cases, seed)`);
PART/PARTS split the pairs between processes. One JSON row per pair: median and max TRE over
the truth's brain points, the check's disagreement and the flags (metsprep), CPU seconds
(user + sys for elastix, one thread). Results of 2026-12-02: results/register_slice_starts.json.
"""

import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, "benchmarks")
from bench_register import ELASTIX_RIGID, elastix_transform, target_registration_errors
from study_register_check import corpus

import metsprep.register as R
from metsprep.settings import RegistrationSettings


def metsprep_row(pair: dict, settings: RegistrationSettings) -> dict:
    fixed, moving = sitk.ReadImage(str(pair["fixed_path"])), sitk.ReadImage(str(pair["moving_path"]))
    start = time.process_time()
    with R.single_threaded_itk():
        result = R._register_pair(R.FixedImage.prepare(fixed, settings), moving, settings)
    cpu = time.process_time() - start
    tre = target_registration_errors(result.transform, pair["truth"], pair["points"])
    return {"name": pair["name"], "tre": float(np.median(tre)), "tre_max": float(tre.max()),
            "dis": result.check_disagreement_mm, "flags": result.flags, "cpu": cpu}  # fmt: skip


def elastix_row(pair: dict, work: Path) -> dict:
    out = work / pair["name"]
    out.mkdir(parents=True, exist_ok=True)
    (work / "rigid.txt").write_text(ELASTIX_RIGID)
    done = subprocess.run(["/usr/bin/time", "-v", "elastix", "-f", str(pair["fixed_path"]), "-m", str(pair["moving_path"]),
                           "-p", str(work / "rigid.txt"), "-out", str(out), "-threads", "1"],
                          capture_output=True, text=True, check=True)  # fmt: skip

    def reported(key: str) -> float:
        return float(next(line.split(":")[-1] for line in done.stderr.splitlines() if key in line))

    tre = target_registration_errors(elastix_transform(out / "TransformParameters.0.txt"), pair["truth"], pair["points"])
    shutil.rmtree(out)
    return {"name": pair["name"], "tre": float(np.median(tre)), "tre_max": float(tre.max()),
            "cpu": reported("User time (seconds)") + reported("System time (seconds)"),
            "peak_mb": reported("Maximum resident set size") / 1024}  # fmt: skip


if __name__ == "__main__":
    tool, corpus_dir, out_path, part, parts = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    settings = replace(RegistrationSettings(), **(json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}))
    pairs = corpus(corpus_dir, 0, 0)  # already made: read back
    with open(out_path, "w") as out:
        for index, pair in enumerate(pairs):
            if index % parts == part:
                row = metsprep_row(pair, settings) if tool == "metsprep" else elastix_row(pair, corpus_dir / f"elastix{part}")
                out.write(json.dumps(row) + "\n")
                out.flush()
