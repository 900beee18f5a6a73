"""De-identification audit: what each input file still carries that the collection's profile says
must be gone.

The profile (`DeidSettings`, config section `deid`): Patient's Name matches a pseudonym pattern
(`{patient_id}` stands for the file's own Patient ID); Birth Date is empty or generalised like
every other date (to `generalised_year`); the attributes in `must_be_empty` (other IDs and names,
institution, station, device serial number, operators, physicians, accession number, admitting and
performed-procedure-step data, addresses ...) are absent or empty at any depth; no private tags;
the Specific Character Set is one pydicom knows and every text value decodes under it.

A finding names the file, the tag and what is wrong, never the value itself: the audit must not
become the leak it looks for (`catalog/deid_audit.parquet`, one row per file and finding).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from metsprep.atomic import write_parquet
from metsprep.dicom_dates import valid_dicom_date
from metsprep.settings import DeidSettings

AUDIT_DESCRIPTIONS = {
    "path": "File, relative to the input folder",
    "sop_instance_uid": "SOP Instance UID of the file",
    "tag": "DICOM tag (gggg,eeee) of the finding; null for a finding about the whole file",
    "keyword": "DICOM keyword of the tag (or 'private' / 'SpecificCharacterSet')",
    "finding": "What the profile forbids and the file has (never the value itself)",
    "detail": "Non-identifying detail: value length, count of private elements, the profile rule",
}
AUDIT_SCHEMA = pa.schema([pa.field(name, pa.string(), metadata={"description": text})
                          for name, text in AUDIT_DESCRIPTIONS.items()])  # fmt: skip
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}


def audit_dataset(ds: Any, rel: str, settings: DeidSettings) -> list[dict[str, Any]]:
    """The findings of one read dataset (pydicom Dataset, pixel data not needed)."""
    from pydicom.charset import python_encoding

    uid = str(getattr(ds, "SOPInstanceUID", "") or "") or None
    findings: list[dict[str, Any]] = []

    def add(element: Any | None, keyword: str, finding: str, detail: str) -> None:
        tag = f"({element.tag.group:04X},{element.tag.element:04X})" if element is not None else None
        findings.append({"path": rel, "sop_instance_uid": uid, "tag": tag, "keyword": keyword,
                         "finding": finding, "detail": detail})  # fmt: skip

    charsets = ds.get("SpecificCharacterSet", None)
    declared = [charsets] if isinstance(charsets, str) else list(charsets or [])
    unknown = [c for c in declared if c and c.strip() and c.strip() not in python_encoding]
    if unknown:
        add(ds["SpecificCharacterSet"], "SpecificCharacterSet", "unknown character set",
            f"{len(unknown)} value(s) pydicom does not know; names may be garbled")  # fmt: skip

    ascii_only = not [c for c in declared if c and c.strip() and c.strip() != "ISO_IR 6"]
    patient_id = str(ds.get("PatientID", "") or "")
    name_pattern = re.compile(settings.patient_name_pattern.replace("{patient_id}", re.escape(patient_id)))
    must_be_empty = set(settings.must_be_empty)
    private: list[Any] = []
    undecodable: list[Any] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for element in ds.iterall():
            if element.tag.is_private:
                private.append(element)
                continue
            keyword = element.keyword
            filled = not _is_empty(element.value)
            if keyword in must_be_empty and filled:
                add(element, keyword, "identifying attribute filled", f"{_length(element.value)} characters or items")
            elif keyword == "PatientName" and not name_pattern.fullmatch(str(element.value or "")):
                add(element, keyword, "Patient's Name does not match the pseudonym pattern",
                    f"{len(str(element.value))} characters; pattern {settings.patient_name_pattern}")  # fmt: skip
            elif element.VR in ("DA", "DT") and filled and not _generalised(element.value, settings.generalised_year):
                add(element, keyword, f"date not generalised to {settings.generalised_year}", "a date of another year")
            elif element.VR == "DA" and filled and not all(valid_dicom_date(str(v)) for v in _values(element.value)):
                add(element, keyword, "malformed date", "not a real YYYYMMDD calendar date")
            if element.VR in _TEXT_VRS and filled:
                before = len(caught)
                text = str(element.value)  # decoding happens here; a bad byte warns
                # without a declared character set only ASCII is valid (pydicom would read Latin-1)
                if len(caught) > before or (ascii_only and not text.isascii()):
                    undecodable.append(element)
    if private:
        groups = sorted({f"{e.tag.group:04X}" for e in private})
        add(None, "private", "private tags present", f"{len(private)} private elements in groups {', '.join(groups)}")
    for element in undecodable:
        add(element, element.keyword, "text not valid in the declared character set",
            f"declared {'/'.join(declared) or 'default (ASCII)'}")  # fmt: skip
    return findings


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, bytes):
        return not value.strip(b"\x00 ")
    try:
        return len(value) == 0
    except TypeError:
        return False


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 1


def _values(value: Any) -> list[str]:
    return [str(value)] if isinstance(value, str) or not hasattr(value, "__iter__") else [str(v) for v in value]


def _generalised(value: Any, year: str) -> bool:
    return all(v.strip()[:4] == year for v in _values(value) if v.strip())


def audit_file(input_dir: Path, rel: str, settings: DeidSettings) -> list[dict[str, Any]]:
    """Findings of one file; a file that cannot be read was listed by the scan and has none here."""
    import pydicom

    try:
        ds = pydicom.dcmread(Path(input_dir) / rel, stop_before_pixels=True)
    except Exception:  # unreadable files carry their reason in the inventory
        return []
    try:
        return audit_dataset(ds, rel, settings)
    except Exception as exc:  # pydicom parses lazily: a broken element stream surfaces here
        return [{"path": rel, "sop_instance_uid": None, "tag": None, "keyword": None,
                 "finding": "header cannot be read completely: not audited", "detail": type(exc).__name__}]  # fmt: skip


def audit_shard(input_dir: Path, shard_inventory: Path, settings: DeidSettings, out_parquet: Path) -> None:
    """Audit the readable files of one scan shard."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(str(shard_inventory)).read(columns=["path", "readable"])
    paths = [p for p, ok in zip(table.column("path").to_pylist(), table.column("readable").to_pylist(), strict=True) if ok]
    rows = [finding for rel in paths for finding in audit_file(Path(input_dir), rel, settings)]
    write_parquet(Path(out_parquet), pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA))


def merge_audit(shards: Iterable[Path], out_parquet: Path) -> None:
    import pyarrow.parquet as pq

    tables = [pq.ParquetFile(str(p)).read() for p in shards]
    merged = pa.concat_tables(tables) if tables else AUDIT_SCHEMA.empty_table()
    write_parquet(Path(out_parquet), merged.sort_by([("path", "ascending"), ("tag", "ascending")]))
