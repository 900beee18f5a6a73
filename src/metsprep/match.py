"""Stage match: series and studies by UID, RT Structure Set to images, one plan per case.

Grouping is by UID only, never by folder: a series is a SeriesInstanceUID, a study a
StudyInstanceUID, a patient a PatientID. A case is a study with an RT Structure Set
(RTSS). Every rule that decides what happens to odd data is listed in
`docs/matching.md`; the functions below say which rule they implement.

Reading order: `run_match` (I/O) -> `match_inventory` (pure, DataFrames in and out) ->
duplicates -> series summaries -> RTSS resolution -> studies and labels -> cases.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metsprep.atomic import write_with
from metsprep.classify import SequenceRules, apply_acquisition_order, choose_series, classify_series, load_rules
from metsprep.contracts import SCHEMA_VERSION, CasePlan
from metsprep.dicom_dates import valid_dicom_date
from metsprep.geometry import DUPLICATE_POSITION_TOLERANCE_MM, GeometryError, slice_gaps
from metsprep.settings import MatchSettings

RTSTRUCT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.481.3"

REASON_NO_RTSS = "no RT Structure Set for this study"
REASON_NO_T1C = "no post-contrast T1 series found"


# ----------------------------------------------------------------------------- labels

def sanitize_label(value: Any) -> str:
    """A BIDS label from free text: ASCII letters and digits only, never empty.

    Everything else (path separators, dots, '-', '_', spaces, non-ASCII letters) is
    dropped, so `../../x` becomes `x`. A value with nothing left becomes `anon` plus a
    short hash of the value, so distinct unusable values stay distinct.
    """
    text = "" if value is None else str(value)
    label = re.sub(r"[^A-Za-z0-9]", "", text)
    return label or "anon" + _short_hash(text)


def _short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def subject_labels(patient_ids: list[str]) -> tuple[dict[str, str], set[str]]:
    """Subject label per PatientID; IDs whose labels collide get a hash suffix.

    Returns the mapping and the set of PatientIDs that were disambiguated (flagged).
    """
    by_label: dict[str, list[str]] = {}
    for pid in sorted(set(patient_ids)):
        by_label.setdefault(sanitize_label(pid), []).append(pid)
    labels: dict[str, str] = {}
    disambiguated: set[str] = set()
    for label, pids in by_label.items():
        if len(pids) == 1:
            labels[pids[0]] = label
            continue
        for pid in pids:
            labels[pid] = label + _short_hash(pid)
            disambiguated.add(pid)
    return labels, disambiguated


def session_label(index: int, n_sessions: int) -> str:
    """`01`, `02`, ... (wider when a patient has 100 or more studies)."""
    return str(index + 1).zfill(max(2, len(str(n_sessions))))


# ----------------------------------------------------------------------------- entry

def run_match(
    inventory_parquet: Path,
    input_dir: Path,
    settings: MatchSettings,
    out_series: Path,
    out_cases: Path,
    plans_dir: Path,
) -> None:
    """Read the inventory, match, and write series/cases tables and one plan per ok case."""
    inventory = pd.read_parquet(inventory_parquet)
    rules = load_rules(settings.sequence_rules or None, settings.sequence_overrides, settings.sequence_lexicon or None)
    result = match_inventory(inventory, Path(input_dir), rules, settings)
    write_with(out_series, lambda name: result.series.to_parquet(name, index=False))
    write_with(out_cases, lambda name: result.cases.to_parquet(name, index=False))
    plans_dir = Path(plans_dir)
    plans_dir.mkdir(parents=True, exist_ok=True)
    for stale in plans_dir.glob("*.json"):
        if stale.stem not in result.plans:
            stale.unlink()
    for case_id, plan in result.plans.items():
        plan.write(plans_dir / f"{case_id}.json")


@dataclass
class MatchResult:
    series: pd.DataFrame
    cases: pd.DataFrame
    plans: dict[str, CasePlan]


# ----------------------------------------------------------------------------- helpers

def _filled(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) > 0
    return str(value) != ""


def _as_list(value: Any) -> list[Any]:
    return list(value) if _filled(value) else []


def _first_filled(values: Any) -> Any:
    for value in values:
        if _filled(value):
            return value
    return None


# ----------------------------------------------------------------------------- duplicates

@dataclass
class DuplicateReport:
    drop_paths: set[str] = field(default_factory=set)
    identical_series: set[str] = field(default_factory=set)
    # series UID -> reason (different content under one SOP Instance UID)
    conflicting_series: dict[str, str] = field(default_factory=dict)


def _file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def find_duplicates(readable: pd.DataFrame, input_dir: Path) -> DuplicateReport:
    """Rule D1/D2: files sharing a SOP Instance UID.

    Identical bytes -> keep the first path (sorted), flag the series. Different bytes ->
    every series holding one of those files is unusable (it cannot be known which file is
    the real instance).
    """
    report = DuplicateReport()
    counts = readable["sop_instance_uid"].value_counts()
    for sop_uid in sorted(counts[counts > 1].index):
        group = readable[readable["sop_instance_uid"] == sop_uid].sort_values("path")
        digests = {p: _file_digest(input_dir / p) for p in group["path"]}
        series_uids = set(group["series_instance_uid"].dropna())
        if len(set(digests.values())) == 1:
            report.drop_paths.update(list(group["path"])[1:])
            report.identical_series.update(series_uids)
        else:
            for uid in series_uids:
                report.conflicting_series.setdefault(
                    uid,
                    f"two different files share SOP Instance UID {sop_uid} "
                    f"({', '.join(group['path'])}); the series cannot be trusted",
                )
    return report


# ----------------------------------------------------------------------------- series

@dataclass
class SeriesInfo:
    uid: str
    patient_id: str | None
    study_uid: str | None
    modality: str | None
    description: str | None
    series_number: int | None
    frame_of_reference_uid: str | None
    files: list[str]
    sop_uids: set[str]
    header: dict[str, Any]  # first instance's columns (classification inputs)
    rows: int | None = None
    columns: int | None = None
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    iop: list[float] | None = None
    normal: np.ndarray | None = None
    origin: np.ndarray | None = None
    slice_positions: np.ndarray | None = None  # sorted, along the normal
    slice_spacing: float | None = None
    longest_missing_run: int = 0  # consecutive slice planes without an image
    flags: list[str] = field(default_factory=list)
    unusable_reason: str | None = None

    @property
    def is_image(self) -> bool:
        return self.rows is not None and self.modality not in ("RTSTRUCT",)

    @property
    def has_gap(self) -> bool:
        return "missing_slices" in self.flags


def _orientation_name(normal: np.ndarray | None) -> str | None:
    if normal is None:
        return None
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def summarise_series(images: pd.DataFrame) -> dict[str, SeriesInfo]:
    """One SeriesInfo per SeriesInstanceUID, with slice geometry from Image Position.

    Rule G1: rows/columns/pixel spacing/orientation that differ within one series ->
    flag `mixed_geometry` (the bids stage decides). Rule G2: the slice positions along the
    normal are fitted to a uniform grid by `metsprep.geometry.slice_gaps` (the rule the
    bids stage builds the volume with): planes without a slice -> flag `missing_slices`;
    positions on no uniform grid -> flag `irregular_slice_spacing`; repeated positions ->
    flag `duplicate_slice_positions`.
    """
    out: dict[str, SeriesInfo] = {}
    for uid, group in images.groupby("series_instance_uid", sort=True):
        group = group.sort_values(["instance_number", "path"], na_position="last")
        first = group.iloc[0]
        info = SeriesInfo(
            uid=str(uid),
            patient_id=_first_filled(group["patient_id"]),
            study_uid=_first_filled(group["study_instance_uid"]),
            modality=_first_filled(group["modality"]),
            description=_first_filled(group["series_description"]),
            series_number=int(first["series_number"]) if _filled(first["series_number"]) else None,
            frame_of_reference_uid=_first_filled(group["frame_of_reference_uid"]),
            files=sorted(group["path"]),
            sop_uids=set(group["sop_instance_uid"].dropna()),
            header={k: first[k] for k in group.columns},
        )
        info.header["contrast_bolus_agent"] = _first_filled(group["contrast_bolus_agent"])
        if group["patient_id"].dropna().nunique() > 1:
            info.flags.append("mixed_patient_ids")
        if group["study_instance_uid"].dropna().nunique() > 1:
            info.flags.append("mixed_study_uids")
        _series_geometry(info, group)
        out[info.uid] = info
    return out


def _series_geometry(info: SeriesInfo, group: pd.DataFrame) -> None:
    if not _filled(group.iloc[0]["rows"]):
        return
    info.rows = int(group.iloc[0]["rows"])
    info.columns = int(group.iloc[0]["columns"]) if _filled(group.iloc[0]["columns"]) else None
    spacing = _first_filled(group["pixel_spacing_mm"])
    if spacing is not None and len(spacing) == 2:
        info.pixel_spacing = (float(spacing[0]), float(spacing[1]))
    thickness = group["slice_thickness_mm"].dropna()
    info.slice_thickness = float(thickness.iloc[0]) if len(thickness) else None
    signature = {
        (
            row.rows, row.columns,
            tuple(np.round(np.asarray(row.pixel_spacing_mm, float), 4)) if _filled(row.pixel_spacing_mm) else None,
            tuple(np.round(np.asarray(row.image_orientation_patient, float), 3)) if _filled(row.image_orientation_patient) else None,
        )
        for row in group.itertuples()
    }
    if len(signature) > 1:
        info.flags.append("mixed_geometry")
    iop = _first_filled(group["image_orientation_patient"])
    if iop is None or len(iop) != 6:
        return
    info.iop = [float(v) for v in iop]
    row_dir, col_dir = np.array(info.iop[:3]), np.array(info.iop[3:])
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 1e-6:
        return
    info.normal = normal / np.linalg.norm(normal)
    ipps = [np.asarray(p, float) for p in group["image_position_patient"] if _filled(p) and len(p) == 3]
    if not ipps:
        return
    info.origin = ipps[0]
    positions = np.sort(np.array([float(p @ info.normal) for p in ipps]))
    info.slice_positions = positions
    if len(positions) > 1:
        steps = np.diff(positions)
        if np.any(steps <= DUPLICATE_POSITION_TOLERANCE_MM):
            info.flags.append("duplicate_slice_positions")
        distinct = positions[np.concatenate([[True], steps > DUPLICATE_POSITION_TOLERANCE_MM])]
        if len(distinct) > 1:
            # the same rule as the bids stage's grid (metsprep.geometry.slice_gaps)
            try:
                gaps = slice_gaps(distinct)
            except GeometryError:
                info.slice_spacing = float(np.median(np.diff(distinct)))
                info.flags.append("irregular_slice_spacing")
            else:
                info.slice_spacing = gaps.spacing_mm
                info.longest_missing_run = gaps.longest_missing_run
                if gaps.missing_planes:
                    info.flags.append("missing_slices")


# ----------------------------------------------------------------------------- RTSS

@dataclass
class RtssResolution:
    path: str
    sop_uid: str
    series_uid: str | None
    patient_id: str | None
    own_study_uid: str | None
    own_study_date: str | None
    date_key: tuple[str, str, int, str]
    n_contours: int
    target_series: str | None = None  # the image series the contours were drawn on
    geometry_candidates: list[str] = field(default_factory=list)
    study_uid: str | None = None  # the image study it belongs to
    match_method: str | None = None
    missing_refs: int = 0
    n_refs: int = 0
    flags: list[str] = field(default_factory=list)
    failure: str | None = None
    points: np.ndarray | None = None


def _contour_points(row: Mapping[str, Any]) -> np.ndarray:
    text = row.get("rtss_contour_points_json")
    if not _filled(text):
        return np.zeros((0, 3))
    pts = np.asarray(json.loads(str(text)), dtype=np.float64)
    return pts.reshape(-1, 3)


def geometry_fits(series: SeriesInfo, points_lps: np.ndarray, tolerance_mm: float) -> bool:
    """Rule M3: every contour plane coincides with a slice plane of the series (within
    tolerance along the slice normal) and lies inside the series' field of view."""
    if series.normal is None or series.slice_positions is None or len(points_lps) == 0:
        return False
    tol = tolerance_mm
    if series.slice_spacing:
        tol = min(tol, 0.25 * series.slice_spacing)
    along = points_lps @ series.normal
    nearest = np.min(np.abs(along[:, None] - series.slice_positions[None, :]), axis=1)
    if np.any(nearest > tol):
        return False
    if series.pixel_spacing and series.rows and series.columns and series.iop and series.origin is not None:
        row_dir, col_dir = np.array(series.iop[:3]), np.array(series.iop[3:])
        rel = points_lps - series.origin
        x = rel @ row_dir / series.pixel_spacing[1]
        y = rel @ col_dir / series.pixel_spacing[0]
        if np.any(x < -0.5) or np.any(x > series.columns - 0.5) or np.any(y < -0.5) or np.any(y > series.rows - 0.5):
            return False
    return True


