"""Hemisphere and region from ROI names and from the head's midsagittal plane."""

from __future__ import annotations

import numpy as np
import pytest

from metsprep import location

VOCABULARY = location.read_vocabulary()


@pytest.mark.parametrize(
    ("name", "hemisphere", "region"),
    [
        ("R_lat_temp", "R", "temporal"),
        ("L_occipole", "L", "occipital"),
        ("L_mid_cblm", "L", "cerebellum"),  # "mid" is middle, not midline
        ("Lt frontal", "L", "frontal"),
        ("LtFrontal", "L", "frontal"),
        ("right parietal", "R", "parietal"),
        ("Rt_FrontoParietal", "R", "frontal"),
        ("pons", "midline", "brainstem"),
        ("brain stem", "midline", "brainstem"),
        ("R thalamus", "R", "deep"),
        ("L_insula", "L", "insula"),
        ("vermis", "midline", "cerebellum"),
        ("met 1", "unknown", "unknown"),
        ("Met1", "unknown", "unknown"),
        ("GTV", "unknown", "unknown"),
        ("Target 3", "unknown", "unknown"),
    ],
)
def test_name_vocabulary(name, hemisphere, region):
    loc = location.location_from_name(name, VOCABULARY)
    assert (loc.hemisphere, loc.region) == (hemisphere, region)


def test_name_with_both_sides_is_flagged():
    loc = location.location_from_name("L_R_front", VOCABULARY)
    assert loc.hemisphere == "unknown" and loc.flags == ("name_names_both_sides",)


def _ellipsoid_head(shape, lps_from_ijk, centre_lps, radii_mm, rotation=None):
    rotation = np.eye(3) if rotation is None else rotation
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    lps = ijk @ lps_from_ijk[:3, :3].T + lps_from_ijk[:3, 3]
    local = (lps - centre_lps) @ rotation  # coordinates in the head's own axes
    inside = ((local / radii_mm) ** 2).sum(axis=1) <= 1
    return inside.reshape(shape)


def _rotation_z(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


@pytest.mark.parametrize("yaw_deg", [0.0, 12.0, -20.0])
def test_midsagittal_plane_of_a_shifted_rotated_head(yaw_deg):
    # image with i running to patient right (-x): the index frame is not the LPS frame
    shape = (110, 120, 50)
    lps_from_ijk = np.array([[-1.0, 0, 0, 55.0], [0, -1.0, 0, 60.0], [0, 0, 2.5, -60.0], [0, 0, 0, 1]])
    centre = np.array([17.0, -8.0, 0.0])  # 17 mm to patient left of the image centre
    rotation = _rotation_z(yaw_deg)
    head = _ellipsoid_head(shape, lps_from_ijk, centre, np.array([36.0, 46.0, 40.0]), rotation)
    plane = location.midsagittal_plane(head, lps_from_ijk)
    assert plane is not None
    np.testing.assert_allclose(plane.point_lps, centre, atol=0.5)
    assert plane.normal_lps[0] > 0  # points to patient left
    expected_normal = rotation[:, 0]
    assert abs(plane.normal_lps @ expected_normal) > np.cos(np.radians(1.5))
    assert plane.tilt_deg == pytest.approx(abs(yaw_deg), abs=1.5)
    # points 10 mm to the head's left/right along its own axis; one on the plane, offset in AP
    left = centre + 10 * expected_normal
    right = centre - 10 * expected_normal
    on_plane = centre + 30 * rotation[:, 1]  # 30 mm anterior-posterior in the head's frame
    d = plane.signed_distance_mm(np.array([left, right, on_plane]))
    assert location.hemisphere_from_distance(d[0], VOCABULARY.midline_margin_mm) == "L"
    assert location.hemisphere_from_distance(d[1], VOCABULARY.midline_margin_mm) == "R"
    assert location.hemisphere_from_distance(d[2], VOCABULARY.midline_margin_mm) == "midline"
    # the image centre (x = 0) lies on the head's RIGHT here: an image-centre rule would fail
    assert location.hemisphere_from_distance(plane.signed_distance_mm(np.array([2.0, -8.0, 0.0]))[0], 3.0) == "R"


def test_empty_mask_has_no_plane():
    assert location.midsagittal_plane(np.zeros((5, 5, 5), bool), np.eye(4)) is None
    assert location.hemisphere_from_distance(None, 3.0) == "unknown"


def test_combine_sources_and_flags():
    named = location.location_from_name("R_lat_temp", VOCABULARY)
    agree = location.combine(named, -20.0, VOCABULARY)
    assert (agree.hemisphere, agree.location_source, agree.location_flag) == ("R", "name+geometry", None)
    disagree = location.combine(named, 20.0, VOCABULARY)
    assert disagree.hemisphere == "R" and disagree.hemisphere_geometry == "L"
    assert disagree.location_flag == "hemisphere_name_R_geometry_L" and disagree.location_source == "name"
    unnamed = location.combine(location.location_from_name("met 1", VOCABULARY), 25.0, VOCABULARY)
    assert (unnamed.hemisphere, unnamed.region, unnamed.location_source) == ("L", "unknown", "geometry")
    nothing = location.combine(location.location_from_name("met 1", VOCABULARY), None, VOCABULARY)
    assert (nothing.hemisphere, nothing.location_source) == ("unknown", "none")
    pons = location.location_from_name("pons", VOCABULARY)
    assert location.combine(pons, 6.0, VOCABULARY).location_flag is None  # within the brainstem's half-width
    assert location.combine(pons, 40.0, VOCABULARY).location_flag == "hemisphere_name_midline_geometry_L"
    name_only = location.combine(location.location_from_name("L_occipole", VOCABULARY), None, VOCABULARY)
    assert (name_only.hemisphere, name_only.location_source) == ("L", "name")
