"""Standard space and lesion tracking: units against hand-made truths, then one pipeline run
on synthetic longitudinal patients (new poses and frames per session; lesions that shrink,
grow, disappear, appear and are renamed; one patient in another contrast with a strong
bias field) checked against the generator's truth."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from metsprep.longitudinal import Lesion, Session, match_session, name_key, names_agree, sphere_iou, track_patient
from metsprep.settings import LongitudinalSettings
from metsprep.standard_space import region_of_mni_ras

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = LongitudinalSettings()


# ---------------------------------------------------------------- units


def test_names_compare_without_side_tokens_and_suffixes():
    assert name_key("L_parietal") == name_key("L_par_recurr") == "par"
    assert names_agree("L_parietal", "Lt_par_2")
    assert not names_agree("L_parietal", "R_parietal")
    assert not names_agree("L_parietal", "L_occipole")


def test_sphere_overlap_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    for d, va, vb in ((0.0, 500.0, 500.0), (4.0, 900.0, 300.0), (9.0, 1000.0, 1000.0), (30.0, 100.0, 100.0)):
        ra, rb = ((3 * v / (4 * math.pi)) ** (1 / 3) for v in (va, vb))
        pts = rng.uniform(-12, 42, size=(2_000_000, 3))
        in_a = np.linalg.norm(pts, axis=1) <= ra
        in_b = np.linalg.norm(pts - [d, 0, 0], axis=1) <= rb
        estimate = (in_a & in_b).sum() / max(1, (in_a | in_b).sum())
        assert sphere_iou(d, va, vb) == pytest.approx(estimate, abs=0.01)


def _lesion(case: str, number: int, name: str, xyz, diameter: float) -> Lesion:
    volume = math.pi / 6 * diameter**3
    return Lesion(case, number, name, np.array(xyz, float), volume, diameter, None)


def test_hungarian_matching_is_one_to_one_where_nearest_neighbour_would_not_be():
    from metsprep.longitudinal import Track

    # lesion 0 is nearest to both tracks; greedy nearest-first would give track 0 to lesion 0
    # and leave lesion 1 beyond the limit of track 1; the optimum keeps both links
    tracks = [Track("T1", 6, np.array([0.0, 0, 0]), 100, "a"), Track("T2", 6, np.array([7.0, 0, 0]), 100, "b")]
    lesions = [_lesion("s", 1, "x", [3.0, 0, 0], 6), _lesion("s", 2, "y", [-6.0, 0, 0], 6)]
    assert match_session(tracks, lesions, SETTINGS) == {0: (1, pytest.approx(4.0)), 1: (0, pytest.approx(6.0))}


def _sessions(*per_session):
    return [Session(f"sub-P_ses-0{i + 1}", f"0{i + 1}", lesions, None, True) for i, lesions in enumerate(per_session)]


def _responses(rows):
    return [next(r["response"] for r in rows if r["session"] == s) for s in sorted({r["session"] for r in rows})]


def test_statuses_and_rano_bm_responses_on_constructed_patients():
    a0, b0 = _lesion("1", 1, "L_front", [0, 0, 0], 20), _lesion("1", 2, "R_par", [40, 0, 0], 12)
    shrunk = [_lesion("2", 1, "L_front", [0.5, 0, 0], 12), _lesion("2", 2, "R_par_recurr", [40, 1, 0], 8)]
    rows = track_patient("P", _sessions([a0, b0], shrunk, []), SETTINGS)
    statuses = {(r["session"], r["track_id"]): r["status"] for r in rows}
    assert statuses == {("01", "P-T01"): "baseline", ("01", "P-T02"): "baseline", ("02", "P-T01"): "shrinking",
                        ("02", "P-T02"): "shrinking", ("03", "P-T01"): "gone", ("03", "P-T02"): "gone"}  # fmt: skip
    assert _responses(rows) == ["baseline", "PR", "CR"]  # SLD 32 -> 20 (-37 %) -> 0
    # growth of one target by >= 5 mm and SLD +20 % over the nadir: PD; a small new lesion alone is not
    grown = [_lesion("2", 1, "L_front", [0, 0, 0], 28), _lesion("2", 2, "R_par", [40, 0, 0], 12)]  # SLD 32 -> 40
    assert _responses(track_patient("P", _sessions([a0, b0], grown), SETTINGS)) == ["baseline", "PD"]
    small_new = [a0, b0, _lesion("2", 3, "L_occ", [0, 60, 0], 3)]
    rows = track_patient("P", _sessions([a0, b0], small_new), SETTINGS)
    assert _responses(rows) == ["baseline", "SD"] and rows[-1]["status"] == "new"
    big_new = [a0, b0, _lesion("2", 3, "L_occ", [0, 60, 0], 7)]
    assert _responses(track_patient("P", _sessions([a0, b0], big_new), SETTINGS)) == ["baseline", "PD"]
    # no measurable lesion at baseline: not evaluable unless something new appears
    tiny = [_lesion("1", 1, "L_front", [0, 0, 0], 6)]
    assert _responses(track_patient("P", _sessions(tiny, tiny), SETTINGS)) == ["baseline", "NE"]


def test_region_rule_on_textbook_mni_points():
    assert region_of_mni_ras(-40, 30, 20) == "frontal"
    assert region_of_mni_ras(40, -60, 40) == "parietal"
    assert region_of_mni_ras(-55, -20, -10) == "temporal"
    assert region_of_mni_ras(10, -90, 5) == "occipital"
    assert region_of_mni_ras(25, -65, -35) == "cerebellum"
    assert region_of_mni_ras(0, -30, -30) == "brainstem"
    assert region_of_mni_ras(-15, -15, 8) == "deep"


def test_a_fit_to_something_that_is_not_a_head_is_flagged():
    import SimpleITK as sitk

    from metsprep.settings import StandardSpaceSettings
    from metsprep.standard_space import fit_template

    noise = sitk.GetImageFromArray(np.random.default_rng(1).uniform(0, 100, (24, 96, 96)).astype(np.float32))
    noise.SetSpacing((2.4, 2.4, 6.0))
    noise.SetOrigin((-115.0, -115.0, -70.0))
    fit = fit_template(noise, StandardSpaceSettings())
    assert fit.flags, f"scales {fit.scales}, check {fit.check_disagreement_mm:.2f} mm"


# ---------------------------------------------------------------- one pipeline run

# Patient 0: three sessions, both targets shrink by half (PR), then one grows back, a small
# lesion is gone and a new one appears (PD); patient 1: one target grows by half (PD);
# patient 2: all stable (SD), one lesion renamed, another contrast model, strong bias and
# noise, head off-centre (the template fit must not depend on the default contrast).
CASE_OPTIONS = {
    0: {"studies": 3, "lesions": [{"diameter_mm": 18}, {"diameter_mm": 14}, {"diameter_mm": 6}],
        "longitudinal": {"1": {"growth": {"0": 0.5, "1": 0.55, "2": 1.0}, "rename": [1]},
                         "2": {"gone": [2], "growth": {"0": 0.5, "1": 1.3}, "new": [{"diameter_mm": 9}]}}},
    1: {"studies": 2, "lesions": [{"diameter_mm": 16}, {"diameter_mm": 11}],
        "longitudinal": {"1": {"growth": {"0": 1.5, "1": 1.0}}}},
    2: {"studies": 2, "lesions": [{"diameter_mm": 15}, {"diameter_mm": 12}, {"diameter_mm": 5}],
        "longitudinal": {"1": {"growth": {"0": 1.0, "1": 1.0, "2": 1.0}, "rename": [0]}},
        "contrast": "alternate", "bias_scale": 3.0, "noise_scale": 2.0, "fov_offset_mm": [12.0, -10.0, 0.0]},
}  # fmt: skip
EXPECTED_RESPONSES = {0: ["baseline", "PR", "PD"], 1: ["baseline", "PD"], 2: ["baseline", "SD"]}


@pytest.fixture(scope="module")
def longitudinal_run(tmp_path_factory):
    from metsprep.synth import generate_cohort

    root = tmp_path_factory.mktemp("longitudinal")
    truth = generate_cohort(root / "cohort", 3, 23, layout="per_case", case_options=CASE_OPTIONS)
    output = root / "out"
    config = root / "config.yaml"
    config.write_text(f"input_dir: '{root / 'cohort' / 'dicom'}'\noutput_dir: '{output}'\nscan:\n  shards: 2\n")
    command = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2", "--configfile", str(config)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-6000:]
    read = lambda name: pd.read_parquet(output / "catalog" / f"{name}.parquet")  # noqa: E731
    return SimpleNamespace(truth=truth, output=output, cases=read("cases"), lesions=read("lesions"), tracks=read("lesion_tracks"))



def _truth_rows(run):
    """(case_index, study_index, truth lesion, catalog lesion row) for every truth lesion."""
    out = []
    for study in run.truth["cases"]:
        case = run.cases[run.cases.study_instance_uid == study["study_instance_uid"]].iloc[0]
        for les in study["lesions"]:
            row = run.lesions[(run.lesions.case_id == case.case_id) & (run.lesions.roi_number == les["roi_number"])].iloc[0]
            out.append((study["case_index"], study["study_index"], les, row))
    return out


@pytest.mark.slow
@pytest.mark.heavy
def test_every_truth_track_is_recovered_without_a_wrong_link(longitudinal_run):
    run = longitudinal_run
    tracks = run.tracks.set_index(["case_id", "roi_number"])
    links: dict[tuple[int, str], set[str]] = {}
    for patient, study, les, row in _truth_rows(run):
        mine = tracks.loc[(row.case_id, row.roi_number)]
        links.setdefault((patient, les["track_id"]), set()).add(mine.track_id)
        expected = "baseline" if study == 0 else ("new" if les["first_study_index"] == study else None)
        if expected:
            assert mine.status == expected, (patient, study, les["roi_name"])
        elif les["max_diameter_mm"] >= 3.0:
            assert mine.status in ("stable", "shrinking", "growing"), (patient, study, les["roi_name"], mine.status)
    # one pipeline track per truth track (no missed link) and never two truth tracks in one (no wrong link)
    assert all(len(v) == 1 for v in links.values()), links
    mapped = [next(iter(v)) for v in links.values()]
    assert len(mapped) == len(set(mapped))
    # a truth track absent from a later session has a gone row there
    for patient in CASE_OPTIONS:
        studies = [s for s in run.truth["cases"] if s["case_index"] == patient]
        seen: set[str] = set()
        for study in studies:
            present = {les["track_id"] for les in study["lesions"]}
            case_id = run.cases[run.cases.study_instance_uid == study["study_instance_uid"]].iloc[0].case_id
            for gone in seen - present:
                mine = next(iter(links[(patient, gone)]))
                row = run.tracks[(run.tracks.case_id == case_id) & (run.tracks.track_id == mine)]
                assert list(row.status) == ["gone"], (patient, gone)
            seen |= present


@pytest.mark.slow
@pytest.mark.heavy
def test_session_responses_match_the_truth(longitudinal_run):
    run = longitudinal_run
    for patient, expected in EXPECTED_RESPONSES.items():
        pid = next(s["patient_id"] for s in run.truth["cases"] if s["case_index"] == patient)
        own = run.tracks[run.tracks.patient_id == pid]
        assert [own[own.session == s].response.iloc[0] for s in sorted(own.session.unique())] == expected, pid
    renamed = [les for _, _, les, _ in _truth_rows(run) if les["renamed"]]
    assert len(renamed) == 2  # the renamed lesions were linked above by position, their names differ
    assert run.tracks.track_flag.isna().all()


@pytest.mark.slow
@pytest.mark.heavy
def test_mni_centroids_within_5_mm_of_the_truth(longitudinal_run):
    errors = []
    for _, _, les, row in _truth_rows(longitudinal_run):
        assert pd.isna(row.mni_flag)
        errors.append(float(np.linalg.norm(np.array([row.mni_x_mm, row.mni_y_mm, row.mni_z_mm]) - les["centre_mni_ras_mm"])))
    assert max(errors) <= 5.0, errors
    assert np.median(errors) <= 1.5, errors


@pytest.mark.slow
@pytest.mark.heavy
def test_brain_mask_matches_the_generators_brain(longitudinal_run):
    import nibabel as nib

    from metsprep.frames import Grid, apply_affine
    from metsprep.synth import anatomy

    run, maps = longitudinal_run, anatomy.tissue_maps()
    for study in run.truth["cases"]:
        case = run.cases[run.cases.study_instance_uid == study["study_instance_uid"]].iloc[0]
        assert case.mni_trusted, case.mni_flag
        mask = np.asarray(nib.load(run.output / case.brain_mask_nifti).dataobj) > 0
        grid = Grid.from_nifti(nib.load(run.output / case.t1c_nifti))
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
        mni_from_t1c = np.linalg.inv(np.array(study["head"]["t1c_lps_from_mni_lps"]))
        mni_ijk = apply_affine(np.linalg.inv(maps.lps_from_ijk) @ mni_from_t1c @ grid.lps_from_ijk, ijk.astype(float))
        brain = anatomy.sample_volume(maps.brain, mni_ijk).reshape(grid.shape) >= 0.5
        dice = 2 * (brain & mask).sum() / (brain.sum() + mask.sum())
        assert dice >= 0.95, (case.case_id, dice)


@pytest.mark.slow
@pytest.mark.heavy
def test_frequency_map_counts_the_lesion_volume_and_is_in_the_qc_report(longitudinal_run):
    import nibabel as nib

    run = longitudinal_run
    path = run.output / "standard_space" / "space-MNI152NLin2009aSym_res-2_desc-lesionfrequency.nii.gz"
    frequency = np.asarray(nib.load(path).dataobj)
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["CasesCounted"] == len(run.cases) and sidecar["CasesLeftOut"] == []
    # every lesion lands once: voxel sum x 8 mm3 ~ the summed volume (heads are within ~5 % of the template's size)
    volume = float(run.lesions.volume_mm3.sum())
    assert frequency.sum() * 8.0 == pytest.approx(volume, rel=0.25)
    index = (run.output / "qc" / "index.html").read_text()
    assert "figures/lesion_frequency.png" in index and "figures/lesion_tracks.png" in index
