"""Patient-level train/test sets and cross-validation folds for model training.

The rule (docs/exports.md):

1. The unit is the patient (BIDS subject): every session of a patient lands in one set, so
   no patient is in both the training folds and the held-out test set, or in two folds.
2. Sets are the held-out ``test`` set (``test_fraction`` of the cases) and ``n_folds`` folds
   that share the rest equally. Only cases with status ``ok`` take part.
3. Strata are balanced margin by margin: lesion-count bin, total-volume bin and scanner
   vendor of the T1C (and the case count overall). Bins have fixed edges from the config,
   so a case's stratum does not depend on the rest of the cohort.
4. Patients are placed greedily, patients with more sessions first and otherwise in an
   order drawn from the seed; each goes to the set that leaves the smallest squared
   deviation of every stratum count from its target share. Same seed, same cohort: same sets.
5. Patients of a frozen split keep their set and are placed before the others; a new
   session of a frozen patient joins the patient's set, so adding cases moves no earlier
   case. The workflow freezes the first split it makes (``catalog/split_ledger.parquet``,
   written once); ``splits.frozen`` names another (e.g. the one a model was trained on).
   Without a frozen split, adding cases would move others (the balance is recomputed).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metsprep.settings import SplitSettings

TEST = "test"
TRAIN = "train"
#: The margins balanced, in the order they are reported.
MARGINS = ("all", "lesion_count_bin", "volume_bin", "scanner")


@dataclass(frozen=True)
class SplitCase:
    """What the split needs of one case (a row of cases.parquet, status ok)."""

    case_id: str
    subject: str
    n_lesions: int
    total_lesion_volume_mm3: float | None
    scanner: str  # vendor of the T1C, "unknown" where the header does not say


@dataclass(frozen=True)
class Assignment:
    case_id: str
    subject: str
    set_name: str  # test or fold<k>
    lesion_count_bin: str
    volume_bin: str
    scanner: str
    assigned_by: str  # ledger (kept from a frozen split) | balanced (placed in this run)

    @property
    def split(self) -> str:
        return TEST if self.set_name == TEST else TRAIN

    @property
    def fold(self) -> int | None:
        return None if self.set_name == TEST else int(self.set_name.removeprefix("fold"))


# ----------------------------------------------------------------------------- strata


def _bin_label(value: float, edges: Sequence[float], unit: str = "") -> str:
    """``<e0``, ``e0-e1``, ..., ``>=en`` for float edges; counts read 0, 1, 2-3, 4-9, >=10."""
    if not edges:
        return "all"
    if value < edges[0]:
        return f"<{_num(edges[0])}{unit}"
    for low, high in zip(edges, edges[1:]):
        if value < high:
            return f"{_num(low)}-{_num(high)}{unit}"
    return f">={_num(edges[-1])}{unit}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def lesion_count_bin(n_lesions: int, edges: Sequence[int]) -> str:
    """Count bins read as integers: with edges (1, 2, 4, 10): 0, 1, 2-3, 4-9, >=10."""
    if not edges or n_lesions < edges[0]:
        return "0" if edges and edges[0] == 1 else _bin_label(n_lesions, edges)
    for low, high in zip(edges, edges[1:]):
        if n_lesions < high:
            return str(low) if high == low + 1 else f"{low}-{high - 1}"
    return f">={edges[-1]}"


def volume_bin(volume_mm3: float | None, edges: Sequence[float]) -> str:
    if volume_mm3 is None or not math.isfinite(volume_mm3):
        volume_mm3 = 0.0
    return _bin_label(volume_mm3, edges, " mm3")


def scanner_vendor(manufacturer: str | None) -> str:
    """The vendor from Manufacturer (0008,0070), written many ways ('GE MEDICAL SYSTEMS', 'Philips Healthcare')."""
    text = (manufacturer or "").strip().upper()
    for vendor, marks in (("GE", ("GE ", "GE_", "GENERAL ELECTRIC")), ("SIEMENS", ("SIEMENS",)),
                          ("PHILIPS", ("PHILIPS",)), ("TOSHIBA", ("TOSHIBA", "CANON")), ("HITACHI", ("HITACHI",))):
        if text == vendor or any(mark in text + " " for mark in marks):
            return vendor
    return text.split()[0] if text else "unknown"


def strata(case: SplitCase, settings: SplitSettings) -> dict[str, str]:
    return {
        "all": "all",
        "lesion_count_bin": lesion_count_bin(case.n_lesions, settings.lesion_count_bins),
        "volume_bin": volume_bin(case.total_lesion_volume_mm3, settings.volume_bins_mm3),
        "scanner": case.scanner if settings.stratify_by_scanner else "all",
    }


# ----------------------------------------------------------------------------- assignment


def _key(seed: int, *parts: str) -> str:
    return hashlib.sha256(":".join((str(seed), *parts)).encode("utf-8")).hexdigest()


class _Tally:
    """Case counts per (margin, level, set) and per (margin, level), for the greedy score."""

    def __init__(self, settings: SplitSettings) -> None:
        self.settings = settings
        self.sets = settings.set_names
        self.by_set: dict[tuple[str, str, str], int] = defaultdict(int)
        self.by_level: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, levels: Iterable[Mapping[str, str]], set_name: str) -> None:
        for level in levels:
            for margin in MARGINS:
                self.by_set[margin, level[margin], set_name] += 1
                self.by_level[margin, level[margin]] += 1

    def imbalance_if_added(self, levels: Sequence[Mapping[str, str]], set_name: str) -> float:
        """Sum over the levels this patient touches of squared deviations from the targets."""
        added: dict[tuple[str, str], int] = defaultdict(int)
        for case_levels in levels:
            for margin in MARGINS:
                added[margin, case_levels[margin]] += 1
        total = 0.0
        for (margin, level), n_new in added.items():
            n_level = self.by_level[margin, level] + n_new
            for s in self.sets:
                count = self.by_set[margin, level, s] + (n_new if s == set_name else 0)
                share = self.settings.target_fraction(s)
                total += (count - share * n_level) ** 2 / share
        return total


def assign(cases: Sequence[SplitCase], settings: SplitSettings,
           frozen: Mapping[str, str] | None = None) -> list[Assignment]:
    """Each case's set (module docstring). ``frozen``: subject -> set name of an earlier split."""
    frozen = dict(frozen or {})
    unknown_sets = sorted(set(frozen.values()) - set(settings.set_names))
    if unknown_sets:
        raise ValueError(f"the frozen split has sets {unknown_sets} that these settings do not make "
                         f"({', '.join(settings.set_names)}): use the n_folds and test_fraction it was made with")
    by_subject: dict[str, list[SplitCase]] = defaultdict(list)
    for case in sorted(cases, key=lambda c: c.case_id):
        by_subject[case.subject].append(case)
    levels = {s: [strata(c, settings) for c in group] for s, group in by_subject.items()}

    tally = _Tally(settings)
    chosen: dict[str, tuple[str, str]] = {}
    for subject in sorted(s for s in by_subject if s in frozen):
        chosen[subject] = (frozen[subject], "ledger")
        tally.add(levels[subject], frozen[subject])
    free = sorted((s for s in by_subject if s not in frozen),
                  key=lambda s: (-len(by_subject[s]), _key(settings.seed, s)))
    for subject in free:
        # ties (common while the tally is empty) go by an order of the sets drawn from the seed
        preference = sorted(settings.set_names, key=lambda name: _key(settings.seed, subject, name))
        best = min(preference, key=lambda name: round(tally.imbalance_if_added(levels[subject], name), 9))
        chosen[subject] = (best, "balanced")
        tally.add(levels[subject], best)

    return [
        Assignment(case_id=case.case_id, subject=subject, set_name=chosen[subject][0],
                   lesion_count_bin=level["lesion_count_bin"], volume_bin=level["volume_bin"],
                   scanner=level["scanner"], assigned_by=chosen[subject][1])
        for subject, group in by_subject.items()
        for case, level in zip(group, levels[subject])
    ]


