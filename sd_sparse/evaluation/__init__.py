"""Evaluation: one function that scores a bottleneck or an autoencoder on held-out data, and its
batch-by-batch accumulator; `evaluate_model` scores a saved model on a folder of images."""

from .model_evaluation import evaluate_model
from .reconstruction import ReconstructionMetrics, evaluate

__all__ = ["ReconstructionMetrics", "evaluate", "evaluate_model"]
