"""End to end: Snakemake on small synthetic cohorts, the catalog checked against the truth.

One run per layout: `nested` with a faulty case (its T1C removed) and a case without T2,
`flat` with a tilted T1C. The per_case layout is the default of the demo and of the
`synth_cohort` fixture used by the stage tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

pytestmark = pytest.mark.slow


def run_snakemake(input_dir: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    config = output_dir.parent / f"{output_dir.name}.config.yaml"
    config.write_text(f"input_dir: '{input_dir}'\noutput_dir: '{output_dir}'\nscan:\n  shards: 2\n")
    command = [*SNAKEMAKE, "--cores", "2", "--scheduler", "greedy", "--configfile", str(config), *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)


def _run_layout(
    tmp_path_factory, layout: str, n_cases: int, seed: int, case_options: dict, add_faults: bool = False
) -> SimpleNamespace:
    from metsprep.synth import generate_cohort

    root = tmp_path_factory.mktemp(f"e2e_{layout}")
    truth = generate_cohort(root / "cohort", n_cases, seed, layout=layout, case_options=case_options)
    input_dir = root / "cohort" / "dicom"
    if add_faults:  # what real exports carry; none of it may cost a case
        from faults import add_copy_of_series, add_dicomdir, add_junk_files, truncate_file

        add_junk_files(input_dir)
        add_dicomdir(input_dir)
        # a second T1W+C series (described as post-contrast) in one case, first in UID,
        # series-number and folder order: the RTSS-referenced one must still be chosen
        twice = next(c for c in truth["cases"] if c["expected_status"] == "ok" and c["series"]["T2"]
                     and c["series"]["T1C"]["description_marks_contrast"])  # fmt: skip
        twice["second_t1c_uid"] = add_copy_of_series(
            input_dir, twice["series"]["T1C"]["series_instance_uid"], "0_second_t1c", series_number=1,
            new_uid="1.2.0.7")  # fmt: skip
        t2_files = truth["cases"][0]["series"]["T2"]["files"]
        truncate_file(input_dir / t2_files[len(t2_files) // 2], keep_fraction=0.6)
    before = sorted((p.relative_to(input_dir), p.stat().st_mtime_ns) for p in input_dir.rglob("*"))
    output_dir = root / "out"
    result = run_snakemake(input_dir, output_dir)
    assert result.returncode == 0, result.stderr[-6000:]
    after = sorted((p.relative_to(input_dir), p.stat().st_mtime_ns) for p in input_dir.rglob("*"))
    return SimpleNamespace(
        root=root, input_dir=input_dir, output=output_dir, truth=truth, run=result,
        input_unchanged=before == after,
        cases=pd.read_parquet(output_dir / "catalog" / "cases.parquet"),
        series=pd.read_parquet(output_dir / "catalog" / "series.parquet"),
        lesions=pd.read_parquet(output_dir / "catalog" / "lesions.parquet"),
        inventory=pd.read_parquet(output_dir / "catalog" / "inventory.parquet"),
    )


@pytest.fixture(scope="session")
def nested_run(tmp_path_factory):
    return _run_layout(
        tmp_path_factory, "nested", n_cases=4, seed=7,
        case_options={1: {"omit_series": ["T2"]}, 3: {"omit_series": ["T1C"]}}, add_faults=True,
    )


@pytest.fixture(scope="session")
def flat_run(tmp_path_factory):
    return _run_layout(tmp_path_factory, "flat", n_cases=2, seed=11, case_options={0: {"tilt_deg": 12.0}})


@pytest.fixture(params=["nested", "flat"])
def any_run(request):
    return request.getfixturevalue(f"{request.param}_run")


def truth_cases(run) -> list[dict]:
    return run.truth["cases"]


def case_row(run, truth_case: dict) -> pd.Series:
    rows = run.cases[run.cases["study_instance_uid"] == truth_case["study_instance_uid"]]
    assert len(rows) == 1, f"study {truth_case['study_instance_uid']} has {len(rows)} case rows"
    return rows.iloc[0]


def test_input_folder_is_never_written(any_run):
    assert any_run.input_unchanged


def test_inventory_has_every_file(any_run):
    files = sorted(p.relative_to(any_run.input_dir).as_posix() for p in any_run.input_dir.rglob("*") if p.is_file())
    assert sorted(any_run.inventory["path"]) == files


def test_case_status_matches_truth(any_run):
    for truth_case in truth_cases(any_run):
        row = case_row(any_run, truth_case)
        assert row["status"] == truth_case["expected_status"], (row["case_id"], row["status_reason"])
        if row["status"] == "ok":
            assert pd.isna(row["status_reason"])
        else:
            assert isinstance(row["status_reason"], str) and len(row["status_reason"]) > 10


def test_junk_dicomdir_and_truncated_files_are_listed_unreadable_with_reasons(nested_run):
    inventory = nested_run.inventory.set_index("path")
    for name in (".DS_Store", "README.txt", "DICOMDIR"):
        assert not inventory.loc[name, "readable"] and len(inventory.loc[name, "reason"]) > 5
    t2_files = truth_cases(nested_run)[0]["series"]["T2"]["files"]
    truncated = inventory.loc[t2_files[len(t2_files) // 2]]
    assert not truncated["readable"] and "truncated" in truncated["reason"].lower()


def test_case_with_two_t1c_series_uses_the_referenced_one(nested_run):
    truth_case = next(c for c in truth_cases(nested_run) if c.get("second_t1c_uid"))
    row = case_row(nested_run, truth_case)
    assert row["status"] == "ok"
    assert row["t1c_series_instance_uid"] == truth_case["series"]["T1C"]["series_instance_uid"]
    study = nested_run.series[nested_run.series["study_instance_uid"] == truth_case["study_instance_uid"]]
    assert sorted(study.loc[study["sequence"] == "T1C", "series_instance_uid"]) == sorted(
        ["1.2.0.7", truth_case["series"]["T1C"]["series_instance_uid"]])


def test_excluded_case_says_why(nested_run):
    truth_case = truth_cases(nested_run)[3]
    row = case_row(nested_run, truth_case)
    assert row["status"] == "excluded"
    assert "contrast" in row["status_reason"].lower() or "t1c" in row["status_reason"].lower()


def test_sequences_match_truth(any_run):
    series = any_run.series.set_index("series_instance_uid")
    for truth_case in truth_cases(any_run):
        for role, truth_series in truth_case["series"].items():
            if role in truth_case["options"].get("omit_series", []):
                continue
            assert series.loc[truth_series["series_instance_uid"], "sequence"] == truth_series["expected_sequence"]


def test_every_truth_lesion_once_with_volumes_and_positions(any_run):
    for truth_case in truth_cases(any_run):
        if truth_case["expected_status"] != "ok":
            continue
        row = case_row(any_run, truth_case)
        lesions = any_run.lesions[any_run.lesions["case_id"] == row["case_id"]].set_index("roi_number")
        assert lesions.index.is_unique
        assert sorted(lesions.index) == sorted(les["roi_number"] for les in truth_case["lesions"])
        assert row["n_lesions"] == len(truth_case["lesions"])
        t1c = truth_case["series"]["T1C"]
        voxel_diagonal = float(np.linalg.norm([*t1c["pixel_spacing_mm"], t1c["slice_spacing_mm"]]))
        for les in truth_case["lesions"]:
            got = lesions.loc[les["roi_number"]]
            assert got["roi_name"] == les["roi_name"]
            assert got["contour_volume_mm3"] == pytest.approx(les["planimetric_volume_mm3"], rel=1e-3)
            if les["planimetric_volume_mm3"] >= 1000.0:
                assert got["volume_mm3"] == pytest.approx(les["planimetric_volume_mm3"], rel=0.03)
            centroid = got[["centroid_lps_x_mm", "centroid_lps_y_mm", "centroid_lps_z_mm"]].to_numpy(float)
            assert np.linalg.norm(centroid - np.asarray(les["centroid_lps_mm"])) < voxel_diagonal
            if les["hemisphere"] in ("L", "R"):
                assert got["hemisphere"] == les["hemisphere"]


def test_every_lesion_row_has_its_mni_position_or_says_why(any_run):
    # the demo-sized runs (one with a tilted T1C): each lesion of an ok case is within 5 mm
    # of its truth in MNI space, or its own row says why its mni_* may be wrong
    checked = 0
    for truth_case in truth_cases(any_run):
        if truth_case["expected_status"] != "ok":
            continue
        row = case_row(any_run, truth_case)
        lesions = any_run.lesions[any_run.lesions["case_id"] == row["case_id"]].set_index("roi_number")
        for les in truth_case["lesions"]:
            got = lesions.loc[les["roi_number"]]
            if pd.isna(row["mni_trusted"]) or not bool(row["mni_trusted"]):
                assert isinstance(got["mni_flag"], str) and got["mni_flag"], (row["case_id"], les["roi_name"])
                continue
            assert pd.isna(got["mni_flag"])
            error = np.linalg.norm(got[["mni_x_mm", "mni_y_mm", "mni_z_mm"]].to_numpy(float) - les["centre_mni_ras_mm"])
            assert error <= 5.0, (row["case_id"], les["roi_name"], error)
            checked += 1
    assert checked >= 3
    assert (any_run.output / "standard_space" / "space-MNI152NLin2009aSym_res-2_desc-lesionfrequency.nii.gz").is_file()
    assert (any_run.output / "catalog" / "lesion_tracks.parquet").is_file()


def test_catalog_paths_exist(any_run):
    path_columns = [c for c in any_run.cases.columns if c.endswith(("_nifti", "_transform"))]
    assert {"t1c_nifti", "lesion_labels_nifti", "t1_to_t1c_transform"} <= set(path_columns)
    for column in path_columns:
        for value in any_run.cases[column].dropna():
            assert (any_run.output / value).is_file(), (column, value)
    for value in any_run.series["nifti"].dropna():
        assert (any_run.output / value).is_file(), value


def test_case_without_t2_still_gets_everything_else(nested_run):
    row = case_row(nested_run, truth_cases(nested_run)[1])
    assert row["status"] == "ok"
    assert pd.isna(row["t2_nifti"]) and pd.isna(row["t2_to_t1c_transform"])
    assert isinstance(row["t1_to_t1c_transform"], str) and isinstance(row["lesion_labels_nifti"], str)


def test_second_run_does_nothing(flat_run):
    result = run_snakemake(flat_run.input_dir, flat_run.output, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values as None and lists as tuples: readers differ only in how they box them."""
    frame = frame.reset_index(drop=True).astype(object)
    frame = frame.where(frame.notna().to_numpy() if frame.size else frame.notna(), None)
    return frame.map(lambda v: tuple(v) if isinstance(v, (list, np.ndarray)) else v)