def resolve_rtss(
    rtss_row: Mapping[Any, Any],
    series: dict[str, SeriesInfo],
    sop_to_series: dict[str, str],
    tolerance_mm: float,
) -> RtssResolution:
    """Rules M1-M3: find the image series an RTSS was drawn on.

    M1 `sop_uid`: the contours' ReferencedSOPInstanceUIDs that exist in the inventory;
    the series holding most of them. M2 `series_uid`: the RTReferencedSeries UID, when
    none of the referenced instances exists. M3 `geometry`: series of the same patient
    (same Frame of Reference first, then the RTSS's own study, then any) whose slice
    planes hold every contour; a single best series is the target, several in one study
    leave the choice to classification, several studies -> unresolved.
    """
    res = RtssResolution(
        path=str(rtss_row["path"]), sop_uid=str(rtss_row["sop_instance_uid"]),
        series_uid=rtss_row.get("series_instance_uid"), patient_id=rtss_row.get("patient_id"),
        own_study_uid=rtss_row.get("study_instance_uid"), own_study_date=rtss_row.get("study_date"),
        date_key=(str(rtss_row.get("structure_set_date") or ""), str(rtss_row.get("structure_set_time") or ""),
                  int(rtss_row["instance_number"]) if _filled(rtss_row.get("instance_number")) else 0,
                  str(rtss_row["sop_instance_uid"])),
        n_contours=int(rtss_row.get("rtss_contour_count") or 0),
    )
    res.points = _contour_points(rtss_row)
    refs = set(_as_list(rtss_row.get("rtss_referenced_sop_instance_uids")))
    res.n_refs = len(refs)
    hits: dict[str, int] = {}
    for sop in refs:
        if sop in sop_to_series:
            hits[sop_to_series[sop]] = hits.get(sop_to_series[sop], 0) + 1
    res.missing_refs = len(refs) - sum(hits.values())
    ref_fors = set(_as_list(rtss_row.get("rtss_referenced_frame_of_reference_uids")))
    if hits:
        res.target_series = max(sorted(hits), key=lambda uid: hits[uid])
        res.match_method = "sop_uid"
        if len(hits) > 1:
            res.flags.append("rtss_references_several_series")
        if res.missing_refs:
            res.flags.append("rtss_references_missing_images")
    else:
        ref_series = [uid for uid in _as_list(rtss_row.get("rtss_referenced_series_uids")) if uid in series]
        if ref_series:
            res.target_series = sorted(ref_series)[0]
            res.match_method = "series_uid"
            if refs:
                res.flags.append("rtss_referenced_images_absent")
        else:
            _resolve_by_geometry(res, series, ref_fors, tolerance_mm)
            if res.match_method is None:
                return res
            if refs:
                res.flags.append("rtss_references_unresolved")
    if res.target_series is not None:
        target = series[res.target_series]
        res.study_uid = target.study_uid
        if ref_fors and target.frame_of_reference_uid not in ref_fors:
            res.flags.append("frame_of_reference_mismatch")
    else:
        res.study_uid = series[res.geometry_candidates[0]].study_uid
    if res.own_study_uid and res.study_uid != res.own_study_uid:
        res.flags.append("rtss_study_uid_differs_from_images")
    return res


