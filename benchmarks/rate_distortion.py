"""Rate–distortion of every bottleneck on a trained VAE: image PSNR (and LPIPS) against measured bytes, and the
sparse front against the best baseline front (BD-rate, BD-PSNR, worst gap).

    python benchmarks/rate_distortion.py                          # the 4-channel reference VAE shipped in sd_sparse
    python benchmarks/rate_distortion.py --reference_channels 32  # the shipped 16- or 32-channel one
    python benchmarks/rate_distortion.py --vae path/to/vae        # any VAE folder sd_sparse's load_vae takes
    python benchmarks/rate_distortion.py --quick                  # a few points, for a smoke run

Protocol: the shipped photographs are split by image (the reference VAE's own split: its held-out
photographs are never seen). Each bottleneck is fitted on latents of random crops of the training
photographs, then codes fixed crops of the held-out ones. The rate is the byte length of the codes
file (`codes.to_bytes(bottleneck)`: header, entropy-coded indices and quantized values, checksum)
per latent position and per pixel; the distortion is the PSNR of the coded decode against the
plain decode (and LPIPS when local weights exist). Families are "baseline" (VQ, RVQ, FSQ, scalar
quantization) or "sparse" (the dictionary per position and in patches, LISTA); each gets its Pareto
front, and the sparse front (all sparse points) is compared with the best baseline front (all baseline
points) by BD-rate / BD-PSNR (PCHIP, `bjontegaard`) inside `--bd_range` and by the worst gap; the last
line printed is `TARGET sparse-vs-best-baseline BD-rate=...% worst-gap=... dB at ... bits/position`.
Writes benchmarks/results/rate_distortion{tag}.{json,md,png}.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import re
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
from sd_sparse.errors import UserError, exit_on_user_error
from sd_sparse.evaluation import bjontegaard_deltas, evaluate, gaps, pareto_front, worst_gap
from sd_sparse.training import fit

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def load_vae(path: str | None, reference_channels: int = 4):
    """(VAE in eval mode, its folder): any VAE folder `sd_sparse.autoencoders.loading.load_vae` takes, or
    the shipped reference VAE with `reference_channels` latent channels."""
    from sd_sparse.autoencoders import reference_vae_path
    from sd_sparse.autoencoders.loading import load_vae as load_any_vae

    path = path or reference_vae_path(reference_channels)
    return load_any_vae(path).eval(), path


def photograph_split():
    """(training photographs, held-out photographs, held-out names): the reference VAE's own split."""
    train, held = reference_split()
    return list(train.values()), list(held.values()), list(held)


def crops(photos, size: int, count: int, seed: int, center: bool = False) -> torch.Tensor:
    """`count` crops `[count, 3, size, size]` in [-1, 1], cycling over `photos` (random, or centred)."""
    return photo_crops(photos, size, count, seed=seed, center_crop=center)


def _optional_class(name: str):
    """A bottleneck class exported by sd_sparse, or None before it exists."""
    import sd_sparse

    return getattr(sd_sparse, name, None)


def _accepts(cls, option: str) -> bool:
    return cls is not None and option in inspect.signature(cls.__init__).parameters