def test_catalog_reads_the_same_in_pandas_polars_duckdb(nested_run):
    import duckdb
    import polars as pl

    for table in ("series", "cases", "lesions"):
        path = nested_run.output / "catalog" / f"{table}.parquet"
        from_pandas = pd.read_parquet(path)
        from_polars = pl.read_parquet(path).to_pandas()
        from_duckdb = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").df()
        assert len(from_pandas) == len(from_polars) == len(from_duckdb) > 0
        key = {"series": "series_instance_uid", "cases": "case_id", "lesions": ["case_id", "roi_number"]}[table]
        left = _comparable(from_pandas.sort_values(key))
        for other in (from_polars, from_duckdb):
            right = _comparable(other.sort_values(key)[from_pandas.columns])
            pd.testing.assert_frame_equal(left, right, check_dtype=False)
    count = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{nested_run.output}/catalog/lesions.parquet') l "
        f"JOIN read_parquet('{nested_run.output}/catalog/cases.parquet') c USING (case_id) WHERE c.status = 'ok'"
    ).fetchall()[0][0]
    assert count == sum(len(c["lesions"]) for c in truth_cases(nested_run) if c["expected_status"] == "ok")


def test_bids_validator_reports_no_errors(nested_run):
    validator = shutil.which("bids-validator") or str(ROOT / ".tools" / "node_modules" / ".bin" / "bids-validator")
    if not Path(validator).exists():
        pytest.skip("bids-validator (npm) not installed: run tools/install-test-tools.sh")
    result = subprocess.run(
        [validator, "--json", str(nested_run.output / "bids")], capture_output=True, text=True, timeout=300
    )
    report = json.loads(result.stdout)
    errors = report["issues"]["errors"]
    assert errors == [], json.dumps(errors, indent=1)[:4000]


