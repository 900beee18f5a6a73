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
SNAKEMAKE_ONLY_KEYS = {"register": ("threads",), "scan": ("shards",)}


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
    sampling_strategy: str = "REGULAR"  # REGULAR | RANDOM | NONE
    sampling_percentage: float = 0.10  # of the fixed grid's voxels, before the head mask
    seed: int = 20240611
    shrink_factors: tuple[int, ...] = (4, 2)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 0.0)
    use_head_mask: bool = True
    optimizer: str = "RegularStepGradientDescent"  # or ConjugateGradientLineSearch, GradientDescent
    learning_rate: float = 2.0  # first step, in mm of the largest physical shift
    min_step: float = 1e-3
    relaxation_factor: float = 0.5
    gradient_tolerance: float = 1e-6
    max_iterations: int = 200
    # QC bounds: a result beyond them is flagged (kept, not excluded).
    max_rotation_deg: float = 10.0
    max_translation_mm: float = 20.0
    # Mattes MI (nats, sign flipped back) below which the images are deemed not aligned.
    min_mutual_information: float = 0.15

    def __post_init__(self) -> None:
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm):
            raise ValueError("shrink_factors and smoothing_sigmas_mm need one entry per level")


#: The library's settings class of each config section (the others are the workflow's).
STAGE_SETTINGS: dict[str, type[StageSettings]] = {
    cls.section: cls for cls in (MatchSettings, BidsSettings, RtssSettings, LocationSettings, RegistrationSettings)
}
