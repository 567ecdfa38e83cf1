"""Downstream tasks of the LASERS paper (supplement §12): DL vs VQ bottleneck on super-resolution and inpainting.

The paper trains VQ-VAE and DL-VAE (no discriminator) on Oxford Flowers to map a degraded image to
the clean one: super-resolution from a 64² image upscaled bicubic to 256², and inpainting of a
centred square of side 1/4 set to 0. Here the same two tasks (and plain reconstruction, for
reference) run at CPU scale through the one trainer (`--task`): random 64² crops of the shipped
photographs, scaled so that their shorter side is 128, super-resolution 16→64 (`--sr_factor 4`).
Both models use the LASERS encoder/decoder (128 hidden channels, downsampling 4), K = 512 atoms /
codes of L = 16 (DL: S = 5), the trainer's restart rule for both, MSE only (`--eta 1`, so that runs
with and without local LPIPS weights agree), Adam at 1e-3.

Scored on held-out photographs (the trainer's `--validation_split 0.2 --seed 0` split, by image:
chelsea and flower), every 64² tile at stride 16 of their 128-pixel-high versions: PSNR, SSIM, FLIP
of the output against the clean tile, PSNR inside the mask for inpainting, and the same for the
degraded input itself (the baseline the model must beat: bicubic upscaling, the masked image).
FID needs Inception weights on disk (`--inception_weights`, torchmetrics + torch-fidelity; nothing
is downloaded), else it is n/a; on 90 tiles it is a rough indication only.

    python benchmarks/downstream.py [--steps 600] [--quick] [--inception_weights PATH] [--runs_dir DIR]

Writes `downstream.json` and `downstream.md` to --output_dir (benchmarks/results); `--quick` (3 steps a run,
8 test tiles) writes `downstream_quick.*` to a temporary folder unless --output_dir is given.
"""

import json
import os
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
import torch
from PIL import Image

from sd_sparse.cli import SnakeCaseArgumentParser
from sd_sparse.data import reference_split, to_tensor
from sd_sparse.evaluation import evaluate
from sd_sparse.metrics import psnr, ssim
from sd_sparse.training import build_parser, train
from sd_sparse.training.tasks import TASKS, DegradedInputModel, degrade, inpainting_mask, masked_psnr

RESOLUTION = 64
RESIZE_RESOLUTION = 128
SR_FACTOR = 4
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
VALIDATION_SPLIT = 0.2  # with seed 0: the held-out photographs of `reference_split()` (chelsea, flower)
COMMON = ["--architecture", "lasers", "--hidden_channels", "128", "--latent_channels", "16", "--num_atoms", "512"]
MODELS = {
    "VQ-VAE": [*COMMON, "--bottleneck_type", "vq"],
    "DL-VAE": [*COMMON, "--bottleneck_type", "dictionary", "--sparsity", "5"],
}
# Table 6 / 7 of the paper (Oxford Flowers, 64→256 super-resolution; inpainting): PSNR, FID
PAPER = {
    "super_resolution": {"VQ-VAE": (28.78, 33.9), "DL-VAE": (29.23, 23.3)},
    "inpainting": {"VQ-VAE": (28.78, 72.2), "DL-VAE": (30.08, 59.5)},
}


def held_out_tiles(photos, resize_resolution: int, resolution: int, stride: int) -> torch.Tensor:
    """Every `resolution` tile at `stride` of the photographs scaled (bicubic) so that their shorter side is
    `resize_resolution`: `[N, 3, R, R]` in [-1, 1]."""
    tiles = []
    for photo in photos:
        height, width = photo.shape[:2]
        scale = resize_resolution / min(height, width)
        size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        image = to_tensor(np.asarray(Image.fromarray(photo).resize(size, Image.BICUBIC)))
        for top in range(0, image.shape[1] - resolution + 1, stride):
            for left in range(0, image.shape[2] - resolution + 1, stride):
                tiles.append(image[:, top : top + resolution, left : left + resolution])
    return torch.stack(tiles)


