"""Model-training exports: an nnU-Net v2 raw dataset and MONAI datalists (docs/exports.md).

Per case (`export_case`): decide whether the case goes in, by the rule below, check that
every channel and the label share the T1C grid, and put the files in
``exports/cases/<case_id>/`` as hard links (or copies) of the BIDS files:
``<case_id>_0000`` T1W+C, ``_0001`` T1 on the T1C grid, ``_0002`` T2 on the T1C grid,
``<case_id>.nii.gz`` the label (binary, or one value per lesion).

The rule for an incomplete case, in order:
0. a case a reviewer failed (qc_rating fail in cases.parquet) is left out of the cohort
   exports (its per-case folder stays; it is decided at the merges, which read the catalog);
1. a case that is not ``ok`` is left out, with its own reason;
2. a case without T1 or T2 is left out (``missing_channel: exclude``) or gets a channel of
   zeros on the T1C grid (``zero_fill``);
3. a case whose T1 or T2 registration a check flagged is left out
   (``untrusted_registration: exclude``), gets zeros for that channel (``zero_fill``), or
   keeps the image (``keep``);
4. a case whose files do not share one grid is left out (a bug upstream, named).
What was done to each case is listed in ``catalog/exports.parquet``.

Cohort (`export_datasets`): arrange the included cases by ``catalog/splits.parquet``:
training sets into ``imagesTr``/``labelsTr``, the held-out test set into
``imagesTs``/``labelsTs``; ``dataset.json``, ``splits_final.json`` (one train/val pair per
fold) and one MONAI datalist per fold.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from metsprep.atomic import atomic_path, write_json, write_nifti
from metsprep.contracts import CaseSummary, Contract, Versioned
from metsprep.layout import relative_to_output, safe_join
from metsprep.settings import ExportSettings

#: nnU-Net channel index, name, and the cases.parquet column of its image.
CHANNELS = (("0000", "T1C", "t1c_nifti"), ("0001", "T1", "t1_in_t1c_nifti"), ("0002", "T2", "t2_in_t1c_nifti"))
FILE_ENDING = ".nii.gz"
#: How far (mm) two affines may differ and still be one grid (NIfTI stores float32).
GRID_TOLERANCE_MM = 1e-3


def case_export_dir(case_id: str) -> str:
    return f"exports/cases/{case_id}"


# ----------------------------------------------------------------------------- contracts


@dataclass(frozen=True)
class ExportChannel(Contract):
    index: str  # nnU-Net channel suffix: 0000, 0001, 0002
    name: str  # T1C, T1, T2
    source: str | None  # the BIDS file it comes from (relative to output_dir); null when zero-filled
    file: str | None  # the export's file, relative to output_dir; null when the case is left out
    zero_filled: bool
    untrusted_kept: bool  # a flagged registration, kept by export.untrusted_registration: keep


@dataclass(frozen=True)
class ExportCaseResult(Versioned):
    schema_version: int
    case_id: str
    included: bool
    reason: str | None  # why left out, or what was done to an included case; null when neither
    channels: list[ExportChannel]
    label: str | None  # relative to output_dir
    label_source: str | None
    label_kind: str  # binary | instance
    max_label: int  # largest label value in the file (0: no lesion voxel)


# ----------------------------------------------------------------------------- per case


def _channel_decision(row: Mapping[str, Any], name: str, column: str,
                      settings: ExportSettings) -> tuple[str, str | None]:
    """('link' | 'zero_fill' | 'exclude' | 'keep_untrusted', why) for one channel."""
    source = row.get(column)
    if not source:
        if name == "T1C":
            return "exclude", "the case has no T1C image"
        if settings.missing_channel == "exclude":
            return "exclude", f"the case has no {name} (export.missing_channel: exclude)"
        return "zero_fill", f"no {name}: channel {name} is zeros (export.missing_channel: zero_fill)"
    if name != "T1C" and row.get(f"{name.lower()}_registration_trusted") is False:
        flag = row.get(f"{name.lower()}_registration_flag") or "flagged"
        policy = settings.untrusted_registration
        if policy == "exclude":
            return "exclude", f"the {name} registration is untrusted ({flag}; export.untrusted_registration: exclude)"
        if policy == "zero_fill":
            return "zero_fill", f"the {name} registration is untrusted ({flag}): channel {name} is zeros"
        return "keep_untrusted", f"the {name} registration is untrusted ({flag}) and kept (export.untrusted_registration: keep)"
    return "link", None


def _grid(path: Path) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.load(str(path))
    return tuple(int(n) for n in image.shape), np.asarray(image.header.get_sform()), np.asarray(image.header.get_qform())


def grid_mismatch(reference: Path, other: Path) -> str | None:
    """Why ``other`` is not on ``reference``'s voxel grid (shape, sform, qform), or None."""
    ref_shape, ref_sform, ref_qform = _grid(reference)
    shape, sform, qform = _grid(other)
    if shape[:3] != ref_shape[:3] or len(shape) != len(ref_shape):
        return f"{other.name} has shape {shape}, the T1C {ref_shape}"
    for what, a, b in (("sform", sform, ref_sform), ("qform", qform, ref_qform)):
        if not np.allclose(a, b, atol=GRID_TOLERANCE_MM, rtol=0):
            return f"{other.name}'s {what} differs from the T1C's by up to {np.abs(a - b).max():.4g} mm"
    return None


