"""RT Structure Sets in the style of Leksell GammaPlan exports ("ROIs in axC")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import MRImageStorage, RTStructureSetStorage

DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"


def format_contour_value(value: float) -> str:
    """8 significant digits, never exponent notation (GammaPlan prints plain decimals)."""
    if abs(value) < 1e-3:
        return f"{value:.7f}".rstrip("0").rstrip(".") or "0"
    return f"{value:.8g}"


def contour_strings(points_lps: np.ndarray) -> list[str]:
    return [format_contour_value(v) for v in points_lps.reshape(-1)]


@dataclass
class RoiContour:
    slice_index: int  # T1C k (InstanceNumber - 1)
    data: list[str]  # x1, y1, z1, x2, ... as written


@dataclass
class Roi:
    number: int
    name: str
    interpreted_type: str
    color: tuple[int, int, int]
    contours: list[RoiContour] = field(default_factory=list)


def rtss_dataset(
    common: dict[str, object],
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    frame_of_reference_uid: str,
    study_instance_uid: str,
    referenced_series_uid: str,
    referenced_sop_uids: list[str],
    rois: list[Roi],
    series_number: int,
    structure_set_date: str,
    structure_set_time: str,
    software_version: str,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop_instance_uid
    for key, value in common.items():
        if value is not None:
            setattr(ds, key, value)
    ds.Modality = "RTSTRUCT"
    ds.Manufacturer = "Elekta Instrument AB"
    ds.ManufacturerModelName = "Leksell GammaPlan"
    ds.SoftwareVersions = software_version
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.SeriesDate = structure_set_date
    ds.SeriesTime = structure_set_time
    ds.StructureSetLabel = "ROIs in axC"
    ds.StructureSetName = "ROIs in axC"
    ds.StructureSetDate = structure_set_date
    ds.StructureSetTime = structure_set_time

    def image_ref(uid: str) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = MRImageStorage
        item.ReferencedSOPInstanceUID = uid
        return item

    series_item = Dataset()
    series_item.SeriesInstanceUID = referenced_series_uid
    series_item.ContourImageSequence = Sequence([image_ref(u) for u in referenced_sop_uids])
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study_item.ReferencedSOPInstanceUID = study_instance_uid
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = frame_of_reference_uid
    for_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_item])

    roi_items, contour_items, observation_items = [], [], []
    for roi in rois:
        item = Dataset()
        item.ROINumber = roi.number
        item.ReferencedFrameOfReferenceUID = frame_of_reference_uid
        item.ROIName = roi.name
        item.ROIGenerationAlgorithm = "MANUAL"
        roi_items.append(item)

        rc = Dataset()
        rc.ROIDisplayColor = list(roi.color)
        contours = []
        for number, contour in enumerate(roi.contours, start=1):
            c = Dataset()
            c.ContourImageSequence = Sequence([image_ref(referenced_sop_uids[contour.slice_index])])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(contour.data) // 3
            c.ContourNumber = number
            c.ContourData = contour.data
            contours.append(c)
        rc.ContourSequence = Sequence(contours)
        rc.ReferencedROINumber = roi.number
        contour_items.append(rc)

        obs = Dataset()
        obs.ObservationNumber = roi.number
        obs.ReferencedROINumber = roi.number
        obs.RTROIInterpretedType = roi.interpreted_type
        obs.ROIInterpreter = ""
        observation_items.append(obs)
    ds.StructureSetROISequence = Sequence(roi_items)
    ds.ROIContourSequence = Sequence(contour_items)
    ds.RTROIObservationsSequence = Sequence(observation_items)
    return ds
