"""Stage catalog, per case: one case's lesion table and its row of the cases table.

Reads the typed results of the earlier stages (plan, bids, rtss, register; see
`metsprep.contracts`) and writes `work/cases/{case_id}/lesions.parquet` (one row per
lesion ROI, columns `schemas.LESION_COLUMNS`) and `case.json` (a `CaseSummary` whose row
has exactly the columns `schemas.CASE_COLUMNS`). Morphometry: `lesion_features`;
hemisphere and region: `metsprep.location`.

The case's status is the first exclusion in stage order (bids, rtss, register, catalog);
its flags are every stage's flags in that order, each once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from metsprep import location
from metsprep.catalog.lesion_features import (
    BRAIN_DEPTH_MM,
    SCALP_AND_SKULL_MM,
    inside_distance_mm,
    intensity_stats,
    lesion_geometry,
    normal_appearing_brain,
)
from metsprep.catalog.schemas import (
    CASE_COLUMNS,
    LESION_COLUMNS,
    MATCH_ONLY_CASE_COLUMNS,
    _none_if_nan,
    write_table,
)
from metsprep.contracts import (
    SCHEMA_VERSION,
    BidsResult,
    CasePlan,
    CaseSummary,
    RegisterResult,
    RegistrationRecord,
    RtssResult,
    StandardSpaceResult,
)
from metsprep.errors import CaseExcluded
from metsprep.frames import Grid
from metsprep.image_check import PixelCheck, enhancement_check, weighting_check
from metsprep.location import Vocabulary
from metsprep.masks import head_mask_ijk
from metsprep.settings import LocationSettings

log = logging.getLogger("metsprep.catalog")


def catalog_case(
    plan_json: Path,
    bids_json: Path,
    rtss_json: Path,
    rois_parquet: Path,
    register_json: Path,
    standard_space_json: Path,
    settings: LocationSettings,
    output_dir: Path,
    out_lesions: Path,
    out_case: Path,
) -> None:
    """One case's lesion table and case row; always writes both files."""
    output_dir = Path(output_dir)
    plan, bids = CasePlan.read(plan_json), BidsResult.read(bids_json)
    rtss, register = RtssResult.read(rtss_json), RegisterResult.read(register_json)
    standard = StandardSpaceResult.read(standard_space_json)
    case = case_row(plan, bids, rtss, register)
    case.update(standard_space_columns(standard))
    status, reason, stage = _first_excluded([("bids", bids), ("rtss", rtss), ("register", register)])
    rois = _read_rois(rois_parquet)
    case["non_lesion_rois"] = [str(r["roi_name"]) for r in rois if not r["is_lesion"]]
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    catalog_flags: list[str] = []
    pixel_checks: list[PixelCheck] = []
    if status == "ok":
        try:
            vocabulary = location.read_vocabulary(settings.vocabulary or None)
            rows, extra = _lesion_rows(case, [r for r in rois if r["is_lesion"]], output_dir, bids.images["T1C"].grid, vocabulary)
            add_mni_columns(rows, standard)
            catalog_flags = extra.pop("catalog_flags")
            pixel_checks = extra.pop("pixel_checks")
        except CaseExcluded as exc:
            status, reason, stage = "excluded", exc.reason, "catalog"
            rows, extra = [], {}
    case.update(extra)
    case["location_flags"] = [f"{r['roi_name']}: {r['location_flag']}" for r in rows if r.get("location_flag")]
    case["flags"] = _unique(
        list(plan.flags) + list(bids.flags) + list(rtss.flags) + list(register.flags)
        + standard_space_flags(standard) + (["location_name_geometry_disagree"] if case["location_flags"] else []) + catalog_flags
    )  # fmt: skip
    case.update(status=status, status_reason=reason, excluded_at=stage)
    case.update(_case_totals(rows))
    write_table(rows, LESION_COLUMNS, "lesions", Path(out_lesions))
    known = [c.name for c in CASE_COLUMNS if c.name not in MATCH_ONLY_CASE_COLUMNS]
    unknown = sorted(set(case) - set(known))
    if unknown:
        raise AssertionError(f"case row has columns the cases table does not declare: {unknown}")
    series_nifti = {image.series_instance_uid: image.nifti for image in bids.images.values() if image.series_instance_uid}
    CaseSummary(
        schema_version=SCHEMA_VERSION, case_id=plan.case_id, status="ok" if status == "ok" else "excluded",
        row={name: case.get(name) for name in known}, series_nifti=series_nifti,
        series_checks=series_checks(case, pixel_checks),
    ).write(out_case)  # fmt: skip


