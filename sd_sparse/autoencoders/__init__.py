"""Coded VAEs: diffusers VAEs with a bottleneck in their latent path, and the latent scaling/shift.

Exports load on first use. How diffusers' loaders and `from_pipe` learn about the coded VAEs is in
`sd_sparse/diffusers_patches.py` (installed by `import sd_sparse`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "AutoencoderKLWithBottleneck": ".autoencoder_kl",
    "AutoencoderTinyWithBottleneck": ".autoencoder_tiny",
    "CodedAutoencoderMixin": ".coded",
    "CodedAutoencoderOutput": ".coded",
    "with_bottleneck": ".wrap",
    "CODED_VAES": ".wrap",
    "latent_scaling": ".scaling",
    "to_diffusion_space": ".scaling",
    "to_vae_space": ".scaling",
    "encode_latents": ".scaling",
    "decode_latents": ".scaling",
    "stable_diffusion_dictionary": ".presets",
    "stable_diffusion_vector_quantizer": ".presets",
    "reference_vae_path": ".reference",
}

__all__ = [
    "CODED_VAES",
    "AutoencoderKLWithBottleneck",
    "AutoencoderTinyWithBottleneck",
    "CodedAutoencoderMixin",
    "CodedAutoencoderOutput",
    "decode_latents",
    "encode_latents",
    "latent_scaling",
    "reference_vae_path",
    "stable_diffusion_dictionary",
    "stable_diffusion_vector_quantizer",
    "to_diffusion_space",
    "to_vae_space",
    "with_bottleneck",
]

if TYPE_CHECKING:
    from .autoencoder_kl import AutoencoderKLWithBottleneck
    from .autoencoder_tiny import AutoencoderTinyWithBottleneck
    from .coded import CodedAutoencoderMixin, CodedAutoencoderOutput
    from .presets import stable_diffusion_dictionary, stable_diffusion_vector_quantizer
    from .reference import reference_vae_path
    from .scaling import decode_latents, encode_latents, latent_scaling, to_diffusion_space, to_vae_space
    from .wrap import CODED_VAES, with_bottleneck


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
