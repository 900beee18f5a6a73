"""Compressed DICOM in, the same NIfTI out: a synthetic T1C series transcoded by GDCM to
JPEG Lossless (Process 14, SV1), JPEG 2000 lossless and RLE must convert to exactly the
voxels of the uncompressed original, and to the image dcm2niix makes from the compressed files.

pydicom cannot encode JPEG Lossless, so GDCM (python-gdcm, a test dependency) is the
encoder. Installed, GDCM is also the first decoder pydicom would try; metsprep.bids pins
the plugins the pipeline ships with (pylibjpeg-libjpeg / -openjpeg, pydicom's RLE), so GDCM
never decodes its own output here (checked below).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless
from test_bids import assert_same_image_in_world, run_dcm2niix

from metsprep.bids import convert_case
from metsprep.match import sanitize_label
from metsprep.settings import BidsSettings

import stages

gdcm = pytest.importorskip(
    "gdcm", reason="python-gdcm is not installed: it is the only JPEG Lossless encoder (pip install python-gdcm)")

#: pydicom transfer syntax UID -> the name of GDCM's TransferSyntax constant.
GDCM_SYNTAX = {
    JPEGLosslessSV1: "JPEGLosslessProcess14_1",
    JPEG2000Lossless: "JPEG2000Lossless",
    RLELossless: "RLELossless",
}
CASES = {
    0: {"matrix": 256, "omit_series": ["T1", "T2"]},  # uint16 stored values
    # stored = real - 300: int16 (Pixel Representation 1) with negative stored values.
    1: {"matrix": 256, "omit_series": ["T1", "T2"], "rescale": {"slope": 1, "intercept": 300}},
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[int, tuple[dict, nib.Nifti1Image]]]:
    """The uncompressed cohort and each case's T1C converted from it (the expected output)."""
    from metsprep.synth import generate_cohort

    root = tmp_path_factory.mktemp("compressed_cohort")
    truth = generate_cohort(root, n_cases=len(CASES), seed=5, case_options=CASES)
    expected = {index: convert_t1c(truth["cases"][index], root / "dicom", root / f"out_{index}") for index in CASES}
    return root / "dicom", truth, expected


@pytest.fixture
def decoding_plugins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the decoding plugin metsprep asks pydicom for, per decoded slice."""
    chosen: list[str] = []
    original = pydicom.Dataset.pixel_array_options

    def spy(self, **kwargs):
        chosen.append(kwargs.get("decoding_plugin", ""))
        return original(self, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "pixel_array_options", spy)
    return chosen


def transcode(source: Path, target: Path, transfer_syntax: str) -> None:
    """Re-encode the pixel data only. (GDCM's ImageWriter would also rewrite the header:
    it turns an MR Image Storage file with Rescale Slope/Intercept into Enhanced MR.)"""
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read(), f"GDCM cannot read {source}"
    syntax = gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, GDCM_SYNTAX[transfer_syntax]))
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(syntax)
    change.SetInput(reader.GetImage())
    assert change.Change(), f"GDCM cannot encode {source} as {transfer_syntax.name}"
    file = reader.GetFile()
    file.GetDataSet().Replace(change.GetOutput().GetDataElement())
    file.GetHeader().SetDataSetTransferSyntax(syntax)
    writer = gdcm.Writer()
    target.parent.mkdir(parents=True, exist_ok=True)
    writer.SetFileName(str(target))
    writer.SetFile(file)
    assert writer.Write(), f"GDCM cannot write {target}"


def convert_t1c(case: dict, input_dir: Path, out: Path) -> tuple[dict, nib.Nifti1Image]:
    subject, session = sanitize_label(case["patient_id"]), f"{case['study_index'] + 1:02d}"
    plan_path = stages.write_plan(out / "plan.json", input_dir, {"T1C": [f for f in case["series"]["T1C"]["files"] if f]},
                                  subject, session)
    result_path = out / "work" / "bids.json"
    convert_case(plan_path, out, result_path, BidsSettings())
    result = json.loads(result_path.read_text())
    assert result["status"] == "ok", result["status_reason"]
    return result, nib.load(out / result["images"]["T1C"]["nifti"])


# JPEG Lossless for both; JPEG 2000 and RLE (also encoded by pydicom in test_bids) with
# negative stored values only, where sign handling can go wrong.
@pytest.mark.parametrize("case_index, transfer_syntax", [
    pytest.param(0, JPEGLosslessSV1, id="uint16-jpeg-lossless-sv1"),
    pytest.param(1, JPEGLosslessSV1, id="int16-rescaled-jpeg-lossless-sv1"),
    pytest.param(1, JPEG2000Lossless, id="int16-rescaled-j2k-lossless"),
    pytest.param(1, RLELossless, id="int16-rescaled-rle"),
])
def test_compressed_series_converts_losslessly(cohort, decoding_plugins, tmp_path: Path,
                                               case_index: int, transfer_syntax: str) -> None:
    dicom_dir, truth, expected_by_case = cohort
    case = truth["cases"][case_index]
    files = case["series"]["T1C"]["files"]
    compressed_dir = tmp_path / "input"
    for relative in files:
        transcode(dicom_dir / relative, compressed_dir / relative, transfer_syntax)
    for relative in files:
        original = pydicom.dcmread(dicom_dir / relative, stop_before_pixels=True)
        compressed = pydicom.dcmread(compressed_dir / relative, stop_before_pixels=True)
        assert compressed.file_meta.TransferSyntaxUID == transfer_syntax
        assert compressed.file_meta.MediaStorageSOPClassUID == original.file_meta.MediaStorageSOPClassUID
        assert [(e.tag, e.value) for e in compressed] == [(e.tag, e.value) for e in original]  # header untouched
    if case_index == 1:  # the signed case must really hold negative stored values
        assert pydicom.dcmread(dicom_dir / files[0]).pixel_array.min() < 0

    expected_result, expected = expected_by_case[case_index]
    result, mine = convert_t1c(case, compressed_dir, tmp_path / "out")
    shipped = "pydicom" if transfer_syntax == RLELossless else "pylibjpeg"
    assert decoding_plugins == [shipped] * len(files)
    assert result["flags"] == expected_result["flags"]
    assert mine.shape == expected.shape == (256, 256, len(files))
    assert mine.get_data_dtype() == expected.get_data_dtype()
    np.testing.assert_array_equal(mine.affine, expected.affine)
    np.testing.assert_array_equal(np.asarray(mine.dataobj), np.asarray(expected.dataobj))

    series_dir = compressed_dir / Path(files[0]).parent
    assert sorted(p.name for p in series_dir.iterdir()) == sorted(Path(f).name for f in files)
    assert_same_image_in_world(mine, run_dcm2niix(series_dir, tmp_path)[""])
