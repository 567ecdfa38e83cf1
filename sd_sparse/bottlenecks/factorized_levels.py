"""`FactorizedLevels`: uniform integer levels of vectors and a fitted histogram per dimension (the factorized prior).

Used by the `EntropyCodedScalarQuantizer` (levels of the latent values) and by `DictionaryBottleneck`'s
entropy-coded residual (`residual_step`). The histograms are what the codes container codes the levels
against (`EntropyModel.index_tables` / `residual_tables`), so they are buffers, rank-synchronised, and the
tables are read from them with elementwise float64 operations only.
"""

from __future__ import annotations

import numpy as np
import torch

from ..codec.entropy import table_bits, table_weights
from ..codec.quantization import LEVEL_DTYPE
from .distributed import all_reduce_sum_

#: the largest `max_level` (levels are stored as int16)
MAX_LEVEL = (1 << 15) - 1


def uniform_levels(values: torch.Tensor, step: torch.Tensor, max_level: int) -> torch.Tensor:
    """Levels (`int16`, the shape of `values`) of `values` with `step` (broadcast): rounded half to even and
    clamped to `[-max_level, max_level]`."""
    return torch.round(values / step).clamp_(-max_level, max_level).to(LEVEL_DTYPE)


class FactorizedLevels(torch.nn.Module):
    """A histogram per dimension of levels in `[-max_level, max_level]`: `counts` `[D, 2·max_level + 1]`, a
    decayed sum of the training batches' counts (`counts ← decay · counts + batch`, summed over ranks first,
    so every rank holds the same histogram).

    Args:
        dim (`int`): D, the dimensions (one histogram each).
        max_level (`int`): the largest |level|.
        decay (`float`): in [0, 1); the weight of the counts so far at each observed batch.
    """

    def __init__(self, dim: int, max_level: int, decay: float):
        super().__init__()
        self.max_level = int(max_level)
        self.decay = float(decay)
        self.register_buffer("counts", torch.zeros(dim, 2 * self.max_level + 1))

    @property
    def alphabet(self) -> int:
        """`2·max_level + 1`, the levels a dimension can take."""
        return 2 * self.max_level + 1

    @torch.no_grad()
    def observe(self, levels: torch.Tensor) -> None:
        """Adds the levels `[N, D]` of a training batch to the histograms."""
        dim, alphabet = self.counts.shape
        flat = (levels.long() + self.max_level) + torch.arange(dim, device=levels.device) * alphabet
        batch = torch.bincount(flat.reshape(-1), minlength=dim * alphabet).reshape(dim, alphabet)
        batch = all_reduce_sum_(batch.to(self.counts.dtype))
        self.counts.mul_(self.decay).add_(batch)

    def tables(self) -> torch.Tensor:
        """The histograms as float64 tables `[D, A]` on the CPU (what the codes container codes against)."""
        return self.counts.detach().to(device="cpu", dtype=torch.float64)

    def entropy_bits(self) -> float:
        """Bits per vector the fitted tables predict: the sum over dimensions of each (uniform-mixed) table's
        entropy, what the codes container's payload costs for data drawn from the fitted histograms."""
        weights = table_weights(self.tables().numpy())
        return float(np.sum(table_bits(weights)))
