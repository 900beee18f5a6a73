"""The catalog tables' columns (name, Arrow type, unit, description) and their writer.

Every column of `catalog/{series,cases,lesions}.parquet` is declared here with its
description; `metsprep.catalog.dictionary` generates the data dictionary from these
schemas, so the two cannot drift, and column types never depend on the data.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from metsprep.atomic import write_parquet

CREATED_BY = "metsprep.catalog"

@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    unit: str | None = None

    def field(self) -> pa.Field:
        meta = {"description": self.description}
        if self.unit:
            meta["unit"] = self.unit
        return pa.field(self.name, self.type, nullable=True, metadata=meta)


def _c(name: str, type_: pa.DataType, description: str, unit: str | None = None) -> Column:
    return Column(name, type_, description, unit)


S, F, INT, B = pa.string(), pa.float64(), pa.int64(), pa.bool_()
STRINGS = pa.list_(pa.string())


def _intensity_columns() -> list[Column]:
    out = []
    for seq, where in (("t1c", "native T1C"), ("t1", "T1 registered onto the T1C grid"), ("t2", "T2 registered onto the T1C grid")):
        for stat, what in (("mean", "mean"), ("median", "median"), ("p95", "95th percentile")):
            out.append(_c(f"{seq}_{stat}", F, f"{what.capitalize()} intensity of the {where} inside the lesion (image units; null without that image)", "a.u."))
    return out


LESION_COLUMNS: list[Column] = [
    _c("case_id", S, "Case identifier sub-<subject>_ses-<session>"),
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("roi_number", INT, "ROI Number (3006,0022) of the structure in the RT Structure Set"),
    _c("roi_name", S, "ROI Name (3006,0026) as written by the planning system"),
    _c("label", INT, "Value of the lesion in the lesion label map (lesion_labels_nifti); null when the ROI has no voxel"),
    _c("volume_mm3", F, "Voxel count of the lesion in the label map times the T1C voxel volume (voxel centre inside the contour, even-odd rule)", "mm3"),
    _c("contour_volume_mm3", F, "Planimetric volume of the RTSS polygons: sum of polygon areas (holes subtract) times the T1C slice spacing", "mm3"),
    _c("voxel_count", INT, "Number of voxels of the lesion in the label map", "voxel"),
    _c("centroid_lps_x_mm", F, "Centroid of the lesion voxels, DICOM patient x (LPS: + = patient left)", "mm"),
    _c("centroid_lps_y_mm", F, "Centroid of the lesion voxels, DICOM patient y (LPS: + = posterior)", "mm"),
    _c("centroid_lps_z_mm", F, "Centroid of the lesion voxels, DICOM patient z (LPS: + = superior)", "mm"),
    _c("centroid_ras_x_mm", F, "Centroid in the NIfTI RAS frame, x (+ = patient right)", "mm"),
    _c("centroid_ras_y_mm", F, "Centroid in the NIfTI RAS frame, y (+ = anterior)", "mm"),
    _c("centroid_ras_z_mm", F, "Centroid in the NIfTI RAS frame, z (+ = superior)", "mm"),
    _c("centroid_i", F, "Centroid voxel index i (column) on the T1C grid, zero-based", "voxel"),
    _c("centroid_j", F, "Centroid voxel index j (row) on the T1C grid, zero-based", "voxel"),
    _c("centroid_k", F, "Centroid voxel index k (slice) on the T1C grid, zero-based", "voxel"),
    _c("n_slices", INT, "Number of T1C slices (k planes) the lesion occupies in the label map"),
    _c("n_contours", INT, "Number of contours of the ROI in the RT Structure Set"),
    _c("n_contours_used", INT, "Number of contours placed on a T1C slice and rasterized"),
    _c("max_diameter_mm", F, "Maximum 3D diameter: largest distance between two lesion voxel centres", "mm"),
    _c("longest_axial_diameter_mm", F, "RANO-BM longest diameter: largest in-plane distance between two lesion voxel centres on a single T1C slice", "mm"),
    _c("longest_axial_diameter_slice_k", INT, "T1C slice index k on which the longest axial diameter lies"),
    _c("rano_measurable", B, "RANO-BM measurable: longest axial diameter >= 10 mm and seen on >= 2 slices"),
    _c("equivalent_diameter_mm", F, "Diameter of the sphere with the lesion's volume, (6 V / pi)^(1/3)", "mm"),
    *[_c(f"bbox_{a}_{m}", INT, f"{'Smallest' if m == 'min' else 'Largest'} voxel index {a} of the lesion on the T1C grid", "voxel") for a in "ijk" for m in ("min", "max")],
    *[_c(f"bbox_lps_{a}_{m}_mm", F, f"{'Smallest' if m == 'min' else 'Largest'} LPS {a} of the lesion voxel centres", "mm") for a in "xyz" for m in ("min", "max")],
    _c("hemisphere", S, "L, R, midline or unknown: from the ROI name where it says, else from the geometry"),
    _c("region", S, "Region (frontal, temporal, parietal, occipital, insula, deep, cerebellum, brainstem, unknown): from the ROI name; unknown where the name does not say (no geometric estimate of the region yet)"),
    _c("subregion", S, "Finer location from the ROI name (thalamus, basal ganglia, pons, vermis, ...)"),
    _c("hemisphere_name", S, "Hemisphere read from the ROI name through metsprep/data/location_vocabulary.yaml"),
    _c("hemisphere_geometry", S, "Hemisphere from the signed distance of the centroid to the estimated midsagittal plane"),
    _c("region_name", S, "Region read from the ROI name"),
    _c("region_geometry", S, "Region from the geometry: always unknown for now (no atlas is used yet)"),
    _c("location_source", S, "Where hemisphere/region come from: name, geometry, name+geometry or none"),
    _c("location_flag", S, "Set where the name and the geometry disagree (or the name names both sides)"),
    _c("midsagittal_distance_mm", F, "Signed distance of the centroid to the estimated midsagittal plane (+ = patient left)", "mm"),
    _c("distance_to_head_surface_mm", F, "Distance of the lesion voxel closest to the head surface to that surface (head mask distance transform); null without a head mask", "mm"),
    _c("distance_to_inner_skull_mm", F, "Approximate distance to the inner skull surface: max(0, distance_to_head_surface_mm - 10 mm scalp and skull)", "mm"),
    *_intensity_columns(),
    _c("nab_t1c_mean", F, "Mean T1C intensity of the case's normal-appearing brain (see the definitions)", "a.u."),
    _c("enhancement_ratio", F, "Lesion T1C mean / normal-appearing brain T1C mean", "1"),
    _c("generation_algorithm", S, "ROI Generation Algorithm (3006,0036): MANUAL, SEMIAUTOMATIC, AUTOMATIC"),
    _c("intensity_flag", S, "Set where t1_*/t2_* intensities come from a registration that a check flagged (the values may be misplaced); null otherwise"),
    _c("mni_x_mm", F, "Lesion centroid in MNI152NLin2009aSym space (RAS, the coordinates papers quote), x: + = right; through the case's affine fit to the template", "mm"),
    _c("mni_y_mm", F, "Lesion centroid in MNI space, y: + = anterior", "mm"),
    _c("mni_z_mm", F, "Lesion centroid in MNI space, z: + = superior", "mm"),
    _c("mni_hemisphere", S, "L, R or midline (|x| < 3 mm) from the MNI centroid"),
    _c("mni_region", S, "Coarse region of the MNI centroid (frontal, parietal, temporal, occipital, deep, cerebellum, brainstem) by the plane rule of docs/standard_space.md; not an anatomical atlas"),
    _c("mni_flag", S, "Why the mni_* columns may be wrong (the case's fit to the template was flagged) or are null (no fit); null when the fit was trusted"),
    _c("roi_status", S, "ok; partial (some contours could not be used: volumes are partial, roi_status_reason names each); empty (no contours); unusable (no usable contour); self_intersecting (a contour crosses itself: voxels by the even-odd rule, volume_mm3 and contour_volume_mm3 disagree); no_voxels"),
    _c("roi_status_reason", S, "Reason given by the rtss stage when roi_status is not ok"),
    _c("qc_rating", S, "A reviewer's decision on this lesion (pass or fail) from the ratings file (config qc.ratings); null when not reviewed"),
    _c("qc_comment", S, "The reviewer's comment on this lesion"),
]

_REG_COLUMNS = [
    col
    for seq in ("t1", "t2")
    for col in (
        _c(f"{seq}_metric_before", F, f"Mattes mutual information between T1C and {seq.upper()} before registration (lower is better)", "1"),
        _c(f"{seq}_metric_after", F, f"Mattes mutual information between T1C and {seq.upper()} after registration", "1"),
        _c(f"{seq}_iterations", INT, f"Optimizer iterations of the {seq.upper()} registration"),
        _c(f"{seq}_stop_condition", S, f"Optimizer stop condition of the {seq.upper()} registration"),
        _c(f"{seq}_rotation_deg", F, f"Total rotation angle of the {seq.upper()} -> T1C rigid transform", "deg"),
        _c(f"{seq}_translation_mm", F, f"Translation norm of the {seq.upper()} -> T1C rigid transform at the rotation centre", "mm"),
        _c(f"{seq}_registration_flag", S, f"Why the {seq.upper()} registration may be wrong (null when no check fired)"),
        _c(f"{seq}_registration_trusted", B, f"False when a check of the {seq.upper()} registration fired: {seq}_in_t1c_nifti and every {seq}_* lesion intensity may be misplaced; null without a registration"),
        _c(f"{seq}_registration_check_mm", F, f"95th percentile distance at head points between the {seq.upper()} result and a second registration from a perturbed start (the independent check)", "mm"),
    )
]

CASE_COLUMNS: list[Column] = [
    _c("case_id", S, "Case identifier sub-<subject>_ses-<session>"),
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("study_instance_uid", S, "Study Instance UID (0020,000D) of the imaging study"),
    _c("session", S, "BIDS session label"),
    _c("subject", S, "BIDS subject label"),
    _c("status", S, "ok or excluded"),
    _c("status_reason", S, "Null when ok; otherwise why the case was excluded, for a person"),
    _c("excluded_at", S, "Stage that excluded the case (match, bids, rtss, register, catalog); null when ok"),
    _c("t1c_nifti", S, "Native T1w+C image (path relative to output_dir)"),
    _c("t1_nifti", S, "Native T1w image; null when the case has no T1"),
    _c("t2_nifti", S, "Native T2w image; null when the case has no T2"),
    _c("t1_in_t1c_nifti", S, "T1w registered and resampled onto the T1C grid"),
    _c("t2_in_t1c_nifti", S, "T2w registered and resampled onto the T1C grid"),
    _c("t1_to_t1c_transform", S, "ITK rigid transform (T1C LPS point -> T1 LPS point; SimpleITK ReadTransform)"),
    _c("t2_to_t1c_transform", S, "ITK rigid transform (T1C LPS point -> T2 LPS point; SimpleITK ReadTransform)"),
    _c("lesion_labels_nifti", S, "Integer lesion label map on the T1C grid, 0 = background, value = lesion label"),
    _c("lesion_mask_nifti", S, "Binary union of all lesions on the T1C grid"),
    _c("head_mask_nifti", S, "Head mask from the RTSS *Skull structure on the T1C grid; null where there is none"),
    _c("n_lesions", INT, "Number of lesion ROIs with at least one usable contour"),
    _c("n_lesion_rois", INT, "Number of lesion ROIs (rows of lesions.parquet for this case), empty or unusable ones included"),
    _c("n_lesions_partial", INT, "Lesions with roi_status partial: some contours could not be used, their volumes are partial"),
    _c("n_lesions_labelled", INT, "Number of lesions with at least one voxel in the label map"),
    _c("n_rano_measurable", INT, "Number of RANO-BM measurable lesions"),
    _c("total_lesion_volume_mm3", F, "Sum of the lesion volumes (label map)", "mm3"),
    _c("largest_lesion_volume_mm3", F, "Volume of the largest lesion", "mm3"),
    _c("largest_diameter_mm", F, "Largest maximum 3D diameter of the case's lesions", "mm"),
    _c("largest_axial_diameter_mm", F, "Largest RANO-BM longest axial diameter of the case's lesions", "mm"),
    *_REG_COLUMNS,
    _c("brain_mask_nifti", S, "Brain mask on the T1C grid from the template's grey + white matter through the affine fit (no model weights); null without a fit"),
    _c("mni_transform", S, "ITK affine that resamples the T1C into MNI152NLin2009aSym space (MNI LPS point -> T1C LPS point); null without a fit"),
    _c("mni_trusted", B, "False when a check of the affine fit to the MNI template fired (mni_flag says which): every mni_* lesion column and the brain mask may be off; null without a fit"),
    _c("mni_flag", S, "Why the fit to the MNI template may be wrong, or why there is none; null when trusted"),
    _c("mni_check_mm", F, "95th percentile distance at head points between the fit and a second fit from a perturbed start (the independent check)", "mm"),
    _c("mni_scales", pa.list_(pa.float64()), "Singular values of the fitted affine's linear part (T1C mm -> MNI mm): about 1 / head size relative to the template", "1"),
    _c("brain_volume_ml", F, "Volume of the template-derived brain mask on the T1C grid (inside the T1C slab)", "ml"),
    _c("nab_t1c_mean", F, "Mean T1C intensity of normal-appearing brain (enhancement ratio reference)", "a.u."),
    _c("midsagittal_source", S, "Mask the midsagittal plane was estimated from: head_mask or t1c_foreground"),
    _c("midsagittal_point_lps_x_mm", F, "Head mask centroid (a point of the midsagittal plane), LPS x", "mm"),
    _c("midsagittal_point_lps_y_mm", F, "Head mask centroid, LPS y", "mm"),
    _c("midsagittal_point_lps_z_mm", F, "Head mask centroid, LPS z", "mm"),
    _c("midsagittal_normal_lps", pa.list_(pa.float64()), "Unit normal of the midsagittal plane in LPS, pointing to patient left"),
    _c("midsagittal_tilt_deg", F, "Angle between the midsagittal plane normal and the LPS x axis", "deg"),
    _c("sex", S, "Patient's Sex (0010,0040): M, F or null"),
    _c("age_years", F, "Patient's Age (0010,1010) in years", "year"),
    _c("t1c_series_instance_uid", S, "Series Instance UID of the T1C series"),
    _c("t1_series_instance_uid", S, "Series Instance UID of the T1 series"),
    _c("t2_series_instance_uid", S, "Series Instance UID of the T2 series"),
    _c("rtss_sop_instance_uid", S, "SOP Instance UID of the RT Structure Set"),
    _c("rtss_file", S, "RT Structure Set file, relative to the input folder"),
    _c("study_date", S, "Study Date (0008,0020) as written (de-identified: generalised)"),
    _c("study_time", S, "Study Time (0008,0030) as written"),
    _c("match_method", S, "How the RT Structure Set was matched to its images: sop_uid, series_uid or geometry"),
    _c("n_rtss", INT, "Number of RT Structure Sets found for the study (the newest is used)"),
    _c("non_lesion_rois", STRINGS, "Names of the RTSS structures that are not lesions (e.g. *Skull)"),
    _c("flags", STRINGS, "Short flags of all stages (matching, conversion, rasterization, registration, location)"),
    _c("matching_flags", STRINGS, "Flags of the match stage"),
    _c("registration_flags", STRINGS, "Flags of the register stage"),
    _c("location_flags", STRINGS, "Lesions whose name and geometry disagree: '<roi_name>: <flag>'"),
    _c("qc_rating", S, "A reviewer's decision on the case (pass or fail) from the ratings file (config qc.ratings, written by the QC pages); fail leaves the case out of the exports; null when not reviewed"),
    _c("qc_comment", S, "The reviewer's comment on the case"),
]

SERIES_COLUMNS: list[Column] = [
    _c("case_id", S, "Case the series belongs to (null for series of no case)"),
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("study_instance_uid", S, "Study Instance UID (0020,000D)"),
    _c("series_instance_uid", S, "Series Instance UID (0020,000E)"),
    _c("modality", S, "Modality (0008,0060): MR, RTSTRUCT, ..."),
    _c("series_description", S, "Series Description (0008,103E)"),
    _c("sequence", S, "T1, T1C, T2, OTHER (RTSS: RTSTRUCT)"),
    _c("sequence_source", S, "What decided the sequence: description, acquisition, description+acquisition, contrast_agent_tag, rtss_reference, acquisition_order, config_override"),
    _c("n_instances", INT, "Number of DICOM instances of the series"),
    _c("rows", INT, "Rows (0028,0010)", "pixel"),
    _c("columns", INT, "Columns (0028,0011)", "pixel"),
    _c("pixel_spacing_row_mm", F, "Pixel Spacing (0028,0030) between rows", "mm"),
    _c("pixel_spacing_col_mm", F, "Pixel Spacing (0028,0030) between columns", "mm"),
    _c("slice_thickness_mm", F, "Slice Thickness (0018,0050)", "mm"),
    _c("slice_spacing_mm", F, "Distance between slice centres measured from Image Position (Patient)", "mm"),
    _c("nifti", S, "Exported NIfTI image (path relative to output_dir); null where not exported"),
    _c("pixel_label", S, "What the pixels say the T1/T2 used by a case is (T1, T2, T1C-like); null where unclear or not checked"),
    _c("pixel_check", S, "Image check of the label against the pixels: agrees, disagrees, unclear, not_checked (metsprep.image_check)"),
    _c("pixel_check_reason", S, "The image check's measurements and conclusion, in words"),
    _c("series_number", INT, "Series Number (0020,0011)"),
    _c("sequence_rule", S, "Id of the classification rule that decided the sequence (metsprep/data/sequence_rules.yaml)"),
    _c("sequence_flags", STRINGS, "Classification flags (e.g. ambiguous, no_contrast_marker, description_conflicts_with_acquisition)"),
    _c("sequence_confidence", S, "high: description and header agree; medium: one source decided; low: sources disagree or ambiguous"),
    _c("sequence_why", S, "How the sequence was decided: the description as read, the rule, the contrast words, header and order evidence"),
    _c("orientation", S, "Slice orientation from the slice normal: axial, coronal, sagittal or oblique"),
    _c("frame_of_reference_uid", S, "Frame of Reference UID (0020,0052)"),
    _c("rtss_referenced", B, "The case's RT Structure Set references this series (its contours were drawn on it)"),
    _c("role", S, "Role of the series in its case: T1C, T1, T2 or RTSS; null when not used"),
    _c("selection_reason", S, "Why this series was chosen for its role among several candidates"),
    _c("match_method", S, "How the RT Structure Set was matched to this (T1C) series: sop_uid, series_uid or geometry"),
    _c("flags", STRINGS, "Series flags of the match stage (missing_slices, mixed_geometry, ...)"),
    _c("usable", B, "False when the series cannot be used (the reason is in the case's status_reason)"),
    _c("manufacturer", S, "Manufacturer (0008,0070) as written"),
    _c("manufacturer_model_name", S, "Manufacturer's Model Name (0008,1090)"),
    _c("magnetic_field_strength_t", F, "Magnetic Field Strength (0018,0087)", "T"),
]

SPLIT_COLUMNS: list[Column] = [
    _c("case_id", S, "Case identifier sub-<subject>_ses-<session>"),
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("subject", S, "BIDS subject label: the unit of the split (every session of a patient is in one set)"),
    _c("session", S, "BIDS session label"),
    _c("split", S, "train or test (the held-out test set)"),
    _c("fold", INT, "Cross-validation fold the case validates in (0-based); null in the test set"),
    _c("set_name", S, "test or fold<k>"),
    _c("lesion_count_bin", S, "Stratum: bin of n_lesions (edges in config splits.lesion_count_bins)"),
    _c("volume_bin", S, "Stratum: bin of total_lesion_volume_mm3 (edges in config splits.volume_bins_mm3)"),
    _c("scanner", S, "Stratum: vendor of the T1C series from Manufacturer (0008,0070); unknown where not written"),
    _c("assigned_by", S, "ledger: the patient's set comes from the split ledger (the first split, catalog/split_ledger.parquet, or config splits.frozen); balanced: a patient new since, placed by the balancing rule"),
    _c("seed", INT, "Seed of the split (config splits.seed)"),
]

EXPORT_COLUMNS: list[Column] = [
    _c("case_id", S, "Case identifier sub-<subject>_ses-<session>"),
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("split", S, "train or test, from catalog/splits.parquet; null for cases not ok"),
    _c("fold", INT, "Validation fold from catalog/splits.parquet; null in the test set"),
    _c("exported", B, "True when the case is in the exports (nnU-Net dataset and MONAI datalists)"),
    _c("export_reason", S, "Why the case was left out, or what was done to it (zero-filled or kept untrusted channels); null when neither"),
    _c("zero_filled_channels", STRINGS, "Channels written as zeros on the T1C grid (export.missing_channel / untrusted_registration: zero_fill)"),
    _c("untrusted_channels_kept", STRINGS, "Channels from a flagged registration kept in the export (export.untrusted_registration: keep)"),
    _c("case_images", STRINGS, "The case's export images in channel order T1C, T1, T2 (exports/cases/<case_id>/, what the MONAI datalists name)"),
    _c("case_label", S, "The case's export label map (exports/cases/<case_id>/<case_id>.nii.gz)"),
    _c("nnunet_images", STRINGS, "The images in the nnU-Net dataset (imagesTr or imagesTs), channel order _0000 T1C, _0001 T1, _0002 T2"),
    _c("nnunet_label", S, "The label in the nnU-Net dataset (labelsTr or labelsTs)"),
    _c("label_kind", S, "binary (1 = lesion) or instance (value = the lesion's label in lesions.parquet)"),
    _c("max_label", INT, "Largest value in the export label map (0: no lesion voxel)"),
]

#: Columns of the cases table that only the match stage knows (merged in by the catalog).
LESION_TRACK_COLUMNS: list[Column] = [
    _c("patient_id", S, "DICOM Patient ID (0010,0020)"),
    _c("track_id", S, "The same lesion across the patient's sessions: <patient_id>-T<nn>, numbered in order of first appearance; null for a lesion that could not be matched (its session has no registration to the first)"),
    _c("case_id", S, "The session's case (sub-<subject>_ses-<session>)"),
    _c("session", S, "BIDS session label (sessions in date order)"),
    _c("roi_number", INT, "ROI Number of the lesion in this session's RT Structure Set; null on a gone row"),
    _c("roi_name", S, "ROI Name in this session (names may change between sessions)"),
    _c("status", S, "baseline (first session), new, stable, shrinking, growing (thresholds in docs/longitudinal.md), gone (no lesion of this track in this session)"),
    _c("volume_mm3", F, "Lesion volume in this session (lesions.parquet volume_mm3); 0 when gone", "mm3"),
    _c("longest_axial_diameter_mm", F, "RANO-BM longest axial diameter in this session; 0 when gone", "mm"),
    _c("first_session_lps_x_mm", F, "Lesion centroid in the patient's first session's T1C frame (LPS x), through the session registration", "mm"),
    _c("first_session_lps_y_mm", F, "... LPS y", "mm"),
    _c("first_session_lps_z_mm", F, "... LPS z", "mm"),
    _c("match_distance_mm", F, "Distance between this lesion and the track's last position (first session frame); null when not matched", "mm"),
    _c("diameter_change_since_first_mm", F, "Longest axial diameter now minus at the track's first session", "mm"),
    _c("diameter_change_since_nadir_mm", F, "Longest axial diameter now minus the track's smallest earlier value", "mm"),
    _c("is_target", B, "A RANO-BM target lesion: measurable (>= 10 mm) at the first session, among the 5 largest"),
    _c("session_sum_longest_diameters_mm", F, "Sum of the target lesions' longest axial diameters in this session (RANO-BM SLD)", "mm"),
    _c("response", S, "RANO-BM-style response of the session (same on every row of the session): baseline, CR, PR, SD, PD, NE (docs/longitudinal.md)"),
    _c("track_flag", S, "Why this row may be wrong: the session registration was flagged or missing, or the lesion's contours were partial; null otherwise"),
]

MATCH_ONLY_CASE_COLUMNS = ("study_date", "study_time", "n_rtss")

SORT_KEYS = {
    "series": ["case_id", "series_number", "series_instance_uid"],
    "cases": ["case_id"],
    "lesions": ["case_id", "roi_number"],
    "splits": ["case_id"],
    "exports": ["case_id"],
    "lesion_tracks": ["patient_id", "session", "track_id"],
}
TABLE_DESCRIPTIONS = {
    "inventory": "One row per input file (written by the scan stage).",
    "series": "One row per DICOM series (from the match stage, with the exported NIfTI).",
    "cases": "One row per case: one imaging study with its RT Structure Set, ok or excluded.",
    "lesions": "One row per lesion ROI of the cases that are ok.",
    "splits": ("One row per ok case: its patient-level set (held-out test set or a cross-validation fold) and "
               "the strata it was balanced by (metsprep.splits, docs/exports.md)."),
    "exports": ("One row per case: whether it is in the nnU-Net dataset and MONAI datalists, where its files "
                "are, and why it was left out or what was done to it (metsprep.export)."),
    "lesion_tracks": ("One row per lesion per session of every patient with at least two ok sessions, and one per "
                      "track in each session it is gone from (metsprep.longitudinal, docs/longitudinal.md)."),
    "deid_audit": ("One row per input file and de-identification finding (config `deid`): what the file still "
                   "carries that the profile forbids. Never the value itself. No rows: every file is clean."),
}


def table_schema(columns: list[Column], table: str, extra_metadata: dict[str, str] | None = None) -> pa.Schema:
    from metsprep import __version__

    metadata = {
        "table": table,
        "description": TABLE_DESCRIPTIONS.get(table, ""),
        "sort_keys": json.dumps(SORT_KEYS.get(table, [])),
        "metsprep_version": __version__,
        "created_by": CREATED_BY,
        **(extra_metadata or {}),
    }
    return pa.schema([c.field() for c in columns], metadata=metadata)


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the run's configuration."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _none_if_nan(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if "pandas" in sys.modules:  # pd.NA / NaT can only exist where pandas is loaded
        import pandas as pd

        try:
            if pd.isna(value):
                return None
        except (TypeError, ValueError):
            pass
    return value


def _coerce(value: Any, type_: pa.DataType) -> Any:
    value = _none_if_nan(value) if not isinstance(value, (list, tuple, np.ndarray)) else value
    if value is None:
        return None
    try:
        if pa.types.is_list(type_):
            if isinstance(value, str):
                value = [v for v in value.split(";") if v.strip()]
            return [_coerce(v, type_.value_type) for v in list(value)]
        if pa.types.is_string(type_):
            return str(value)
        if pa.types.is_integer(type_):
            return int(value)
        if pa.types.is_floating(type_):
            out = float(value)
            return out if math.isfinite(out) else None
        if pa.types.is_boolean(type_):
            return bool(value)
    except (TypeError, ValueError):
        return None
    return value


def rows_to_table(rows: list[dict[str, Any]], columns: list[Column], table: str, extra_metadata: dict[str, str] | None = None) -> pa.Table:
    keys = [k for k in SORT_KEYS.get(table, []) if any(c.name == k for c in columns)]
    schema = table_schema(columns, table, {**(extra_metadata or {}), "sort_keys": json.dumps(keys)})

    def sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple((row.get(k) is None, row.get(k) if row.get(k) is not None else 0) for k in keys)

    rows = sorted(rows, key=sort_key)
    values = [{c.name: _coerce(r.get(c.name), c.type) for c in columns} for r in rows]
    if all(_json_representable(c.type) for c in columns):
        return _table_via_json(values, schema)
    arrays = {c.name: pa.array([v[c.name] for v in values], type=c.type) for c in columns}
    return pa.Table.from_pydict(arrays, schema=schema)


def _json_representable(type_: pa.DataType) -> bool:
    if pa.types.is_list(type_):
        return _json_representable(type_.value_type)
    return any(check(type_) for check in (pa.types.is_string, pa.types.is_int64, pa.types.is_float64, pa.types.is_boolean))


def _table_via_json(values: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """The rows (already coerced to the column types) as a table, through pyarrow's JSON reader.

    Why not ``pa.array``: it imports pandas on first use where pandas is installed
    (pyarrow checks for pandas-like inputs), ~0.3 s of every per-case catalog job. JSON
    keeps every value (floats are written with ``repr``'s round-trip precision, NaN and
    infinities are already None) and the explicit schema fixes the types.
    """
    import io

    import pyarrow.json as pajson

    if not values:
        return schema.empty_table()
    ndjson = "\n".join(json.dumps(v, allow_nan=False, ensure_ascii=False) for v in values).encode()
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    table = pajson.read_json(io.BytesIO(ndjson), read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(ndjson), 1 << 20) + 1), parse_options=parse)
    return table.select(schema.names).cast(schema)


def write_table(rows: list[dict[str, Any]], columns: list[Column], table: str, path: Path, extra_metadata: dict[str, str] | None = None) -> pa.Table:
    out = rows_to_table(rows, columns, table, extra_metadata)
    write_parquet(path, out)
    return out
