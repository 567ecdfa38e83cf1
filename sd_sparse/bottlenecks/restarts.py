"""`RestartsMixin`: restarts of rarely used codes / atoms (VQ codebooks, dictionaries)."""

from __future__ import annotations

from numbers import Real
from typing import Optional

import torch

from .distributed import all_reduce_sum_, broadcast_
from .validation import Interval


class RestartsMixin:
    """Tracks each code's / atom's share of the selections as a moving average (`usage_decay`) and, in
    training, replaces those whose share falls below `restart_threshold / K` by the batch's worst represented
    vectors (largest residual first, the K-SVD rule). Config: `num_atoms`, `restart_threshold` (0 disables),
    `usage_decay`. The class writes `_apply_restarts` (copy `restart_vectors` into its weights where
    `restart_pending`, then clear it). Under `torch.distributed` usage is summed and candidates broadcast
    from rank 0. The usage average is also the index model of the codes (`usage_prior`)."""

    _parameter_constraints = {
        "restart_threshold": [Interval(Real, 0, 1, closed="both")],
        "usage_decay": [Interval(Real, 0, 1, closed="left")],
    }

    def _setup_restarts(self) -> None:
        if self.config.restart_threshold > 0:
            K = self.config.num_atoms
            # share of the selections per code/atom, started at the uniform share
            self.register_buffer("usage_average", torch.full((K,), 1.0 / K))
            self.register_buffer("restart_pending", torch.zeros(K, dtype=torch.bool))
            self.register_buffer("restart_vectors", torch.zeros(K, self.vector_dim))

    @property
    def restarts_active(self) -> bool:
        """Whether this forward restarts codes/atoms: training with `restart_threshold > 0`."""
        return self.training and self.config.restart_threshold > 0

    def _apply_restarts(self) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def _plan_restarts(self, vectors: torch.Tensor, reconstruction: torch.Tensor, usage: torch.Tensor) -> None:
        """Updates the usage average and picks replacements for codes/atoms below the threshold; they are
        applied at the start of the next training forward (after this step's backward). No host sync."""
        K = self.config.num_atoms
        usage = all_reduce_sum_(usage.to(self.usage_average.dtype).clone())
        share = usage / usage.sum().clamp_min(1)
        decay = self.config.usage_decay
        self.usage_average.mul_(decay).add_(share, alpha=1 - decay)
        dead = self.usage_average < self.config.restart_threshold / K
        # candidates: the worst-represented vectors themselves (largest residual first, the K-SVD rule)
        residual_norms = (vectors - reconstruction).square().sum(1)
        order = residual_norms.topk(min(K, vectors.shape[0])).indices
        candidates = broadcast_(vectors[order].contiguous())
        # the i-th dead code takes the i-th candidate (wrapping round when there are fewer candidates)
        slot = (torch.cumsum(dead.long(), 0) - 1).clamp_min(0) % candidates.shape[0]
        self.restart_vectors.copy_(candidates[slot].to(self.restart_vectors.dtype))
        self.restart_pending.copy_(dead)
        self.usage_average.copy_(torch.where(dead, torch.full_like(self.usage_average, 1.0 / K), self.usage_average))

    def usage_prior(self) -> Optional[torch.Tensor]:
        """The index model (`EntropyModel.usage_prior`): the usage average of the restarts, float64 on the
        CPU; None with `restart_threshold = 0` (no statistics kept)."""
        average = getattr(self, "usage_average", None)
        return None if average is None else average.detach().to(device="cpu", dtype=torch.float64)
