"""Per-stage cost table from Snakemake's per-job `benchmark:` files of one pipeline run.

    .venv/bin/python benchmarks/aggregate.py OUTPUT_DIR [--cores-used N] [--results benchmarks/results]
        [--dag-seconds-1000 S]

Reads every `OUTPUT_DIR/benchmarks/**/*.tsv` (Snakemake columns: s, h:m:s, max_rss,
max_vms, max_uss, max_pss, io_in, io_out, mean_load, cpu_time), maps each file to its
rule through the `benchmark:` patterns in `workflow/rules/*.smk`, and writes per rule:

  jobs, core-seconds per case (mean, p95), wall seconds (mean, p95, sum), peak RSS, the
  CPU seconds Snakemake sampled, and the share of a job spent starting Python and
  importing what the stage imports (measured here, see `startup_seconds`).

Core-seconds = wall seconds x threads: what a job holds of the machine or of a SLURM
allocation. Snakemake's `cpu_time` is kept as a column but not used for sums: it is the
last psutil sample (every 1 s, then every 30 s), so it misses the end of a job and, on
this machine, read 5 s for a 14 s single-threaded registration.

Also writes the projection of the wall time for 1,000 cases on 32 cores. Outputs:
`results/stages.csv`, `results/stages.md` (and `results/summary.json`).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "workflow" / "rules"
SRC = ROOT / "src"
# What the `script:` preamble of every job imports (snakemake/script/__init__.py) before
# the stage's own script runs.
SNAKEMAKE_SCRIPT_PREAMBLE = ["pickle", "snakemake.logging", "snakemake.iocontainers", "snakemake.shell", "snakemake.io"]
PER_CASE_WILDCARD = "{case_id}"
# The workflow's wildcard_constraints (workflow/rules/common.smk): `merge.tsv` is no case.
WILDCARD_REGEX = {"case_id": r"sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+", "shard": r"\d+"}


@dataclass
class RuleInfo:
    name: str
    benchmark_pattern: str  # relative to the output folder, with {wildcards}
    script: str | None
    threads: int
    per_case: bool

    def matches(self, relative_path: str) -> bool:
        regex = re.escape(self.benchmark_pattern)
        regex = re.sub(r"\\\{([a-z_]+)\\\}", lambda m: WILDCARD_REGEX.get(m.group(1), r"[^/]+"), regex)
        return re.fullmatch(regex, relative_path) is not None


def read_rules(rules_dir: Path = RULES_DIR) -> list[RuleInfo]:
    """Rules with a `benchmark:` directive, from the rule files (text, not a Snakemake run)."""
    rules = []
    for path in sorted(rules_dir.glob("*.smk")):
        text = path.read_text()
        blocks = re.split(r"^(?=(?:rule|checkpoint) \w+:)", text, flags=re.M)
        for block in blocks:
            header = re.match(r"(?:rule|checkpoint) (\w+):", block)
            bench = re.search(r"benchmark:\s*\n\s*out\(\"([^\"]+)\"\)", block)
            if not header or not bench:
                continue
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", block)
            threads = re.search(r"threads:\s*(\d+)", block)
            rules.append(RuleInfo(
                name=header.group(1), benchmark_pattern=bench.group(1),
                script=script.group(1) if script else None,
                # `threads: config[...]` is 1 in the shipped config; a literal wins.
                threads=int(threads.group(1)) if threads else 1,
                per_case=PER_CASE_WILDCARD in bench.group(1),
            ))
    return rules


def stage_imports(script_relative: str | None) -> list[str]:
    """Every non-stdlib module a stage's script can import, following metsprep modules.

    Walks the script and, recursively, the metsprep modules it imports (imports inside
    functions included, as the library imports heavy packages lazily). An upper bound:
    a job may not reach every function.
    """
    if script_relative is None:
        return []
    script = (RULES_DIR / script_relative).resolve()
    seen_internal: set[str] = set()
    external: set[str] = set()

    def visit(path: Path) -> None:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                top = name.split(".")[0]
                if top == "metsprep":
                    module_path = _metsprep_module_path(name)
                    if module_path and name not in seen_internal:
                        seen_internal.add(name)
                        visit(module_path)
                elif top not in sys.stdlib_module_names and top != "snakemake" and _importable(name):
                    external.add(name)

    visit(script)
    return sorted(seen_internal) + sorted(external)


def _metsprep_module_path(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False  # `from pkg import function` yields pkg.function: not a module


def startup_seconds(modules: list[str], repeats: int = 3) -> float:
    """Wall seconds of `python -c "import <preamble>; import <modules>"`, best of `repeats`.

    Interpreter start-up included; warm file cache (the first, cold run is discarded).
    """
    code = "; ".join(f"import {m}" for m in SNAKEMAKE_SCRIPT_PREAMBLE + modules)
    timings = []
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        if attempt:
            timings.append(time.perf_counter() - start)
    return min(timings)


def read_benchmarks(output_dir: Path, rules: list[RuleInfo]) -> pd.DataFrame:
    rows = []
    bench_root = output_dir / "benchmarks"
    for path in sorted(bench_root.rglob("*.tsv")):
        relative = path.relative_to(output_dir).as_posix()
        rule = next((r for r in rules if r.matches(relative)), None)
        table = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        for _, record in table.iterrows():
            rows.append({"rule": rule.name if rule else f"?{relative}", "file": relative,
                         **{k: record[k] for k in ("s", "max_rss", "max_uss", "mean_load", "cpu_time")}})
    return pd.DataFrame(rows)


def p95(values: pd.Series) -> float:
    return float(values.quantile(0.95)) if len(values) else math.nan


def summarise(jobs: pd.DataFrame, rules: list[RuleInfo], n_cases: int, startup: dict[str, float]) -> pd.DataFrame:
    by_name = {r.name: r for r in rules}
    rows = []
    for name, group in jobs.groupby("rule", sort=False):
        rule = by_name.get(name)
        threads = rule.threads if rule else 1
        core_s = group["s"] * threads
        # Per case: a per-case job is one case; a shared job's cost is spread over the cohort.
        per_case = core_s if rule and rule.per_case else core_s / max(n_cases, 1)
        per_case_total = core_s.sum() / max(n_cases, 1)
        start = startup.get(name, math.nan)
        rows.append({
            "rule": name, "per_case_job": bool(rule and rule.per_case), "jobs": len(group), "threads": threads,
            "core_s_per_case_mean": per_case_total,
            "core_s_per_case_p95": p95(per_case) if rule and rule.per_case else per_case_total,
            "wall_s_mean": group["s"].mean(), "wall_s_p95": p95(group["s"]), "wall_s_sum": group["s"].sum(),
            "peak_rss_mb": group["max_rss"].max(),
            "cpu_time_s_mean_sampled": group["cpu_time"].mean(),
            "startup_s": start,
            "startup_share": start / group["s"].mean() if group["s"].mean() else math.nan,
        })
    order = {r.name: i for i, r in enumerate(rules)}
    return pd.DataFrame(rows).sort_values("rule", key=lambda s: s.map(lambda n: order.get(n, 99)), ignore_index=True)


def project(stages: pd.DataFrame, n_cases_measured: int, target_cases: int = 1000, cores: int = 32,
            scan_shards: int = 8) -> dict:
    """Wall time for `target_cases` on `cores`, from per-case core-seconds.

    Per-case stages and scan shards scale with cases and spread over the cores (scan over
    at most `scan_shards` jobs); one-off jobs (match, the merges) are assumed linear in
    cases and serial, except their measured Python start-up, which is paid once.
    """
    per_case = stages[stages["per_case_job"]]
    parallel_core_s = per_case["core_s_per_case_mean"].sum() * target_cases
    scan = stages[stages["rule"] == "scan_shard"]
    scan_wall = scan["core_s_per_case_mean"].sum() * target_cases / min(cores, scan_shards)
    serial = stages[~stages["per_case_job"] & ~stages["rule"].isin(["scan_shard", "synth"])]
    # A one-off job = its start-up (fixed) + work that grows linearly with the cases.
    startup = serial["startup_s"].fillna(0)
    work = (serial["wall_s_sum"] - startup * serial["jobs"]).clip(lower=0)
    serial_wall = float((startup + work * target_cases / max(n_cases_measured, 1)).sum())
    startup_core_s = float((per_case["startup_s"].fillna(0)).sum() * target_cases)
    total = parallel_core_s / cores + scan_wall + serial_wall
    return {
        "target_cases": target_cases, "cores": cores, "measured_cases": n_cases_measured,
        "per_case_core_s": float(per_case["core_s_per_case_mean"].sum()),
        "per_case_stages_wall_s": parallel_core_s / cores, "scan_wall_s": scan_wall,
        "serial_wall_s": serial_wall, "projected_wall_s": total, "projected_wall_h": total / 3600,
        "python_startup_core_s_per_case": float(per_case["startup_s"].fillna(0).sum()),
        "python_startup_share_of_per_case_core_s": startup_core_s / parallel_core_s if parallel_core_s else math.nan,
    }


def to_markdown(stages: pd.DataFrame, projection: dict, meta: dict) -> str:
    columns = {
        "rule": "stage (rule)", "jobs": "jobs", "core_s_per_case_mean": "core-s / case (mean)",
        "core_s_per_case_p95": "core-s / case (p95)", "wall_s_mean": "wall s / job (mean)",
        "wall_s_sum": "wall s (sum)", "peak_rss_mb": "peak RSS MB", "startup_s": "start-up + imports s",
        "startup_share": "start-up share",
    }
    table = stages[list(columns)].rename(columns=columns)
    lines = [
        "# metsprep pipeline benchmark", "",
        *(f"- {key}: {value}" for key, value in meta.items()), "",
        table.to_markdown(index=False, floatfmt=".2f"), "",
        "Core-seconds = wall seconds x threads (the share of the machine a job holds). For",
        "one-off jobs (match, merges) the per-case figure is the job divided by the cases.",
        "Start-up = `python -c 'import <snakemake script preamble> <every module the stage",
        "can import>'` (best of 3, warm); share = start-up / mean job wall time.", "",
        f"## Projection: {projection['target_cases']} cases on {projection['cores']} cores", "",
        f"- per-case stages: {projection['per_case_core_s']:.1f} core-s per case -> "
        f"{projection['per_case_stages_wall_s'] / 60:.1f} min",
        f"- scan shards: {projection['scan_wall_s'] / 60:.1f} min; one-off jobs (match, merges: "
        f"start-up once + work linear in cases, serial): {projection['serial_wall_s'] / 60:.1f} min",
        f"- **projected wall time: {projection['projected_wall_h']:.2f} h** "
        "(assumes every per-case stage uses one core and I/O keeps up)",
        f"- Python start-up and imports: {projection['python_startup_core_s_per_case']:.1f} core-s per case, "
        f"{100 * projection['python_startup_share_of_per_case_core_s']:.0f}% of the per-case core-seconds",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--meta", type=json.loads, default={}, help="JSON object of facts for the report header")
    parser.add_argument("--scan-shards", type=int, default=8)
    args = parser.parse_args(argv)

    rules = read_rules()
    jobs = read_benchmarks(args.output_dir, rules)
    plans = args.output_dir / "work" / "match" / "plans"
    n_cases = len(list(plans.glob("*.json"))) or 1
    startup = {}
    for rule in rules:
        if rule.name in set(jobs["rule"]):
            startup[rule.name] = startup_seconds(stage_imports(rule.script))
    bare = startup_seconds([])
    stages = summarise(jobs, rules, n_cases, startup)
    projection = project(stages, n_cases, scan_shards=args.scan_shards)
    meta = {"output folder": str(args.output_dir), "cases": n_cases,
            "bare `python` + snakemake script preamble (s)": round(bare, 3), **args.meta}

    args.results.mkdir(parents=True, exist_ok=True)
    stages.to_csv(args.results / "stages.csv", index=False, float_format="%.4f")
    jobs.to_csv(args.results / "jobs.csv", index=False)
    (args.results / "stages.md").write_text(to_markdown(stages, projection, meta))
    (args.results / "summary.json").write_text(json.dumps({"meta": meta, "projection": projection}, indent=2) + "\n")
    print((args.results / "stages.md").read_text())


if __name__ == "__main__":
    main()
