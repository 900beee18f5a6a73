"""metsprep.geometry against analytic stacks: known lps_from_ijk, order, gaps, tilt."""

from __future__ import annotations

import numpy as np
import pytest

from metsprep.geometry import (
    GeometryError,
    SliceHeader,
    interpolation_weights,
    rigid_lps_from_ijk,
    series_geometry,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def oblique_orientation(deg: float) -> tuple[float, ...]:
    """Row along x rotated about z, column tilted out of the axial plane: a double oblique."""
    a, b = np.radians(deg), np.radians(deg / 2)
    row = np.array([np.cos(a), np.sin(a), 0.0])
    column = np.array([-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    return (*row, *column)


def make_headers(
    n: int = 8,
    orientation: tuple[float, ...] = AXIAL,
    spacing: float = 2.5,
    origin: tuple[float, float, float] = (-40.0, -30.0, 12.0),
    pixel_spacing: tuple[float, float] = (0.9, 0.8),
    shear_mm_per_slice: float = 0.0,
    skip: tuple[int, ...] = (),
    permutation_seed: int | None = 1,
) -> tuple[list[SliceHeader], np.ndarray]:
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    k_step = normal * spacing + column * shear_mm_per_slice
    truth = np.eye(4)
    truth[:3, 0], truth[:3, 1] = row * pixel_spacing[1], column * pixel_spacing[0]
    truth[:3, 2], truth[:3, 3] = k_step, origin
    headers = [
        SliceHeader(tuple(np.asarray(origin) + k * k_step), orientation, pixel_spacing, 20, 24, f"1.2.3.{k}")
        for k in range(n)
        if k not in skip
    ]
    if permutation_seed is not None:
        order = np.random.default_rng(permutation_seed).permutation(len(headers))
        headers = [headers[i] for i in order]
    return headers, truth


def test_axial_stack_sorted_by_position_not_input_order() -> None:
    headers, truth = make_headers()
    geometry = series_geometry(headers)
    np.testing.assert_allclose(geometry.lps_from_ijk, truth, atol=1e-9)
    assert geometry.shape == (24, 20, 8)
    assert [headers[i].sop_instance_uid for i in geometry.order] == [f"1.2.3.{k}" for k in range(8)]
    assert geometry.uniform and geometry.flags == () and geometry.slice_spacing_mm == pytest.approx(2.5)
    np.testing.assert_allclose(np.diff(geometry.slice_positions_mm), 2.5)
    ras = geometry.ras_from_ijk
    np.testing.assert_allclose(ras, np.diag([-1, -1, 1, 1]) @ truth, atol=1e-12)


def test_descending_positions_still_give_increasing_k_along_normal() -> None:
    headers, truth = make_headers(spacing=-3.0, permutation_seed=None)
    geometry = series_geometry(headers)
    # k runs along +normal: the slice with the lowest position along the normal is k = 0.
    assert geometry.lps_from_ijk[2, 2] == pytest.approx(3.0)
    np.testing.assert_allclose(geometry.lps_from_ijk[:3, 3], truth[:3, 3] + 7 * truth[:3, 2])
    assert geometry.order == tuple(range(7, -1, -1))


def test_double_oblique_corners_match_truth() -> None:
    headers, truth = make_headers(orientation=oblique_orientation(20))
    geometry = series_geometry(headers)
    corners = np.array([[i, j, k, 1] for i in (0, 23) for j in (0, 19) for k in (0, 7)], float).T
    np.testing.assert_allclose(geometry.lps_from_ijk @ corners, truth @ corners, atol=1e-6)
    assert not geometry.sheared


def test_gantry_tilt_keeps_shear_and_rigid_qform_keeps_slice_planes() -> None:
    tilt = 12.0
    headers, truth = make_headers(shear_mm_per_slice=2.5 * np.tan(np.radians(tilt)))
    geometry = series_geometry(headers)
    np.testing.assert_allclose(geometry.lps_from_ijk, truth, atol=1e-9)
    assert geometry.tilt_deg == pytest.approx(tilt, abs=1e-6)
    assert "gantry_tilt" in geometry.flags and geometry.sheared
    # The k step is not the cross product of row and column: that would lose the shear.
    assert not np.allclose(geometry.lps_from_ijk[:3, 2], geometry.normal_lps * 2.5)
    rigid = rigid_lps_from_ijk(geometry)
    np.testing.assert_allclose(rigid[:3, 2], [0, 0, 2.5], atol=1e-9)
    # Every voxel of the rigid grid lies on the same slice plane as in the true grid.
    voxels = np.array([[5, 7, k, 1] for k in range(8)], float).T
    np.testing.assert_allclose(geometry.normal_lps @ (rigid @ voxels)[:3], geometry.normal_lps @ (truth @ voxels)[:3])


def test_missing_slice_keeps_true_planes_and_marks_interpolation() -> None:
    headers, truth = make_headers(n=10, skip=(4,))
    geometry = series_geometry(headers)
    np.testing.assert_allclose(geometry.lps_from_ijk, truth, atol=1e-9)
    assert geometry.shape[2] == 10 and not geometry.uniform
    assert geometry.missing_k == (4,) and "missing_slices_interpolated" in geometry.flags
    # Each real slice sits at the k its position gives: the UID map skips k = 4.
    uids = [None if i is None else headers[i].sop_instance_uid for i in geometry.order]
    assert uids == [f"1.2.3.{k}" if k != 4 else None for k in range(10)]
    assert interpolation_weights(geometry.order) == {4: (3, 5, 0.5)}


def test_two_adjacent_missing_slices_need_permission() -> None:
    headers, _ = make_headers(n=10, skip=(4, 5))
    with pytest.raises(GeometryError, match="2 consecutive slices are missing"):
        series_geometry(headers)
    geometry = series_geometry(headers, max_missing_run=2)
    assert geometry.missing_k == (4, 5)
    assert interpolation_weights(geometry.order)[5] == (3, 6, pytest.approx(2 / 3))


def test_irregular_spacing_is_rejected() -> None:
    headers, _ = make_headers(n=6, permutation_seed=None)
    moved = headers[3]
    headers[3] = SliceHeader(
        (moved.image_position_lps[0], moved.image_position_lps[1], moved.image_position_lps[2] + 1.1),
        moved.image_orientation, moved.pixel_spacing, moved.rows, moved.columns, moved.sop_instance_uid,
    )
    with pytest.raises(GeometryError, match="not uniform"):
        series_geometry(headers)


def test_mixed_sizes_and_orientations_are_rejected() -> None:
    headers, _ = make_headers()
    odd = headers[2]
    headers[2] = SliceHeader(odd.image_position_lps, odd.image_orientation, odd.pixel_spacing, 64, 64, "x")
    with pytest.raises(GeometryError, match="mixes image sizes"):
        series_geometry(headers)
    headers, _ = make_headers()
    headers[2] = SliceHeader(odd.image_position_lps, oblique_orientation(5), odd.pixel_spacing, 20, 24, "x")
    with pytest.raises(GeometryError, match="mixes image orientations"):
        series_geometry(headers)


def test_multi_echo_positions_are_rejected_and_copied_files_dropped() -> None:
    headers, _ = make_headers(n=5)
    echoes = headers + [
        SliceHeader(h.image_position_lps, h.image_orientation, h.pixel_spacing, h.rows, h.columns, h.sop_instance_uid + ".2")
        for h in headers
    ]
    with pytest.raises(GeometryError, match="2 images at each of 5 slice positions"):
        series_geometry(echoes)
    copied = headers + [headers[0]]
    geometry = series_geometry(copied)
    assert geometry.dropped == (5,) and "duplicate_files_dropped" in geometry.flags
    assert geometry.shape[2] == 5
    single_duplicate = headers + [echoes[6]]
    with pytest.raises(GeometryError, match="duplicates"):
        series_geometry(single_duplicate)


def test_rounded_positions_and_minus_zero_cosines_are_tolerated() -> None:
    headers, truth = make_headers(orientation=(1.0, -0.0, 0.0, -0.0, 1.0, -0.0), spacing=2.6)
    rounded = [
        SliceHeader(tuple(round(v, 2) for v in h.image_position_lps), h.image_orientation, h.pixel_spacing,
                    h.rows, h.columns, h.sop_instance_uid)
        for h in headers
    ]
    geometry = series_geometry(rounded)
    np.testing.assert_allclose(geometry.lps_from_ijk, truth, atol=0.01)
    assert geometry.uniform and not geometry.sheared
