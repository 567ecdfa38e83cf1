"""Bottlenecks for an autoencoder's latent path; all follow one contract (`BottleneckOutput`)."""

from ..codec.codes import Codes
from .base import Bottleneck, BottleneckOutput
from .dictionary import DictionaryBottleneck
from .entropy_coded_scalar_quantizer import EntropyCodedScalarQuantizer
from .finite_scalar_quantizer import FiniteScalarQuantizer
from .lista import LISTABottleneck
from .patches import patchify, unpatchify
from .residual_vector_quantizer import ResidualVectorQuantizer
from .scalar_quantizer import ScalarQuantizer
from .vector_quantizer import VectorQuantizer

__all__ = [
    "Bottleneck",
    "BottleneckOutput",
    "Codes",
    "DictionaryBottleneck",
    "EntropyCodedScalarQuantizer",
    "FiniteScalarQuantizer",
    "LISTABottleneck",
    "ResidualVectorQuantizer",
    "ScalarQuantizer",
    "VectorQuantizer",
    "patchify",
    "unpatchify",
]
