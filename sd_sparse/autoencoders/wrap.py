"""`with_bottleneck(vae, bottleneck)`: the coded version of any supported diffusers VAE."""

from __future__ import annotations

from .autoencoder_kl import AutoencoderKLWithBottleneck
from .autoencoder_tiny import AutoencoderTinyWithBottleneck

CODED_VAES = (AutoencoderKLWithBottleneck, AutoencoderTinyWithBottleneck)


def with_bottleneck(vae, bottleneck):
    """The coded VAE for `vae` (sharing its weights) with `bottleneck` in its latent path.

    `AutoencoderKL` → `AutoencoderKLWithBottleneck`, `AutoencoderTiny` → `AutoencoderTinyWithBottleneck`;
    a coded VAE gets its bottleneck replaced. Use the result as `vae=` of any pipeline built for that VAE:

        >>> pipe.vae = with_bottleneck(pipe.vae, bottleneck)

    Raises `ValueError` for any other VAE class (naming it) and when `bottleneck.config.latent_channels`
    differs from `vae.config.latent_channels` (naming both).
    """
    for coded in CODED_VAES:
        if type(vae) in (coded, coded._vae_class):
            return coded.from_vae(vae, bottleneck)
    supported = ", ".join(f"{c._vae_class.__name__}" for c in CODED_VAES)
    raise ValueError(
        f"with_bottleneck supports diffusers' {supported} (and the coded versions); got a {type(vae).__name__}."
    )
