"""Rate–distortion fronts, Bjøntegaard deltas and the worst gap on synthetic curves with known answers."""

import math

import pytest

from sd_sparse.errors import UserError
from sd_sparse.evaluation import bjontegaard_deltas, clip_front, gaps, pareto_front, worst_gap

pytest.importorskip("bjontegaard")

# a concave curve: PSNR = 20 + 6 log2(rate), rate 4 .. 128 bits per position
CURVE = [(float(r), 20 + 6 * math.log2(r)) for r in (4, 8, 16, 32, 64, 128)]


def test_pareto_front_keeps_only_undominated_points_sorted_by_rate():
    points = [(8, 30.0), (4, 25.0), (8, 28.0), (6, 24.0), (16, 29.0), (32, 35.0), (32, 35.0), (2, 10.0)]
    assert pareto_front(points) == [(2, 10.0), (4, 25.0), (8, 30.0), (32, 35.0)]
    # the upper envelope of two families is the front of their union
    assert pareto_front([(4, 20.0), (16, 30.0)] + [(8, 27.0), (16, 29.0), (64, 40.0)]) == [
        (4, 20.0),
        (8, 27.0),
        (16, 30.0),
        (64, 40.0),
    ]
    assert pareto_front([]) == []
    with pytest.raises(UserError, match="rates must be finite and > 0"):
        pareto_front([(0.0, 30.0)])


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25, 2.0])
def test_a_curve_shifted_by_a_constant_rate_factor_has_that_bd_rate(factor):
    test = [(r * factor, p) for r, p in CURVE]
    deltas = bjontegaard_deltas(CURVE, test)
    assert deltas["bd_rate"] == pytest.approx(100 * (factor - 1), abs=1e-6)
    # the same curve reads, at a fixed rate, 6 log2(1 / factor) dB better or worse
    assert deltas["bd_psnr"] == pytest.approx(-6 * math.log2(factor), abs=1e-6)
    assert deltas["psnr_overlap"] == (CURVE[0][1], CURVE[-1][1])


def test_a_curve_shifted_in_psnr_has_that_bd_psnr():
    test = [(r, p + 1.5) for r, p in CURVE]
    deltas = bjontegaard_deltas(CURVE, test)
    assert deltas["bd_psnr"] == pytest.approx(1.5, abs=1e-9)
    # 1.5 dB is a quarter of an octave of rate on this curve
    assert deltas["bd_rate"] == pytest.approx(100 * (2 ** (-1.5 / 6) - 1), abs=1e-6)
    assert deltas["rate_overlap"] == (4.0, 128.0)


def test_the_rate_window_limits_the_comparison():
    # the test curve is 20% cheaper below 32 bits and 100% dearer above: the window picks the low part
    test = [(r * (0.8 if r <= 32 else 2.0), p) for r, p in CURVE]
    low = bjontegaard_deltas(CURVE, test, rate_window=(4, 25.6))
    assert low["bd_rate"] == pytest.approx(-20, abs=1e-6)
    assert bjontegaard_deltas(CURVE, test)["bd_rate"] > -20


def test_too_few_points_or_no_overlap_is_not_available():
    one = bjontegaard_deltas(CURVE, [(8.0, 30.0)])
    assert one["bd_rate"] is None and one["bd_psnr"] is None and one["test_points"] == 1
    # disjoint in rate and in PSNR
    far = [(1000.0, 90.0), (2000.0, 95.0)]
    apart = bjontegaard_deltas(CURVE, far)
    assert apart["bd_rate"] is None and apart["bd_psnr"] is None
    # nothing of the test front inside the window
    assert bjontegaard_deltas(CURVE, far, rate_window=(8, 128))["test_points"] == 0
    assert worst_gap(CURVE, far) is None and worst_gap(CURVE, []) is None


def test_clip_front_adds_the_crossings_in_log_rate():
    clipped = clip_front(CURVE, 6, 100)
    assert [r for r, _ in clipped] == [6, 8, 16, 32, 64, 100]
    # the curve is linear in log-rate, so the crossings lie on it
    assert clipped[0][1] == pytest.approx(20 + 6 * math.log2(6)) and clipped[-1][1] == pytest.approx(
        20 + 6 * math.log2(100)
    )
    assert clip_front(CURVE, 200, 300) == [] and clip_front(CURVE, 8, 16) == [CURVE[1], CURVE[2]]
    with pytest.raises(UserError, match="0 < low < high"):
        clip_front(CURVE, 16, 8)


def test_worst_gap_is_the_largest_lead_of_the_anchor_at_its_measured_rates():
    # the test front is the curve itself (linear in log-rate: PCHIP reproduces it between its points)
    anchor = [(6.0, 20 + 6 * math.log2(6) + 0.5), (24.0, 20 + 6 * math.log2(24) + 2.0), (200.0, 99.0)]
    gap = worst_gap(anchor, CURVE)
    # 200 bits is outside the test front's range: not compared
    assert gap["rate"] == 24.0 and gap["gap_db"] == pytest.approx(2.0, abs=1e-9)
    assert gap["test_psnr"] == pytest.approx(20 + 6 * math.log2(24))
    assert worst_gap(anchor, CURVE, rate_window=(4, 16))["gap_db"] == pytest.approx(0.5, abs=1e-9)
    # a test front ahead everywhere: the worst case is a negative gap
    behind = [(r, p - 1.0) for r, p in CURVE]
    assert worst_gap(behind, CURVE)["gap_db"] == pytest.approx(-1.0)


def test_gaps_lists_the_anchor_lead_at_each_of_its_rates_in_range():
    anchor = [(6.0, 20 + 6 * math.log2(6) + 0.5), (24.0, 20 + 6 * math.log2(24) - 1.0), (200.0, 99.0)]
    every = gaps(anchor, CURVE)
    assert [g["rate"] for g in every] == [6.0, 24.0]  # 200 bits lies beyond the test front
    assert [g["gap_db"] for g in every] == pytest.approx([0.5, -1.0], abs=1e-9)
    assert worst_gap(anchor, CURVE) == every[0]
    assert gaps(anchor, CURVE, rate_window=(10, 100)) == [every[1]] and gaps(anchor, []) == []
