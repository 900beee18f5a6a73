"""Time the same job - read the RTSS and the T1C geometry, write the label map - with
metsprep in-process, plastimatch (whole process) and rt-utils (in-process and whole
process), side by side, on a 6-lesion case; metsprep's per-step times, its Python start-up
(imports) apart, and the gzip level of the written label map.

    .venv/bin/python benchmarks/bench_rtss.py [--repeat 7] [--keep DIR]

The case comes from `metsprep.synth.generate_cohort` (6 lesions + skull, 256 x 256 x 40)
when it is available, otherwise from a built-in writer (256 x 256 x 60 MR series).
Methods run round-robin (one run of each per round) so that load from other processes
hits them alike; each time is the best of `--repeat` rounds (the median is printed too).
Whole-process times include Python (or plastimatch) start-up and imports; "start-up" is
a process that only imports what the metsprep script imports.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IN_PROCESS = """
import sys
from pathlib import Path
import numpy as np
import nibabel as nib
from metsprep.geometry import SliceHeader, series_geometry
from metsprep.frames import RAS_FROM_LPS
from metsprep.rtss import SliceGrid, rasterize_rois, read_rtss
from metsprep.scan import read_file_row


def t1c_grid(series_dir):
    # T1C geometry from the DICOM headers (what plastimatch and rt-utils must do), read
    # with metsprep's scan reader (header tags only, no pydicom Dataset per file)
    series_dir = Path(series_dir)
    rows = [read_file_row(series_dir, f.name) for f in sorted(series_dir.iterdir())]
    headers = [
        SliceHeader(tuple(r["image_position_patient"]), tuple(r["image_orientation_patient"]),
                    tuple(r["pixel_spacing_mm"]), r["rows"], r["columns"], r["sop_instance_uid"])
        for r in rows
    ]
    geometry = series_geometry(headers)
    uids = [None if i is None else headers[i].sop_instance_uid for i in geometry.order]
    return SliceGrid(geometry.lps_from_ijk, geometry.shape, uids, geometry.slice_positions_mm)


def write_label_map(label_map, lps_from_ijk, out):
    nib.save(nib.Nifti1Image(label_map, RAS_FROM_LPS @ lps_from_ijk), str(out))


def metsprep_label_map(rtss, series_dir, out):
    grid = t1c_grid(series_dir)
    case = rasterize_rois(read_rtss(rtss), grid)
    write_label_map(case.label_map, grid.lps_from_ijk, out)
    return case


def metsprep_label_map_from_nifti(rtss, t1c_nifti, out):
    # T1C geometry from the exported NIfTI header, as the rtss stage does (the slice
    # UIDs come from bids.json there; here contours are placed by position)
    t1c = nib.load(str(t1c_nifti))
    grid = SliceGrid(RAS_FROM_LPS @ t1c.affine, t1c.shape[:3])
    case = rasterize_rois(read_rtss(rtss), grid)
    nib.save(nib.Nifti1Image(case.label_map, t1c.affine), str(out))
    return case

if __name__ == "__main__":
    metsprep_label_map(*sys.argv[1:4])
"""

STARTUP = (
    "import numpy, nibabel, pydicom, scipy.ndimage, metsprep.geometry, metsprep.rtss, metsprep.scan"
)

RT_UTILS = """
import sys
import numpy as np
import nibabel as nib
from rt_utils import RTStructBuilder

def rt_utils_label_map(rtss, series_dir, out):
    rt = RTStructBuilder.create_from(dicom_series_path=series_dir, rt_struct_path=rtss)
    names = [n for n in rt.get_roi_names() if not n.startswith("*")]
    label_map = None
    for label, name in enumerate(names, start=1):
        mask = rt.get_roi_mask_by_name(name)  # (rows, columns, slices)
        if label_map is None:
            label_map = np.zeros(mask.shape, np.uint16)
        label_map[mask] = label
    nib.save(nib.Nifti1Image(label_map, np.eye(4)), out)

if __name__ == "__main__":
    rt_utils_label_map(*sys.argv[1:4])
