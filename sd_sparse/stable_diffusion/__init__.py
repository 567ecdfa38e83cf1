"""Bottlenecks in Stable Diffusion's `AutoencoderKL` latent path."""

from .autoencoder import (
    AutoencoderKLWithBottleneck,
    CodedAutoencoderOutput,
    decode_latents,
    encode_latents,
    latent_scaling,
    stable_diffusion_dictionary,
    stable_diffusion_vector_quantizer,
)

__all__ = [
    "AutoencoderKLWithBottleneck",
    "CodedAutoencoderOutput",
    "decode_latents",
    "encode_latents",
    "latent_scaling",
    "stable_diffusion_dictionary",
    "stable_diffusion_vector_quantizer",
]
