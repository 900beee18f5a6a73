"""Rigid registration: settings study and SimpleITK vs elastix, by TRE, time and memory.

    .venv/bin/python benchmarks/bench_register.py study    [--source mni|synth] [--pairs N] [--set settings|speed]
    .venv/bin/python benchmarks/bench_register.py elastix  [--source mni|synth]
    .venv/bin/python benchmarks/bench_register.py stress   --pairs N_CASES [--seed S] [--out FILE] [--no-elastix]

Sources: ``mni`` builds thick-slice pairs from the MNI152 template shipped with nilearn
with known rigid motions (no other module needed); ``synth`` uses
``metsprep.synth.generate_cohort`` and reads its DICOM series with ImageSeriesReader.
TRE is measured at brain points against the known ``moving_lps_from_t1c_lps``.
Each timed registration runs in a fresh subprocess so peak RSS is per registration.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from metsprep.register import register_pair
from metsprep.settings import RegistrationSettings

MNI = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
MNI_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"


# ---------------------------------------------------------------- MNI phantom pairs


def _nilearn_data(name: str) -> sitk.Image:
    import nilearn

    return sitk.ReadImage(str(Path(nilearn.__file__).parent / "datasets" / "data" / name))


def _rigid(rng: np.random.Generator, max_deg: float, max_mm: float) -> sitk.Euler3DTransform:
    transform = sitk.Euler3DTransform()
    angles = np.radians(rng.uniform(-max_deg, max_deg, 3))
    transform.SetRotation(*angles.tolist())
    transform.SetTranslation(rng.uniform(-max_mm, max_mm, 3).tolist())
    return transform


def _thick_slice_grid(rng, thickness: float, gap: float, in_plane: float) -> sitk.Image:
    """An axial 256x256 grid covering the head with its own FOV offset and slice positions."""
    spacing = thickness + gap
    n_slices = int(math.ceil(150 / spacing))
    grid = sitk.Image([256, 256, n_slices], sitk.sitkFloat32)
    grid.SetSpacing([in_plane, in_plane, spacing])
    origin = np.array([-128 * in_plane, -128 * in_plane + 20, -60.0]) + rng.uniform(-6, 6, 3)
    grid.SetOrigin(origin.tolist())
    return grid


def _acquire(anatomy: sitk.Image, grid: sitk.Image, anatomy_from_grid: sitk.Transform,
             thickness: float, rng, noise: float) -> sitk.Image:
    """Sample anatomy onto a thick-slice grid: slab blur (FWHM = thickness) + noise."""
    sigma_z = thickness / 2.355
    blurred = sitk.SmoothingRecursiveGaussian(anatomy, [0.4, 0.4, sigma_z])
    image = sitk.Resample(blurred, grid, anatomy_from_grid, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array = np.abs(array + rng.normal(0, noise, array.shape))  # Rician-like floor
    out = sitk.GetImageFromArray(np.round(array * 8).astype(np.int16))
    out.CopyInformation(image)
    return out


def mni_pair(seed: int, moving_contrast: str = "T1") -> dict:
    """A fixed T1C-like and a moving T1- or T2-like thick-slice image with a known motion.

    Anatomy frame = fixed LPS (the MNI template's). truth maps fixed LPS -> moving LPS.
    """
    rng = np.random.default_rng(seed)
    t1 = sitk.Cast(_nilearn_data(MNI), sitk.sitkFloat32)
    gm = sitk.Cast(sitk.Cast(_nilearn_data(MNI_GM), sitk.sitkFloat32) / 255.0, sitk.sitkFloat32)
    wm = sitk.Cast(sitk.Cast(_nilearn_data(MNI_WM), sitk.sitkFloat32) / 255.0, sitk.sitkFloat32)
    if moving_contrast == "T2":
        # Bright CSF, grey above white, scalp dim: a non-monotonic map of T1 contrast.
        head = sitk.Cast(t1 > 15, sitk.sitkFloat32)
        csf = sitk.Clamp(head - gm - wm, sitk.sitkFloat32, 0.0, 1.0) * sitk.Cast(t1 < 70, sitk.sitkFloat32)
        moving_anatomy = 60 * wm + 110 * gm + 220 * csf + 40 * head * (1 - gm - wm - csf)
    else:
        moving_anatomy = t1
    truth = _rigid(rng, 5.0, 8.0)
    fixed_grid = _thick_slice_grid(rng, thickness=5.0, gap=1.0, in_plane=0.9)
    moving_grid = _thick_slice_grid(rng, thickness=4.0, gap=1.0, in_plane=0.94)
    fixed = _acquire(t1, fixed_grid, sitk.Transform(3, sitk.sitkIdentity), 5.0, rng, 3.0)
    moving = _acquire(moving_anatomy, moving_grid, truth.GetInverse(), 4.0, rng, 3.0)
    brain = sitk.GetArrayFromImage(gm + wm) > 0.5  # z, y, x
    kji = np.argwhere(brain)
    pick = kji[rng.choice(len(kji), 200, replace=False)]
    points = [t1.TransformIndexToPhysicalPoint([int(i), int(j), int(k)]) for k, j, i in pick]
    return {"fixed": fixed, "moving": moving, "truth": truth, "points": np.array(points)}


# ---------------------------------------------------------------- synth pairs


def read_dicom_series(folder: Path, series_uid: str | None = None) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    uids = reader.GetGDCMSeriesIDs(str(folder))
    uid = series_uid or uids[0]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


def matrix_transform(matrix_4x4) -> sitk.AffineTransform:
    matrix = np.asarray(matrix_4x4, dtype=float)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix[:3, :3].ravel().tolist())
    transform.SetTranslation(matrix[:3, 3].tolist())
    return transform


def target_registration_errors(estimated: sitk.Transform, truth: sitk.Transform,
                               points_lps: np.ndarray) -> np.ndarray:
    return np.array([
        np.linalg.norm(np.subtract(estimated.TransformPoint(tuple(map(float, p))),
                                   truth.TransformPoint(tuple(map(float, p)))))
        for p in points_lps
    ])


# ---------------------------------------------------------------- elastix

ELASTIX_RIGID = """\
(FixedInternalImagePixelType "float")
(MovingInternalImagePixelType "float")
(FixedImageDimension 3)
(MovingImageDimension 3)
(UseDirectionCosines "true")
(Registration "MultiResolutionRegistration")
(Interpolator "BSplineInterpolator")
(ResampleInterpolator "FinalBSplineInterpolator")
(Resampler "DefaultResampler")
(FixedImagePyramid "FixedSmoothingImagePyramid")
(MovingImagePyramid "MovingSmoothingImagePyramid")
(Optimizer "AdaptiveStochasticGradientDescent")
(Transform "EulerTransform")
(Metric "AdvancedMattesMutualInformation")
(AutomaticScalesEstimation "true")
(AutomaticTransformInitialization "false")
(HowToCombineTransforms "Compose")
(NumberOfHistogramBins 32)
(ErodeMask "false")
(NumberOfResolutions 4)
(MaximumNumberOfIterations 250)
(NumberOfSpatialSamples 2048)
(NewSamplesEveryIteration "true")
(ImageSampler "Random")
(BSplineInterpolationOrder 1)
(FinalBSplineInterpolationOrder 3)
(DefaultPixelValue 0)
(WriteResultImage "false")
(ResultImagePixelType "short")
(ResultImageFormat "nii.gz")
"""


def elastix_transform(parameters_file: Path) -> sitk.Euler3DTransform:
    """EulerTransform (rx, ry, rz, tx, ty, tz) + CenterOfRotationPoint: fixed -> moving LPS."""
    values = {}
    for line in parameters_file.read_text().splitlines():
        line = line.strip()
        if line.startswith("(") and line.endswith(")"):
            key, *rest = line[1:-1].split()
            values[key] = rest
    params = [float(v) for v in values["TransformParameters"]]
    center = [float(v) for v in values["CenterOfRotationPoint"]]
    transform = sitk.Euler3DTransform()
    transform.SetCenter(center)
    if values.get("ComputeZYX", ['"false"'])[0].strip('"') == "true":
        transform.SetComputeZYX(True)
    transform.SetParameters(params)
    return transform


def run_elastix(fixed: sitk.Image, moving: sitk.Image, workdir: Path, threads: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(fixed, str(workdir / "fixed.nii.gz"))
    sitk.WriteImage(moving, str(workdir / "moving.nii.gz"))
    (workdir / "rigid.txt").write_text(ELASTIX_RIGID)
    command = ["/usr/bin/time", "-v", "elastix", "-f", str(workdir / "fixed.nii.gz"),
               "-m", str(workdir / "moving.nii.gz"), "-p", str(workdir / "rigid.txt"),
               "-out", str(workdir), "-threads", str(threads)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_kb = next(int(line.split()[-1]) for line in done.stderr.splitlines()
                   if "Maximum resident set size" in line)
    return {"transform": elastix_transform(workdir / "TransformParameters.0.txt"),
            "seconds": seconds, "peak_mb": peak_kb / 1024}


# ---------------------------------------------------------------- runs


def _pairs(source: str, n: int, workdir: Path) -> list[dict]:
    if source == "mni":
        return [dict(mni_pair(1000 + i, c), name=f"mni{i}-{c}")
                for i in range(n) for c in ("T1", "T2")]
    from metsprep.synth import generate_cohort

    generate_cohort(workdir / "synth", n_cases=n, seed=7, layout="per_case", case_options=None)
    truth = json.loads((workdir / "synth" / "truth" / "truth.json").read_text())
    return list(_synth_pairs(workdir / "synth", truth))


def _synth_pairs(root: Path, truth: dict):
    """Yield T1->T1C and T2->T1C pairs from a synthetic cohort (DICOM read with GDCM)."""
    for case in truth["cases"]:
        case_id = f"{case['patient_id']}-{case['study_index']}"
        series = {name: read_dicom_series(root / "dicom" / case["folder"], s["series_instance_uid"])
                  for name, s in case["series"].items() if name in ("T1C", "T1", "T2")}
        points = np.array(case["brain_points_t1c_lps"])
        for name in ("T1", "T2"):
            if name in series and name in case["transforms"]:
                yield {"fixed": series["T1C"], "moving": series[name], "points": points,
                       "truth": matrix_transform(case["transforms"][name]["moving_lps_from_t1c_lps"]),
                       "name": f"{case_id}-{name}"}


def _tre_summary(tre: np.ndarray) -> dict:
    return {"mean": float(tre.mean()), "median": float(np.median(tre)), "max": float(tre.max())}


STUDY = {
    "default": {},
    "pyramid 2,1": {"levels_mm": (2.0, 1.0), "samples_per_level": (8000, 20000)},
    "pyramid 1": {"levels_mm": (1.0,), "samples_per_level": (20000,)},
    "half the samples": {"samples_per_level": (2000, 4000, 10000)},
    "no head mask": {"head_masks": "none"},
    "masks on both": {"head_masks": "both"},
    "bins 50": {"number_of_histogram_bins": 50},
    "learning rate 2": {"learning_rate": 2.0},
    "min step 1e-2": {"min_step": 1e-2},
}
SPEED_STUDY = {
    "half the samples": {"samples_per_level": (2000, 4000, 10000)},
    "pyramid 4,2": {"levels_mm": (4.0, 2.0), "samples_per_level": (4000, 8000)},
    "no rotated starts": {"start_rotation_deg": 0.0},
}


def study(source: str, n: int, which: str = "settings") -> None:
    table = SPEED_STUDY if which == "speed" else STUDY
    with tempfile.TemporaryDirectory() as tmp:
        pairs = _pairs(source, n, Path(tmp))
        print("| settings | TRE mean | TRE median | TRE max (mm) | s / pair | iterations |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, change in table.items():
            settings = replace(RegistrationSettings(), **change)
            tres, seconds, iterations = [], [], []
            for pair in pairs:
                result = register_pair(pair["fixed"], pair["moving"], settings)
                tres.append(target_registration_errors(result.transform, pair["truth"], pair["points"]))
                seconds.append(result.seconds)
                iterations.append(result.iterations)
            tre = np.concatenate(tres)
            s = _tre_summary(tre)
            print(f"| {label} | {s['mean']:.3f} | {s['median']:.3f} | {s['max']:.3f} | "
                  f"{np.mean(seconds):.2f} | {np.mean(iterations):.0f} |", flush=True)


def _sitk_child(fixed_path: str, moving_path: str, out_tfm: str) -> None:
    """Subprocess entry: one registration, print seconds and peak RSS as JSON."""
    fixed, moving = sitk.ReadImage(fixed_path), sitk.ReadImage(moving_path)
    result = register_pair(fixed, moving, RegistrationSettings())
    sitk.WriteTransform(result.transform, out_tfm)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": result.seconds, "peak_mb": peak_mb}))


def compare_elastix(source: str, n: int, threads: int) -> None:
    if shutil.which("elastix") is None:
        sys.exit("elastix not found: apt-get install -y elastix")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs = _pairs(source, n, tmp)
        rows = {"SimpleITK (metsprep defaults)": [], f"elastix rigid default ({threads} threads)": []}
        for k, pair in enumerate(pairs):
            work = tmp / f"pair{k}"
            elx = run_elastix(pair["fixed"], pair["moving"], work / "elastix", threads)
            elx["tre"] = target_registration_errors(elx["transform"], pair["truth"], pair["points"])
            rows[f"elastix rigid default ({threads} threads)"].append(elx)
            out = subprocess.run(
                [sys.executable, __file__, "_child", str(work / "elastix" / "fixed.nii.gz"),
                 str(work / "elastix" / "moving.nii.gz"), str(work / "sitk.tfm")],
                capture_output=True, text=True, check=True)
            child = json.loads(out.stdout.strip().splitlines()[-1])
            tfm = sitk.ReadTransform(str(work / "sitk.tfm"))
            child["tre"] = target_registration_errors(tfm, pair["truth"], pair["points"])
            rows["SimpleITK (metsprep defaults)"].append(child)
            print(f"{pair['name']}: sitk {child['seconds']:.2f}s TRE {np.median(child['tre']):.3f}/"
                  f"{child['tre'].max():.3f}; elastix {elx['seconds']:.2f}s TRE "
                  f"{np.median(elx['tre']):.3f}/{elx['tre'].max():.3f}", flush=True)
        print("\n| method | s / registration (mean, max) | TRE mean | TRE median | TRE max (mm) | peak RSS MB |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, runs in rows.items():
            tre = _tre_summary(np.concatenate([r["tre"] for r in runs]))
            secs = [r["seconds"] for r in runs]
            print(f"| {label} | {np.mean(secs):.2f}, {np.max(secs):.2f} | {tre['mean']:.3f} | "
                  f"{tre['median']:.3f} | {tre['max']:.3f} | {max(r['peak_mb'] for r in runs):.0f} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _sitk_child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["study", "elastix", "stress"])
    parser.add_argument("--source", choices=["mni", "synth"], default="mni")
    parser.add_argument("--pairs", type=int, default=2, help="cases (each gives a T1 and a T2 pair)")
    parser.add_argument("--threads", type=int, default=1, help="elastix threads")
    parser.add_argument("--set", choices=["settings", "speed"], default="settings",
                        help="study: the original settings study or the speed candidates")
    parser.add_argument("--seed", type=int, default=1, help="stress: corpus seed")
    parser.add_argument("--out", type=Path, default=None, help="stress: JSON results file")
    parser.add_argument("--no-elastix", action="store_true", help="stress: metsprep only")
    args = parser.parse_args()
    if args.mode == "stress":
        stress(args.pairs, args.seed, args.out, not args.no_elastix)
    elif args.mode == "study":
        study(args.source, args.pairs, args.set)
    else:
        compare_elastix(args.source, args.pairs, args.threads)



# ---------------------------------------------------------------- stress corpus


def stress_pairs(workdir: Path, n_cases: int, seed: int) -> list[dict]:
    """T1->T1C and T2->T1C pairs of the synth stress corpus, as the bids stage writes them
    (NIfTI through metsprep.dicom_series and metsprep.bids), with the truth transforms."""
    from metsprep.bids import nifti_image
    from metsprep.dicom_series import read_series
    from metsprep.synth import generate_cohort
    from metsprep.synth.stress import stress_case_options

    options = stress_case_options(n_cases, seed)
    truth = generate_cohort(workdir / "stress", n_cases=n_cases, seed=seed, layout="per_case", case_options=options)
    pairs = []
    for case in truth["cases"]:
        images = {}
        for role in ("T1C", "T1", "T2"):
            series = case["series"].get(role)
            if not series:
                continue
            converted = read_series(workdir / "stress" / "dicom", [f for f in series["files"] if f])
            path = workdir / "nifti" / f"{case['case_index']}_{role}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nifti_image(converted.data, converted.geometry).to_filename(str(path))
            images[role] = path
        for role in ("T1", "T2"):
            if role in images and case["transforms"].get(role):
                pairs.append({
                    "name": f"case{case['case_index']}-{role}", "fixed_path": images["T1C"], "moving_path": images[role],
                    "truth": matrix_transform(case["transforms"][role]["moving_lps_from_t1c_lps"]),
                    "points": np.array(case["brain_points_t1c_lps"]), "options": options[case["case_index"]],
                })  # fmt: skip
    return pairs


def stress(n_cases: int, seed: int, out_json: Path | None, with_elastix: bool) -> None:
    """metsprep and elastix side by side on the stress corpus: TRE, flags, core-seconds."""
    from metsprep.register import register_pair

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs = stress_pairs(tmp, n_cases, seed)
        rows = []
        for k, pair in enumerate(pairs):
            fixed, moving = sitk.ReadImage(str(pair["fixed_path"])), sitk.ReadImage(str(pair["moving_path"]))
            start = time.process_time()
            result = register_pair(fixed, moving, RegistrationSettings())
            cpu = time.process_time() - start
            tre = target_registration_errors(result.transform, pair["truth"], pair["points"])
            row = {"name": pair["name"], "metsprep_tre_median": float(np.median(tre)),
                   "metsprep_tre_max": float(tre.max()), "metsprep_core_s": cpu,
                   "metsprep_flags": list(result.flags), "options": sorted(pair["options"])}  # fmt: skip
            if with_elastix and shutil.which("elastix"):
                elx = run_elastix(fixed, moving, tmp / f"elx{k}", threads=1)
                etre = target_registration_errors(elx["transform"], pair["truth"], pair["points"])
                row.update(elastix_tre_median=float(np.median(etre)), elastix_tre_max=float(etre.max()),
                           elastix_s=elx["seconds"])  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = _stress_summary(rows)
    print(json.dumps(summary, indent=1))
    if out_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps({"summary": summary, "pairs": rows}, indent=1) + "\n")


def _stress_summary(rows: list[dict]) -> dict:
    def stats(tool: str) -> dict:
        if f"{tool}_tre_median" not in rows[0]:
            return {}
        med = np.array([r[f"{tool}_tre_median"] for r in rows])
        worst = np.array([r[f"{tool}_tre_max"] for r in rows])
        out = {"median_of_pair_medians_mm": float(np.median(med)), "p95_mm": float(np.percentile(med, 95)),
               "max_mm": float(med.max()), "pairs_over_1mm": int((med > 1).sum()),
               "gross_failures_over_2mm": int((med > 2).sum()), "worst_point_max_mm": float(worst.max())}  # fmt: skip
        if tool == "metsprep":
            flagged = np.array([bool(r["metsprep_flags"]) for r in rows])
            out["gross_failures_unflagged"] = int(((med > 2) & ~flagged).sum())
            good = med <= 2
            out["flag_false_positive_rate"] = float((flagged & good).sum() / max(1, good.sum()))
            out["core_s_mean"] = float(np.mean([r["metsprep_core_s"] for r in rows]))
        else:
            out["s_mean"] = float(np.mean([r["elastix_s"] for r in rows]))
        return out

    return {"pairs": len(rows), "metsprep": stats("metsprep"), "elastix": stats("elastix")}


if __name__ == "__main__":
    main()
