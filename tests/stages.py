"""Run the real stages in tests, so each consumer is tested on its producer's real output.

`match_plans` runs scan and match on a DICOM folder and returns the plan files the match
stage wrote; `write_plan` builds a plan through the `CasePlan` contract for hand-made
DICOM series that no match stage could group (unit tests of one stage).
"""

from __future__ import annotations

from pathlib import Path

from metsprep.contracts import SCHEMA_VERSION, CasePlan, RtssPlan, SeriesPlan
from metsprep.match import run_match, sanitize_label
from metsprep.scan import merge_shards, scan_shard
from metsprep.settings import MatchSettings


def match_plans(dicom_dir: Path, work: Path, settings: MatchSettings | None = None) -> dict[str, Path]:
    """Scan ``dicom_dir`` (one shard) and match it; {case_id: plan file}."""
    work.mkdir(parents=True, exist_ok=True)
    scan_shard(dicom_dir, 0, 1, work / "shard-0.parquet")
    merge_shards([work / "shard-0.parquet"], work / "inventory.parquet")
    run_match(work / "inventory.parquet", dicom_dir, settings or MatchSettings(), work / "series.parquet",
              work / "cases.parquet", work / "plans")  # fmt: skip
    return {p.stem: p for p in sorted((work / "plans").glob("*.json"))}


def truth_case_id(case: dict) -> str:
    """The case_id the match stage gives a synthetic truth case."""
    return f"sub-{sanitize_label(case['patient_id'])}_ses-{case['study_index'] + 1:02d}"


def write_plan(
    path: Path,
    input_dir: Path,
    series: dict[str, list[str] | None],
    subject: str = "P1",
    session: str = "01",
    rtss_file: str | None = None,
) -> Path:
    """A plan for hand-made series: ``series`` maps T1C/T1/T2 to files relative to input_dir."""
    plan = CasePlan(
        schema_version=SCHEMA_VERSION,
        case_id=f"sub-{subject}_ses-{session}",
        subject=subject,
        session=session,
        patient_id=subject,
        study_instance_uid="1.2.3",
        input_dir=str(input_dir),
        series={
            role: None if files is None else SeriesPlan(f"1.2.3.{n}", None, tuple(files), "description", ())
            for n, (role, files) in enumerate(series.items())
        },
        rtss=None if rtss_file is None else RtssPlan(rtss_file, "1.2.3.9", "sop_uid"),
        flags=(),
    )
    plan.write(path)
    return path