def fid_score(real: torch.Tensor, fake: torch.Tensor, weights: str | None):
    """(FID of `fake` against `real`, images in [-1, 1], or None; why it is None)."""
    if not weights:
        return None, "n/a: no local Inception weights (--inception_weights)"
    if not os.path.isfile(weights):
        return None, f"n/a: {weights} is not a file"
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=weights)
    except (ImportError, ModuleNotFoundError, RuntimeError) as err:
        return None, f"n/a: {err}"
    metric.update((real + 1) / 2, real=True)
    metric.update((fake.clamp(-1, 1) + 1) / 2, real=False)
    return float(metric.compute()), "torchmetrics FrechetInceptionDistance (2048 features)"


def score(model, task: str, tiles: torch.Tensor, inception_weights: str | None) -> dict:
    """Output and degraded-input metrics against the clean `tiles` `[N, 3, R, R]`."""
    metrics, outputs = evaluate(
        DegradedInputModel(model, task, SR_FACTOR),
        tiles,
        batch_size=32,
        with_ssim=True,
        max_flip_images=32,
        return_reconstructions=True,
    )
    inputs = degrade(tiles, task, SR_FACTOR)
    target01, input01 = (tiles + 1) / 2, (inputs + 1) / 2
    row = {
        "psnr": metrics["image_psnr"],
        "ssim": metrics["ssim"],
        "flip": metrics["flip"],
        "perplexity": metrics["perplexity"],
        "input_psnr": None,  # reconstruction: the input is the target
        "input_ssim": None,
    }
    if task != "reconstruction":
        row["input_psnr"] = float(psnr(target01, input01, dim=(1, 2, 3)).mean())
        row["input_ssim"] = float(ssim(target01, input01).mean())
    if task == "inpainting":
        mask = inpainting_mask(RESOLUTION, RESOLUTION)
        row["psnr_mask"] = float(masked_psnr(tiles, outputs, mask).mean())
        row["input_psnr_mask"] = float(masked_psnr(tiles, inputs, mask).mean())
    row["fid"], row["fid_note"] = fid_score(tiles, outputs, inception_weights)
    return row


