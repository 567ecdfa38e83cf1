"""Evaluation: one function that scores a bottleneck or an autoencoder on held-out data, and its
batch-by-batch accumulator; `evaluate_model` scores a saved model on a folder of images; rate–distortion
fronts and their Bjøntegaard deltas (`rate_distortion_fronts`)."""

from .model_evaluation import evaluate_model
from .rate_distortion_fronts import bjontegaard_deltas, clip_front, gaps, pareto_front, worst_gap
from .reconstruction import ReconstructionMetrics, evaluate

__all__ = [
    "ReconstructionMetrics",
    "bjontegaard_deltas",
    "clip_front",
    "evaluate",
    "evaluate_model",
    "pareto_front",
    "gaps",
    "worst_gap",
]