def _place(source: Path, target: Path, link: str) -> None:
    """Hard-link (falling back to a copy across filesystems) or copy ``source`` to ``target``, atomically."""
    with atomic_path(target) as temporary:
        if link == "hardlink":
            try:
                os.link(source, temporary)
                return
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        shutil.copyfile(source, temporary)


def _zeros_like(reference: Path, target: Path) -> None:
    import nibabel as nib

    image = nib.load(str(reference))
    zeros = np.zeros(image.shape, dtype=np.int16)
    header = image.header.copy()
    header.set_data_dtype(np.int16)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    write_nifti(target, nib.Nifti1Image(zeros, image.affine, header))


def _label_values(path: Path) -> tuple[int, str | None]:
    """Largest label value, and why the file is not a label map (float values, negatives)."""
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj)
    if not np.issubdtype(data.dtype, np.integer):
        return 0, f"{path.name} stores {data.dtype} values, not integer labels"
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if low < 0:
        return high, f"{path.name} has negative label values"
    return high, None


def export_case(summary: CaseSummary, settings: ExportSettings, output_dir: Path, out_result: Path) -> ExportCaseResult:
    """Decide and place one case's export files (module docstring); write and return the result."""
    case_id, row = summary.case_id, summary.row
    out_dir = safe_join(output_dir, case_export_dir(case_id))
    out_dir.mkdir(parents=True, exist_ok=True)
    label_column = "lesion_mask_nifti" if settings.labels == "binary" else "lesion_labels_nifti"
    label_source = row.get(label_column)

    def left_out(reason: str) -> ExportCaseResult:
        result = ExportCaseResult(schema_version=ExportCaseResult.version, case_id=case_id, included=False,
                                  reason=reason, channels=[], label=None, label_source=label_source,
                                  label_kind=settings.labels, max_label=0)
        result.write(out_result)
        return result

    if summary.status != "ok":
        return left_out(f"the case is excluded: {row.get('status_reason')}")
    if not label_source:
        return left_out(f"the case has no {label_column}")
    decisions = {name: _channel_decision(row, name, column, settings) for _, name, column in CHANNELS}
    for decision, why in decisions.values():
        if decision == "exclude":
            return left_out(str(why))

    t1c = safe_join(output_dir, str(row["t1c_nifti"]))
    label_path = safe_join(output_dir, str(label_source))
    for _, name, column in CHANNELS:
        if decisions[name][0] in ("link", "keep_untrusted"):
            mismatch = grid_mismatch(t1c, safe_join(output_dir, str(row[column])))
            if mismatch:
                return left_out(f"channel {name} is not on the T1C grid: {mismatch}")
    mismatch = grid_mismatch(t1c, label_path)
    if mismatch:
        return left_out(f"the label map is not on the T1C grid: {mismatch}")
    max_label, not_labels = _label_values(label_path)
    if not_labels:
        return left_out(f"the label map cannot be used: {not_labels}")
    if settings.labels == "binary" and max_label > 1:
        return left_out(f"the binary lesion mask has value {max_label}")

    channels = []
    for index, name, column in CHANNELS:
        decision, _ = decisions[name]
        relative = f"{case_export_dir(case_id)}/{case_id}_{index}{FILE_ENDING}"
        target = safe_join(output_dir, relative)
        if decision == "zero_fill":
            _zeros_like(t1c, target)
            source = None
        else:
            source = str(row[column])
            _place(safe_join(output_dir, source), target, settings.link)
        channels.append(ExportChannel(index=index, name=name, source=source, file=relative,
                                      zero_filled=decision == "zero_fill", untrusted_kept=decision == "keep_untrusted"))
    label_relative = f"{case_export_dir(case_id)}/{case_id}{FILE_ENDING}"
    _place(label_path, safe_join(output_dir, label_relative), settings.link)
    notes = [why for decision, why in decisions.values() if why]
    result = ExportCaseResult(schema_version=ExportCaseResult.version, case_id=case_id, included=True,
                              reason="; ".join(notes) or None, channels=channels, label=label_relative,
                              label_source=str(label_source), label_kind=settings.labels, max_label=max_label)
    result.write(out_result)
    return result


