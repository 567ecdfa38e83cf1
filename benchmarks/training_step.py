"""What does sparse coding cost a training step? A DL-VAE step against a VQ-VAE step.

    python benchmarks/training_step.py                             # the trainer's defaults, CPU
    python benchmarks/training_step.py --device cuda --tag _cuda

Both models are `train/train_dlvae.py`'s default (LASERS encoder/decoder, 16 latent channels, 32²
crops, 16 crops a step), built by the trainer's own `build_model`: the DL-VAE is the default
(dictionary bottleneck, K=512 atoms, S=5 by Batch-OMP), the VQ-VAE adds `--bottleneck_type vq` (a
codebook of the same K=512 vectors, EMA updates) and changes nothing else. One step is forward,
backward and Adam on a fixed batch. The variants run interleaved, round after round, in one process,
and the ratio is that of the medians.
Target (issue 12): a DL-VAE training step costs at most 1.1× a VQ-VAE step.
Writes benchmarks/results/training_step{tag}.{json,md}.

`make_step`, `step_parser` (`parse_step_options`) and `compare_steps` serve the other step benchmarks too
(quantized_training_step.py, training_throughput.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from sd_sparse.cli import SnakeCaseArgumentParser
from sd_sparse.training import build_parser
from sd_sparse.training.trainer import build_model

RESULTS = os.path.join(os.path.dirname(__file__), "results")
VARIANTS = {  # trainer flags; the first is the baseline of the ratios
    "VQ-VAE": ["--bottleneck_type", "vq"],
    "DL-VAE": [],
}
TARGET = 1.1  # DL-VAE step / VQ-VAE step


def make_step(flags, device: str, seed: int = 0):
    """A closure running one training step of the trainer's default model with `flags`, and its batch size."""
    args = build_parser().parse_args(flags)
    torch.manual_seed(seed)
    model = build_model(args).to(device).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    batch = (torch.rand(args.train_batch_size, 3, args.resolution, args.resolution, generator=generator) * 2 - 1).to(
        device
    )

    def step():
        out = model(batch)
        loss = torch.nn.functional.mse_loss(out.sample, batch) + out.bottleneck_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, args.train_batch_size


def step_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a step comparison: --device, --rounds, --steps, --tag, --output_dir."""
    parser = SnakeCaseArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--output_dir", default=RESULTS)
    return parser


def time_steps(variants: dict, device: str, rounds: int, steps: int, warmup: int = 3) -> dict:
    """{name: (seconds a step in each round, batch size)} for `variants` {name: trainer flags}, interleaved."""

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    closures = {name: make_step(flags, device) for name, flags in variants.items()}
    for step, _ in closures.values():  # warm-up (allocations, the codebooks' data initialisation)
        for _ in range(warmup):
            step()
    sync()
    times = {name: [] for name in closures}
    for _ in range(rounds):
        for name, (step, _) in closures.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: (times[name], closures[name][1]) for name in closures}


def parse_step_options(doc: str, argv=None) -> argparse.Namespace:
    """`step_parser(doc)`'s options; one line and exit 2 for a CUDA device on a machine without one."""
    parser = step_parser(doc)
    options = parser.parse_args(argv)
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {options.device}: no CUDA device is available here")
    return options


def compare_steps(variants: dict, options, name: str, title: str, settings: str, baseline: str, extra=None) -> list:
    """Times `variants` {name: trainer flags} interleaved and writes `{name}{tag}.json/.md` under `options.output_dir`.

    `options` has device, rounds, steps, tag and output_dir (`step_parser`). Returns rows with the
    median ms a step, images/s and `ratio_to_{baseline}` (lower case, '-' as '_'), the ratio of the
    medians to that of the first variant, which `baseline` names in the table ("× {baseline}").
    `extra` adds entries to the JSON header.
    """
    timed = time_steps(variants, options.device, options.rounds, options.steps)
    ratio_key = "ratio_to_" + baseline.lower().replace("-", "_")
    base = statistics.median(next(iter(timed.values()))[0])
    rows = []
    for variant, (values, batch_size) in timed.items():
        median = statistics.median(values)
        rows.append(
            {
                "variant": variant,
                "median_step_ms": 1000 * median,
                "images_per_second": batch_size / median,
                ratio_key: median / base,
            }
        )
        print(f"{variant:28s} {1000 * median:8.2f} ms/step  {median / base:.3f}× {baseline}")
    machine = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}"
    if options.device.startswith("cuda"):
        machine = torch.cuda.get_device_name() + f", torch {torch.__version__}"
    header = {"machine": machine, "device": options.device, "rounds": options.rounds, "steps": options.steps}
    os.makedirs(options.output_dir, exist_ok=True)
    path = os.path.join(options.output_dir, f"{name}{options.tag}")
    with open(path + ".json", "w") as f:
        json.dump({**header, **(extra or {}), "rows": rows}, f, indent=2)
    lines = [
        f"# {title} ({machine})",
        "",
        f"{settings}; median of {options.rounds} interleaved rounds of {options.steps} steps each.",
        "",
        f"| variant | ms / step | images / s | × {baseline} |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['variant']} | {r['median_step_ms']:.2f} | {r['images_per_second']:.0f} | {r[ratio_key]:.3f} |"
            for r in rows
        ),
    ]
    with open(path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}.json, .md")
    return rows


def main(argv=None):
    options = parse_step_options(__doc__, argv)
    rows = compare_steps(
        VARIANTS,
        options,
        "training_step",
        "DL-VAE against VQ-VAE training step",
        "train_dlvae.py defaults (DL-VAE); VQ-VAE: the same with `--bottleneck_type vq`",
        "VQ-VAE",
        extra={"variants": VARIANTS},
    )
    ratio = next(r["ratio_to_vq_vae"] for r in rows if r["variant"] == "DL-VAE")
    print(f"TARGET DL-VAE step / VQ-VAE step: {ratio:.2f}x (target <= {TARGET})")
    return rows


if __name__ == "__main__":
    main()
