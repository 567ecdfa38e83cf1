"""Evaluation: one function that scores a bottleneck or an autoencoder on held-out data."""

from .reconstruction import evaluate

__all__ = ["evaluate"]
