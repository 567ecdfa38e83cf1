"""The Triton Batch-OMP kernel's speed over its launch shapes (signals per block × warps), on a GPU.

`_launch_shape` picks `BLOCK_N` (signals per program) and `num_warps` from register counts measured
without a GPU (`triton_kernel_resources.py`). This measures the alternatives, for each setting, against
the GPU VQ assignment of the same signals in the same run, and checks that every shape gives the
default shape's indices (a shape that changes codes is not a candidate: codes must not depend on it).
The defaults are retuned from this table, never by autotuning at run time.

    python benchmarks/triton_launch_sweep.py --device cuda                # on a GPU
    TRITON_INTERPRET=1 python benchmarks/triton_launch_sweep.py --device cpu --rehearse   # CPU check of the script

Writes `triton_launch_sweep[--tag].{json,md}` to --output_dir after each setting (a run cut short keeps
what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone

import torch

from sd_sparse.bottlenecks.vector_quantizer import nearest_codes
from sd_sparse.cli import SnakeCaseArgumentParser
from sd_sparse.sparse_coding import normalize_atoms

# name: (N signals, K atoms, L dimension, S sparsity), as in triton_kernel_resources.py
SETTINGS = {
    "paper": (65536, 512, 16, 5),
    "sd_4x4_patch": (16384, 512, 64, 8),
    "sd_latent_256px": (256, 512, 64, 8),
}
BLOCK_NS = (2, 4, 8, 16, 32)
NUM_WARPS = (2, 4, 8)


def median_ms(fn, device: str, repeats: int) -> float:
    """Median wall time of `fn()` in ms (CUDA events on a GPU), after two warm-up calls (compilation)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def sweep_setting(name, n, k, l, s, device, repeats, block_ns, warps):
    from sd_sparse.sparse_coding import _triton_kernel

    g = torch.Generator().manual_seed(0)
    dictionary = torch.randn(k, l, generator=g)
    atoms = normalize_atoms(dictionary)[0].to(device)
    x = torch.randn(n, l, generator=g).to(device)
    eps = torch.finfo(torch.float32).eps
    default = _triton_kernel._launch_shape(k, s, n, _triton_kernel._num_sms(x.device))
    reference = _triton_kernel.batch_omp_triton(x, atoms, s, None, eps)[0]
    vq_ms = median_ms(lambda: nearest_codes(x, atoms), device, repeats)
    problem = {"setting": name, "N": n, "K": k, "L": l, "S": s}
    rows = []
    for block_n in block_ns:
        for num_warps in warps:
            shape = {"BLOCK_N": block_n, "num_warps": num_warps}
            try:
                ms = median_ms(
                    lambda shape=shape: _triton_kernel.batch_omp_triton(x, atoms, s, None, eps, shape), device, repeats
                )
                indices = _triton_kernel.batch_omp_triton(x, atoms, s, None, eps, shape)[0]
                same = float((indices == reference).all(1).double().mean())
                error = ""
            except Exception as exc:  # a shape the compiler refuses (e.g. out of registers) is a row, not a stop
                ms, same, error = float("nan"), float("nan"), f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            rows.append(
                {
                    **problem,
                    "BLOCK_N": block_n,
                    "num_warps": num_warps,
                    "default": block_n == default["BLOCK_N"] and num_warps == default["num_warps"],
                    "median_ms": ms,
                    "vq_ms": vq_ms,
                    "ratio_to_vq": ms / vq_ms,
                    "same_indices_as_default": same,
                    "error": error,
                }
            )
            print(
                f"{name} BLOCK_N={block_n} num_warps={num_warps}: {ms:.3f} ms = {ms / vq_ms:.2f}x VQ "
                f"same={same:.6f} {error}",
                flush=True,
            )
    return rows


def markdown(rows, header):
    lines = [
        header,
        "",
        "| setting | BLOCK_N | num_warps | median ms | × VQ assignment | same indices as default | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        note = "default" if r["default"] else ""
        if r["error"]:
            note = r["error"].replace("|", "/")
        lines.append(
            f"| {r['setting']} N={r['N']} K={r['K']} L={r['L']} S={r['S']} | {r['BLOCK_N']} | {r['num_warps']} | "
            f"{r['median_ms']:.3f} | {r['ratio_to_vq']:.2f} | {r['same_indices_as_default']:.6f} | {note} |"
        )
    best = {}
    for r in rows:
        if r["same_indices_as_default"] == 1.0 and (
            r["setting"] not in best or r["median_ms"] < best[r["setting"]]["median_ms"]
        ):
            best[r["setting"]] = r
    lines += ["", "Fastest shape with the default's indices, per setting:", ""]
    lines += [
        f"- {name}: BLOCK_N={r['BLOCK_N']}, num_warps={r['num_warps']}: {r['median_ms']:.3f} ms, "
        f"{r['ratio_to_vq']:.2f}x the VQ assignment"
        for name, r in best.items()
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per shape (median)")
    parser.add_argument(
        "--rehearse", action="store_true", help="32 signals, two shapes: checks the script, not the GPU"
    )
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("--device cpu runs the kernel under Triton's interpreter: set TRITON_INTERPRET=1")

    block_ns, warps, repeats = (BLOCK_NS, NUM_WARPS, args.repeats) if not args.rehearse else ((2, 4), (4,), 1)
    machine = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (Triton interpreter)"
    import triton

    timer = " (CUDA events)" if args.device == "cuda" else ""
    header = (
        f"Triton Batch-OMP launch shapes on {machine}, torch {torch.__version__}, triton {triton.__version__}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}; median of {repeats} calls{timer}, VQ = nearest-code "
        "assignment of the same signals to the same atoms."
    )
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.join(args.output_dir, f"triton_launch_sweep{args.tag}")
    rows = []
    for name in args.settings:
        n, k, l, s = SETTINGS[name]
        if args.rehearse:
            n = min(n, 32)
        rows += sweep_setting(name, n, k, l, s, args.device, repeats, block_ns, warps)
        with open(stem + ".json", "w") as f:
            json.dump({"machine": machine, "header": header, "rows": rows}, f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(markdown(rows, header))
    print(markdown(rows, header))


if __name__ == "__main__":
    main()
