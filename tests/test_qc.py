"""QC figures for a constructed case and an HTML page that links only existing files."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from metsprep import qc
from metsprep.catalog.merge import build_catalog
from metsprep.contracts import BidsResult, CaseSummary

from test_catalog import build, make_case, run_case


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if attrs.get(key):
                self.links.append(attrs[key])


def _is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_axial_view_is_radiological():
    # voxel axis i runs to patient right (-x LPS), j to anterior (-y): flip both
    lps_from_ijk = np.diag([-1.0, -1.0, 1.0, 1.0])
    slice_ij = np.zeros((4, 3))
    slice_ij[0, 0] = 1  # i=0 is the most patient-LEFT column, j=0 the most posterior row
    view = qc.axial_view(slice_ij, lps_from_ijk)
    assert view.shape == (3, 4)
    assert view[-1, -1] == 1  # shown at the bottom (posterior) right (patient left)


def test_case_figures_and_report(tmp_path):
    files = make_case(tmp_path)
    run_case(tmp_path, files)
    excluded = make_case(tmp_path, "sub-02_ses-01", with_t2=False)
    bids = BidsResult.read(excluded["bids"])
    replace(bids, status="excluded", status_reason="the T1C series has 3 missing slices in a row", images={}).write(
        excluded["bids"])  # fmt: skip
    run_case(tmp_path, excluded)
    figures = tmp_path / "qc" / "figures"
    for f in (files, excluded):
        cid = CaseSummary.read(f["case"]).case_id
        qc.case_figures(case_json=f["case"], lesions_parquet=f["lesions"], output_dir=tmp_path,
                        out_lesions_png=figures / f"{cid}_lesions.png", out_registration_png=figures / f"{cid}_registration.png",
                        out_page=tmp_path / "qc" / "cases" / f"{cid}.html")  # fmt: skip
        assert _is_png(figures / f"{cid}_lesions.png") and _is_png(figures / f"{cid}_registration.png")
    out = build(tmp_path, files)
    # add the second case to the catalog too
    build_catalog(
        inventory_parquet=out["inventory"], match_series_parquet=tmp_path / "work/match/series.parquet",
        match_cases_parquet=tmp_path / "work/match/cases.parquet", case_jsons=[files["case"], excluded["case"]],
        lesion_parquets=[files["lesions"], excluded["lesions"]], out_series=out["series"],
        out_cases=out["cases"], out_lesions=out["lesions"], out_dictionary=out["dictionary"], config={},
    )  # fmt: skip
    html_path = tmp_path / "qc" / "index.html"
    qc.build_report(series_parquet=out["series"], cases_parquet=out["cases"], lesions_parquet=out["lesions"],
                    output_dir=tmp_path, out_html=html_path, out_summary_png=figures / "cohort_summary.png")  # fmt: skip
    assert _is_png(figures / "cohort_summary.png")
    text = html_path.read_text()
    case_page = tmp_path / "qc" / "cases" / "sub-01_ses-01.html"
    for page in (html_path, case_page):  # offline: every script, style and image is a file of the output
        parser = _Links()
        parser.feed(page.read_text())
        assert parser.scripts >= 1 and parser.links
        for link in (link for link in parser.links if not link.startswith("data:")):  # data: is inline
            assert not re.match(r"^[a-z]+:", link), f"external resource {link}"
            assert (page.parent / link).exists(), (page.name, link)
    data = json.loads(re.search(r"id='qc-data'>(.*?)</script>", case_page.read_text()).group(1))
    assert data["volumes"][0]["name"] == "T1C" and len(data["volumes"]) >= 2  # T1C first, then what the case has
    for relative in [v["url"] for v in data["volumes"]] + [data["overlay"]]:
        assert (case_page.parent / relative).exists(), relative
    assert "../figures/sub-01_ses-01_lesions.png" in case_page.read_text() and "R_front" in case_page.read_text()
    rows = json.loads(re.search(r"id='qc-data'>(.*?)</script>", text).group(1))["cases"]
    pages = {r["case_id"]: r["page"] for r in rows}
    assert pages["sub-09_ses-01"] is None  # excluded at matching: no page, no dead link
    assert all((html_path.parent / page).exists() for page in pages.values() if page)
    assert "the T1C series has 3 missing slices in a row" in text
    assert "sub-09_ses-01" in text and "hemisphere_name_R_geometry_L" in text


def test_lesion_figure_without_lesions(tmp_path):
    files = make_case(tmp_path, lesions=False, with_head=False, with_t2=False)
    run_case(tmp_path, files)
    qc.case_figures(case_json=files["case"], lesions_parquet=files["lesions"], output_dir=tmp_path,
                    out_lesions_png=tmp_path / "l.png", out_registration_png=tmp_path / "r.png")  # fmt: skip
    assert _is_png(tmp_path / "l.png") and _is_png(tmp_path / "r.png")


def test_registration_figure_outlines_the_template_brain(tmp_path):
    # a T1C with a bright ellipsoid "brain"; the brain-mask row outlines it in yellow
    shape = (96, 96, 20)
    ii, jj, kk = np.indices(shape)
    inside = ((ii - 48) / 30.0) ** 2 + ((jj - 48) / 36.0) ** 2 + ((kk - 10) / 9.0) ** 2 <= 1
    t1c = np.where(inside, 800.0, 20.0).astype(np.float32)
    lps_from_ijk = np.diag([-1.0, -1.0, 3.0, 1.0])
    grid = (t1c, lps_from_ijk)

    def yellow_in_mask_row(path: Path) -> int:
        import matplotlib.image

        rgb = matplotlib.image.imread(str(path))[..., :3]
        bottom = rgb[2 * rgb.shape[0] // 3:]
        return int(((bottom[..., 0] > 0.8) & (bottom[..., 1] > 0.8) & (bottom[..., 2] < 0.3)).sum())

    with_mask, without = tmp_path / "with.png", tmp_path / "without.png"
    qc.registration_figure("sub-01_ses-01", grid, {"T1": grid, "T2": None}, None, with_mask,
                           (inside.astype(np.uint8), lps_from_ijk), "MNI fit, check 0.4 mm")  # fmt: skip
    qc.registration_figure("sub-01_ses-01", grid, {"T1": grid, "T2": None}, None, without, None)
    assert _is_png(with_mask) and _is_png(without)
    # three slices, each with the outline of the ellipse section (~1,000 pixels in all); the
    # figure without a mask has none
    assert yellow_in_mask_row(without) == 0
    assert yellow_in_mask_row(with_mask) > 300


def test_mni_fit_note_says_the_flag_before_the_check():
    assert qc.mni_fit_note({"mni_flag": "check disagrees by 8.4 mm", "mni_check_mm": 8.4}).startswith("MNI fit FLAGGED")
    assert qc.mni_fit_note({"mni_flag": None, "mni_check_mm": 0.42}) == "MNI fit, check 0.4 mm"
    assert qc.mni_fit_note({}) == "MNI fit"


def test_an_untrusted_mni_fit_puts_the_case_in_the_review_queue():
    from metsprep.qc_pages import review_flags

    ok = {"status": "ok", "t1_nifti": "a", "t2_nifti": "b", "mni_trusted": True, "flags": []}
    assert review_flags(ok, [], []) == []
    flagged = dict(ok, mni_trusted=False, flags=["standard_space_flag"])
    assert review_flags(flagged, [], []) == ["mni_fit_untrusted", "standard_space_flag"]
