"""Inventory of an input folder: one row per file, headers only, in shards.

The scan never decides anything about cases; it records what each file is (or why it
cannot be read) so that `metsprep.match` can group by UID. Image files are read with
`stop_before_pixels` and a short list of tags; an RT Structure Set is read completely
(one per case) so that its references and contour planes are available for matching.

Files are walked in a deterministic order (sorted relative POSIX paths); shard `k` of
`n` takes the files whose index in that list is `k` modulo `n`.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

RTSTRUCT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.481.3"
MEDIA_STORAGE_DIRECTORY_SOP_CLASS_UID = "1.2.840.10008.1.3.10"

# Header tags read from every file (keywords). Pixel-size tags are read to detect
# files truncated inside the pixel data.
HEADER_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "Modality", "PatientID", "PatientName", "PatientSex",
    "PatientAge", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "SeriesNumber",
    "InstanceNumber", "SeriesDescription", "ProtocolName", "ImageType",
    "ScanningSequence", "SequenceVariant", "RepetitionTime", "EchoTime", "InversionTime",
    "FlipAngle", "ContrastBolusAgent", "ContrastBolusIngredient", "MRAcquisitionType",
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "Rows", "Columns", "Manufacturer", "ManufacturerModelName",
    "MagneticFieldStrength", "BitsAllocated", "SamplesPerPixel", "NumberOfFrames",
)

_STRING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sop_class_uid", "SOPClassUID"), ("sop_instance_uid", "SOPInstanceUID"),
    ("study_instance_uid", "StudyInstanceUID"), ("series_instance_uid", "SeriesInstanceUID"),
    ("frame_of_reference_uid", "FrameOfReferenceUID"), ("modality", "Modality"),
    ("patient_id", "PatientID"), ("patient_name", "PatientName"),
    ("patient_sex", "PatientSex"), ("patient_age", "PatientAge"),
    ("study_date", "StudyDate"), ("study_time", "StudyTime"),
    ("series_date", "SeriesDate"), ("series_time", "SeriesTime"),
    ("series_description", "SeriesDescription"), ("protocol_name", "ProtocolName"),
    ("scanning_sequence", "ScanningSequence"), ("sequence_variant", "SequenceVariant"),
    ("contrast_bolus_agent", "ContrastBolusAgent"),
    ("contrast_bolus_ingredient", "ContrastBolusIngredient"),
    ("mr_acquisition_type", "MRAcquisitionType"), ("manufacturer", "Manufacturer"),
    ("manufacturer_model_name", "ManufacturerModelName"),
)
_FLOAT_COLUMNS = (
    ("repetition_time_ms", "RepetitionTime"), ("echo_time_ms", "EchoTime"),
    ("inversion_time_ms", "InversionTime"), ("flip_angle_deg", "FlipAngle"),
    ("slice_thickness_mm", "SliceThickness"),
    ("spacing_between_slices_mm", "SpacingBetweenSlices"),
    ("magnetic_field_strength_t", "MagneticFieldStrength"),
)
_INT_COLUMNS = (
    ("series_number", "SeriesNumber"), ("instance_number", "InstanceNumber"),
    ("rows", "Rows"), ("columns", "Columns"),
)
_FLOAT_LIST_COLUMNS = (
    ("image_orientation_patient", "ImageOrientationPatient"),
    ("image_position_patient", "ImagePositionPatient"),
    ("pixel_spacing_mm", "PixelSpacing"),
)

def _tags(keywords: Iterable[str]) -> list[int]:
    from pydicom.datadict import tag_for_keyword

    return [int(tag_for_keyword(k)) for k in keywords]  # type: ignore[arg-type]


HEADER_TAGS = _tags(HEADER_KEYWORDS)
_KEYWORDS = dict(zip(HEADER_TAGS, HEADER_KEYWORDS))

SCHEMA = pa.schema(
    [
        ("path", pa.string()), ("size_bytes", pa.int64()), ("readable", pa.bool_()),
        ("reason", pa.string()), ("sop_class_name", pa.string()),
        ("transfer_syntax_uid", pa.string()),
    ]
    + [(name, pa.string()) for name, _ in _STRING_COLUMNS]
    + [(name, pa.float64()) for name, _ in _FLOAT_COLUMNS]
    + [(name, pa.int64()) for name, _ in _INT_COLUMNS]
    + [(name, pa.list_(pa.float64())) for name, _ in _FLOAT_LIST_COLUMNS]
    + [
        ("image_type", pa.list_(pa.string())),
        # RT Structure Set only
        ("structure_set_label", pa.string()), ("structure_set_date", pa.string()),
        ("structure_set_time", pa.string()), ("rtss_roi_count", pa.int64()),
        ("rtss_contour_count", pa.int64()),
        ("rtss_referenced_frame_of_reference_uids", pa.list_(pa.string())),
        ("rtss_referenced_study_uids", pa.list_(pa.string())),
        ("rtss_referenced_series_uids", pa.list_(pa.string())),
        ("rtss_referenced_sop_instance_uids", pa.list_(pa.string())),
        # JSON list of [x, y, z] mean points (LPS mm), one per planar contour
        ("rtss_contour_points_json", pa.string()),
    ]
)


@dataclass(frozen=True)
class SkippedEntry:
    """A directory entry the walk did not descend into, and why."""

    path: str
    reason: str


def walk_input(input_dir: Path | str) -> tuple[list[str], list[SkippedEntry]]:
    """Walk `input_dir` recursively, following symlinks but never a loop.

    Returns the sorted relative POSIX paths of the regular files, and the entries that
    were skipped (symlink loops, dangling links) with a reason.
    """
    root = Path(input_dir)
    files: list[str] = []
    skipped: list[SkippedEntry] = []
    visited_dirs: set[tuple[int, int]] = set()

    def visit(directory: Path, rel: str) -> None:
        st = directory.stat()
        visited_dirs.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            skipped.append(SkippedEntry(rel or ".", f"directory cannot be listed: {err.strerror}"))
            return
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = entry.is_file(follow_symlinks=True)
            except OSError:
                is_dir = is_file = False
            if is_dir:
                child_st = os.stat(entry.path)
                if (child_st.st_dev, child_st.st_ino) in visited_dirs:
                    target = os.path.realpath(entry.path)
                    skipped.append(SkippedEntry(
                        child_rel,
                        f"symbolic link loop: points back to a folder already scanned ({target})",
                    ))
                    continue
                visit(Path(entry.path), child_rel)
            elif is_file:
                files.append(child_rel)
            elif entry.is_symlink():
                skipped.append(SkippedEntry(child_rel, "dangling symbolic link (target does not exist)"))
    visit(root, "")
    files.sort()
    skipped.sort(key=lambda s: s.path)
    return files, skipped


def list_files(input_dir: Path | str) -> list[str]:
    """Sorted relative POSIX paths of all files under `input_dir` (symlink loops skipped)."""
    return walk_input(input_dir)[0]


def shard_of(index: int, n_shards: int) -> int:
    """Shard that scans the file at position `index` of the sorted file list."""
    return index % n_shards


def scan_shard(input_dir: Path, shard: int, n_shards: int, out_parquet: Path) -> None:
    """Read the headers of this shard's share of the files and write one row per file.

    Shard 0 also records the entries the walk skipped (symlink loops) as unreadable rows.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    input_dir = Path(input_dir)
    files, skipped = walk_input(input_dir)
    rows = [read_file_row(input_dir, rel) for i, rel in enumerate(files) if shard_of(i, n_shards) == shard]
    if shard == 0:
        rows += [_empty_row(s.path, None, s.reason) for s in skipped]
    write_rows(rows, out_parquet)


