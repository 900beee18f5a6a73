"""Where a lesion is: hemisphere and region from its ROI name and from the image geometry.

Two independent sources:

1. The ROI name, read through the ordered vocabulary `metsprep/data/location_vocabulary.yaml`
   (`read_vocabulary`, `location_from_name`); the YAML file documents the rules.
2. The geometry: the brain's midsagittal plane estimated from the head mask
   (`midsagittal_plane`) and the signed distance of the lesion centroid to that plane
   (`hemisphere_from_distance`).

   The plane passes through the head mask's centroid. Its normal is the principal axis
   of the head mask's voxel coordinates (LPS mm) that is closest to the patient's
   left-right axis: a head is close to mirror-symmetric, and the normal of a plane of
   mirror symmetry of a solid is always one of its principal axes, so this follows a
   head that is shifted or rotated in the field of view (not the image centre, not the
   scanner x axis). The normal is oriented to patient LEFT (+x in LPS), so a positive
   distance means left.

`combine` merges both into the catalog's `hemisphere`, `region`, `location_source` and
`location_flag`: the name wins where it says something, the geometry fills in where the
name is silent, and a disagreement between the two is flagged, not resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metsprep.frames import apply_affine

UNKNOWN = "unknown"
MIDLINE = "midline"


# ---------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class RegionEntry:
    region: str
    subregion: str
    tokens: frozenset[str]
    prefixes: tuple[str, ...]
    phrases: tuple[str, ...]
    midline_structure: bool

    def matches(self, tokens: list[str], joined: str) -> bool:
        if any(t in self.tokens or (self.prefixes and t.startswith(self.prefixes)) for t in tokens):
            return True
        return any(f" {p} " in joined for p in self.phrases)


@dataclass(frozen=True)
class Vocabulary:
    sides: tuple[tuple[str, frozenset[str]], ...]  # (hemisphere, tokens), in order
    regions: tuple[RegionEntry, ...]
    midline_margin_mm: float = 3.0
    midline_structure_halfwidth_mm: float = 15.0


def read_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """The ROI-name vocabulary: the packaged one, or the file ``path`` (config)."""
    import yaml

    from metsprep import data as package_data

    data = yaml.safe_load(package_data.read_text(package_data.LOCATION_VOCABULARY, path))
    return vocabulary_from_dict(data)


def vocabulary_from_dict(data: dict[str, Any]) -> Vocabulary:
    sides = tuple((str(s["hemisphere"]), frozenset(str(t).lower() for t in s.get("tokens", []))) for s in data["sides"])
    regions = tuple(
        RegionEntry(
            region=str(r["region"]),
            subregion=str(r.get("subregion") or r["region"]),
            tokens=frozenset(str(t).lower() for t in r.get("tokens", [])),
            prefixes=tuple(str(p).lower() for p in r.get("prefixes", [])),
            phrases=tuple(str(p).lower() for p in r.get("phrases", [])),
            midline_structure=bool(r.get("midline_structure", False)),
        )
        for r in data["regions"]
    )
    geometry = data.get("geometry") or {}
    return Vocabulary(
        sides=sides,
        regions=regions,
        midline_margin_mm=float(geometry.get("midline_margin_mm", 3.0)),
        midline_structure_halfwidth_mm=float(geometry.get("midline_structure_halfwidth_mm", 15.0)),
    )


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])")


def name_tokens(roi_name: str | None) -> list[str]:
    """Lower-case tokens of a ROI name: split at non-alphanumerics, camelCase and letter/digit."""
    if not roi_name:
        return []
    spaced = _CAMEL.sub(" ", roi_name)
    return [t for t in re.split(r"[^0-9A-Za-z]+", spaced.lower()) if t]


@dataclass(frozen=True)
class NameLocation:
    hemisphere: str  # L | R | midline | unknown
    region: str  # region of the vocabulary or unknown
    subregion: str | None
    flags: tuple[str, ...] = ()
    midline_structure: bool = False


def location_from_name(roi_name: str | None, vocabulary: Vocabulary) -> NameLocation:
    tokens = name_tokens(roi_name)
    joined = " " + " ".join(tokens) + " "
    flags: list[str] = []
    found = {hemi for hemi, side_tokens in vocabulary.sides if any(t in side_tokens for t in tokens)}
    lateral = found & {"L", "R"}
    region_entry = next((r for r in vocabulary.regions if r.matches(tokens, joined)), None)
    if len(lateral) > 1:
        hemisphere = UNKNOWN
        flags.append("name_names_both_sides")
    elif lateral:
        hemisphere = lateral.pop()
    elif MIDLINE in found or (region_entry is not None and region_entry.midline_structure):
        hemisphere = MIDLINE
    else:
        hemisphere = UNKNOWN
    return NameLocation(
        hemisphere=hemisphere,
        region=region_entry.region if region_entry else UNKNOWN,
        subregion=region_entry.subregion if region_entry else None,
        flags=tuple(flags),
        midline_structure=bool(region_entry and region_entry.midline_structure),
    )


# ---------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class MidsagittalPlane:
    """Plane through `point_lps` with unit normal `normal_lps` pointing to patient left."""

    point_lps: np.ndarray
    normal_lps: np.ndarray
    source: str  # "head_mask" | "t1c_foreground"

    def signed_distance_mm(self, points_lps: np.ndarray) -> np.ndarray:
        """Positive on the patient's left, negative on the right."""
        return (np.atleast_2d(points_lps) - self.point_lps) @ self.normal_lps

    @property
    def tilt_deg(self) -> float:
        """Angle between the plane normal and the LPS x axis."""
        return float(np.degrees(np.arccos(np.clip(abs(self.normal_lps[0]), -1.0, 1.0))))


