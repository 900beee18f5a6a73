"""Where every file of a case goes: BIDS labels, raw and derivative paths below `output_dir`.

All paths are relative to `output_dir`, POSIX style. Labels are BIDS labels
(`[0-9a-zA-Z]+`): every helper checks them, and `safe_join` refuses a path that would
land outside `output_dir`, so a hostile label cannot escape. The match stage makes the
labels (`metsprep.match.sanitize_label`); this module only names files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

SEQUENCES = ("T1C", "T1", "T2")
#: BIDS suffix (with entities) of each sequence's raw image.
RAW_SUFFIX = {"T1C": "ce-gadolinium_T1w", "T1": "T1w", "T2": "T2w"}
#: BIDS suffix of each moving sequence's registered image.
MOVING_SUFFIX = {"T1": "T1w", "T2": "T2w"}
SPACE = "T1wCE"
TEMPLATE_SPACE = "MNI152NLin2009aSym"
DERIVATIVE_NAME = "metsprep"
_LABEL = re.compile(r"^[0-9A-Za-z]+$")
_CASE_ID = re.compile(r"^sub-([0-9A-Za-z]+)_ses-([0-9A-Za-z]+)$")


# ---------------------------------------------------------------------------- labels

def is_valid_label(label: str) -> bool:
    """A BIDS label: letters and digits only (no '-', '_', '/', '.', spaces)."""
    return isinstance(label, str) and bool(_LABEL.match(label))


def check_label(label: str, what: str = "label") -> str:
    if not is_valid_label(label):
        raise ValueError(f"invalid BIDS {what} {label!r}: only letters and digits are allowed")
    return label


def case_id(subject: str, session: str) -> str:
    return f"sub-{check_label(subject, 'subject')}_ses-{check_label(session, 'session')}"


# ---------------------------------------------------------------------------- paths

@dataclass(frozen=True)
class BidsPaths:
    """Paths of one case's files, relative to `output_dir`, POSIX style."""

    subject: str
    session: str
    raw_anat_dir: str
    raw: dict[str, str]  # sequence -> raw NIfTI
    raw_sidecar: dict[str, str]  # sequence -> raw JSON
    derivatives_anat_dir: str
    t1_in_t1c: str
    t2_in_t1c: str
    t1_in_t1c_sidecar: str
    t2_in_t1c_sidecar: str
    t1_to_t1c_transform: str
    t2_to_t1c_transform: str
    lesion_labels: str
    lesion_labels_tsv: str
    lesion_labels_sidecar: str
    lesion_mask: str
    lesion_mask_sidecar: str
    head_mask: str
    head_mask_sidecar: str
    t1c_to_mni_transform: str
    brain_mask: str
    brain_mask_sidecar: str


def bids_paths(subject: str, session: str) -> BidsPaths:
    """All raw and derivative paths of one case (raises ValueError on an invalid label)."""
    sub, ses = check_label(subject, "subject"), check_label(session, "session")
    stem = f"sub-{sub}_ses-{ses}"
    raw_dir = f"bids/sub-{sub}/ses-{ses}/anat"
    der_dir = f"bids/derivatives/{DERIVATIVE_NAME}/sub-{sub}/ses-{ses}/anat"
    space = f"{der_dir}/{stem}_space-{SPACE}"
    return BidsPaths(
        subject=sub,
        session=ses,
        raw_anat_dir=raw_dir,
        raw={seq: f"{raw_dir}/{stem}_{suffix}.nii.gz" for seq, suffix in RAW_SUFFIX.items()},
        raw_sidecar={seq: f"{raw_dir}/{stem}_{suffix}.json" for seq, suffix in RAW_SUFFIX.items()},
        derivatives_anat_dir=der_dir,
        t1_in_t1c=f"{space}_T1w.nii.gz",
        t2_in_t1c=f"{space}_T2w.nii.gz",
        t1_in_t1c_sidecar=f"{space}_T1w.json",
        t2_in_t1c_sidecar=f"{space}_T2w.json",
        t1_to_t1c_transform=f"{der_dir}/{stem}_from-T1w_to-{SPACE}_mode-image_xfm.tfm",
        t2_to_t1c_transform=f"{der_dir}/{stem}_from-T2w_to-{SPACE}_mode-image_xfm.tfm",
        lesion_labels=f"{space}_desc-lesions_dseg.nii.gz",
        lesion_labels_tsv=f"{space}_desc-lesions_dseg.tsv",
        lesion_labels_sidecar=f"{space}_desc-lesions_dseg.json",
        lesion_mask=f"{space}_desc-lesions_mask.nii.gz",
        lesion_mask_sidecar=f"{space}_desc-lesions_mask.json",
        head_mask=f"{space}_desc-head_mask.nii.gz",
        head_mask_sidecar=f"{space}_desc-head_mask.json",
        t1c_to_mni_transform=f"{der_dir}/{stem}_from-{SPACE}_to-{TEMPLATE_SPACE}_mode-image_xfm.tfm",
        brain_mask=f"{space}_desc-brain_mask.nii.gz",
        brain_mask_sidecar=f"{space}_desc-brain_mask.json",
    )


