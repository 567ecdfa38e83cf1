"""Integer arithmetic for entropy models that must give the same probabilities on every machine.

A range coder decodes only if the decoder's probabilities equal the encoder's bit for bit. A float network
does not promise that: a different thread count, BLAS or device sums in another order and moves a logit by
an ulp (the failure of learned codecs in CompressAI issues #279 and #309). `CodePrior` therefore codes with
a fixed-point copy of itself (Ballé et al. 2019, "Integer networks for data compression"):

- weights and activations are integers: `round(w · 2^F)` and `floor(x · 2^F)` with `F = FRACTION_BITS`;
- a linear layer is `floor((x @ W_q.T) / 2^F) + b_q`, clamped to `±ACTIVATION_LIMIT`;
- every product and partial sum is an integer below 2^53, so float64 arithmetic on them is exact, whatever
  the order of the sums (threads, BLAS kernels, batch or one row at a time);
- probabilities come from the integer logits through `exp_table()`: `2^30 · e^(−u/2^T)` for integer `u`,
  computed with `decimal` (correctly rounded), not with the platform's `exp`.

The coder and the decoder both evaluate this integer network; the float network is what trains.
"""

from __future__ import annotations

import functools
from decimal import Decimal, localcontext

import torch

#: fractional bits of fixed-point weights and activations
FRACTION_BITS = 12
#: activations are clamped to ±2^22 (±1024 in real units); with |w| ≤ WEIGHT_LIMIT and fan-in below 2^14
#: every partial sum stays below 2^22 · 2^15 · 2^14 = 2^51 < 2^53
ACTIVATION_LIMIT = float(1 << 22)
#: weights are clipped to ±8 before they are rounded (|w_q| ≤ 2^15)
WEIGHT_LIMIT = 8.0
#: the largest fan-in (inputs of one unit) the bound above allows
MAX_FAN_IN = 1 << 14
#: resolution of the probability table: logits differences in steps of 2^−TABLE_BITS nats
TABLE_BITS = 6
#: the table covers differences up to TABLE_NATS nats; beyond, a symbol gets the smallest frequency 1
TABLE_NATS = 32
#: frequencies are integers up to 2^FREQUENCY_BITS
FREQUENCY_BITS = 30

_SCALE = float(1 << FRACTION_BITS)


def quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """`round(clamp(w, ±WEIGHT_LIMIT) · 2^F)` as float64 holding integers (same shape)."""
    return torch.round(weight.detach().double().clamp(-WEIGHT_LIMIT, WEIGHT_LIMIT) * _SCALE)


def to_fixed_point(values: torch.Tensor) -> torch.Tensor:
    """`floor(x · 2^F)` (float64 integers), clamped to `±ACTIVATION_LIMIT`."""
    return torch.floor(values.double() * _SCALE).clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def fixed_linear(inputs: torch.Tensor, weight_q: torch.Tensor, bias_q: torch.Tensor) -> torch.Tensor:
    """Fixed-point `inputs @ W.T + b`: inputs `[M, I]`, `weight_q` `[O, I]`, `bias_q` `[O]`, all float64
    integers at scale 2^F; returns `[M, O]` at scale 2^F, clamped to `±ACTIVATION_LIMIT`. Exact."""
    if weight_q.shape[1] > MAX_FAN_IN:
        raise ValueError(f"a fixed-point layer's fan-in must be at most {MAX_FAN_IN}, got {weight_q.shape[1]}.")
    out = torch.floor((inputs @ weight_q.T) / _SCALE) + bias_q
    return out.clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)


@functools.cache
def _exp_table_values() -> tuple:
    steps = TABLE_NATS << TABLE_BITS
    top = Decimal(1 << FREQUENCY_BITS)
    with localcontext() as context:
        context.prec = 40
        return tuple(max(1, int((Decimal(-u) / (1 << TABLE_BITS)).exp() * top + Decimal("0.5"))) for u in range(steps))


def exp_table(device=None) -> torch.Tensor:
    """`[TABLE_NATS · 2^T]` float64 integers: `max(1, round(2^30 · e^(−u / 2^T)))`, the same on every machine."""
    return torch.tensor(_exp_table_values(), dtype=torch.float64, device=device)


def integer_frequencies(logits_q: torch.Tensor, valid: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Integer frequencies `[M, A]` (float64) ∝ `exp(logits)` from fixed-point logits `[M, A]`: 0 where `valid`
    is False, at least 1 elsewhere. Exact integer operations only, so every machine gets the same numbers."""
    masked = torch.where(valid, logits_q, torch.full_like(logits_q, -ACTIVATION_LIMIT * 4))
    top = masked.max(dim=1, keepdim=True).values
    steps = torch.floor((top - logits_q) / float(1 << (FRACTION_BITS - TABLE_BITS)))
    steps = steps.clamp_(0, table.shape[0] - 1).long()
    return torch.where(valid, table[steps], torch.zeros((), dtype=torch.float64, device=logits_q.device))
