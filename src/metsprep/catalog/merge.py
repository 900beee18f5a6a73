"""Stage catalog, merge: the per-case results into `catalog/{series,cases,lesions}.parquet`.

One precedence rule: a case with a per-case summary (`case.json`) takes every column from
it except `MATCH_ONLY_CASE_COLUMNS`, which come from the match stage's table; a case the
match stage excluded is its match row, `excluded_at = match`. Series rows are the match
stage's, with the exported NIfTI filled in. Every column is declared in `schemas`: a
column that is not is an error, never a column with a made-up description.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from metsprep.atomic import write_text
from metsprep.catalog.dictionary import data_dictionary
from metsprep.catalog.schemas import (
    CASE_COLUMNS,
    EXPORT_COLUMNS,
    LESION_COLUMNS,
    LESION_TRACK_COLUMNS,
    MATCH_ONLY_CASE_COLUMNS,
    SERIES_COLUMNS,
    SPLIT_COLUMNS,
    STRINGS,
    Column,
    _coerce,
    config_digest,
    table_schema,
    write_table,
)
from metsprep.contracts import CaseSummary
from metsprep.deid import AUDIT_SCHEMA
from metsprep.review import read_ratings


def _read_table(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).read()


def _check_declared(table: pa.Table, columns: list[Column], origin: str) -> None:
    undeclared = sorted(set(table.column_names) - {c.name for c in columns})
    if undeclared:
        raise ValueError(f"{origin} has columns the catalog does not declare: {undeclared}")


def build_catalog(
    inventory_parquet: Path,
    match_series_parquet: Path,
    match_cases_parquet: Path,
    case_jsons: list[Path],
    lesion_parquets: list[Path],
    out_series: Path,
    out_cases: Path,
    out_lesions: Path,
    out_dictionary: Path,
    config: dict[str, Any],
    ratings_tsv: Path | None = None,
) -> None:
    """Merge the per-case results into the catalog tables and the data dictionary; a
    reviewer's decisions (``ratings_tsv``, metsprep.review) go into qc_rating/qc_comment."""
    meta = {"config_sha256": config_digest(config or {})}
    summaries = [CaseSummary.read(p) for p in case_jsons]
    ratings = read_ratings(ratings_tsv, known_cases=[s.case_id for s in summaries])
    for problem in ratings.problems:
        logging.warning("ratings: %s", problem)

    match_series = _read_table(match_series_parquet)
    _check_declared(match_series, SERIES_COLUMNS, "work/match/series.parquet")
    nifti_by_uid = {uid: path for s in summaries for uid, path in s.series_nifti.items()}
    checks_by_uid = {uid: check for s in summaries for uid, check in s.series_checks.items()}
    series_rows = match_series.to_pylist()
    for row in series_rows:
        row["nifti"] = nifti_by_uid.get(row["series_instance_uid"])
        row.update(series_check_columns(row, checks_by_uid.get(row["series_instance_uid"])))
    series_table = write_table(series_rows, SERIES_COLUMNS, "series", Path(out_series), meta)

    match_cases = _read_table(match_cases_parquet)
    _check_declared(match_cases, CASE_COLUMNS, "work/match/cases.parquet")
    match_rows = {r["case_id"]: r for r in match_cases.to_pylist()}
    case_rows = [case_row_from(match_rows.pop(s.case_id, {}), s) for s in summaries]
    for row in match_rows.values():
        case_rows.append(_match_only_row(row))
    for row in case_rows:
        decision = ratings.by_case.get(row["case_id"])
        row["qc_rating"], row["qc_comment"] = (decision.rating, decision.comment or None) if decision else (None, None)
    cases_table = write_table(case_rows, CASE_COLUMNS, "cases", Path(out_cases), meta)

    lesion_rows: list[dict[str, Any]] = []
    for path in lesion_parquets:
        lesion_rows.extend(_read_table(Path(path)).to_pylist())
    for row in lesion_rows:
        decision = ratings.by_lesion.get((row["case_id"], row["roi_number"]))
        row["qc_rating"], row["qc_comment"] = (decision.rating, decision.comment or None) if decision else (None, None)
    lesions_table = write_table(lesion_rows, LESION_COLUMNS, "lesions", Path(out_lesions), meta)

    schemas = {
        "inventory": _read_table(inventory_parquet).schema,
        "series": series_table.schema,
        "cases": cases_table.schema,
        "lesions": lesions_table.schema,
        "deid_audit": AUDIT_SCHEMA,
        # written after the catalog (metsprep.splits, metsprep.export), described here with the rest
        "splits": table_schema(SPLIT_COLUMNS, "splits"),
        "exports": table_schema(EXPORT_COLUMNS, "exports"),
        "lesion_tracks": table_schema(LESION_TRACK_COLUMNS, "lesion_tracks"),
    }
    write_text(out_dictionary, data_dictionary(schemas))


def series_check_columns(row: dict[str, Any], check: dict[str, Any] | None) -> dict[str, Any]:
    """The image check's columns of one series row; where the header evidence was weak
    (confidence low) and the pixels agree, they are named in `sequence_source`."""
    if check is None:
        return {"pixel_label": None, "pixel_check": "not_checked", "pixel_check_reason": None}
    out = dict(check)
    if row.get("sequence_confidence") == "low" and check["pixel_check"] == "agrees":
        out["sequence_source"] = f"{row['sequence_source']}+pixels"
    return out


def case_row_from(match_row: dict[str, Any], summary: CaseSummary) -> dict[str, Any]:
    """The precedence rule of the module docstring."""
    row = {name: match_row.get(name) for name in MATCH_ONLY_CASE_COLUMNS}
    row.update(summary.row)
    return row


def _match_only_row(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    flags = _coerce(row.get("flags"), STRINGS) or []
    row["flags"], row["matching_flags"] = flags, flags
    if row.get("status") == "ok":
        # the match stage let it through but no per-case summary arrived: say so
        row.update(status="excluded", excluded_at="catalog",
                   status_reason=row.get("status_reason") or "no result from the per-case stages")
    else:
        row["excluded_at"] = "match"
    row.setdefault("n_lesions", 0)
    return row
