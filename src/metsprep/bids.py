"""BIDS export: one case's MR series to NIfTI-1 + JSON sidecars, the dataset-level files,
and the path helpers every stage shares for raw and derivative file names.

Decisions (see also `metsprep.geometry`):

* Geometry comes from `metsprep.geometry.series_geometry`: slices sorted along the normal,
  missing planes interpolated (flagged, `slice_sop_instance_uids[k] = null`), mixed or
  irregular stacks rejected. A T1C that cannot be converted excludes the case; a T1 or T2
  that cannot be converted is left out with a flag, and the case goes on.
* NIfTI header: sform = the exact `ras_from_ijk` (sheared for a gantry-tilted stack),
  sform_code 1 (scanner). qform = the closest rigid grid (`geometry.rigid_lps_from_ijk`);
  it equals the sform for untilted stacks and then has qform_code 1 (scanner). For a
  tilted stack the qform cannot hold the shear, so it is written with qform_code 0
  (unknown): readers that honour codes (nibabel, ITK, FSL) then use the exact sform.
* Voxel values: Rescale Slope/Intercept applied per slice; int16/uint16 (or int32) when
  every value is an integer, float32 otherwise (and whenever a plane is interpolated).
  scl_slope = 1, scl_inter = 0, cal_min/cal_max = the data range, units mm and s.
* Sidecars carry the acquisition fields dcm2niix writes (times in seconds) and nothing
  that identifies a person (no names, IDs, dates, birth dates, institution).
* Labels: BIDS labels are `[0-9a-zA-Z]+`. Every path helper checks them, and every
  written path is checked to stay inside `output_dir`, so a hostile label cannot escape.
* participants.tsv: one row per subject with an exported image; sex from Patient's Sex
  (M/F, anything else n/a; sessions that disagree give n/a); age in years from Patient's
  Age at the subject's first session in session-label order that records an age,
  capped at 89 as advised for de-identified data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from metsprep.errors import CaseExcluded


def _version() -> str:
    # looked up on use: importlib.metadata is ~50 ms of start-up for the stages (register)
    # that import this module only for its path names
    from metsprep import __version__

    return __version__


BIDS_VERSION = "1.10.0"
SEQUENCES = ("T1C", "T1", "T2")
#: BIDS suffix (with entities) of each sequence's raw image.
RAW_SUFFIX = {"T1C": "ce-gadolinium_T1w", "T1": "T1w", "T2": "T2w"}
SPACE = "T1wCE"
DERIVATIVE_NAME = "metsprep"
_LABEL = re.compile(r"^[0-9A-Za-z]+$")


# ---------------------------------------------------------------------------- labels

def is_valid_label(label: str) -> bool:
    """A BIDS label: letters and digits only (no '-', '_', '/', '.', spaces)."""
    return isinstance(label, str) and bool(_LABEL.match(label))


def check_label(label: str, what: str = "label") -> str:
    if not is_valid_label(label):
        raise ValueError(f"invalid BIDS {what} {label!r}: only letters and digits are allowed")
    return label


def to_label(text: str) -> str:
    """Make a BIDS label from free text (e.g. a Patient ID): keep letters and digits only.
    Raises ValueError when nothing is left."""
    label = re.sub(r"[^0-9A-Za-z]", "", text or "")
    if not label:
        raise ValueError(f"{text!r} has no letters or digits to make a BIDS label from")
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
    )


def derivative_sidecar_spatial_reference(subject: str, session: str) -> dict[str, Any]:
    """Sidecar keys that define space-T1wCE for a derivative file: the raw
    ce-gadolinium_T1w image of the same case, as a BIDS URI into the raw dataset
    (declared as `raw` in the derivative's dataset_description SourceDatasets)."""
    raw = bids_paths(subject, session).raw["T1C"]
    relative = str(PurePosixPath(raw).relative_to("bids"))
    return {"SpatialReference": f"bids:raw:{relative}"}


def safe_join(output_dir: Path, relative: str) -> Path:
    """`output_dir / relative`, refusing anything that would land outside `output_dir`."""
    root = Path(output_dir).resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"path {relative!r} escapes the output folder")
    return target


