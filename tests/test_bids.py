"""metsprep.bids: NIfTI + sidecars checked against dcm2niix and analytic geometry.

Hand-made DICOM series carry a voxel value that is a linear function of the LPS position
of the voxel centre, so any flip, swap or shift of the grid changes the values.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from metsprep.bids import convert_case, write_dataset_files
from metsprep.contracts import SCHEMA_VERSION, BidsResult, ImageRecord, Participant
from metsprep.layout import bids_paths, case_id, derivative_sidecar_spatial_reference, safe_join
from metsprep.match import sanitize_label
from metsprep.settings import BidsSettings

import stages

DCM2NIIX = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which("dcm2niix")
IDENTIFYING = ("Doe^Jane", "Doe", "PID12345", "19500101", "20080101", "Example Hospital")


def value_at(lps: np.ndarray) -> np.ndarray:
    """The synthetic intensity at an LPS point: distinct slopes along x, y and z."""
    x, y, z = np.moveaxis(np.asarray(lps, float), -1, 0)
    return 1000 + 3 * x + 2 * y + 7 * z


def make_series(
    out_dir: Path,
    n_slices: int = 10,
    rows: int = 32,
    columns: int = 40,
    pixel_spacing: tuple[float, float] = (1.5, 1.25),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    origin: tuple[float, float, float] = (-30.0, -25.0, -20.0),
    spacing: float = 3.0,
    tilt_deg: float = 0.0,
    skip: tuple[int, ...] = (),
    rescale: tuple[float, float] = (1.0, 0.0),
    transfer_syntax: str = ExplicitVRLittleEndian,
    description: str = "AXI T1 SE+C",
) -> np.ndarray:
    """Write an MR series (files in shuffled Instance Number order); return its true lps_from_ijk."""
    out_dir.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row_dir, col_dir)
    k_step = normal * spacing + col_dir * spacing * np.tan(np.radians(tilt_deg))
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    jj, ii = np.mgrid[0:rows, 0:columns]
    slope, intercept = rescale
    kept = [k for k in range(n_slices) if k not in skip]
    instance_numbers = np.random.default_rng(7).permutation(len(kept)) + 1
    for n, k in enumerate(kept):
        ipp = np.asarray(origin) + k * k_step
        lps = ipp + ii[..., None] * row_dir * pixel_spacing[1] + jj[..., None] * col_dir * pixel_spacing[0]
        stored = np.rint((value_at(lps) - intercept) / slope).astype(np.int16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.Modality = "MR"
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.ManufacturerModelName = "SIGNA EXCITE"
        ds.InstitutionName = "Example Hospital"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "PID12345", "19500101"
        ds.PatientSex, ds.PatientAge, ds.StudyDate = "F", "065Y", "20080101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SeriesNumber, ds.InstanceNumber = 5, int(instance_numbers[n])
        ds.SeriesDescription = ds.ProtocolName = description
        ds.MagneticFieldStrength, ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = 1.5, 500.0, 12.5, 90
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ["FAST_GEMS", "SAT_GEMS"]
        ds.SliceThickness = ds.SpacingBetweenSlices = spacing
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ContrastBolusAgent = "MAGNEVIST"
        if tilt_deg:
            ds.GantryDetectorTilt = -tilt_deg  # the sign dcm2niix reads back from the slice vector
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.PixelSpacing = list(pixel_spacing)
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if rescale != (1.0, 0.0):
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = stored.tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, stored)
        ds.save_as(out_dir / f"IM{n:04d}.dcm", enforce_file_format=True)
    truth = np.eye(4)
    truth[:3, 0], truth[:3, 1] = row_dir * pixel_spacing[1], col_dir * pixel_spacing[0]
    truth[:3, 2], truth[:3, 3] = k_step, origin
    return truth


def write_plan(tmp: Path, series: dict[str, Path | None], subject: str = "P1", session: str = "01") -> Path:
    input_dir = tmp / "input"
    files = {
        seq: None if folder is None else sorted(p.relative_to(input_dir).as_posix() for p in folder.rglob("*") if p.is_file())
        for seq, folder in series.items()
    }
    return stages.write_plan(tmp / "plans" / f"sub-{subject}_ses-{session}.json", input_dir, files, subject, session)


def convert(tmp: Path, series: dict[str, Path | None], **plan_kwargs: str) -> tuple[Path, dict]:
    plan = write_plan(tmp, series, **plan_kwargs)
    out = tmp / "out"
    result_json = out / "work" / "cases" / plan.stem / "bids.json"
    convert_case(plan, out, result_json, BidsSettings())
    return out, json.loads(result_json.read_text())


def run_dcm2niix(series_dir: Path, tmp: Path, check: bool = True) -> dict[str, nib.Nifti1Image]:
    """dcm2niix on a copy of the series; returns its images keyed by file-name suffix."""
    assert DCM2NIIX, "dcm2niix (PyPI wheel) is a test dependency"
    copy = tmp / f"d2n_in_{series_dir.name}"
    shutil.copytree(series_dir, copy)
    out = tmp / f"d2n_out_{series_dir.name}"
    out.mkdir()
    # dcm2niix exits 1 after some warnings (e.g. a missing slice) yet writes its images.
    subprocess.run([DCM2NIIX, "-z", "n", "-f", "img", "-o", str(out), str(copy)], check=check,
                   capture_output=True)
    images = {p.stem[len("img"):]: nib.load(p) for p in out.glob("img*.nii")}
    assert images, "dcm2niix wrote nothing"
    return images


def corners_world(image: nib.Nifti1Image) -> np.ndarray:
    """World (RAS) coordinates of the 8 corner voxel centres, sorted for comparison."""
    shape = image.shape[:3]
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    world = (image.affine @ corners)[:3].T
    return world[np.lexsort(np.round(world, 2).T[::-1])]


def assert_same_image_in_world(mine: nib.Nifti1Image, reference: nib.Nifti1Image,
                               value_tolerance: float = 0.0, skip_k: tuple[int, ...] = ()) -> None:
    """Same shape (up to axis order), corners within 0.01 mm, same value at every voxel centre."""
    assert sorted(mine.shape[:3]) == sorted(reference.shape[:3])
    np.testing.assert_allclose(corners_world(mine), corners_world(reference), atol=0.01)
    ijk = np.indices(mine.shape[:3]).reshape(3, -1)
    reference_ijk = (np.linalg.inv(reference.affine) @ mine.affine @ np.vstack([ijk, np.ones(ijk.shape[1])]))[:3]
    rounded = np.rint(reference_ijk).astype(int)
    np.testing.assert_allclose(reference_ijk, rounded, atol=1e-3)
    mine_values = np.asarray(mine.dataobj, dtype=float)[tuple(ijk)]
    reference_values = np.asarray(reference.dataobj, dtype=float)[tuple(rounded)]
    keep = ~np.isin(ijk[2], skip_k)
    np.testing.assert_allclose(mine_values[keep], reference_values[keep], atol=value_tolerance + 1e-4)


def assert_values_follow_truth(image: nib.Nifti1Image, tolerance: float) -> None:
    ijk = np.indices(image.shape[:3]).reshape(3, -1)
    lps = (np.diag([-1, -1, 1, 1]) @ image.affine @ np.vstack([ijk, np.ones(ijk.shape[1])]))[:3].T
    np.testing.assert_allclose(np.asarray(image.dataobj, dtype=float)[tuple(ijk)], value_at(lps), atol=tolerance)


def load(out: Path, result: dict, sequence: str = "T1C") -> nib.Nifti1Image:
    return nib.load(out / result["images"][sequence]["nifti"])


# ---------------------------------------------------------------------------- against dcm2niix

@pytest.mark.parametrize(
    "orientation",
    [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), (0.9396926, 0.3420201, 0, -0.3213938, 0.8830222, -0.3420201)],
    ids=["axial", "coronal", "double-oblique"],
)
def test_series_matches_dcm2niix(tmp_path: Path, orientation: tuple[float, ...]) -> None:
    series_dir = tmp_path / "input" / "t1c"
    truth = make_series(series_dir, orientation=orientation)
    out, result = convert(tmp_path, {"T1C": series_dir, "T1": None, "T2": None})
    assert result["status"] == "ok" and result["flags"] == []
    mine = load(out, result)
    assert_same_image_in_world(mine, run_dcm2niix(series_dir, tmp_path)[""])
    np.testing.assert_allclose(mine.affine, np.diag([-1, -1, 1, 1]) @ truth, atol=1e-5)
    assert_values_follow_truth(mine, 0.5)
    assert mine.get_data_dtype() == np.int16
    assert int(mine.header["sform_code"]) == 1 and int(mine.header["qform_code"]) == 1
    np.testing.assert_allclose(mine.header.get_qform(), mine.header.get_sform(), atol=1e-4)
    assert mine.header.get_xyzt_units() == ("mm", "sec")
    assert result["images"]["T1C"]["shape"] == [40, 32, 10]
    np.testing.assert_allclose(result["images"]["T1C"]["ras_from_ijk"], mine.affine, atol=1e-5)


def test_512_matrix_matches_dcm2niix(tmp_path: Path) -> None:
    series_dir = tmp_path / "input" / "t1c"
    make_series(series_dir, n_slices=4, rows=512, columns=512, pixel_spacing=(0.47, 0.47))
    out, result = convert(tmp_path, {"T1C": series_dir})
    mine = load(out, result)
    assert mine.shape == (512, 512, 4)
    assert_same_image_in_world(mine, run_dcm2niix(series_dir, tmp_path)[""])


@pytest.mark.parametrize("rescale, dtype", [((0.5, -100.0), np.float32), ((2.0, -1024.0), np.int16)])
def test_rescaled_series_matches_dcm2niix(tmp_path: Path, rescale: tuple[float, float], dtype: type) -> None:
    series_dir = tmp_path / "input" / "t1c"
    make_series(series_dir, rescale=rescale)
    out, result = convert(tmp_path, {"T1C": series_dir})
    mine = load(out, result)
    assert mine.get_data_dtype() == dtype
    assert_same_image_in_world(mine, run_dcm2niix(series_dir, tmp_path)[""])
    assert_values_follow_truth(mine, abs(rescale[0]) / 2 + 1e-6)


@pytest.mark.parametrize("transfer_syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k-lossless"])
def test_compressed_series_matches_dcm2niix(tmp_path: Path, transfer_syntax: str) -> None:
    series_dir = tmp_path / "input" / "t1c"
    make_series(series_dir, transfer_syntax=transfer_syntax)
    first = pydicom.dcmread(next(series_dir.iterdir()), stop_before_pixels=True)
    assert first.file_meta.TransferSyntaxUID == transfer_syntax
    out, result = convert(tmp_path, {"T1C": series_dir})
    mine = load(out, result)
    assert_same_image_in_world(mine, run_dcm2niix(series_dir, tmp_path)[""])
    assert_values_follow_truth(mine, 0.5)


def test_missing_slice_matches_dcm2niix_equidistant_image(tmp_path: Path) -> None:
    """dcm2niix writes the raw stack (with a wrong, constant spacing) and an `_Eq_1` image
    on an equidistant grid; ours must match the latter: real slices exactly, the
    interpolated plane within rounding."""
    series_dir = tmp_path / "input" / "t1c"
    truth = make_series(series_dir, skip=(4,))
    out, result = convert(tmp_path, {"T1C": series_dir})
    assert result["status"] == "ok" and "t1c_missing_slices_interpolated" in result["flags"]
    image = result["images"]["T1C"]
    assert image["resampled"] is True and image["shape"] == [40, 32, 10]
    uids = image["slice_sop_instance_uids"]
    assert uids[4] is None and all(uids[k] for k in range(10) if k != 4)
    # Each real slice's UID sits at the k its position gives.
    for k, uid in enumerate(uids):
        if uid is None:
            continue
        ds = next(d for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in series_dir.iterdir())
                  if d.SOPInstanceUID == uid)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], truth[:3, 3] + k * truth[:3, 2],
                                   atol=1e-4)
    mine = load(out, result)
    np.testing.assert_allclose(mine.affine, np.diag([-1, -1, 1, 1]) @ truth, atol=1e-5)
    equidistant = run_dcm2niix(series_dir, tmp_path)["_Eq_1"]
    assert_same_image_in_world(mine, equidistant, skip_k=(4,))
    assert_same_image_in_world(mine, equidistant, value_tolerance=1.0)
    assert_values_follow_truth(mine, 0.5)


def test_tilted_series_keeps_sheared_geometry(tmp_path: Path) -> None:
    """dcm2niix resamples a gantry-tilted stack onto a larger rigid grid (`_Tilt_1`) and
    its plain output drops the shear, so the geometry is checked against the analytic
    truth, and the values against `_Tilt_1` sampled at our voxel centres."""
    series_dir = tmp_path / "input" / "t1c"
    truth = make_series(series_dir, tilt_deg=15.0)
    out, result = convert(tmp_path, {"T1C": series_dir})
    assert "t1c_gantry_tilt" in result["flags"]
    mine = load(out, result)
    np.testing.assert_allclose(mine.header.get_sform(), np.diag([-1, -1, 1, 1]) @ truth, atol=1e-5)
    assert int(mine.header["sform_code"]) == 1 and int(mine.header["qform_code"]) == 0
    np.testing.assert_allclose(mine.affine, np.diag([-1, -1, 1, 1]) @ truth, atol=1e-5)  # nibabel uses sform
    assert_values_follow_truth(mine, 0.5)
    # qform: closest rigid, same slice planes (z of every voxel unchanged for an axial stack).
    qform = mine.header.get_qform()
    np.testing.assert_allclose(qform[:3, :2], mine.affine[:3, :2], atol=1e-5)
    np.testing.assert_allclose(qform[2], mine.affine[2], atol=1e-5)

    from scipy.ndimage import map_coordinates

    tilt_corrected = run_dcm2niix(series_dir, tmp_path)["_Tilt_1"]
    ijk = np.indices(mine.shape).reshape(3, -1)
    reference_ijk = (np.linalg.inv(tilt_corrected.affine) @ mine.affine @ np.vstack([ijk, np.ones(ijk.shape[1])]))[:3]
    inside = np.all((reference_ijk >= 0) & (reference_ijk <= np.array(tilt_corrected.shape)[:, None] - 1), axis=0)
    # dcm2niix's resampling blends the first and last rows with its padding: compare inside.
    inside &= (ijk[1] > 0) & (ijk[1] < mine.shape[1] - 1)
    assert inside.mean() > 0.8
    sampled = map_coordinates(np.asarray(tilt_corrected.dataobj, float), reference_ijk[:, inside], order=1)
    np.testing.assert_allclose(np.asarray(mine.dataobj, float)[tuple(ijk[:, inside])], sampled, atol=1.5)


# ---------------------------------------------------------------------------- sidecars, case rules

def test_sidecar_has_dcm2niix_fields_and_nothing_identifying(tmp_path: Path) -> None:
    series_dir = tmp_path / "input" / "t1c"
    make_series(series_dir)
    out, result = convert(tmp_path, {"T1C": series_dir})
    text = (out / result["images"]["T1C"]["sidecar"]).read_text()
    for value in IDENTIFYING:
        assert value not in text
    mine = json.loads(text)
    reference_json = next((tmp_path / "d2n_out_t1c").glob("*.json")) if (tmp_path / "d2n_out_t1c").exists() else None
    run_dcm2niix(series_dir, tmp_path) if reference_json is None else None
    reference = json.loads(next((tmp_path / "d2n_out_t1c").glob("*.json")).read_text())
    for key in ("ManufacturersModelName", "MagneticFieldStrength", "SeriesDescription", "ProtocolName",
                "ScanningSequence", "SequenceVariant", "ScanOptions", "RepetitionTime", "EchoTime", "FlipAngle",
                "SliceThickness", "SpacingBetweenSlices", "ImageType", "ImageOrientationPatientDICOM", "SeriesNumber"):
        assert mine[key] == pytest.approx(reference[key]) if isinstance(reference[key], float) else mine[key] == reference[key], key
    assert mine["ContrastBolusAgent"] == "MAGNEVIST"
    assert mine["SeriesInstanceUID"] == result["images"]["T1C"]["series_instance_uid"]
    assert result["participant"] == {"sex": "F", "age_years": 65.0}


def test_bad_t1c_excludes_case_bad_t2_only_drops_t2(tmp_path: Path) -> None:
    t1c, t1, t2 = (tmp_path / "input" / name for name in ("t1c", "t1", "t2"))
    make_series(t1c)
    make_series(t1, description="AXI T1")
    make_series(t2 / "axial", description="AXI T2", n_slices=6)
    make_series(t2 / "coronal", description="AXI T2", n_slices=6, orientation=(1, 0, 0, 0, 0, -1))  # mixed
    out, result = convert(tmp_path, {"T1C": t1c, "T1": t1, "T2": t2})
    assert result["status"] == "ok"
    assert set(result["images"]) == {"T1C", "T1"} and "t2_not_converted" in result["flags"]
    assert any("mixes image orientations" in note for note in result["notes"])
    assert not (out / bids_paths("P1", "01").raw["T2"]).exists()

    bad = tmp_path / "bad"
    make_series(bad / "input" / "t1c", skip=(3, 4, 6, 7))  # irregular gaps: no trustworthy grid
    out, result = convert(bad, {"T1C": bad / "input" / "t1c"})
    assert result["status"] == "excluded" and result["images"] == {}
    assert "T1C series cannot be converted" in result["status_reason"]
    assert not (out / "bids").exists()


@pytest.mark.parametrize("subject", ["../../evil", "a/b", "P_1", "..", ""])
def test_hostile_labels_cannot_escape_output_folder(tmp_path: Path, subject: str) -> None:
    series_dir = tmp_path / "input" / "t1c"
    make_series(series_dir, n_slices=3)
    with pytest.raises(ValueError):
        bids_paths(subject, "01")
    out, result = convert(tmp_path, {"T1C": series_dir}, subject=subject)
    assert result["status"] == "excluded" and "invalid BIDS subject" in result["status_reason"]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "input" not in p.parts and "plans" not in p.parts]
    assert all(p.is_relative_to(out) for p in written) and not (out / "bids").exists()
    assert not (tmp_path.parent / "evil").exists()
    with pytest.raises(ValueError, match="escapes"):
        safe_join(out, "../outside.json")


def test_plan_files_outside_input_dir_are_refused(tmp_path: Path) -> None:
    plan = stages.write_plan(tmp_path / "plan.json", tmp_path / "input", {"T1C": ["../../etc/passwd"]})
    convert_case(plan, tmp_path / "out", tmp_path / "out" / "bids.json", BidsSettings())
    result = json.loads((tmp_path / "out" / "bids.json").read_text())
    assert result["status"] == "excluded" and "not inside the input folder" in result["status_reason"]


def test_labels_and_paths() -> None:
    assert sanitize_label("17/06-922_010 ") == "1706922010"
    assert case_id("1706922010", "01") == "sub-1706922010_ses-01"
    paths = bids_paths("1706922010", "01")
    stem = "sub-1706922010_ses-01"
    assert paths.raw["T1C"] == f"bids/sub-1706922010/ses-01/anat/{stem}_ce-gadolinium_T1w.nii.gz"
    assert paths.raw_sidecar["T2"] == f"bids/sub-1706922010/ses-01/anat/{stem}_T2w.json"
    der = f"bids/derivatives/metsprep/sub-1706922010/ses-01/anat/{stem}"
    assert paths.t1_in_t1c == f"{der}_space-T1wCE_T1w.nii.gz"
    assert paths.t2_to_t1c_transform == f"{der}_from-T2w_to-T1wCE_mode-image_xfm.tfm"
    assert paths.lesion_labels == f"{der}_space-T1wCE_desc-lesions_dseg.nii.gz"
    assert paths.lesion_labels_tsv == f"{der}_space-T1wCE_desc-lesions_dseg.tsv"
    assert paths.lesion_mask == f"{der}_space-T1wCE_desc-lesions_mask.nii.gz"
    assert paths.head_mask == f"{der}_space-T1wCE_desc-head_mask.nii.gz"
    reference = derivative_sidecar_spatial_reference("1706922010", "01")["SpatialReference"]
    assert reference == f"bids:raw:sub-1706922010/ses-01/anat/{stem}_ce-gadolinium_T1w.nii.gz"


def test_dataset_files(tmp_path: Path) -> None:
    results = []
    cases = [("A1", "01", "M", 70.0), ("A1", "02", "M", 71.0), ("B2", "01", "F", None), ("C3", "01", None, 50.0)]
    image = ImageRecord("x.nii.gz", "x.json", "1.2", (2, 2, 2), tuple(tuple(map(float, r)) for r in np.eye(4)),
                        (0.0, 1.0), 1.0, False, (), None)  # fmt: skip

    def result(subject: str, session: str, status: str, participant: Participant) -> BidsResult:
        return BidsResult(SCHEMA_VERSION, f"sub-{subject}_ses-{session}", subject, session, status,  # type: ignore[arg-type]
                          None if status == "ok" else "excluded", (), (), {"T1C": image} if status == "ok" else {},
                          participant)  # fmt: skip

    for subject, session, sex, age in cases:
        path = tmp_path / f"{subject}{session}.json"
        result(subject, session, "ok", Participant(sex, age)).write(path)
        results.append(path)
    excluded = tmp_path / "x.json"
    result("D4", "01", "excluded", Participant("F", 40.0)).write(excluded)
    write_dataset_files(results + [excluded], tmp_path / "out")
    bids = tmp_path / "out" / "bids"
    lines = (bids / "participants.tsv").read_text().splitlines()
    assert lines == ["participant_id\tsex\tage", "sub-A1\tM\t70", "sub-B2\tF\tn/a", "sub-C3\tn/a\t50"]
    description = json.loads((bids / "dataset_description.json").read_text())
    assert description["BIDSVersion"] == "1.10.0" and description["DatasetType"] == "raw"
    assert (bids / "README").read_text().strip()
    assert set(json.loads((bids / "participants.json").read_text())) == {"participant_id", "sex", "age"}
    derivative = json.loads((bids / "derivatives" / "metsprep" / "dataset_description.json").read_text())
    assert derivative["DatasetType"] == "derivative" and derivative["GeneratedBy"][0]["Name"] == "metsprep"


def test_converted_dataset_loads_in_pybids(tmp_path: Path) -> None:
    t1c, t2 = tmp_path / "input" / "t1c", tmp_path / "input" / "t2"
    make_series(t1c, n_slices=4)
    make_series(t2, n_slices=4, description="AXI T2")
    out, result = convert(tmp_path, {"T1C": t1c, "T1": None, "T2": t2})
    write_dataset_files([out / "work" / "cases" / "sub-P1_ses-01" / "bids.json"], out)
    bids = pytest.importorskip("bids")
    layout = bids.BIDSLayout(str(out / "bids"), validate=True)
    assert layout.get_subjects() == ["P1"]
    files = {f.filename for f in layout.get(extension=".nii.gz")}
    assert files == {"sub-P1_ses-01_ce-gadolinium_T1w.nii.gz", "sub-P1_ses-01_T2w.nii.gz"}
    assert layout.get(ceagent="gadolinium", suffix="T1w", return_type="id", target="subject") == ["P1"]


def test_converted_dataset_passes_bids_validator(tmp_path: Path) -> None:
    """The official validator (npm `bids-validator`; set BIDS_VALIDATOR to its path or put
    it on PATH) must report no errors on a converted case."""
    validator = os.environ.get("BIDS_VALIDATOR") or shutil.which("bids-validator")
    if not validator:
        pytest.skip("bids-validator not installed (npm install bids-validator)")
    t1c, t1 = tmp_path / "input" / "t1c", tmp_path / "input" / "t1"
    make_series(t1c, n_slices=4, tilt_deg=10.0)
    make_series(t1, n_slices=4, description="AXI T1", skip=(2,))
    out, result = convert(tmp_path, {"T1C": t1c, "T1": t1, "T2": None})
    assert set(result["images"]) == {"T1C", "T1"}
    write_dataset_files([out / "work" / "cases" / "sub-P1_ses-01" / "bids.json"], out)
    run = subprocess.run([validator, str(out / "bids"), "--json"], capture_output=True, text=True, timeout=300)
    report = json.loads(run.stdout)
    assert report["issues"]["errors"] == [], report["issues"]["errors"]


# ---------------------------------------------------------------------------- synthetic cohort

SYNTH_OPTIONS = {
    0: {"tilt_deg": 12, "transfer_syntax": "rle"},
    1: {"missing_slice": "T1C", "rescale": {"slope": 0.5, "intercept": -50}, "transfer_syntax": "j2k"},
    2: {"matrix": 512, "omit_series": ["T1"]},  # T1 left out: 512 cases are slow to make
}


@pytest.fixture(scope="module")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path, dict[int, dict]]:
    """A 2-case synthetic cohort, each case converted by convert_case."""
    synth = pytest.importorskip("metsprep.synth")
    root = tmp_path_factory.mktemp("synth")
    truth = synth.generate_cohort(root / "cohort", n_cases=len(SYNTH_OPTIONS), seed=11, case_options=SYNTH_OPTIONS)
    out = root / "out"
    plans = stages.match_plans(root / "cohort" / "dicom", root / "match")  # the match stage's real plans
    results = {}
    for case in truth["cases"]:
        case_key = stages.truth_case_id(case)
        result_path = out / "work" / "cases" / case_key / "bids.json"
        convert_case(plans[case_key], out, result_path, BidsSettings())
        results[case["case_index"]] = json.loads(result_path.read_text())
    return root, truth, out, results


def truth_corners_ras(series: dict) -> np.ndarray:
    lps_from_ijk = np.array(series["lps_from_ijk"])
    shape = (series["columns"], series["rows"], series["n_slices_full"])
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    world = (np.diag([-1, -1, 1, 1]) @ lps_from_ijk @ corners)[:3].T
    return world[np.lexsort(np.round(world, 2).T[::-1])]


@pytest.mark.parametrize("case_index", sorted(SYNTH_OPTIONS))
def test_synthetic_case_matches_truth_and_dcm2niix(synth_cohort, case_index: int, tmp_path: Path) -> None:
    root, truth, out, results = synth_cohort
    case, result = truth["cases"][case_index], results[case_index]
    assert result["status"] == "ok", result["status_reason"]
    assert result["participant"]["sex"] == case["patient_sex"]
    assert result["participant"]["age_years"] == float(int(case["patient_age"][:3]))
    for role, series in case["series"].items():
        if series is None:
            continue
        image = result["images"][role]
        mine = nib.load(out / image["nifti"])
        assert mine.shape == (series["columns"], series["rows"], series["n_slices_full"])
        np.testing.assert_allclose(corners_world(mine), truth_corners_ras(series), atol=0.01)
        # Every real slice's UID sits on its true plane (truth k follows Instance Number).
        truth_lps_from_ijk = np.array(series["lps_from_ijk"])
        mine_lps_from_ijk = np.diag([-1, -1, 1, 1]) @ mine.affine
        if role == "T1C":
            for k, uid in enumerate(image["slice_sop_instance_uids"]):
                truth_k = series["missing_slice_index"] if uid is None else series["sop_instance_uids"].index(uid)
                np.testing.assert_allclose(mine_lps_from_ijk @ [0, 0, k, 1], truth_lps_from_ijk @ [0, 0, truth_k, 1],
                                           atol=0.01)
            assert (series["missing_slice_index"] is not None) == image["resampled"]
        if series["missing_slice_index"] is not None:
            # dcm2niix makes an equidistant `_Eq_1` image only from some data types; its
            # plain output stacks the real slices with one (wrong) spacing, so there the
            # real slices are compared slice by slice.
            references = run_dcm2niix_files(root / "cohort" / "dicom", series["files"], tmp_path / role, check=False)
            k_missing = image["slice_sop_instance_uids"].index(None)
            if "_Eq_1" in references:
                assert_same_image_in_world(mine, references["_Eq_1"], skip_k=(k_missing,))
            else:
                assert_same_real_slices(mine, references[""], k_missing)
        else:
            reference = run_dcm2niix_files(root / "cohort" / "dicom", series["files"], tmp_path / role)[""]
            assert_same_image_in_world(mine, reference)
        if series["rescale"]:
            assert mine.get_data_dtype() == np.float32


def run_dcm2niix_files(input_dir: Path, files: list[str], tmp: Path, check: bool = True) -> dict[str, nib.Nifti1Image]:
    series_dir = tmp / "series"
    for relative in filter(None, files):
        (series_dir / Path(relative).name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(input_dir / relative, series_dir / Path(relative).name)
    return run_dcm2niix(series_dir, tmp, check=check)


def assert_same_real_slices(mine: nib.Nifti1Image, reference: nib.Nifti1Image, k_missing: int) -> None:
    """Our stack without the interpolated plane against dcm2niix's gap-less stack: the
    first real slice is where dcm2niix puts its origin (whichever end), the in-plane
    axes map through both affines, then every slice must hold the same values."""
    data = np.delete(np.asarray(mine.dataobj, float), k_missing, axis=2)
    real_k = [k for k in range(mine.shape[2]) if k != k_missing]
    assert data.shape[2] == reference.shape[2]
    ijk = np.indices(data.shape[:2]).reshape(2, -1)
    to_reference = np.linalg.inv(reference.affine) @ mine.affine
    for end, reversed_order in ((real_k[0], False), (real_k[-1], True)):  # noqa: B007 - used after the break
        points = np.vstack([ijk, np.full(ijk.shape[1], end), np.ones(ijk.shape[1])])
        reference_ijk = (to_reference @ points)[:3]
        if np.allclose(reference_ijk[2], 0, atol=1e-3):
            break
    else:
        raise AssertionError("dcm2niix's first slice is at neither end of ours")
    np.testing.assert_allclose(reference_ijk[:2], np.rint(reference_ijk[:2]), atol=1e-3)
    reference_ij = tuple(np.rint(reference_ijk[:2]).astype(int))
    reference_data = np.asarray(reference.dataobj, float)
    for n in range(data.shape[2]):
        reference_k = data.shape[2] - 1 - n if reversed_order else n
        np.testing.assert_allclose(data[:, :, n][tuple(ijk)], reference_data[:, :, reference_k][reference_ij], atol=1e-4)


def test_synthetic_dataset_files(synth_cohort) -> None:
    _, truth, out, results = synth_cohort
    write_dataset_files(sorted((out / "work" / "cases").glob("*/bids.json")), out)
    rows = (out / "bids" / "participants.tsv").read_text().splitlines()[1:]
    expected = sorted(f"sub-{sanitize_label(c['patient_id'])}\t{c['patient_sex']}\t{int(c['patient_age'][:3])}"
                      for c in truth["cases"])
    assert rows == expected
    for result in results.values():
        for image in result["images"].values():
            text = (out / image["sidecar"]).read_text()
            for case in truth["cases"]:
                assert case["patient_id"] not in text and case["study_date"] not in text
                assert str(case["patient_name"]) not in text
