"""sd_sparse: sparse dictionary learning and vector quantization bottlenecks for autoencoder latents."""

__version__ = "0.1.0"

from .bottlenecks import (
    Bottleneck,
    BottleneckOutput,
    DictionaryBottleneck,
    LISTABottleneck,
    VectorQuantizer,
)
from .models import SparseAutoencoder, SparseAutoencoderOutput
from .pipelines import DictionaryLatentPipeline, DictionaryLatentPipelineOutput
from .sparse_coding import SparseCodes, batch_omp

__all__ = [
    "Bottleneck",
    "BottleneckOutput",
    "DictionaryBottleneck",
    "DictionaryLatentPipeline",
    "DictionaryLatentPipelineOutput",
    "LISTABottleneck",
    "SparseAutoencoder",
    "SparseAutoencoderOutput",
    "SparseCodes",
    "VectorQuantizer",
    "batch_omp",
]
