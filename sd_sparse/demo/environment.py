"""Where and how the demo runs: how many threads torch gets (`choose_num_threads`), the clock its lines carry,
the seconds since the process started, and diffusers'/transformers' logging kept quiet meanwhile."""

from __future__ import annotations

import contextlib
import os
import time

import torch

from ..errors import UserError


def physical_cores() -> int:
    """Physical CPU cores (distinct `(physical id, core id)` pairs of /proc/cpuinfo; `os.cpu_count()` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            cores, physical = set(), "0"
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    cores.add((physical, value.strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def choose_num_threads(num_threads: int | None = None) -> tuple:
    """`(threads, reason)`: how many threads torch should use for the demo, and why.

    `num_threads` wins; then `OMP_NUM_THREADS` (torch already reads it); otherwise the cores this process
    may use (physical cores, at most `os.sched_getaffinity`) less those other processes keep busy (the
    1-minute load average), at least 1. Measured on 2 shared cores with other jobs running: 2 threads made
    the VAE encode up to 3x, the bottleneck fitting 3-20x and the whole demo 2.6x slower than 1 thread
    (OpenMP threads wait on each other whenever one is descheduled)."""
    if num_threads is not None:
        if num_threads < 1:
            raise UserError(f"`num_threads` must be >= 1, got {num_threads}.")
        return num_threads, "--num_threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    cores = physical_cores()
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores, f"{cores} cores"
    threads = max(1, min(cores, int(cores - load + 0.5)))
    return threads, f"{cores} cores, load average {load:.1f}; set OMP_NUM_THREADS to choose"


def process_age() -> float | None:
    """Seconds since this process started (Linux; None elsewhere): the demo's time including Python's imports."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - started / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@contextlib.contextmanager
def quiet_libraries():
    """diffusers' and transformers' logging at `error` and their progress bars off for the block (restored
    after): no "Loading pipeline components" bars or backend notices between the demo's own lines."""
    from diffusers.utils import logging as diffusers_logging

    saved = [(diffusers_logging, diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled())]
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # pragma: no cover - transformers is a core dependency
        pass
    else:
        saved.append(
            (transformers_logging, transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled())
        )
    for module, _, _ in saved:
        module.set_verbosity_error()
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, verbosity, bars in saved:
            module.set_verbosity(verbosity)
            if bars:
                module.enable_progress_bar()


class DemoClock:
    """Prints the demo's lines with the seconds since it started, so a slow step shows where it is."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():5.1f} s] {message}", flush=True)
