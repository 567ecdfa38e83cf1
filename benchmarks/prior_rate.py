"""How much a learned prior (`CodePrior`) shrinks codes files, and what it costs to train and sample.

    python benchmarks/prior_rate.py                          # the 32-channel reference VAE shipped in sd_sparse
    python benchmarks/prior_rate.py --quick                  # one bottleneck, fewer steps: a smoke run
    python benchmarks/prior_rate.py --vae path/to/vae        # any VAE folder sd_sparse's load_vae takes

Protocol (the rate–distortion benchmark's): the shipped photographs are split by image; each bottleneck is
fitted on latents of random training crops (`--fit_steps`), frozen, and codes a pool of `--pool` random
training crops of `--crop`² once. A `CodePrior` trains on minibatches of those codes (`--steps` Adam steps).
The held-out crops (`--held_crops` of `--held_crop`², photographs never seen) are coded twice: the codes
file against the bottleneck's usage prior and fitted tables (`codes.to_bytes(bottleneck)`) and with the
prior (`codes.to_bytes(bottleneck, prior=prior)`): the same codes, so the same PSNR. The prior-coded file
must decode bit for bit, also with another thread count. Timings: each family's training step (forward,
backward, Adam), interleaved round by round in one run, and sampling one image's codes. Samples: 4 images
per prior, drawn at the held-out size and decoded by the VAE, in a labelled grid.
The last line is `TARGET prior-vs-usage-prior saving=...% ...` for the first bottleneck.
Writes benchmarks/results/prior_rate{tag}.{json,md} and prior_samples{tag}.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Dict, List

import torch

from sd_sparse import Codes, DictionaryBottleneck, ResidualVectorQuantizer, VectorQuantizer
from sd_sparse.autoencoders import encode_latents
from sd_sparse.autoencoders.scaling import decode_latents
from sd_sparse.cli import SnakeCaseArgumentParser
from sd_sparse.data import photo_crops, reference_split
from sd_sparse.errors import UserError, exit_on_user_error
from sd_sparse.evaluation import evaluate
from sd_sparse.priors import CodePrior
from sd_sparse.training import fit

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def dictionary(c: int, k: int, s: int, p: int, b: int) -> DictionaryBottleneck:
    """The rate–distortion benchmark's dictionary: initialised from data, `b`-bit coefficients with refitting."""
    return DictionaryBottleneck(k, c, s, patch_size=p, init_from_data=True, value_bits=b, value_refit=True)


def bottlenecks(c: int, quick: bool) -> List[Dict]:
    """The bottlenecks whose codes get a prior: sparse codes and VQ / RVQ at nearby rates and PSNR."""
    points = [
        dict(name="dictionary 2×2 K=256 S=8 b=8", build=lambda: dictionary(c, 256, 8, 2, 8)),
        dict(name="RVQ K=256 × 4", build=lambda: ResidualVectorQuantizer(256, c, 4, kmeans_iters=10)),
        dict(name="dictionary 2×2 K=1024 S=2 b=6", build=lambda: dictionary(c, 1024, 2, 2, 6)),
        dict(name="VQ K=1024", build=lambda: VectorQuantizer(1024, c)),
    ]
    return points[:1] if quick else points


#: the bottlenecks of the benchmark, by name (`--only`)
NAMES = [point["name"] for point in bottlenecks(4, quick=False)]


