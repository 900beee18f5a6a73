"""Property-based tests (hypothesis): random and mutated input to the Contour Data parser, the
rasterizer's inclusion rule and the header scanner gives a result or a stated reason, never an
exception, a hang or an unbounded allocation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metsprep.rtss import _contour_points, even_odd_fill, points_in_polygon
from metsprep.scan import read_file_row


@dataclass
class RawElement:
    """What pydicom's raw element parser hands the Contour Data reader."""

    value: bytes


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
points = st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=12)
good_contour = points.map(lambda ps: (ps, "\\".join(repr(float(v)) for p in ps for v in p).encode()))
junk = st.binary(max_size=64)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(good_contour.map(lambda g: ("good", g)), junk.map(lambda b: ("junk", b))), max_size=8))
def test_contour_data_parser_never_raises_and_a_bad_contour_costs_only_itself(contours):
    elements = [RawElement(c[1][1] if c[0] == "good" else c[1]) for c in contours]
    parsed, problems = _contour_points(elements)
    assert len(parsed) == len(problems) == len(contours)
    for (kind, value), array, problem in zip(contours, parsed, problems, strict=True):
        assert array.ndim == 2 and array.shape[1] == 3
        if problem is None:
            assert np.all(np.isfinite(array))
        if kind == "good":  # whatever the other contours hold
            expected = np.array(value[0], dtype=np.float64)
            assert problem is None and np.array_equal(array, expected)


# Vertices on a 1/1024 voxel lattice: the orientation test is exact there (the rule's documented
# domain; with arbitrary doubles a centre within rounding of an edge may fall either way).
coordinate = st.integers(-3 * 1024, 20 * 1024).map(lambda v: v / 1024)
polygon = st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=10).map(np.array)


@settings(max_examples=300, deadline=None)
@given(polygon, st.integers(0, 9), st.booleans())
def test_inclusion_rule_is_independent_of_vertex_order_and_start(poly, shift, reverse):
    shape = (16, 16)
    reordered = np.roll(poly, shift % len(poly), axis=0)
    if reverse:
        reordered = reordered[::-1]
    a, (ai, aj) = even_odd_fill([poly], shape)
    b, (bi, bj) = even_odd_fill([reordered], shape)
    full_a, full_b = np.zeros(shape, bool), np.zeros(shape, bool)
    full_a[ai:ai + a.shape[0], aj:aj + a.shape[1]] = a
    full_b[bi:bi + b.shape[0], bj:bj + b.shape[1]] = b
    assert np.array_equal(full_a, full_b)
    # the block is the point-in-polygon rule evaluated at every voxel centre
    centres = np.argwhere(np.ones(shape, bool)).astype(float)
    assert np.array_equal(full_a.ravel(), points_in_polygon(centres, poly))


@settings(max_examples=300, deadline=None)
@given(polygon, st.integers(-4, 4), st.integers(-4, 4))
def test_inclusion_rule_moves_with_an_integer_shift(poly, di, dj):
    shape = (40, 40)
    base = poly + 10.0
    a, (ai, aj) = even_odd_fill([base], shape)
    b, (bi, bj) = even_odd_fill([base + np.array([di, dj])], shape)
    assert a.sum() == b.sum()
    if a.size:
        assert (bi - ai, bj - aj) == (di, dj) and np.array_equal(a, b)


# ---------------------------------------------------------------- header scanner


@pytest.fixture(scope="module")
def valid_dicom(tmp_path_factory) -> bytes:
    import faults

    folder = tmp_path_factory.mktemp("one")
    series = faults.write_mr_series(folder, "P1", "1.2.3", "19010101", "1.2.4", 1, "AX T1", [0.0])
    return Path(series.files[0]).read_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_header_scanner_gives_a_row_for_any_mutation(tmp_path, valid_dicom, data):
    mutated = bytearray(valid_dicom)
    cut = data.draw(st.integers(0, len(mutated)), label="truncate at")
    for _ in range(data.draw(st.integers(0, 6), label="flips")):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    path = tmp_path / "f.dcm"
    path.write_bytes(bytes(mutated[:cut]))
    row = read_file_row(tmp_path, "f.dcm")
    assert isinstance(row["readable"], bool)
    assert row["readable"] or (isinstance(row["reason"], str) and row["reason"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_header_scanner_gives_a_row_for_random_bytes(tmp_path, blob):
    path = tmp_path / "r.bin"
    path.write_bytes(b"\0" * 128 + b"DICM" + blob)  # past the preamble check, into the parser
    row = read_file_row(tmp_path, "r.bin")
    assert row["readable"] or row["reason"]


# ---------------------------------------------------------------- RT Structure Set reader


@pytest.fixture(scope="module")
def valid_rtss(tmp_path_factory) -> bytes:
    import faults

    study = faults.write_mini_study(tmp_path_factory.mktemp("rtss"), "P2")
    return Path(study.rtss_path).read_bytes()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_rtss_reader_gives_rois_or_a_reason_for_any_mutation(tmp_path, valid_rtss, data):
    from metsprep.errors import CaseExcluded
    from metsprep.rtss import read_rtss

    mutated = bytearray(valid_rtss)
    start = data.draw(st.integers(132, len(mutated) - 1), label="mutate from")  # past preamble + DICM
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        mutated[data.draw(st.integers(start, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(start, len(mutated)), label="truncate at")
    path = tmp_path / "rtss.dcm"
    path.write_bytes(bytes(mutated[:cut]))
    try:
        rois = read_rtss(path)
    except CaseExcluded as excluded:
        assert excluded.reason
        return
    for roi in rois:
        for contour in roi.contours:
            assert contour.points_lps_mm.ndim == 2 and contour.points_lps_mm.shape[1] == 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_deid_audit_gives_findings_for_any_mutation(tmp_path, valid_dicom, data):
    from metsprep.deid import audit_file
    from metsprep.settings import DeidSettings

    mutated = bytearray(valid_dicom)
    for _ in range(data.draw(st.integers(1, 6), label="flips")):
        mutated[data.draw(st.integers(132, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    (tmp_path / "f.dcm").write_bytes(bytes(mutated))
    findings = audit_file(tmp_path, "f.dcm", DeidSettings())
    assert all(isinstance(f["finding"], str) and f["finding"] for f in findings)
