"""Time per series: metsprep.bids conversion vs dcm2niix on the same files.

Three numbers per series, best of `--repeats` runs each:
  * dcm2niix: the `dcm2niix` binary (gzip output, `-z y`, sidecar on), whole process;
  * metsprep (process): `python -c` running `convert_case` on a one-series plan, whole
    process including Python start-up and imports;
  * metsprep (in-process): `convert_case` called in this process (imports already paid).
The ratios process/dcm2niix and in-process/dcm2niix are printed (goal: within 2x).

Series come from `metsprep.synth` when it is installed (one case, T1C/T1/T2), otherwise
from hand-made series (the test helper in tests/test_bids.py): 256x256x40 and 512x512x24.

    .venv/bin/python benchmarks/bench_bids.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DCM2NIIX = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which("dcm2niix")


def synthetic_series(workdir: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (input_dir, files relative to it)."""
    try:
        from metsprep.synth import generate_cohort
    except ImportError:
        generate_cohort = None
    series: dict[str, tuple[Path, list[str]]] = {}
    if generate_cohort is not None:
        cohort = workdir / "cohort"
        generate_cohort(cohort, n_cases=1, seed=1, layout="per_case",
                        case_options={0: {"matrix": 512}})
        truth = json.loads((cohort / "truth" / "truth.json").read_text())
        case = truth["cases"][0] if isinstance(truth.get("cases"), list) else next(iter(truth["cases"].values()))
        for name, info in case["series"].items():
            files = info.get("files") or []
            if files:
                series[f"synth-{name}"] = (cohort / "dicom", list(files))
        if series:
            return series
    sys.path.insert(0, str(ROOT / "tests"))
    from test_bids import make_series

    for name, kwargs in {"256x256x40": dict(rows=256, columns=256, n_slices=40, pixel_spacing=(0.9, 0.9)),
                         "512x512x24": dict(rows=512, columns=512, n_slices=24, pixel_spacing=(0.47, 0.47))}.items():
        folder = workdir / "input" / name
        make_series(folder, **kwargs)
        series[name] = (workdir / "input", sorted(p.relative_to(workdir / "input").as_posix() for p in folder.iterdir()))
    return series


def write_plan(workdir: Path, name: str, input_dir: Path, files: list[str]) -> Path:
    from metsprep.contracts import SCHEMA_VERSION, CasePlan, SeriesPlan

    path = workdir / f"plan-{name}.json"
    CasePlan(SCHEMA_VERSION, "sub-bench_ses-01", "bench", "01", "bench", "1.2.3", str(input_dir),
             {"T1C": SeriesPlan("1.2.3.1", None, tuple(files), "description", ()), "T1": None, "T2": None},
             None, ()).write(path)  # fmt: skip
    return path


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not DCM2NIIX:
        sys.exit("dcm2niix not found (pip install dcm2niix)")
    from metsprep.bids import convert_case
    from metsprep.settings import BidsSettings

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        series = synthetic_series(workdir)
        print(f"{'series':<22}{'files':>6}{'dcm2niix s':>12}{'metsprep proc s':>17}{'ratio':>7}"
              f"{'in-proc s':>11}{'ratio':>7}")
        for name, (input_dir, files) in series.items():
            # dcm2niix reads a folder: give it a copy holding exactly this series.
            copy = workdir / f"copy-{name}"
            for relative in files:
                target = copy / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(input_dir / relative, target)
            d2n_out = workdir / f"d2n-{name}"
            d2n_out.mkdir()
            dcm2niix_s = best_of(args.repeats, lambda: subprocess.run(
                [DCM2NIIX, "-z", "y", "-b", "y", "-f", "img", "-w", "1", "-o", str(d2n_out), str(copy)],
                check=True, capture_output=True))
            plan = write_plan(workdir, name, input_dir, files)
            out = workdir / f"out-{name}"
            code = ("from pathlib import Path; from metsprep.bids import convert_case; "
                    "from metsprep.settings import BidsSettings; "
                    f"convert_case(Path({str(plan)!r}), Path({str(out)!r}), Path({str(out / 'bids.json')!r}), BidsSettings())")
            process_s = best_of(args.repeats, lambda: subprocess.run([sys.executable, "-c", code], check=True))
            in_process_s = best_of(args.repeats, lambda: convert_case(plan, out, out / "bids.json", BidsSettings()))
            status = json.loads((out / "bids.json").read_text())["status"]
            assert status == "ok", f"{name}: conversion {status}"
            print(f"{name:<22}{len(files):>6}{dcm2niix_s:>12.3f}{process_s:>17.3f}{process_s / dcm2niix_s:>7.2f}"
                  f"{in_process_s:>11.3f}{in_process_s / dcm2niix_s:>7.2f}")


if __name__ == "__main__":
    main()