def scan_all(input_dir: Path, out_parquet: Path) -> None:
    """Scan every file in one process (tests, small folders)."""
    scan_shard(input_dir, 0, 1, out_parquet)


def merge_shards(shard_paths: Iterable[Path | str], out_parquet: Path | str) -> None:
    """Concatenate shard tables, sort by path, write the inventory."""
    tables = [pq.read_table(p, schema=SCHEMA) for p in shard_paths]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    table = table.sort_by([("path", "ascending")])
    Path(out_parquet).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_parquet)


def write_rows(rows: list[dict[str, Any]], out_parquet: Path | str) -> None:
    rows = sorted(rows, key=lambda r: r["path"])
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    Path(out_parquet).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_parquet)


# --- one file ---------------------------------------------------------------------

def _empty_row(rel: str, size: int | None, reason: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in SCHEMA.names}
    row.update(path=rel, size_bytes=size, readable=reason is None, reason=reason)
    return row


def read_file_row(input_dir: Path, rel: str) -> dict[str, Any]:
    """Inventory row of one file; never raises for bad data."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_partial

    path = input_dir / rel
    try:
        size = path.stat().st_size
    except OSError as err:
        return _empty_row(rel, None, f"file cannot be opened: {err.strerror}")
    if size == 0:
        return _empty_row(rel, 0, "empty file (0 bytes)")
    try:
        with open(path, "rb") as fp:
            # stop after the last tag needed: the rest of the header is never parsed
            ds = read_partial(fp, stop_when=_past_header_tags, specific_tags=HEADER_TAGS)
            values = _decode_header(ds)
            header_end = _pixel_data_start(fp, ds, values, size)
    except InvalidDicomError:
        return _empty_row(rel, size, _not_dicom_reason(path))
    except (EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as err:
        return _empty_row(rel, size, f"DICOM header cannot be read (truncated or corrupt): {err}")

    row = _empty_row(rel, size, None)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        row["transfer_syntax_uid"] = str(meta.get("TransferSyntaxUID", "")) or None
    sop_class = values.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    if sop_class is None and meta is not None and "FileSetID" in ds:
        sop_class = MEDIA_STORAGE_DIRECTORY_SOP_CLASS_UID
    _fill_header_columns(row, values)
    if sop_class is not None:
        row["sop_class_uid"] = str(sop_class)
        row["sop_class_name"] = _uid_name(str(sop_class))
    if row["sop_class_uid"] == MEDIA_STORAGE_DIRECTORY_SOP_CLASS_UID or rel.upper().endswith("DICOMDIR"):
        row.update(readable=False, reason="DICOMDIR: a media directory index, not an image")
        return row
    if row["sop_instance_uid"] is None or row["sop_class_uid"] is None:
        row.update(readable=False, reason="DICOM file without SOP Class/Instance UID (not an image or structure set)")
        return row

    truncation = _pixel_data_shortfall(values, row["transfer_syntax_uid"], size, header_end, row["sop_class_name"])
    if truncation:
        row.update(readable=False, reason=truncation)
        return row
    if row["sop_class_uid"] == RTSTRUCT_SOP_CLASS_UID or row["modality"] == "RTSTRUCT":
        try:
            truncation = _top_level_truncation(path)
            if truncation is None:
                _fill_rtss_columns(row, pydicom.dcmread(path))
        except Exception as err:  # noqa: BLE001 - any parse failure is data
            truncation = f"RT Structure Set cannot be read completely (truncated or corrupt): {err}"
        if truncation:
            row.update(readable=False, reason=truncation)
    return row


def _top_level_truncation(path: Path) -> str | None:
    """Reason if the last top-level element of a file is cut off.

    pydicom reads a file that ends early without complaint, so the element lengths are
    checked against the bytes present.
    """
    from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
    from pydicom.uid import UID

    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        syntax = UID(str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
        implicit = syntax.is_implicit_VR if syntax.is_transfer_syntax else True
        little = syntax.is_little_endian if syntax.is_transfer_syntax else True
        end = fp.tell()
        for raw in data_element_generator(fp, implicit, little):
            if raw.length == 0xFFFFFFFF:
                end = fp.tell()
                continue
            got = 0 if raw.value is None else len(raw.value)
            if got != raw.length:
                return f"truncated: element {raw.tag} has {got} of {raw.length} bytes"
            end = raw.value_tell + raw.length
        size = fp.seek(0, 2)
    if end < size:
        return f"truncated: {size - end} trailing bytes do not form a complete element"
    return None


LAST_HEADER_TAG = max(HEADER_TAGS)


def _past_header_tags(tag: Any, vr: Any, length: Any) -> bool:
    return int(tag) > LAST_HEADER_TAG


def _pixel_data_start(fp: Any, ds: Any, values: dict[str, Any], size: int) -> int:
    """File offset of the Pixel Data element (size if there is none).

    Fast path for uncompressed images: the Pixel Data element header sits exactly
    `expected bytes + 8 or 12` before the end of a complete file. Otherwise the rest of
    the header is walked (as `stop_before_pixels` would).
    """
    import pydicom

    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if getattr(ds, "file_meta", None) else ""
    expected = _expected_pixel_bytes(values)
    little = syntax != "1.2.840.10008.1.2.2"
    if expected and not syntax.startswith(_COMPRESSED_PREFIXES):
        end = "<" if little else ">"
        for header_len in (12, 8):
            start = size - expected - header_len
            if start < 0:
                continue
            fp.seek(start)
            head = fp.read(header_len)
            group, element = struct.unpack(end + "HH", head[:4])
            length = struct.unpack(end + "I", head[header_len - 4:])[0]
            if (group, element) == (0x7FE0, 0x0010) and length == expected:
                return start
    fp.seek(0)
    pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=[0x00280010])
    return fp.tell()


def _expected_pixel_bytes(values: dict[str, Any]) -> int | None:
    rows, cols, bits = (_to_float(values.get(k)) for k in ("Rows", "Columns", "BitsAllocated"))
    if not (rows and cols and bits):
        return None
    frames = int(_to_float(values.get("NumberOfFrames")) or 1)
    samples = int(_to_float(values.get("SamplesPerPixel")) or 1)
    return int(rows) * int(cols) * samples * int(bits) // 8 * frames


def _not_dicom_reason(path: Path) -> str:
    with open(path, "rb") as fp:
        head = fp.read(132)
    if len(head) < 132:
        return f"not a DICOM file: only {len(head)} bytes, no 128-byte preamble and 'DICM' prefix"
    return "not a DICOM file: no 'DICM' prefix after the 128-byte preamble"


_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


def _decode_header(ds: Any) -> dict[str, Any]:
    """Keyword -> value of the header tags read, decoded straight from the raw bytes.

    pydicom's own value conversion (with validation) costs more than parsing the file;
    these few VRs are simple enough to decode here. Text values become a str (one
    value) or a list of str (multi-valued); binary numbers a number or a list.
    """
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    out: dict[str, Any] = {}
    for tag, raw in ds._dict.items():
        keyword = _KEYWORDS.get(int(tag)) or keyword_for_tag(tag)
        if not keyword:
            continue
        if not getattr(raw, "is_raw", False):  # already converted by pydicom
            out[keyword] = raw.value
            continue
        vr = raw.VR or dictionary_VR(tag)
        data = raw.value or b""
        if vr in _TEXT_VRS:
            text = data.decode("latin-1").rstrip("\x00 ").strip()
            parts = [part.strip() for part in text.split("\\")] if vr not in ("LT", "ST", "UT") else [text]
            out[keyword] = parts[0] if len(parts) == 1 else parts
        elif vr in _BINARY_FORMATS:
            fmt = _BINARY_FORMATS[vr]
            count = len(data) // struct.calcsize(fmt)
            values = struct.unpack(("<" if raw.is_little_endian else ">") + fmt * count, data[: count * struct.calcsize(fmt)])
            out[keyword] = values[0] if count == 1 else list(values) if count else None
        else:
            out[keyword] = ds[tag].value
    return out


def _uid_name(uid: str) -> str | None:
    from pydicom.uid import UID

    name = UID(uid).name
    return None if name == uid else name


def _value(values: dict[str, Any], keyword: str) -> Any:
    value = values.get(keyword)
    if value is None or value == "" or value == []:
        return None
    return value


def _fill_header_columns(row: dict[str, Any], ds: dict[str, Any]) -> None:
    for column, keyword in _STRING_COLUMNS:
        value = _value(ds, keyword)
        if value is not None:
            if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
                value = "\\".join(str(v) for v in value)
            row[column] = str(value).strip() or None
    for column, keyword in _FLOAT_COLUMNS:
        value = _value(ds, keyword)
        row[column] = _to_float(value)
    for column, keyword in _INT_COLUMNS:
        value = _value(ds, keyword)
        try:
            row[column] = None if value is None else int(value)
        except (TypeError, ValueError):
            row[column] = None
    for column, keyword in _FLOAT_LIST_COLUMNS:
        value = _value(ds, keyword)
        if value is not None:
            values = list(value) if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue" else [value]
            try:
                row[column] = [float(v) for v in values]
            except (TypeError, ValueError):
                row[column] = None
    image_type = _value(ds, "ImageType")
    if image_type is not None:
        values = [image_type] if isinstance(image_type, str) else list(image_type)
        row["image_type"] = [str(v).strip().upper() for v in values]


def _to_float(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_COMPRESSED_PREFIXES = ("1.2.840.10008.1.2.4", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.8")


def _pixel_data_shortfall(
    ds: dict[str, Any], syntax: str | None, size: int, header_end: int, sop_class_name: str | None
) -> str | None:
    """Reason if the file ends before its (uncompressed) pixel data is complete."""
    rows, cols, bits = (_to_float(ds.get(k)) for k in ("Rows", "Columns", "BitsAllocated"))
    is_image = bool(sop_class_name and sop_class_name.endswith("Image Storage"))
    if is_image and (header_end >= size or not (rows and cols and bits)):
        return "truncated: file ends before the pixel data"
    if not (rows and cols and bits):
        return None
    if (syntax or "").startswith(_COMPRESSED_PREFIXES):
        return None
    if header_end >= size:
        return "truncated: file ends before the pixel data"
    expected = _expected_pixel_bytes(ds) or 0
    # the Pixel Data element header is 8 (implicit VR) or 12 (explicit VR OW/OB) bytes
    available = size - header_end - 8
    if available < expected:
        return f"truncated: pixel data has {max(available, 0)} of {expected} bytes"
    return None


_CONTOUR_DATA_TAG = 0x30060050


def _contour_data(contour: Any) -> Any:
    """Contour Data as a float array, parsed from the raw decimal strings when possible
    (pydicom's per-value DS objects dominate the cost of reading a structure set)."""
    import numpy as np

    raw = contour._dict.get(_CONTOUR_DATA_TAG)
    if raw is None:
        return np.zeros(0)
    if getattr(raw, "is_raw", False) and isinstance(raw.value, bytes):
        text = raw.value.decode("latin-1").strip("\x00 ")
        return np.array([float(v) for v in text.split("\\") if v.strip()]) if text else np.zeros(0)
    return np.asarray([float(v) for v in contour.ContourData])


def _fill_rtss_columns(row: dict[str, Any], ds: Any) -> None:
    """References and compact contour geometry of an RT Structure Set."""
    row["structure_set_label"] = str(ds.get("StructureSetLabel", "") or "") or None
    row["structure_set_date"] = str(ds.get("StructureSetDate", "") or "") or None
    row["structure_set_time"] = str(ds.get("StructureSetTime", "") or "") or None
    row["rtss_roi_count"] = len(ds.get("StructureSetROISequence", []) or [])
    for_uids: list[str] = []
    study_uids: list[str] = []
    series_uids: list[str] = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        if frame.get("FrameOfReferenceUID"):
            for_uids.append(str(frame.FrameOfReferenceUID))
        for study in frame.get("RTReferencedStudySequence", []) or []:
            if study.get("ReferencedSOPInstanceUID"):
                study_uids.append(str(study.ReferencedSOPInstanceUID))
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                if series.get("SeriesInstanceUID"):
                    series_uids.append(str(series.SeriesInstanceUID))
    sop_uids: set[str] = set()
    points: list[list[float]] = []
    for roi_contour in ds.get("ROIContourSequence", []) or []:
        for contour in roi_contour.get("ContourSequence", []) or []:
            for image in contour.get("ContourImageSequence", []) or []:
                if image.get("ReferencedSOPInstanceUID"):
                    sop_uids.add(str(image.ReferencedSOPInstanceUID))
            data = _contour_data(contour)
            if len(data) >= 3:
                mean = data[: len(data) // 3 * 3].reshape(-1, 3).mean(axis=0)
                points.append([round(float(v), 3) for v in mean])
    row["rtss_contour_count"] = len(points)
    row["rtss_referenced_frame_of_reference_uids"] = sorted(set(for_uids))
    row["rtss_referenced_study_uids"] = sorted(set(study_uids))
    row["rtss_referenced_series_uids"] = sorted(set(series_uids))
    row["rtss_referenced_sop_instance_uids"] = sorted(sop_uids)
    row["rtss_contour_points_json"] = json.dumps(points)