def _resolve_by_geometry(
    res: RtssResolution, series: dict[str, SeriesInfo], ref_fors: set[str], tolerance_mm: float
) -> None:
    same_patient = [s for s in series.values() if s.is_image and s.patient_id == res.patient_id]
    points = res.points if res.points is not None else np.zeros((0, 3))
    fitting = [s for s in same_patient if geometry_fits(s, points, tolerance_mm)]
    if not fitting:
        res.failure = (
            "the RT Structure Set's referenced images are not in the input and no series of "
            "this patient has slice planes matching its contours"
            if same_patient else
            "RT Structure Set without images: no image series of this patient is in the input"
        )
        return
    # preference tiers: same Frame of Reference, then the RTSS's own study, then (no UID
    # link at all) a study on the RTSS's own Study Date; never another exam of the patient
    for tier in (
        [s for s in fitting if s.frame_of_reference_uid in ref_fors],
        [s for s in fitting if s.study_uid == res.own_study_uid],
        [s for s in fitting if res.own_study_date and s.header.get("study_date") == res.own_study_date],
    ):
        if tier:
            fitting = tier
            break
    else:
        res.failure = (
            "RT Structure Set without images: its referenced images are not in the input, and the "
            "series whose slice planes fit its contours belong to other studies of this patient "
            "(different Frame of Reference, study and date)"
        )
        return
    studies = sorted({s.study_uid for s in fitting if s.study_uid})
    if len(studies) > 1:
        res.failure = (
            "the RT Structure Set's references do not resolve and its contours fit series of "
            f"{len(studies)} different studies of this patient; cannot tell which one it belongs to"
        )
        return
    # Rule M4: contours that fit slice planes prove nothing about the patient frame; only
    # the structure set's own Frame of Reference reference does. Without it, or with another
    # one, the lesions could be placed on images of another frame: not placed at all.
    if not any(s.frame_of_reference_uid in ref_fors for s in fitting):
        frames = sorted({str(s.frame_of_reference_uid) for s in fitting})
        res.failure = (
            "the RT Structure Set's references do not resolve and it names no Frame of Reference, so it "
            "cannot be shown to share the frame of the series its contours fit"
            if not ref_fors else
            f"the RT Structure Set's references do not resolve and its Frame of Reference "
            f"({', '.join(sorted(ref_fors))}) is not that of the series its contours fit ({', '.join(frames)})"
        )
        return
    res.match_method = "geometry"
    res.geometry_candidates = sorted(s.uid for s in fitting)
    if len(fitting) == 1:
        res.target_series = fitting[0].uid
    else:
        res.flags.append("geometry_fits_several_series")


