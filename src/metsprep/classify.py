"""Sequence classification of MR series: T1, T1C, T2 or OTHER, and why.

The rule table ships as `metsprep/data/sequence_rules.yaml` (its header documents the order of
evidence); descriptions are read through the token lexicon (`metsprep.series_description`).
This module classifies one series at a time from its description and header
(`classify_series`), lets the acquisition order of a study decide what one series alone cannot
(`apply_acquisition_order`) and chooses one series per role (`choose_series`).

Labels are final (`T1`, `T1C`, `T2`, `OTHER`); intermediate families (`T1_FAMILY`,
`CONTRAST_ONLY`, `T1_UNKNOWN_CONTRAST`) never leave this module except as `rule_id`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from metsprep.series_description import DescriptionReading, Lexicon, load_lexicon, read_description

LABELS = ("T1", "T1C", "T2", "OTHER")


@dataclass(frozen=True)
class SequenceClass:
    """Outcome of classifying one series."""

    label: str  # T1 | T1C | T2 | OTHER
    # description | acquisition | description+acquisition | contrast_agent_tag | rtss_reference |
    # acquisition_order | config_override | pixels (set by the image check)
    source: str
    flags: tuple[str, ...] = ()
    rule_id: str = ""
    # high: two independent sources agree; medium: one source decided; low: sources disagree
    confidence: str = "medium"
    why: str = ""
    description_text: str = " "  # the description as the lexicon read it (canonical tokens)


@dataclass(frozen=True)
class DescriptionRule:
    id: str
    family: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class AcquisitionRule:
    id: str
    label: str
    when: Mapping[str, Any]


@dataclass(frozen=True)
class SequenceRules:
    description_rules: tuple[DescriptionRule, ...]
    acquisition_rules: tuple[AcquisitionRule, ...]
    derived_image_type_tokens: frozenset[str]
    unmarked_often_post: frozenset[str]  # canonical tokens of T1 series often post-contrast when unmarked
    lexicon: Lexicon
    sequence_overrides: Mapping[str, str] = field(default_factory=dict)


def load_rules(
    path: Path | str | None = None, overrides: Mapping[str, str] | None = None,
    lexicon_path: Path | str | None = None,
) -> SequenceRules:
    """Read the rule table and the token lexicon (the packaged ones without a path);
    `overrides` (SeriesInstanceUID -> label) extend the file's own."""
    from metsprep import data as package_data

    data = yaml.safe_load(package_data.read_text(package_data.SEQUENCE_RULES, path))
    merged = dict(data.get("sequence_overrides") or {})
    merged.update(overrides or {})
    for uid, label in merged.items():
        if label not in LABELS:
            raise ValueError(f"sequence override for {uid}: {label!r} is not one of {LABELS}")
    return SequenceRules(
        description_rules=tuple(
            DescriptionRule(r["id"], r["family"], re.compile(r["pattern"])) for r in data["description_rules"]
        ),
        acquisition_rules=tuple(
            AcquisitionRule(r["id"], r["label"], dict(r["when"])) for r in data["acquisition_rules"]
        ),
        derived_image_type_tokens=frozenset(t.upper() for t in data["derived_image_type_tokens"]),
        unmarked_often_post=frozenset(t.upper() for t in data.get("unmarked_often_post") or []),
        lexicon=load_lexicon(lexicon_path or None),
        sequence_overrides={str(k): str(v) for k, v in merged.items()},
    )


def _is_filled(value: Any) -> bool:
    if value is None:
        return False
    try:
        if value != value:  # NaN
            return False
    except (TypeError, ValueError):
        pass
    return bool(str(value).strip())