def midsagittal_plane(
    mask: np.ndarray, lps_from_ijk: np.ndarray, source: str = "head_mask", max_points: int = 200_000
) -> MidsagittalPlane | None:
    """The plane of left-right symmetry of a head mask (see the module docstring).

    Returns None for an empty mask. Large masks are subsampled on a regular voxel stride
    (the centroid and covariance of a solid do not need every voxel).
    """
    ijk = np.argwhere(mask)
    if len(ijk) < 10:
        return None
    stride = max(1, int(np.ceil(len(ijk) / max_points)))
    ijk = ijk[::stride].astype(np.float64)
    lps = apply_affine(lps_from_ijk, ijk)
    centroid = lps.mean(axis=0)
    covariance = np.cov((lps - centroid).T)
    _, axes = np.linalg.eigh(covariance)  # columns are the principal axes
    lr = int(np.argmax(np.abs(axes[0, :])))  # the axis most aligned with LPS x
    normal = axes[:, lr]
    if normal[0] < 0:
        normal = -normal
    return MidsagittalPlane(point_lps=centroid, normal_lps=normal / np.linalg.norm(normal), source=source)


def hemisphere_from_distance(distance_mm: float | None, margin_mm: float) -> str:
    """L (positive, patient left), R, midline (|d| < margin) or unknown (no plane)."""
    if distance_mm is None or not np.isfinite(distance_mm):
        return UNKNOWN
    if abs(distance_mm) < margin_mm:
        return MIDLINE
    return "L" if distance_mm > 0 else "R"


# ---------------------------------------------------------------------------- both


@dataclass(frozen=True)
class Location:
    hemisphere: str
    region: str
    subregion: str | None
    hemisphere_name: str
    hemisphere_geometry: str
    region_name: str
    region_geometry: str
    location_source: str  # name | geometry | name+geometry | none
    location_flag: str | None
    midsagittal_distance_mm: float | None
    flags: tuple[str, ...] = field(default=())


def combine(
    name: NameLocation, distance_mm: float | None, vocabulary: Vocabulary, region_geometry: str = UNKNOWN
) -> Location:
    """The catalog's location of one lesion from its name reading and its plane distance."""
    geometry = hemisphere_from_distance(distance_mm, vocabulary.midline_margin_mm)
    flag = _disagreement(name, geometry, distance_mm, vocabulary)
    hemisphere = name.hemisphere if name.hemisphere != UNKNOWN else geometry
    region = name.region if name.region != UNKNOWN else region_geometry
    source = _source(name, geometry, region_geometry, flag)
    flags = tuple(name.flags) + ((flag,) if flag else ())
    return Location(
        hemisphere=hemisphere,
        region=region,
        subregion=name.subregion,
        hemisphere_name=name.hemisphere,
        hemisphere_geometry=geometry,
        region_name=name.region,
        region_geometry=region_geometry,
        location_source=source,
        location_flag="; ".join(flags) if flags else None,
        midsagittal_distance_mm=None if distance_mm is None else float(distance_mm),
        flags=flags,
    )


def _source(name: NameLocation, geometry: str, region_geometry: str, flag: str | None) -> str:
    """Which reading the final hemisphere/region came from."""
    name_used = name.hemisphere != UNKNOWN or name.region != UNKNOWN
    if name.hemisphere != UNKNOWN:
        # geometry confirms the name's side, or is absent / disagrees (then flagged)
        geometry_used = geometry != UNKNOWN and flag is None
    else:
        geometry_used = geometry != UNKNOWN or (name.region == UNKNOWN and region_geometry != UNKNOWN)
    if name_used and geometry_used:
        return "name+geometry"
    return "name" if name_used else "geometry" if geometry_used else "none"


def _disagreement(name: NameLocation, geometry: str, distance_mm: float | None, vocabulary: Vocabulary) -> str | None:
    if name.hemisphere == UNKNOWN or geometry == UNKNOWN or distance_mm is None:
        return None
    if {name.hemisphere, geometry} == {"L", "R"}:
        return f"hemisphere_name_{name.hemisphere}_geometry_{geometry}"
    if name.hemisphere == MIDLINE and abs(distance_mm) > vocabulary.midline_structure_halfwidth_mm:
        return f"hemisphere_name_midline_geometry_{geometry}"
    return None
