"""The typed results that stages hand to each other, with a strict JSON round-trip.

Every file under ``work/`` that one stage writes and another reads is one of the frozen
dataclasses below. ``to_json`` writes it; ``from_json`` reads it back and refuses anything
that does not fit exactly: an unknown key, a missing key, a value of the wrong type, or
another ``schema_version``. There are no tolerant fallbacks: a producer that changes its
output breaks its consumer's round-trip test at once, not a column three stages later.

Reading order: the decoder (`decode`), then the plan (match -> every per-case stage), the
bids, rtss and register results, and the case summary (catalog_case -> catalog, qc).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from metsprep.atomic import write_json
from metsprep.frames import Grid

SCHEMA_VERSION = 1
SEQUENCES = ("T1C", "T1", "T2")
MOVING_SEQUENCES = ("T1", "T2")
Status = Literal["ok", "excluded"]

T = TypeVar("T", bound="Contract")


class ContractError(ValueError):
    """A stage file does not fit its contract; the message names the key and why."""


# ----------------------------------------------------------------------------- decoder


def _decode(value: Any, hint: Any, where: str) -> Any:
    """``value`` (parsed JSON) checked against the type ``hint`` and converted to it."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Union or origin is types.UnionType:
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(value, option, where)
            except ContractError as error:
                errors.append(str(error))
        raise ContractError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if origin is Literal:
        if value not in get_args(hint):
            raise ContractError(f"{where}: {value!r} is not one of {get_args(hint)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ContractError(f"{where}: expected a list, got {type(value).__name__}")
        args = get_args(hint)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ContractError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_decode(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_decode(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ContractError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = get_args(hint) or (str, Any)
        return {str(k): _decode(v, item, f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(value, hint, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ContractError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContractError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ContractError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    raise ContractError(f"{where}: no decoder for type {hint!r}")  # a defect in this module


def _decode_dataclass(value: Any, cls: type[Any], where: str) -> Any:
    if not isinstance(value, dict):
        raise ContractError(f"{where}: expected an object for {cls.__name__}, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(value) - set(names))
    missing = [n for n in names if n not in value]
    if unknown:
        raise ContractError(f"{where}: unknown key(s) {unknown} for {cls.__name__}")
    if missing:
        raise ContractError(f"{where}: missing key(s) {missing} for {cls.__name__}")
    return cls(**{n: _decode(value[n], hints[n], f"{where}.{n}") for n in names})


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ContractError(f"non-finite number {value} cannot be written (use null)")
    return value


class Contract:
    """Mixin: strict JSON round-trip for a frozen dataclass."""

    def to_dict(self) -> dict[str, Any]:
        encoded = _encode(self)
        assert isinstance(encoded, dict)
        return encoded

    @classmethod
    def from_dict(cls: type[T], value: Any, where: str | None = None) -> T:
        decoded = _decode_dataclass(value, cls, where or cls.__name__)
        assert isinstance(decoded, cls)
        return decoded

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls: type[T], path: str | Path) -> T:
        path = Path(path)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ContractError(f"{path}: not JSON ({error})") from error
        return cls.from_dict(value, where=str(path))


class Versioned(Contract):
    """A top-level stage file: carries ``schema_version`` and checks it on reading."""

    version: ClassVar[int] = SCHEMA_VERSION
    schema_version: int  # a field of every subclass (annotations of a non-dataclass base are not fields)

    def __post_init__(self) -> None:
        found = self.schema_version
        if found != self.version:
            raise ContractError(
                f"{type(self).__name__} schema_version {found} is not {self.version}: "
                "the file was written by another metsprep version; rerun the stage"
            )


def _check_keys(mapping: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ContractError(f"{what}: unknown key(s) {unknown}, expected some of {list(allowed)}")


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class SeriesPlan(Contract):
    series_instance_uid: str
    series_description: str | None
    files: tuple[str, ...]  # relative to the plan's input_dir, POSIX style
    sequence_source: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class RtssPlan(Contract):
    file: str  # relative to input_dir
    sop_instance_uid: str
    match_method: str


@dataclass(frozen=True)
class CasePlan(Versioned):
    """What the match stage decided for one case: the series and the RTSS to use."""

    schema_version: int
    case_id: str
    subject: str
    session: str
    patient_id: str | None
    study_instance_uid: str
    input_dir: str  # absolute
    series: dict[str, SeriesPlan | None]  # T1C (always), T1, T2
    rtss: RtssPlan | None  # None only for unannotated studies taken in by config
    flags: tuple[str, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_keys(self.series, SEQUENCES, f"plan {self.case_id} series")
        if self.series.get("T1C") is None:
            raise ContractError(f"plan {self.case_id}: a plan always has a T1C series")
        if self.case_id != f"sub-{self.subject}_ses-{self.session}":
            raise ContractError(f"plan case_id {self.case_id!r} does not match its subject and session")


# ----------------------------------------------------------------------------- bids


@dataclass(frozen=True)
class ImageRecord(Contract):
    """One exported NIfTI image and its grid."""

    nifti: str
    sidecar: str
    series_instance_uid: str | None
    shape: tuple[int, int, int]
    ras_from_ijk: tuple[tuple[float, float, float, float], ...]
    slice_positions_mm: tuple[float, ...]  # plane k along the slice normal
    slice_spacing_mm: float
    resampled: bool  # True where a missing plane was interpolated
    notes: tuple[str, ...]
    slice_sop_instance_uids: tuple[str | None, ...] | None  # T1C only: SOP of plane k, None if interpolated

    @property
    def grid(self) -> Grid:
        return Grid.from_ras_from_ijk(self.shape, self.ras_from_ijk)


@dataclass(frozen=True)
class Participant(Contract):
    sex: Literal["M", "F"] | None
    age_years: float | None


@dataclass(frozen=True)
class BidsResult(Versioned):
    schema_version: int
    case_id: str
    subject: str
    session: str
    status: Status
    status_reason: str | None
    flags: tuple[str, ...]
    notes: tuple[str, ...]
    images: dict[str, ImageRecord]
    participant: Participant

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_keys(self.images, SEQUENCES, f"bids result {self.case_id} images")
        if self.status == "ok" and "T1C" not in self.images:
            raise ContractError(f"bids result {self.case_id}: status ok without a T1C image")


# ----------------------------------------------------------------------------- rtss


@dataclass(frozen=True)
class LabelEntry(Contract):
    label: int
    roi_number: int
    roi_name: str


@dataclass(frozen=True)
class RtssOutputs(Contract):
    lesion_labels_nifti: str
    lesion_labels_sidecar: str
    lesion_labels_tsv: str
    lesion_mask_nifti: str
    lesion_mask_sidecar: str
    head_mask_nifti: str | None  # only where a *Skull-type structure exists
    head_mask_sidecar: str | None


@dataclass(frozen=True)
class RtssResult(Versioned):
    schema_version: int
    case_id: str
    status: Status
    status_reason: str | None
    flags: tuple[str, ...]
    rasterization_rule: str
    label_rule: str
    overlap_rule: str
    labels: tuple[LabelEntry, ...]
    outputs: RtssOutputs | None  # None when excluded


# ----------------------------------------------------------------------------- register


@dataclass(frozen=True)
class RegistrationRecord(Contract):
    """One moving series onto the T1C. ``missing``: no transform (``reason`` says why)."""

    missing: bool
    reason: str | None
    flag: str | None  # why the result may be wrong (kept; a person should look)
    transform: str | None
    image: str | None
    sidecar: str | None
    metric: str | None
    metric_before: float | None
    metric_after: float | None
    iterations: int | None
    iterations_per_level: tuple[int, ...]
    stop_condition: str | None
    converged: bool | None
    rotation_deg: float | None  # total rotation angle (axis-angle)
    rotation_xyz_deg: tuple[float, float, float] | None
    translation_mm: float | None  # displacement at the rotation centre
    translation_xyz_mm: tuple[float, float, float] | None
    center_lps: tuple[float, float, float] | None
    seconds: float | None
    check_disagreement_mm: float | None  # vs a second registration from a perturbed start

    @classmethod
    def missing_because(cls, reason: str) -> RegistrationRecord:
        return cls(
            missing=True, reason=reason, flag=None, transform=None, image=None, sidecar=None,
            metric=None, metric_before=None, metric_after=None, iterations=None,
            iterations_per_level=(), stop_condition=None, converged=None, rotation_deg=None,
            rotation_xyz_deg=None, translation_mm=None, translation_xyz_mm=None,
            center_lps=None, seconds=None, check_disagreement_mm=None,
        )  # fmt: skip


@dataclass(frozen=True)
class RegisterResult(Versioned):
    schema_version: int
    case_id: str
    status: Status
    status_reason: str | None
    flags: tuple[str, ...]
    registrations: dict[str, RegistrationRecord | None]  # T1, T2; None: the case has no such series

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_keys(self.registrations, MOVING_SEQUENCES, f"register result {self.case_id}")

    def usable(self, sequence: str) -> RegistrationRecord | None:
        record = self.registrations.get(sequence)
        return record if record is not None and not record.missing else None


AffineRows = tuple[tuple[float, float, float, float], ...]


def affine_rows(matrix: Any) -> AffineRows:
    """The top three rows of a 4x4 affine, as a contract stores it."""
    return tuple((float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in list(matrix)[:3])


@dataclass(frozen=True)
class StandardSpaceResult(Versioned):
    """One case's T1C fitted to the MNI template (``metsprep.standard_space``)."""

    schema_version: int
    case_id: str
    status: Status
    status_reason: str | None
    template: str
    fitted: bool
    reason: str | None  # why there is no fit (the case may still be ok)
    flag: str | None  # why the fit may be wrong (kept; a person should look)
    trusted: bool
    transform: str | None  # the file that resamples the T1C into MNI space
    brain_mask: str | None
    mni_lps_from_t1c_lps: AffineRows | None  # the top 3 rows
    scales: tuple[float, float, float] | None
    metric_start: float | None
    metric_after: float | None
    check_disagreement_mm: float | None
    brain_volume_ml: float | None
    seconds: float | None

    @classmethod
    def not_fitted(cls, case_id: str, status: Status, status_reason: str | None, reason: str | None) -> StandardSpaceResult:
        return cls(
            schema_version=SCHEMA_VERSION, case_id=case_id, status=status, status_reason=status_reason,
            template="MNI152NLin2009aSym", fitted=False, reason=reason, flag=None, trusted=False, transform=None,
            brain_mask=None, mni_lps_from_t1c_lps=None, scales=None, metric_start=None, metric_after=None,
            check_disagreement_mm=None, brain_volume_ml=None, seconds=None,
        )  # fmt: skip

    def matrix(self) -> Any:
        """The 4x4 ``mni_lps_from_t1c_lps`` as a numpy array, or None without a fit."""
        import numpy as np

        if self.mni_lps_from_t1c_lps is None:
            return None
        return np.vstack([np.array(self.mni_lps_from_t1c_lps, dtype=float), [0.0, 0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class SessionRegistrationResult(Versioned):
    """A later session's T1C registered to the patient's first ok session (``metsprep.longitudinal``)."""

    schema_version: int
    case_id: str
    baseline_case_id: str | None
    registered: bool
    reason: str | None  # why there is no registration
    flag: str | None  # why it may be wrong (kept; a person should look)
    trusted: bool
    baseline_lps_from_session_lps: AffineRows | None  # the top 3 rows
    check_disagreement_mm: float | None
    rotation_deg: float | None
    seconds: float | None

    @classmethod
    def none(cls, case_id: str, baseline_case_id: str | None, reason: str | None) -> SessionRegistrationResult:
        return cls(
            schema_version=SCHEMA_VERSION, case_id=case_id, baseline_case_id=baseline_case_id, registered=False,
            reason=reason, flag=None, trusted=False, baseline_lps_from_session_lps=None, check_disagreement_mm=None,
            rotation_deg=None, seconds=None,
        )  # fmt: skip

    def matrix(self) -> Any:
        import numpy as np

        if self.baseline_lps_from_session_lps is None:
            return None
        return np.vstack([np.array(self.baseline_lps_from_session_lps, dtype=float), [0.0, 0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- case summary


@dataclass(frozen=True)
class CaseSummary(Versioned):
    """One case's row of ``catalog/cases.parquet`` (``row``: column name -> value, checked
    against the table's columns by the catalog) and the native NIfTI of each series."""

    schema_version: int
    case_id: str
    status: Status
    row: dict[str, Any]
    series_nifti: dict[str, str]  # SeriesInstanceUID -> native NIfTI
    # SeriesInstanceUID -> the image check's columns of series.parquet (metsprep.image_check)
    series_checks: dict[str, Any]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.row.get("case_id") != self.case_id or self.row.get("status") != self.status:
            raise ContractError(f"case summary {self.case_id}: row disagrees with case_id/status")
