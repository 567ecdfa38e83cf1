"""`RatePursuitMixin`: rate–distortion-optimised truncation of Batch-OMP codes (`rate_lambda`).

Each vector keeps the first s atoms of its OMP path (selection order), s ∈ {1, …, S}, with the least-squares
coefficients of that prefix (then quantized as the bottleneck quantizes), choosing the s that minimises
`‖v − D x̂_s‖² + rate_lambda · bits(s)`. `bits(s)` estimates what the codes container pays for the vector: the
support as a set (`log2 C(K, s)`, or `−log2 P(set)` under the usage prior the container codes indices with)
and the coefficients (`coefficient_bits`: levels priced by the histogram of the batch's plain levels, which
the container's adaptive level coder approaches). The support counts (`log2(S + 1)` bits per vector, coded
uniformly) are weighed for the whole batch: it keeps S atoms everywhere when they would cost more than it saves.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..codec.entropy import PRIOR_MIX
from ..codec.quantization import canonical_order, level_range
from ..sparse_coding.codes import SparseCodes
from .validation import Interval, IsNone


def elementary_symmetric(weights: torch.Tensor, size: int) -> torch.Tensor:
    """`e_0 … e_size` `[size + 1]` of `weights` `[K]` (the coefficients of `Π_k (1 + w_k t)` up to `t^size`),
    by a pairwise product tree: log2 K vector steps, no loop over K."""
    polys = torch.zeros(weights.shape[0], size + 1, dtype=weights.dtype, device=weights.device)
    polys[:, 0] = 1
    if size:
        polys[:, 1] = weights
    r = torch.arange(size + 1, device=weights.device)
    shift = r[:, None] - r[None, :]  # [r, j] → r − j
    valid = shift >= 0
    shift = shift.clamp_min(0)
    while polys.shape[0] > 1:
        if polys.shape[0] % 2:
            one = torch.zeros_like(polys[:1])
            one[:, 0] = 1
            polys = torch.cat([polys, one])
        left, right = polys[0::2], polys[1::2]
        toeplitz = right[:, shift] * valid  # [n, r, j] = right[n, r − j]
        polys = torch.einsum("nrj,nj->nr", toeplitz, left)
    return polys[0]


def set_bits_model(prior: Optional[torch.Tensor], num_atoms: int, size: int, device=None, dtype=torch.float64):
    """`(atom_bits [K], base_bits [size + 1])`: a support of m atoms costs `Σ atom_bits[k] + base_bits[m]`.

    With a usage `prior` `[K]` (any positive scale): the container's conditional Poisson set model,
    `−log2 P(set) = −Σ log2 w_k + log2 e_m(w)`, with the weights mixed as `entropy.prior_weights` does;
    without: `log2 C(K, m)` (equal weights). On `device` (default: the prior's, else the CPU)."""
    device = device if device is not None else (prior.device if prior is not None else "cpu")
    m = torch.arange(size + 1, dtype=dtype, device=device)
    if prior is None:
        log_comb = math.lgamma(num_atoms + 1.0) - torch.lgamma(m + 1) - torch.lgamma(num_atoms - m + 1)
        return torch.zeros(num_atoms, dtype=dtype, device=device), log_comb / math.log(2)
    prior = prior.detach().to(device=device, dtype=dtype).clamp_min(0)
    total = prior.sum()
    weights = torch.where(
        total > 0, (1 - PRIOR_MIX) * prior * (num_atoms / total.clamp_min(1e-300)) + PRIOR_MIX, torch.ones_like(prior)
    )
    elementary = elementary_symmetric(weights, size)
    return -torch.log2(weights), torch.log2(elementary.clamp_min(1e-300))


class RatePursuitMixin:
    """Rate–distortion choice of the number of atoms per vector for a Batch-OMP bottleneck. Config:
    `num_atoms`, `sparsity`, `value_bits`, `rate_lambda` (None: off, every vector keeps S atoms)."""

    _parameter_constraints = {"rate_lambda": [IsNone("S atoms per vector"), Interval(Real, 0, None)]}
    #: price levels by the batch's level histogram (`level_bits_estimate`) rather than `value_bits` each
    entropy_level_bits: bool = True

    @property
    def rate_pursuit_active(self) -> bool:
        """Whether codes are truncated by rate: `rate_lambda` set and > 0 (0 keeps the plain S-atom codes)."""
        rate_lambda = self.config.get("rate_lambda")
        return rate_lambda is not None and rate_lambda > 0

    def level_bits_estimate(self, levels: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Bits `[2^b]` (float64) of each level, level `lowest + i` at i: `−log2` of the histogram of the used
        `levels` `[N, S]` (`active`) with ½ added per level, which the container's adaptive level coder
        approaches. No host sync."""
        low, _ = level_range(self.value_bits)
        symbols = (levels.to(torch.long) - low).reshape(-1)  # unused slots hold level 0: a valid symbol
        histogram = torch.full((1 << self.value_bits,), 0.5, dtype=torch.float64, device=levels.device)
        histogram.scatter_add_(0, symbols, active.reshape(-1).to(torch.float64))  # counted where used
        return -torch.log2(histogram / histogram.sum())

    def coefficient_bits(
        self,
        indices: torch.Tensor,
        levels: Optional[torch.Tensor],
        active: torch.Tensor,
        level_bits: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Estimated bits `[N]` of the coefficients of canonical codes `[N, S]` (`active`: used slots): the
        `level_bits` `[2^b]` of each used level, or `value_bits` per used slot without them; 0 for float
        coefficients (the container stores all S slots' floats whatever the support)."""
        if self.value_bits is None:
            return torch.zeros(active.shape[0], dtype=torch.float64, device=active.device)
        if level_bits is None:
            return active.sum(1).to(torch.float64) * self.value_bits
        low, _ = level_range(self.value_bits)
        return (level_bits[levels.to(torch.long) - low] * active).sum(1)

    def estimated_code_bits(
        self,
        indices: torch.Tensor,
        levels: Optional[torch.Tensor],
        active: torch.Tensor,
        level_bits: Optional[torch.Tensor] = None,
        set_model: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Estimated bits `[N]` the codes container pays for each canonical code `[N, S]`: its support as a set
        (under the usage prior when the bottleneck keeps one) and its coefficients (`coefficient_bits` with
        `level_bits`; `set_model`: `_set_bits_model()`, computed here without it). The count symbol is not included: the container pays `log2(S + 1)` per vector only when some support is
        shorter than S (`_truncate_by_rate` weighs that for the whole batch)."""
        atom_bits, base_bits = self._set_bits_model(active.device) if set_model is None else set_model
        count = active.sum(1)
        support = (atom_bits[indices] * active).sum(1) + base_bits[count]
        return support + self.coefficient_bits(indices, levels, active, level_bits)

    def _set_bits_model(self, device) -> Tuple[torch.Tensor, torch.Tensor]:
        """`set_bits_model` of this bottleneck's supports: under its usage average when it keeps one."""
        prior = getattr(self, "usage_average", None)
        return set_bits_model(prior, self.config.num_atoms, self.config.sparsity, device=device)

    def _canonical_float_codes(self, indices: torch.Tensor, values: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Float codes sorted by atom, unused slots last with index 0 and value 0 (the set form)."""
        active = values != 0
        order = canonical_order(indices, active, self.config.num_atoms)
        active = active.gather(1, order)
        indices = torch.where(active, indices.gather(1, order), torch.zeros_like(indices))
        return indices, values.gather(1, order) * active

    def _truncate_by_rate(
        self, vectors: torch.Tensor, codes: SparseCodes, atoms: torch.Tensor, observe: bool
    ) -> Tuple[SparseCodes, Optional[torch.Tensor]]:
        """Batch-OMP `codes` `[N, S]` (selection order) → canonical codes with the rate–distortion best
        prefix of each vector's path, and their levels (None for float coefficients). Vectorised over N;
        the only loop is over the S prefix lengths. With `observe` the clipping scales see the full codes
        first (as without `rate_lambda`). Shorter supports make the container code every vector's count
        (`log2(S + 1)` bits each): when the plain codes need no counts and the counts would cost more than the
        batch saves, every vector keeps all S atoms (the plain codes)."""
        vectors = vectors.detach()
        atoms = atoms.detach()
        indices, values = codes.indices, codes.values.detach()
        n, S = indices.shape
        active = values != 0
        mask = active.to(values.dtype)
        # least squares on each prefix: Cholesky of the support's Gram matrix (selection order); the
        # factor of a leading block is the leading block of the factor, so one factorisation serves all s
        gram = (atoms @ atoms.t())[indices[:, :, None], indices[:, None, :]] * mask[:, :, None] * mask[:, None, :]
        gram = gram + torch.diag_embed(1 - mask)
        lower, info = torch.linalg.cholesky_ex(gram)
        solvable = info == 0
        lower = torch.where(solvable[:, None, None], lower, torch.eye(S, dtype=lower.dtype, device=lower.device))
        targets = (vectors @ atoms.t()).gather(1, indices) * mask
        y = torch.linalg.solve_triangular(lower, targets[:, :, None], upper=False)
        slots = torch.arange(S, device=indices.device)
        set_model = self._set_bits_model(vectors.device)
        candidates, costs, level_bits = [], [], None
        for s in range(S, 0, -1):  # s = S first: with `observe` its quantization updates the scales
            if s == S:
                prefix = values  # Batch-OMP's own coefficients: the plain codes, bit for bit
            else:
                prefix = torch.linalg.solve_triangular(lower[:, :s, :s].mT, y[:, :s], upper=True).squeeze(2)
                prefix = prefix * mask[:, :s]
            # only the s slots of the prefix are quantized; the unused ones are appended (index 0, level 0)
            candidate = self._quantize_prefix(indices[:, :s], prefix, atoms, observe=observe and s == S)
            residual = vectors - SparseCodes(candidate[0], candidate[1]).reconstruct(atoms)
            candidate = tuple(None if part is None else F.pad(part, (0, S - s)) for part in candidate)
            cand_indices, cand_values, cand_levels = candidate
            # used slots: the prefix's support, first in canonical order (a level may round to 0)
            used = slots[None, :] < (prefix != 0).sum(1, keepdim=True)
            if s == S:
                plain_full = used.all()  # the plain codes need no counts (unless a path stopped early)
                if cand_levels is not None and self.entropy_level_bits:  # levels priced as the plain codes'
                    level_bits = self.level_bits_estimate(cand_levels, used)
            bits = self.estimated_code_bits(cand_indices, cand_levels, used, level_bits, set_model)
            cost = residual.square().sum(1).to(torch.float64) + self.config.rate_lambda * bits
            if s < S:
                cost = torch.where(solvable, cost, torch.full_like(cost, math.inf))
            candidates.append(candidate)
            costs.append(cost)
        candidates.reverse()
        costs.reverse()
        costs = torch.stack(costs)
        lowest, best = costs.min(0)  # best: candidate s − 1; ties: the fewest atoms
        counts_bits = self.config.rate_lambda * math.log2(S + 1) * n * plain_full
        full = costs[-1].sum() <= lowest.sum() + counts_bits  # a one-element tensor: no host sync
        best = torch.where(full, torch.full_like(best, S - 1), best)

        def pick(parts):
            stacked = torch.stack(parts)  # [S, N, S]
            return stacked.gather(0, best[None, :, None].expand(1, n, S)).squeeze(0)

        chosen_indices = pick([c[0] for c in candidates])
        chosen_values = pick([c[1] for c in candidates])
        chosen_levels = None if candidates[0][2] is None else pick([c[2] for c in candidates])
        return SparseCodes(chosen_indices, chosen_values, self.config.num_atoms), chosen_levels

    def _quantize_prefix(self, indices: torch.Tensor, values: torch.Tensor, atoms: torch.Tensor, observe: bool):
        """Canonical `(indices, values, levels)` of one candidate (levels None for float coefficients)."""
        if self.value_bits is None:
            return (*self._canonical_float_codes(indices, values), None)
        refit_atoms = atoms if self.config.value_refit else None
        return self._quantize_codes(indices, values, refit_atoms, observe=observe)
