"""Real-size registrations (512x512, 40-50 slices): metsprep with and without the slice-axis
starts and elastix (one thread), side by side in one run; CPU seconds (user + sys) per
registration, the mean of two repeats of T1 -> T1C and T2 -> T1C.

    .venv/bin/python benchmarks/bench_register_real_size.py BIDS_DIR [WORKDIR]

BIDS_DIR: a bids/ folder of one real-size case (e.g. a benchmarks/run_pipeline.py --real-size run).
"""

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, "benchmarks")
from bench_register import ELASTIX_RIGID

import metsprep.register as R
from metsprep.settings import RegistrationSettings


def elastix_cpu_s(fixed: Path, moving: Path, work: Path) -> float:
    done = subprocess.run(["/usr/bin/time", "-v", "elastix", "-f", str(fixed), "-m", str(moving),
                           "-p", str(work / "rigid.txt"), "-out", str(work), "-threads", "1"],
                          capture_output=True, text=True, check=True)  # fmt: skip

    def reported(key: str) -> float:
        return float(next(line.split(":")[-1] for line in done.stderr.splitlines() if key in line))

    return reported("User time (seconds)") + reported("System time (seconds)")


def main() -> None:
    anat = next(Path(sys.argv[1]).glob("sub-*/ses-*/anat"))
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/bench_register_real_size")
    work.mkdir(parents=True, exist_ok=True)
    (work / "rigid.txt").write_text(ELASTIX_RIGID)
    fixed = next(anat.glob("*ce-gadolinium_T1w.nii.gz"))
    movings = [p for p in sorted(anat.glob("*.nii.gz")) if "ce-gadolinium" not in p.name]
    variants = {"metsprep, no slice-axis starts": 0, "metsprep (default)": 1}
    seconds: dict[str, list[float]] = {name: [] for name in [*variants, "elastix"]}
    for _repeat in range(2):
        for moving in movings:
            fixed_image, moving_image = sitk.ReadImage(str(fixed)), sitk.ReadImage(str(moving))
            for name, starts in variants.items():
                start = time.process_time()
                R.register_pair(fixed_image, moving_image, replace(RegistrationSettings(), slice_shift_starts=starts))
                seconds[name].append(time.process_time() - start)
            seconds["elastix"].append(elastix_cpu_s(fixed, moving, work))
    means = {name: sum(v) / len(v) for name, v in seconds.items()}
    print(json.dumps({"fixed_size": sitk.ReadImage(str(fixed)).GetSize(), "cpu_s_per_registration": means,
                      "ratio_to_elastix": {n: means[n] / means["elastix"] for n in variants}}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
