"""Does the LASERS claim hold here? VQ-VAE vs DL-VAE with the same encoder/decoder, same steps.

Both models use the LASERS lightweight encoder/decoder (128 hidden channels, downsampling 4),
K = 512, L = 16 (DL: S = 5), Adam, and train on random 32×32 crops of the photographs shipped with
scikit-image/scikit-learn for the same number of steps; they are scored on every 32×32 tile of the
held-out photographs (split by image, never by crop): PSNR, SSIM, FLIP, usage perplexity, bits per
latent position and time per training step. Each family runs as in the paper and with its
restarts of rarely used codes/atoms (`restart_threshold`, the same rule for both). A
sparsity sweep (S = 2, 4, 8, with restarts) follows.

    python benchmarks/reconstruction.py [--steps 1500] [--device cuda] [--quick]

Writes `reconstruction[_cuda].json` and `.md` to --output_dir and prints a TARGETS line
(DL-VAE ≥ VQ-VAE + 4 dB PSNR, DL perplexity ≥ 0.9·K, DL step ≤ 1.3× VQ step).
"""

import argparse
import json
import os
from datetime import datetime, timezone

import torch

from sd_sparse import SparseAutoencoder
from sd_sparse.cli import SnakeCaseArgumentParser
from sd_sparse.data import photo_patches, random_crops, sample_photographs, split_by_image
from sd_sparse.evaluation import evaluate
from sd_sparse.losses import load_lpips
from sd_sparse.models.flat_config import FLAT_BOTTLENECK_OPTIONS, flat_bottleneck_config
from sd_sparse.training import fit

TEST_IMAGES = ["astronaut", "coffee"]


def score(model, test_tiles, lpips=None, full=True):
    """Held-out PSNR (of the pooled MSE) and usage perplexity (and SSIM, FLIP on 64 tiles, LPIPS when `full`)."""
    m = evaluate(
        model,
        test_tiles,
        batch_size=256,
        with_flip=full,
        with_ssim=full,
        lpips=lpips if full else None,
        max_flip_images=64,
        psnr_reduction="pooled",
    )
    result = {"psnr": m["image_psnr"], "perplexity": m["perplexity"]}
    if full:
        result.update(ssim=m["ssim"], flip=m["flip"], lpips=m["lpips"], bits_per_position=m["bits_per_position"])
    return result


