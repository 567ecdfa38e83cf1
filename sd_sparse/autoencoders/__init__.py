"""Coded VAEs: diffusers VAEs with a bottleneck in their latent path, and the latent scaling/shift.

`sd_sparse.autoencoders.<Class>WithBottleneck` is the coded class of `diffusers.<Class>` for every
image and video VAE class (`families.py` lists them and what differs between them).

Exports load on first use. How diffusers' loaders and `from_pipe` learn about the coded VAEs is in
`sd_sparse/diffusers_patches.py` (installed by `import sd_sparse`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "AutoencoderKLWithBottleneck": ".coded_classes",
    "AutoencoderTinyWithBottleneck": ".coded_classes",
    "coded_vae_class": ".coded_classes",
    "coded_vae_class_by_name": ".coded_classes",
    "CodedAutoencoderMixin": ".coded",
    "CodedAutoencoderOutput": ".coded",
    "with_bottleneck": ".wrap",
    "is_coded_vae": ".wrap",
    "VAE_FAMILIES": ".families",
    "VAEFamily": ".families",
    "family_of": ".families",
    "latent_channels": ".families",
    "supported_vae_classes": ".families",
    "latent_scaling": ".scaling",
    "to_diffusion_space": ".scaling",
    "to_vae_space": ".scaling",
    "encode_latents": ".scaling",
    "decode_latents": ".scaling",
    "stable_diffusion_dictionary": ".presets",
    "stable_diffusion_vector_quantizer": ".presets",
    "reference_vae_path": ".reference",
    "downsampling_factor": ".identity",
    "vae_fingerprint": ".identity",
    "vae_identity": ".identity",
}

__all__ = [
    "VAE_FAMILIES",
    "AutoencoderKLWithBottleneck",
    "AutoencoderTinyWithBottleneck",
    "CodedAutoencoderMixin",
    "CodedAutoencoderOutput",
    "VAEFamily",
    "coded_vae_class",
    "coded_vae_class_by_name",
    "decode_latents",
    "downsampling_factor",
    "encode_latents",
    "family_of",
    "is_coded_vae",
    "latent_channels",
    "latent_scaling",
    "reference_vae_path",
    "stable_diffusion_dictionary",
    "stable_diffusion_vector_quantizer",
    "supported_vae_classes",
    "to_diffusion_space",
    "to_vae_space",
    "vae_fingerprint",
    "vae_identity",
    "with_bottleneck",
]

if TYPE_CHECKING:
    from .coded import CodedAutoencoderMixin, CodedAutoencoderOutput
    from .coded_classes import (
        AutoencoderKLWithBottleneck,
        AutoencoderTinyWithBottleneck,
        coded_vae_class,
        coded_vae_class_by_name,
    )
    from .families import VAE_FAMILIES, VAEFamily, family_of, latent_channels, supported_vae_classes
    from .identity import downsampling_factor, vae_fingerprint, vae_identity
    from .presets import stable_diffusion_dictionary, stable_diffusion_vector_quantizer
    from .reference import reference_vae_path
    from .scaling import decode_latents, encode_latents, latent_scaling, to_diffusion_space, to_vae_space
    from .wrap import is_coded_vae, with_bottleneck


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None and name.endswith("WithBottleneck"):  # the coded class of any diffusers VAE class
        from .coded_classes import coded_vae_class_by_name

        return coded_vae_class_by_name(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
