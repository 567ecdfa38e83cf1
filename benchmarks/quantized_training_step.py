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

from training_step import compare_steps, make_step, parse_step_options  # noqa: F401 (make_step: it lived here)

VARIANTS = {
    "float coefficients": [],
    "value_bits 6": ["--value_bits", "6"],
    "value_bits 6, value_refit": ["--value_bits", "6", "--value_refit"],
}


def main(argv=None):
    options = parse_step_options(__doc__, argv)
    return compare_steps(
        VARIANTS,
        options,
        "quantized_training_step",
        "Training step with quantized coefficients",
        "train_dlvae.py defaults",
        "float",
    )


if __name__ == "__main__":
    main()
