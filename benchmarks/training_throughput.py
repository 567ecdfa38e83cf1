"""Is the loader ever the bottleneck? Images/s of the data pipeline alone against the training step alone.

    python benchmarks/training_throughput.py                      # the trainer's defaults, 0 and 2 workers
    python benchmarks/training_throughput.py --source folder      # JPEG files (decoded in the workers)

Both sides use the trainer's default settings (`train/train_dlvae.py`: LASERS DL-VAE, K=512, S=5,
16 latent channels, 32² crops, 16 crops a step). "loader" iterates `build_training_data(...).batches`
(decode, crop, flip, collate) without training; "step" runs forward, backward and Adam on a fixed
batch. The loader must deliver at least 2× the step's images/s with 2 workers.
Writes benchmarks/results/training_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch
from training_step import make_step

from sd_sparse.cli import SnakeCaseArgumentParser
from sd_sparse.data import build_training_data
from sd_sparse.training import build_parser

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def make_jpeg_folder(path: str, count: int, size: int = 512, seed: int = 0) -> str:
    """`count` JPEG photographs-like images (smooth colour fields plus grain) of `size`²."""
    from PIL import Image

    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(count):
        a, b, c = rng.uniform(0.5, 4, 3)
        field = np.stack([np.sin(a * 6 * grid[:, None] + b * 3 * grid[None, :] + k) for k in (0.0, 2.0, 4.0)], axis=-1)
        pixels = np.clip(127 + 100 * field * c / 4 + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(path, f"{i:05d}.jpg"), quality=90)
    return path


def loader_throughput(args, batches: int) -> float:
    """Images/s of the data pipeline alone (after one warm-up batch, which starts the workers)."""
    data = build_training_data(args, None, args.train_batch_size, args.seed, args.num_validation_images)
    next(data.batches)
    start = time.perf_counter()
    count = sum(len(next(data.batches)) for _ in range(batches))
    elapsed = time.perf_counter() - start
    data.batches.close()
    return count / elapsed


def step_throughput(flags, steps: int) -> float:
    """Images/s of the training step alone (forward, backward, Adam) on a fixed batch, on the CPU."""
    step, batch_size = make_step(flags, "cpu")
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["photographs", "folder"], nargs="+", default=["photographs", "folder"])
    parser.add_argument("--folder_images", type=int, default=200, help="JPEGs of 512² generated for --source folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=60, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    options = parser.parse_args(argv)

    rows = []
    step_rate = step_throughput([], options.steps)
    with tempfile.TemporaryDirectory() as tmp:
        for source in options.source:
            extra = []
            if source == "folder":
                extra = ["--train_data_dir", make_jpeg_folder(os.path.join(tmp, "jpegs"), options.folder_images)]
            for workers in options.workers:
                args = build_parser().parse_args([*extra, "--dataloader_num_workers", str(workers)])
                rate = loader_throughput(args, options.batches)
                rows.append(
                    {
                        "source": source,
                        "workers": workers,
                        "loader_images_per_s": rate,
                        "step_images_per_s": step_rate,
                        "ratio": rate / step_rate,
                    }
                )
                print(
                    f"{source:12s} workers={workers}: loader {rate:8.1f} img/s, step {step_rate:6.1f} img/s, "
                    f"ratio {rate / step_rate:5.2f}x"
                )
    header = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "settings": "trainer defaults: lasers DL-VAE K=512 S=5 L=16 hidden=128, 32² crops, batch 16",
        "rows": rows,
    }
    os.makedirs(RESULTS, exist_ok=True)
    name = f"training_throughput{options.tag}"
    with open(os.path.join(RESULTS, name + ".json"), "w") as f:
        json.dump(header, f, indent=2)
    lines = [
        f"# Loader vs training step ({header['machine']})",
        "",
        header["settings"],
        "",
        "| source | workers | loader img/s | step img/s | loader / step |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['source']} | {r['workers']} | {r['loader_images_per_s']:.0f} | {r['step_images_per_s']:.0f} | "
        f"{r['ratio']:.2f}x |"
        for r in rows
    ]
    with open(os.path.join(RESULTS, name + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for r in rows:
        if r["workers"] == 2:
            verdict = "MET" if r["ratio"] >= 2 else "NOT MET"
            print(f"TARGET {r['source']}: loader with 2 workers = {r['ratio']:.2f}x the step (target >= 2): {verdict}")


if __name__ == "__main__":
    main()
