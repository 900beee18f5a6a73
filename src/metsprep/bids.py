"""Stage bids: one case's MR series to NIfTI-1 + JSON sidecars, and the dataset-level files.

Decisions (file names: `metsprep.layout`; reading DICOM: `metsprep.dicom_series`):

* A T1C that cannot be converted excludes the case; a T1 or T2 that cannot be converted
  is left out with a flag, and the case goes on.
* NIfTI header: sform = the exact `ras_from_ijk` (sheared for a gantry-tilted stack),
  sform_code 1 (scanner). qform = the closest rigid grid (`geometry.rigid_lps_from_ijk`);
  it equals the sform for untilted stacks and then has qform_code 1 (scanner). For a
  tilted stack the qform cannot hold the shear, so it is written with qform_code 0
  (unknown): readers that honour codes (nibabel, ITK, FSL) then use the exact sform.
  scl_slope = 1, scl_inter = 0, cal_min/cal_max = the data range, units mm and s.
* Sidecars carry the acquisition fields dcm2niix writes (times in seconds) and nothing
  that identifies a person (no names, IDs, dates, birth dates, institution).
* participants.tsv: one row per subject with an exported image; sex from Patient's Sex
  (M/F, anything else n/a; sessions that disagree give n/a); age in years from Patient's
  Age at the subject's first session in session-label order that records an age,
  capped at 89 as advised for de-identified data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from metsprep.atomic import write_json, write_nifti, write_text
from metsprep.contracts import SCHEMA_VERSION, BidsResult, CasePlan, ImageRecord, Participant, Status
from metsprep.dicom_series import ConvertedSeries, read_series
from metsprep.errors import CaseExcluded
from metsprep.geometry import SeriesGeometry
from metsprep.layout import DERIVATIVE_NAME, SEQUENCES, bids_paths, remove_stale, safe_join
from metsprep.settings import BidsSettings


def _version() -> str:
    # looked up on use: importlib.metadata is ~50 ms of start-up
    from metsprep import __version__

    return str(__version__)


BIDS_VERSION = "1.10.0"


# ---------------------------------------------------------------------------- NIfTI + sidecar

def nifti_image(data: NDArray[Any], geometry: SeriesGeometry) -> Any:
    """A NIfTI-1 image with the exact sform and the closest-rigid qform (see module doc)."""
    import nibabel as nib

    from metsprep.frames import RAS_FROM_LPS
    from metsprep.geometry import rigid_lps_from_ijk

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


# ---------------------------------------------------------------------------- participant

def age_in_years(patient_age: str | None) -> float | None:
    """DICOM Age String ('065Y', '006M', '010W', '003D') in years; None when absent."""
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(patient_age or ""))
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2)
    years = number / {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}[unit]
    return round(years, 2) if unit != "Y" else float(number)


def participant_fields(ds: Any) -> Participant:
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    return Participant(sex="M" if sex == "M" else "F" if sex == "F" else None, age_years=age_in_years(ds.get("PatientAge")))


# ---------------------------------------------------------------------------- stage entry points

def convert_case(plan_json: Path, output_dir: Path, result_json: Path, settings: BidsSettings) -> None:
    """Convert one case's T1C/T1/T2 to BIDS NIfTI + sidecars and write `bids.json`."""
    plan = CasePlan.read(plan_json)
    flags: list[str] = []
    notes: list[str] = []
    try:
        images, participant = _convert(plan, Path(output_dir), flags, notes, settings.max_missing_run)
        status: Status = "ok"
        reason: str | None = None
    except CaseExcluded as exc:
        images, participant, status, reason = {}, Participant(None, None), "excluded", exc.reason
    written = {f for image in images.values() for f in (image.nifti, image.sidecar)}
    remove_stale(Path(output_dir), plan.subject, plan.session, "bids", written)
    BidsResult(
        schema_version=SCHEMA_VERSION, case_id=plan.case_id, subject=plan.subject, session=plan.session,
        status=status, status_reason=reason, flags=tuple(flags), notes=tuple(notes), images=images,
        participant=participant,
    ).write(result_json)  # fmt: skip


