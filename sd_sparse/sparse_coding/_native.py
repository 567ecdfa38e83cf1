"""Builds and loads the fused CPU Batch-OMP kernel (`_omp_kernel.c`) on first use.

The shared library is compiled once per machine with the system C compiler and cached under
``$SD_SPARSE_CACHE`` (default ``~/.cache/sd_sparse``), keyed by the source, the flags, the compiler
and the CPU's instruction-set flags; later processes only `dlopen` it. Where no compiler works, or
``SD_SPARSE_NATIVE=0`` is set, `load_kernel()` returns None and `batch_omp` uses its PyTorch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("_omp_kernel.c")
_HEADERS = [Path(__file__).with_name(f"_omp_kernel_{part}.h") for part in ("impl", "simd", "undef")]
_FLAG_SETS = (
    ["-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared", "-pthread"],
    ["-O3", "-fno-math-errno", "-fPIC", "-shared", "-pthread"],
)
_lock = threading.Lock()
_kernel: ctypes.CDLL | None = None
_tried = False


def cache_dir() -> Path:
    root = os.environ.get("SD_SPARSE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sd_sparse"
    )
    return Path(root)


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def build(compiler: str, flag_sets=_FLAG_SETS, directory: Path | None = None) -> Path | None:
    """Compiles the kernel with the first flag set that works (cached by content); returns its path."""
    source = b"".join(path.read_bytes() for path in [_SOURCE, *_HEADERS])
    directory = Path(directory) if directory is not None else cache_dir()
    for flags in flag_sets:
        key = hashlib.sha256(
            b"\0".join(
                [
                    source,
                    " ".join(flags).encode(),
                    compiler.encode(),
                    _cpu_signature().encode(),
                    platform.machine().encode(),
                    sys.platform.encode(),
                ]
            )
        ).hexdigest()[:16]
        target = directory / f"batch_omp_{key}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [compiler, *flags, str(_SOURCE), "-o", tmp, "-lm"]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as err:
            os.unlink(tmp)
            logger.info("sd_sparse: building the Batch-OMP kernel failed (%s)", err)
            continue
        if result.returncode != 0:
            os.unlink(tmp)
            logger.info("sd_sparse: building the Batch-OMP kernel failed:\n%s", result.stderr[-2000:])
            continue
        os.replace(tmp, target)  # atomic: concurrent builders never see a half-written library
        return target
    return None


def load_library(path: Path) -> ctypes.CDLL | None:
    """Opens a built kernel and declares its two entry points."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        logger.info("sd_sparse: loading the Batch-OMP kernel failed (%s)", err)
        return None
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.batch_omp_f32.argtypes = [p, p, p, i64, c_int, c_int, c_int, ctypes.c_float, ctypes.c_float, p, p, c_int]
    lib.batch_omp_f64.argtypes = [p, p, p, i64, c_int, c_int, c_int, ctypes.c_double, ctypes.c_double, p, p, c_int]
    lib.batch_omp_f32.restype = lib.batch_omp_f64.restype = c_int
    return lib


def load_kernel() -> ctypes.CDLL | None:
    """The compiled kernel, building it if needed; None where that is disabled or impossible."""
    global _kernel, _tried
    if _tried:
        return _kernel
    with _lock:
        if _tried:
            return _kernel
        _tried = True
        if os.environ.get("SD_SPARSE_NATIVE", "1").lower() in ("0", "false", "no", "off"):
            return None
        compiler = _compiler()
        if compiler is None:
            logger.info("sd_sparse: no C compiler found; Batch-OMP runs on its PyTorch path.")
            return None
        path = build(compiler)
        _kernel = load_library(path) if path is not None else None
        return _kernel
