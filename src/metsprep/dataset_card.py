"""The dataset card (``DATASET_CARD.md``, datasheet style) and Croissant metadata
(``croissant.json``) of a run, generated from the catalog tables.

Every number in the card is computed here from the Parquet tables, and the card says how
(section "How the numbers were computed"); nothing is typed in by hand. The Croissant file
describes the catalog tables (one FileObject with its sha256 and one RecordSet per table,
scalar columns as fields) and the image file sets (BIDS, derivatives, exports), so that
``mlcroissant`` can validate it and read any table through it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from metsprep.atomic import write_json, write_text
from metsprep.layout import relative_to_output

CATALOG_TABLES = ("inventory", "series", "cases", "lesions", "splits", "exports", "deid_audit", "lesion_tracks")
CROISSANT_CONTEXT: dict[str, Any] = {
    "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "citeAs": "cr:citeAs", "column": "cr:column", "conformsTo": "dct:conformsTo",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"}, "equivalentProperty": "cr:equivalentProperty",
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "samplingRate": "cr:samplingRate", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField", "transform": "cr:transform",
}
#: Image file sets: id, what, glob below the output folder.
FILE_SETS = (
    ("bids-raw-nifti", "Native T1w, T2w and ce-gadolinium T1w images (BIDS raw dataset)", "bids/sub-*/ses-*/anat/*.nii.gz"),
    ("bids-derivatives-nifti", "T1w/T2w on the T1w+C grid, lesion label maps and masks, head masks (BIDS derivatives)",
     "bids/derivatives/metsprep/sub-*/ses-*/anat/*.nii.gz"),
    ("nnunet-images", "nnU-Net v2 images, channels _0000 T1C, _0001 T1, _0002 T2 on the T1C grid",
     "exports/nnunet/*/images*/*.nii.gz"),
    ("nnunet-labels", "nnU-Net v2 label maps on the T1C grid", "exports/nnunet/*/labels*/*.nii.gz"),
)


@dataclass(frozen=True)
class Catalog:
    tables: dict[str, pd.DataFrame]
    paths: dict[str, Path]  # table -> parquet file

    def __getitem__(self, table: str) -> pd.DataFrame:
        return self.tables[table]


def read_catalog(paths: Mapping[str, Path]) -> Catalog:
    return Catalog({name: pd.read_parquet(path) for name, path in paths.items()}, dict(paths))


# ----------------------------------------------------------------------------- card


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    if not rows:
        lines.append("| " + " | ".join(["none", *[""] * (len(header) - 1)]) + " |")
    return lines + [""]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _counts(series: pd.Series, order: Sequence[str] | None = None) -> list[tuple[str, int]]:
    counts = series.fillna("unknown").astype(str).value_counts()
    keys = [k for k in (order or []) if k in counts.index] + sorted(k for k in counts.index if k not in (order or []))
    return [(k, int(counts[k])) for k in keys]


def _quantiles(values: pd.Series) -> list[float]:
    clean = pd.to_numeric(values, errors="coerce").dropna()
    if clean.empty:
        return []
    return [float(clean.min()), float(clean.quantile(0.25)), float(clean.median()), float(clean.quantile(0.75)),
            float(clean.max())]


def _pct(part: int, whole: int) -> str:
    return f"{part} ({100.0 * part / whole:.0f}%)" if whole else str(part)


def card_markdown(catalog: Catalog, title: str, version: str) -> str:
    inventory, series, cases, lesions = catalog["inventory"], catalog["series"], catalog["cases"], catalog["lesions"]
    splits, exports, audit = catalog["splits"], catalog["exports"], catalog["deid_audit"]
    ok = cases[cases["status"] == "ok"]
    excluded = cases[cases["status"] != "ok"]
    ok_lesions = lesions[lesions["case_id"].isin(ok["case_id"])]
    labelled = ok_lesions[ok_lesions["volume_mm3"].notna() & (ok_lesions["volume_mm3"] > 0)]
    out = [f"# {title}: dataset card", "",
           f"Generated by metsprep {version} from the catalog tables of this output folder (`catalog/*.parquet`); "
           "regenerate with the pipeline, do not edit. Section \"How the numbers were computed\" says where each "
           "number comes from.", ""]

    out += ["## Motivation and uses", "",
            "Brain metastases outlined by hand in Leksell GammaPlan on contrast-enhanced T1 (T1W+C) MRI, with T1 and T2 "
            "of the same study registered onto the T1W+C grid: for training and evaluating lesion segmentation and "
            "detection, and for cohort studies of lesion number, size and site. Not for clinical use.", ""]

    sessions = ok.groupby("subject").size() if not ok.empty else pd.Series(dtype=int)
    out += ["## Composition", ""]
    out += _md_table(["what", "count"], [
        ("input files", len(inventory)),
        ("input files not readable as DICOM (listed with reasons in inventory.parquet)", int((~inventory["readable"].astype(bool)).sum())),
        ("series", len(series)),
        ("cases (one imaging study with its RT Structure Set)", len(cases)),
        ("cases ok", _pct(len(ok), len(cases))),
        ("cases excluded", _pct(len(excluded), len(cases))),
        ("patients with an ok case", int(ok["subject"].nunique())),
        ("patients with more than one session", int((sessions > 1).sum())),
        ("lesions (ROIs) of ok cases", len(ok_lesions)),
        ("lesions with voxels in the label map", len(labelled)),
    ])
    out += ["Sequences of the series used by the cases:", ""]
    out += _md_table(["role", "series"], _counts(series["role"].dropna(), ["T1C", "T1", "T2", "RTSS"]))

    out += ["## Lesions", "", "Lesions per ok case:", ""]
    per_case = ok["n_lesions"].fillna(0).astype(int)
    bins = [("0", per_case == 0), ("1", per_case == 1), ("2-3", per_case.between(2, 3)),
            ("4-9", per_case.between(4, 9)), (">=10", per_case >= 10)]
    out += _md_table(["lesions", "cases"], [(name, int(mask.sum())) for name, mask in bins])
    stats = [("volume_mm3 (label map)", labelled["volume_mm3"]),
             ("contour_volume_mm3 (planimetric)", labelled["contour_volume_mm3"]),
             ("equivalent_diameter_mm", labelled["equivalent_diameter_mm"]),
             ("max_diameter_mm", labelled["max_diameter_mm"]),
             ("longest_axial_diameter_mm (RANO-BM)", labelled["longest_axial_diameter_mm"]),
             ("total_lesion_volume_mm3 per case", ok["total_lesion_volume_mm3"])]
    out += ["Sizes (lesions with voxels; per case for the total):", ""]
    out += _md_table(["measure", "min", "25%", "median", "75%", "max"],
                     [(name, *q) for name, values in stats if (q := _quantiles(values))])
    measurable = int(labelled["rano_measurable"].fillna(False).astype(bool).sum())
    out += [f"RANO-BM measurable (longest axial diameter >= 10 mm on >= 2 slices): {_pct(measurable, len(labelled))} "
            "of the lesions with voxels.", ""]
    out += ["Location (hemisphere and region, from the ROI name where it says, else the geometry):", ""]
    out += _md_table(["hemisphere", "lesions"], _counts(ok_lesions["hemisphere"], ["L", "R", "midline", "unknown"]))
    out += _md_table(["region", "lesions"], _counts(ok_lesions["region"]))

    out += ["## Acquisition", ""]
    used = series[series["role"].isin(["T1C", "T1", "T2"])]
    scanner = used.assign(scanner=used["manufacturer"].fillna("unknown") + " " + used["manufacturer_model_name"].fillna("")
                          + used["magnetic_field_strength_t"].map(lambda t: f" {t:g} T" if pd.notna(t) else ""))
    out += _md_table(["scanner (manufacturer, model, field)", "series"], _counts(scanner["scanner"].str.strip()))
    matrix = used["rows"].astype("Int64").astype(str) + "x" + used["columns"].astype("Int64").astype(str)
    out += _md_table(["matrix", "series"], _counts(matrix))
    out += _md_table(["sequence", "slice thickness min", "median", "max"], [
        (role, *(q[i] for i in (0, 2, 4))) for role in ("T1C", "T1", "T2")
        if (q := _quantiles(used.loc[used["role"] == role, "slice_thickness_mm"]))])
    years = cases["study_date"].dropna().astype(str).str[:4]
    if years.empty or years.nunique() == 1:
        shown = f" (all {years.iloc[0]})" if not years.empty else ""
        out += [f"Study years: not available: the dates were generalised by the de-identification{shown}.", ""]
    else:
        out += _md_table(["study year", "cases"], _counts(years))

    out += ["## Exclusions", "", f"{_pct(len(excluded), len(cases))} cases are excluded; each with its reason "
            "(`cases.parquet` `status_reason`, stage in `excluded_at`):", ""]
    reasons = excluded.assign(stage=excluded["excluded_at"].fillna("unknown"),
                              reason=excluded["status_reason"].fillna("unknown"))
    grouped = reasons.groupby(["stage", "reason"]).size().reset_index(name="cases")
    out += _md_table(["stage", "reason", "cases"], grouped[["stage", "reason", "cases"]].values.tolist())

    out += ["## Quality flags", ""]
    flags = [
        ("T1 registrations flagged untrusted", int((ok["t1_registration_trusted"] == False).sum())),  # noqa: E712
        ("T2 registrations flagged untrusted", int((ok["t2_registration_trusted"] == False).sum())),  # noqa: E712
        ("lesions with roi_status other than ok", int((ok_lesions["roi_status"] != "ok").sum())),
        ("lesions whose T1/T2 intensities come from a flagged registration", int(ok_lesions["intensity_flag"].notna().sum())),
        ("lesions whose name and geometry disagree on the side", int(ok_lesions["location_flag"].notna().sum())),
        ("series classified with low confidence", int((series["sequence_confidence"] == "low").sum())),
        ("T1/T2 series whose pixels disagree with their label", int((series["pixel_check"] == "disagrees").sum())),
    ]
    out += _md_table(["flag", "count"], flags)

    out += ["## Splits", "", "Patient-level sets (`catalog/splits.parquet`): a held-out test set and cross-validation "
            "folds; every session of a patient is in one set, strata balanced (docs/exports.md).", ""]
    if not splits.empty:
        by_set = splits.groupby("set_name").agg(cases=("case_id", "size"), patients=("subject", "nunique"))
        out += _md_table(["set", "cases", "patients"], [(s, int(r.cases), int(r.patients)) for s, r in by_set.iterrows()])
        out += _split_balance(catalog)
        seeds = sorted(splits["seed"].dropna().unique())
        out += [f"Seed {', '.join(str(int(s)) for s in seeds)}; "
                f"{int((splits['assigned_by'] == 'balanced').sum())} cases of patients new since the split ledger "
                "(`catalog/split_ledger.parquet`, the first split, kept), placed around it.", ""]

    out += ["## Exports", ""]
    if not exports.empty:
        exported = exports[exports["exported"].astype(bool)]
        out += [f"{_pct(len(exported), len(exports))} cases are in the model-training exports "
                "(`exports/nnunet/`, `exports/monai/`); the others, with the reason (`catalog/exports.parquet`):", ""]
        left = exports[~exports["exported"].astype(bool)]
        out += _md_table(["reason", "cases"], _counts(left["export_reason"]))
        zero = int(exports["zero_filled_channels"].map(lambda v: len(v) if v is not None else 0).gt(0).sum())
        out += [f"Cases with a zero-filled channel: {zero}.", ""]

    findings = len(audit)
    files = int(audit["path"].nunique()) if findings else 0
    out += ["## De-identification", "",
            "The source collection was de-identified before metsprep (UIDs replaced, dates generalised, no private "
            "tags). metsprep audits every input file against the profile in the config (`deid`) and writes the "
            f"findings to `catalog/deid_audit.parquet` (tag and kind, never the value): {findings} findings in {files} "
            "files. The outputs carry no names, birth dates or institution data: BIDS sidecars keep acquisition "
            "fields only, and tables keep Patient ID, sex and age as the source has them (docs/deidentification.md).", ""]

    out += ["## How the numbers were computed", "",
            "- Counts of files, series, cases and lesions: rows of inventory, series, cases and lesions.parquet; "
            "a case is ok when `status == 'ok'`.",
            "- `volume_mm3`: lesion voxels in the label map (voxel centre inside the contour, even-odd rule) times "
            "the T1C voxel volume; `contour_volume_mm3`: polygon areas times the T1C slice spacing "
            "(docs/rasterization.md).",
            "- Diameters: largest distance between lesion voxel centres in 3D (`max_diameter_mm`) and on one T1C "
            "slice (`longest_axial_diameter_mm`, RANO-BM); `equivalent_diameter_mm` = (6 V / pi)^(1/3).",
            "- Quantiles: pandas' linear interpolation over the lesions that have voxels.",
            "- Scanner, matrix and slice thickness: the T1C, T1 and T2 series the cases use (`role`).",
            "- Flags: `*_registration_trusted` is false where the registration's independent check fired "
            "(docs/registration.md); classification confidence and pixel checks per docs/classification.md.",
            ""]

    out += ["## Known limitations", "",
            "- Lesions are outlined on T1W+C only; T1 and T2 are rigidly registered to it, and a registration the "
            "check cannot tell from a good one may still be off by 1-2 mm (docs/registration.md).",
            "- Contours were drawn for treatment planning, not for research: small or treated-elsewhere lesions may "
            "be missing, and edges follow the planner's conventions.",
            "- Region comes from the ROI name only (no atlas): `region` is `unknown` where the name does not say.",
            "- Dates are generalised: no study year, no interval between sessions beyond their order.",
            "- Sequence labels come from Series Descriptions and headers; `sequence_confidence` low marks the "
            "doubtful ones.",
            ""]
    return "\n".join(out)


def _split_balance(catalog: Catalog) -> list[str]:
    """The balance table of metsprep.splits, from the splits table and the settings it was made with."""
    import json

    import pyarrow.parquet as pq

    from metsprep.settings import SplitSettings
    from metsprep.splits import Assignment, balance_report

    meta = pq.read_schema(catalog.paths["splits"]).metadata or {}
    if b"split_settings" not in meta:
        return []
    settings = SplitSettings.from_config(json.loads(meta[b"split_settings"]))
    keys = ("case_id", "subject", "set_name", "lesion_count_bin", "volume_bin", "scanner", "assigned_by")
    rows = catalog["splits"][list(keys)].astype(str).to_dict("records")
    assignments = [Assignment(**{key: str(row[key]) for key in keys}) for row in rows]
    return ["Balance: cases per set and stratum (target share in brackets):", "",
            balance_report(assignments, settings)]


# ----------------------------------------------------------------------------- croissant


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _croissant_type(arrow_type: Any) -> str | None:
    import pyarrow as pa

    for check, name in ((pa.types.is_boolean, "sc:Boolean"), (pa.types.is_integer, "sc:Integer"),
                        (pa.types.is_floating, "sc:Float"), (pa.types.is_string, "sc:Text")):
        if check(arrow_type):
            return name
    return None  # lists: not described as fields (read them from the Parquet file)


def croissant_metadata(catalog: Catalog, output_dir: Path, title: str, version: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    distribution: list[dict[str, Any]] = []
    record_sets: list[dict[str, Any]] = []
    for table in CATALOG_TABLES:
        path = catalog.paths[table]
        file_id = f"{table}.parquet"
        distribution.append({
            "@type": "cr:FileObject", "@id": file_id, "name": file_id,
            "contentUrl": relative_to_output(path, output_dir),
            "encodingFormat": "application/x-parquet", "sha256": _sha256(path)})
        schema = pq.read_schema(path)
        fields = []
        for column in schema:
            data_type = _croissant_type(column.type)
            if data_type is None:
                continue
            meta = {k.decode(): v.decode() for k, v in (column.metadata or {}).items()}
            fields.append({"@type": "cr:Field", "@id": f"{table}/{column.name}", "name": column.name,
                           "description": meta.get("description", column.name), "dataType": data_type,
                           "source": {"fileObject": {"@id": file_id}, "extract": {"column": column.name}}})
        description = (schema.metadata or {}).get(b"description", b"").decode() or table
        record_sets.append({"@type": "cr:RecordSet", "@id": table, "name": table, "description": description,
                            "field": fields})
    for set_id, what, glob in FILE_SETS:
        distribution.append({"@type": "cr:FileSet", "@id": set_id, "name": set_id, "description": what,
                             "encodingFormat": "application/gzip", "includes": glob})
    return {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "name": title,
        "description": "Brain-metastasis MRI (T1W+C, T1, T2) with hand-drawn GammaPlan lesion contours as label maps, "
                       "a Parquet catalog of series, cases and lesions, and model-training exports. See DATASET_CARD.md.",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "license": "https://spdx.org/licenses/NOASSERTION",
        "version": version,
        "citeAs": "The source collection's citation; metsprep " + version,
        "distribution": distribution,
        "recordSet": record_sets,
    }


def write_dataset_card(table_paths: Mapping[str, Path], output_dir: Path, title: str, version: str,
                       out_card: Path, out_croissant: Path) -> None:
    catalog = read_catalog(table_paths)
    write_text(out_card, card_markdown(catalog, title, version))
    write_json(out_croissant, croissant_metadata(catalog, output_dir, title, version))