def run(name: str, task: str, args, tiles: torch.Tensor, runs_dir: str) -> dict:
    """Trains model `name` for `task` with the trainer and scores it on the held-out tiles."""
    output_dir = os.path.join(runs_dir, f"{name.lower()}-{task}")
    argv = [
        *MODELS[name],
        "--task",
        task,
        "--sr_factor",
        str(SR_FACTOR),
        "--resolution",
        str(RESOLUTION),
        "--resize_resolution",
        str(RESIZE_RESOLUTION),
        "--validation_split",
        str(VALIDATION_SPLIT),
        "--seed",
        "0",
        "--train_batch_size",
        str(args.batch_size),
        "--learning_rate",
        str(args.learning_rate),
        "--eta",
        "1",
        "--max_train_steps",
        str(args.steps),
        "--validation_steps",
        str(args.steps),
        "--checkpointing_steps",
        str(args.steps),
        "--num_validation_images",
        "4",
        "--output_dir",
        output_dir,
    ]
    start = time.perf_counter()
    model, _ = train(build_parser().parse_args(argv))
    seconds = time.perf_counter() - start
    row = {"model": name, "task": task, **score(model, task, tiles, args.inception_weights)}
    row["train_seconds"] = seconds
    print(f"{name} {task}: {json.dumps({k: v for k, v in row.items() if k != 'fid_note'}, default=str)}", flush=True)
    return row


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(meta: dict, rows: list) -> str:
    lines = [
        f"Downstream tasks, {meta['date']}, CPU, torch {meta['torch']}: {meta['steps']} steps of {meta['batch_size']} "
        f"random {RESOLUTION}² crops (photographs scaled to a {RESIZE_RESOLUTION}-pixel shorter side) of "
        f"{', '.join(meta['train_images'])}; scored on {meta['test_tiles']} {RESOLUTION}² tiles of "
        f"{', '.join(meta['test_images'])}. Super-resolution {RESOLUTION // SR_FACTOR}→{RESOLUTION} (bicubic, "
        f"×{SR_FACTOR}); inpainting: centred square of side 1/4 set to 0. FID: {meta['fid']}.",
        "",
        "`input` columns: the degraded input itself against the target (bicubic upscaling, the masked image): "
        "the baseline. PSNR in dB (mean over tiles); `mask`: PSNR inside the inpainting square.",
        "",
        "| task | model | PSNR | SSIM | FLIP | PSNR mask | FID | input PSNR | input SSIM | input PSNR mask "
        "| usage perplexity | train (s) | paper PSNR / FID |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        paper = PAPER.get(row["task"], {}).get(row["model"])
        lines.append(
            f"| {row['task']} | {row['model']} | {_fmt(row['psnr'])} | {_fmt(row['ssim'], 4)} | {_fmt(row['flip'], 4)} "
            f"| {_fmt(row.get('psnr_mask'))} | {_fmt(row['fid'], 1)} | {_fmt(row['input_psnr'])} "
            f"| {_fmt(row['input_ssim'], 4)} | {_fmt(row.get('input_psnr_mask'))} | {_fmt(row['perplexity'], 0)} / 512 "
            f"| {row['train_seconds']:.0f} | {f'{paper[0]} / {paper[1]}' if paper else '-'} |"
        )
    gaps = []
    for task in TASKS:
        by_model = {row["model"]: row for row in rows if row["task"] == task}
        if {"VQ-VAE", "DL-VAE"} <= set(by_model):
            gaps.append(f"{task} {by_model['DL-VAE']['psnr'] - by_model['VQ-VAE']['psnr']:+.2f} dB")
    if gaps:
        lines += ["", f"DL-VAE − VQ-VAE PSNR: {', '.join(gaps)} (paper: super-resolution +0.45, inpainting +1.30)."]
    return "\n".join(lines) + "\n"


def main():
    parser = SnakeCaseArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps of each run")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks to run")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--inception_weights",
        default=os.environ.get("SD_SPARSE_INCEPTION_WEIGHTS"),
        help="torch-fidelity's pt_inception-2015-12-05 weights (a file) for FID; without them FID is n/a",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 steps per run, 8 test tiles")
    parser.add_argument("--runs_dir", default=None, help="keep the training runs (models, grids) here (default: temp)")
    parser.add_argument(
        "--output_dir", default=None, help="default: benchmarks/results (with --quick: a new temporary folder)"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps = 3
    if args.output_dir is None:
        args.output_dir = tempfile.mkdtemp(prefix="downstream-") if args.quick else RESULTS
    tasks = [t for t in args.tasks.split(",") if t]
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(tasks) - set(TASKS)) + sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown tasks or models {unknown}; tasks: {', '.join(TASKS)}; models: {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)

    train_photos, test_photos = reference_split(VALIDATION_SPLIT, seed=0)
    tiles = held_out_tiles(test_photos.values(), RESIZE_RESOLUTION, RESOLUTION, stride=RESOLUTION // 4)
    if args.quick:
        tiles = tiles[:: max(1, len(tiles) // 8)][:8]
    print(f"{len(tiles)} held-out tiles of {', '.join(test_photos)}", flush=True)

    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs_dir or scratch
        for task in tasks:
            for name in models:
                rows.append(run(name, task, args, tiles, runs_dir))
    total = time.perf_counter() - start
    fid_notes = sorted({row.pop("fid_note") for row in rows})
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": args.threads,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "resolution": RESOLUTION,
        "resize_resolution": RESIZE_RESOLUTION,
        "sr_factor": SR_FACTOR,
        "train_images": list(train_photos),
        "test_images": list(test_photos),
        "test_tiles": len(tiles),
        "fid": "; ".join(fid_notes),
        "total_seconds": total,
        "models": {name: MODELS[name] for name in models},
    }
    name = "downstream_quick" if args.quick else "downstream"
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, f"{name}.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    table = markdown(meta, rows)
    with open(os.path.join(args.output_dir, f"{name}.md"), "w") as f:
        f.write(table)
    print(table)
    print(f"total {total:.0f} s", flush=True)


if __name__ == "__main__":
    main()
