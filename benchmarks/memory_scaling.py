"""Peak RSS does not grow with the dataset: a short run of each script on 300 and on 3000 images.

    python benchmarks/memory_scaling.py                 # 300 vs 3000 JPEGs of 256², both scripts
    python benchmarks/memory_scaling.py --counts 100 1000 --size 128

Each run is a fresh process (`train/train_dlvae.py` and `train/fit_sd_bottleneck.py` on the offline
tiny Stable Diffusion VAE), measured by its own peak resident set size (Linux's VmHWM) and, for
information, the largest of the loader workers it started (`ru_maxrss` of its children, which counts
the pages a forked worker shares with its parent). Holding the decoded images alone would add `count × 3 × size² × 4` bytes
(float32), e.g. 2.4 GB for 3000 images of 256²; the target is the peak at 3000 within 10% of the peak
at 300. Writes benchmarks/results/memory_scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import runpy
import subprocess
import sys
import tempfile

from sd_sparse.cli import SnakeCaseArgumentParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

SCRIPTS = {
    "train_dlvae": (
        "train/train_dlvae.py",
        ["--max_train_steps", "5", "--validation_steps", "5", "--checkpointing_steps", "100"],
    ),
    "fit_sd_bottleneck": ("train/fit_sd_bottleneck.py", ["--max_train_steps", "5"]),
}


def make_folder(path: str, count: int, size: int) -> str:
    """`count` distinct JPEGs of `size`² (the benchmark's and the test's data)."""
    from training_throughput import make_jpeg_folder

    return make_jpeg_folder(path, count, size)


def peak_rss_mb(script: str, args, workers: int = 0) -> dict:
    """Runs `script args` in a fresh process; {"main": its peak RSS, "workers": its children's peak} in MB."""
    command = [sys.executable, os.path.abspath(__file__), "--child", script, *map(str, args)]
    command += ["--dataloader_num_workers", str(workers)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(argv) -> None:
    """Runs a script in this process, then prints the peak RSS of this process and of its children."""
    script, *args = argv
    sys.argv = [script, *args]
    sys.path.insert(0, ROOT)
    stdout = sys.stdout
    sys.stdout = sys.stderr  # the script's own prints go to stderr; the last stdout line is the result
    runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    sys.stdout = stdout
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    main = _high_water_mark_mb()
    if main is None:
        main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / 2**20
    print(json.dumps({"main": main, "workers": children}))


def _high_water_mark_mb():
    """This process's peak RSS since its `exec` (Linux's VmHWM), or None elsewhere.

    Not `ru_maxrss`: Linux keeps it across `exec`, so a process started from a large one (pytest)
    would report its parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(counts, size: int, workers: int, scripts, folder_root: str, extra_args=()) -> list:
    """Peak RSS rows of each script at each image count; `extra_args` are appended to every run."""
    rows = []
    folders = {count: make_folder(os.path.join(folder_root, f"images{count}"), count, size) for count in counts}
    for name in scripts:
        script, extra = SCRIPTS[name]
        for count in counts:
            out = os.path.join(folder_root, f"out-{name}-{count}")
            args = ["--train_data_dir", folders[count], "--output_dir", out, *extra, *extra_args]
            peak = peak_rss_mb(script, args, workers)
            rows.append(
                {"script": name, "images": count, "peak_rss_mb": peak["main"], "workers_peak_mb": peak["workers"]}
            )
            print(f"{name:18s} {count:5d} images: peak RSS {peak['main']:7.1f} MB (workers {peak['workers']:.1f} MB)")
    return rows


def growth(rows, script: str) -> float:
    """Peak RSS at the largest count over that at the smallest, minus 1."""
    mine = sorted((r for r in rows if r["script"] == script), key=lambda r: r["images"])
    return mine[-1]["peak_rss_mb"] / mine[0]["peak_rss_mb"] - 1


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs=2, default=[300, 3000])
    parser.add_argument("--size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--workers", type=int, default=2, help="--dataloader_num_workers of the runs")
    parser.add_argument("--scripts", nargs="+", default=list(SCRIPTS), choices=list(SCRIPTS))
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(options.counts, options.size, options.workers, options.scripts, tmp)
    machine = f"{platform.machine()} {os.cpu_count()} cores"
    small, large = options.counts
    held = small * 3 * options.size**2 * 4 / 2**20, large * 3 * options.size**2 * 4 / 2**20
    lines = [
        f"# Peak RSS against dataset size ({machine}, {options.size}² JPEGs, {options.workers} loader workers)",
        "",
        f"Holding the decoded images as float32 would take {held[0]:.0f} MB and {held[1]:.0f} MB.",
        "",
        "| script | images | peak RSS (MB) | loader workers' peak (MB) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['script']} | {r['images']} | {r['peak_rss_mb']:.0f} | {r['workers_peak_mb']:.0f} |" for r in rows]
    lines.append("")
    for script in options.scripts:
        change = growth(rows, script)
        verdict = "MET" if abs(change) <= 0.10 else "NOT MET"
        line = f"TARGET {script}: peak RSS {large} vs {small} images {change:+.1%} (target within 10%): {verdict}"
        lines.append(f"- {line}")
        print(line)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "memory_scaling.json"), "w") as f:
        json.dump({"machine": machine, "size": options.size, "workers": options.workers, "rows": rows}, f, indent=2)
    with open(os.path.join(RESULTS, "memory_scaling.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
