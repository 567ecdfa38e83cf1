"""Rate–distortion of every bottleneck on a trained VAE: image PSNR (and LPIPS) against measured bytes.

    python benchmarks/rate_distortion.py                       # the reference VAE shipped in sd_sparse
    python benchmarks/rate_distortion.py --vae path/to/vae     # any diffusers AutoencoderKL / AutoencoderTiny folder
    python benchmarks/rate_distortion.py --quick               # a few points, for a smoke run

Protocol: the shipped photographs are split by image (the reference VAE's own split: its held-out
photographs are never seen). Each bottleneck is fitted on latents of random crops of the training
photographs, then codes fixed crops of the held-out ones. The rate is the byte length of the codes
file (`codes.to_bytes(bottleneck)`: header, entropy-coded indices and quantized values, checksum)
per latent position and per pixel; the distortion is the PSNR of the coded decode against the
plain decode (and LPIPS when local weights exist). Curves: VQ, RVQ, FSQ, per-channel scalar
quantization, the dictionary per position and in 2×2 patches over S, K and `value_bits`, LISTA.
Writes benchmarks/results/rate_distortion{tag}.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from types import SimpleNamespace
from typing import Dict, List

import torch

from sd_sparse import (
    DictionaryBottleneck,
    FiniteScalarQuantizer,
    LISTABottleneck,
    ResidualVectorQuantizer,
    ScalarQuantizer,
    VectorQuantizer,
)
from sd_sparse.autoencoders import encode_latents
from sd_sparse.cli import SnakeCaseArgumentParser
from sd_sparse.data import photo_crops, reference_split
from sd_sparse.evaluation import evaluate
from sd_sparse.training import fit

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def load_vae(path: str | None):
    """A diffusers AutoencoderKL or AutoencoderTiny from a folder (default: the reference VAE)."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    from sd_sparse.autoencoders import reference_vae_path

    path = path or reference_vae_path()
    with open(os.path.join(path, "config.json")) as f:
        name = json.load(f).get("_class_name")
    cls = AutoencoderTiny if name == "AutoencoderTiny" else AutoencoderKL
    return cls.from_pretrained(path).eval(), path


def photograph_split():
    """(training photographs, held-out photographs, held-out names): the reference VAE's own split."""
    train, held = reference_split()
    return list(train.values()), list(held.values()), list(held)


def crops(photos, size: int, count: int, seed: int, center: bool = False) -> torch.Tensor:
    """`count` crops `[count, 3, size, size]` in [-1, 1], cycling over `photos` (random, or centred)."""
    return photo_crops(photos, size, count, seed=seed, center_crop=center)


def configs(latent_channels: int, quick: bool) -> List[Dict]:
    """The grid: one dict per point, `family` naming its curve."""
    c = latent_channels
    points = []
    for k in [16, 64] if quick else [16, 64, 256, 1024, 4096]:
        points.append(dict(family="VQ", label=f"K={k}", build=lambda k=k: VectorQuantizer(k, c)))
    for stages in [2] if quick else [2, 4, 8, 16]:
        points.append(
            dict(family="RVQ", label=f"K=256 × {stages}", build=lambda s=stages: ResidualVectorQuantizer(256, c, s))
        )
    for levels in [5] if quick else [3, 5, 8, 16]:
        points.append(dict(family="FSQ", label=f"L={levels}", build=lambda v=levels: FiniteScalarQuantizer(v, c)))
    for bits in [3] if quick else [1, 2, 3, 4, 6, 8]:
        points.append(dict(family="scalar", label=f"{bits} bits", build=lambda b=bits: ScalarQuantizer(c, b)))
    # the dictionary quantizes its coefficients one at a time with the error fed forward (value_refit):
    # +1.6 dB per position and +8.7 dB on 2x2 patches at S=8 over plain rounding at the same rate
    per_position = [(64, 2, 4)] if quick else [(512, 1, 6), (512, 2, 6), (512, 2, 8), (256, 3, 8), (256, 4, 10)]
    patches = [(2, 256, 4, 5)] if quick else [(2, 1024, 2, 6), (2, 256, 4, 6), (2, 256, 4, 8), (2, 256, 8, 8)]
    patches += [] if quick else [(2, 256, 12, 8), (2, 256, 16, 10), (4, 1024, 8, 6), (4, 1024, 16, 6), (4, 1024, 32, 6)]
    for p, k, s, b in [(1, *point) for point in per_position] + patches:
        points.append(
            dict(
                family="dictionary (per position)" if p == 1 else f"dictionary ({p}×{p} patches)",
                label=f"K={k} S={s} b={b}",
                build=lambda p=p, k=k, s=s, b=b: DictionaryBottleneck(
                    k, c, s, patch_size=p, init_from_data=True, value_bits=b, value_refit=True
                ),
            )
        )
    for s, b in [(2, 6)] if quick else [(2, 6), (4, 6), (8, 6)]:
        points.append(
            dict(
                family="LISTA (2×2 patches)",
                label=f"K=256 S={s} b={b}",
                build=lambda s=s, b=b: LISTABottleneck(256, c, sparsity=s, patch_size=2, value_bits=b),
            )
        )
    return points


def score(bottleneck, held: torch.Tensor, vae, lpips, pixels_per_position: int) -> Dict:
    """Measured bytes of the held-out codes file and the image metrics of the coded decode."""
    codes = bottleneck.encode(held)
    data = codes.to_bytes(bottleneck, vae=vae)
    positions = held.shape[0] * held.shape[2] * held.shape[3]
    metrics = evaluate(bottleneck, held, vae=vae, batch_size=8, with_flip=False, lpips=lpips)
    return {
        "bytes": len(data),
        "bytes_per_position": len(data) / positions,
        "bits_per_position": 8 * len(data) / positions,
        "bits_per_pixel": 8 * len(data) / (positions * pixels_per_position),
        "claimed_bits_per_position": bottleneck.bits_per_position,
        "image_psnr": metrics["image_psnr"],
        "lpips": metrics["lpips"],
        "perplexity": metrics["perplexity"],
    }


