"""MR image files in the style of de-identified GE Signa exports (DCMTK UIDs, no private tags)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
)

DCMTK_ROOT = "1.2.276.0.7230010.3"
IMPLEMENTATION_CLASS_UID = "1.2.276.0.7230010.3.0.3.6.4"
IMPLEMENTATION_VERSION_NAME = "OFFIS_DCMTK_364"

TRANSFER_SYNTAXES: dict[str, UID] = {
    "implicit": ImplicitVRLittleEndian,
    "explicit": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "j2k": JPEG2000Lossless,
}
UNSUPPORTED_TRANSFER_SYNTAXES = {
    "jpeg_lossless": "no JPEG Lossless (Process 14) encoder exists for pydicom 3 with pylibjpeg-libjpeg (decode only)",
}

_UID_KIND = {"study": "1.2", "series": "1.3", "instance": "1.4", "frame": "1.4"}


class UidFactory:
    """Deterministic DCMTK-style UIDs (root.kind.host.pid.time.counter) from the cohort seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def uid(self, kind: str, *key: object) -> str:
        digest = hashlib.sha256(repr((self.seed, kind, key)).encode()).digest()
        host = 100000000 + int.from_bytes(digest[:4], "big") % 900000000
        pid = 1000 + int.from_bytes(digest[4:6], "big") % 60000
        when = 900000000 + int.from_bytes(digest[6:10], "big") % 600000000
        counter = 1 + int.from_bytes(digest[10:13], "big") % 999999
        uid = f"{DCMTK_ROOT}.{_UID_KIND[kind]}.{host}.{pid}.{when}.{counter}"
        assert len(uid) <= 64
        return uid


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax_uid
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def quantise(real_image: np.ndarray, slope: float, intercept: float) -> tuple[np.ndarray, int]:
    """Stored values for the real values: stored = round((real - intercept) / slope).

    Returns the stored array (uint16, or int16 when negatives are needed) and the
    PixelRepresentation. Decoded values stored * slope + intercept are within slope/2 of
    the real integer image (exact when slope == 1).
    """
    real = np.clip(np.rint(real_image), 0, 4095)
    stored = np.rint((real - intercept) / slope)
    if stored.min() < 0:
        return np.clip(stored, -32768, 32767).astype(np.int16), 1
    return np.clip(stored, 0, 65535).astype(np.uint16), 0


def write_dataset(ds: Dataset, path: Path, transfer_syntax: str) -> str:
    """Write with full file meta; returns the transfer syntax UID used."""
    ts_uid = TRANSFER_SYNTAXES[transfer_syntax]
    if ts_uid.is_compressed:
        ds.file_meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ImplicitVRLittleEndian)
        ds.compress(ts_uid, generate_instance_uid=False)
    ds.file_meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ts_uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ts_uid)


def mr_dataset(common: dict[str, object], series: dict[str, object], instance: dict[str, object]) -> Dataset:
    """One MR image: patient/study attributes, series attributes, then per-instance ones."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = MRImageStorage
    for block in (common, series, instance):
        for key, value in block.items():
            if value is not None:
                setattr(ds, key, value)
    return ds


def set_pixels(ds: Dataset, stored: np.ndarray, pixel_representation: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = pixel_representation
    if "PixelData" in ds:  # a reused dataset may hold the previous, encapsulated frame
        del ds.PixelData
    ds.PixelData = stored.tobytes()