# ----------------------------------------------------------------------------- main

@dataclass
class Study:
    uid: str
    patient_id: str | None
    date: str
    time: str
    series_uids: list[str] = field(default_factory=list)
    rtss: list[RtssResolution] = field(default_factory=list)  # resolved to this study
    unresolved_rtss: list[RtssResolution] = field(default_factory=list)  # own study UID, unresolved


def match_inventory(
    inventory: pd.DataFrame, input_dir: Path, rules: SequenceRules, settings: MatchSettings | None = None
) -> MatchResult:
    """Series and cases tables and plans from an inventory (no files are written)."""
    settings = settings or MatchSettings()
    include_unannotated = settings.include_unannotated
    tolerance = settings.geometry_tolerance_mm

    # plain Python values with None for missing (pandas string columns use NaN)
    inventory = inventory.astype(object).where(inventory.notna(), None)
    readable = inventory[inventory["readable"].map(bool)]
    readable = readable[readable["sop_instance_uid"].notna()].sort_values("path")
    duplicates = find_duplicates(readable, input_dir)
    readable = readable[~readable["path"].isin(duplicates.drop_paths)]

    is_rtss = (readable["sop_class_uid"] == RTSTRUCT_SOP_CLASS_UID) | (readable["modality"] == "RTSTRUCT")
    rtss_rows = readable[is_rtss]
    images = readable[~is_rtss & readable["series_instance_uid"].notna()]

    series = summarise_series(images)
    for uid in duplicates.identical_series & set(series):
        series[uid].flags.append("duplicate_files_identical_kept_one")
    for uid, reason in duplicates.conflicting_series.items():
        if uid in series:
            series[uid].flags.append("conflicting_duplicate_sop_instance_uid")
            series[uid].unusable_reason = reason
    sop_to_series = {sop: s.uid for s in series.values() if s.is_image for sop in s.sop_uids}

    resolutions = [resolve_rtss(row, series, sop_to_series, tolerance) for row in rtss_rows.to_dict("records")]
    studies = _collect_studies(images, series, rtss_rows, resolutions)

    # labels: subject per PatientID, session per study in date order
    patient_of_study = {s.uid: s.patient_id or "" for s in studies.values()}
    labels, disambiguated = subject_labels(list(patient_of_study.values()))
    session_of: dict[str, str] = {}
    for pid in sorted(set(patient_of_study.values())):
        own = sorted((s for s in studies.values() if (s.patient_id or "") == pid),
                     key=lambda s: (s.date, s.time, s.uid))
        for i, study in enumerate(own):
            session_of[study.uid] = session_label(i, len(own))

    case_rows: list[dict[str, Any]] = []
    series_rows: list[dict[str, Any]] = []
    plans: dict[str, CasePlan] = {}
    for study in sorted(studies.values(), key=lambda s: s.uid):
        pid = study.patient_id or ""
        subject, session = labels[pid], session_of[study.uid]
        case_id = f"sub-{subject}_ses-{session}"
        case, plan, study_series_rows = _decide_case(
            study, series, rules, include_unannotated, case_id, input_dir, settings.max_missing_run,
        )
        case.update(patient_id=study.patient_id, subject=subject, session=session)
        if pid in disambiguated:
            case["flags"].append("subject_label_disambiguated")
        case_rows.append(case)
        series_rows += study_series_rows
        if plan is not None:
            plan.update(subject=subject, session=session, patient_id=study.patient_id)
            plans[case_id] = CasePlan.from_dict(plan, where=f"plan {case_id}")

    # series that belong to no study (no StudyInstanceUID)
    placed = {row["series_instance_uid"] for row in series_rows}
    for info in series.values():
        if info.uid not in placed:
            series_rows.append(_series_row(info, None, None, None, None, None))

    series_df = pd.DataFrame(series_rows, columns=SERIES_COLUMNS).sort_values(
        ["case_id", "series_number", "series_instance_uid"], na_position="last", ignore_index=True)
    cases_df = pd.DataFrame(case_rows, columns=CASE_COLUMNS).sort_values("case_id", ignore_index=True)
    return MatchResult(series_df, cases_df, dict(sorted(plans.items())))