# ----------------------------------------------------------------------------- cohort


def _relative(path: str, start: str) -> str:
    """POSIX path of ``path`` relative to folder ``start`` (both relative to output_dir)."""
    return os.path.relpath(PurePosixPath(path), PurePosixPath(start)).replace(os.sep, "/")


def nnunet_dataset_json(settings: ExportSettings, n_training: int, max_label: int,
                        extra: Mapping[str, Any]) -> dict[str, Any]:
    if settings.labels == "binary":
        labels = {"background": 0, "lesion": 1}
    else:  # one value per lesion of a case; for detection/instance tools, not nnU-Net's semantic classes
        labels = {"background": 0, **{f"lesion_{k}": k for k in range(1, max(max_label, 1) + 1)}}
    return {
        "channel_names": {str(int(index)): name for index, name, _ in CHANNELS},
        "labels": labels,
        "numTraining": n_training,
        "file_ending": FILE_ENDING,
        "name": settings.nnunet_dataset,
        "description": "Brain metastases on T1W+C with T1 and T2 rigidly registered onto the T1W+C grid; "
                       "labels rasterized from the Leksell GammaPlan RT Structure Set (metsprep).",
        "reference": "DATASET_CARD.md at the top of the metsprep output folder",
        "licence": "as the source collection's; see DATASET_CARD.md",
        **extra,
    }


@dataclass(frozen=True)
class ExportedCase:
    """One included case with its set (for the datasets and catalog/exports.parquet)."""

    result: ExportCaseResult
    split: str  # train | test
    fold: int | None


def nnunet_layout(cases: Sequence[ExportedCase], dataset_dir: str) -> dict[str, tuple[list[str], str]]:
    """case_id -> (image files, label file) inside the nnU-Net dataset, relative to output_dir."""
    layout = {}
    for case in cases:
        images_dir, labels_dir = ("imagesTs", "labelsTs") if case.split == "test" else ("imagesTr", "labelsTr")
        cid = case.result.case_id
        images = [f"{dataset_dir}/{images_dir}/{cid}_{c.index}{FILE_ENDING}" for c in case.result.channels]
        layout[cid] = (images, f"{dataset_dir}/{labels_dir}/{cid}{FILE_ENDING}")
    return layout