# ---------------------------------------------------------------------------- DICOM -> arrays

@dataclass
class ConvertedSeries:
    data: np.ndarray  # indexed [i, j, k]
    geometry: Any  # metsprep.geometry.SeriesGeometry
    datasets: list[Any]  # the header of each input file, in input order (pixel data released)
    notes: list[str]


def _input_file(input_dir: Path, relative: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"plan file entry {relative!r} is not a path")
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"plan file {relative!r} is not inside the input folder")
    return Path(input_dir) / path


# Decoders the project ships and tests, by preference. pydicom would otherwise pick the
# first available plugin, so another installed package (GDCM, Pillow) could silently
# change how compressed pixel data are decoded.
PREFERRED_DECODING_PLUGINS = ("pylibjpeg", "pydicom")


def _decoded_pixels(ds: Any) -> np.ndarray:
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    if transfer_syntax.is_compressed:
        from pydicom.pixels import get_decoder

        available = get_decoder(transfer_syntax).available_plugins
        plugin = next((p for p in PREFERRED_DECODING_PLUGINS if p in available), None)
        if plugin is not None:
            ds.pixel_array_options(decoding_plugin=plugin)
    return ds.pixel_array


def _rescaled_slice(ds: Any) -> tuple[np.ndarray, bool]:
    """Pixel values with Rescale Slope/Intercept applied; second item: integer-valued."""
    pixels = _decoded_pixels(ds)
    if pixels.ndim != 2:
        raise ValueError(f"image {ds.get('SOPInstanceUID', '?')} is not a single 2-D frame")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return pixels, True
    values = pixels.astype(np.float64) * slope + intercept
    integer = float(slope).is_integer() and float(intercept).is_integer()
    return values, integer


def _integer_dtype(low: float, high: float) -> np.dtype:
    for dtype in (np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.float32)


def read_series(input_dir: Path, files: list[str], max_missing_run: int = 1) -> ConvertedSeries:
    """Read, sort and stack one series. Raises `GeometryError`/`ValueError` with a reason."""
    import pydicom

    from metsprep.geometry import GeometryError, SliceHeader, interpolation_weights, series_geometry

    datasets = []
    for relative in files:
        try:
            datasets.append(pydicom.dcmread(_input_file(input_dir, relative)))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise ValueError(f"cannot read {relative}: {exc}") from exc
    geometry = series_geometry([SliceHeader.from_dataset(ds) for ds in datasets], max_missing_run)
    notes: list[str] = []
    if geometry.dropped:
        notes.append(f"{len(geometry.dropped)} duplicate file(s) of the same SOP instance ignored")
    if geometry.sheared:
        notes.append(f"gantry tilt {geometry.tilt_deg:.2f} deg kept as a sheared sform (qform_code 0)")

    columns, rows, n_planes = geometry.shape
    planes: dict[int, np.ndarray] = {}
    all_integer = True
    for k, index in enumerate(geometry.order):
        if index is None:
            continue
        ds = datasets[index]
        if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() not in ("MONOCHROME2", "MONOCHROME1"):
            raise ValueError(f"image photometric interpretation {ds.PhotometricInterpretation} is not grey-scale")
        try:
            values, integer = _rescaled_slice(ds)
        except Exception as exc:  # decoders raise many kinds; the reason is what matters
            raise ValueError(f"cannot decode the pixel data of {files[index]}: {exc}") from exc
        if values.shape != (rows, columns):
            raise GeometryError(f"pixel data of {files[index]} is {values.shape}, not {rows}x{columns}")
        planes[k] = values
        all_integer &= integer
        # Free the decoded pixel buffer kept on the dataset; the headers stay for the sidecar.
        del ds.PixelData

    weights = interpolation_weights(geometry.order)
    if weights:
        all_integer = False
        notes.append("missing slice(s) at k=" + ",".join(str(k) for k in sorted(weights))
                     + " linearly interpolated between neighbouring slices")
    low = min(float(p.min()) for p in planes.values())
    high = max(float(p.max()) for p in planes.values())
    dtype = _integer_dtype(low, high) if all_integer else np.dtype(np.float32)
    # Stack as [k, j, i] then view as [i, j, k]: pixel_array rows are j, columns are i.
    stack = np.empty((n_planes, rows, columns), dtype=dtype)
    for k, values in planes.items():
        stack[k] = values
    for k, (below, above, weight) in weights.items():
        stack[k] = ((1 - weight) * planes[below] + weight * planes[above]).astype(dtype)
    data = stack.transpose(2, 1, 0)
    return ConvertedSeries(data=data, geometry=geometry, datasets=datasets, notes=notes)


