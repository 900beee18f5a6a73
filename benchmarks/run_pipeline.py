"""Whole-pipeline benchmark: N synthetic cases through Snakemake, then a per-stage table.

    .venv/bin/python benchmarks/run_pipeline.py [--cases 50] [--cores all] [--workdir DIR]
        [--dag-cases 1000] [--results benchmarks/results]

1. `python -m metsprep.synth WORKDIR/cohort --cases N` (timed; outside the pipeline, so
   the synth rule does not count as a stage).
2. `snakemake --cores C --configfile <input_dir, output_dir>` on it (timed).
3. `benchmarks/aggregate.py` on the run's `benchmarks/*.tsv`: the per-stage table and the
   projection to 1,000 cases on 32 cores.
4. DAG build time for a `--dag-cases` cohort: a copy of the run's scan and match
   outputs with the plan files multiplied to `--dag-cases` plans (copies of real plans
   under new case ids), then `snakemake -n` on it, timed. The match checkpoint is done,
   so Snakemake builds the full per-case DAG (5 jobs per case) without running anything.

Results: `benchmarks/results/{stages.md,stages.csv,jobs.csv,summary.json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEED = 20261125
#: The collection's size: 512x512 slices, 40-50 per series (3-3.5 mm over the head, no gap).
REAL_SIZE = {"matrix": 512, "thickness_mm": {"T1C": 3.0, "T1": 3.5, "T2": 3.5}, "gap_mm": {"T1C": 0.0, "T1": 0.0, "T2": 0.0}}


def run(command: list[str], log: Path | None = None) -> float:
    """Run, raise on failure, return wall seconds."""
    start = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as stream:
        result = subprocess.run(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}" + (f"\nsee {log}" if log else ""))
    return time.perf_counter() - start


def fake_cohort_for_dag(run_output: Path, dag_output: Path, n_cases: int) -> None:
    """A copy of the run's scan + match outputs with `n_cases` plan files."""
    if dag_output.exists():
        shutil.rmtree(dag_output)
    for relative in ("work/scan", "catalog/inventory.parquet", "work/match/series.parquet",
                     "work/match/cases.parquet"):
        source, target = run_output / relative, dag_output / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    plans = sorted((run_output / "work/match/plans").glob("*.json"))
    target_dir = dag_output / "work/match/plans"
    target_dir.mkdir(parents=True)
    for index in range(n_cases):
        plan = json.loads(plans[index % len(plans)].read_text())
        subject = f"{9000000000 + index}"
        plan.update(case_id=f"sub-{subject}_ses-01", subject=subject, session="01")
        (target_dir / f"{plan['case_id']}.json").write_text(json.dumps(plan))
    # Match outputs newer than the inventory, the plans folder last: the checkpoint is done.
    now = time.time()
    for relative in ("work/match/series.parquet", "work/match/cases.parquet", "work/match/plans"):
        os.utime(dag_output / relative, (now, now))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--cores", default="all")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/metsprep-bench"))
    parser.add_argument("--dag-cases", type=int, default=1000)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--keep", action="store_true", help="reuse an existing cohort and run (aggregate only)")
    parser.add_argument("--real-size", action="store_true",
                        help="every series 512x512 with 3-3.5 mm slices (40-50 per series, as the collection); "
                             "results to <results>/real_size/")
    args = parser.parse_args(argv)

    if args.real_size:
        args.results = args.results / "real_size"
    args.results.mkdir(parents=True, exist_ok=True)
    cohort, output = args.workdir / "cohort", args.workdir / "out"
    args.workdir.mkdir(parents=True, exist_ok=True)
    meta: dict = {"machine": f"{os.cpu_count()} cores", "cores given": args.cores, "python": sys.version.split()[0]}
    if not args.keep:
        for folder in (cohort, output):
            shutil.rmtree(folder, ignore_errors=True)
        synth = [str(BIN / "python"), "-m", "metsprep.synth", str(cohort), "--cases", str(args.cases), "--seed",
                 str(SEED), "--layout", "per_case"]
        if args.real_size:
            synth += ["--case-options", json.dumps({str(i): REAL_SIZE for i in range(args.cases)})]
            meta["cohort"] = "real size: " + json.dumps(REAL_SIZE)
        meta["synth s"] = round(run(synth), 1)
        configfile = args.workdir / "config.yaml"
        configfile.write_text(yaml.safe_dump({"input_dir": str(cohort / "dicom"), "output_dir": str(output)}))
        pipeline_s = run([str(BIN / "snakemake"), "--cores", str(args.cores), "--configfile", str(configfile),
                          "--profile", str(ROOT / "profiles/workstation")], log=args.workdir / "snakemake.log")
        meta["pipeline wall s (snakemake, end to end)"] = round(pipeline_s, 1)

    dag_output = args.workdir / f"dag-{args.dag_cases}"
    fake_cohort_for_dag(output, dag_output, args.dag_cases)
    dag_config = args.workdir / "dag-config.yaml"
    dag_config.write_text(yaml.safe_dump({"input_dir": str(cohort / "dicom"), "output_dir": str(dag_output)}))
    dag_s = run([str(BIN / "snakemake"), "-n", "--quiet", "rules", "--cores", "32", "--configfile", str(dag_config)],
                log=args.workdir / "dag.log")
    meta[f"`snakemake -n` for {args.dag_cases} cases (s)"] = round(dag_s, 1)

    run([str(BIN / "python"), str(ROOT / "benchmarks/aggregate.py"), str(output), "--results", str(args.results),
         "--meta", json.dumps(meta)])
    print((args.results / "stages.md").read_text())


if __name__ == "__main__":
    main()