@torch.no_grad()
def latents_of(vae, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The VAE's latents of `images`, `batch_size` at a time (memory flat in the number of crops)."""
    return torch.cat([encode_latents(vae, images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def train_prior(prior: CodePrior, pool: Codes, steps: int, batch_size: int, learning_rate: float, seed: int):
    """Adam on random minibatches of the pool's images (cosine-decayed learning rate); returns the losses."""
    optimizer = torch.optim.Adam(prior.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    prior.train()
    for _ in range(steps):
        picks = torch.randint(0, pool.num_images, (batch_size,), generator=generator)
        loss = prior(select(pool, picks)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return prior.eval(), losses


def select(codes: Codes, picks: torch.Tensor) -> Codes:
    """The codes of images `picks` `[n]` (any order, repeats allowed)."""
    per_image = codes.indices.shape[0] // codes.num_images
    rows = (picks[:, None] * per_image + torch.arange(per_image)).reshape(-1)
    layout = codes.layout.clone()
    layout[0] = picks.shape[0]
    pick = lambda t: None if t is None else t[rows]  # noqa: E731
    return Codes(
        indices=codes.indices[rows],
        coefficients=pick(codes.coefficients),
        layout=layout,
        signature=codes.signature,
        levels=pick(codes.levels),
        residual=pick(codes.residual),
    )


def step_seconds(priors: Dict[str, CodePrior], pools: Dict[str, Codes], batch_size: int, rounds: int) -> Dict:
    """Median seconds of one training step (forward, backward, Adam) of each prior, interleaved by rounds."""
    optimizers = {name: torch.optim.Adam(prior.parameters(), lr=0.0) for name, prior in priors.items()}
    times = {name: [] for name in priors}
    generator = torch.Generator().manual_seed(0)
    for _ in range(rounds):
        for name, prior in priors.items():
            batch = select(pools[name], torch.randint(0, pools[name].num_images, (batch_size,), generator=generator))
            start = time.perf_counter()
            loss = prior(batch).loss
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[1:] if len(t) > 1 else t) for name, t in times.items()}


def measure(name, bottleneck, prior, held_codes, held_latents, vae, losses, fit_seconds) -> Dict:
    """Bytes of the held-out codes with the usage prior and with `prior`, and the exact round trip."""
    positions = held_codes.num_images * held_codes.latent_shape[2] * held_codes.latent_shape[3]
    start = time.perf_counter()
    baseline = held_codes.to_bytes(bottleneck)
    with_prior = held_codes.to_bytes(bottleneck, prior=prior)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    back = Codes.from_bytes(with_prior, bottleneck, prior=prior)
    decode_seconds = time.perf_counter() - start
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        other_threads = held_codes.to_bytes(bottleneck, prior=prior) == with_prior
        other_threads &= exact(Codes.from_bytes(with_prior, bottleneck, prior=prior), held_codes)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        model_bits = float(prior(held_codes).loss)
    metrics = evaluate(bottleneck, held_latents, vae=vae, batch_size=8, with_flip=False)  # coded vs plain decode
    return {
        "bottleneck": name,
        "usage_prior_bits_per_position": 8 * len(baseline) / positions,
        "prior_bits_per_position": 8 * len(with_prior) / positions,
        "prior_model_bits_per_position": model_bits,
        "saving": 1 - len(with_prior) / len(baseline),
        "bits_per_image_usage_prior": 8 * len(baseline) / held_codes.num_images,
        "bits_per_image_prior": 8 * len(with_prior) / held_codes.num_images,
        "bit_exact": exact(back, held_codes),
        "bit_exact_other_threads": bool(other_threads),
        "image_psnr": metrics["image_psnr"],
        "final_train_bits_per_position": statistics.fmean(losses[-50:]),
        "prior_parameters": sum(p.numel() for p in prior.parameters()),
        "fit_seconds": fit_seconds,
        "coding_seconds": {"encode both files": encode_seconds, "decode with prior": decode_seconds},
    }


def exact(a: Codes, b: Codes) -> bool:
    same = torch.equal(a.indices, b.indices)
    for field in ("coefficients", "levels", "residual"):
        x, y = getattr(a, field), getattr(b, field)
        same &= (x is None) == (y is None) and (x is None or torch.equal(x.cpu(), y.cpu()))
    return bool(same)


def sample_grid(samples: Dict[str, torch.Tensor], rows: List[Dict]):
    """A PIL grid: one row of decoded samples `[4, 3, H, W]` per prior, titled with its bottleneck and rate."""
    from sd_sparse.evaluation.image_grid import labelled_grid

    panels, captions, titles = [], [], []
    for row in rows:
        images = samples[row["bottleneck"]]
        panels.append([(((x.permute(1, 2, 0) + 1) * 127.5).round().byte().cpu().numpy()) for x in images])
        captions.append([f"sample {i + 1}" for i in range(images.shape[0])])
        name = row["bottleneck"].replace("×", "x")  # the grid's font has no ×
        titles.append(f"{name}: {row['prior_bits_per_position']:.1f} bits/position")
    title = "Codes drawn by a CodePrior, decoded by the VAE (seed 1)"
    return labelled_grid(panels, captions, panel_size=160, row_titles=titles, title=title)


def markdown(report: Dict) -> str:
    rows = report["rows"]
    lines = [
        f"# A learned prior over codes on {os.path.basename(os.path.normpath(report['vae']))} ({report['machine']})",
        "",
        f"Latents {report['latent']} per {report['protocol']['held_crop']}² crop; held-out photographs: "
        f"{', '.join(report['held_out_photographs'])} ({report['protocol']['held_crops']} crops). Prior: "
        f"`CodePrior` (embedding {report['protocol']['embedding_dim']}, hidden {report['protocol']['hidden_dim']}, "
        f"{report['protocol']['context_size']}×{report['protocol']['context_size']} masked context), "
        f"{report['protocol']['steps']} Adam steps of {report['protocol']['batch_size']} training crops "
        f"({report['protocol']['pool']} crops of {report['protocol']['crop']}²). Same codes, so the same PSNR; "
        "rates are measured bytes of the codes files.",
        "",
        f"`{report['target']}`",
        "",
        "| bottleneck | image PSNR (dB) | usage prior (bits/position) | learned prior (bits/position) | saving |"
        " prior's own estimate | bits/image (usage → learned) | bit-exact (this / other thread count) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bottleneck']} | {r['image_psnr']:.2f} | {r['usage_prior_bits_per_position']:.2f} | "
            f"{r['prior_bits_per_position']:.2f} | {100 * r['saving']:.1f}% | {r['prior_model_bits_per_position']:.2f} | "
            f"{r['bits_per_image_usage_prior']:.0f} → {r['bits_per_image_prior']:.0f} | "
            f"{r['bit_exact']} / {r['bit_exact_other_threads']} |"
        )
    lines += [
        "",
        f"Speed ({report['machine']}; {report['protocol']['batch_size']} crops of {report['protocol']['crop']}² per "
        "training step; sampling draws the codes of one held-out-size image cell by cell, float network; coding "
        "runs the fixed-point network on all held-out crops):",
        "",
        "| bottleneck | prior parameters | training step (ms, median, interleaved) | sampling (s/image) |"
        " encode both files (s) | decode with prior (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bottleneck']} | {r['prior_parameters']:,} | {1000 * r['training_step_seconds']:.1f} | "
            f"{r['sampling_seconds_per_image']:.2f} | {r['coding_seconds']['encode both files']:.2f} | "
            f"{r['coding_seconds']['decode with prior']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def parse_options(argv=None):
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default=None, help="any VAE folder sd_sparse loads (default: a reference VAE)")
    parser.add_argument("--reference_channels", type=int, choices=[4, 16, 32], default=32)
    parser.add_argument("--crop", type=int, default=128, help="training crop side")
    parser.add_argument("--fit_crops", type=int, default=256, help="training crops the bottleneck is fitted on")
    parser.add_argument("--fit_steps", type=int, default=300, help="the bottleneck's fitting steps")
    parser.add_argument("--pool", type=int, default=2048, help="training crops whose codes the prior learns")
    parser.add_argument("--held_crop", type=int, default=256)
    parser.add_argument("--held_crops", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500, help="the prior's Adam steps")
    parser.add_argument("--batch_size", type=int, default=32, help="crops per prior step")
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--embedding_dim", type=int, default=32)
    parser.add_argument("--hidden_dim", type=int, default=128)
    parser.add_argument("--context_size", type=int, default=5)
    parser.add_argument("--timing_rounds", type=int, default=12, help="interleaved rounds of training-step timing")
    parser.add_argument("--quick", action="store_true", help="one bottleneck, fewer crops and steps (smoke run)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help=f"bottlenecks to run, of: {NAMES}")
    parser.add_argument("--tag", default="")
    parser.add_argument("--output_dir", default=RESULTS)
    options = parser.parse_args(argv)
    for name in ("crop", "fit_crops", "fit_steps", "pool", "held_crop", "held_crops", "steps", "batch_size"):
        if getattr(options, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(options, name)}.")
    if not options.learning_rate > 0:
        raise UserError(f"--learning_rate must be > 0, got {options.learning_rate}.")
    unknown = [name for name in options.only or [] if name not in NAMES]
    if unknown:
        raise UserError(f"--only {unknown}: not a bottleneck of this benchmark; choose from {NAMES}.")
    if options.quick:
        options.fit_steps, options.fit_crops, options.pool = min(options.fit_steps, 100), 64, 128
        options.steps, options.held_crops, options.timing_rounds = min(options.steps, 150), 2, 3
        options.tag = options.tag or "_quick"
    return options


def main(argv=None):
    options = parse_options(argv)
    from sd_sparse.autoencoders import reference_vae_path
    from sd_sparse.autoencoders.loading import load_vae

    vae_path = options.vae or reference_vae_path(options.reference_channels)
    vae = load_vae(vae_path).eval()
    train_photos, held = reference_split()
    held_names = list(held)
    torch.manual_seed(0)
    photos = list(train_photos.values())
    fit_latents = latents_of(vae, photo_crops(photos, options.crop, options.fit_crops, seed=1))
    pool_latents = latents_of(vae, photo_crops(photos, options.crop, options.pool, seed=3))
    held_latents = latents_of(vae, photo_crops(list(held.values()), options.held_crop, options.held_crops, seed=2))
    channels = held_latents.shape[1]
    rows, priors, pools, samples = [], {}, {}, {}
    points = bottlenecks(channels, options.quick)
    if options.only:
        points = [p for p in bottlenecks(channels, quick=False) if p["name"] in options.only]
    for point in points:
        torch.manual_seed(0)
        start = time.perf_counter()
        bottleneck = fit(point["build"](), fit_latents.float(), options.fit_steps, 16, 3e-3, seed=0)
        fit_seconds = time.perf_counter() - start
        pool = bottleneck.encode(pool_latents.float())
        held_codes = bottleneck.encode(held_latents.float())
        torch.manual_seed(0)
        prior = CodePrior.from_bottleneck(
            bottleneck, embedding_dim=options.embedding_dim, hidden_dim=options.hidden_dim,
            context_size=options.context_size,
        )  # fmt: skip
        start = time.perf_counter()
        prior, losses = train_prior(prior, pool, options.steps, options.batch_size, options.learning_rate, seed=0)
        train_seconds = time.perf_counter() - start
        row = measure(point["name"], bottleneck, prior, held_codes, held_latents.float(), vae, losses, fit_seconds)
        row["train_seconds"] = train_seconds
        start = time.perf_counter()
        prior.sample(bottleneck, *held_latents.shape[2:], num_images=1, generator=torch.Generator().manual_seed(0))
        row["sampling_seconds_per_image"] = time.perf_counter() - start
        drawn = prior.sample(
            bottleneck, *held_latents.shape[2:], num_images=4, generator=torch.Generator().manual_seed(1)
        )
        with torch.no_grad():
            samples[point["name"]] = decode_latents(vae, bottleneck.decode(drawn)).clamp(-1, 1)
        rows.append(row)
        priors[point["name"]], pools[point["name"]] = prior, pool
        print(
            f"{row['bottleneck']:34s} PSNR {row['image_psnr']:6.2f} dB  usage prior "
            f"{row['usage_prior_bits_per_position']:6.2f} → prior {row['prior_bits_per_position']:6.2f} bits/position "
            f"({100 * row['saving']:.1f}% smaller; model {row['prior_model_bits_per_position']:.2f}; "
            f"bit-exact {row['bit_exact']}/{row['bit_exact_other_threads']})",
            flush=True,
        )
    timing = step_seconds(priors, pools, options.batch_size, options.timing_rounds)
    for row in rows:
        row["training_step_seconds"] = timing[row["bottleneck"]]
    first = rows[0]
    target = (
        f"TARGET prior-vs-usage-prior saving={100 * first['saving']:.1f}% ({first['bottleneck']}: "
        f"{first['usage_prior_bits_per_position']:.2f} → {first['prior_bits_per_position']:.2f} bits/position) "
        f"bit-exact={first['bit_exact'] and first['bit_exact_other_threads']}"
    )
    report = {
        "vae": vae_path,
        "latent": list(held_latents.shape[1:]),
        "held_out_photographs": held_names,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
        "protocol": {k: v for k, v in vars(options).items() if k not in ("output_dir", "tag")},
        "rows": rows,
        "target": target,
    }
    os.makedirs(options.output_dir, exist_ok=True)
    name = os.path.join(options.output_dir, f"prior_rate{options.tag}")
    with open(name + ".json", "w") as f:
        json.dump(report, f, indent=2)
    with open(name + ".md", "w") as f:
        f.write(markdown(report))
    sample_grid(samples, rows).save(os.path.join(options.output_dir, f"prior_samples{options.tag}.png"))
    print(f"wrote {name}.json, .md and prior_samples{options.tag}.png")
    print(target)
    return report


if __name__ == "__main__":
    with exit_on_user_error("prior_rate.py"):
        main()