def write_nnunet(cases: Sequence[ExportedCase], settings: ExportSettings, n_folds: int, output_dir: Path,
                 dataset_dir: str, provenance: Mapping[str, Any]) -> dict[str, tuple[list[str], str]]:
    """imagesTr/labelsTr, imagesTs/labelsTs, dataset.json and splits_final.json under ``dataset_dir``."""
    root = safe_join(output_dir, dataset_dir)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    layout = nnunet_layout(cases, dataset_dir)
    pairs = []
    for case in cases:
        images, label = layout[case.result.case_id]
        pairs += [(safe_join(output_dir, str(c.file)), safe_join(output_dir, image))
                  for c, image in zip(case.result.channels, images)]
        pairs.append((safe_join(output_dir, str(case.result.label)), safe_join(output_dir, label)))
    for source, target in pairs:
        _place(source, target, "hardlink")

    training = [c for c in cases if c.split == "train"]
    max_label = max((c.result.max_label for c in cases), default=1)
    write_json(root / "dataset.json", nnunet_dataset_json(settings, len(training), max_label, provenance))
    folds = [
        {"train": sorted(c.result.case_id for c in training if c.fold != k),
         "val": sorted(c.result.case_id for c in training if c.fold == k)}
        for k in range(n_folds)
    ]
    write_json(root / "splits_final.json", folds)
    return layout


def monai_datalist(cases: Sequence[ExportedCase], fold: int, json_dir: str) -> dict[str, Any]:
    """``training``/``validation``/``test`` lists of {image: [T1C, T1, T2], label} relative to ``json_dir``
    (what ``monai.data.load_decathlon_datalist`` joins with the file's folder)."""

    def item(case: ExportedCase) -> dict[str, Any]:
        return {
            "case_id": case.result.case_id,
            "image": [_relative(str(c.file), json_dir) for c in case.result.channels],
            "label": _relative(str(case.result.label), json_dir),
        }

    ordered = sorted(cases, key=lambda c: c.result.case_id)
    return {
        "description": f"metsprep fold {fold}: channels {[name for _, name, _ in CHANNELS]}, labels on the T1C grid",
        "channels": [name for _, name, _ in CHANNELS],
        "training": [item(c) for c in ordered if c.split == "train" and c.fold != fold],
        "validation": [item(c) for c in ordered if c.split == "train" and c.fold == fold],
        "test": [item(c) for c in ordered if c.split == "test"],
    }


def write_monai(cases: Sequence[ExportedCase], n_folds: int, output_dir: Path, out_jsons: Sequence[Path]) -> None:
    if len(out_jsons) != n_folds:
        raise ValueError(f"{len(out_jsons)} MONAI datalist paths for {n_folds} folds")
    for fold, path in enumerate(out_jsons):
        json_dir = PurePosixPath(relative_to_output(path, output_dir)).parent.as_posix()
        write_json(path, monai_datalist(cases, fold, json_dir))


def read_results(paths: Sequence[Path]) -> list[ExportCaseResult]:
    return [ExportCaseResult.read(p) for p in paths]


def provenance(settings: ExportSettings, split_seed: int, version: str) -> dict[str, Any]:
    """What dataset.json says of how it was made (nnU-Net ignores keys it does not know)."""
    return {"metsprep": {"version": version, "labels": settings.labels, "split_seed": split_seed,
                         "missing_channel": settings.missing_channel,
                         "untrusted_registration": settings.untrusted_registration,
                         "cases_table": "catalog/exports.parquet"}}