def series_checks(case: dict[str, Any], checks: list[PixelCheck]) -> dict[str, Any]:
    """SeriesInstanceUID -> pixel_label, pixel_check, pixel_check_reason (series.parquet)."""
    out: dict[str, Any] = {}
    for role in ("T1", "T2"):
        uid = case.get(f"{role.lower()}_series_instance_uid")
        mine = [c for c in checks if c.role == role]
        if not uid or not mine:
            continue
        results = {c.result for c in mine}
        result = "disagrees" if "disagrees" in results else "agrees" if "agrees" in results else "unclear"
        labels = [c.pixel_label for c in mine if c.result == "disagrees"] or [c.pixel_label for c in mine if c.pixel_label]
        out[uid] = {"pixel_label": labels[0] if labels else None, "pixel_check": result,
                    "pixel_check_reason": "; ".join(c.reason for c in mine)}  # fmt: skip
    return out


def _first_excluded(stages: list[tuple[str, BidsResult | RtssResult | RegisterResult]]) -> tuple[str, str | None, str | None]:
    for stage, result in stages:
        if result.status != "ok":
            return "excluded", result.status_reason or f"excluded by the {stage} stage", stage
    return "ok", None, None


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


def case_row(plan: CasePlan, bids: BidsResult, rtss: RtssResult, register: RegisterResult) -> dict[str, Any]:
    """The case's columns that come straight from the stage results."""
    images = bids.images
    outputs = rtss.outputs

    def nifti(seq: str) -> str | None:
        return images[seq].nifti if seq in images else None

    def series_uid(seq: str) -> str | None:
        planned = plan.series.get(seq)
        return planned.series_instance_uid if planned is not None else None

    row: dict[str, Any] = {
        "case_id": plan.case_id,
        "patient_id": plan.patient_id,
        "study_instance_uid": plan.study_instance_uid,
        "session": plan.session,
        "subject": plan.subject,
        "t1c_nifti": nifti("T1C"),
        "t1_nifti": nifti("T1"),
        "t2_nifti": nifti("T2"),
        "lesion_labels_nifti": outputs.lesion_labels_nifti if outputs else None,
        "lesion_mask_nifti": outputs.lesion_mask_nifti if outputs else None,
        "head_mask_nifti": outputs.head_mask_nifti if outputs else None,
        "sex": bids.participant.sex,
        "age_years": bids.participant.age_years,
        "t1c_series_instance_uid": series_uid("T1C"),
        "t1_series_instance_uid": series_uid("T1"),
        "t2_series_instance_uid": series_uid("T2"),
        "rtss_sop_instance_uid": plan.rtss.sop_instance_uid if plan.rtss else None,
        "rtss_file": plan.rtss.file if plan.rtss else None,
        "match_method": plan.rtss.match_method if plan.rtss else None,
        "matching_flags": list(plan.flags),
        "registration_flags": list(register.flags),
    }
    for seq in ("T1", "T2"):
        row.update(_registration_columns(seq.lower(), register.usable(seq)))
    return row


def _registration_columns(prefix: str, record: RegistrationRecord | None) -> dict[str, Any]:
    return {
        f"{prefix}_in_t1c_nifti": record.image if record else None,
        f"{prefix}_to_t1c_transform": record.transform if record else None,
        f"{prefix}_metric_before": record.metric_before if record else None,
        f"{prefix}_metric_after": record.metric_after if record else None,
        f"{prefix}_iterations": record.iterations if record else None,
        f"{prefix}_stop_condition": record.stop_condition if record else None,
        f"{prefix}_rotation_deg": record.rotation_deg if record else None,
        f"{prefix}_translation_mm": record.translation_mm if record else None,
        f"{prefix}_registration_flag": record.flag if record else None,
        f"{prefix}_registration_trusted": (record.flag is None) if record else None,
        f"{prefix}_registration_check_mm": record.check_disagreement_mm if record else None,
    }


