"""Test helpers: a tiny hand-made DICOM cohort and fault injection on a COPY of a cohort.

`write_mini_study` writes one study (8x8 MR slices, axial, plus an RT Structure Set whose
contours lie on T1C slices and reference them) and returns its UIDs. Fault helpers take
a DICOM folder that the test owns (use `copy_cohort` first) and change it in place;
they locate files by reading headers with pydicom, never by the folder layout.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, RTStructureSetStorage, generate_uid

RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"


# ----------------------------------------------------------------------------- mini cohort

@dataclass
class MiniSeries:
    uid: str
    description: str
    files: list[Path]
    sop_uids: list[str]
    z_mm: list[float]


@dataclass
class MiniStudy:
    patient_id: str
    study_uid: str
    frame_uid: str
    study_date: str
    series: dict[str, MiniSeries] = field(default_factory=dict)  # role -> series
    rtss_path: Path | None = None
    rtss_sop_uid: str | None = None


def _meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _common(ds: Dataset, patient_id: str, study_uid: str, study_date: str, frame_uid: str) -> None:
    ds.PatientID = patient_id
    ds.PatientName = f"Anon^{patient_id}"[:60]
    ds.PatientSex = "F"
    ds.PatientAge = "061Y"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.FrameOfReferenceUID = frame_uid


def write_mr_series(
    folder: Path, patient_id: str, study_uid: str, study_date: str, frame_uid: str, series_number: int,
    description: str, z_mm: list[float], *, tr: float = 500.0, te: float = 10.0, scanning: str = "SE",
    agent: str | None = None, rows: int = 8, columns: int = 8, spacing: float = 1.0, x0: float = -4.0,
    y0: float = -4.0, prefix: str = "MR",
) -> MiniSeries:
    """Axial 8x8 slices at the given z positions (LPS mm)."""
    series_uid = generate_uid()
    files, sops = [], []
    for k, z in enumerate(z_mm):
        sop = generate_uid()
        ds = Dataset()
        ds.file_meta = _meta(MRImageStorage, sop)
        _common(ds, patient_id, study_uid, study_date, frame_uid)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "MR"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = scanning
        ds.RepetitionTime = tr
        ds.EchoTime = te
        if agent:
            ds.ContrastBolusAgent = agent
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [x0, y0, z]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = 3.0
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = (np.arange(rows * columns, dtype=np.uint16) + k).tobytes()
        path = folder / f"{prefix}{series_number:02d}_{k + 1:03d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sops.append(sop)
    return MiniSeries(series_uid, description, files, sops, list(z_mm))


def write_rtss(
    path: Path, patient_id: str, study_uid: str, study_date: str, frame_uid: str, target: MiniSeries,
    contour_slices: list[int], *, label: str = "GK plan", ss_date: str | None = None, ss_time: str = "120000",
    reference_sops: bool = True, instance_number: int = 1,
) -> str:
    """RTSS with one ROI whose square contours lie on the given slices of `target`."""
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = _meta(RTStructureSetStorage, sop)
    _common(ds, patient_id, study_uid, study_date, frame_uid)
    del ds.FrameOfReferenceUID
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.InstanceNumber = instance_number
    ds.StructureSetLabel = label
    ds.StructureSetDate = ss_date or study_date
    ds.StructureSetTime = ss_time
    image_refs = Sequence()
    for s in target.sop_uids:
        item = Dataset()
        item.ReferencedSOPClassUID = MRImageStorage
        item.ReferencedSOPInstanceUID = s
        image_refs.append(item)
    series_item = Dataset()
    series_item.SeriesInstanceUID = target.uid
    series_item.ContourImageSequence = image_refs if reference_sops else Sequence()
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_item.ReferencedSOPInstanceUID = study_uid
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = frame_uid
    frame_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_item])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = frame_uid
    roi.ROIName = "met 1"
    ds.StructureSetROISequence = Sequence([roi])
    contours = Sequence()
    for k in contour_slices:
        z = target.z_mm[k]
        c = Dataset()
        if reference_sops:
            ref = Dataset()
            ref.ReferencedSOPClassUID = MRImageStorage
            ref.ReferencedSOPInstanceUID = target.sop_uids[k]
            c.ContourImageSequence = Sequence([ref])
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = 4
        c.ContourData = [-1.5, -1.5, z, 1.5, -1.5, z, 1.5, 1.5, z, -1.5, 1.5, z]
        contours.append(c)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ContourSequence = contours
    ds.ROIContourSequence = Sequence([roi_contour])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop


def write_mini_study(
    dicom_dir: Path, patient_id: str, study_date: str = "20080101", *, folder: str | None = None,
    t1c_description: str = "AX T1 +C", with_t1: bool = True, with_t2: bool = True, with_rtss: bool = True,
    n_slices: int = 6, t1c_z0: float = -7.0,
) -> MiniStudy:
    """T1 (3 mm, z from -7.5), T1C (3 mm, z from `t1c_z0`), T2, and an RTSS on T1C slices 2-3."""
    study = MiniStudy(patient_id, generate_uid(), generate_uid(), study_date)
    base = dicom_dir / (folder or f"{patient_id}_{study_date}")
    args = (patient_id, study.study_uid, study_date, study.frame_uid)
    if with_t1:
        study.series["T1"] = write_mr_series(base / "t1", *args, 2, "AX T1 PRE",
                                             [-7.5 + 3 * k for k in range(n_slices)])
    study.series["T1C"] = write_mr_series(base / "t1c", *args, 5, t1c_description,
                                          [t1c_z0 + 3 * k for k in range(n_slices)])
    if with_t2:
        study.series["T2"] = write_mr_series(base / "t2", *args, 3, "AX T2 FSE",
                                             [-7.5 + 3 * k for k in range(n_slices)], tr=4000, te=100)
    if with_rtss:
        study.rtss_path = base / "rtss.dcm"
        study.rtss_sop_uid = write_rtss(study.rtss_path, *args, study.series["T1C"], [2, 3])
    return study


# ----------------------------------------------------------------------------- faults

def copy_cohort(src: Path, dst: Path) -> Path:
    """Copy a DICOM folder so that faults never touch the original."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def headers(dicom_dir: Path) -> list[dict[str, object]]:
    """Path and key UIDs of every DICOM file (independent of metsprep.scan)."""
    out = []
    for path in sorted(p for p in Path(dicom_dir).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        out.append({
            "path": path, "sop": str(ds.get("SOPInstanceUID", "")), "series": str(ds.get("SeriesInstanceUID", "")),
            "study": str(ds.get("StudyInstanceUID", "")), "modality": str(ds.get("Modality", "")),
            "description": str(ds.get("SeriesDescription", "")), "patient": str(ds.get("PatientID", "")),
            "instance": int(ds.get("InstanceNumber", 0) or 0),
        })
    return out


def series_files(dicom_dir: Path, series_uid: str) -> list[Path]:
    return sorted((h["path"] for h in headers(dicom_dir) if h["series"] == series_uid),
                  key=lambda p: str(p))


def truncate_file(path: Path, keep_fraction: float = 0.5) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def add_junk_files(dicom_dir: Path) -> list[Path]:
    """Files that real exports carry: macOS metadata and a text note."""
    junk = [dicom_dir / ".DS_Store", dicom_dir / "README.txt"]
    junk[0].write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(200))
    junk[1].write_text("Exported from GammaPlan. Contact the physicist.\n")
    return junk