def _float(value: Any) -> float | None:
    if not _is_filled(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _codes(value: Any) -> set[str]:
    """Scanning Sequence / Image Type values as a set of upper-case codes."""
    if value is None:
        return set()
    if isinstance(value, str):
        parts = re.split(r"[\\/,;]", value)
    else:
        try:
            parts = [str(v) for v in value]
        except TypeError:
            return set()
    return {p.strip().upper() for p in parts if p and p.strip()}


def _acquisition_matches(when: Mapping[str, Any], series: Mapping[str, Any]) -> bool:
    tr = _float(series.get("repetition_time_ms"))
    te = _float(series.get("echo_time_ms"))
    ti = _float(series.get("inversion_time_ms"))
    codes = _codes(series.get("scanning_sequence"))
    for key, bound in when.items():
        if key == "scanning_sequence_any":
            if not codes & {str(b).upper() for b in bound}:
                return False
            continue
        name, _, side = key.rpartition("_")
        value = {"repetition_time": tr, "echo_time": te, "inversion_time": ti}[name]
        if value is None:
            return False
        if side == "min" and value < float(bound):
            return False
        if side == "max" and value > float(bound):
            return False
    return True


def _acquisition_label(series: Mapping[str, Any], rules: SequenceRules) -> tuple[str | None, str]:
    for rule in rules.acquisition_rules:
        if _acquisition_matches(rule.when, series):
            return rule.label, rule.id
    return None, "acquisition_unclear"


def _is_derived(series: Mapping[str, Any], rules: SequenceRules) -> bool:
    codes = _codes(series.get("image_type"))
    return "DERIVED" in codes and bool(codes & rules.derived_image_type_tokens)


def _resolve_t1(
    series: Mapping[str, Any], contrast: str, weighting_source: str, rule_id: str, rtss_referenced: bool,
    flags: list[str], confidence: str, why: str, unmarked_often_post: bool = False,
) -> SequenceClass:
    """Final label of a T1-weighted series from its contrast evidence."""
    agent = _is_filled(series.get("contrast_bolus_agent"))
    if contrast == "post":
        return SequenceClass("T1C", weighting_source, tuple(flags), rule_id, confidence, why)
    if contrast == "pre":
        if agent:
            flags.append("contrast_agent_tag_conflicts_with_description")
            confidence = "low"
        if rtss_referenced:
            flags.append("rtss_references_pre_contrast_t1")
            confidence = "low"
        return SequenceClass("T1", weighting_source, tuple(flags), rule_id, confidence, why)
    if contrast == "both":
        flags += ["ambiguous", "conflicting_contrast_markers"]
        return SequenceClass("OTHER", weighting_source, tuple(flags), rule_id, "low", why)
    # T1_UNKNOWN_CONTRAST: the description does not say
    if agent:
        return SequenceClass("T1C", "contrast_agent_tag", tuple(flags), rule_id, confidence,
                             why + "; Contrast/Bolus Agent filled")
    if rtss_referenced:
        return SequenceClass("T1C", "rtss_reference", tuple(flags), rule_id, confidence,
                             why + "; the RT Structure Set was drawn on it")
    flags.append("no_contrast_marker")
    if unmarked_often_post:
        # 3D T1 (MPRAGE, BRAVO, SPGR, TFE, VIBE) and cut-short descriptions are as often
        # post- as pre-contrast when unmarked: say so, and let the image check decide
        flags.append("contrast_unknown")
        return SequenceClass("T1", weighting_source, tuple(flags), rule_id, "low",
                             why + "; no contrast marker on a series that is often post-contrast unmarked")
    return SequenceClass("T1", weighting_source, tuple(flags), rule_id, confidence, why + "; no contrast marker")


def _weighting_agreement(family: str, acquisition: str | None) -> str:
    """'agree', 'disagree' or 'unknown' between a description family and the header's label."""
    if acquisition is None:
        return "unknown"
    weighting = {"T1_FAMILY": "T1", "T2": "T2"}.get(family)
    if weighting is None or acquisition == "OTHER":
        return "unknown"
    return "agree" if weighting == acquisition else "disagree"


def classify_series(
    series: Mapping[str, Any], rules: SequenceRules, *, rtss_referenced: bool = False
) -> SequenceClass:
    """Classify one series from its header values (inventory column names).

    Keys used: series_instance_uid, series_description, protocol_name, image_type,
    repetition_time_ms, echo_time_ms, inversion_time_ms, scanning_sequence,
    contrast_bolus_agent. `rtss_referenced` says that the case's RT Structure Set was
    drawn on this series, strong evidence for T1C in a gamma-knife collection.
    The description and the acquisition parameters are two opinions: when both name the
    weighting and agree the confidence is high; when they disagree the description's label is
    kept with the flag `description_conflicts_with_acquisition` and low confidence (the image
    check of the case then has the last word).
    """
    description = series.get("series_description")
    if not _is_filled(description):
        description = series.get("protocol_name")
    reading = read_description(description if _is_filled(description) else None, rules.lexicon)
    return replace(_classify(series, reading, rules, rtss_referenced), description_text=reading.text)


def _classify(
    series: Mapping[str, Any], reading: DescriptionReading, rules: SequenceRules, rtss_referenced: bool
) -> SequenceClass:
    uid = series.get("series_instance_uid")
    if uid is not None and str(uid) in rules.sequence_overrides:
        return SequenceClass(rules.sequence_overrides[str(uid)], "config_override", (), "sequence_overrides",
                             "high", "SeriesInstanceUID listed in sequence_overrides")
    flags: list[str] = []

    if _is_derived(series, rules):
        return SequenceClass("OTHER", "acquisition", ("derived_image",), "derived_image_type", "high",
                             "Image Type DERIVED (a reformat or derived map)")

    family, rule_id = None, ""
    for rule in rules.description_rules:
        if rule.pattern.search(reading.text):
            family, rule_id = rule.family, rule.id
            break
    contrast = reading.contrast
    why = _why(reading, rule_id)
    label, acq_rule = _acquisition_label(series, rules)

    if family in ("OTHER", "T2"):
        if contrast in ("post", "both"):
            flags.append("contrast_marker_on_non_t1")
        confidence = "medium"
        if family == "T2":
            confidence, why = _second_opinion(family, label, acq_rule, flags, why)
        return SequenceClass(family, "description", tuple(flags), rule_id, confidence, why)
    if family == "T1_FAMILY":
        confidence, why = _second_opinion(family, label, acq_rule, flags, why)
        often_post = bool(set(reading.tokens) & rules.unmarked_often_post) or bool(reading.dangling)
        return _resolve_t1(series, contrast, "description", rule_id, rtss_referenced, flags, confidence, why,
                           often_post)

    # the description does not name the weighting: acquisition parameters decide it
    why = f"{why}; header: {acq_rule}" if why else f"header: {acq_rule}"
    if family == "CONTRAST_ONLY":
        if label == "T1":
            return _resolve_t1(series, "post", "description+acquisition", f"{rule_id}+{acq_rule}", rtss_referenced,
                               flags, "medium", why)
        if label is None and rtss_referenced:
            return SequenceClass("T1C", "rtss_reference", ("weighting_unknown",), rule_id, "low", why)
        flags.append("contrast_marker_on_non_t1" if label else "ambiguous")
        return SequenceClass(label or "OTHER", "description+acquisition", tuple(flags), f"{rule_id}+{acq_rule}",
                             "medium" if label else "low", why)
    if label == "T1":
        return _resolve_t1(series, contrast, "acquisition", acq_rule, rtss_referenced, flags, "medium", why)
    if label is None:
        if rtss_referenced:
            return SequenceClass("T1C", "rtss_reference", ("weighting_unknown",), acq_rule, "low", why)
        return SequenceClass("OTHER", "acquisition", ("ambiguous",), acq_rule, "low", why)
    return SequenceClass(label, "acquisition", tuple(flags), acq_rule, "medium", why)


def _second_opinion(family: str, label: str | None, acq_rule: str, flags: list[str], why: str) -> tuple[str, str]:
    """(confidence, why) of a description-decided weighting once the header had its say."""
    agreement = _weighting_agreement(family, label)
    if agreement == "disagree":
        flags.append("description_conflicts_with_acquisition")
        why += f"; header says {label} ({acq_rule})"
    return {"agree": "high", "disagree": "low"}.get(agreement, "medium"), why


def _why(reading: DescriptionReading, rule_id: str) -> str:
    text = reading.text.strip()
    parts = [f"description read as '{text}'" if text else "no description"]
    if rule_id:
        parts.append(f"rule {rule_id}")
    if reading.contrast_words:
        parts.append(f"contrast {reading.contrast} from " + ", ".join(f"'{w}'" for w in reading.contrast_words))
    if reading.dangling:
        parts.append("ends in " + ", ".join(f"'{w}'" for w in reading.dangling) + " with nothing after it")
    return "; ".join(parts)


# --- the acquisition order of a study ---------------------------------------------


def _order_key(header: Mapping[str, Any]) -> tuple[float, str]:
    number = _float(header.get("series_number"))
    return (number if number is not None else float("inf"), str(header.get("series_time") or ""))


def apply_acquisition_order(
    classes: Mapping[str, SequenceClass], headers: Mapping[str, Mapping[str, Any]]
) -> dict[str, SequenceClass]:
    """Let the order of a study's series decide what one series' header cannot.

    The contrast injection is placed at the first series (by Series Number, then Series Time)
    with contrast evidence (labelled T1C, a filled Contrast/Bolus Agent, or a perfusion or
    dynamic series). A T1 whose description says nothing of contrast and that was acquired
    after the injection becomes T1C (source `acquisition_order`) when a series of the same
    description was acquired before it; otherwise it keeps T1 with the flag
    `acquired_after_contrast_injection` and low confidence.
    """
    injected = [uid for uid, cls in classes.items()
                if cls.label == "T1C" or cls.rule_id == "perfusion"
                or _is_filled(headers[uid].get("contrast_bolus_agent"))]  # fmt: skip
    if not injected:
        return dict(classes)
    injection = min(_order_key(headers[uid]) for uid in injected)
    out = dict(classes)
    for uid, cls in classes.items():
        if cls.label != "T1" or "no_contrast_marker" not in cls.flags or _order_key(headers[uid]) <= injection:
            continue
        before = [other for other, c in classes.items() if other != uid and c.description_text == cls.description_text
                  and _order_key(headers[other]) < injection]  # fmt: skip
        flags = tuple(f for f in cls.flags if f != "no_contrast_marker")
        if before:
            out[uid] = replace(cls, label="T1C", source="acquisition_order",
                               flags=flags + ("post_contrast_by_acquisition_order",), confidence="medium",
                               why=cls.why + "; acquired after the contrast injection, the same description before it")
        else:
            out[uid] = replace(cls, flags=cls.flags + ("acquired_after_contrast_injection",), confidence="low",
                               why=cls.why + "; acquired after the contrast injection")
    return out


# --- one series per role ----------------------------------------------------------

SELECTION_RULE = (
    "T1C: the series the RTSS was drawn on first; then for every role: axial before other "
    "orientations, more slices first, later (higher) series number first, SeriesInstanceUID last"
)


def _is_axial(candidate: Mapping[str, Any]) -> bool:
    iop = candidate.get("image_orientation_patient")
    if iop is None or len(iop) != 6:
        return False
    row, col = [float(v) for v in iop[:3]], [float(v) for v in iop[3:]]
    normal_z = row[0] * col[1] - row[1] * col[0]
    return abs(normal_z) > 0.9


def choose_series(candidates: Sequence[Mapping[str, Any]], role: str) -> tuple[Mapping[str, Any] | None, str | None]:
    """Pick one series of a role among candidates of one study; return it and the reason.

    Candidate keys: series_instance_uid, rtss_referenced (bool), image_orientation_patient
    (6 floats of the first slice), n_instances, series_number.
    """
    if not candidates:
        return None, None
    if len(candidates) == 1:
        return candidates[0], "only candidate"

    def key(c: Mapping[str, Any]) -> tuple[Any, ...]:
        referenced = bool(c.get("rtss_referenced")) if role == "T1C" else False
        number = c.get("series_number")
        number = -1 if number is None or not _is_filled(number) else int(number)
        return (not referenced, not _is_axial(c), -int(c.get("n_instances") or 0), -number,
                str(c.get("series_instance_uid")))

    ranked = sorted(candidates, key=key)
    best, runner_up = ranked[0], ranked[1]
    k_best, k_next = key(best), key(runner_up)
    deciding = ["referenced by the RTSS", "axial", "more slices", "higher series number", "SeriesInstanceUID order"]
    reason_index = next(i for i in range(5) if k_best[i] != k_next[i])
    reason = f"{len(candidates)} {role} candidates; chosen: {deciding[reason_index]}"
    return best, reason
