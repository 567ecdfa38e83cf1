"""The reference VAEs shipped with sd_sparse: the default `--vae` of `sd-sparse compress | decompress` and
the demo's VAE (4 latent channels), and two wider ones (16 and 32 latent channels) for rate–distortion on
richer latent spaces. Trained here (not random weights); how is in each folder's README.md."""

from __future__ import annotations

import os

from ..errors import UserError

_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")

#: the folder of the reference `AutoencoderKL` (config.json + safetensors), 4 latent channels
REFERENCE_VAE = os.path.join(_ASSETS, "reference_vae")

#: the folder of each shipped reference `AutoencoderKL` by its number of latent channels
REFERENCE_VAES = {
    4: REFERENCE_VAE,
    16: os.path.join(_ASSETS, "reference_vae_c16"),
    32: os.path.join(_ASSETS, "reference_vae_c32"),
}

#: the `--vae` value that names the reference VAE
REFERENCE_VAE_NAME = "reference"


def reference_vae_path(latent_channels: int = 4) -> str:
    """The folder of a reference `AutoencoderKL` shipped with sd_sparse (downsampling 8, widths 32/64/64/64,
    ~5 MB) with `latent_channels` latent channels: 4 (the default VAE of the commands and the demo), 16 or
    32; each trained by `train/train_vae.py` on the training split of the shipped photographs, with the
    command in its folder's README.md. Load it with `AutoencoderKL.from_pretrained(reference_vae_path())`.
    `UserError` for another number of channels."""
    if isinstance(latent_channels, bool) or latent_channels not in REFERENCE_VAES:
        raise UserError(
            f"latent_channels: the reference VAEs have {', '.join(map(str, REFERENCE_VAES))} latent channels, "
            f"got {latent_channels!r}."
        )
    path = REFERENCE_VAES[latent_channels]
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"the reference VAE is missing from {path} (a broken install?).")
    return path