def stage_files(paths: BidsPaths, stage: str) -> set[str]:
    """Every file a per-case stage (bids | rtss | register | standard_space) may write for one case. The set a
    run writes depends on the case (no T2, excluded), so these are not rule outputs; each
    stage removes the ones it did not write this time (`remove_stale`), so a rerun after a
    change never leaves a file of the previous run beside the new catalog."""
    if stage == "bids":
        return set(paths.raw.values()) | set(paths.raw_sidecar.values())
    if stage == "register":
        return {paths.t1_in_t1c, paths.t2_in_t1c, paths.t1_in_t1c_sidecar, paths.t2_in_t1c_sidecar,
                paths.t1_to_t1c_transform, paths.t2_to_t1c_transform}  # fmt: skip
    if stage == "rtss":
        return {paths.lesion_labels, paths.lesion_labels_tsv, paths.lesion_labels_sidecar, paths.lesion_mask,
                paths.lesion_mask_sidecar, paths.head_mask, paths.head_mask_sidecar}  # fmt: skip
    if stage == "standard_space":
        return {paths.t1c_to_mni_transform, paths.brain_mask, paths.brain_mask_sidecar}
    raise ValueError(f"unknown stage {stage!r}")


def remove_stale(output_dir: Path, subject: str | None, session: str | None, stage: str, written: set[str]) -> list[str]:
    """Delete the stage's files of this case that this run did not write; returns them. A case
    whose labels are invalid had nothing written for it."""
    if subject is None or session is None:
        return []
    try:
        paths = bids_paths(subject, session)
    except ValueError:
        return []
    removed = []
    for relative in sorted(stage_files(paths, stage) - written):
        target = safe_join(output_dir, relative)
        if target.exists():
            target.unlink()
            removed.append(relative)
    return removed


def derivative_sidecar_spatial_reference(subject: str, session: str) -> dict[str, Any]:
    """Sidecar keys that define space-T1wCE for a derivative file: the raw
    ce-gadolinium_T1w image of the same case, as a BIDS URI into the raw dataset
    (declared as `raw` in the derivative's dataset_description SourceDatasets)."""
    raw = bids_paths(subject, session).raw["T1C"]
    relative = str(PurePosixPath(raw).relative_to("bids"))
    return {"SpatialReference": f"bids:raw:{relative}"}


def relative_to_output(path: Path, output_dir: Path) -> str:
    """The inverse of `safe_join`: a path below `output_dir` as the catalog stores it (POSIX)."""
    return Path(path).resolve().relative_to(Path(output_dir).resolve()).as_posix()


def safe_join(output_dir: Path, relative: str) -> Path:
    """`output_dir / relative`, refusing anything that would land outside `output_dir`."""
    root = Path(output_dir).resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"path {relative!r} escapes the output folder")
    return target


def split_case_id(case: str) -> tuple[str, str]:
    """(subject, session) of a case_id `sub-<subject>_ses-<session>`."""
    match = _CASE_ID.match(case)
    if not match:
        raise ValueError(f"{case!r} is not a case id of the form sub-<label>_ses-<label>")
    return match.group(1), match.group(2)


def sidecar_path(nifti_path: str) -> str:
    """The JSON sidecar beside a NIfTI path."""
    return nifti_path[: -len(".nii.gz")] + ".json" if nifti_path.endswith(".nii.gz") else nifti_path + ".json"


def registration_paths(paths: BidsPaths, sequence: str) -> tuple[str, str, str]:
    """(transform, resampled image, its sidecar) of one moving sequence (T1 | T2)."""
    key = sequence.lower()
    return (
        getattr(paths, f"{key}_to_t1c_transform"),
        getattr(paths, f"{key}_in_t1c"),
        getattr(paths, f"{key}_in_t1c_sidecar"),
    )
