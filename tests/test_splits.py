"""Patient-level splits (metsprep.splits) on cohort tables with longitudinal patients.

The tables are drawn, not taken from the synthetic image generator: the split sees only
case rows (patient, lesion count, total volume, scanner), so any cohort shape can be posed,
including the ones the generator does not make (hundreds of patients, 4 sessions, vendors).
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metsprep.settings import SplitSettings
from metsprep.splits import (
    SplitCase,
    assign,
    balance,
    largest_group,
    lesion_count_bin,
    scanner_vendor,
    volume_bin,
)

VENDORS = ("GE", "SIEMENS", "PHILIPS", "unknown")


def cohort(n_patients: int, seed: int, first_patient: int = 0) -> list[SplitCase]:
    """Patients with 1-4 sessions (most one), 0-12 lesions, log-normal volumes, four vendors."""
    rng = random.Random(seed)
    cases = []
    for p in range(first_patient, first_patient + n_patients):
        n_sessions = rng.choices([1, 2, 3, 4], weights=[70, 20, 7, 3])[0]
        vendor = rng.choice(VENDORS)
        for s in range(n_sessions):
            n = rng.choice([0, 1, 1, 1, 2, 2, 3, 4, 5, 7, 12])
            volume = sum(rng.lognormvariate(6.0, 1.5) for _ in range(n))
            cases.append(SplitCase(f"sub-P{p:04d}_ses-{s + 1:02d}", f"P{p:04d}", n, volume, vendor))
    return cases


def sets_of_patients(assignments) -> dict[str, set[str]]:
    sets = defaultdict(set)
    for a in assignments:
        sets[a.subject].add(a.set_name)
    return sets


def tolerance(assignments) -> float:
    """The stated balance (docs/exports.md): every stratum's count in every set within
    max(2, most sessions of one patient) cases of its target share."""
    return max(2.0, float(largest_group(assignments)))


@pytest.mark.parametrize("n_patients", [25, 120, 700])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_patient_in_two_sets_and_strata_within_tolerance(n_patients, seed):
    cases = cohort(n_patients, seed)
    config = SplitSettings(seed=seed)
    assignments = assign(cases, config)
    assert sorted(a.case_id for a in assignments) == sorted(c.case_id for c in cases)
    assert all(len(s) == 1 for s in sets_of_patients(assignments).values())
    assert largest_group(assignments) > 1  # longitudinal patients are in the cohort
    rows = balance(assignments, config)
    assert {r.margin for r in rows} == {"all", "lesion_count_bin", "volume_bin", "scanner"}
    worst = max(rows, key=lambda r: abs(r.deviation))
    assert abs(worst.deviation) <= tolerance(assignments), worst
    tests = [a for a in assignments if a.split == "test"]
    assert abs(len(tests) - 0.2 * len(cases)) <= tolerance(assignments)
    assert all(a.fold is None for a in tests) and all(a.fold in range(5) for a in assignments if a.split == "train")


def test_same_seed_same_split_and_another_seed_another():
    cases = cohort(200, 5)
    first = {a.case_id: a.set_name for a in assign(cases, SplitSettings(seed=7))}
    shuffled = list(reversed(cases))
    assert {a.case_id: a.set_name for a in assign(shuffled, SplitSettings(seed=7))} == first
    other = {a.case_id: a.set_name for a in assign(cases, SplitSettings(seed=8))}
    assert sum(first[c] != other[c] for c in first) > len(first) // 3


def test_adding_cases_to_a_frozen_split_moves_no_earlier_case():
    config = SplitSettings(seed=11)
    old = assign(cohort(300, 11), config)
    frozen = {a.subject: a.set_name for a in old}
    later = cohort(60, 99, first_patient=300)  # new patients
    follow_up = [SplitCase(c.case_id.replace("_ses-01", "_ses-09"), c.subject, 3, 4000.0, "GE")
                 for c in cohort(300, 11)[:40] if c.case_id.endswith("_ses-01")]  # new sessions of old patients
    new = assign(cohort(300, 11) + later + follow_up, config, frozen)
    by_case = {a.case_id: a for a in new}
    assert all(by_case[a.case_id].set_name == a.set_name for a in old)
    assert all(by_case[c.case_id].set_name == frozen[c.subject] for c in follow_up)
    assert all(a.assigned_by == "ledger" for a in new if a.subject in frozen)
    assert all(len(s) == 1 for s in sets_of_patients(new).values())
    # the new patients restore the balance around the frozen ones
    assert max(abs(r.deviation) for r in balance(new, config)) <= tolerance(new) + 1
    # without the frozen split the balance is recomputed: earlier cases move (why the ledger exists)
    moved = assign(cohort(300, 11) + later, config)
    assert any({a.case_id: a.set_name for a in moved}[a.case_id] != a.set_name for a in old)


def test_frozen_split_of_other_settings_is_refused():
    frozen = {"P0001": "fold7"}
    with pytest.raises(ValueError, match="n_folds"):
        assign(cohort(5, 1), SplitSettings(), frozen)


def test_no_test_set_when_its_fraction_is_zero():
    assignments = assign(cohort(50, 3), SplitSettings(test_fraction=0.0, n_folds=3))
    assert {a.set_name for a in assignments} == {"fold0", "fold1", "fold2"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(1, 4), st.integers(0, 20), st.sampled_from(VENDORS)),
                min_size=1, max_size=60),
       st.integers(0, 2**31))
def test_any_cohort_keeps_patients_whole(patients, seed):
    cases = [SplitCase(f"sub-{p}_ses-{s}", str(p), n, 100.0 * n, vendor)
             for p, n_sessions, n, vendor in patients for s in range(n_sessions)]
    cases = list({c.case_id: c for c in cases}.values())
    assignments = assign(cases, SplitSettings(seed=seed))
    assert len(assignments) == len(cases)
    assert all(len(s) == 1 for s in sets_of_patients(assignments).values())


def test_bins_and_vendors_read_as_people_write_them():
    edges = (1, 2, 4, 10)
    assert [lesion_count_bin(n, edges) for n in (0, 1, 2, 3, 4, 9, 10, 40)] == \
        ["0", "1", "2-3", "2-3", "4-9", "4-9", ">=10", ">=10"]
    assert [volume_bin(v, (500.0, 2000.0)) for v in (None, 0.0, 499.9, 500.0, 2500.0)] == \
        ["<500 mm3", "<500 mm3", "<500 mm3", "500-2000 mm3", ">=2000 mm3"]
    assert [scanner_vendor(m) for m in ("GE MEDICAL SYSTEMS", "Philips Healthcare", "SIEMENS", "Siemens Healthineers",
                                        "TOSHIBA_MEC", "", None, "Acme MR")] == \
        ["GE", "PHILIPS", "SIEMENS", "SIEMENS", "TOSHIBA", "unknown", "unknown", "ACME"]
