"""Bottlenecks shaped for Stable Diffusion latents."""

from __future__ import annotations

from typing import Sequence, Union


def stable_diffusion_dictionary(
    latent_channels: int = 4, num_atoms: int = 512, sparsity: int = 8, patch_size: int = 4, **kwargs
):
    """A `DictionaryBottleneck` for SD latents: 4×4 patches of 4 channels (64-dim vectors), S = 8 atoms
    each, i.e. 8·(9 + 16)/16 = 12.5 bits per position instead of 64 (4 float16 values)."""
    from ..bottlenecks import DictionaryBottleneck

    return DictionaryBottleneck(num_atoms, latent_channels, sparsity, patch_size=patch_size, **kwargs)


def stable_diffusion_vector_quantizer(
    latent_channels: int = 4, num_atoms: int = 512, patch_size: Union[int, Sequence[int]] = 1, **kwargs
):
    """A `VectorQuantizer` for SD latents (per position by default: log2 K bits per position)."""
    from ..bottlenecks import VectorQuantizer

    return VectorQuantizer(num_atoms, latent_channels, patch_size=patch_size, **kwargs)
