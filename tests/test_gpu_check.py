"""The prepared GPU run (`benchmarks/gpu_check.sh`, `gpu_wheels.sh`) and its launch-shape sweep, checked on the CPU."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def load_sweep():
    spec = importlib.util.spec_from_file_location("triton_launch_sweep", BENCHMARKS / "triton_launch_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scripts_parse_and_every_wheel_is_pinned_by_the_lock():
    bash = shutil.which("bash")
    for script in ("gpu_check.sh", "gpu_wheels.sh"):
        assert subprocess.run([bash, "-n", str(BENCHMARKS / script)]).returncode == 0, script
    names = re.search(r"^NAMES=\(([^)]*)\)", (BENCHMARKS / "gpu_wheels.sh").read_text(), re.M).group(1).split()
    locked = {
        line.split("==")[0].lower()
        for line in (ROOT / "requirements/lock.txt").read_text().splitlines()
        if "==" in line
    }
    assert "diffusers" in names and not set(names) - locked


def test_the_check_runs_every_benchmark_the_issue_names_with_existing_options():
    script = (BENCHMARKS / "gpu_check.sh").read_text()
    for command in (
        "benchmarks/sparse_coding.py --device cuda --quick",
        "benchmarks/pipeline_overhead.py --device cuda --quick",
        "benchmarks/training_step.py --device cuda",
        "benchmarks/triton_launch_sweep.py --device cuda",
        "-k cuda",
    ):
        assert command in script, command


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_the_sweep_times_every_shape_and_checks_its_indices(monkeypatch):
    sweep = load_sweep()
    from sd_sparse.sparse_coding import _triton_kernel

    if torch.cuda.is_available() or not _triton_kernel.INTERPRETED:
        pytest.skip("runs the kernel under Triton's CPU interpreter")
    rows = sweep.sweep_setting("tiny", 6, 16, 4, 2, "cpu", repeats=1, block_ns=(2, 32), warps=(4,))
    assert [(r["BLOCK_N"], r["num_warps"]) for r in rows] == [(2, 4), (32, 4)]
    assert [r["default"] for r in rows] == [False, True]  # 16 atoms: 32 signals a block (no GPU: no SM count)
    assert all(r["same_indices_as_default"] == 1.0 and r["median_ms"] > 0 and not r["error"] for r in rows)
    table = sweep.markdown(rows, "header")
    assert "| tiny N=6 K=16 L=4 S=2 | 32 | 4 |" in table and "- tiny: BLOCK_N=" in table


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_a_launch_shape_reaches_the_kernel():
    from sd_sparse.sparse_coding import _triton_kernel

    if torch.cuda.is_available() or not _triton_kernel.INTERPRETED:
        pytest.skip("runs the kernel under Triton's CPU interpreter")
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    atoms = torch.nn.functional.normalize(torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    with pytest.raises(Exception, match="power of 2"):  # BLOCK_N=3 only fails if it reached tl.arange
        _triton_kernel.batch_omp_triton(x, atoms, 2, None, 1e-7, {"BLOCK_N": 3})
