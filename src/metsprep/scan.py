"""Inventory of an input folder: one row per file, headers only, in shards.

The scan never decides anything about cases; it records what each file is (or why it
cannot be read) so that `metsprep.match` can group by UID. Each file is opened once:
the header tags are parsed from the first bytes with pydicom's element parser (as
`stop_before_pixels` with `specific_tags` would, without building a `Dataset`); an RT
Structure Set is then read completely, once, and that same parse checks that no element
is cut off, so its references and contour planes are available for matching.
Measured against a plain `dcmread(stop_before_pixels=True)` loop in
`benchmarks/bench_scan.py`.

Files are walked in a deterministic order (sorted relative POSIX paths); shard `k` of
`n` takes the files whose index in that list is `k` modulo `n`.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metsprep.atomic import write_parquet
from metsprep.dicom_items import sequence_items

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
    ("patient_id", "PatientID"),
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

    return [int(tag_for_keyword(k)) for k in keywords]


HEADER_TAGS = _tags(HEADER_KEYWORDS)
_KEYWORDS = dict(zip(HEADER_TAGS, HEADER_KEYWORDS))

_RAW_SCHEMA = pa.schema(
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
        # never the name itself: no identifying value is written to any output
        ("patient_name_present", pa.bool_()),
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

_DESCRIPTIONS = {
    "path": "Path of the file relative to the input folder, POSIX style.",
    "size_bytes": "File size.",
    "readable": "True when the file is a readable DICOM object.",
    "reason": "Why the file is not readable (null when readable).",
    "sop_class_name": "Name of the SOP Class (e.g. MR Image Storage, RT Structure Set Storage).",
    "transfer_syntax_uid": "Transfer Syntax UID from the file meta information (0002,0010).",
    "image_type": "DICOM ImageType (0008,0008) values.",
    "patient_name_present": "True when Patient's Name (0010,0010) is filled; the name itself is never written.",
    "structure_set_label": "RTSS StructureSetLabel (3006,0002).",
    "structure_set_date": "RTSS StructureSetDate (3006,0008).",
    "structure_set_time": "RTSS StructureSetTime (3006,0009).",
    "rtss_roi_count": "RTSS: number of items in StructureSetROISequence.",
    "rtss_contour_count": "RTSS: number of contours over all ROIs.",
    "rtss_referenced_frame_of_reference_uids": "RTSS: Frame of Reference UIDs it references.",
    "rtss_referenced_study_uids": "RTSS: Study Instance UIDs in RTReferencedStudySequence.",
    "rtss_referenced_series_uids": "RTSS: Series Instance UIDs in RTReferencedSeriesSequence.",
    "rtss_referenced_sop_instance_uids": "RTSS: every Referenced SOP Instance UID of the contours.",
    "rtss_contour_points_json": "RTSS: JSON list of each planar contour's mean point [x, y, z] in LPS mm.",
}
_UNITS = {"_ms": "ms", "_mm": "mm", "_deg": "degree", "_t": "T", "size_bytes": "byte"}


def _field_metadata(name: str) -> dict[bytes, bytes]:
    from pydicom.datadict import tag_for_keyword

    keyword = _COLUMN_KEYWORDS.get(name)
    if keyword is not None:
        tag = int(tag_for_keyword(keyword))
        description = f"DICOM {keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}) as read from the header."
    else:
        description = _DESCRIPTIONS[name]
    metadata = {b"description": description.encode()}
    unit = next((u for suffix, u in _UNITS.items() if name.endswith(suffix)), None)
    if unit is not None:
        metadata[b"unit"] = unit.encode()
    return metadata


_COLUMN_KEYWORDS = dict(_STRING_COLUMNS + _FLOAT_COLUMNS + _INT_COLUMNS + _FLOAT_LIST_COLUMNS)
_COLUMN_KEYWORDS.pop("pixel_spacing_mm")
_DESCRIPTIONS["pixel_spacing_mm"] = "DICOM PixelSpacing (0028,0030): row spacing, column spacing."
SCHEMA = pa.schema([field.with_metadata(_field_metadata(field.name)) for field in _RAW_SCHEMA])


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
            elif entry.is_symlink() and not os.path.exists(entry.path):
                skipped.append(SkippedEntry(child_rel, "dangling symbolic link (target does not exist)"))
            else:  # opening a named pipe would block the scan for ever
                skipped.append(SkippedEntry(child_rel, "not a regular file (a named pipe, socket or device): not read"))
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


_FILE_LIST_SCHEMA = pa.schema([("path", pa.string()), ("skipped_reason", pa.string())])


def write_file_list(input_dir: Path, out_parquet: Path) -> None:
    """The one walk of the input folder: every file, and every entry skipped with why.

    The shards read this list instead of walking the tree each (a walk of a large folder on
    network storage costs as much as scanning a shard)."""
    files, skipped = walk_input(Path(input_dir))
    table = pa.Table.from_pylist(
        [{"path": f, "skipped_reason": None} for f in files] + [{"path": s.path, "skipped_reason": s.reason} for s in skipped],
        schema=_FILE_LIST_SCHEMA,
    )
    write_parquet(Path(out_parquet), table)


def _read_file_list(path: Path) -> tuple[list[str], list[SkippedEntry]]:
    rows = pq.ParquetFile(str(path)).read().to_pylist()
    files = [r["path"] for r in rows if r["skipped_reason"] is None]
    skipped = [SkippedEntry(r["path"], r["skipped_reason"]) for r in rows if r["skipped_reason"] is not None]
    return files, skipped


def scan_shard(input_dir: Path, shard: int, n_shards: int, out_parquet: Path, file_list: Path | None = None) -> None:
    """Read the headers of this shard's share of the files and write one row per file.

    ``file_list`` (from `write_file_list`): the files to share out; without it the folder is
    walked here. Shard 0 also records the entries the walk skipped (symlink loops) as
    unreadable rows.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    input_dir = Path(input_dir)
    files, skipped = _read_file_list(Path(file_list)) if file_list is not None else walk_input(input_dir)
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
    from metsprep import __version__

    table = table.replace_schema_metadata({
        "table": "inventory",
        "description": "One row per input file, unreadable files included with the reason.",
        "sort_keys": "path",
        "metsprep_version": __version__,
        "created_by": "metsprep.scan.merge_shards",
    })
    write_parquet(out_parquet, table)