# ---------------------------------------------------------------------------- NIfTI + sidecar

def nifti_image(data: np.ndarray, geometry: Any) -> Any:
    """A NIfTI-1 image with the exact sform and the closest-rigid qform (see module doc)."""
    import nibabel as nib

    from metsprep.geometry import RAS_FROM_LPS, rigid_lps_from_ijk

    image = nib.Nifti1Image(data, geometry.ras_from_ijk)
    header = image.header
    header.set_data_dtype(data.dtype)
    image.set_sform(geometry.ras_from_ijk, code=1)
    image.set_qform(RAS_FROM_LPS @ rigid_lps_from_ijk(geometry), code=0 if geometry.sheared else 1)
    header.set_xyzt_units("mm", "sec")
    header.set_slope_inter(1.0, 0.0)
    header.set_dim_info(slice=2)
    if data.size:
        header["cal_min"], header["cal_max"] = float(data.min()), float(data.max())
    header["descrip"] = f"metsprep {_version()}".encode()[:79]
    return image


def _number(value: Any) -> float | int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and not isinstance(value, float) and "." not in str(value) else number


def _strings(value: Any) -> list[str] | str:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return str(value)


def sidecar(ds: Any) -> dict[str, Any]:
    """dcm2niix-style acquisition fields present in the header; nothing identifying."""
    from pydicom.multival import MultiValue

    out: dict[str, Any] = {"Modality": str(ds.get("Modality", "MR"))}
    # (BIDS name, pydicom keyword)
    for key, keyword in (("Manufacturer", "Manufacturer"), ("ManufacturersModelName", "ManufacturerModelName"),
                         ("SeriesDescription", "SeriesDescription"), ("ProtocolName", "ProtocolName"),
                         ("BodyPartExamined", "BodyPartExamined"), ("PatientPosition", "PatientPosition"),
                         ("PulseSequenceName", "PulseSequenceName"), ("MRAcquisitionType", "MRAcquisitionType")):
        value = ds.get(keyword)
        if value not in (None, ""):
            out[key] = str(value)
    if ds.get("SoftwareVersions") not in (None, ""):
        out["SoftwareVersions"] = "\\".join(str(v) for v in ds.SoftwareVersions) if isinstance(
            ds.SoftwareVersions, MultiValue) else str(ds.SoftwareVersions)
    for key in ("MagneticFieldStrength", "ImagingFrequency", "FlipAngle", "SliceThickness",
                "SpacingBetweenSlices", "PercentPhaseFOV", "PixelBandwidth", "EchoTrainLength"):
        number = _number(ds.get(key))
        if number is not None:
            out[key] = number
    for key in ("RepetitionTime", "EchoTime", "InversionTime"):  # ms in DICOM, s in BIDS
        number = _number(ds.get(key))
        if number is not None:
            out[key] = round(float(number) / 1000.0, 9)
    for key in ("ScanningSequence", "SequenceVariant", "ScanOptions"):
        value = ds.get(key)
        if value not in (None, ""):
            # dcm2niix keeps DICOM's backslash between values (e.g. "FAST_GEMS\\SAT_GEMS").
            out[key] = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
    if ds.get("ImageType") is not None:
        out["ImageType"] = _strings(ds.ImageType) if isinstance(ds.ImageType, MultiValue) else [str(ds.ImageType)]
    if ds.get("ImageOrientationPatient") is not None:
        out["ImageOrientationPatientDICOM"] = [float(v) for v in ds.ImageOrientationPatient]
    if ds.get("SeriesInstanceUID"):
        out["SeriesInstanceUID"] = str(ds.SeriesInstanceUID)
    if ds.get("SeriesNumber") not in (None, ""):
        out["SeriesNumber"] = int(ds.SeriesNumber)
    if ds.get("ContrastBolusAgent") not in (None, ""):
        out["ContrastBolusAgent"] = str(ds.ContrastBolusAgent)
    if ds.get("ContrastBolusIngredient") not in (None, ""):
        out["ContrastBolusIngredient"] = str(ds.ContrastBolusIngredient).upper()
    out["ConversionSoftware"] = "metsprep"
    out["ConversionSoftwareVersion"] = _version()
    return out


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------------------- participant

