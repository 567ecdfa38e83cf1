"""The training and fitting programs, by name: what `train/*.py` and `python -m sd_sparse.training NAME` run.

Each `train_*` program is the one Accelerate trainer (`sd_sparse.training.trainer`) with its own defaults;
`fit_sd_bottleneck` fits bottlenecks on a frozen VAE's latents; `train_prior` trains a learned prior over a frozen
bottleneck's codes of them. From a checkout,
`accelerate launch train/train_dlgan.py ...`; from an installed package,
`accelerate launch -m sd_sparse.training train_dlgan ...` (or `python -m sd_sparse.training train_dlgan ...`).
"""

from __future__ import annotations

import importlib
from typing import Dict, Optional, Sequence

from ..errors import UserError

#: the trainer's defaults of each `train_*` program
TRAINER_DEFAULTS: Dict[str, Dict] = {
    "train_dlvae": {"bottleneck_type": "dictionary"},
    "train_dlgan": {"bottleneck_type": "dictionary", "gan": True, "discriminator_start_step": 500},
    "train_vqvae": {"bottleneck_type": "vq"},
    "train_vqgan": {"bottleneck_type": "vq", "gan": True, "discriminator_start_step": 500},
    "train_scvae": {"bottleneck_type": "lista", "latent_attention": True},
    "train_vae": {
        "model_type": "kl",
        "latent_channels": 4,
        "block_out_channels": [64, 128, 128, 128],
        "resolution": 64,
        "learning_rate": 4.5e-6 * 16,
        "output_dir": "autoencoder-kl",
    },
}
#: the programs with a `main(argv)` of their own, in the module `sd_sparse.training.<name>`
FROZEN_VAE_PROGRAMS = ("fit_sd_bottleneck", "train_prior")
PROGRAMS = (*TRAINER_DEFAULTS, *FROZEN_VAE_PROGRAMS)


def run_program(name: str, argv: Optional[Sequence[str]] = None):
    """Runs the program `name` (one of `PROGRAMS`) on the flags `argv` (default: `sys.argv[1:]`)."""
    if name in FROZEN_VAE_PROGRAMS:
        module = importlib.import_module(f"{__package__}.{name}")
        return module.main(argv)
    if name not in TRAINER_DEFAULTS:
        raise UserError(f"`name` must be one of {', '.join(PROGRAMS)}, got {name!r}.")
    from .trainer import main as train_main

    return train_main(argv, defaults=TRAINER_DEFAULTS[name], prog=f"{name}.py")