def write_rows(rows: list[dict[str, Any]], out_parquet: Path | str) -> None:
    rows = sorted(rows, key=lambda r: r["path"])
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    write_parquet(out_parquet, table)


# --- one file ---------------------------------------------------------------------

_EMPTY_ROW: dict[str, Any] = dict.fromkeys(SCHEMA.names)


def _empty_row(rel: str, size: int | None, reason: str | None) -> dict[str, Any]:
    row = _EMPTY_ROW.copy()
    row.update(path=rel, size_bytes=size, readable=reason is None, reason=reason)
    return row


def read_file_row(input_dir: Path | str, rel: str) -> dict[str, Any]:
    """Inventory row of one file; never raises for bad data.

    The file is opened once. Its header is parsed from an in-memory prefix with
    pydicom's element parser (no `Dataset` is built for an image); an RT Structure Set
    is read completely, once, and that same parse proves it is not truncated.
    """
    from pydicom.errors import InvalidDicomError

    try:
        fp = open(os.path.join(input_dir, rel), "rb")  # noqa: SIM115 - closed below
    except OSError as err:
        return _empty_row(rel, None, f"file cannot be opened: {err.strerror}")
    with fp:
        try:
            size = os.fstat(fp.fileno()).st_size
        except OSError as err:
            return _empty_row(rel, None, f"file cannot be opened: {err.strerror}")
        if size == 0:
            return _empty_row(rel, 0, "empty file (0 bytes)")
        try:
            header = _read_header(fp, size)
            header_end = _pixel_data_start(fp, header, size)
        except InvalidDicomError:
            return _empty_row(rel, size, _not_dicom_reason(size))
        except (EOFError, OSError, ValueError, KeyError, TypeError, struct.error, NotImplementedError) as err:
            # NotImplementedError: pydicom's word for a VR it does not know (a corrupt byte)
            return _empty_row(rel, size, f"DICOM header cannot be read (truncated or corrupt): {err}")

        values = header.values
        row = _empty_row(rel, size, None)
        row["transfer_syntax_uid"] = header.syntax
        sop_class = values.get("SOPClassUID") or header.media_sop_class
        if sop_class is None and header.has_meta and "FileSetID" in values:
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

        absurd = _absurd_image_reason(values, row["sop_class_name"])
        if absurd:
            row.update(readable=False, reason=absurd)
            return row
        truncation = _pixel_data_shortfall(values, header.syntax, size, header_end, row["sop_class_name"])
        if truncation:
            row.update(readable=False, reason=truncation)
            return row
        if row["sop_class_uid"] == RTSTRUCT_SOP_CLASS_UID or row["modality"] == "RTSTRUCT":
            try:
                elements, truncation = _read_complete_dataset(fp, header, size)
                if truncation is None:
                    _fill_rtss_columns(row, elements)
            except Exception as err:
                truncation = f"RT Structure Set cannot be read completely (truncated or corrupt): {err}"
            if truncation:
                row.update(readable=False, reason=truncation)
    return row