def duplicate_sop_uid(source: Path, new_path: Path, identical: bool) -> Path:
    """Copy a file under another name; if not identical, change its pixel data but keep the UID."""
    new_path.parent.mkdir(parents=True, exist_ok=True)
    if identical:
        shutil.copyfile(source, new_path)
        return new_path
    ds = pydicom.dcmread(source)
    pixels = bytearray(ds.PixelData)
    pixels[0] = (pixels[0] + 1) % 256
    ds.PixelData = bytes(pixels)
    ds.save_as(new_path, enforce_file_format=True)
    return new_path


def referenced_sop_uids(rtss_path: Path) -> set[str]:
    ds = pydicom.dcmread(rtss_path)
    return {str(img.ReferencedSOPInstanceUID)
            for roi in ds.ROIContourSequence for c in roi.get("ContourSequence", [])
            for img in c.get("ContourImageSequence", [])}


def delete_referenced_images(dicom_dir: Path, rtss_path: Path, count: int | None = None) -> list[Path]:
    """Delete `count` (all when None) of the image files the RTSS contours reference."""
    refs = referenced_sop_uids(rtss_path)
    victims = sorted((h["path"] for h in headers(dicom_dir) if h["sop"] in refs), key=str)
    victims = victims if count is None else victims[:count]
    for path in victims:
        path.unlink()
    return victims


def rtss_without_images(dicom_dir: Path, study_uid: str) -> None:
    """Delete every image of a study, leaving its RTSS alone."""
    for h in headers(dicom_dir):
        if h["study"] == study_uid and h["modality"] != "RTSTRUCT":
            Path(h["path"]).unlink()


def remove_series(dicom_dir: Path, series_uid: str) -> None:
    for path in series_files(dicom_dir, series_uid):
        path.unlink()


def add_copy_of_series(dicom_dir: Path, series_uid: str, folder: str, *, series_number: int | None = None,
                       description: str | None = None, drop_every: int | None = None,
                       new_uid: str | None = None) -> str:
    """A second series with new Series/SOP UIDs (e.g. a second T1C); returns its UID.

    ``new_uid`` fixes the new Series Instance UID, so a test can put it before or after the
    original in UID order (choices must not depend on which sorts first)."""
    new_uid = new_uid or generate_uid()
    for k, path in enumerate(series_files(dicom_dir, series_uid)):
        if drop_every and k % drop_every == 1:
            continue
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = new_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if series_number is not None:
            ds.SeriesNumber = series_number
        if description is not None:
            ds.SeriesDescription = description
        out = dicom_dir / folder / f"copy_{k:04d}.dcm"
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
    return new_uid


def symlink_loop(dicom_dir: Path) -> Path:
    """A folder containing a link back to its parent."""
    folder = dicom_dir / "loop_dir"
    folder.mkdir(exist_ok=True)
    link = folder / "back_to_top"
    os.symlink(os.path.relpath(dicom_dir, folder), link)
    return link


def add_dicomdir(dicom_dir: Path) -> Path:
    """A minimal DICOMDIR (Media Storage Directory) as media exports carry."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.FileSetID = "GKEXPORT"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence()
    path = dicom_dir / "DICOMDIR"
    ds.save_as(path, enforce_file_format=True)
    return path


def regenerate_image_uids(dicom_dir: Path, study_uid: str) -> None:
    """Give the images of a study new SOP/Series UIDs (as inconsistent de-identification
    would), leaving the RTSS references dangling; Frame of Reference is kept."""
    new_series: dict[str, str] = {}
    for h in headers(dicom_dir):
        if h["study"] != study_uid or h["modality"] == "RTSTRUCT":
            continue
        ds = pydicom.dcmread(h["path"])
        ds.SeriesInstanceUID = new_series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(h["path"], enforce_file_format=True)