def age_in_years(patient_age: str | None) -> float | None:
    """DICOM Age String ('065Y', '006M', '010W', '003D') in years; None when absent."""
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(patient_age or ""))
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2)
    years = number / {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}[unit]
    return round(years, 2) if unit != "Y" else float(number)


def participant_fields(ds: Any) -> dict[str, Any]:
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    return {"sex": sex if sex in ("M", "F") else None, "age_years": age_in_years(ds.get("PatientAge"))}


# ---------------------------------------------------------------------------- stage entry points

def convert_case(plan_json: Path, output_dir: Path, result_json: Path, options: dict[str, Any] | None = None) -> None:
    """Convert one case's T1C/T1/T2 to BIDS NIfTI + sidecars and write `bids.json`.

    options: `max_missing_run` (int, default 1): most consecutive missing slices that are
    interpolated; more excludes the series.
    """
    options = options or {}
    plan = json.loads(Path(plan_json).read_text(encoding="utf-8"))
    output_dir = Path(output_dir)
    result: dict[str, Any] = {
        "case_id": plan.get("case_id"), "status": "ok", "status_reason": None,
        "flags": [], "notes": [], "images": {}, "participant": {"sex": None, "age_years": None},
    }
    try:
        _convert(plan, output_dir, result, int(options.get("max_missing_run", 1)))
    except CaseExcluded as exc:
        result.update(status="excluded", status_reason=exc.reason, images={})
    _write_json(Path(result_json), result)


def _convert(plan: dict[str, Any], output_dir: Path, result: dict[str, Any], max_missing_run: int) -> None:
    from metsprep.geometry import GeometryError

    try:
        paths = bids_paths(str(plan.get("subject")), str(plan.get("session")))
    except ValueError as exc:
        raise CaseExcluded(str(exc)) from exc
    if plan.get("case_id") != case_id(paths.subject, paths.session):
        raise CaseExcluded(f"plan case_id {plan.get('case_id')!r} does not match its subject and session labels")
    input_dir = Path(plan["input_dir"])
    series_plan = plan.get("series") or {}
    if not series_plan.get("T1C"):
        raise CaseExcluded("the case has no T1C series")

    converted: dict[str, ConvertedSeries] = {}
    for sequence in SEQUENCES:
        entry = series_plan.get(sequence)
        if not entry:
            continue
        try:
            converted[sequence] = read_series(input_dir, list(entry["files"]), max_missing_run)
        except (GeometryError, ValueError, KeyError) as exc:
            if sequence == "T1C":
                raise CaseExcluded(f"T1C series cannot be converted: {exc}") from exc
            result["flags"].append(f"{sequence.lower()}_not_converted")
            result["notes"].append(f"{sequence} series left out: {exc}")

    for sequence, series in converted.items():
        nifti_rel, sidecar_rel = paths.raw[sequence], paths.raw_sidecar[sequence]
        first = series.datasets[next(i for i in series.geometry.order if i is not None)]
        nifti_path = safe_join(output_dir, nifti_rel)
        nifti_path.parent.mkdir(parents=True, exist_ok=True)
        nifti_image(series.data, series.geometry).to_filename(nifti_path)
        _write_json(safe_join(output_dir, sidecar_rel), sidecar(first))
        geometry = series.geometry
        image: dict[str, Any] = {
            "nifti": nifti_rel,
            "sidecar": sidecar_rel,
            "series_instance_uid": str(first.get("SeriesInstanceUID", "")) or None,
            "shape": list(geometry.shape),
            "ras_from_ijk": geometry.ras_from_ijk.tolist(),
            "slice_positions_mm": list(geometry.slice_positions_mm),
            "slice_spacing_mm": geometry.slice_spacing_mm,
            "resampled": not geometry.uniform,
            "notes": series.notes,
        }
        if sequence == "T1C":
            image["slice_sop_instance_uids"] = [
                None if index is None else str(series.datasets[index].SOPInstanceUID)
                for index in geometry.order
            ]
            result["participant"] = participant_fields(first)
        result["images"][sequence] = image
        for flag in geometry.flags:
            tagged = f"{sequence.lower()}_{flag}"
            if tagged not in result["flags"]:
                result["flags"].append(tagged)