# Most image headers fit in this many bytes; a longer header is read whole.
_PREFIX_BYTES = 16 * 1024
_DEFLATED = "1.2.840.10008.1.2.1.99"
_FILE_SET_ID_TAG = 0x00041130
_MEDIA_SOP_CLASS_TAG = 0x00020002
_TRANSFER_SYNTAX_TAG = 0x00020010
# Tags whose values the header parse keeps; all other values are skipped unread.
_WANTED_TAGS = [_FILE_SET_ID_TAG, *HEADER_TAGS]
_WANTED_KEYWORDS = {**_KEYWORDS, _FILE_SET_ID_TAG: "FileSetID"}


@dataclass
class _Header:
    """What the header parse of one file found."""

    has_meta: bool
    syntax: str | None  # Transfer Syntax UID as written (None without file meta)
    media_sop_class: str | None
    implicit_vr: bool
    little_endian: bool
    data: bytes  # the bytes parsed (a prefix of the file, or all of it)
    dataset_start: int  # file offset of the data set (after the file meta)
    header_stop: int  # offset where the parse stopped (first element past the header tags)
    values: dict[str, Any]


def _read_header(fp: Any, size: int) -> _Header:
    """Parse file meta and the header tags from the start of an open file."""
    data = fp.read(_PREFIX_BYTES)
    if len(data) < size:
        try:
            header = _parse_header(data, whole_file=False)
        except (EOFError, ValueError, struct.error):  # cut off by the prefix, not the file
            header = None
        if header is not None:
            return header
        fp.seek(0)
        data = fp.read()
    header = _parse_header(data, whole_file=True)
    assert header is not None
    return header


def _parse_header(data: bytes, whole_file: bool) -> _Header | None:
    """Header of a file from its first bytes; None if `data` is a prefix that ends
    before the header tags do (the caller then reads the whole file)."""
    from pydicom.filereader import _is_implicit_vr, data_element_generator, read_preamble

    buffer = BytesIO(data)
    read_preamble(buffer, False)  # InvalidDicomError without the 'DICM' prefix
    meta: dict[int, bytes] = {}
    for elem in data_element_generator(buffer, False, True, stop_when=_past_file_meta):
        tag = int(elem.tag)
        if tag in (_MEDIA_SOP_CLASS_TAG, _TRANSFER_SYNTAX_TAG) and isinstance(elem.value, bytes):
            meta[tag] = elem.value
    syntax = _text_uid(meta.get(_TRANSFER_SYNTAX_TAG))
    implicit, little = _syntax_encoding(syntax)
    dataset_start = buffer.tell()
    if syntax == _DEFLATED:
        if not whole_file:
            return None
        buffer = BytesIO(zlib.decompress(data[dataset_start:], -zlib.MAX_WBITS))
    else:
        # the same guard as pydicom: some files declare one VR encoding and use the other
        implicit = _is_implicit_vr(buffer, implicit, little, None, is_sequence=False)
        buffer.seek(dataset_start)

    stopped = False

    def past_header_tags(tag: int, vr: Any, length: int) -> bool:
        nonlocal stopped
        stopped = int(tag) > LAST_HEADER_TAG  # plain int: BaseTag comparisons are slow
        return stopped

    raw_values = [
        elem for elem in data_element_generator(
            buffer, implicit, little, stop_when=past_header_tags, specific_tags=_WANTED_TAGS
        )
    ]
    if not stopped and not whole_file and buffer.tell() >= len(data):
        return None
    return _Header(
        has_meta=bool(meta), syntax=syntax or None, media_sop_class=_text_uid(meta.get(_MEDIA_SOP_CLASS_TAG)),
        implicit_vr=implicit, little_endian=little, data=data, dataset_start=dataset_start,
        header_stop=buffer.tell() if syntax != _DEFLATED else -1, values=_decode_header(raw_values),
    )


