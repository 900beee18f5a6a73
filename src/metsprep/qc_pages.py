"""The QC pages a reviewer works through: ``qc/index.html`` (one row per case, flags first,
sortable and filterable, counts per flag) and ``qc/cases/<case_id>.html`` (the case's
figures, the NiiVue viewer with the lesion overlay, the lesion list, decisions).

Every page is static HTML with its data in a JSON block and the shared assets in
``qc/assets/`` (``review.js``, ``review.css`` and the vendored NiiVue bundle, shipped in
``metsprep/data``): nothing is loaded from the network. Images are ``loading=lazy``; the
viewer reads the case's NIfTI files, which a browser allows only when the page is served
(``metsprep review``).
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from metsprep.atomic import atomic_path, write_text

ASSETS = ("review.js", "review.css")
NIIVUE_ASSET = "niivue.umd.js"
NIIVUE_VERSION = "0.69.0"


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if not isinstance(value, str) and hasattr(value, "__len__"):  # lists, tuples, numpy arrays
        return len(value) > 0
    return value != ""


def _json_value(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):
        with contextlib.suppress(ValueError, AttributeError):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def review_flags(case: Mapping[str, Any], series: Sequence[Mapping[str, Any]],
                 lesions: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short names of everything a reviewer should look at in one case, in a fixed order."""
    flags = []
    if case.get("status") != "ok":
        flags.append(f"excluded_at_{case.get('excluded_at') or 'unknown'}")
    for seq in ("t1", "t2"):
        if case.get(f"{seq}_registration_trusted") is False:
            flags.append(f"{seq}_registration_untrusted")
        if case.get("status") == "ok" and not _present(case.get(f"{seq}_nifti")):
            flags.append(f"no_{seq}")
    if case.get("mni_trusted") is False:
        flags.append("mni_fit_untrusted")
    if any(s.get("sequence_confidence") == "low" for s in series):
        flags.append("sequence_low_confidence")
    if any(s.get("pixel_check") == "disagrees" for s in series):
        flags.append("pixels_disagree_with_label")
    if any(_present(lesion.get("roi_status")) and lesion.get("roi_status") != "ok" for lesion in lesions):
        flags.append("lesion_contours_not_ok")
    if any(_present(lesion.get("location_flag")) for lesion in lesions):
        flags.append("lesion_location_disagrees")
    if case.get("qc_rating") == "fail":
        flags.append("reviewer_failed")
    stage_flags: Any = case.get("flags") if _present(case.get("flags")) else []
    for flag in list(stage_flags):
        if flag not in flags:
            flags.append(str(flag))
    return flags


def case_page_path(case_id: str) -> str:
    return f"cases/{case_id}.html"


def write_assets(assets_dir: Path) -> list[Path]:
    """Copy review.js, review.css and NiiVue into ``assets_dir`` (atomically); the paths written."""
    data = resources.files("metsprep") / "data"
    written = []
    for name, source in [*((n, data / "qc" / n) for n in ASSETS), (NIIVUE_ASSET, data / "niivue" / NIIVUE_ASSET)]:
        target = assets_dir / name
        with resources.as_file(source) as path, atomic_path(target) as temporary:
            shutil.copyfile(path, temporary)
        written.append(target)
    return written


def _head(title: str, assets: str) -> str:
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><link rel='icon' href='data:,'>"
            f"<link rel='stylesheet' href='{assets}/review.css'>")


def _data_block(payload: Any) -> str:
    # </script> inside a string would end the block: JSON escapes '<' as \u003c
    text = json.dumps(payload, allow_nan=False, ensure_ascii=False).replace("<", "\\u003c")
    return f"<script type='application/json' id='qc-data'>{text}</script>"


INDEX_COLUMNS = (("case_id", "case"), ("status", "status"), ("n_flags", "flags"), ("flags", "flag names"),
                 ("n_lesions", "lesions"), ("total_lesion_volume_mm3", "total volume mm³"),
                 ("t1_registration_check_mm", "T1 check mm"), ("t2_registration_check_mm", "T2 check mm"),
                 ("sequence_confidence", "sequence confidence"), ("qc_rating", "review"),
                 ("status_reason", "reason"))


