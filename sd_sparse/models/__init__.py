"""Standalone autoencoders: encoder/decoder pairs and `SparseAutoencoder` (DL-VAE, VQ-VAE, SC-VAE)."""

from .lasers import LightweightDecoder, LightweightEncoder, ResidualBlock
from .sparse_autoencoder import LatentAttention, SparseAutoencoder, SparseAutoencoderOutput

__all__ = [
    "LatentAttention",
    "LightweightDecoder",
    "LightweightEncoder",
    "ResidualBlock",
    "SparseAutoencoder",
    "SparseAutoencoderOutput",
]