def train_and_score(
    name, config, train_images, test_tiles, steps, batch_size, lr, device, seed=0, lpips=None, eval_every=None
):
    torch.manual_seed(seed)
    flat = {k: v for k, v in config.items() if k in FLAT_BOTTLENECK_OPTIONS}  # the runs below name them flat
    bottleneck_class, bottleneck_config = flat_bottleneck_config(**flat)
    model_config = {k: v for k, v in config.items() if k not in FLAT_BOTTLENECK_OPTIONS}
    model = SparseAutoencoder(**model_config, bottleneck_class=bottleneck_class, bottleneck_config=bottleneck_config)
    model = model.to(device)
    step_times, curve = [], []

    def record_curve(step, model):
        if eval_every and step % eval_every == 0 and step < steps:
            curve.append({"step": step, **score(model, test_tiles, full=False)})
            print(f"{name} step {step}: {curve[-1]}", flush=True)

    fit(
        model,
        lambda generator: random_crops(train_images, 32, batch_size, generator),
        steps,
        learning_rate=lr,
        seed=seed,
        loss=lambda batch, out: (out.sample - batch).square().mean() + out.bottleneck_loss,
        callback=record_curve,
        step_times=step_times,
    )
    times = sorted(step_times[len(step_times) // 10 :])  # skip warm-up
    result = score(model, test_tiles, lpips)
    if eval_every:
        curve.append({"step": steps, "psnr": result["psnr"], "perplexity": result["perplexity"]})
    return {
        "model": name,
        "sparsity": config.get("sparsity") if config.get("bottleneck_type") != "vq" else None,
        **result,
        "num_codes": config["num_atoms"],
        "step_ms": 1e3 * times[len(times) // 2],
        "curve": curve,
    }


def main():
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="200 steps, no sweep")
    parser.add_argument(
        "--lpips_weights",
        default=None,
        help="local LPIPS weights folder (default: found locally or the column is skipped)",
    )
    parser.add_argument(
        "--restart_threshold",
        type=float,
        default=0.5,
        help="VQ and DL restarts (share of 1/K) in the '+ restarts' rows",
    )
    parser.add_argument("--only", default=None, help="comma-separated model names to run (default: all)")
    parser.add_argument("--eval_every", type=int, default=None, help="also score every N steps (a training curve)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = 200 if args.quick else args.steps

    train, test = split_by_image(sample_photographs(), TEST_IMAGES)
    train_images = [torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous() for img in train.values()]
    test_tiles = photo_patches(test.values(), 32)
    lpips = load_lpips(args.lpips_weights)
    lpips = lpips.to(device) if lpips is not None else None
    base = dict(architecture="lasers", hidden_channels=128, latent_channels=16, num_atoms=512)
    vq = {**base, "bottleneck_type": "vq", "restart_threshold": 0.0}
    dl = {**base, "bottleneck_type": "dictionary", "restart_threshold": 0.0}
    restarts = {"restart_threshold": args.restart_threshold}
    runs = [
        ("VQ-VAE", vq),
        ("DL-VAE", {**dl, "sparsity": 5}),
        ("VQ-VAE + restarts", {**vq, **restarts}),
        ("DL-VAE + restarts", {**dl, "sparsity": 5, **restarts}),
    ]
    if not args.quick:
        runs += [(f"DL-VAE + restarts S={s}", {**dl, "sparsity": s, **restarts}) for s in (2, 4, 8)]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",")]
        unknown = sorted(set(wanted) - {n for n, _ in runs})
        if unknown:
            raise SystemExit(f"--only: unknown model names {unknown}; choose from {[n for n, _ in runs]}")
        runs = [(n, c) for n, c in runs if n in wanted]
    rows = []
    for name, config in runs:
        rows.append(
            train_and_score(
                name,
                config,
                train_images,
                test_tiles,
                steps,
                args.batch_size,
                args.learning_rate,
                device,
                lpips=lpips,
                eval_every=args.eval_every,
            )
        )
        print(f"done: {name}", flush=True)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": device_name,
        "threads": args.threads,
        "steps": steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "train_images": list(train),
        "test_images": TEST_IMAGES,
        "test_tiles": int(test_tiles.shape[0]),
        "lpips": "VGG16 LPIPS from local weights" if lpips is not None else "skipped: no local LPIPS weights",
    }
    lines = [
        f"Reconstruction, {meta['date']}, {device_name}, torch {meta['torch']}: {steps} steps of {args.batch_size} "
        f"random 32² crops from {len(train)} photographs; scored on {test_tiles.shape[0]} tiles of {', '.join(TEST_IMAGES)}. "
        f"LPIPS: {meta['lpips']}.",
        "",
        "| model | PSNR (dB) | SSIM | FLIP | LPIPS | usage perplexity | bits per position | step (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['model']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['flip']:.4f} | "
            f"{'n/a' if r['lpips'] is None else format(r['lpips'], '.4f')} | {r['perplexity']:.0f} / {r['num_codes']} "
            f"| {r['bits_per_position']:.1f} | {r['step_ms']:.1f} |"
            for r in rows
        ],
    ]
    table = "\n".join(lines)
    if any(r["curve"] for r in rows):
        curves = ["", "| model | step | PSNR (dB) | usage perplexity |", "|---|---:|---:|---:|"]
        curves += [
            f"| {r['model']} | {c['step']} | {c['psnr']:.2f} | {c['perplexity']:.0f} |"
            for r in rows
            for c in r["curve"]
        ]
        table += "\n" + "\n".join(curves)
    os.makedirs(args.output_dir, exist_ok=True)
    suffix = ("" if args.device == "cpu" else f"_{args.device}") + (f"_{args.tag}" if args.tag else "")
    with open(os.path.join(args.output_dir, f"reconstruction{suffix}.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(args.output_dir, f"reconstruction{suffix}.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    names = [r["model"] for r in rows]
    pairs = (
        ("paper setting (no restarts)", "VQ-VAE", "DL-VAE"),
        ("both with restarts", "VQ-VAE + restarts", "DL-VAE + restarts"),
    )
    for label, vq_name, dl_name in pairs:
        if vq_name not in names or dl_name not in names:
            continue
        vq, dl = rows[names.index(vq_name)], rows[names.index(dl_name)]
        print(
            f"TARGETS {label}: DL-VAE - VQ-VAE = {dl['psnr'] - vq['psnr']:+.2f} dB (target >= +4), DL perplexity "
            f"{dl['perplexity']:.0f} = {dl['perplexity'] / dl['num_codes']:.2f}·K (target >= 0.9·K), DL step "
            f"{dl['step_ms'] / vq['step_ms']:.2f}x the VQ step (target <= 1.3)"
        )


if __name__ == "__main__":
    main()
