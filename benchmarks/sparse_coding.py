"""Speed of sparse coding: sd_sparse's `batch_omp` against scikit-learn's OMP, a VQ assignment and X·Dᵀ.

All methods run in ONE process on the same random float32 Gaussian data (unit-norm atoms, fixed
seed), with the same number of threads for PyTorch and BLAS, so the ratios are comparable:

    batch_omp native    fused C kernel (CPU)
    batch_omp triton    fused Triton kernel (CUDA; rows appear when triton is installed)
    batch_omp torch     vectorised PyTorch path (any device; CUDA graphs on CUDA)
    sklearn omp         sklearn.linear_model.orthogonal_mp(precompute=False), its faster path here
    sklearn omp_gram    orthogonal_mp_gram (time includes forming Gram and Xy)
    vq assignment       chunked nearest-codebook-vector search (sd_sparse's VectorQuantizer)
    X @ D.T             the plain correlation product

Correctness in the same run: supports identical to orthogonal_mp_gram's (as sets), the largest
coefficient difference, and (the GPU target of issue 12) the fraction of signals whose index rows equal
the native CPU kernel's on the same float32 data. Writes `sparse_coding.json` and `sparse_coding.md` to --output_dir.

    python benchmarks/sparse_coding.py [--quick] [--threads 2] [--device cpu|cuda]
"""

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone

_threads = "2"
for i, arg in enumerate(sys.argv):  # BLAS reads these once, at import: set them first
    if arg == "--threads" and i + 1 < len(sys.argv):
        _threads = sys.argv[i + 1]
    elif arg.startswith("--threads="):
        _threads = arg.split("=", 1)[1]
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = _threads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import orthogonal_mp, orthogonal_mp_gram  # noqa: E402

from sd_sparse import batch_omp  # noqa: E402
from sd_sparse.bottlenecks.vector_quantizer import nearest_codes  # noqa: E402
from sd_sparse.cli import SnakeCaseArgumentParser  # noqa: E402
from sd_sparse.sparse_coding import _native  # noqa: E402

SETTINGS = [
    ("paper (LASERS)", 65536, 512, 16, 5),
    ("SD 4x4 patch", 16384, 512, 64, 8),
    ("tiny", 65536, 16, 4, 2),
]


def timed(fn, repeats, sync):
    fn()  # warm-up (also builds the native kernel once)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def sklearn_dense(coef, k):
    return np.asarray(coef).reshape(k, -1).T


def agreement(codes, reference):
    """(fraction of signals whose support equals sklearn's, largest coefficient error relative to the
    signal's largest coefficient, over those signals)."""
    dense = codes.to_dense().double().cpu().numpy()[: reference.shape[0]]
    same = ((dense != 0) == (reference != 0)).all(1)
    scale = np.abs(reference[same]).max(1).clip(min=1e-30)
    rel = (np.abs(dense[same] - reference[same]).max(1) / scale).max() if same.any() else float("nan")
    return float(same.mean()), float(rel)