def plot(rows: List[Dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = sorted((r for r in rows if r["family"] == family), key=lambda r: r["bits_per_pixel"])
        # every configuration as a dot; the line joins the family's best trade-offs (its Pareto front)
        front, best = [], float("-inf")
        for r in mine:
            if r["image_psnr"] > best:
                front.append(r)
                best = r["image_psnr"]
        (line,) = ax.plot(
            [r["bits_per_pixel"] for r in front], [r["image_psnr"] for r in front], marker="o", label=family
        )
        ax.scatter([r["bits_per_pixel"] for r in mine], [r["image_psnr"] for r in mine], color=line.get_color(), s=14)
    ax.set_xscale("log")
    ax.set_xlabel("measured bits per pixel (codes file bytes × 8 / pixels)")
    ax.set_ylabel("image PSNR of the coded decode vs the plain decode (dB)")
    ax.set_title(title + "\n(dots: every configuration; lines: each family's best trade-offs)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--vae", default=None, help="a diffusers AutoencoderKL/AutoencoderTiny folder (default: reference)"
    )
    parser.add_argument("--crop", type=int, default=128, help="training crop side")
    parser.add_argument("--train_crops", type=int, default=256)
    parser.add_argument("--held_crop", type=int, default=256, help="held-out crop side")
    parser.add_argument("--held_crops", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300, help="fitting steps per point")
    parser.add_argument("--batch_size", type=int, default=16, help="latents per fitting step")
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--quick", action="store_true", help="a few points and steps (smoke run)")
    parser.add_argument("--only", nargs="+", default=None, help="families to run (default: all)")
    parser.add_argument("--perceptual_weights", default=None, help="LPIPS weights folder (else looked up locally)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--output_dir", default=RESULTS)
    options = parser.parse_args(argv)
    if options.quick:
        options.steps, options.train_crops, options.held_crops = min(options.steps, 30), 32, 2

    torch.manual_seed(0)
    vae, vae_path = load_vae(options.vae)
    train_photos, held_photos, held_names = photograph_split()
    with torch.no_grad():
        train = encode_latents(vae, crops(train_photos, options.crop, options.train_crops, seed=1)).float()
        held_images = crops(held_photos, options.held_crop, options.held_crops, seed=2)
        held = encode_latents(vae, held_images).float()
    vae_psnr = evaluate(PlainRoundTrip(vae), held_images, batch_size=8, with_flip=False)["image_psnr"]
    factor = held_images.shape[-1] // held.shape[-1]
    from sd_sparse.losses import load_lpips

    lpips = load_lpips(options.perceptual_weights)  # None (with a warning) without local weights
    rows = []
    for point in configs(held.shape[1], options.quick):
        if options.only and point["family"] not in options.only:
            continue
        torch.manual_seed(0)
        start = time.perf_counter()
        bottleneck = fit(point["build"](), train, options.steps, options.batch_size, options.learning_rate, seed=0)
        row = {"family": point["family"], "config": point["label"], **score(bottleneck, held, vae, lpips, factor**2)}
        row["fit_seconds"] = time.perf_counter() - start
        rows.append(row)
        print(
            f"{row['family']:26s} {row['config']:18s} {row['bits_per_position']:7.2f} bits/position "
            f"({row['claimed_bits_per_position']:6.2f} claimed) {row['bits_per_pixel']:.4f} bpp  "
            f"PSNR {row['image_psnr']:6.2f} dB"
        )
    os.makedirs(options.output_dir, exist_ok=True)
    name = os.path.join(options.output_dir, f"rate_distortion{options.tag}")
    header = {
        "vae": vae_path,
        "vae_held_out_psnr": vae_psnr,
        "latent": list(held.shape[1:]),
        "held_out_photographs": held_names,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
        "protocol": {k: v for k, v in vars(options).items() if k not in ("output_dir", "tag")},
        "rows": rows,
    }
    with open(name + ".json", "w") as f:
        json.dump(header, f, indent=2)
    lines = [
        f"# Rate–distortion on {os.path.basename(os.path.normpath(vae_path))} ({header['machine']})",
        "",
        f"Latents {header['latent']} per {options.held_crop}² crop; held-out photographs: {', '.join(held_names)}; "
        f"the VAE's own reconstruction PSNR on them: {vae_psnr:.2f} dB. PSNR: coded decode vs plain decode.",
        "",
        "| family | config | measured bits/position | claimed | bits/pixel | image PSNR (dB) | LPIPS |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lp = f"{r['lpips']:.4f}" if r["lpips"] is not None else "n/a"
        lines.append(
            f"| {r['family']} | {r['config']} | {r['bits_per_position']:.2f} | {r['claimed_bits_per_position']:.2f} | "
            f"{r['bits_per_pixel']:.4f} | {r['image_psnr']:.2f} | {lp} |"
        )
    with open(name + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(rows, name + ".png", f"Rate–distortion, held-out photographs ({os.path.basename(os.path.normpath(vae_path))})")
    print(f"wrote {name}.json, .md, .png")
    return header


class PlainRoundTrip(torch.nn.Module):
    """The VAE's own encode → decode, as a model whose output has a `sample` (for `evaluate`)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> SimpleNamespace:
        from sd_sparse.autoencoders import decode_latents

        return SimpleNamespace(sample=decode_latents(self.vae, encode_latents(self.vae, images)))


if __name__ == "__main__":
    main()
