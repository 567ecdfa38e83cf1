"""`SparseCodeBottleneck`: what the sparse-coding bottlenecks (dictionary learning, LISTA) share."""

from __future__ import annotations

import math

import torch

from ..sparse_coding.batch_omp import normalize_atoms
from ..sparse_coding.codes import SparseCodes
from .base import Bottleneck
from .value_quantization import ValueQuantizationMixin


def sparse_code_bits(num_atoms: int, sparsity: int, value_bits: int | None = None) -> float:
    """Bits of one sparse code of S atoms out of K: `log2 C(K, S) + S·value_bits` with quantized values (the
    support as a set), `S·(log2 K + 16)` without (S indices and S float16 values, the papers' count)."""
    if value_bits is None:
        return sparsity * (math.log2(num_atoms) + 16)
    return math.log2(math.comb(num_atoms, sparsity)) + sparsity * value_bits


class SparseCodeBottleneck(ValueQuantizationMixin, Bottleneck):
    """A bottleneck whose codes are sparse combinations `ẑ = γD` of the unit-norm rows of a learned
    `dictionary` `[K, C·P_H·P_W]` parameter, with optional quantized coefficients (`value_bits`).
    Config: `num_atoms`, `sparsity` (S, or None for variable-length codes), the value quantization's."""

    @property
    def atoms(self) -> torch.Tensor:
        """The unit-norm atoms `[K, C·P_H·P_W]` used for coding and reconstruction."""
        return normalize_atoms(self.dictionary.to(self.compute_dtype))[0]

    @property
    def bits_per_position(self) -> float | None:
        """Bits per latent position: the bits of one coded vector over its `P_H·P_W` positions.

        With `value_bits` b: the support as one of the `C(K, S)` sets of S atoms (`log2 C(K, S)` bits) plus
        S levels of b bits, the fixed-length size that the codes container never exceeds (its entropy
        coding usually needs less; the file's header is not counted). Without: S indices of `log2 K` bits
        and S values of 16 bits (float16, the papers' count; the container stores float32). None without
        `sparsity` (variable-length codes)."""
        if self.config.sparsity is None:
            return None
        return (
            sparse_code_bits(self.config.num_atoms, self.config.sparsity, self.value_bits) / self.positions_per_vector
        )

    def _decode_vectors(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return SparseCodes(indices, values.to(self.compute_dtype)).reconstruct(self.atoms)