def configs(latent_channels: int, quick: bool, latent_std: float = 1.0) -> List[Dict]:
    """The grid: one dict per point, `family` naming its curve and `group` ("sparse" or "baseline") its side.
    Quantizer steps are multiples of `latent_std` (the training latents' std), so one grid serves 4-, 16-
    and 32-channel latents."""
    c, std = latent_channels, latent_std
    points = []

    def add(family, label, build):
        atoms = int(re.search(r"K=(\d+)", label).group(1)) if "K=" in label else 0
        points.append(dict(family=family, group=GROUPS[family], label=label, build=build, atoms=atoms))

    for k in [16, 64] if quick else [16, 64, 256, 1024, 4096]:
        add("VQ", f"K={k}", lambda k=k: VectorQuantizer(k, c))
    for stages in [2] if quick else [2, 4, 8, 16]:
        add("RVQ", f"K=256 × {stages}", lambda s=stages: ResidualVectorQuantizer(256, c, s))
    for stages in [2] if quick else [2, 4, 8, 16]:
        add(
            "RVQ (k-means init)",
            f"K=256 × {stages}",
            lambda s=stages: ResidualVectorQuantizer(256, c, s, kmeans_iters=10),
        )
    for levels in [5] if quick else [3, 5, 8, 16]:
        add("FSQ", f"L={levels}", lambda v=levels: FiniteScalarQuantizer(v, c))
    for bits in [3] if quick else [1, 2, 3, 4, 6, 8]:
        add("scalar", f"{bits} bits", lambda b=bits: ScalarQuantizer(c, b))
    coded_scalar = _optional_class("EntropyCodedScalarQuantizer")
    if coded_scalar is not None:  # step = f × std, levels to ±6 std
        for f in [0.5] if quick else [4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25, 0.125, 0.0625]:
            add(
                "entropy-coded scalar",
                f"step={f:g}σ",
                lambda f=f: coded_scalar(c, step=f * std, max_level=math.ceil(6 / f), patch_size=1),
            )
    # the dictionary quantizes its coefficients one at a time with the error fed forward (value_refit):
    # +1.6 dB per position and +8.7 dB on 2x2 patches at S=8 over plain rounding at the same rate
    per_position = [(64, 2, 4)] if quick else [(512, 1, 6), (512, 2, 6), (512, 2, 8), (256, 3, 8), (256, 4, 10)]
    patches = [(2, 256, 4, 5)] if quick else [(2, 1024, 2, 6), (2, 256, 4, 6), (2, 256, 4, 8), (2, 256, 8, 8)]
    patches += [] if quick else [(2, 256, 12, 8), (2, 256, 16, 10), (2, 4096, 2, 6), (2, 4096, 4, 8)]
    patches += [] if quick else [(2, 4096, 8, 8), (2, 1024, 16, 8), (2, 4096, 16, 8), (2, 4096, 32, 8)]
    patches += [] if quick else [(2, 4096, 16, 6), (2, 4096, 32, 6)]
    patches += (
        [] if quick else [(4, 1024, 8, 6), (4, 1024, 16, 6), (4, 1024, 32, 6), (4, 4096, 16, 8), (4, 4096, 32, 8)]
    )
    for p, k, s, b in [(1, *point) for point in per_position] + patches:
        add(
            "dictionary (per position)" if p == 1 else f"dictionary ({p}×{p} patches)",
            f"K={k} S={s} b={b}",
            lambda p=p, k=k, s=s, b=b: dictionary(c, k, s, p, b),
        )
    if _accepts(DictionaryBottleneck, "residual_step"):  # the residual after S atoms, coded with step f × std
        for p, k, s, b, f in (
            [(2, 256, 4, 6, 0.5)]
            if quick
            else [(2, 256, 4, 8, f) for f in [2, 1.5, 1, 0.5, 0.25, 0.125]]
            + [(2, 4096, 4, 6, f) for f in [2, 1.5, 1, 0.5, 0.25]]
            + [(2, 4096, 8, 6, f) for f in [2, 1]]
        ):
            add(
                "dictionary + coded residual",
                f"{p}×{p} K={k} S={s} b={b} step={f:g}σ",
                lambda p=p, k=k, s=s, b=b, f=f: dictionary(c, k, s, p, b, residual_step=f * std),
            )
    if _accepts(DictionaryBottleneck, "rate_lambda"):
        # λ weighs bits against the squared error summed over a 2×2 patch: g × std² × its 4c dimensions
        for s, g in [(8, 0.003)] if quick else [(s, g) for s in (8, 16) for g in (0.001, 0.002, 0.003, 0.005, 0.01)]:
            add(
                "dictionary (RD pursuit)",
                f"2×2 K=256 S={s} b=8 λ={g:g}σ²·dim",
                lambda s=s, g=g: dictionary(c, 256, s, 2, 8, rate_lambda=g * std**2 * 4 * c),
            )
    for s, b in [(2, 6)] if quick else [(2, 6), (4, 6), (8, 6)]:
        add(
            "LISTA (2×2 patches)",
            f"K=256 S={s} b={b}",
            lambda s=s, b=b: LISTABottleneck(256, c, sparsity=s, patch_size=2, value_bits=b),
        )
    return points


