"""`ValueQuantizationMixin`: integer levels of sparse-code coefficients (`value_bits`)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional, Tuple

import torch

from ..codec.quantization import (
    MAX_VALUE_BITS,
    MIN_VALUE_BITS,
    canonical_order,
    dequantize,
    level_range,
    quantization_step,
    quantize,
    quantize_with_feedback,
)
from ..errors import UserError
from .distributed import all_reduce_max_, all_reduce_sum_
from .validation import Interval, IsNone, Options


class ValueQuantizationMixin:
    """Quantizes the coefficients of sparse codes to `value_bits`-bit integer levels, clipped at a scale per
    atom (`value_scale="atom"`) or one (`"dictionary"`): a decaying peak hold (`value_scale_decay`) of the
    training batches' largest |coefficient|, the maximum over ranks under `torch.distributed`. Config:
    `num_atoms`, `value_bits` (None: float coefficients, nothing set up), `value_scale`, `value_scale_decay`.
    Supplies the value model of the codec's `EntropyModel` (`dequantize_values`, and the fitted
    `level_tables`).

    Level tables: up to `LEVEL_TABLE_MAX_BITS` bits, the training forwards count the levels of every atom
    (`level_counts` `[K, 2^b]`) and of all atoms together (`level_counts_shared` `[2^b]`), decayed sums
    (`LEVEL_COUNT_DECAY` per batch, summed over ranks). `level_tables()` gives each atom's counts plus
    `LEVEL_PRIOR_COUNTS` pseudo-counts spread as the shared histogram, so rarely used atoms fall back on
    the shared distribution; the codes container keeps them when they code shorter than its adaptive and
    fixed-width models. Checkpoints saved before these buffers existed load with them empty: no tables,
    and the state digest leaves empty ones out, so their codes files keep decoding."""

    #: the decay of the level counts per training batch
    LEVEL_COUNT_DECAY = 0.99
    #: pseudo-counts of the shared histogram added to every atom's counts
    LEVEL_PRIOR_COUNTS = 64.0
    #: no level tables above this many bits (they would hold K · 2^b counts)
    LEVEL_TABLE_MAX_BITS = 10

    _parameter_constraints = {
        "value_bits": [IsNone("unquantized coefficients"), Interval(Integral, MIN_VALUE_BITS, MAX_VALUE_BITS, "both")],
        "value_scale": [Options(("atom", "dictionary"))],
        "value_scale_decay": [Interval(Real, 0, 1, closed="left")],
    }

    def _setup_value_quantization(self) -> None:
        if self.value_bits is None:
            return
        size = self.config.num_atoms if self.config.value_scale == "atom" else 1
        # the clipping scale of the coefficients (per atom or one), a decaying peak hold of the largest
        # |coefficient| of the training batches; it starts at the norm of a unit-variance vector
        self.register_buffer("coefficient_scale", torch.full((size,), float(self.vector_dim) ** 0.5))
        self.register_buffer("coefficient_scale_seen", torch.zeros(size, dtype=torch.bool))
        self._setup_level_tables()

    # -- fitted level tables (the codec's `EntropyModel.level_tables`) -------------------------------------
    def _setup_level_tables(self) -> None:
        if self.value_bits > self.LEVEL_TABLE_MAX_BITS:
            return
        alphabet = 1 << self.value_bits
        self.register_buffer("level_counts", torch.zeros(self.config.num_atoms, alphabet))
        self.register_buffer("level_counts_shared", torch.zeros(alphabet))

    def _level_tables_fitted(self) -> bool:
        shared = getattr(self, "level_counts_shared", None)
        return shared is not None and bool((shared > 0).any())

    def level_tables(self) -> Optional[torch.Tensor]:
        """Fitted distributions of each atom's levels, `[K, 2^value_bits]` float64 on the CPU (any scale per
        row): the atom's decayed counts plus `LEVEL_PRIOR_COUNTS` pseudo-counts spread as the shared
        histogram. None without quantized coefficients, above `LEVEL_TABLE_MAX_BITS` or before any training
        forward (then the codes container codes levels adaptively, as before)."""
        if self.value_bits is None or not self._level_tables_fitted():
            return None
        shared = self.level_counts_shared.detach().to("cpu", torch.float64)
        total = math.fsum(shared.tolist())  # exact: the same tables on every machine
        counts = self.level_counts.detach().to("cpu", torch.float64)
        return counts + (self.LEVEL_PRIOR_COUNTS / total) * shared

    @torch.no_grad()
    def _observe_levels(self, indices: torch.Tensor, levels: torch.Tensor, active: torch.Tensor) -> None:
        """Adds the (atom, level) pairs of the active slots of a training batch to the level counts."""
        if getattr(self, "level_counts", None) is None:
            return
        counts, shared = self.level_counts, self.level_counts_shared
        alphabet = counts.shape[1]
        low, _ = level_range(self.value_bits)
        flat = indices.reshape(-1) * alphabet + (levels.reshape(-1).long() - low)
        batch = torch.bincount(flat, weights=active.reshape(-1).to(counts.dtype), minlength=counts.numel())
        batch = all_reduce_sum_(batch.reshape(counts.shape).to(counts.dtype))
        counts.mul_(self.LEVEL_COUNT_DECAY).add_(batch)
        shared.mul_(self.LEVEL_COUNT_DECAY).add_(batch.sum(0))

    def _unfitted_state_keys(self) -> set:
        keys = set(super()._unfitted_state_keys())
        if getattr(self, "level_counts", None) is not None and not self._level_tables_fitted():
            keys |= {"level_counts", "level_counts_shared"}
        return keys

    def coefficient_step(self, indices: torch.Tensor) -> torch.Tensor:
        """The quantization step `[N, S]` (in `compute_dtype`) of each slot of atom `indices` `[N, S]`."""
        if self.value_bits is None:
            raise UserError(f"{type(self).__name__} has no quantized coefficients (`value_bits` is None).")
        step = quantization_step(self.coefficient_scale.to(self.compute_dtype), self.value_bits).to(indices.device)
        return step[indices] if step.shape[0] > 1 else step.expand(indices.shape)

    def dequantize_values(self, indices: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Coefficients `[N, S]` (in `compute_dtype`) that `levels` of atoms `indices` stand for: bit for
        bit the values `forward` and `encode` put in `Codes.coefficients`."""
        return dequantize(levels, self.coefficient_step(indices))

    @torch.no_grad()
    def _observe_coefficient_scale(self, indices: torch.Tensor, values: torch.Tensor, active: torch.Tensor) -> None:
        """Peak hold of the largest |coefficient| (per atom or overall; the maximum over ranks, so every
        rank keeps the same scales): a scale jumps to a larger batch peak at once and decays towards smaller
        ones by `value_scale_decay` per batch. Scales not seen yet take the batch peak."""
        scale, seen = self.coefficient_scale, self.coefficient_scale_seen
        magnitudes = values.detach().abs().to(scale.dtype) * active
        peak = torch.zeros_like(scale)
        if scale.shape[0] > 1:
            peak.scatter_reduce_(0, indices.reshape(-1), magnitudes.reshape(-1), reduce="amax")
        elif magnitudes.numel():
            peak = magnitudes.amax().reshape(1)
        peak = all_reduce_max_(peak.contiguous())
        observed = peak > 0
        decay = self.config.value_scale_decay
        moved = torch.where(seen, torch.maximum(decay * scale + (1 - decay) * peak, peak), peak)
        scale.copy_(torch.where(observed, moved, scale))
        seen.logical_or_(observed)

    def _forget_coefficient_scales(self, atoms: torch.Tensor) -> None:
        """New atoms (a `[K]` bool mask) take the next batch peak as their scale (per-atom scales only)."""
        if self.value_bits is not None and self.coefficient_scale.shape[0] > 1:
            self.coefficient_scale_seen.logical_and_(~atoms)
        if self.value_bits is not None and getattr(self, "level_counts", None) is not None:
            self.level_counts.mul_((~atoms).to(self.level_counts.dtype)[:, None])  # new atoms: no level counts

    def _quantize_codes(
        self, indices: torch.Tensor, values: torch.Tensor, atoms: Optional[torch.Tensor] = None, observe: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float sparse codes → canonical quantized codes `(indices, values, levels)`, each `[N, S]`.

        Slots with a non-zero value form the support; with `observe` (training forwards) they first update
        the clipping scales. With `atoms` `[K, L]` the levels are chosen with error feedback (`quantize_with_feedback`,
        slots in their given order), otherwise by rounding. The slots are then sorted by atom index,
        unused slots last with index 0 and level 0 (the order the codes container stores as a set), and
        `values = dequantize_values(indices, levels)`. Values that carry gradients get them straight
        through (the forward value is exactly the dequantized one).
        """
        active = values.detach() != 0
        if observe:
            self._observe_coefficient_scale(indices, values, active)
        step = self.coefficient_step(indices)
        if atoms is not None:
            atoms = atoms.detach()
            levels = quantize_with_feedback(values.detach(), indices, atoms @ atoms.t(), step, self.value_bits, active)
        else:
            levels = quantize(values.detach(), step, self.value_bits)
            levels = torch.where(active, levels, torch.zeros_like(levels))
        if observe:
            self._observe_levels(indices, levels, active)
        order = canonical_order(indices, active, self.config.num_atoms)
        active = active.gather(1, order)
        indices = torch.where(active, indices.gather(1, order), torch.zeros_like(indices))
        levels = levels.gather(1, order)
        quantized = self.dequantize_values(indices, levels)
        if values.requires_grad:  # + exactly 0 in the forward pass, identity gradient to the support's values
            moving = values.gather(1, order).to(quantized.dtype)
            quantized = quantized + (moving - moving.detach()) * active
        return indices, quantized, levels