"""


def make_case(folder: Path) -> tuple[Path, Path]:
    """(rtss file, T1C series dir) of a 6-lesion case."""
    try:
        from metsprep.synth import generate_cohort  # type: ignore[attr-defined]
    except ImportError:
        generate_cohort = None
    if generate_cohort is not None:
        lesions = [{"diameter_mm": d} for d in (3.0, 6.0, 10.0, 15.0, 22.0, 30.0)]
        generate_cohort(folder, n_cases=1, seed=11, layout="per_case", case_options={0: {"lesions": lesions}})
        return _find_rtss_and_t1c(folder / "dicom")
    return _write_builtin_case(folder)


def _find_rtss_and_t1c(dicom_dir: Path) -> tuple[Path, Path]:
    import pydicom

    rtss, series = None, {}
    for f in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        if getattr(ds, "Modality", "") == "RTSTRUCT":
            rtss = f
            ref_series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
            t1c_uid = ref_series.SeriesInstanceUID
        else:
            series.setdefault(str(ds.SeriesInstanceUID), []).append(f)
    files = series[str(t1c_uid)]
    # rt-utils and plastimatch want a folder holding just the referenced series
    t1c_dir = dicom_dir.parent / "bench_t1c"
    t1c_dir.mkdir(exist_ok=True)
    for f in files:
        shutil.copy(f, t1c_dir / f.name)
    return rtss, t1c_dir  # type: ignore[return-value]


def _write_builtin_case(folder: Path) -> tuple[Path, Path]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def new(sop_class: str) -> Dataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = "bench", "1.2.3.1", "1.2.3.9"
        return ds

    t1c_dir = folder / "t1c"
    t1c_dir.mkdir(parents=True)
    n, nk, ps, dz = 256, 60, 0.9375, 2.5
    series_uid, uids = generate_uid(), []
    for k in range(nk):
        ds = new("1.2.840.10008.5.1.4.1.1.4")
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "MR", series_uid, k + 1
        ds.ImagePositionPatient = [-120.0, -120.0, -70.0 + dz * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.Rows, ds.Columns = [ps, ps], dz, n, n
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.zeros((n, n), np.uint16).tobytes()
        ds.save_as(t1c_dir / f"mr{k:03d}.dcm", enforce_file_format=True)
        uids.append(str(ds.SOPInstanceUID))

    rs = new("1.2.840.10008.5.1.4.1.1.481.3")
    rs.Modality, rs.SeriesInstanceUID = "RTSTRUCT", generate_uid()
    ref = Dataset()
    ref.FrameOfReferenceUID = "1.2.3.9"
    rs.ReferencedFrameOfReferenceSequence = Sequence([ref])
    lesions = [(3.0, (-40, -30, -20)), (6.0, (30, -30, -10)), (10.0, (-40, 30, 0)),
               (15.0, (30, 30, 5)), (22.0, (0, 50, 20)), (30.0, (0, -50, 0))]  # fmt: skip
    structures = [(f"met {i + 1}", d, c) for i, (d, c) in enumerate(lesions)] + [("*Skull", 180.0, (0, 0, 0))]
    ss, rc, obs = [], [], []
    for number, (name, d, c) in enumerate(structures, start=1):
        item = Dataset()
        item.ROINumber, item.ROIName, item.ROIGenerationAlgorithm = number, name, "MANUAL"
        item.ReferencedFrameOfReferenceUID = "1.2.3.9"
        ss.append(item)
        contours = []
        for k in range(nk):
            z = -70.0 + dz * k
            r2 = (d / 2) ** 2 - (z - c[2]) ** 2
            if r2 <= 0.1:
                continue
            t = 2 * np.pi * np.arange(72) / 72
            pts = np.column_stack([c[0] + np.sqrt(r2) * np.cos(t), c[1] + np.sqrt(r2) * np.sin(t), np.full(72, z)])
            cont = Dataset()
            cont.ContourGeometricType, cont.NumberOfContourPoints = "CLOSED_PLANAR", 72
            cont.ContourData = [f"{v:.8g}" for v in pts.ravel()]
            image = Dataset()
            image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", uids[k]
            cont.ContourImageSequence = Sequence([image])
            contours.append(cont)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber, roi_contour.ROIDisplayColor = number, [255, 0, 0]
        roi_contour.ContourSequence = Sequence(contours)
        rc.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType = "ORGAN" if name.startswith("*") else "PTV"
        obs.append(observation)
    rs.StructureSetROISequence, rs.ROIContourSequence = Sequence(ss), Sequence(rc)
    rs.RTROIObservationsSequence = Sequence(obs)
    rtss = folder / "rs.dcm"
    rs.save_as(rtss, enforce_file_format=True)
    return rtss, t1c_dir


def best_of_rounds(methods: dict[str, object], repeat: int) -> dict[str, list[float]]:
    """Run every method once per round, `repeat` rounds; all times per method."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            times[name].append(time.perf_counter() - start)
    return times


def metsprep_steps(run: object, rtss: Path, t1c_dir: Path, work: Path, repeat: int) -> dict[str, float]:
    """Best time of each step of metsprep's in-process job (milliseconds)."""
    from metsprep import rtss as R

    steps: dict[str, list[float]] = {}

    def timed(name: str, fn: object) -> object:
        start = time.perf_counter()
        out = fn()  # type: ignore[operator]
        steps.setdefault(name, []).append(time.perf_counter() - start)
        return out

    for _ in range(repeat):
        grid = timed("read T1C geometry (40 DICOM headers)", lambda: run.t1c_grid(t1c_dir))  # type: ignore[attr-defined]
        rois = timed("read RTSS", lambda: R.read_rtss(rtss))
        rasters = timed("place + fill contours (all ROIs)", lambda: [R.rasterize_roi(r, grid) for r in rois])
        lesions = [(n, r) for n, r in enumerate((r for r in rasters if not r.roi.roi_name.startswith("*")), start=1)]
        label_map, _ = timed("label map + overlaps", lambda: R.build_label_map(lesions, grid.shape))
        skulls = [r for r in rasters if "SKULL" in r.roi.roi_name.upper()]
        timed("head mask (skull, holes filled)", lambda: R.head_from_structures(skulls, grid))
        timed("write label map (.nii.gz)", lambda: run.write_label_map(label_map, grid.lps_from_ijk, work / "s.nii.gz"))  # type: ignore[attr-defined]
    return {name: min(t) * 1e3 for name, t in steps.items()}


