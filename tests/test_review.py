"""Reviewer decisions (metsprep.review) and the QC index at cohort size.

The ratings file and the review server are tested directly; the index is built for 200
cases (the rows of a constructed catalog repeated with new case ids and flags) and loaded
in headless Chromium, which must show it, sort and filter it in under 2 s, with no page over
5 MB. The whole round trip on a pipeline run (viewer, decision, next run) is
`tests/test_pipeline.py::test_review_round_trip_in_the_browser`.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pandas as pd
import pytest

from metsprep.review import Rating, merge, parse_tsv, read_ratings, to_tsv

from browser import body_says, chromium, errors_in_console, review_server, wait_for


def test_ratings_round_trip_and_bad_rows_are_named(tmp_path):
    rows = [Rating("sub-A_ses-01", None, "fail", "wrong T1C\tslice", "t0"), Rating("sub-A_ses-01", 3, "pass", "", "t1")]
    text = to_tsv(rows)
    parsed, problems = parse_tsv(text, "ratings.tsv")
    assert not problems and [r.comment for r in parsed] == ["wrong T1C slice", ""]  # tabs cannot break the file
    bad = text + "sub-B_ses-01\t\tmaybe\t\t\n../etc\t\tpass\t\t\nsub-C_ses-01\tx\tpass\t\t\n"
    path = tmp_path / "ratings.tsv"
    path.write_text(bad)
    ratings = read_ratings(path, known_cases=["sub-A_ses-01"])
    assert ratings.by_case["sub-A_ses-01"].rating == "fail" and ratings.by_lesion["sub-A_ses-01", 3].rating == "pass"
    assert len(ratings.problems) == 3
    assert any("maybe" in p for p in ratings.problems) and any("../etc" in p for p in ratings.problems)
    later = merge(rows, [Rating("sub-A_ses-01", None, "pass", "looked again", "t2")])
    assert {r.key: r.rating for r in later} == {("sub-A_ses-01", None): "pass", ("sub-A_ses-01", 3): "pass"}


def test_server_merges_posted_decisions_and_refuses_bad_ones(tmp_path):
    (tmp_path / "qc").mkdir()
    (tmp_path / "qc" / "index.html").write_text("<html></html>")
    ratings = tmp_path / "qc" / "ratings.tsv"
    with review_server(tmp_path, ratings) as url:
        def post(body):
            request = urllib.request.Request(f"{url}/api/ratings", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(request) as reply:
                    return reply.status, json.loads(reply.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        assert post([{"case_id": "sub-A_ses-01", "roi_number": None, "rating": "fail", "comment": "c"}])[0] == 200
        assert post([{"case_id": "sub-A_ses-01", "roi_number": 2, "rating": "pass"}])[0] == 200
        status, reply = post([{"case_id": "sub-A_ses-01", "rating": "fine"}])
        assert status == 400 and "pass or fail" in reply["error"]
        with urllib.request.urlopen(f"{url}/api/ratings") as reply:
            assert len(json.loads(reply.read())) == 2
        with urllib.request.urlopen(f"{url}/qc/index.html") as reply:  # the output folder, served
            assert reply.read() == b"<html></html>"
    decided = read_ratings(ratings)
    assert decided.by_case["sub-A_ses-01"].comment == "c" and ("sub-A_ses-01", 2) in decided.by_lesion


@pytest.fixture(scope="module")
def cohort_index(tmp_path_factory):
    """The QC index of 200 cases: the constructed catalog's rows, repeated, a third flagged."""
    from metsprep import qc

    from test_catalog import build, make_case, run_case

    root = tmp_path_factory.mktemp("index200")
    files = make_case(root)
    run_case(root, files)
    out = build(root, files)
    cases, series, lesions = (pd.read_parquet(out[t]) for t in ("cases", "series", "lesions"))
    template = cases[cases["status"] == "ok"].iloc[0]
    rows = []
    for k in range(200):
        row = template.copy()
        row["case_id"] = f"sub-{k:04d}_ses-01"
        row["t2_registration_trusted"] = k % 3 != 0
        row["n_lesions"] = k % 7
        rows.append(row)
    many = pd.DataFrame(rows)
    many.to_parquet(root / "cases200.parquet")
    html_path = root / "qc" / "index.html"
    qc.build_report(series_parquet=out["series"], cases_parquet=root / "cases200.parquet", lesions_parquet=out["lesions"],
                    output_dir=root, out_html=html_path, out_summary_png=root / "qc" / "figures" / "cohort_summary.png")
    return root, many


def test_index_of_200_cases_loads_fast_sorts_and_filters(cohort_index, tmp_path):
    from selenium.webdriver.common.by import By

    root, cases = cohort_index
    pages = [p for p in (root / "qc").rglob("*") if p.suffix in (".html", ".png", ".js", ".css")]
    assert max(p.stat().st_size for p in pages) < 5_000_000
    with review_server(root, root / "qc" / "ratings.tsv") as url, chromium(tmp_path / "profile") as driver:
        start = time.monotonic()
        driver.get(f"{url}/qc/index.html")
        wait_for(driver, body_says("ready", "1"))
        loaded = time.monotonic() - start
        timing = driver.execute_script("const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd;")
        assert loaded < 2.0 and timing < 2000, (loaded, timing)
        rows = driver.find_elements(By.CSS_SELECTOR, "#cases tbody tr")
        assert len(rows) == 200
        flagged = int((~cases["t2_registration_trusted"]).sum())
        # flags first by default: the flag count never rises down the table, the most flagged on top
        counts = [int(r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows]
        assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
        assert all("t2_registration_untrusted" in r.text for r in rows[:flagged])
        driver.find_element(By.CSS_SELECTOR, "th[data-sort='case_id']").click()
        ids = [r.get_attribute("data-case") for r in driver.find_elements(By.CSS_SELECTOR, "#cases tbody tr")]
        assert ids == sorted(cases["case_id"])
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "flag-filter")).select_by_value("t2_registration_untrusted")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#cases tbody tr")) == flagged
        assert f"{flagged} of 200 cases shown" in driver.find_element(By.ID, "shown").text
        assert f"t2_registration_untrusted ({flagged})" in driver.find_element(By.ID, "flag-filter").text
        driver.find_element(By.ID, "search").send_keys("sub-0003_")
        assert [r.get_attribute("data-case") for r in driver.find_elements(By.CSS_SELECTOR, "#cases tbody tr")] == \
            ["sub-0003_ses-01"]
        assert errors_in_console(driver) == []


def test_index_opened_from_disk_works_without_a_server(cohort_index, tmp_path):
    root, _ = cohort_index
    with chromium(tmp_path / "profile") as driver:
        driver.get((root / "qc" / "index.html").as_uri())
        wait_for(driver, body_says("ready", "1"))
        assert "200 of 200 cases shown" in driver.find_element("id", "shown").text
        assert errors_in_console(driver) == []


def test_review_command_refuses_a_folder_without_qc_pages(tmp_path, capsys):
    from metsprep.review import main

    with pytest.raises(SystemExit):
        main(["review", str(tmp_path)])
    assert "has no qc/index.html: run the pipeline first" in capsys.readouterr().err


def test_vendored_niivue_is_the_version_its_notice_names():
    from importlib import resources

    from metsprep.qc_pages import NIIVUE_ASSET, NIIVUE_VERSION

    folder = resources.files("metsprep") / "data" / "niivue"
    assert f'{{version:"{NIIVUE_VERSION}"}}' in (folder / NIIVUE_ASSET).read_text(encoding="utf-8")
    assert f"at version\n{NIIVUE_VERSION}" in (folder / "NOTICE.md").read_text()