def test_schema_validator_reports_no_errors_in_raw_or_derivatives(nested_run):
    """The current, schema-based validator (bids-validator-deno from PyPI) on the raw dataset
    and on the derivative dataset. Each is validated on its own: with --recursive the
    validator (3.0.2) does not read the derivative dataset's .bidsignore."""
    validator = shutil.which("bids-validator-deno", path=str(Path(sys.executable).parent)) or shutil.which(
        "bids-validator-deno")
    assert validator, "bids-validator-deno (PyPI) is a test dependency"
    derivative = nested_run.output / "bids" / "derivatives" / "metsprep"
    assert list(derivative.rglob("*_dseg.nii.gz")) and list(derivative.rglob("*_xfm.tfm"))
    for dataset in (nested_run.output / "bids", derivative):
        result = subprocess.run([validator, "--json", str(dataset)], capture_output=True, text=True, timeout=600)
        issues = json.loads(result.stdout)["issues"]["issues"]
        errors = [i for i in issues if i["severity"] == "error"]
        assert errors == [], (str(dataset), json.dumps(errors, indent=1)[:4000])
        assert not any(i["code"] == "README_FILE_MISSING" for i in issues), dataset


def test_pybids_finds_one_contrast_enhanced_t1_per_session(nested_run):
    from bids import BIDSLayout

    layout = BIDSLayout(nested_run.output / "bids", validate=True)
    ok = nested_run.cases[nested_run.cases["status"] == "ok"]
    files = layout.get(suffix="T1w", ceagent="gadolinium", extension=".nii.gz")
    sessions = sorted((f.entities["subject"], f.entities["session"]) for f in files)
    assert sessions == sorted(zip(ok["case_id"].str.extract(r"sub-([^_]+)")[0], ok["session"]))