def _dataset_description() -> dict[str, Any]:
    return {
        "Name": "metsprep brain-metastasis MRI collection",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "n/a",
        "GeneratedBy": [{"Name": "metsprep", "Version": _version()}],
    }


def _derivative_description() -> dict[str, Any]:
    return {
        "Name": "metsprep derivatives: registered T1w/T2w, lesion label maps and masks on the T1wCE grid",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "metsprep", "Version": _version()}],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        "DatasetLinks": {"raw": "../../"},
    }


_README = """metsprep BIDS export
====================

Brain-metastasis MR examinations (contrast-enhanced T1w, T1w, T2w) converted from
DICOM by metsprep. Lesion label maps, masks and the registered T1w/T2w live in
derivatives/metsprep/ on the grid of each session's ce-gadolinium_T1w image.
Identifying header fields (names, IDs, dates) are not carried into the sidecars.
"""


def _participants(case_results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    by_subject: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for result in case_results:
        if result.get("status") != "ok" or not result.get("images"):
            continue
        match = re.fullmatch(r"sub-([0-9A-Za-z]+)_ses-([0-9A-Za-z]+)", str(result.get("case_id")))
        if not match:
            continue
        by_subject.setdefault(match.group(1), []).append((match.group(2), result.get("participant") or {}))
    rows = []
    for subject in sorted(by_subject):
        sessions = sorted(by_subject[subject], key=lambda item: item[0])
        sexes = {p.get("sex") for _, p in sessions if p.get("sex")}
        ages = [p.get("age_years") for _, p in sessions if p.get("age_years") is not None]
        age = min(float(ages[0]), 89.0) if ages else None
        rows.append({"participant_id": f"sub-{subject}", "sex": sexes.pop() if len(sexes) == 1 else None, "age": age})
    return rows


def write_dataset_files(case_result_jsons: list[Path], output_dir: Path) -> None:
    """dataset_description.json, README, participants.tsv/.json and the derivative's
    dataset_description.json, from every case's `bids.json`."""
    output_dir = Path(output_dir)
    results = [json.loads(Path(p).read_text(encoding="utf-8")) for p in case_result_jsons]
    _write_json(safe_join(output_dir, "bids/dataset_description.json"), _dataset_description())
    safe_join(output_dir, "bids/README").write_text(_README, encoding="utf-8")
    rows = _participants(results)
    lines = ["participant_id\tsex\tage"]
    for row in rows:
        age = "n/a" if row["age"] is None else (f"{row['age']:g}")
        lines.append(f"{row['participant_id']}\t{row['sex'] or 'n/a'}\t{age}")
    safe_join(output_dir, "bids/participants.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_json(safe_join(output_dir, "bids/participants.json"), {
        "participant_id": {"Description": "Subject label, from the de-identified Patient ID"},
        "sex": {"Description": "Patient's Sex (0010,0040) of the DICOM header; n/a when absent, "
                               "other or inconsistent between sessions",
                "Levels": {"M": "male", "F": "female"}},
        "age": {"Description": "Patient's Age (0010,1010) at the subject's first session "
                               "(sessions in label order), capped at 89",
                "Units": "year"},
    })
    _write_json(safe_join(output_dir, f"bids/derivatives/{DERIVATIVE_NAME}/dataset_description.json"),
                _derivative_description())