def dictionary(c: int, k: int, s: int, p: int, b: int, **options) -> DictionaryBottleneck:
    """A dictionary bottleneck initialised from data, coefficients quantized to `b` bits with refitting."""
    return DictionaryBottleneck(k, c, s, patch_size=p, init_from_data=True, value_bits=b, value_refit=True, **options)


#: each family's side in the comparison: sparse codes against the best of the baselines
GROUPS = {
    **dict.fromkeys(["VQ", "RVQ", "RVQ (k-means init)", "FSQ", "scalar", "entropy-coded scalar"], "baseline"),
    **dict.fromkeys(
        [
            "dictionary (per position)",
            "dictionary (2×2 patches)",
            "dictionary (4×4 patches)",
            "dictionary + coded residual",
            "dictionary (RD pursuit)",
            "LISTA (2×2 patches)",
        ],
        "sparse",
    ),
}


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


def compare(rows: List[Dict], bd_range) -> Dict:
    """Each family's Pareto front (bits/position, image PSNR), the best baseline front (the upper envelope of
    every baseline point), the sparse front (of every sparse point), the BD-rate / BD-PSNR of the sparse
    front and of each family against the best baseline front inside `bd_range`, the worst gap of the
    sparse front behind it, and the TARGET line."""

    def front_of(selected):
        return pareto_front([(r["bits_per_position"], r["image_psnr"]) for r in selected])

    families = list(dict.fromkeys(r["family"] for r in rows))
    fronts = {f: front_of([r for r in rows if r["family"] == f]) for f in families}
    baseline = front_of([r for r in rows if r["group"] == "baseline"])
    sparse = front_of([r for r in rows if r["group"] == "sparse"])
    window = tuple(bd_range)
    per_family = {}
    for f in families:
        mine = [r["bits_per_position"] for r in rows if r["family"] == f]
        per_family[f] = {
            "group": GROUPS[f],
            "points": len(mine),
            "rate_range": [min(mine), max(mine)],
            **bjontegaard_deltas(baseline, fronts[f], window),
        }
    every_gap = gaps(baseline, sparse, window)
    gap = worst_gap(baseline, sparse, window)
    deltas = bjontegaard_deltas(baseline, sparse, window)
    bd = "n/a" if deltas["bd_rate"] is None else f"{deltas['bd_rate']:+.1f}%"
    where = "n/a dB at n/a" if gap is None else f"{gap['gap_db']:.2f} dB at {gap['rate']:.2f}"
    return {
        "bd_range": list(window),
        "interpolation": "pchip (bjontegaard), rates in log scale",
        "fronts": fronts,
        "best_baseline_front": baseline,
        "sparse_front": sparse,
        "sparse_vs_best_baseline": deltas,
        "families": per_family,
        "gaps": every_gap,
        "worst_gap": gap,
        "target": f"TARGET sparse-vs-best-baseline BD-rate={bd} worst-gap={where} bits/position",
    }


