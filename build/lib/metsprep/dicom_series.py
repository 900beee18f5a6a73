"""One DICOM image series read into a voxel array indexed [i, j, k], with its geometry.

Geometry comes from `metsprep.geometry.series_geometry` (slices sorted along the normal,
missing planes interpolated and flagged, mixed or irregular stacks rejected with a
reason). Voxel values: Rescale Slope/Intercept applied per slice; int16/uint16 (or
int32) when every value is an integer, float32 otherwise (and whenever a plane is
interpolated). Compressed pixel data are decoded by the plugins the project ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from metsprep.geometry import SeriesGeometry


@dataclass
class ConvertedSeries:
    data: NDArray[Any]  # indexed [i, j, k]
    geometry: SeriesGeometry
    datasets: list[Any]  # the header of each input file, in input order (pixel data released)
    notes: list[str]


def _input_file(input_dir: Path, relative: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"plan file entry {relative!r} is not a path")
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"plan file {relative!r} is not inside the input folder")
    return Path(input_dir) / path


# Decoders the project ships and tests, by preference. pydicom would otherwise pick the
# first available plugin, so another installed package (GDCM, Pillow) could silently
# change how compressed pixel data are decoded.
PREFERRED_DECODING_PLUGINS = ("pylibjpeg", "pydicom")


def _decoded_pixels(ds: Any) -> NDArray[Any]:
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    if transfer_syntax.is_compressed:
        from pydicom.pixels import get_decoder

        available = get_decoder(transfer_syntax).available_plugins
        plugin = next((p for p in PREFERRED_DECODING_PLUGINS if p in available), None)
        if plugin is not None:
            ds.pixel_array_options(decoding_plugin=plugin)
    pixels: NDArray[Any] = ds.pixel_array
    return pixels


def _rescaled_slice(ds: Any) -> tuple[NDArray[Any], bool]:
    """Pixel values with Rescale Slope/Intercept applied; second item: integer-valued."""
    pixels = _decoded_pixels(ds)
    if pixels.ndim != 2:
        raise ValueError(f"image {ds.get('SOPInstanceUID', '?')} is not a single 2-D frame")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return pixels, True
    values = pixels.astype(np.float64) * slope + intercept
    integer = float(slope).is_integer() and float(intercept).is_integer()
    return values, integer


def _integer_dtype(low: float, high: float) -> np.dtype[Any]:
    for dtype in (np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.float32)


def read_series(input_dir: Path, files: list[str], max_missing_run: int = 1) -> ConvertedSeries:
    """Read, sort and stack one series. Raises `GeometryError`/`ValueError` with a reason."""
    import pydicom

    from metsprep.geometry import GeometryError, SliceHeader, interpolation_weights, series_geometry

    datasets = []
    for relative in files:
        try:
            datasets.append(pydicom.dcmread(_input_file(input_dir, relative)))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise ValueError(f"cannot read {relative}: {exc}") from exc
    geometry = series_geometry([SliceHeader.from_dataset(ds) for ds in datasets], max_missing_run)
    notes: list[str] = []
    if geometry.dropped:
        notes.append(f"{len(geometry.dropped)} duplicate file(s) of the same SOP instance ignored")
    if geometry.sheared:
        notes.append(f"gantry tilt {geometry.tilt_deg:.2f} deg kept as a sheared sform (qform_code 0)")

    columns, rows, n_planes = geometry.shape
    planes: dict[int, NDArray[Any]] = {}
    all_integer = True
    for k, index in enumerate(geometry.order):
        if index is None:
            continue
        ds = datasets[index]
        if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() not in ("MONOCHROME2", "MONOCHROME1"):
            raise ValueError(f"image photometric interpretation {ds.PhotometricInterpretation} is not grey-scale")
        try:
            values, integer = _rescaled_slice(ds)
        except Exception as exc:  # decoders raise many kinds; the reason is what matters
            raise ValueError(f"cannot decode the pixel data of {files[index]}: {exc}") from exc
        if values.shape != (rows, columns):
            raise GeometryError(f"pixel data of {files[index]} is {values.shape}, not {rows}x{columns}")
        planes[k] = values
        all_integer &= integer
        # Free the decoded pixel buffer kept on the dataset; the headers stay for the sidecar.
        del ds.PixelData

    weights = interpolation_weights(geometry.order)
    if weights:
        all_integer = False
        notes.append("missing slice(s) at k=" + ",".join(str(k) for k in sorted(weights))
                     + " linearly interpolated between neighbouring slices")
    low = min(float(p.min()) for p in planes.values())
    high = max(float(p.max()) for p in planes.values())
    dtype = _integer_dtype(low, high) if all_integer else np.dtype(np.float32)
    # Stack as [k, j, i] then view as [i, j, k]: pixel_array rows are j, columns are i.
    stack = np.empty((n_planes, rows, columns), dtype=dtype)
    for k, values in planes.items():
        stack[k] = values
    for k, (below, above, weight) in weights.items():
        stack[k] = ((1 - weight) * planes[below] + weight * planes[above]).astype(dtype)
    data = stack.transpose(2, 1, 0)
    return ConvertedSeries(data=data, geometry=geometry, datasets=datasets, notes=notes)
