"""Standalone autoencoders: encoder/decoder pairs and `SparseAutoencoder` (DL-VAE, VQ-VAE, SC-VAE)."""

from .flat_config import BOTTLENECK_TYPES, flat_bottleneck_config
from .lasers import LightweightDecoder, LightweightEncoder, ResidualBlock
from .sparse_autoencoder import LatentAttention, SparseAutoencoder, SparseAutoencoderOutput

__all__ = [
    "BOTTLENECK_TYPES",
    "LatentAttention",
    "LightweightDecoder",
    "LightweightEncoder",
    "ResidualBlock",
    "SparseAutoencoder",
    "SparseAutoencoderOutput",
    "flat_bottleneck_config",
]