def _convert(
    plan: CasePlan, output_dir: Path, flags: list[str], notes: list[str], max_missing_run: int
) -> tuple[dict[str, ImageRecord], Participant]:
    from metsprep.geometry import GeometryError

    try:
        paths = bids_paths(plan.subject, plan.session)
    except ValueError as exc:
        raise CaseExcluded(str(exc)) from exc
    input_dir = Path(plan.input_dir)
    converted: dict[str, ConvertedSeries] = {}
    for sequence in SEQUENCES:
        entry = plan.series.get(sequence)
        if entry is None:
            continue
        try:
            converted[sequence] = read_series(input_dir, list(entry.files), max_missing_run)
        except (GeometryError, ValueError) as exc:
            if sequence == "T1C":
                raise CaseExcluded(f"T1C series cannot be converted: {exc}") from exc
            flags.append(f"{sequence.lower()}_not_converted")
            notes.append(f"{sequence} series left out: {exc}")

    images: dict[str, ImageRecord] = {}
    participant = Participant(None, None)
    for sequence, series in converted.items():
        nifti_rel, sidecar_rel = paths.raw[sequence], paths.raw_sidecar[sequence]
        geometry = series.geometry
        first = series.datasets[next(i for i in geometry.order if i is not None)]
        write_nifti(safe_join(output_dir, nifti_rel), nifti_image(series.data, geometry))
        write_json(safe_join(output_dir, sidecar_rel), sidecar(first))
        slice_uids = None
        if sequence == "T1C":
            slice_uids = tuple(
                None if index is None else str(series.datasets[index].SOPInstanceUID) for index in geometry.order
            )
            participant = participant_fields(first)
        ras = geometry.ras_from_ijk
        images[sequence] = ImageRecord(
            nifti=nifti_rel,
            sidecar=sidecar_rel,
            series_instance_uid=str(first.get("SeriesInstanceUID", "")) or None,
            shape=geometry.shape,
            ras_from_ijk=tuple((float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in ras),
            slice_positions_mm=tuple(float(p) for p in geometry.slice_positions_mm),
            slice_spacing_mm=float(geometry.slice_spacing_mm),
            resampled=not geometry.uniform,
            notes=tuple(series.notes),
            slice_sop_instance_uids=slice_uids,
        )
        for flag in geometry.flags:
            tagged = f"{sequence.lower()}_{flag}"
            if tagged not in flags:
                flags.append(tagged)
    return images, participant


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


_DERIVATIVE_README = """metsprep derivatives
====================

On the grid of each session's raw ce-gadolinium_T1w image (space-T1wCE): the T1w and T2w
rigidly registered and resampled onto it, the lesion label map (desc-lesions_dseg, with
a .tsv naming each label's RT Structure Set ROI), the binary lesion mask and, where the
structure set has a skull structure, the head mask. The rigid transforms
(from-T1w|T2w_to-T1wCE_mode-image_xfm.tfm, ITK text format) map T1wCE LPS points to the
source image's LPS points; BIDS 1.10 has no transform files yet, so .bidsignore lists them.
"""


def _participants(case_results: Iterable[BidsResult]) -> list[dict[str, Any]]:
    by_subject: dict[str, list[tuple[str, Participant]]] = {}
    for result in case_results:
        if result.status != "ok" or not result.images:
            continue
        by_subject.setdefault(result.subject, []).append((result.session, result.participant))
    rows = []
    for subject in sorted(by_subject):
        sessions = sorted(by_subject[subject], key=lambda item: item[0])
        sexes = {p.sex for _, p in sessions if p.sex}
        ages = [p.age_years for _, p in sessions if p.age_years is not None]
        age = min(float(ages[0]), 89.0) if ages else None
        rows.append({"participant_id": f"sub-{subject}", "sex": sexes.pop() if len(sexes) == 1 else None, "age": age})
    return rows


def write_dataset_files(case_result_jsons: list[Path], output_dir: Path) -> None:
    """dataset_description.json, README, participants.tsv/.json and the derivative's
    dataset_description.json, from every case's `bids.json`."""
    output_dir = Path(output_dir)
    results = [BidsResult.read(p) for p in case_result_jsons]
    write_json(safe_join(output_dir, "bids/dataset_description.json"), _dataset_description())
    write_text(safe_join(output_dir, "bids/README"), _README)
    rows = _participants(results)
    lines = ["participant_id\tsex\tage"]
    for row in rows:
        age = "n/a" if row["age"] is None else (f"{row['age']:g}")
        lines.append(f"{row['participant_id']}\t{row['sex'] or 'n/a'}\t{age}")
    write_text(safe_join(output_dir, "bids/participants.tsv"), "\n".join(lines) + "\n")
    write_json(safe_join(output_dir, "bids/participants.json"), {
        "participant_id": {"Description": "Subject label, from the de-identified Patient ID"},
        "sex": {"Description": "Patient's Sex (0010,0040) of the DICOM header; n/a when absent, "
                               "other or inconsistent between sessions",
                "Levels": {"M": "male", "F": "female"}},
        "age": {"Description": "Patient's Age (0010,1010) at the subject's first session "
                               "(sessions in label order), capped at 89",
                "Units": "year"},
    })  # fmt: skip
    derivatives = f"bids/derivatives/{DERIVATIVE_NAME}"
    write_json(safe_join(output_dir, f"{derivatives}/dataset_description.json"), _derivative_description())
    write_text(safe_join(output_dir, f"{derivatives}/README"), _DERIVATIVE_README)
    # BIDS 1.10 has no file type for spatial transforms yet (BEP014): their names follow the
    # proposal, and the validators are told to skip them.
    write_text(safe_join(output_dir, f"{derivatives}/.bidsignore"), "*_xfm.tfm\n")