def test_qc_page_loads_in_chromium(nested_run, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium (Debian) not installed: run tools/install-test-tools.sh")
    page = nested_run.output / "qc" / "index.html"
    html = page.read_text()
    for figure in (nested_run.output / "qc" / "figures").glob("*.png"):
        assert figure.stat().st_size > 1000
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         f"--screenshot={tmp_path / 'qc.png'}", "--window-size=1400,2000", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert (tmp_path / "qc.png").stat().st_size > 10_000, result.stderr[-2000:]
    assert "Failed to load resource" not in result.stderr, result.stderr[-2000:]
    for case_id in nested_run.cases.loc[nested_run.cases["status"] == "ok", "case_id"]:
        assert case_id in html


def test_snakemake_report_embeds_the_qc_figures(flat_run, tmp_path):
    report = tmp_path / "report.html"
    result = run_snakemake(flat_run.input_dir, flat_run.output, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text(errors="replace")
    for case_id in flat_run.cases.loc[flat_run.cases["status"] == "ok", "case_id"]:
        assert f"{case_id}_lesions.png" in html and f"{case_id}_registration.png" in html


def test_every_catalog_column_is_described_in_schema_and_dictionary(nested_run):
    import pyarrow.parquet as pq

    dictionary = (nested_run.output / "catalog" / "README.md").read_text()
    for table in ("inventory", "series", "cases", "lesions", "deid_audit", "splits", "exports"):
        schema = pq.read_schema(nested_run.output / "catalog" / f"{table}.parquet")
        assert table == "deid_audit" or schema.metadata[b"metsprep_version"]
        assert f"`catalog/{table}.parquet`" in dictionary
        for field in schema:
            description = (field.metadata or {}).get(b"description", b"").decode()
            assert len(description) > 5, f"{table}.{field.name} has no description"
            assert f"| `{field.name}` |" in dictionary


def test_exports_share_the_t1c_grid_and_follow_the_rule(nested_run):
    """Every exported image and label is the case's BIDS file (hard link), on the T1C grid;
    the case without T2 and the excluded case are left out, each with its reason."""
    import nibabel as nib

    out = nested_run.output
    exports = pd.read_parquet(out / "catalog" / "exports.parquet").set_index("case_id")
    cases = nested_run.cases.set_index("case_id")
    assert set(exports.index) == set(cases.index)
    no_t2 = case_row(nested_run, truth_cases(nested_run)[1])["case_id"]
    assert not exports.loc[no_t2, "exported"] and "no T2" in exports.loc[no_t2, "export_reason"]
    for case_id in cases.index[cases["status"] != "ok"]:
        assert not exports.loc[case_id, "exported"]
        assert exports.loc[case_id, "export_reason"].startswith("the case is excluded: ")
    exported = exports[exports["exported"]]
    assert len(exported) >= 2
    for case_id, row in exported.iterrows():
        case = cases.loc[case_id]
        sources = [case["t1c_nifti"], case["t1_in_t1c_nifti"], case["t2_in_t1c_nifti"]]
        reference = nib.load(out / case["t1c_nifti"])
        for image, source in zip(row["nnunet_images"], sources):
            assert (out / image).samefile(out / source), (image, source)
            loaded = nib.load(out / image)
            assert loaded.shape == reference.shape and np.allclose(loaded.affine, reference.affine, atol=1e-4)
        label = nib.load(out / row["nnunet_label"])
        assert label.shape == reference.shape and np.allclose(label.affine, reference.affine, atol=1e-4)
        labels_map = np.asarray(nib.load(out / case["lesion_labels_nifti"]).dataobj)
        assert np.array_equal(np.asarray(label.dataobj) > 0, labels_map > 0) and np.asarray(label.dataobj).max() == 1
        folder = "imagesTs" if row["split"] == "test" else "imagesTr"
        assert all(f"/{folder}/" in image for image in row["nnunet_images"])
    splits = pd.read_parquet(out / "catalog" / "splits.parquet")
    assert set(splits["case_id"]) == set(cases.index[cases["status"] == "ok"])
    assert (splits.groupby("subject")["set_name"].nunique() == 1).all()


def test_croissant_validates_and_reads_the_lesion_table(nested_run):
    mlc = pytest.importorskip("mlcroissant")

    dataset = mlc.Dataset(jsonld=str(nested_run.output / "croissant.json"))
    warnings = {w for w in dataset.metadata.ctx.issues.warnings if "datePublished" not in w}
    assert not dataset.metadata.ctx.issues.errors and not warnings, warnings
    records = pd.DataFrame(list(dataset.records(record_set="lesions")))
    lesions = nested_run.lesions
    assert len(records) == len(lesions) > 0
    assert [v.decode() for v in records["lesions/roi_name"]] == lesions["roi_name"].tolist()
    np.testing.assert_array_equal(records["lesions/volume_mm3"].to_numpy(), lesions["volume_mm3"].to_numpy())
    card = (nested_run.output / "DATASET_CARD.md").read_text()
    ok = int((nested_run.cases["status"] == "ok").sum())
    assert f"| cases ok | {ok} (" in card and f"| lesions (ROIs) of ok cases | {len(lesions)} |" in card
    for reason in nested_run.cases["status_reason"].dropna():
        assert reason.replace("|", "\\|").replace("\n", " ") in card


def test_review_round_trip_in_the_browser(flat_run, tmp_path):
    """Served by `metsprep review`: the index opens a case page, the NiiVue viewer draws the
    T1C with the red lesion overlay at the lesion the list jumps to, a decision is saved,
    and the next run puts it in cases.parquet and lesions.parquet and leaves the case out of
    the exports. Last in this file: it adds a ratings file to the flat run's output."""
    import io

    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from browser import body_says, chromium, errors_in_console, review_server, wait_for

    out = flat_run.output
    case_id = str(flat_run.cases.loc[flat_run.cases["status"] == "ok", "case_id"].iloc[0])
    ratings = out / "qc" / "ratings.tsv"
    with review_server(out, ratings) as url, chromium(tmp_path / "profile") as driver:
        driver.get(f"{url}/qc/index.html")
        wait_for(driver, body_says("ready", "1"))
        driver.find_element(By.CSS_SELECTOR, "th[data-sort='case_id']").click()
        driver.find_element(By.ID, "search").send_keys(case_id)
        links = driver.find_elements(By.CSS_SELECTOR, "#cases tbody tr a")
        assert [a.text for a in links] == [case_id]
        links[0].click()
        wait_for(driver, body_says("viewer", "ready"), timeout=90)
        driver.find_elements(By.CSS_SELECTOR, "#lesions .jump")[0].click()
        time.sleep(1.0)  # one frame after the crosshair moved
        pixels = np.asarray(Image.open(io.BytesIO(driver.find_element(By.ID, "viewer").screenshot_as_png)).convert("RGB"))
        grey = (np.abs(pixels[..., 0].astype(int) - pixels[..., 2]) < 8) & (pixels[..., 0] > 40)
        red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
        assert grey.mean() > 0.05, "the T1C is not drawn"
        assert red.sum() > 3, "the lesion overlay is not drawn at the lesion"

        Select(driver.find_element(By.CSS_SELECTOR, "#case-decision select")).select_by_value("fail")
        driver.find_element(By.CSS_SELECTOR, "#case-decision input").send_keys("motion artefact on T1C")
        lesion_select = driver.find_element(By.CSS_SELECTOR, "#lesions .decision select")
        roi_number = int(lesion_select.get_attribute("data-roi"))
        Select(lesion_select).select_by_value("pass")
        driver.find_element(By.ID, "save").click()
        wait_for(driver, lambda d: "Saved 2 decision(s)" in d.find_element(By.ID, "save-status").text)
        assert errors_in_console(driver) == []

    result = run_snakemake(flat_run.input_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    cases = pd.read_parquet(out / "catalog" / "cases.parquet").set_index("case_id")
    assert cases.loc[case_id, "qc_rating"] == "fail" and cases.loc[case_id, "qc_comment"] == "motion artefact on T1C"
    lesions = pd.read_parquet(out / "catalog" / "lesions.parquet")
    reviewed = lesions[(lesions["case_id"] == case_id) & (lesions["roi_number"] == roi_number)]
    assert reviewed["qc_rating"].tolist() == ["pass"]
    assert lesions.loc[lesions["roi_number"] != roi_number, "qc_rating"].isna().all()
    exports = pd.read_parquet(out / "catalog" / "exports.parquet").set_index("case_id")
    assert not exports.loc[case_id, "exported"]
    assert exports.loc[case_id, "export_reason"].endswith("motion artefact on T1C")
