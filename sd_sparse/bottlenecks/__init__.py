"""Bottlenecks for an autoencoder's latent path; all follow one contract (`BottleneckOutput`)."""

from .base import Bottleneck, BottleneckOutput
from .codes import Codes
from .dictionary import DictionaryBottleneck
from .lista import LISTABottleneck
from .patches import patchify, unpatchify
from .vector_quantizer import VectorQuantizer

__all__ = [
    "Bottleneck",
    "BottleneckOutput",
    "Codes",
    "DictionaryBottleneck",
    "LISTABottleneck",
    "VectorQuantizer",
    "patchify",
    "unpatchify",
]
