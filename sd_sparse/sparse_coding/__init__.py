"""Sparse-coding algorithms on plain tensors (no module state)."""

from .batch_omp import batch_omp, batch_omp_backend, normalize_atoms
from .codes import SparseCodes

__all__ = ["SparseCodes", "batch_omp", "batch_omp_backend", "normalize_atoms"]
