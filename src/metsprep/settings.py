"""Each stage's settings as a typed object, built from the validated config.

The JSON schema (`config/schema.yaml`) checks values at start-up; these classes make the
same sections typed inside the library and reject any key they do not read, so a key
in the schema that no stage uses is caught by `tests/test_config.py`. Every key of a
section is a field of its class; `threads` of `register` is Snakemake's and is the one
key a class drops (named in `SNAKEMAKE_ONLY_KEYS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T", bound="StageSettings")

#: Keys the workflow reads (rule resources), not the library.
SNAKEMAKE_ONLY_KEYS = {
    "register": ("threads",),
    "scan": ("shards",),
    "splits": ("frozen",),  # a rule input (the split ledger's frozen file)
    "export": ("nnunet", "monai"),  # which export rules are targets
}


class StageSettings:
    """Mixin: build a frozen settings dataclass from its config section, strictly."""

    section: str = ""

    @classmethod
    def from_config(cls: type[T], config: Mapping[str, Any] | None) -> T:
        values = dict(config or {})
        for key in SNAKEMAKE_ONLY_KEYS.get(cls.section, ()):
            values.pop(key, None)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.section} settings: {unknown}")
        for key, value in values.items():
            if isinstance(value, list):
                values[key] = tuple(value)
            elif isinstance(value, dict):
                values[key] = dict(value)
        return cls(**values)

    def to_config(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]


@dataclass(frozen=True)
class MatchSettings(StageSettings):
    section = "match"
    include_unannotated: bool = False
    sequence_rules: str = ""  # empty: the packaged table
    sequence_lexicon: str = ""  # empty: the packaged token lexicon
    sequence_overrides: dict[str, str] = field(default_factory=dict)
    geometry_tolerance_mm: float = 0.2
    # The bids stage's `max_missing_run` (the workflow passes it in): a T1C whose gaps the
    # bids stage will interpolate is not excluded for images the RTSS references there.
    max_missing_run: int = 1


@dataclass(frozen=True)
class BidsSettings(StageSettings):
    section = "bids"
    # Most consecutive missing slice planes interpolated; more excludes the series.
    max_missing_run: int = 1


@dataclass(frozen=True)
class RtssSettings(StageSettings):
    section = "rtss"
    non_lesion_prefix: str = "*"
    head_mask_names: tuple[str, ...] = ("SKULL",)

    def is_head_structure(self, roi_name: str) -> bool:
        name = roi_name.upper()
        return roi_name.startswith(self.non_lesion_prefix) and any(p.upper() in name for p in self.head_mask_names)


@dataclass(frozen=True)
class LocationSettings(StageSettings):
    section = "location"
    vocabulary: str = ""  # empty: the packaged vocabulary


@dataclass(frozen=True)
class RegistrationSettings(StageSettings):
    """Everything that decides a registration's result; see docs/registration.md."""

    section = "register"
    number_of_histogram_bins: int = 32
    # Pyramid: working in-plane spacing (mm) of each level, coarse to fine; an axis coarser
    # than a level's target (thick slices) is not binned.
    levels_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    # random metric samples at each level (inside the fixed head mask, if used): few where the
    # images are coarse, many at the finest level, where sampling noise limits the accuracy
    samples_per_level: tuple[int, ...] = (4000, 8000, 20000)
    seed: int = 20240611
    head_masks: str = "none"  # restrict the metric by head masks on: none | fixed | both
    start_rotation_deg: float = 10.0  # rotated starts at the coarsest level (0: identity and centroid only)
    learning_rate: float = 1.0  # first step at the finest level, mm; scaled with the level's spacing
    min_step: float = 0.002  # at the finest level, mm; scaled with the square of the level's spacing
    relaxation_factor: float = 0.7
    gradient_tolerance: float = 1e-6
    max_iterations: int = 200  # per level
    # The independent check: a second registration from a start moved by this much.
    check_rotation_deg: float = 3.0
    check_translation_mm: float = 4.0
    check_levels: int = 2  # how many of the finest pyramid levels the check runs again
    max_disagreement_mm: float = 1.0
    # Starts this many moving slice spacings up and down its slice axis, each optimised at the
    # second-finest level; one with a better metric there goes on through the finest (0: off).
    slice_shift_starts: int = 1
    # QC bounds: a result beyond them is flagged (kept, not excluded).
    max_rotation_deg: float = 15.0
    max_translation_mm: float = 25.0
    # Mattes MI (nats, sign flipped back) below which the images are deemed not aligned.
    min_mutual_information: float = 0.1

    def __post_init__(self) -> None:
        if not self.levels_mm or any(b > a for a, b in zip(self.levels_mm, self.levels_mm[1:])):
            raise ValueError("levels_mm must list at least one level, coarse to fine")
        if len(self.samples_per_level) != len(self.levels_mm):
            raise ValueError("samples_per_level needs one entry per level of levels_mm")


@dataclass(frozen=True)
class StandardSpaceSettings(StageSettings):
    """The affine fit of the MNI template to each T1C; see docs/standard_space.md."""

    section = "standard_space"
    number_of_histogram_bins: int = 32
    levels_mm: tuple[float, ...] = (8.0, 4.0, 2.0)  # similarity at all but the last, affine at the last
    samples_per_level: tuple[int, ...] = (4000, 8000, 16000)
    # the T1C divided by its smooth trend in the head before the fit (0: off)
    flatten_sigma_mm: float = 20.0
    seed: int = 20261202
    learning_rate: float = 1.0  # first step, in units of the level's spacing
    min_step: float = 0.002  # in units of the level's spacing
    relaxation_factor: float = 0.7
    max_iterations: int = 200  # per level
    # The independent check: the affine level again from a start moved by this much.
    check_rotation_deg: float = 3.0
    check_translation_mm: float = 4.0
    check_scale_change: float = 0.03
    max_disagreement_mm: float = 2.0
    # Singular values of the fitted linear part outside this range are flagged.
    scale_range: tuple[float, float] = (0.75, 1.35)

    def __post_init__(self) -> None:
        if len(self.levels_mm) < 2 or any(b > a for a, b in zip(self.levels_mm, self.levels_mm[1:])):
            raise ValueError("levels_mm must list at least two levels, coarse to fine")
        if len(self.samples_per_level) != len(self.levels_mm):
            raise ValueError("samples_per_level needs one entry per level of levels_mm")