def _collect_studies(
    images: pd.DataFrame, series: dict[str, SeriesInfo], rtss_rows: pd.DataFrame,
    resolutions: list[RtssResolution],
) -> dict[str, Study]:
    studies: dict[str, Study] = {}
    for uid, group in images.groupby("study_instance_uid", sort=True):
        studies[str(uid)] = Study(
            uid=str(uid), patient_id=_first_filled(group["patient_id"]),
            date=str(_first_filled(group["study_date"]) or ""), time=str(_first_filled(group["study_time"]) or ""),
            series_uids=sorted(set(group["series_instance_uid"])),
        )
    rtss_by_sop = {str(r["sop_instance_uid"]): r for r in rtss_rows.to_dict("records")}
    for res in resolutions:
        if res.study_uid is not None and res.study_uid in studies:
            studies[res.study_uid].rtss.append(res)
            continue
        own = res.own_study_uid or f"rtss:{res.sop_uid}"
        if own not in studies:
            row = rtss_by_sop[res.sop_uid]
            studies[own] = Study(uid=own, patient_id=res.patient_id,
                                 date=str(row.get("study_date") or ""), time=str(row.get("study_time") or ""))
        studies[own].unresolved_rtss.append(res)
    return studies


def _choose_rtss(resolved: list[RtssResolution]) -> RtssResolution:
    """Rule R2: several RTSS resolved to one study -> the newest by StructureSetDate,
    StructureSetTime, then InstanceNumber (then SOP Instance UID); the others are listed in
    the case flags, not merged."""
    return max(resolved, key=lambda r: r.date_key)