# ----------------------------------------------------------------------------- balance


@dataclass(frozen=True)
class BalanceRow:
    margin: str
    level: str
    set_name: str
    n_cases: int
    target: float  # the set's share of the level's cases

    @property
    def deviation(self) -> float:
        return self.n_cases - self.target


def balance(assignments: Sequence[Assignment], settings: SplitSettings) -> list[BalanceRow]:
    """Cases per set against the target share, for every level of every margin."""
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for a in assignments:
        level = {"all": "all", "lesion_count_bin": a.lesion_count_bin, "volume_bin": a.volume_bin,
                 "scanner": a.scanner}
        for margin in MARGINS:
            counts[margin, level[margin], a.set_name] += 1
            totals[margin, level[margin]] += 1
    order = {margin: level_order(margin, settings) for margin in MARGINS}

    def position(item: tuple[tuple[str, str], int]) -> tuple[int, int, str]:
        (margin, level), _ = item
        levels = order[margin]
        return MARGINS.index(margin), levels.index(level) if level in levels else len(levels), level

    return [
        BalanceRow(margin, level, s, counts[margin, level, s], settings.target_fraction(s) * n)
        for (margin, level), n in sorted(totals.items(), key=position)
        for s in settings.set_names
    ]


def level_order(margin: str, settings: SplitSettings) -> list[str]:
    """The bins of a margin from small to large (scanner vendors: alphabetical, by the caller)."""
    if margin == "lesion_count_bin":
        counts = [0, *settings.lesion_count_bins]
        return list(dict.fromkeys(lesion_count_bin(n, settings.lesion_count_bins) for n in counts))
    if margin == "volume_bin":
        edges = settings.volume_bins_mm3
        return list(dict.fromkeys(volume_bin(v, edges) for v in [0.0, *edges]))
    return []