def _export_row(case_row: Mapping[str, Any], result: ExportCaseResult | None, split: Mapping[str, Any] | None,
                nnunet: tuple[list[str], str] | None) -> dict[str, Any]:
    included = bool(result and result.included)
    reason = result.reason if result else f"the case is excluded: {case_row.get('status_reason')}"
    return {
        "case_id": case_row["case_id"], "patient_id": case_row.get("patient_id"),
        "split": split.get("split") if split else None, "fold": split.get("fold") if split else None,
        "exported": included, "export_reason": reason,
        "zero_filled_channels": [c.name for c in result.channels if c.zero_filled] if result else [],
        "untrusted_channels_kept": [c.name for c in result.channels if c.untrusted_kept] if result else [],
        "case_images": [c.file for c in result.channels] if included and result else [],
        "case_label": result.label if included and result else None,
        "nnunet_images": nnunet[0] if nnunet else [], "nnunet_label": nnunet[1] if nnunet else None,
        "label_kind": result.label_kind if result else None, "max_label": result.max_label if included and result else None,
    }


def reviewer_failed(result: ExportCaseResult, comment: str | None) -> ExportCaseResult:
    """Rule 0: a case a reviewer failed (cases.parquet qc_rating) is left out."""
    reason = "a reviewer failed the case (config qc.ratings)" + (f": {comment}" if comment else "")
    return dataclasses.replace(result, included=False, reason=reason)


def load_exported(result_jsons: Sequence[Path], splits_parquet: Path, cases_parquet: Path
                  ) -> tuple[dict[str, ExportCaseResult], dict[str, dict[str, Any]], list[ExportedCase]]:
    """The per-case results (failed by a reviewer: left out), the splits rows, and the
    included cases with their sets."""
    import pyarrow.parquet as pq

    reviews = {row["case_id"]: row for row in pq.read_table(cases_parquet, columns=["case_id", "qc_rating", "qc_comment"]).to_pylist()}
    results = {r.case_id: r for r in read_results(result_jsons)}
    for cid, review in reviews.items():
        if review.get("qc_rating") == "fail" and cid in results:
            results[cid] = reviewer_failed(results[cid], review.get("qc_comment"))
    splits = {row["case_id"]: row for row in pq.read_table(splits_parquet).to_pylist()}
    missing = sorted(cid for cid, r in results.items() if r.included and cid not in splits)
    if missing:
        raise ValueError(f"cases exported but not in {splits_parquet}: {missing[:5]}")
    exported = [ExportedCase(r, str(splits[cid]["split"]), splits[cid]["fold"])
                for cid, r in sorted(results.items()) if r.included]
    return results, splits, exported


def export_nnunet(result_jsons: Sequence[Path], splits_parquet: Path, cases_parquet: Path, settings: ExportSettings,
                  n_folds: int, split_seed: int, output_dir: Path, out_dataset_dir: Path) -> None:
    from metsprep import __version__

    _, _, exported = load_exported(result_jsons, splits_parquet, cases_parquet)
    write_nnunet(exported, settings, n_folds, output_dir, relative_to_output(out_dataset_dir, output_dir),
                 provenance(settings, split_seed, __version__))


def export_monai(result_jsons: Sequence[Path], splits_parquet: Path, cases_parquet: Path, n_folds: int,
                 output_dir: Path, out_jsons: Sequence[Path]) -> None:
    _, _, exported = load_exported(result_jsons, splits_parquet, cases_parquet)
    write_monai(exported, n_folds, output_dir, out_jsons)


def write_export_table(result_jsons: Sequence[Path], splits_parquet: Path, cases_parquet: Path,
                       nnunet_dataset_dir: str | None, out_table: Path) -> None:
    """catalog/exports.parquet: one row per case of cases.parquet (``nnunet_dataset_dir``: None when off)."""
    import pyarrow.parquet as pq

    from metsprep.catalog.schemas import EXPORT_COLUMNS, write_table

    results, splits, exported = load_exported(result_jsons, splits_parquet, cases_parquet)
    layout = nnunet_layout(exported, nnunet_dataset_dir) if nnunet_dataset_dir else {}
    rows = [_export_row(row, results.get(row["case_id"]), splits.get(row["case_id"]), layout.get(row["case_id"]))
            for row in pq.read_table(cases_parquet, columns=["case_id", "patient_id", "status_reason"]).to_pylist()]
    write_table(rows, EXPORT_COLUMNS, "exports", out_table)
