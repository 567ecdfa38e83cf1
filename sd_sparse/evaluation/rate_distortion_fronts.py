"""Rate–distortion fronts: the Pareto front of (rate, PSNR) points, a front clipped to a rate window, the
Bjøntegaard deltas (BD-rate, BD-PSNR; the `bjontegaard` package, PCHIP) of one front against another, and
the largest PSNR gap between two fronts at the anchor's measured rates.

A front is a list of `(rate, psnr)` pairs sorted by rate with strictly increasing PSNR: each point needs
more bits than the previous one and buys a better PSNR. Rates are positive (bits per latent position in
`benchmarks/rate_distortion.py`); all interpolation is in log-rate.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..extras import require

Front = List[Tuple[float, float]]


def _checked(points: Iterable[Sequence[float]], name: str) -> Front:
    pairs = []
    for point in points:
        if len(point) != 2:
            raise UserError(f"{name}: expected (rate, psnr) pairs, got {tuple(point)!r}.")
        rate, psnr = float(point[0]), float(point[1])
        if not (math.isfinite(rate) and rate > 0 and math.isfinite(psnr)):
            raise UserError(f"{name}: rates must be finite and > 0 and PSNRs finite, got ({rate}, {psnr}).")
        pairs.append((rate, psnr))
    return pairs


def pareto_front(points: Iterable[Sequence[float]]) -> Front:
    """The points no other point beats (none has a lower or equal rate and a higher or equal PSNR), sorted by
    rate: strictly increasing in rate and in PSNR. The front of several families' points together is their
    upper envelope."""
    front: Front = []
    for rate, psnr in sorted(_checked(points, "points"), key=lambda p: (p[0], -p[1])):
        if not front or psnr > front[-1][1]:  # within a rate the best PSNR comes first
            front.append((rate, psnr))
    return front


def _log_interp(front: Front, rate: float) -> float:
    """PSNR on the segment of `front` around `rate`, linear in log-rate (`rate` within the front's range)."""
    for (r0, p0), (r1, p1) in zip(front, front[1:]):
        if r0 <= rate <= r1:
            t = (math.log(rate) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return p0 + t * (p1 - p0)
    return front[0][1]  # a single point at exactly `rate`


def clip_front(front: Front, low: float, high: float) -> Front:
    """`front` restricted to `low <= rate <= high`; where it crosses `low` or `high` the crossing is added as
    a point (PSNR linear in log-rate between its neighbours). Empty when it has no point in the window."""
    if not 0 < low < high:
        raise UserError(f"rate window: expected 0 < low < high, got ({low}, {high}).")
    front = _checked(front, "front")
    if not front or front[-1][0] < low or front[0][0] > high:
        return []
    clipped = [(r, p) for r, p in front if low <= r <= high]
    if front[0][0] < low and (not clipped or clipped[0][0] > low):
        clipped.insert(0, (low, _log_interp(front, low)))
    if front[-1][0] > high and clipped[-1][0] < high:
        clipped.append((high, _log_interp(front, high)))
    return clipped


def bjontegaard_deltas(anchor: Front, test: Front, rate_window: Optional[Tuple[float, float]] = None) -> Dict:
    """BD-rate (%, negative: `test` needs fewer bits for the same PSNR) and BD-PSNR (dB, positive: `test` is
    better at the same rate) of the front `test` against the front `anchor`, with PCHIP interpolation
    (`bjontegaard.bd_rate` / `bd_psnr`, `method="pchip"`) over their overlap: in PSNR for BD-rate, in
    log-rate for BD-PSNR. Both fronts are first clipped to `rate_window` (low, high) when given.

    Returns `{"bd_rate": float | None, "bd_psnr": float | None, "psnr_overlap": (lo, hi) | None,
    "rate_overlap": (lo, hi) | None, "anchor_points": n, "test_points": n}`; a value is None (n/a) when
    a front has fewer than 2 points or the fronts do not overlap on that axis."""
    if rate_window is not None:
        anchor, test = clip_front(anchor, *rate_window), clip_front(test, *rate_window)
    anchor, test = _checked(anchor, "anchor"), _checked(test, "test")
    result = {
        "bd_rate": None,
        "bd_psnr": None,
        "psnr_overlap": None,
        "rate_overlap": None,
        "anchor_points": len(anchor),
        "test_points": len(test),
    }
    if len(anchor) < 2 or len(test) < 2:
        return result
    bjontegaard = require("bjontegaard", "BD-rate and BD-PSNR")
    rate_a, psnr_a = [r for r, _ in anchor], [p for _, p in anchor]
    rate_t, psnr_t = [r for r, _ in test], [p for _, p in test]
    kwargs = dict(method="pchip", require_matching_points=False, min_overlap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns about small overlaps; the overlap is reported instead
        psnr_lo, psnr_hi = max(psnr_a[0], psnr_t[0]), min(psnr_a[-1], psnr_t[-1])
        if psnr_hi > psnr_lo:
            result["bd_rate"] = float(bjontegaard.bd_rate(rate_a, psnr_a, rate_t, psnr_t, **kwargs))
            result["psnr_overlap"] = (psnr_lo, psnr_hi)
        rate_lo, rate_hi = max(rate_a[0], rate_t[0]), min(rate_a[-1], rate_t[-1])
        if rate_hi > rate_lo:
            result["bd_psnr"] = float(bjontegaard.bd_psnr(rate_a, psnr_a, rate_t, psnr_t, **kwargs))
            result["rate_overlap"] = (rate_lo, rate_hi)
    return result


def gaps(anchor: Front, test: Front, rate_window: Optional[Tuple[float, float]] = None) -> List[Dict]:
    """How far `anchor` is ahead of `test` at each measured rate of `anchor` inside the rate range of `test`
    (and inside `rate_window` when given): `anchor`'s PSNR minus `test`'s PCHIP interpolation in log-rate.
    One `{"gap_db", "rate", "anchor_psnr", "test_psnr"}` per such rate, by rate (a negative gap: `test` is
    ahead there); empty when no anchor rate falls in that range."""
    anchor, test = _checked(anchor, "anchor"), _checked(test, "test")
    if not anchor or not test:
        return []
    low, high = test[0][0], test[-1][0]
    if rate_window is not None:
        low, high = max(low, rate_window[0]), min(high, rate_window[1])
    rates = [(r, p) for r, p in anchor if low <= r <= high]
    if not rates:
        return []
    if len(test) == 1:
        curve = lambda x: test[0][1]  # noqa: E731 - a single point at exactly the one rate in range
    else:
        from scipy.interpolate import PchipInterpolator  # scipy: a core dependency (scikit-image's)

        pchip = PchipInterpolator([math.log(r) for r, _ in test], [p for _, p in test])
        curve = lambda x: float(pchip(math.log(x)))  # noqa: E731
    return [{"gap_db": p - curve(r), "rate": r, "anchor_psnr": p, "test_psnr": curve(r)} for r, p in rates]


def worst_gap(anchor: Front, test: Front, rate_window: Optional[Tuple[float, float]] = None) -> Optional[Dict]:
    """The largest margin by which `anchor` beats `test` among `gaps(anchor, test, rate_window)` (a negative
    gap: `test` is ahead at every such rate), or None when no anchor rate falls in that range."""
    every = gaps(anchor, test, rate_window)
    return max(every, key=lambda g: g["gap_db"]) if every else None