def largest_group(assignments: Sequence[Assignment]) -> int:
    """Most sessions of one patient: the unit the greedy moves, and so the balance's resolution."""
    sizes: dict[str, int] = defaultdict(int)
    for a in assignments:
        sizes[a.subject] += 1
    return max(sizes.values(), default=0)


# ----------------------------------------------------------------------------- files


def cases_from_catalog(cases: Sequence[Mapping[str, Any]], series: Sequence[Mapping[str, Any]]) -> list[SplitCase]:
    """The ok cases of cases.parquet rows, with the vendor of each T1C from series.parquet rows."""
    vendor = {row["series_instance_uid"]: scanner_vendor(row.get("manufacturer")) for row in series}
    return [
        SplitCase(case_id=str(row["case_id"]), subject=str(row["subject"]), n_lesions=int(row.get("n_lesions") or 0),
                  total_lesion_volume_mm3=row.get("total_lesion_volume_mm3"),
                  scanner=vendor.get(str(row.get("t1c_series_instance_uid")), "unknown"))
        for row in cases
        if row.get("status") == "ok"
    ]


def _read_rows(path: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns).to_pylist()


def read_frozen(path: Path) -> dict[str, str]:
    """subject -> set name of a splits or ledger file (one set per patient, else an error)."""
    sets: dict[str, str] = {}
    for row in _read_rows(path, ["subject", "set_name"]):
        subject, set_name = str(row["subject"]), str(row["set_name"])
        if sets.setdefault(subject, set_name) != set_name:
            raise ValueError(f"{path}: patient {subject} is in two sets ({sets[subject]}, {set_name})")
    return sets


def _rows(assignments: Sequence[Assignment], cases: Sequence[Mapping[str, Any]], seed: int) -> list[dict[str, Any]]:
    by_id = {str(row["case_id"]): row for row in cases}
    return [
        {"case_id": a.case_id, "patient_id": by_id[a.case_id].get("patient_id"), "subject": a.subject,
         "session": by_id[a.case_id].get("session"), "split": a.split, "fold": a.fold, "set_name": a.set_name,
         "lesion_count_bin": a.lesion_count_bin, "volume_bin": a.volume_bin, "scanner": a.scanner,
         "assigned_by": a.assigned_by, "seed": seed}
        for a in assignments
    ]


def write_splits(cases_parquet: Path, series_parquet: Path, settings: SplitSettings, out: Path,
                 frozen_parquet: Path | None = None) -> list[Assignment]:
    """Assign the catalog's ok cases (around a frozen split, if given) and write the splits table."""
    from metsprep.catalog.schemas import SPLIT_COLUMNS, write_table

    cases = _read_rows(cases_parquet)
    series = _read_rows(series_parquet, ["series_instance_uid", "manufacturer"])
    frozen = read_frozen(frozen_parquet) if frozen_parquet else {}
    assignments = assign(cases_from_catalog(cases, series), settings, frozen)
    meta = {"split_settings": json.dumps(settings.to_config(), sort_keys=True)}
    write_table(_rows(assignments, cases, settings.seed), SPLIT_COLUMNS, "splits", out, meta)
    return assignments


def balance_report(assignments: Sequence[Assignment], settings: SplitSettings) -> str:
    """Markdown table of cases per set and stratum, with the worst deviation from the targets."""
    rows = balance(assignments, settings)
    sets = settings.set_names
    lines = ["| margin | level | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for i in range(0, len(rows), len(sets)):
        group = rows[i:i + len(sets)]
        cells = [f"{r.n_cases} ({r.target:.1f})" for r in group]
        lines.append(f"| {group[0].margin} | {group[0].level} | " + " | ".join(cells) + " |")
    worst = max((abs(r.deviation) for r in rows), default=0.0)
    lines.append("")
    lines.append(f"Cells: cases in the set (target share). Largest deviation from a target: {worst:.2f} cases; "
                 f"the most sessions of one patient: {largest_group(assignments)}.")
    return "\n".join(lines) + "\n"
