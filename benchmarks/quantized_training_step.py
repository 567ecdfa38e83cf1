"""What do quantized coefficients cost a training step? DL-VAE steps with float and quantized codes.

    python benchmarks/quantized_training_step.py                 # the trainer's defaults, CPU
    python benchmarks/quantized_training_step.py --device cuda

The model is `train/train_dlvae.py`'s default (LASERS DL-VAE, K=512, S=5, 16 latent channels, 32²
crops, 16 crops a step), built by the trainer's own `build_model`. One step is forward, backward and
Adam on a fixed batch. The variants run interleaved, round after round, in one process, and each
ratio is that of the medians: float coefficients; `--value_bits 6`; `--value_bits 6 --value_refit`.
Target (issue 10): a step with quantized coefficients costs at most 1.1× one without.
Writes benchmarks/results/quantized_training_step{tag}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from sd_sparse.training import build_parser
from sd_sparse.training.trainer import build_model

RESULTS = os.path.join(os.path.dirname(__file__), "results")
VARIANTS = {
    "float coefficients": [],
    "value_bits 6": ["--value_bits", "6"],
    "value_bits 6, value_refit": ["--value_bits", "6", "--value_refit"],
}


def make_step(flags, device: str, seed: int = 0):
    """A closure running one training step of the trainer's default model with `flags`."""
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--output_dir", default=RESULTS)
    options = parser.parse_args(argv)

    def sync():
        if options.device.startswith("cuda"):
            torch.cuda.synchronize()

    steps = {name: make_step(flags, options.device) for name, flags in VARIANTS.items()}
    for step, _ in steps.values():  # warm-up (allocations, the dictionaries' data initialisation)
        for _ in range(3):
            step()
    sync()
    times = {name: [] for name in steps}
    for _ in range(options.rounds):
        for name, (step, _) in steps.items():
            start = time.perf_counter()
            for _ in range(options.steps):
                step()
            sync()
            times[name].append((time.perf_counter() - start) / options.steps)
    base = statistics.median(times["float coefficients"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(
            {
                "variant": name,
                "median_step_ms": 1000 * median,
                "images_per_second": steps[name][1] / median,
                "ratio_to_float": median / base,
            }
        )
        print(f"{name:28s} {1000 * median:8.2f} ms/step  {median / base:.3f}× float")
    machine = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}"
    if options.device.startswith("cuda"):
        machine = torch.cuda.get_device_name() + f", torch {torch.__version__}"
    header = {"machine": machine, "device": options.device, "rounds": options.rounds, "steps": options.steps}
    os.makedirs(options.output_dir, exist_ok=True)
    name = os.path.join(options.output_dir, f"quantized_training_step{options.tag}")
    with open(name + ".json", "w") as f:
        json.dump({**header, "rows": rows}, f, indent=2)
    lines = [
        f"# Training step with quantized coefficients ({machine})",
        "",
        f"train_dlvae.py defaults; median of {options.rounds} interleaved rounds of {options.steps} steps each.",
        "",
        "| variant | ms / step | images / s | × float |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['variant']} | {r['median_step_ms']:.2f} | {r['images_per_second']:.0f} | {r['ratio_to_float']:.3f} |"
            for r in rows
        ),
    ]
    with open(name + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {name}.json, .md")
    return rows


if __name__ == "__main__":
    main()
