"""The reference VAE shipped with sd_sparse: the default `--vae` of `sd-sparse compress | decompress` and
the demo's VAE. Trained here (not random weights); how is in its folder's README.md."""

from __future__ import annotations

import os

#: the folder of the reference `AutoencoderKL` (config.json + safetensors)
REFERENCE_VAE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "reference_vae")

#: the `--vae` value that names the reference VAE
REFERENCE_VAE_NAME = "reference"


def reference_vae_path() -> str:
    """The reference `AutoencoderKL` shipped with sd_sparse (4 latent channels, downsampling 8, ~5 MB),
    trained by `train/train_vae.py` on the training split of the shipped photographs; the command that
    made it is in its folder's README.md. Load it with `AutoencoderKL.from_pretrained(reference_vae_path())`."""
    if not os.path.isfile(os.path.join(REFERENCE_VAE, "config.json")):
        raise FileNotFoundError(f"the reference VAE is missing from {REFERENCE_VAE} (a broken install?).")
    return REFERENCE_VAE