def index_rows(cases: Sequence[Mapping[str, Any]], series: Sequence[Mapping[str, Any]],
               lesions: Sequence[Mapping[str, Any]], with_page: set[str] | None = None) -> list[dict[str, Any]]:
    """One row per case for the index; ``with_page``: the cases that have a page (cases
    excluded at matching have none), None: all."""
    series_by: dict[str, list[Mapping[str, Any]]] = {}
    for s in series:
        series_by.setdefault(str(s.get("case_id")), []).append(s)
    lesions_by: dict[str, list[Mapping[str, Any]]] = {}
    for lesion in lesions:
        lesions_by.setdefault(str(lesion.get("case_id")), []).append(lesion)
    order = {"low": 0, "medium": 1, "high": 2}
    rows = []
    for case in cases:
        cid = str(case["case_id"])
        used = [s for s in series_by.get(cid, []) if s.get("role") in ("T1C", "T1", "T2")]
        flags = review_flags(case, used, lesions_by.get(cid, []))
        confidences = [str(s.get("sequence_confidence")) for s in used if _present(s.get("sequence_confidence"))]
        rows.append({
            "case_id": cid, "page": case_page_path(cid) if with_page is None or cid in with_page else None, "status": case.get("status"),
            "status_reason": _json_value(case.get("status_reason")), "flags": flags, "n_flags": len(flags),
            "n_lesions": _json_value(case.get("n_lesions")),
            "total_lesion_volume_mm3": _json_value(case.get("total_lesion_volume_mm3")),
            "t1_registration_check_mm": _json_value(case.get("t1_registration_check_mm")),
            "t2_registration_check_mm": _json_value(case.get("t2_registration_check_mm")),
            "sequence_confidence": min(confidences, key=lambda c: order.get(c, 3)) if confidences else None,
            "qc_rating": _json_value(case.get("qc_rating")),
        })
    rows.sort(key=lambda r: (-r["n_flags"], r["case_id"]))
    return rows


def index_html(rows: Sequence[Mapping[str, Any]], summary: str, cohort_sections: str) -> str:
    """The index page: counts, the case table (rendered by review.js from the data block)."""
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_flagged = sum(bool(r["flags"]) for r in rows)
    head = "".join(f"<th data-sort='{key}'>{html.escape(title)}</th>" if key != "flags" else f"<th>{title}</th>"
                   for key, title in INDEX_COLUMNS)
    statuses = "".join(f"<option value='{s}'>{s}</option>" for s in ("ok", "excluded"))
    return "\n".join([
        _head("metsprep QC", "assets"),
        "<script src='assets/review.js' defer></script></head><body data-page='index'>",
        "<h1>metsprep quality control</h1>",
        f"<p>{len(rows)} cases: {n_ok} ok, {len(rows) - n_ok} excluded; {n_flagged} with a flag, listed first. "
        "Open a case to see its images and lesions and to record a decision (pass / fail / comment).</p>",
        "<details><summary>Cases per flag</summary><ul id='flag-counts'></ul></details>",
        "<div id='controls'><label>Search <input id='search' type='search' placeholder='case, flag, reason'></label>"
        "<label>Flag <select id='flag-filter'><option value=''>any</option></select></label>"
        f"<label>Status <select id='status-filter'><option value=''>any</option>{statuses}</select></label>"
        "<span id='shown'></span></div>",
        f"<table id='cases'><thead><tr>{head}</tr></thead><tbody></tbody></table>",
        _data_block({"cases": list(rows)}),
        summary,
        cohort_sections,
        "</body></html>",
    ])


# ----------------------------------------------------------------------------- case page


def _relative(output_dir: Path, page: Path, relative: str | None) -> str | None:
    if not relative:
        return None
    return os.path.relpath(output_dir / relative, page.parent).replace(os.sep, "/")