def _past_file_meta(tag: int, vr: Any, length: int) -> bool:
    return int(tag) >> 16 != 0x0002


def _text_uid(value: bytes | None) -> str | None:
    return value.decode("ascii", "replace").rstrip("\x00 ").strip() or None if value else None


@functools.lru_cache(maxsize=64)
def _syntax_encoding(syntax: str | None) -> tuple[bool, bool]:
    """(implicit VR, little endian) of a transfer syntax; pydicom's default if unknown."""
    from pydicom.uid import UID

    uid = UID(syntax or "1.2.840.10008.1.2")
    if not uid.is_transfer_syntax:
        return True, True
    return uid.is_implicit_VR, uid.is_little_endian


def _read_complete_dataset(fp: Any, header: _Header, size: int) -> tuple[dict[int, Any], str | None]:
    """Top-level elements (tag -> raw element) of the whole data set of a file, and a
    reason if the file is cut off.

    pydicom reads a file that ends early without complaint, so while the top-level
    elements are parsed their lengths are checked against the bytes present, and the
    last element must end where the file ends.
    """
    from pydicom.dataelem import RawDataElement
    from pydicom.filereader import data_element_generator

    data = header.data
    if len(data) < size:
        fp.seek(0)
        data = fp.read()
    if header.syntax == _DEFLATED:
        buffer = BytesIO(zlib.decompress(data[header.dataset_start:], -zlib.MAX_WBITS))
        stream_size = len(buffer.getbuffer())
    else:
        buffer = BytesIO(data)
        buffer.seek(header.dataset_start)
        stream_size = size
    elements: dict[int, Any] = {}
    end = buffer.tell()
    for elem in data_element_generator(buffer, header.implicit_vr, header.little_endian):
        if isinstance(elem, RawDataElement) and elem.length != 0xFFFFFFFF:
            got = 0 if elem.value is None else len(elem.value)
            if got != elem.length:
                return {}, f"truncated: element {elem.tag} has {got} of {elem.length} bytes"
            end = elem.value_tell + elem.length
        else:  # an undefined-length sequence, parsed up to its delimiter
            end = buffer.tell()
        elements[int(elem.tag)] = elem
    if end < stream_size:
        return {}, f"truncated: {stream_size - end} trailing bytes do not form a complete element"
    return elements, None


LAST_HEADER_TAG = max(HEADER_TAGS)
_PIXEL_DATA_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}


def _at_pixel_data(tag: int, vr: Any, length: int) -> bool:
    return int(tag) in _PIXEL_DATA_TAGS


def _pixel_data_start(fp: Any, header: _Header, size: int) -> int:
    """File offset of the Pixel Data element (size if there is none, -1 if unknown).

    Fast path for uncompressed images: the Pixel Data element header sits exactly
    `expected bytes + 8 or 12` before the end of a complete file. Otherwise the rest of
    the header is walked from where the header parse stopped, skipping values unread
    (as `stop_before_pixels` would).
    """
    from pydicom.filereader import data_element_generator

    syntax = header.syntax or ""
    if syntax == _DEFLATED:
        return -1
    expected = _expected_pixel_bytes(header.values)
    if expected and not syntax.startswith(_COMPRESSED_PREFIXES):
        end = "<" if header.little_endian else ">"
        for header_len in (12, 8):
            start = size - expected - header_len
            if start < header.header_stop:
                continue
            fp.seek(start)
            head = fp.read(header_len)
            group, element = struct.unpack(end + "HH", head[:4])
            length = struct.unpack(end + "I", head[header_len - 4:])[0]
            if (group, element) == (0x7FE0, 0x0010) and length == expected:
                return start
    fp.seek(header.header_stop)
    for _ in data_element_generator(
        fp, header.implicit_vr, header.little_endian, stop_when=_at_pixel_data, specific_tags=[0x00080005]
    ):
        pass
    return fp.tell()


def _expected_pixel_bytes(values: dict[str, Any]) -> int | None:
    rows, cols, bits = (_to_float(values.get(k)) for k in ("Rows", "Columns", "BitsAllocated"))
    if not (rows and cols and bits):
        return None
    frames = int(_to_float(values.get("NumberOfFrames")) or 1)
    samples = int(_to_float(values.get("SamplesPerPixel")) or 1)
    return int(rows) * int(cols) * samples * int(bits) // 8 * frames