@dataclass(frozen=True)
class LongitudinalSettings(StageSettings):
    """Lesion tracking across a patient's sessions; see docs/longitudinal.md."""

    section = "longitudinal"
    # Bounds of the session-to-first-session registration (frames of reference differ).
    max_rotation_deg: float = 30.0
    max_translation_mm: float = 150.0
    # Matching: centroid distance limit (or overlapping equivalent spheres) and the cost
    # bonus for agreeing ROI names.
    max_distance_mm: float = 10.0
    name_bonus: float = 0.2
    # Per-lesion status: smallest diameter change that counts (mm); a new lesion this large
    # (longest axial diameter) is progression.
    min_change_mm: float = 2.0
    new_lesion_min_mm: float = 5.0


#: Attributes a de-identified collection must not carry filled (DICOM PS3.15 Basic Profile
#: items that are not needed by the pipeline).
DEID_MUST_BE_EMPTY = (
    "OtherPatientIDs", "OtherPatientNames", "OtherPatientIDsSequence", "PatientBirthName", "PatientMotherBirthName",
    "PatientAddress", "PatientTelephoneNumbers", "MilitaryRank", "MedicalRecordLocator", "Occupation",
    "AdditionalPatientHistory", "PatientComments", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber", "OperatorsName", "ReferringPhysicianName",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord", "PerformingPhysicianName", "RequestingPhysician", "ScheduledPerformingPhysicianName",
    "AccessionNumber", "AdmittingDiagnosesDescription", "AdmissionID", "IssuerOfAdmissionID",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "RequestAttributesSequence",
    "ReviewerName", "ContentCreatorName", "PersonName",
)


@dataclass(frozen=True)
class DeidSettings(StageSettings):
    """The collection's de-identification profile that the audit checks (metsprep.deid)."""

    section = "deid"
    # Patient's Name allowed: empty, the Patient ID, or "<Patient ID>_Name" by default
    patient_name_pattern: str = "({patient_id}(_Name)?)?"
    generalised_year: str = "1901"  # every date (Birth Date included) lies in this year, or is empty
    must_be_empty: tuple[str, ...] = DEID_MUST_BE_EMPTY


@dataclass(frozen=True)
class SplitSettings(StageSettings):
    """Patient-level sets and folds (metsprep.splits)."""

    section = "splits"
    n_folds: int = 5
    test_fraction: float = 0.2
    seed: int = 20261201
    # Lower edges of the lesion-count bins after the first (1, 2, 4, 10: bins 0, 1, 2-3, 4-9, >=10).
    lesion_count_bins: tuple[int, ...] = (1, 2, 4, 10)
    # Edges of the total-lesion-volume bins in mm3 (bins <500, 500-2000, 2000-10000, >=10000).
    volume_bins_mm3: tuple[float, ...] = (500.0, 2000.0, 10000.0)
    stratify_by_scanner: bool = True

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ValueError("splits.n_folds must be at least 2 (a fold validates on the others)")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("splits.test_fraction must lie in [0, 1)")
        for name, edges in (("lesion_count_bins", self.lesion_count_bins), ("volume_bins_mm3", self.volume_bins_mm3)):
            if list(edges) != sorted(set(edges)):
                raise ValueError(f"splits.{name} must be increasing")

    @property
    def set_names(self) -> tuple[str, ...]:
        folds = tuple(f"fold{k}" for k in range(self.n_folds))
        return (("test",) if self.test_fraction > 0 else ()) + folds

    def target_fraction(self, set_name: str) -> float:
        if set_name == "test":
            return self.test_fraction
        return (1.0 - self.test_fraction) / self.n_folds


@dataclass(frozen=True)
class ExportSettings(StageSettings):
    """Model-training exports (metsprep.export): which, and what to do with incomplete cases."""

    section = "export"
    dataset_id: int = 501  # nnU-Net's DatasetNNN
    dataset_name: str = "BrainMets"
    labels: str = "binary"  # binary: lesion = 1 | instance: each lesion its own label value
    link: str = "hardlink"  # hardlink | copy: how the export's files relate to the BIDS tree
    missing_channel: str = "exclude"  # exclude the case | zero_fill the channel (listed)
    untrusted_registration: str = "exclude"  # exclude | zero_fill | keep (listed)

    def __post_init__(self) -> None:
        for key, allowed in (("labels", ("binary", "instance")), ("link", ("hardlink", "copy")),
                             ("missing_channel", ("exclude", "zero_fill")),
                             ("untrusted_registration", ("exclude", "zero_fill", "keep"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"export.{key} must be one of {', '.join(allowed)}")
        if not 1 <= self.dataset_id <= 999:
            raise ValueError("export.dataset_id must be a three-digit nnU-Net dataset number (1-999)")

    @property
    def nnunet_dataset(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.dataset_name}"


#: The library's settings class of each config section (the others are the workflow's).
STAGE_SETTINGS: dict[str, type[StageSettings]] = {
    cls.section: cls for cls in (MatchSettings, BidsSettings, RtssSettings, LocationSettings, RegistrationSettings,
                                  StandardSpaceSettings, LongitudinalSettings, DeidSettings, SplitSettings,
                                  ExportSettings)
}