LESION_COLUMNS = (("roi_number", "ROI #", None), ("roi_name", "ROI name", None), ("label", "label", None),
                  ("volume_mm3", "volume mm³", ".1f"), ("contour_volume_mm3", "contour volume mm³", ".1f"),
                  ("longest_axial_diameter_mm", "axial Ø mm", ".1f"), ("rano_measurable", "RANO", None),
                  ("hemisphere", "hemi", None), ("region", "region", None), ("roi_status", "contours", None),
                  ("intensity_flag", "intensity flag", None), ("location_flag", "location flag", None))


def _cell(value: Any, fmt: str | None) -> str:
    value = _json_value(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if fmt and isinstance(value, (int, float)):
        return format(float(value), fmt)
    return html.escape(str(value))


def case_html(case: Mapping[str, Any], lesions: Sequence[Mapping[str, Any]], output_dir: Path, page: Path,
              figures: Sequence[str]) -> str:
    """One case's review page (``figures``: image paths relative to the page)."""
    cid = str(case["case_id"])
    flags = review_flags(case, [], lesions)
    volumes = [{"name": name, "url": url} for name, column in (("T1C", "t1c_nifti"), ("T1", "t1_in_t1c_nifti"),
                                                               ("T2", "t2_in_t1c_nifti"))
               if (url := _relative(output_dir, page, case.get(column) if _present(case.get(column)) else None))]
    overlay = _relative(output_dir, page, case.get("lesion_mask_nifti") if _present(case.get("lesion_mask_nifti")) else None)
    lesion_data = []
    for lesion in lesions:
        ras = [lesion.get(f"centroid_ras_{a}_mm") for a in "xyz"]
        lesion_data.append({"roi_number": _json_value(lesion.get("roi_number")), "roi_name": lesion.get("roi_name"),
                            "centroid_ras": [float(v) for v in ras if v is not None] if all(_present(v) for v in ras) else None})
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in LESION_COLUMNS) + "<th>view</th><th>decision</th>"
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(lesion.get(k), f)}</td>" for k, _, f in LESION_COLUMNS)
        + "<td><button type='button' class='jump'>show</button></td><td class='decision'></td></tr>"
        for lesion in lesions)
    reason = (f"<p class='error'>Excluded: {html.escape(str(case.get('status_reason')))}</p>"
              if case.get("status") != "ok" else "")
    images = "".join(f"<p><img loading='lazy' src='{html.escape(src)}' alt='{html.escape(cid)} figure'></p>"
                     for src in figures)
    return "\n".join([
        _head(f"metsprep QC {cid}", "../assets"),
        f"<script src='../assets/{NIIVUE_ASSET}' defer></script><script src='../assets/review.js' defer></script>",
        "</head><body data-page='case'>",
        f"<p><a href='../index.html'>← all cases</a></p><h1>{html.escape(cid)} ({html.escape(str(case.get('status')))})</h1>",
        reason,
        f"<p>Flags: {html.escape(', '.join(flags)) or 'none'}</p>",
        "<section><h2>Decision</h2><p id='case-decision'></p>"
        "<p id='save-row'><button type='button' id='save'>Save decisions</button> <span id='save-status'></span></p>"
        "</section>",
        "<section id='viewer-wrap'><h2>Viewer</h2><p><span id='volumes'></span> "
        "<label>lesion overlay <input id='overlay-opacity' type='range' min='0' max='1' step='0.1' value='0.6'></label></p>"
        "<div id='viewer-box'><canvas id='viewer'></canvas></div><p id='viewer-note'></p></section>",
        f"<section><h2>Lesions</h2><table id='lesions'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        "</section>",
        f"<section><h2>Figures</h2>{images}</section>",
        _data_block({"case_id": cid, "volumes": volumes, "overlay": overlay, "lesions": lesion_data}),
        "</body></html>",
    ])


def write_case_page(case: Mapping[str, Any], lesions: Sequence[Mapping[str, Any]], output_dir: Path, page: Path,
                    figure_paths: Sequence[Path]) -> None:
    figures = [os.path.relpath(p, page.parent).replace(os.sep, "/") for p in figure_paths if p.exists()]
    write_text(page, case_html(case, lesions, output_dir, page, figures))