def _not_dicom_reason(size: int) -> str:
    if size < 132:
        return f"not a DICOM file: only {size} bytes, no 128-byte preamble and 'DICM' prefix"
    return "not a DICOM file: no 'DICM' prefix after the 128-byte preamble"


_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


def _dictionary_vrs(tags: Iterable[int]) -> dict[int, str]:
    from pydicom.datadict import dictionary_VR

    return {tag: dictionary_VR(tag) for tag in tags}


# looked up once: implicit VR files carry no VR
_DICTIONARY_VRS = _dictionary_vrs(_WANTED_TAGS)


def _decode_header(raw_elements: Iterable[Any]) -> dict[str, Any]:
    """Keyword -> value of the header tags read, decoded straight from the raw bytes.

    pydicom's own value conversion (with validation) costs more than parsing the file;
    these few VRs are simple enough to decode here. Text values become a str (one
    value) or a list of str (multi-valued); binary numbers a number or a list.
    """
    from pydicom.dataelem import convert_raw_data_element

    out: dict[str, Any] = {}
    for raw in raw_elements:
        tag = int(raw.tag)
        keyword = _WANTED_KEYWORDS.get(tag)
        if keyword is None:
            continue
        if not getattr(raw, "is_raw", False):  # already converted by pydicom
            out[keyword] = raw.value
            continue
        vr = raw.VR or _DICTIONARY_VRS[tag]
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
            out[keyword] = convert_raw_data_element(raw).value
    return out


@functools.lru_cache(maxsize=256)
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
    name = _value(ds, "PatientName")
    row["patient_name_present"] = name is not None and bool(str(name).strip())
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


