"""Inventory: file walk, shards, header columns, unreadable files with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from metsprep.scan import list_files, merge_shards, scan_all, scan_shard, walk_input

import faults


@pytest.fixture()
def mini(tmp_path):
    dicom = tmp_path / "dicom"
    study = faults.write_mini_study(dicom, "P001")
    return dicom, study


def _inventory(dicom: Path, out: Path) -> pd.DataFrame:
    scan_all(dicom, out)
    return pd.read_parquet(out)


def test_list_files_is_sorted_relative_posix(mini):
    dicom, study = mini
    files = list_files(dicom)
    assert files == sorted(files)
    assert len(files) == 3 * 6 + 1
    assert all(not f.startswith("/") and "\\" not in f for f in files)
    assert (dicom / files[0]).is_file()


def test_symlink_loop_is_skipped_with_reason(mini):
    dicom, _ = mini
    link = faults.symlink_loop(dicom)
    files, skipped = walk_input(dicom)
    assert len(files) == 19
    assert [s.path for s in skipped] == ["loop_dir/back_to_top"]
    assert "loop" in skipped[0].reason
    inv = _inventory(dicom, dicom.parent / "inv.parquet")
    row = inv[inv.path == "loop_dir/back_to_top"].iloc[0]
    assert not row.readable and "loop" in row.reason
    assert link.is_symlink()


def test_a_named_pipe_is_skipped_with_its_reason_not_opened(mini):
    import os

    dicom, _ = mini
    os.mkfifo(dicom / "pipe.dcm")  # open() of it would wait for a writer for ever
    files, skipped = walk_input(dicom)
    assert len(files) == 19 and "pipe.dcm" not in files
    assert [(s.path, "not a regular file" in s.reason) for s in skipped] == [("pipe.dcm", True)]
    inv = _inventory(dicom, dicom.parent / "inv.parquet")
    row = inv[inv.path == "pipe.dcm"].iloc[0]
    assert not row.readable and "named pipe" in row.reason


def test_shards_partition_the_files_and_merge_equals_single_scan(mini, tmp_path):
    dicom, _ = mini
    faults.add_junk_files(dicom)
    shards = [tmp_path / f"shard-{k}.parquet" for k in range(3)]
    for k, path in enumerate(shards):
        scan_shard(dicom, k, 3, path)
    sizes = [len(pd.read_parquet(p)) for p in shards]
    assert sum(sizes) == 21 and min(sizes) >= 6
    merge_shards(shards, tmp_path / "merged.parquet")
    merged = pd.read_parquet(tmp_path / "merged.parquet")
    single = _inventory(dicom, tmp_path / "single.parquet")
    pd.testing.assert_frame_equal(merged, single)
    assert list(merged.path) == sorted(merged.path)


def test_empty_shard_writes_a_table_with_the_schema(tmp_path):
    (tmp_path / "in").mkdir()
    scan_shard(tmp_path / "in", 1, 4, tmp_path / "s.parquet")
    table = pd.read_parquet(tmp_path / "s.parquet")
    assert len(table) == 0 and "sop_instance_uid" in table.columns


def test_image_header_columns_match_the_file(mini, tmp_path):
    dicom, study = mini
    inv = _inventory(dicom, tmp_path / "inv.parquet")
    t1c = study.series["T1C"]
    rel = t1c.files[2].relative_to(dicom).as_posix()
    row = inv.set_index("path").loc[rel]
    ds = pydicom.dcmread(t1c.files[2], stop_before_pixels=True)
    assert row.readable and pd.isna(row.reason)
    assert row.sop_instance_uid == ds.SOPInstanceUID == t1c.sop_uids[2]
    assert row.series_instance_uid == t1c.uid
    assert row.study_instance_uid == study.study_uid
    assert row.modality == "MR" and row.sop_class_name == "MR Image Storage"
    assert list(row.image_position_patient) == [-4.0, -4.0, t1c.z_mm[2]]
    assert list(row.image_orientation_patient) == [1, 0, 0, 0, 1, 0]
    assert (row.rows, row.columns) == (8, 8)
    assert row.series_description == "AX T1 +C"
    assert row.repetition_time_ms == 500.0 and row.echo_time_ms == 10.0
    assert list(row.image_type) == ["ORIGINAL", "PRIMARY", "OTHER"]
    assert row.size_bytes == t1c.files[2].stat().st_size


def test_rtss_columns_hold_references_and_contour_planes(mini, tmp_path):
    dicom, study = mini
    inv = _inventory(dicom, tmp_path / "inv.parquet")
    row = inv.set_index("path").loc[study.rtss_path.relative_to(dicom).as_posix()]
    t1c = study.series["T1C"]
    assert row.modality == "RTSTRUCT" and row.readable
    assert set(row.rtss_referenced_sop_instance_uids) == {t1c.sop_uids[2], t1c.sop_uids[3]}
    assert list(row.rtss_referenced_series_uids) == [t1c.uid]
    assert list(row.rtss_referenced_frame_of_reference_uids) == [study.frame_uid]
    assert row.rtss_roi_count == 1 and row.rtss_contour_count == 2
    points = json.loads(row.rtss_contour_points_json)
    assert [p[2] for p in points] == [t1c.z_mm[2], t1c.z_mm[3]]
    assert row.structure_set_label == "GK plan"


def test_unreadable_files_get_a_reason(mini, tmp_path):
    dicom, study = mini
    faults.add_junk_files(dicom)
    faults.add_dicomdir(dicom)
    t2 = study.series["T2"].files
    faults.truncate_file(t2[0], 0.9)  # inside the pixel data
    faults.truncate_file(t2[1], 0.4)  # inside the header
    (dicom / "empty.dcm").write_bytes(b"")
    inv = _inventory(dicom, tmp_path / "inv.parquet").set_index("path")
    reasons = inv[~inv.readable].reason.to_dict()
    rel = lambda p: p.relative_to(dicom).as_posix()  # noqa: E731
    assert set(reasons) == {".DS_Store", "README.txt", "DICOMDIR", rel(t2[0]), rel(t2[1]), "empty.dcm"}
    assert reasons[".DS_Store"].startswith("not a DICOM file")
    assert reasons["README.txt"].startswith("not a DICOM file")
    assert reasons["DICOMDIR"].startswith("DICOMDIR")
    assert "truncated" in reasons[rel(t2[0])]
    assert "truncated" in reasons[rel(t2[1])] or "cannot be read" in reasons[rel(t2[1])]
    assert reasons["empty.dcm"].startswith("empty file")
    assert inv.readable.sum() == 19 - 2


@pytest.mark.parametrize("keyword, value, words", [
    ("Rows", 65535, "beyond any MR slice"), ("Columns", 40000, "beyond any MR slice"),
    ("NumberOfFrames", 100000, "frames in one file"), ("BitsAllocated", 12, "not a pixel size"),
])  # fmt: skip
def test_an_absurd_image_header_is_unreadable_with_its_reason_and_never_decoded(mini, tmp_path, keyword, value,
                                                                                words):  # fmt: skip
    dicom, study = mini
    target = study.series["T2"].files[0]
    ds = pydicom.dcmread(target)
    setattr(ds, keyword, value)
    ds.save_as(target)
    inv = _inventory(dicom, tmp_path / "inv.parquet").set_index("path")
    row = inv.loc[target.relative_to(dicom).as_posix()]
    assert not row.readable and words in row.reason, row.reason
    assert inv.readable.sum() == 19 - 1  # that file only


def test_truncated_rtss_is_unreadable(mini, tmp_path):
    dicom, study = mini
    faults.truncate_file(study.rtss_path, 0.6)
    inv = _inventory(dicom, tmp_path / "inv.parquet").set_index("path")
    row = inv.loc[study.rtss_path.relative_to(dicom).as_posix()]
    assert not row.readable and ("truncated" in row.reason or "cannot be read" in row.reason)


def _rtss_row(dicom: Path, study, tmp_path: Path) -> pd.Series:
    inv = _inventory(dicom, tmp_path / "inv.parquet").set_index("path")
    return inv.loc[study.rtss_path.relative_to(dicom).as_posix()]


def test_rtss_with_undefined_length_sequences_reads_the_same(mini, tmp_path):
    dicom, study = mini
    expected = _rtss_row(dicom, study, tmp_path)
    ds = pydicom.dcmread(study.rtss_path)

    def undefined_lengths(dataset):
        for elem in dataset:
            if elem.VR == "SQ":
                elem.is_undefined_length = True
                for item in elem.value:
                    item.is_undefined_length_sequence_item = True
                    undefined_lengths(item)

    undefined_lengths(ds)
    ds.save_as(study.rtss_path, enforce_file_format=True)
    assert b"\xfe\xff\xdd\xe0" in study.rtss_path.read_bytes()  # sequence delimiters written
    row = _rtss_row(dicom, study, tmp_path)
    assert row.readable, row.reason
    t1c = study.series["T1C"]
    assert set(row.rtss_referenced_sop_instance_uids) == {t1c.sop_uids[2], t1c.sop_uids[3]}
    assert list(row.rtss_referenced_series_uids) == [t1c.uid]
    assert [p[2] for p in json.loads(row.rtss_contour_points_json)] == [t1c.z_mm[2], t1c.z_mm[3]]
    rtss_columns = [c for c in expected.index if c.startswith(("rtss_", "structure_set_"))]
    for column in rtss_columns:
        assert list(pd.Series(row[column]).dropna()) == list(pd.Series(expected[column]).dropna()), column


def test_rtss_with_trailing_partial_element_is_unreadable(mini, tmp_path):
    dicom, study = mini
    with open(study.rtss_path, "ab") as fp:
        fp.write(b"\x08\x00\x10")  # the start of an element header, cut off
    row = _rtss_row(dicom, study, tmp_path)
    assert not row.readable and "trailing bytes" in row.reason


def test_header_longer_than_the_read_prefix(mini, tmp_path):
    dicom, study = mini
    t1c = study.series["T1C"]
    ds = pydicom.dcmread(t1c.files[1])
    ds.private_block(0x0019, "METSPREP TEST", create=True).add_new(0x10, "OB", bytes(40_000))  # before (0020,xxxx)
    ds.save_as(t1c.files[1], enforce_file_format=True)
    inv = _inventory(dicom, tmp_path / "inv.parquet").set_index("path")
    row = inv.loc[t1c.files[1].relative_to(dicom).as_posix()]
    assert row.readable and pd.isna(row.reason)
    assert row.sop_instance_uid == t1c.sop_uids[1]
    assert list(row.image_position_patient) == [-4.0, -4.0, t1c.z_mm[1]]
    assert (row.rows, row.columns) == (8, 8) and row.size_bytes > 40_000


def test_no_patient_name_in_the_inventory(synth_cohort, tmp_path):
    """Privacy: the inventory and its shards carry whether a name is present, never the name."""
    shard = tmp_path / "shard-0.parquet"
    scan_shard(synth_cohort.dicom_dir, 0, 1, shard)
    merge_shards([shard], tmp_path / "inventory.parquet")
    inventory = pd.read_parquet(tmp_path / "inventory.parquet")
    assert "patient_name" not in inventory.columns
    images = inventory[inventory["readable"]]
    assert images["patient_name_present"].all()
    names = {str(c["patient_name"]) for c in synth_cohort.truth["cases"]}
    assert names and all(len(n) > 3 for n in names)
    for path in (shard, tmp_path / "inventory.parquet"):
        raw = path.read_bytes()
        for name in names:
            for part in name.split("^"):
                assert part.encode() not in raw, (path.name, part)


def test_shards_from_one_file_list_equal_shards_that_walk(mini, tmp_path):
    from metsprep.scan import write_file_list

    dicom, _ = mini
    faults.symlink_loop(dicom)  # a skipped entry, listed by shard 0 either way
    write_file_list(dicom, tmp_path / "files.parquet")
    for k in range(3):
        scan_shard(dicom, k, 3, tmp_path / f"walk-{k}.parquet")
        scan_shard(dicom, k, 3, tmp_path / f"list-{k}.parquet", file_list=tmp_path / "files.parquet")
        walked, listed = pd.read_parquet(tmp_path / f"walk-{k}.parquet"), pd.read_parquet(tmp_path / f"list-{k}.parquet")
        pd.testing.assert_frame_equal(walked, listed)
