"""De-identification audit: planted identifying values are found by file, tag and what, and
the findings never repeat the values."""

from __future__ import annotations

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from metsprep.deid import audit_dataset, audit_file
from metsprep.settings import DeidSettings

#: planted values; none may reach any output
IDENTIFYING = {
    "PatientName": "Doe^Johanna",
    "PatientBirthDate": "19640124",
    "InstitutionName": "Wankdorf Pathology Center",
    "ReferringPhysicianName": "Zhivago^Yuri",
    "AccessionNumber": "ACC778899",
}
PRIVATE_VALUE = "SECRET-PRIVATE-7731"


def plant(ds: Dataset) -> Dataset:
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    ds.StudyDate = "20130519"
    ds.add_new(0x00091010, "LO", "ACME_PRIVATE")
    ds.add_new(0x00091001, "LO", PRIVATE_VALUE)
    step = Dataset()
    step.PerformingPhysicianName = "Frankenstein^Victor"
    ds.RequestAttributesSequence = Sequence([step])
    return ds


def _clean(patient_id: str = "0042") -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = patient_id
    ds.PatientName = f"{patient_id}_Name"
    ds.PatientBirthDate = ""
    ds.StudyDate = "19010315"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = "AX T1 SE"
    return ds


def test_clean_dataset_has_no_finding():
    assert audit_dataset(_clean(), "a.dcm", DeidSettings()) == []


def test_each_planted_value_is_found_by_tag_and_never_written():
    findings = audit_dataset(plant(_clean()), "a.dcm", DeidSettings())
    by_keyword = {f["keyword"]: f["finding"] for f in findings}
    assert by_keyword["PatientName"] == "Patient's Name does not match the pseudonym pattern"
    assert by_keyword["PatientBirthDate"] == "date not generalised to 1901"
    assert by_keyword["StudyDate"] == "date not generalised to 1901"
    for keyword in ("InstitutionName", "ReferringPhysicianName", "AccessionNumber", "RequestAttributesSequence"):
        assert by_keyword[keyword] == "identifying attribute filled", keyword
    assert by_keyword["PerformingPhysicianName"] == "identifying attribute filled"  # inside a sequence
    assert by_keyword["private"] == "private tags present"
    text = repr(findings)
    for value in [*IDENTIFYING.values(), PRIVATE_VALUE, "Frankenstein", "20130519"]:
        assert value not in text


def test_unknown_character_set_and_undecodable_text_are_findings(tmp_path):
    ds = _clean()
    ds.SpecificCharacterSet = "ISO_IR 999"
    findings = audit_dataset(ds, "a.dcm", DeidSettings())
    assert [f["finding"] for f in findings] == ["unknown character set"]
    # Latin-1 bytes in a file that declares no character set (ASCII)
    ds = _clean()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDescription = "x"
    path = tmp_path / "latin.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes().replace(b"\x08\x00\x30\x10LO\x02\x00x ", b"\x08\x00\x30\x10LO\x02\x00\xe9 ")
    path.write_bytes(raw)
    found = audit_file(tmp_path, "latin.dcm", DeidSettings())
    assert [f["finding"] for f in found] == ["text not valid in the declared character set"]


def test_pattern_is_the_collection_profile():
    ds = _clean()
    ds.PatientName = "ANON0042"
    assert audit_dataset(ds, "a.dcm", DeidSettings()) != []
    assert audit_dataset(ds, "a.dcm", DeidSettings(patient_name_pattern="ANON{patient_id}")) == []


# The pipeline-level guarantee (no planted value in any output byte) is tests/test_hostile.py.