def gzip_levels(label_map: np.ndarray, repeat: int) -> list[tuple[int, float, int]]:
    """(level, best seconds, bytes) of gzip-compressing the label map's NIfTI data."""
    data = np.asfortranarray(label_map).tobytes(order="F")
    rows = []
    for level in (1, 6, 9):
        best = min(_timed(lambda: gzip.compress(data, compresslevel=level, mtime=0)) for _ in range(repeat))
        rows.append((level, best, len(gzip.compress(data, compresslevel=level, mtime=0))))
    return rows


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp dir)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_rtss_"))
    work.mkdir(parents=True, exist_ok=True)
    if (work / "case" / "dicom").exists():  # a kept synthetic case: reuse it
        rtss, t1c_dir = _find_rtss_and_t1c(work / "case" / "dicom")
    else:
        rtss, t1c_dir = make_case(work / "case")
    (work / "metsprep_run.py").write_text(IN_PROCESS)
    (work / "rt_utils_run.py").write_text(RT_UTILS)
    sys.path.insert(0, str(work))
    import metsprep_run  # type: ignore[import-not-found]
    import rt_utils_run  # type: ignore[import-not-found]

    args_ = (str(rtss), str(t1c_dir))
    case = metsprep_run.metsprep_label_map(*args_, work / "t1c_grid.nii.gz")  # warm imports and file cache
    t1c_nifti = work / "t1c_grid.nii.gz"  # a NIfTI on the T1C grid, standing in for the bids export
    python = [sys.executable]
    methods = {
        "metsprep in-process (DICOM grid)": lambda: metsprep_run.metsprep_label_map(*args_, work / "m.nii.gz"),
        "metsprep in-process (NIfTI grid)": lambda: metsprep_run.metsprep_label_map_from_nifti(str(rtss), t1c_nifti, work / "n.nii.gz"),
        "metsprep whole process": lambda: subprocess.run([*python, str(work / "metsprep_run.py"), *args_, str(work / "m2.nii.gz")], check=True),
        "metsprep start-up (imports only)": lambda: subprocess.run([*python, "-c", STARTUP], check=True),
        "rt-utils in-process": lambda: rt_utils_run.rt_utils_label_map(*args_, str(work / "r.nii.gz")),
        "rt-utils whole process": lambda: subprocess.run([*python, str(work / "rt_utils_run.py"), *args_, str(work / "r2.nii.gz")], check=True),
    }
    if shutil.which("plastimatch"):
        plastimatch = ["plastimatch", "convert", "--input", str(rtss), "--referenced-ct", str(t1c_dir), "--output-labelmap", str(work / "p.nii.gz")]
        methods["plastimatch whole process"] = lambda: subprocess.run(plastimatch, check=True, capture_output=True)
    else:
        print("plastimatch not on PATH (apt-get install plastimatch): skipped")
    times = best_of_rounds(methods, args.repeat)
    best = {name: min(t) for name, t in times.items()}

    print(f"case: {len(case.labels)} lesions, grid {case.grid.shape}, RTSS {rtss.stat().st_size / 1e3:.0f} kB; best of {args.repeat} rounds")
    ours = best["metsprep in-process (DICOM grid)"]
    print(f"{'method':36s} {'best s':>8s} {'median s':>9s} {'x metsprep in-process':>22s}")
    for name, t in times.items():
        print(f"{name:36s} {best[name]:8.3f} {statistics.median(t):9.3f} {best[name] / ours:22.1f}")
    print(f"Python start-up (imports only) {best['metsprep start-up (imports only)']:.3f} s vs the in-process job {ours:.3f} s")
    for other in ("plastimatch whole process", "rt-utils in-process", "rt-utils whole process"):
        if other in best:
            print(f"ratio {other} / metsprep in-process (DICOM grid): {best[other] / ours:.1f}")

    print("\nmetsprep in-process, per step (best of rounds, ms):")
    steps = metsprep_steps(metsprep_run, rtss, t1c_dir, work, args.repeat)
    for name, ms in steps.items():
        print(f"  {name:40s} {ms:7.1f}")
    print(f"  {'sum':40s} {sum(steps.values()):7.1f}")

    print("\nlabel map gzip level (nibabel writes level 1):")
    raw = case.label_map.nbytes
    for level, seconds, size in gzip_levels(case.label_map, args.repeat):
        print(f"  level {level}: {seconds * 1e3:6.1f} ms, {size / 1e3:7.1f} kB (raw {raw / 1e6:.1f} MB)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