def gpu_backends():
    """The CUDA backends to time: Triton first when it imports, then the PyTorch path."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return ["torch"]
    return ["triton", "torch"]


def run_setting(name, n, k, l, s, device, repeats, sklearn_subset):
    g = torch.Generator().manual_seed(0)
    dictionary = torch.randn(k, l, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    signals = torch.randn(n, l, generator=g)
    X, D = signals.numpy().astype(np.float64), dictionary.numpy().astype(np.float64)
    m = n if sklearn_subset is None else min(n, sklearn_subset)
    scale = n / m
    rows = []

    def add(method, seconds, note="", agree=None, same_as_cpu=None):
        rows.append(
            {
                "setting": name,
                "N": n,
                "K": k,
                "L": l,
                "S": s,
                "method": method,
                "median_ms": seconds * 1e3,
                "note": note,
                "agreement": agree,
                "same_as_cpu_kernel": same_as_cpu,
            }
        )

    def cpu_sync():
        pass

    start = time.perf_counter()
    coef = orthogonal_mp(D.T, X[:m].T, n_nonzero_coefs=s, precompute=False)
    add("sklearn orthogonal_mp", (time.perf_counter() - start) * scale, "extrapolated" if m < n else "1 run")
    start = time.perf_counter()
    coef_gram = orthogonal_mp_gram(D @ D.T, D @ X[:m].T, n_nonzero_coefs=s)
    add("sklearn orthogonal_mp_gram", (time.perf_counter() - start) * scale, "extrapolated" if m < n else "1 run")
    reference = sklearn_dense(coef_gram, k)
    del coef

    sync = torch.cuda.synchronize if device == "cuda" else cpu_sync
    x, d = signals.to(device), dictionary.to(device)
    cpu_kernel = batch_omp(signals, dictionary, s).indices  # native where it builds
    backends = gpu_backends() if device == "cuda" else (["native"] if _native.load_kernel() else []) + ["torch"]
    for backend in backends:
        seconds, codes = timed(lambda b=backend: batch_omp(x, d, s, backend=b), repeats, sync)
        same = float((codes.indices.cpu() == cpu_kernel).all(1).double().mean())
        add(f"batch_omp {backend} ({device})", seconds, agree=agreement(codes, reference), same_as_cpu=same)
    seconds, _ = timed(lambda: nearest_codes(x, d), repeats, sync)
    add(f"vq assignment ({device})", seconds)
    seconds, _ = timed(lambda: x @ d.t(), repeats, sync)
    add(f"X @ D.T ({device})", seconds)

    base = next(r for r in rows if r["method"] == "sklearn orthogonal_mp")["median_ms"]
    vq = next(r for r in rows if r["method"].startswith("vq"))["median_ms"]
    for r in rows:
        r["speedup_vs_sklearn_omp"] = base / r["median_ms"]
        r["ratio_to_vq"] = r["median_ms"] / vq
    return rows


def markdown(rows, header):
    lines = [
        header,
        "",
        "| setting | method | median ms | × faster than sklearn omp | × VQ assignment | identical supports vs sklearn "
        "| max rel. coef error | same indices as CPU kernel |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        agree = r["agreement"]
        same, diff = (f"{agree[0]:.6f}", f"{agree[1]:.1e}") if agree else ("", "")
        cpu = "" if r.get("same_as_cpu_kernel") is None else f"{r['same_as_cpu_kernel']:.6f}"
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(
            f"| {r['setting']} N={r['N']} K={r['K']} L={r['L']} S={r['S']} | {r['method']}{note} | "
            f"{r['median_ms']:.2f} | {r['speedup_vs_sklearn_omp']:.1f} | {r['ratio_to_vq']:.2f} | {same} | {diff} | {cpu} |"
        )
    return "\n".join(lines)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def main():
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="sklearn on 4096 signals, extrapolated linearly")
    parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    torch.set_num_threads(args.threads)  # BLAS threads were fixed by the environment variables above

    rows = []
    for setting in SETTINGS:
        rows += run_setting(*setting, args.device, args.repeats, 4096 if args.quick else None)
        print(f"done: {setting[0]}", flush=True)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_model()
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": args.threads,
        "device": args.device,
        "device_name": device_name,
        "cpu": cpu_model(),
    }
    header = (
        f"Sparse coding, {meta['date']}: torch {meta['torch']}, {args.threads} threads, "
        f"{args.device} ({device_name}); medians of {args.repeats} runs, sklearn once."
    )
    table = markdown(rows, header)
    os.makedirs(args.output_dir, exist_ok=True)
    suffix = "" if args.device == "cpu" else f"_{args.device}"
    with open(os.path.join(args.output_dir, f"sparse_coding{suffix}.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(args.output_dir, f"sparse_coding{suffix}.md"), "w") as f:
        f.write(table + "\n")
    print(table)

    paper = [r for r in rows if r["setting"] == SETTINGS[0][0]]
    best = min((r for r in paper if r["method"].startswith("batch_omp")), key=lambda r: r["median_ms"])
    print(
        f"TARGETS paper setting: {best['method']} is {best['speedup_vs_sklearn_omp']:.0f}x faster than sklearn "
        f"orthogonal_mp (target >= 100), {best['ratio_to_vq']:.2f}x the VQ assignment (target <= 3), "
        f"identical supports {best['agreement'][0]:.6f}"
    )
    if args.device == "cuda":  # issue 12: the Triton kernel against the GPU VQ assignment
        for setting, target in ((SETTINGS[0][0], 1.0), (SETTINGS[1][0], 2.0)):
            row = next((r for r in rows if r["setting"] == setting and "triton" in r["method"]), None)
            if row is None:
                print(f"TARGET {setting}: no Triton row (triton is not installed)")
                continue
            print(
                f"TARGET {setting}: batch_omp triton is {row['ratio_to_vq']:.2f}x the VQ assignment "
                f"(target <= {target}); same indices as the CPU kernel on {row['same_as_cpu_kernel']:.6f} "
                "of signals (target >= 0.9999)"
            )


if __name__ == "__main__":
    main()
