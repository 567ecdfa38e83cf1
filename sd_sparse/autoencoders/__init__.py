"""Coded VAEs: diffusers VAEs with a bottleneck in their latent path, and the latent scaling/shift.

`sd_sparse.autoencoders.<Class>WithBottleneck` is the coded class of `diffusers.<Class>` for every
image and video VAE class (`families.py` lists them and what differs between them), and of sd_sparse's own
`TAESDAutoencoder` (the TAESD-family tiny autoencoders, TAEF2 among them: `taesd.py`).

Exports load on first use. How diffusers' loaders and `from_pipe` learn about the coded VAEs is in
`sd_sparse/diffusers_patches.py` (installed by `import sd_sparse`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_dir, lazy_getattr, suffix_fallback

_import_structure = {
    "coded_classes": [
        "AutoencoderKLWithBottleneck",
        "AutoencoderTinyWithBottleneck",
        "coded_vae_class",
        "coded_vae_class_by_name",
    ],
    "coded": ["CodedAutoencoderMixin", "CodedAutoencoderOutput"],
    "wrap": ["with_bottleneck", "is_coded_vae"],
    "families": ["VAE_FAMILIES", "VAEFamily", "family_of", "latent_channels", "supported_vae_classes"],
    "scaling": ["latent_scaling", "to_diffusion_space", "to_vae_space", "encode_latents", "decode_latents"],
    "presets": ["stable_diffusion_dictionary", "stable_diffusion_vector_quantizer"],
    "reference": ["reference_vae_path"],
    "identity": ["downsampling_factor", "vae_fingerprint", "vae_identity"],
    "taesd": ["TAESDAutoencoder"],
}

__all__ = [
    "VAE_FAMILIES",
    "AutoencoderKLWithBottleneck",
    "AutoencoderTinyWithBottleneck",
    "CodedAutoencoderMixin",
    "CodedAutoencoderOutput",
    "TAESDAutoencoder",
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
    from .taesd import TAESDAutoencoder
    from .wrap import is_coded_vae, with_bottleneck


__getattr__ = lazy_getattr(
    __name__, _import_structure, fallback=suffix_fallback(__name__, "WithBottleneck", "coded_classes")
)
__dir__ = lazy_dir(__name__, _import_structure)
