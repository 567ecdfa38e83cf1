"""`sd-sparse evaluate MODEL --data DIR`: PSNR, SSIM, LPIPS, FLIP and rFID of a saved autoencoder."""

from __future__ import annotations

import argparse
import os


def add_evaluate_parser(commands) -> None:
    """Adds `evaluate` to `commands` (the `sd-sparse` subparsers)."""
    evaluate = commands.add_parser(
        "evaluate", help="PSNR, SSIM, LPIPS, FLIP and rFID of a saved autoencoder's reconstructions of held-out images"
    )
    evaluate.add_argument(
        "model", metavar="MODEL", help="a folder: a SparseAutoencoder (what the trainers save) or a diffusers VAE"
    )
    evaluate.add_argument("--data", required=True, metavar="DIR", help="a folder of held-out images")
    evaluate.add_argument(
        "--resolution", type=int, default=None, help="side of the centre crops (default: the VAE's sample size or 256)"
    )
    evaluate.add_argument("--batch_size", type=int, default=8)
    evaluate.add_argument("--max_images", type=int, default=None, help="score only the first N images")
    evaluate.add_argument("--bottleneck", default=None, help="a bottleneck folder to put in a diffusers VAE")
    evaluate.add_argument("--perceptual_weights", default=None, metavar="DIR", help="local LPIPS weights")
    evaluate.add_argument(
        "--inception_weights",
        default=None,
        metavar="FILE",
        help="local FID Inception weights (torch-fidelity's; default: $SD_SPARSE_INCEPTION_WEIGHTS)",
    )
    evaluate.add_argument("--num_workers", type=int, default=0, help="image-decoding processes")
    evaluate.add_argument(
        "--output_dir", default=None, help="for metrics.json and metrics.md (default: MODEL/evaluation)"
    )


def run_evaluate(args: argparse.Namespace) -> str:
    """`sd-sparse evaluate`: scores MODEL's reconstructions and writes the metrics; returns the lines to print."""
    from ..evaluation.model_evaluation import METRICS_JSON, METRICS_MARKDOWN, evaluate_model, metrics_markdown

    metrics = evaluate_model(
        args.model,
        args.data,
        bottleneck=args.bottleneck,
        resolution=args.resolution,
        batch_size=args.batch_size,
        max_images=args.max_images,
        perceptual_weights=args.perceptual_weights,
        inception_weights=args.inception_weights,
        output_dir=args.output_dir,
        num_workers=args.num_workers,
    )
    return (
        metrics_markdown(metrics)
        + "\n"
        + f"wrote {os.path.join(metrics['output_dir'], METRICS_JSON)} and {METRICS_MARKDOWN}"
    )