def _number(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def plot(rows: List[Dict], comparison: Dict, path: str, title: str, pixels_per_position: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # up to 12 families: no colour twice
    for family, front in comparison["fronts"].items():
        mine = [r for r in rows if r["family"] == family]
        # every configuration as a dot; the thin line joins the family's best trade-offs (its Pareto front)
        (line,) = ax.plot(
            [r / pixels_per_position for r, _ in front], [p for _, p in front], marker="o", lw=1, ms=3, label=family
        )
        ax.scatter([r["bits_per_pixel"] for r in mine], [r["image_psnr"] for r in mine], color=line.get_color(), s=12)
    deltas = comparison["sparse_vs_best_baseline"]
    for key, label, color in [
        ("best_baseline_front", "best baseline front", "black"),
        (
            "sparse_front",
            f"sparse front (BD-rate {_number(deltas['bd_rate'], '+.1f', '%')}, "
            f"BD-PSNR {_number(deltas['bd_psnr'], '+.2f', ' dB')})",
            "crimson",
        ),
    ]:
        front = comparison[key]
        ax.plot(
            [r / pixels_per_position for r, _ in front],
            [p for _, p in front],
            color=color,
            lw=3,
            alpha=0.8,
            label=label,
        )
    for low_high in comparison["bd_range"]:
        ax.axvline(low_high / pixels_per_position, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("measured bits per pixel (codes file bytes × 8 / pixels)")
    ax.set_ylabel("image PSNR of the coded decode vs the plain decode (dB)")
    low, high = comparison["bd_range"]
    ax.set_title(
        f"{title}\nbold: sparse front vs best baseline front; BD-rate over {low:g}–{high:g} bits/position (dotted)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(header: Dict, options) -> str:
    """The report: the comparison's summary, one line per family, then every configuration."""
    comparison, rows = header["comparison"], header["rows"]
    deltas, gap = comparison["sparse_vs_best_baseline"], comparison["worst_gap"]
    low, high = comparison["bd_range"]
    lines = [
        f"# Rate–distortion on {os.path.basename(os.path.normpath(header['vae']))} ({header['machine']})",
        "",
        f"Latents {header['latent']} per {options.held_crop}² crop (std of the training latents "
        f"{header['latent_std']:.3f}); held-out photographs: {', '.join(header['held_out_photographs'])}; "
        f"the VAE's own reconstruction PSNR on them: {header['vae_held_out_psnr']:.2f} dB. PSNR: coded decode "
        "vs plain decode.",
        "",
        f"Sparse front against the best baseline front (BD over {low:g}–{high:g} bits/position, PCHIP, "
        f"`bjontegaard`): BD-rate {_number(deltas['bd_rate'], '+.1f', '%')}, BD-PSNR "
        f"{_number(deltas['bd_psnr'], '+.2f', ' dB')}; worst gap "
        + ("n/a" if gap is None else f"{gap['gap_db']:.2f} dB at {gap['rate']:.2f} bits/position")
        + " (positive: the best baseline is ahead).",
        "",
        f"`{comparison['target']}`",
        "",
        "| family | group | points | bits/position | BD-rate vs best baseline | BD-PSNR vs best baseline |",
        "|---|---|---:|---|---:|---:|",
    ]
    for family, f in comparison["families"].items():
        lines.append(
            f"| {family} | {f['group']} | {f['points']} | {f['rate_range'][0]:.2f}–{f['rate_range'][1]:.2f} | "
            f"{_number(f['bd_rate'], '+.1f', '%')} | {_number(f['bd_psnr'], '+.2f', ' dB')} |"
        )
    name = {(r["bits_per_position"], r["image_psnr"]): f"{r['family']} {r['config']}" for r in rows}
    lines += [
        "",
        "At each rate of the best baseline front inside the window (and the sparse front's range), the sparse "
        "front interpolated (PCHIP in log-rate):",
        "",
        "| bits/position | best baseline | its PSNR (dB) | sparse front (dB) | sparse − baseline (dB) |",
        "|---:|---|---:|---:|---:|",
    ]
    for g in comparison.get("gaps", []):
        lines.append(
            f"| {g['rate']:.2f} | {name.get((g['rate'], g['anchor_psnr']), '')} | {g['anchor_psnr']:.2f} | "
            f"{g['test_psnr']:.2f} | {-g['gap_db']:+.2f} |"
        )
    lines += [
        "",
        "| family | config | measured bits/position | claimed | bits/pixel | image PSNR (dB) | LPIPS |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['config']} | {r['bits_per_position']:.2f} | {r['claimed_bits_per_position']:.2f} | "
            f"{r['bits_per_pixel']:.4f} | {r['image_psnr']:.2f} | {_number(r['lpips'], '.4f')} |"
        )
    return "\n".join(lines) + "\n"


def parse_options(argv=None):
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default=None, help="any VAE folder sd_sparse loads (default: a reference VAE)")
    parser.add_argument(
        "--reference_channels", type=int, choices=[4, 16, 32], default=4, help="the shipped reference VAE to use"
    )
    parser.add_argument("--crop", type=int, default=128, help="training crop side")
    parser.add_argument("--train_crops", type=int, default=256)
    parser.add_argument("--held_crop", type=int, default=256, help="held-out crop side")
    parser.add_argument("--held_crops", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300, help="fitting steps per point")
    parser.add_argument("--batch_size", type=int, default=16, help="latents per fitting step")
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--quick", action="store_true", help="a few points and steps (smoke run)")
    parser.add_argument(
        "--max_atoms",
        type=int,
        default=None,
        help="leave out configurations with more atoms / codes per stage than this (a faster grid)",
    )
    parser.add_argument(
        "--only", "--families", nargs="+", default=None, help="families (or groups: sparse, baseline) to run"
    )
    parser.add_argument(
        "--bd_range",
        nargs=2,
        type=float,
        default=[8.0, 128.0],
        metavar=("LOW", "HIGH"),
        help="the rate window of BD-rate, BD-PSNR and the worst gap, in bits per latent position",
    )
    parser.add_argument("--perceptual_weights", default=None, help="LPIPS weights folder (else looked up locally)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--output_dir", default=RESULTS)
    parser.add_argument(
        "--extend",
        default=None,
        metavar="JSON",
        help="a previous result of the same VAE and protocol: its rows are kept and only the points it lacks are run",
    )
    options = parser.parse_args(argv)
    if not 0 < options.bd_range[0] < options.bd_range[1]:
        raise UserError(f"--bd_range LOW HIGH: expected 0 < LOW < HIGH bits per position, got {options.bd_range}.")
    unknown = [name for name in options.only or [] if name not in GROUPS and name not in GROUPS.values()]
    if unknown:
        raise UserError(
            f"--only {' '.join(unknown)}: not a family or group; choose from {sorted(GROUPS)}, sparse, baseline."
        )
    if options.max_atoms is not None and options.max_atoms < 1:
        raise UserError(f"--max_atoms must be >= 1 (atoms / codes per configuration), got {options.max_atoms}.")
    if options.extend is not None and not os.path.isfile(options.extend):
        raise UserError(f"--extend {options.extend}: no such file (a rate_distortion*.json an earlier run wrote).")
    if options.quick:
        options.steps, options.train_crops, options.held_crops = min(options.steps, 30), 32, 2
    return options


def main(argv=None):
    options = parse_options(argv)
    torch.manual_seed(0)
    vae, vae_path = load_vae(options.vae, options.reference_channels)
    train_photos, held_photos, held_names = photograph_split()
    with torch.no_grad():
        train = encode_latents(vae, crops(train_photos, options.crop, options.train_crops, seed=1)).float()
        held_images = crops(held_photos, options.held_crop, options.held_crops, seed=2)
        held = encode_latents(vae, held_images).float()
    vae_psnr = evaluate(PlainRoundTrip(vae), held_images, batch_size=8, with_flip=False)["image_psnr"]
    factor = held_images.shape[-1] // held.shape[-1]
    latent_std = float(train.std())
    grid = configs(held.shape[1], options.quick, latent_std)
    if options.only:
        grid = [p for p in grid if p["family"] in options.only or p["group"] in options.only]
    if options.max_atoms:
        grid = [p for p in grid if p.get("atoms", 0) <= options.max_atoms]
    from sd_sparse.losses import load_lpips

    lpips = load_lpips(options.perceptual_weights)  # None (with a warning) without local weights
    if options.extend:  # keep the earlier rows, run only the points they lack
        kept = previous_rows(options.extend, options, vae_path)
        done = {(r["family"], r["config"]) for r in kept}
        grid = [p for p in grid if (p["family"], p["label"]) not in done]
    rows = []
    for point in grid:
        torch.manual_seed(0)
        start = time.perf_counter()
        bottleneck = fit(point["build"](), train, options.steps, options.batch_size, options.learning_rate, seed=0)
        row = {"family": point["family"], "group": point["group"], "config": point["label"]}
        row.update(score(bottleneck, held, vae, lpips, factor**2), fit_seconds=time.perf_counter() - start)
        rows.append(row)
        print(
            f"{row['family']:28s} {row['config']:24s} {row['bits_per_position']:7.2f} bits/position "
            f"({row['claimed_bits_per_position']:6.2f} claimed) {row['bits_per_pixel']:.4f} bpp  "
            f"PSNR {row['image_psnr']:6.2f} dB"
        )
    if options.extend:
        rows = kept + rows
    comparison = compare(rows, options.bd_range)
    os.makedirs(options.output_dir, exist_ok=True)
    name = os.path.join(options.output_dir, f"rate_distortion{options.tag}")
    header = {
        "vae": vae_path,
        "vae_held_out_psnr": vae_psnr,
        "latent": list(held.shape[1:]),
        "latent_std": latent_std,
        "pixels_per_position": factor**2,
        "held_out_photographs": held_names,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
        "protocol": {k: v for k, v in vars(options).items() if k not in ("output_dir", "tag")},
        "rows": rows,
        "comparison": comparison,
    }
    with open(name + ".json", "w") as f:
        json.dump(header, f, indent=2)
    with open(name + ".md", "w") as f:
        f.write(markdown(header, options))
    vae_name = os.path.basename(os.path.normpath(vae_path))
    plot(rows, comparison, name + ".png", f"Rate–distortion, held-out photographs ({vae_name})", factor**2)
    print(f"wrote {name}.json, .md, .png")
    print(comparison["target"])
    return header


#: what must agree for rows of two runs to be compared
SAME_PROTOCOL = ("crop", "train_crops", "held_crop", "held_crops", "steps", "batch_size", "learning_rate")


def previous_rows(path: str, options, vae_path: str) -> List[Dict]:
    """The rows of an earlier result `path` of the same VAE and protocol; a `UserError` naming `--extend` when
    the VAE or the protocol differ."""
    try:
        with open(path) as f:
            previous = json.load(f)
        previous["rows"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"--extend {path}: not a result of this benchmark ({type(err).__name__}: {err}).") from None
    mine = {k: getattr(options, k) for k in SAME_PROTOCOL}
    theirs = {k: previous.get("protocol", {}).get(k) for k in SAME_PROTOCOL}
    if mine != theirs or os.path.abspath(previous.get("vae", "")) != os.path.abspath(vae_path):
        raise UserError(
            f"--extend {path}: another VAE or protocol ({previous.get('vae')}, {theirs}); this run: {vae_path}, {mine}."
        )
    return previous["rows"]


class PlainRoundTrip(torch.nn.Module):
    """The VAE's own encode → decode, as a model whose output has a `sample` (for `evaluate`)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> SimpleNamespace:
        from sd_sparse.autoencoders import decode_latents

        return SimpleNamespace(sample=decode_latents(self.vae, encode_latents(self.vae, images)))


if __name__ == "__main__":
    with exit_on_user_error("rate_distortion.py"):
        main()
