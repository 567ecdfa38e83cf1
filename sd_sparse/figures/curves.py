"""Training curves from the trainer's `logs/metrics.jsonl`: raw (faint) and Savitzky–Golay smoothed, a panel per metric."""

from __future__ import annotations

import json
import math
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError

METRICS_FILE = "metrics.jsonl"  # written by `sd_sparse.training.trainer.append_metrics_line`

Curves = Dict[str, Tuple[np.ndarray, np.ndarray]]


def find_metrics_file(path: str) -> str:
    """`path` itself, or the `metrics.jsonl` in it or in its `logs/` (a trainer's output folder); `ValueError` when none."""
    for candidate in (path, os.path.join(path, METRICS_FILE), os.path.join(path, "logs", METRICS_FILE)):
        if os.path.isfile(candidate):
            return candidate
    raise UserError(f"no training log in {path}: expected {METRICS_FILE} there or in {os.path.join(path, 'logs')}.")


def read_metrics(path: str) -> Curves:
    """The scalars the trainer logged: `{name: (steps [n] int64, values [n] float64)}`, in first-logged order.

    `path` is a `metrics.jsonl` (one `{"step": s, name: value, ...}` per line) or a folder holding one (see
    `find_metrics_file`). A step at or below one already read starts a new timeline from there (a resumed or
    restarted run): the lines it replaces are dropped. Non-numeric and non-finite values are left out.
    """
    path = find_metrics_file(path)
    records = []  # (step, {name: value}) of the latest timeline
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                step = int(record.pop("step"))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise UserError(
                    f"{path} line {number} is not a JSON object with a `step`: {line.strip()[:80]}"
                ) from None
            while records and records[-1][0] >= step:
                records.pop()
            records.append((step, record))
    curves: Dict[str, Tuple[list, list]] = {}
    for step, record in records:
        for name, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                steps, values = curves.setdefault(name, ([], []))
                steps.append(step)
                values.append(float(value))
    if not curves:
        raise UserError(f"{path} holds no logged scalars.")
    return {name: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for name, (s, v) in curves.items()}


def savgol_window(length: int, window: Optional[int] = None, polyorder: int = 2) -> Optional[int]:
    """The odd Savitzky–Golay window for `length` points: `window` (default about a tenth of them) kept
    within [polyorder + 1, length]; None when too few points to smooth."""
    low = polyorder + 2 if polyorder % 2 else polyorder + 1  # the smallest odd window > polyorder
    high = length if length % 2 else length - 1
    if high < low:
        return None
    wanted = length // 10 if window is None else int(window)
    wanted = wanted if wanted % 2 else wanted + 1
    return min(max(wanted, low), high)


def smooth(values: np.ndarray, window: Optional[int] = None, polyorder: int = 2) -> np.ndarray:
    """`scipy.signal.savgol_filter(values, savgol_window(len(values), window, polyorder), polyorder)`; a copy of
    `values` when there are too few to smooth."""
    values = np.asarray(values, dtype=np.float64)
    size = savgol_window(len(values), window, polyorder)
    if size is None or np.ptp(values) == 0:  # nothing to smooth (a constant stays exactly constant)
        return values.copy()
    try:
        from scipy.signal import savgol_filter
    except ImportError as err:
        raise ImportError("smoothing the curves needs scipy: pip install 'sd_sparse[plots]'") from err
    return savgol_filter(values, size, polyorder)


def curves_figure(
    curves: Mapping[str, Tuple[np.ndarray, np.ndarray]],
    names: Optional[Sequence[str]] = None,
    window: Optional[int] = None,
    polyorder: int = 2,
    columns: int = 3,
    title: Optional[str] = None,
):
    """A matplotlib figure, one panel per metric of `names` (default all of `curves`): the logged values
    (faint) and their `smooth`ing, against the step."""
    from ._matplotlib import pyplot

    names = list(curves) if names is None else list(names)
    missing = [n for n in names if n not in curves]
    if missing:
        raise UserError(f"no logged values for {', '.join(missing)}; logged: {', '.join(curves)}.")
    if not names:
        raise UserError("no metrics to plot.")
    plt = pyplot()
    columns = max(1, min(columns, len(names)))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        steps, values = curves[name]
        few = len(values) <= 20
        axis.plot(steps, values, color="C0", alpha=0.3, linewidth=1, marker="o" if few else None, label="logged")
        axis.plot(steps, smooth(values, window, polyorder), color="C0", linewidth=1.8, label="Savitzky–Golay")
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.ticklabel_format(axis="y", useOffset=False)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names) :]:
        axis.remove()
    axes.flat[0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_curves(
    log: str,
    path: str,
    names: Optional[Sequence[str]] = None,
    window: Optional[int] = None,
    polyorder: int = 2,
) -> str:
    """Reads `log` (`read_metrics`) and writes `curves_figure` to the PNG `path`; returns `path`."""
    from ._matplotlib import save_figure

    source = find_metrics_file(log)
    return save_figure(curves_figure(read_metrics(source), names, window, polyorder, title=source), path)