# encapsulated (and deflated) pixel data: its size cannot be predicted from the header
_COMPRESSED_PREFIXES = ("1.2.840.10008.1.2.4", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.8", _DEFLATED)


#: Beyond any MR slice or series: a header claiming more is corrupt or hostile, and reading
#: it would make a decoder allocate (65535 x 65535 x 16 bits is 8 GB a frame).
MAX_IMAGE_SIDE = 4096
MAX_FRAMES = 4096
_BITS_ALLOCATED = (1, 8, 16, 32, 64)


def _absurd_image_reason(values: dict[str, Any], sop_class_name: str | None) -> str | None:
    """Why an image header describes no image this pipeline can hold in memory, or None."""
    if not (sop_class_name and sop_class_name.endswith("Image Storage")):
        return None
    rows, cols, bits, frames = (_to_float(values.get(k)) for k in ("Rows", "Columns", "BitsAllocated", "NumberOfFrames"))
    if (rows and rows > MAX_IMAGE_SIDE) or (cols and cols > MAX_IMAGE_SIDE):
        return (f"image matrix {int(rows or 0)} x {int(cols or 0)} is beyond any MR slice (more than "
                f"{MAX_IMAGE_SIDE} per side): not read")  # fmt: skip
    if frames and frames > MAX_FRAMES:
        return f"{int(frames)} frames in one file (more than {MAX_FRAMES}): not read"
    if bits and int(bits) not in _BITS_ALLOCATED:
        return f"Bits Allocated {int(bits)} is not a pixel size (1, 8, 16, 32 or 64): not read"
    return None


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


# RT Structure Set tags read by the walk below
_STRUCTURE_SET_LABEL, _STRUCTURE_SET_DATE, _STRUCTURE_SET_TIME = 0x30060002, 0x30060008, 0x30060009
_REFERENCED_FRAME_OF_REFERENCE_SEQUENCE = 0x30060010
_RT_REFERENCED_STUDY_SEQUENCE, _RT_REFERENCED_SERIES_SEQUENCE = 0x30060012, 0x30060014
_CONTOUR_IMAGE_SEQUENCE, _STRUCTURE_SET_ROI_SEQUENCE = 0x30060016, 0x30060020
_ROI_CONTOUR_SEQUENCE, _CONTOUR_SEQUENCE, _CONTOUR_DATA = 0x30060039, 0x30060040, 0x30060050
_FRAME_OF_REFERENCE_UID, _SERIES_INSTANCE_UID = 0x00200052, 0x0020000E
_REFERENCED_SOP_INSTANCE_UID = 0x00081155


def _text(elem: Any) -> str | None:
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").rstrip("\x00 ").strip() or None


def _contour_data(elem: Any) -> Any:
    """Contour Data as a float array, parsed from the raw decimal strings when possible
    (pydicom's per-value DS objects dominate the cost of reading a structure set). A contour
    with a value that is not a number gives an empty array: it costs that contour only (the
    rtss stage names it on its lesion), never the structure set."""
    import numpy as np

    if elem is None:
        return np.zeros(0)
    if getattr(elem, "is_raw", False) and isinstance(elem.value, bytes):
        text = elem.value.strip(b"\x00 ")
        if not text:
            return np.zeros(0)
        try:  # numpy parses the byte strings in C
            return np.array(text.split(b"\\"), dtype=float)
        except ValueError:  # empty values between separators, or text
            try:
                return np.array([float(v) for v in text.split(b"\\") if v.strip()])
            except ValueError:
                return np.zeros(0)
    try:
        return np.asarray([float(v) for v in elem.value or []])
    except (TypeError, ValueError):
        return np.zeros(0)


def _fill_rtss_columns(row: dict[str, Any], elements: dict[int, Any]) -> None:
    """References and compact contour geometry of an RT Structure Set."""
    import numpy as np

    row["structure_set_label"] = _text(elements.get(_STRUCTURE_SET_LABEL))
    row["structure_set_date"] = _text(elements.get(_STRUCTURE_SET_DATE))
    row["structure_set_time"] = _text(elements.get(_STRUCTURE_SET_TIME))
    row["rtss_roi_count"] = len(sequence_items(elements.get(_STRUCTURE_SET_ROI_SEQUENCE), [0x30060022]))
    for_uids: list[str] = []
    study_uids: list[str] = []
    series_uids: list[str] = []
    frame_tags = [_FRAME_OF_REFERENCE_UID, _RT_REFERENCED_STUDY_SEQUENCE]
    for frame in sequence_items(elements.get(_REFERENCED_FRAME_OF_REFERENCE_SEQUENCE), frame_tags):
        if uid := _text(frame.get(_FRAME_OF_REFERENCE_UID)):
            for_uids.append(uid)
        study_tags = [_REFERENCED_SOP_INSTANCE_UID, _RT_REFERENCED_SERIES_SEQUENCE]
        for study in sequence_items(frame.get(_RT_REFERENCED_STUDY_SEQUENCE), study_tags):
            if uid := _text(study.get(_REFERENCED_SOP_INSTANCE_UID)):
                study_uids.append(uid)
            for series in sequence_items(study.get(_RT_REFERENCED_SERIES_SEQUENCE), [_SERIES_INSTANCE_UID]):
                if uid := _text(series.get(_SERIES_INSTANCE_UID)):
                    series_uids.append(uid)
    sop_uids: set[str] = set()
    points: list[list[float]] = []
    for roi_contour in sequence_items(elements.get(_ROI_CONTOUR_SEQUENCE), [_CONTOUR_SEQUENCE]):
        for contour in sequence_items(roi_contour.get(_CONTOUR_SEQUENCE), [_CONTOUR_IMAGE_SEQUENCE, _CONTOUR_DATA]):
            for image in sequence_items(contour.get(_CONTOUR_IMAGE_SEQUENCE), [_REFERENCED_SOP_INSTANCE_UID]):
                if uid := _text(image.get(_REFERENCED_SOP_INSTANCE_UID)):
                    sop_uids.add(uid)
            data = _contour_data(contour.get(_CONTOUR_DATA))
            if len(data) >= 3:
                mean = data[: len(data) // 3 * 3].reshape(-1, 3).mean(axis=0)
                if np.all(np.isfinite(mean)):  # a NaN contour is no evidence of where the set lies
                    points.append([round(float(v), 3) for v in mean])
    row["rtss_contour_count"] = len(points)
    row["rtss_referenced_frame_of_reference_uids"] = sorted(set(for_uids))
    row["rtss_referenced_study_uids"] = sorted(set(study_uids))
    row["rtss_referenced_series_uids"] = sorted(set(series_uids))
    row["rtss_referenced_sop_instance_uids"] = sorted(sop_uids)
    row["rtss_contour_points_json"] = json.dumps(points)