def _decide_case(
    study: Study, series: dict[str, SeriesInfo], rules: SequenceRules, include_unannotated: bool,
    case_id: str, input_dir: Path, max_missing_run: int,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    flags: list[str] = []
    if study.date and not valid_dicom_date(study.date):
        flags.append("study_date_malformed")  # kept as written; session order may be wrong
    n_rtss = len(study.rtss) + len(study.unresolved_rtss)
    rtss = _choose_rtss(study.rtss) if study.rtss else None
    if n_rtss > 1:
        flags.append("several_rtss_newest_used")
    if rtss is not None:
        flags += rtss.flags

    referenced: set[str] = set()
    if rtss is not None and rtss.target_series:
        referenced.add(rtss.target_series)

    classes = apply_acquisition_order({
        uid: classify_series(series[uid].header, rules, rtss_referenced=uid in referenced)
        for uid in study.series_uids if series[uid].is_image and series[uid].modality in ("MR", None)
    }, {uid: series[uid].header for uid in study.series_uids})
    candidates: dict[str, list[dict[str, Any]]] = {"T1C": [], "T1": [], "T2": []}
    for uid, cls in classes.items():
        info = series[uid]
        if cls.label in candidates and info.unusable_reason is None:
            candidates[cls.label].append({
                "series_instance_uid": uid, "rtss_referenced": uid in referenced,
                "image_orientation_patient": info.iop, "n_instances": len(info.files),
                "series_number": info.series_number,
            })
    chosen: dict[str, tuple[str | None, str | None]] = {}
    for role in ("T1C", "T1", "T2"):
        pick, reason = choose_series(candidates[role], role)
        chosen[role] = (pick["series_instance_uid"] if pick else None, reason)
    t1c_uid = chosen["T1C"][0]
    if (rtss is not None and rtss.match_method == "geometry" and rtss.target_series is None and t1c_uid
            and t1c_uid in rtss.geometry_candidates):
        rtss.target_series = t1c_uid

    status_reason = _exclusion_reason(study, rtss, series, classes, t1c_uid, include_unannotated, flags, max_missing_run)
    status = "excluded" if status_reason else "ok"

    case: dict[str, Any] = {
        "case_id": case_id, "study_instance_uid": study.uid, "study_date": study.date or None,
        "study_time": study.time or None, "status": status, "status_reason": status_reason,
        # the RTSS used, or (excluded) the one that could not be matched
        "match_method": rtss.match_method if rtss else None,
        "rtss_file": rtss.path if rtss else (study.unresolved_rtss[0].path if study.unresolved_rtss else None),
        "rtss_sop_instance_uid": rtss.sop_uid if rtss else (
            study.unresolved_rtss[0].sop_uid if study.unresolved_rtss else None),
        "n_rtss": n_rtss,
        "t1c_series_instance_uid": t1c_uid, "t1_series_instance_uid": chosen["T1"][0],
        "t2_series_instance_uid": chosen["T2"][0], "flags": flags,
    }
    role_of = {uid: role for role, (uid, _) in chosen.items() if uid}
    rows = []
    for uid in study.series_uids:
        info = series[uid]
        series_role = role_of.get(uid) if status == "ok" else None
        selection = chosen[series_role][1] if series_role else None
        rows.append(_series_row(info, case_id, classes.get(uid), series_role, selection,
                                rtss.match_method if (rtss and series_role == "T1C") else None,
                                referenced=uid in referenced))
    for res in study.rtss + study.unresolved_rtss:
        rows.append(_rtss_series_row(res, case_id, study.uid, chosen_rtss=res is rtss))
    # one row per SeriesInstanceUID: several RTSS files of one RTSS series collapse
    rows = list({r["series_instance_uid"]: r for r in sorted(rows, key=lambda r: not r.get("role"))}.values())

    plan = None
    if status == "ok":
        plan = {
            "schema_version": SCHEMA_VERSION, "case_id": case_id, "subject": None, "session": None, "patient_id": study.patient_id,
            "study_instance_uid": study.uid, "input_dir": str(Path(input_dir).resolve()),
            "series": {role: _plan_series(series[uid], classes[uid]) if uid else None
                       for role, (uid, _) in chosen.items()},
            "rtss": ({"file": rtss.path, "sop_instance_uid": rtss.sop_uid, "match_method": rtss.match_method}
                     if rtss else None),
            "flags": sorted(set(flags)),
        }
    case["flags"] = sorted(set(flags))
    return case, plan, rows


def _exclusion_reason(
    study: Study, rtss: RtssResolution | None, series: dict[str, SeriesInfo], classes: dict[str, Any],
    t1c_uid: str | None, include_unannotated: bool, flags: list[str], max_missing_run: int,
) -> str | None:
    """Rules C1-C6, in this order; the first that applies is the reason."""
    if rtss is None:
        if study.unresolved_rtss:  # C1: an RTSS whose images are not there
            failure = study.unresolved_rtss[0].failure
            return f"{REASON_NO_T1C}; {failure}" if t1c_uid is None and study.series_uids else failure
        if not include_unannotated:  # C2
            return REASON_NO_RTSS
        flags.append("unannotated")
    if t1c_uid is None:  # C3
        spoilt = [series[u].unusable_reason for u in study.series_uids
                  if series[u].unusable_reason and classes.get(u) and classes[u].label == "T1C"]
        if spoilt:
            return f"{REASON_NO_T1C}: {spoilt[0]}"
        if rtss is not None and rtss.target_series and rtss.target_series in classes:
            cls = classes[rtss.target_series]
            return (f"{REASON_NO_T1C} (the RT Structure Set was drawn on "
                    f"'{series[rtss.target_series].description}', classified {cls.label})")
        return REASON_NO_T1C
    t1c = series[t1c_uid]
    if rtss is not None and rtss.target_series and series[rtss.target_series].unusable_reason:  # C4
        return series[rtss.target_series].unusable_reason
    if rtss is not None and rtss.missing_refs:  # C5: partial references
        inside = _contours_within_series(t1c, rtss.points)
        # the bids stage interpolates up to max_missing_run missing planes (contours on
        # them are kept); longer gaps, or contours outside the series, cannot be placed
        too_long = t1c.longest_missing_run > max_missing_run or "irregular_slice_spacing" in t1c.flags
        if rtss.target_series != t1c_uid or too_long or not inside:
            return (f"{rtss.missing_refs} of the {rtss.n_refs} images the RT Structure Set was drawn on are "
                    "missing and the post-contrast T1 series is incomplete where the contours lie")
    if rtss is not None and rtss.target_series and rtss.target_series != t1c_uid:  # C6
        flags.append("rtss_drawn_on_other_series_than_t1c")
    for flag in t1c.flags:
        flags.append(f"t1c_{flag}")
    return None


def _contours_within_series(info: SeriesInfo, points: np.ndarray | None) -> bool:
    if points is None or len(points) == 0 or info.slice_positions is None or info.normal is None:
        return True
    along = points @ info.normal
    half = (info.slice_spacing or 0.0) / 2
    return bool(np.all(along >= info.slice_positions[0] - half) and np.all(along <= info.slice_positions[-1] + half))


def _plan_series(info: SeriesInfo, cls: Any) -> dict[str, Any]:
    return {
        "series_instance_uid": info.uid, "series_description": info.description,
        "files": sorted(info.files), "sequence_source": cls.source, "flags": sorted(set(info.flags)),
    }


SERIES_COLUMNS = [
    "case_id", "patient_id", "study_instance_uid", "series_instance_uid", "series_number", "modality",
    "series_description", "sequence", "sequence_source", "sequence_rule", "sequence_flags",
    "n_instances", "rows", "columns", "pixel_spacing_row_mm", "pixel_spacing_col_mm",
    "slice_thickness_mm", "slice_spacing_mm", "orientation", "frame_of_reference_uid",
    "rtss_referenced", "role", "selection_reason", "match_method", "flags", "usable", "nifti",
    "manufacturer", "manufacturer_model_name", "magnetic_field_strength_t",
]
CASE_COLUMNS = [
    "case_id", "patient_id", "subject", "session", "study_instance_uid", "study_date", "study_time",
    "status", "status_reason", "match_method", "rtss_file", "rtss_sop_instance_uid", "n_rtss",
    "t1c_series_instance_uid", "t1_series_instance_uid", "t2_series_instance_uid", "flags",
]


def _series_row(
    info: SeriesInfo, case_id: str | None, cls: Any, role: str | None, reason: str | None,
    match_method: str | None, referenced: bool = False,
) -> dict[str, Any]:
    sequence = cls.label if cls else ("OTHER" if info.is_image else info.modality)
    return {
        "case_id": case_id, "patient_id": info.patient_id, "study_instance_uid": info.study_uid,
        "series_instance_uid": info.uid, "series_number": info.series_number, "modality": info.modality,
        "series_description": info.description, "sequence": sequence,
        "sequence_source": cls.source if cls else "modality", "sequence_rule": cls.rule_id if cls else None,
        "sequence_flags": list(cls.flags) if cls else [],
        "sequence_confidence": cls.confidence if cls else None, "sequence_why": cls.why if cls else None,
        "n_instances": len(info.files),
        "rows": info.rows, "columns": info.columns,
        "pixel_spacing_row_mm": info.pixel_spacing[0] if info.pixel_spacing else None,
        "pixel_spacing_col_mm": info.pixel_spacing[1] if info.pixel_spacing else None,
        "slice_thickness_mm": info.slice_thickness, "slice_spacing_mm": info.slice_spacing,
        "orientation": _orientation_name(info.normal), "frame_of_reference_uid": info.frame_of_reference_uid,
        "rtss_referenced": referenced, "role": role, "selection_reason": reason, "match_method": match_method,
        "flags": sorted(set(info.flags)), "usable": info.unusable_reason is None, "nifti": None,
        **{key: _header_value(info, key) for key in _SCANNER_KEYS},
    }


_SCANNER_KEYS = ("manufacturer", "manufacturer_model_name", "magnetic_field_strength_t")


def _header_value(info: SeriesInfo, key: str) -> Any:
    value = info.header.get(key)
    return value if _filled(value) else None


def _rtss_series_row(res: RtssResolution, case_id: str, study_uid: str, chosen_rtss: bool) -> dict[str, Any]:
    return {
        "case_id": case_id, "patient_id": res.patient_id, "study_instance_uid": res.own_study_uid or study_uid,
        "series_instance_uid": res.series_uid or f"rtss:{res.sop_uid}", "series_number": None,
        "modality": "RTSTRUCT", "series_description": None, "sequence": "RTSTRUCT", "sequence_source": "modality",
        "sequence_rule": None, "sequence_flags": [], "sequence_confidence": None, "sequence_why": None,
        "n_instances": 1, "rows": None, "columns": None,
        "pixel_spacing_row_mm": None, "pixel_spacing_col_mm": None, "slice_thickness_mm": None,
        "slice_spacing_mm": None, "orientation": None, "frame_of_reference_uid": None,
        "rtss_referenced": False, "role": "RTSS" if chosen_rtss else None,
        "selection_reason": "newest RT Structure Set of the study" if chosen_rtss else None,
        "match_method": res.match_method, "flags": sorted(set(res.flags)),
        "usable": res.failure is None, "nifti": None, **dict.fromkeys(_SCANNER_KEYS),
    }
