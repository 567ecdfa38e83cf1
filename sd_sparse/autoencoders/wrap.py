"""`with_bottleneck(vae, bottleneck)`: the coded version of any diffusers image or video VAE."""

from __future__ import annotations

from ..errors import UserError


def with_bottleneck(vae, bottleneck):
    """The coded VAE for `vae` (sharing its weights) with `bottleneck` in its latent path.

    `AutoencoderKL` → `AutoencoderKLWithBottleneck`, `AutoencoderKLFlux2` → `AutoencoderKLFlux2WithBottleneck`,
    and so on for every diffusers image and video VAE class (`coded_vae_class`); a coded VAE gets its
    bottleneck replaced. Use the result as `vae=` of any pipeline built for that VAE:

        >>> pipe.vae = with_bottleneck(pipe.vae, bottleneck)

    Raises `ValueError` for a class that cannot take a bottleneck (naming it and why: audio VAEs, models
    that are not VAEs) and when `bottleneck.config.latent_channels` differs from the VAE's latent
    channels (naming both).
    """
    from diffusers import ModelMixin

    from .coded import CodedAutoencoderMixin
    from .coded_classes import coded_vae_class

    if not isinstance(vae, ModelMixin):
        raise UserError(f"`vae` must be a diffusers VAE (a ModelMixin), got {type(vae).__name__}.")
    base = type(vae)._vae_class if isinstance(vae, CodedAutoencoderMixin) else type(vae)
    return coded_vae_class(base).from_vae(vae, bottleneck)


def is_coded_vae(vae) -> bool:
    """Whether `vae` is a coded VAE (any `<Class>WithBottleneck`), without importing the coded classes."""
    import sys

    coded = sys.modules.get("sd_sparse.autoencoders.coded")
    return coded is not None and isinstance(vae, coded.CodedAutoencoderMixin)