def standard_space_columns(result: StandardSpaceResult) -> dict[str, Any]:
    """The case's columns from its fit to the MNI template."""
    fitted = result.fitted
    return {
        "brain_mask_nifti": result.brain_mask,
        "mni_transform": result.transform,
        "mni_trusted": result.trusted if fitted else None,
        "mni_flag": result.flag if fitted else result.reason,
        "mni_check_mm": result.check_disagreement_mm,
        "mni_scales": list(result.scales) if result.scales else None,
        "brain_volume_ml": result.brain_volume_ml,
    }


def standard_space_flags(result: StandardSpaceResult) -> list[str]:
    if result.status != "ok":
        return []
    if not result.fitted:
        return ["standard_space_failed"]
    return [] if result.trusted else ["standard_space_flag"]


def add_mni_columns(rows: list[dict[str, Any]], result: StandardSpaceResult) -> None:
    """Each lesion's centroid in MNI space, its hemisphere and region there, and on its own
    row the reason these may be wrong (a flag on the case alone would not reach a lesion)."""
    from metsprep.standard_space import hemisphere_of_mni_ras_x, mni_ras_of, region_of_mni_ras

    matrix = result.matrix()
    doubt = None if result.trusted else (
        f"fit to the MNI template flagged: {result.flag}" if result.fitted else f"no fit to the MNI template: {result.reason}"
    )  # fmt: skip
    for row in rows:
        centroid = [row.get(f"centroid_lps_{a}_mm") for a in "xyz"]
        row["mni_flag"] = doubt
        if matrix is None or any(v is None for v in centroid):
            continue
        x, y, z = (float(v) for v in mni_ras_of(np.array(centroid, dtype=float), matrix))
        row.update(mni_x_mm=x, mni_y_mm=y, mni_z_mm=z, mni_hemisphere=hemisphere_of_mni_ras_x(x),
                   mni_region=region_of_mni_ras(x, y, z))  # fmt: skip


def _read_rois(path: Path) -> list[dict[str, Any]]:
    """The rtss stage's ROI rows (pyarrow alone: pandas would add ~0.35 s of import)."""
    import pyarrow.parquet as pq

    from metsprep.rtss import ROI_COLUMNS

    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, which imports pandas
    table = pq.ParquetFile(path).read()
    if table.column_names != list(ROI_COLUMNS):
        raise ValueError(f"{path}: columns {table.column_names} are not the rtss stage's {list(ROI_COLUMNS)}")
    return [{k: _none_if_nan(v) for k, v in row.items()} for row in table.to_pylist()]


def _load_volume(output_dir: Path, rel: str | None, dtype: Any = np.float32) -> tuple[NDArray[Any], Grid] | None:
    """(data indexed [i, j, k], grid) of a NIfTI under output_dir, or None."""
    if not rel:
        return None
    path = Path(output_dir) / rel
    if not path.exists():
        log.warning("image %s is missing", path)
        return None
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim > 3:
        data = data.reshape(data.shape[:3])
    return data.astype(dtype, copy=False), Grid.from_nifti(img)


def _case_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    volumes = [r["volume_mm3"] for r in rows if r.get("volume_mm3") is not None]
    diameters = [r["max_diameter_mm"] for r in rows if r.get("max_diameter_mm") is not None]
    axial = [r["longest_axial_diameter_mm"] for r in rows if r.get("longest_axial_diameter_mm") is not None]
    return {
        # lesions with usable contours; empty and unusable lesion ROIs are rows with a status
        "n_lesions": sum(1 for r in rows if r.get("roi_status") not in ("empty", "unusable")),
        "n_lesion_rois": len(rows),
        "n_lesions_partial": sum(1 for r in rows if r.get("roi_status") == "partial"),
        "n_lesions_labelled": sum(1 for r in rows if r.get("voxel_count")),
        "n_rano_measurable": sum(1 for r in rows if r.get("rano_measurable")),
        "total_lesion_volume_mm3": float(sum(volumes)),
        "largest_lesion_volume_mm3": max(volumes) if volumes else None,
        "largest_diameter_mm": max(diameters) if diameters else None,
        "largest_axial_diameter_mm": max(axial) if axial else None,
    }


