"""The same lesion across a patient's sessions: tracks, per-lesion status, RANO-BM response.

Two steps (docs/longitudinal.md):

1. Per later session (`register_session`): its T1W+C rigidly registered to the T1W+C of the
   patient's first ok session with `metsprep.register` (same method and independent check;
   the motion bounds of `longitudinal` replace the register stage's, since two sessions'
   frames of reference are unrelated). This session is fixed and the first one moving, so
   by ITK's convention the transform maps a point **in this session's T1C LPS** to the same
   anatomy **in the first session's T1C LPS**: this session's lesion centroids go into the
   first session's frame through it.

2. Per patient (`track_patient`), session by session: each lesion with a centroid is
   matched one-to-one (Hungarian, `scipy.optimize.linear_sum_assignment`) to the tracks
   seen so far, at their last-seen position. A pair is admissible when the centroids are at
   most `max_distance_mm` apart or the lesions' equivalent spheres overlap; its cost is the
   distance over `max_distance_mm`, minus the spheres' intersection over union, minus
   `name_bonus` when the ROI names agree (after removing side tokens and suffixes), so a
   name that agrees supports a match and a renamed lesion (`L_parietal` -> `L_par_recurr`)
   is still matched by position. An unmatched lesion starts a new track; a track with no
   lesion at a session has a `gone` row there.

Per-lesion status (longest axial diameter, LD, RANO-BM's measure): `baseline` at the first
session; `new` at a track's first later session; `gone` without a lesion; `growing` when
LD >= 1.2 x the track's smallest earlier LD and at least `min_change_mm` more; `shrinking`
when LD <= 0.7 x its first LD and at least `min_change_mm` less; `stable` otherwise.

Response per session (RANO-BM, Lin et al., Lancet Oncol 2015): target lesions are the
measurable ones (LD >= 10 mm) of the first session, at most 5, largest first; SLD = sum of
their LDs (0 for a gone one). CR: every track gone and none new. PD: SLD >= 1.2 x the
smallest earlier SLD with one target at least 5 mm above its own smallest earlier LD, or a
new lesion of LD >= `new_lesion_min_mm`. PR: SLD <= 0.7 x the first SLD. SD otherwise.
NE: no target lesion at the first session and neither CR nor PD. Steroid use and clinical
status, which RANO-BM also weighs, are not in the data.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from metsprep.contracts import SCHEMA_VERSION, BidsResult, SessionRegistrationResult, affine_rows
from metsprep.frames import apply_affine
from metsprep.settings import LongitudinalSettings, RegistrationSettings

#: RANO-BM thresholds (Lin et al. 2015).
MEASURABLE_MM = 10.0
MAX_TARGETS = 5
PARTIAL_RESPONSE = 0.7  # SLD at most 70 % of baseline (a 30 % decrease)
PROGRESSION = 1.2  # SLD at least 120 % of the nadir (a 20 % increase)
PROGRESSION_ABSOLUTE_MM = 5.0  # and one lesion at least 5 mm larger than its nadir


# ---------------------------------------------------------------- 1. session registration


def register_session(
    bids_json: Path, earlier_bids_jsons: list[Path], output_dir: Path, result_json: Path,
    register: RegistrationSettings, settings: LongitudinalSettings,
) -> None:  # fmt: skip
    """This session's T1C onto the first ok earlier session's T1C; writes the result."""
    import SimpleITK as sitk

    from metsprep.register import affine_of, register_pair

    bids = BidsResult.read(bids_json)
    earlier = sorted((BidsResult.read(p) for p in earlier_bids_jsons), key=lambda b: b.case_id)
    baseline = next((b for b in earlier if b.status == "ok"), None)
    result = SessionRegistrationResult.none(bids.case_id, baseline.case_id if baseline else None, None)
    if bids.status != "ok":
        result = SessionRegistrationResult.none(bids.case_id, None, f"this session is excluded: {bids.status_reason}")
    elif baseline is None:
        result = SessionRegistrationResult.none(bids.case_id, None, "no earlier session of the patient is ok")
    else:
        bounds = replace(register, max_rotation_deg=settings.max_rotation_deg, max_translation_mm=settings.max_translation_mm)
        try:
            fixed = sitk.ReadImage(str(Path(output_dir) / bids.images["T1C"].nifti))
            moving = sitk.ReadImage(str(Path(output_dir) / baseline.images["T1C"].nifti))
            registration = register_pair(fixed, moving, bounds)
        except Exception as error:
            reason = f"registration to {baseline.case_id} failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
            result = SessionRegistrationResult.none(bids.case_id, baseline.case_id, reason)
        else:
            flag = "; ".join(registration.flags) or None
            matrix = affine_of(registration.transform)
            result = SessionRegistrationResult(
                schema_version=SCHEMA_VERSION, case_id=bids.case_id, baseline_case_id=baseline.case_id,
                registered=True, reason=None, flag=flag, trusted=flag is None,
                baseline_lps_from_session_lps=affine_rows(matrix),
                check_disagreement_mm=registration.check_disagreement_mm,
                rotation_deg=registration.rotation_deg["total"], seconds=round(registration.seconds, 3),
            )  # fmt: skip
    result.write(result_json)


# ---------------------------------------------------------------- 2. tracks


_SIDE = re.compile(r"^(l|r|lt|rt|left|right|mid)[_\s-]+", re.IGNORECASE)
_SUFFIX = re.compile(r"([_\s-]+(recurr|recurrence|new|old|\d+|[a-z]))+$", re.IGNORECASE)


def name_key(name: str | None) -> str:
    """An ROI name reduced for comparison: no side token, no recurrence/number suffix."""
    text = (name or "").strip().lower()
    text = _SIDE.sub("", text)
    text = _SUFFIX.sub("", text)
    return text[:3]


def names_agree(a: str | None, b: str | None) -> bool:
    """Same side token (if both have one) and the same site prefix."""
    side_a, side_b = _side(a), _side(b)
    if side_a and side_b and side_a != side_b:
        return False
    return bool(name_key(a)) and name_key(a) == name_key(b)


def _side(name: str | None) -> str | None:
    match = _SIDE.match((name or "").strip())
    return match.group(1).lower()[0] if match else None


def sphere_iou(distance: float, volume_a: float, volume_b: float) -> float:
    """Intersection over union of two spheres of the given volumes, centres ``distance`` apart."""
    ra, rb = ((3.0 * max(v, 0.0) / (4.0 * math.pi)) ** (1 / 3) for v in (volume_a, volume_b))
    d = distance
    if ra <= 0 or rb <= 0 or d >= ra + rb:
        return 0.0
    va, vb = 4 / 3 * math.pi * ra**3, 4 / 3 * math.pi * rb**3
    if d <= abs(ra - rb):
        inter = min(va, vb)
    else:
        inter = math.pi * (ra + rb - d) ** 2 * (d**2 + 2 * d * (ra + rb) - 3 * (ra - rb) ** 2) / (12 * d)
    return inter / (va + vb - inter)


@dataclass
class Lesion:
    case_id: str
    roi_number: int | None
    roi_name: str | None
    position: np.ndarray  # in the first session's T1C LPS mm
    volume_mm3: float
    diameter_mm: float  # longest axial diameter
    doubt: str | None  # why this lesion's row may be wrong


@dataclass
class Track:
    track_id: str
    first_diameter_mm: float
    position: np.ndarray
    volume_mm3: float
    roi_name: str | None
    diameters: list[float] = field(default_factory=list)  # per session since the first, 0 when gone
    gone: bool = False
    target: bool = False


@dataclass(frozen=True)
class Session:
    case_id: str
    session: str
    lesions: list[Lesion]
    doubt: str | None  # why the session's matches may be wrong (registration)
    placed: bool  # False: no registration to the first session, its lesions cannot be matched


def match_session(tracks: list[Track], lesions: list[Lesion], settings: LongitudinalSettings) -> dict[int, tuple[int, float]]:
    """lesion index -> (track index, centroid distance mm): one-to-one, Hungarian."""
    from scipy.optimize import linear_sum_assignment

    if not tracks or not lesions:
        return {}
    inadmissible = 1e6
    cost = np.full((len(lesions), len(tracks)), inadmissible)
    distances = np.zeros_like(cost)
    for i, les in enumerate(lesions):
        for j, track in enumerate(tracks):
            d = float(np.linalg.norm(les.position - track.position))
            overlap = sphere_iou(d, les.volume_mm3, track.volume_mm3)
            distances[i, j] = d
            if d <= settings.max_distance_mm or overlap > 0:
                bonus = settings.name_bonus if names_agree(les.roi_name, track.roi_name) else 0.0
                cost[i, j] = d / settings.max_distance_mm - overlap - bonus
    rows, cols = linear_sum_assignment(cost)
    return {int(i): (int(j), float(distances[i, j])) for i, j in zip(rows, cols, strict=True) if cost[i, j] < inadmissible}


def track_patient(patient_id: str, sessions: list[Session], settings: LongitudinalSettings) -> list[dict[str, Any]]:
    """One row per lesion per session (and per gone track per session) of one patient."""
    tracks: list[Track] = []
    rows: list[dict[str, Any]] = []
    sld_history: list[float] = []
    for index, session in enumerate(sessions):
        session_rows: list[dict[str, Any]] = []
        if not session.placed:
            for les in session.lesions:
                session_rows.append(_row(patient_id, session, les, None, None, None, session.doubt))
            rows.extend(session_rows)
            continue
        matches = match_session(tracks, session.lesions, settings) if index else {}
        seen: set[int] = set()
        new_measurable = False
        for i, les in enumerate(session.lesions):
            if i in matches:
                j, distance = matches[i]
                track = tracks[j]
                status = _status(track, les.diameter_mm, settings)
                change = _changes(track, les)
                track.diameters.append(les.diameter_mm)
                track.position, track.volume_mm3, track.gone = les.position, les.volume_mm3, False
                track.roi_name = les.roi_name
                seen.add(j)
                session_rows.append(_row(patient_id, session, les, track, status, distance, session.doubt, change))
            else:
                track = Track(f"{patient_id}-T{len(tracks) + 1:02d}", les.diameter_mm, les.position, les.volume_mm3,
                              les.roi_name, [les.diameter_mm])  # fmt: skip
                tracks.append(track)
                seen.add(len(tracks) - 1)
                status = "baseline" if index == 0 else "new"
                new_measurable |= index > 0 and les.diameter_mm >= settings.new_lesion_min_mm
                session_rows.append(_row(patient_id, session, les, track, status, None, session.doubt))
        for j, track in enumerate(tracks):
            if j not in seen:
                track.diameters.append(0.0)
                track.gone = True
                session_rows.append(_gone_row(patient_id, session, track))
        if index == 0:
            targets = sorted(tracks, key=lambda t: -t.first_diameter_mm)
            for track in [t for t in targets if t.first_diameter_mm >= MEASURABLE_MM][:MAX_TARGETS]:
                track.target = True
        sld = sum(t.diameters[-1] for t in tracks if t.target)
        response = "baseline" if index == 0 else _response(tracks, sld, sld_history, new_measurable)
        sld_history.append(sld)
        for row in session_rows:
            row.update(session_sum_longest_diameters_mm=sld, response=response)
            row["is_target"] = bool(row["track_id"] and _track(tracks, row["track_id"]).target)
        rows.extend(session_rows)
    return rows


def _track(tracks: list[Track], track_id: str) -> Track:
    return next(t for t in tracks if t.track_id == track_id)


def _status(track: Track, diameter: float, settings: LongitudinalSettings) -> str:
    nadir = min(track.diameters) if track.diameters else track.first_diameter_mm
    if diameter >= PROGRESSION * nadir and diameter - nadir >= settings.min_change_mm:
        return "growing"
    first = track.first_diameter_mm
    if diameter <= PARTIAL_RESPONSE * first and first - diameter >= settings.min_change_mm:
        return "shrinking"
    return "stable"


def _changes(track: Track, les: Lesion) -> dict[str, Any]:
    nadir = min(track.diameters) if track.diameters else track.first_diameter_mm
    return {
        "diameter_change_since_first_mm": les.diameter_mm - track.first_diameter_mm,
        "diameter_change_since_nadir_mm": les.diameter_mm - nadir,
    }


def _response(tracks: list[Track], sld: float, history: list[float], new_measurable: bool) -> str:
    targets = [t for t in tracks if t.target]
    if all(t.gone for t in tracks) and not new_measurable:
        return "CR"
    nadir_sld = min(history)
    grew = any(t.diameters[-1] - min(t.diameters[:-1]) >= PROGRESSION_ABSOLUTE_MM for t in targets if len(t.diameters) > 1)
    if new_measurable or (targets and sld >= PROGRESSION * nadir_sld and grew):
        return "PD"
    if not targets:
        return "NE"
    return "PR" if sld <= PARTIAL_RESPONSE * history[0] else "SD"


def _row(patient_id: str, session: Session, les: Lesion, track: Track | None, status: str | None,
         distance: float | None, doubt: str | None, change: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    doubts = [d for d in (doubt, les.doubt) if d]
    if not session.placed:
        doubts.append("not matched: no registration to the first session")
    return {
        "patient_id": patient_id, "track_id": track.track_id if track else None, "case_id": session.case_id,
        "session": session.session, "roi_number": les.roi_number, "roi_name": les.roi_name, "status": status,
        "volume_mm3": les.volume_mm3, "longest_axial_diameter_mm": les.diameter_mm,
        "first_session_lps_x_mm": float(les.position[0]) if session.placed else None,
        "first_session_lps_y_mm": float(les.position[1]) if session.placed else None,
        "first_session_lps_z_mm": float(les.position[2]) if session.placed else None,
        "match_distance_mm": distance,
        "diameter_change_since_first_mm": (change or {}).get("diameter_change_since_first_mm"),
        "diameter_change_since_nadir_mm": (change or {}).get("diameter_change_since_nadir_mm"),
        "track_flag": "; ".join(doubts) or None,
    }  # fmt: skip


def _gone_row(patient_id: str, session: Session, track: Track) -> dict[str, Any]:
    nadir = min(track.diameters[:-1]) if len(track.diameters) > 1 else track.first_diameter_mm
    return {
        "patient_id": patient_id, "track_id": track.track_id, "case_id": session.case_id, "session": session.session,
        "roi_number": None, "roi_name": None, "status": "gone", "volume_mm3": 0.0, "longest_axial_diameter_mm": 0.0,
        "first_session_lps_x_mm": None, "first_session_lps_y_mm": None, "first_session_lps_z_mm": None,
        "match_distance_mm": None, "diameter_change_since_first_mm": -track.first_diameter_mm,
        "diameter_change_since_nadir_mm": -nadir, "track_flag": session.doubt,
    }  # fmt: skip


# ---------------------------------------------------------------- cohort stage


def lesion_tracks(
    cases_parquet: Path, lesions_parquet: Path, session_jsons: list[Path], out_parquet: Path,
    settings: LongitudinalSettings,
) -> None:  # fmt: skip
    """catalog/lesion_tracks.parquet for every patient with at least two ok sessions."""
    import pyarrow.parquet as pq

    from metsprep.catalog.schemas import LESION_TRACK_COLUMNS, write_table

    cases = pq.ParquetFile(cases_parquet).read(columns=["case_id", "patient_id", "subject", "session", "status"]).to_pylist()
    lesions = pq.ParquetFile(lesions_parquet).read().to_pylist()
    registrations = {r.case_id: r for r in (SessionRegistrationResult.read(p) for p in session_jsons)}
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        if case["status"] == "ok" and case["subject"]:
            by_subject.setdefault(case["subject"], []).append(case)
    rows: list[dict[str, Any]] = []
    for subject, own in sorted(by_subject.items()):
        own.sort(key=lambda c: c["session"])
        if len(own) < 2:
            continue
        sessions = [_session(case, i == 0, lesions, registrations.get(case["case_id"])) for i, case in enumerate(own)]
        rows.extend(track_patient(own[0]["patient_id"] or subject, sessions, settings))
    write_table(rows, LESION_TRACK_COLUMNS, "lesion_tracks", Path(out_parquet))


def _session(case: dict[str, Any], first: bool, lesions: list[dict[str, Any]], registration: SessionRegistrationResult | None) -> Session:
    matrix = np.eye(4) if first else (registration.matrix() if registration is not None else None)
    doubt = None
    if not first:
        if registration is None or not registration.registered:
            doubt = f"no registration to the first session: {registration.reason if registration else 'not run'}"
            matrix = None
        elif not registration.trusted:
            doubt = f"registration to the first session flagged: {registration.flag}"
    own = []
    for row in lesions:
        if row["case_id"] != case["case_id"] or row.get("centroid_lps_x_mm") is None or not row.get("volume_mm3"):
            continue
        centroid = np.array([row[f"centroid_lps_{a}_mm"] for a in "xyz"], dtype=float)
        status = row.get("roi_status") or "ok"
        own.append(Lesion(
            case["case_id"], row.get("roi_number"), row.get("roi_name"),
            apply_affine(matrix, centroid) if matrix is not None else centroid,
            float(row["volume_mm3"]), float(row.get("longest_axial_diameter_mm") or 0.0),
            None if status == "ok" else f"roi_status {status}: {row.get('roi_status_reason')}",
        ))  # fmt: skip
    return Session(case["case_id"], case["session"], own, doubt, matrix is not None)
