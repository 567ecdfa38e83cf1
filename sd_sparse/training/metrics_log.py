"""The trainer's file log of scalars: one JSON line per step in `<output_dir>/<logging_dir>/metrics.jsonl`, written
whatever `--report_to` says; `sd-sparse figures` reads it (`sd_sparse.figures.curves.read_metrics`)."""

from __future__ import annotations

import json
import os
from typing import Dict

METRICS_FILE = "metrics.jsonl"


def metrics_log_path(args) -> str:
    """`<--output_dir>/<--logging_dir>/metrics.jsonl`."""
    return os.path.join(args.output_dir, args.logging_dir, METRICS_FILE)


def append_metrics_line(path: str, step: int, logs: Dict[str, float]) -> None:
    """Appends one JSON line `{"step": step, **logs}` to `path` (`<output_dir>/<logging_dir>/metrics.jsonl`).

    Written whatever `--report_to` says; a resumed run appends steps it had logged before the checkpoint
    again, and readers keep the latest timeline (`sd_sparse.figures.curves.read_metrics`)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, **logs}, default=float) + "\n")