def _lesion_rows(
    case: dict[str, Any], rois: list[dict[str, Any]], output_dir: Path, t1c_grid: Grid, vocabulary: Vocabulary
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The lesion rows of one case, and the case's extra columns (normal brain, midsagittal plane)."""
    from scipy import ndimage as ndi

    t1c_loaded = _load_volume(output_dir, case["t1c_nifti"])
    if t1c_loaded is None:
        raise CaseExcluded("the T1C image is missing, so the lesions cannot be measured")
    t1c, grid = t1c_loaded
    if not grid.same_as(t1c_grid):
        raise CaseExcluded("the T1C NIfTI on disk is not the grid the bids stage recorded")
    lps_from_ijk = grid.lps_from_ijk
    flags: list[str] = []
    labels_loaded = _load_volume(output_dir, case["lesion_labels_nifti"], dtype=np.int32)
    if labels_loaded is None:
        if len(rois):
            raise CaseExcluded("the lesion label map is missing, so the lesions cannot be measured")
        label_map = np.zeros(t1c.shape, dtype=np.int32)
    else:
        label_map = labels_loaded[0]
        if not labels_loaded[1].same_as(grid):
            raise CaseExcluded("the lesion label map is not on the T1C grid")
    head_loaded = _load_volume(output_dir, case["head_mask_nifti"], dtype=bool)
    head = head_loaded[0] if head_loaded is not None and head_loaded[0].shape == t1c.shape else None
    registered: dict[str, NDArray[Any] | None] = {}
    for seq in ("t1", "t2"):
        loaded = _load_volume(output_dir, case[f"{seq}_in_t1c_nifti"])
        if loaded is not None and not loaded[1].same_as(grid):
            flags.append(f"{seq}_in_t1c_not_on_t1c_grid")
            loaded = None
        registered[seq] = loaded[0] if loaded is not None else None

    # the head: the RTSS head structure where present, else the T1C foreground
    if head is not None and head.any():
        head_for_brain, plane_source = head, "head_mask"
    else:
        head_for_brain, plane_source = head_mask_ijk(t1c, lps_from_ijk), "t1c_foreground"
    head_depth = inside_distance_mm(head_for_brain, lps_from_ijk)
    lesion_union = label_map > 0
    nab = normal_appearing_brain(t1c, head_for_brain, lesion_union, lps_from_ijk, head_depth)
    nab_mean = float(t1c[nab].mean()) if nab.any() else None
    if nab_mean is None:
        flags.append("no_normal_appearing_brain")
    pixel_checks = _pixel_checks(t1c, registered, lesion_union, head_depth >= BRAIN_DEPTH_MM)
    for check in pixel_checks:
        if check.result == "disagrees":
            flags.append(f"{check.role.lower()}_pixels_disagree_with_label")
    plane = location.midsagittal_plane(head_for_brain, lps_from_ijk, source=plane_source)
    extra: dict[str, Any] = {"nab_t1c_mean": nab_mean, "midsagittal_source": plane.source if plane else None}
    if plane is not None:
        extra.update({f"midsagittal_point_lps_{a}_mm": float(v) for a, v in zip("xyz", plane.point_lps, strict=True)})
        extra.update(midsagittal_normal_lps=[float(v) for v in plane.normal_lps], midsagittal_tilt_deg=plane.tilt_deg)

    objects = ndi.find_objects(label_map) if label_map.max() > 0 else []
    rows = []
    by_number = sorted(rois, key=lambda r: (r.get("roi_number") is None, r.get("roi_number") or 0))
    # every lesion row says so where its T1/T2 intensities come from a flagged registration
    untrusted = [seq for seq in ("t1", "t2") if case.get(f"{seq}_registration_trusted") is False]
    doubts = [f"{seq.upper()} registration flagged ({case[f'{seq}_registration_flag']}): "
              f"{seq}_* intensities may be misplaced" for seq in untrusted]  # fmt: skip
    doubts += [f"{c.role} pixels disagree with its label ({c.reason}): {c.role.lower()}_* intensities may be of "
               "another sequence" for c in pixel_checks if c.result == "disagrees"]  # fmt: skip
    intensity_flag = "; ".join(doubts) or None
    for roi in by_number:
        label = int(roi["label"]) if roi.get("label") is not None else None
        row: dict[str, Any] = {
            "case_id": case["case_id"], "patient_id": case["patient_id"], "roi_number": roi.get("roi_number"),
            "roi_name": roi.get("roi_name"), "label": label, "contour_volume_mm3": roi.get("contour_volume_mm3"),
            "n_contours": roi.get("n_contours"), "n_contours_used": roi.get("n_contours_used"),
            "generation_algorithm": roi.get("generation_algorithm"),
            "roi_status": roi.get("status") or "ok", "roi_status_reason": roi.get("reason"), "nab_t1c_mean": nab_mean,
            "intensity_flag": intensity_flag,
        }  # fmt: skip
        box = objects[label - 1] if label is not None and 0 < label <= len(objects) else None
        name_location = location.location_from_name(row["roi_name"], vocabulary)
        distance = None
        if box is not None:
            inside = label_map[box] == label
            ijk = np.argwhere(inside) + np.array([s.start for s in box])
            row.update(lesion_geometry(ijk, lps_from_ijk))
            index = tuple(ijk.T)
            for seq, image in (("t1c", t1c), ("t1", registered["t1"]), ("t2", registered["t2"])):
                stats = intensity_stats(image[index] if image is not None else None)
                row.update({f"{seq}_{k}": v for k, v in stats.items()})
            row["enhancement_ratio"] = row["t1c_mean"] / nab_mean if nab_mean else None
            if head is not None and head.any():
                d = float(head_depth[index].min())
                row["distance_to_head_surface_mm"] = d
                row["distance_to_inner_skull_mm"] = max(0.0, d - SCALP_AND_SKULL_MM)
            if plane is not None:
                distance = float(plane.signed_distance_mm(np.array([row[f"centroid_lps_{a}_mm"] for a in "xyz"]))[0])
        else:
            # a lesion ROI without voxels: the rtss stage's centroid (contour points), if any
            for a in "xyz":
                row[f"centroid_lps_{a}_mm"] = roi.get(f"centroid_lps_{a}_mm")
            row["volume_mm3"] = 0.0 if label is None else None
            if row["roi_status"] == "ok":
                row["roi_status"] = "no_voxels"
        loc = location.combine(name_location, distance, vocabulary)
        row.update(
            hemisphere=loc.hemisphere, region=loc.region, subregion=loc.subregion,
            hemisphere_name=loc.hemisphere_name, hemisphere_geometry=loc.hemisphere_geometry,
            region_name=loc.region_name, region_geometry=loc.region_geometry,
            location_source=loc.location_source, location_flag=loc.location_flag,
            midsagittal_distance_mm=loc.midsagittal_distance_mm,
        )  # fmt: skip
        rows.append(row)
    extra["catalog_flags"] = flags
    extra["pixel_checks"] = pixel_checks
    return rows, extra


def _pixel_checks(
    t1c: NDArray[Any], registered: dict[str, NDArray[Any] | None], lesions: NDArray[np.bool_], deep: NDArray[np.bool_]
) -> list[PixelCheck]:
    """The image check of the T1 and T2 against their labels (metsprep.image_check)."""
    brain = deep & ~lesions
    checks = [weighting_check(seq.upper(), t1c, image, brain) for seq, image in registered.items() if image is not None]
    if registered.get("t1") is not None and lesions.any():
        checks.append(enhancement_check(t1c, registered["t1"], lesions, deep))  # type: ignore[arg-type]
    return checks
