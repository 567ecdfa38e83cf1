"""Evaluation: one function that scores a bottleneck or an autoencoder on held-out data, and its
batch-by-batch accumulator."""

from .reconstruction import ReconstructionMetrics, evaluate

__all__ = ["ReconstructionMetrics", "evaluate"]
