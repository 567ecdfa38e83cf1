"""Uniform quantization of sparse-code coefficients (pure functions on tensors, no module state).

A coefficient `v` of an atom whose clipping scale is `s` is stored as an integer level
`l = clamp(round(v / Δ), −2^(b−1), 2^(b−1) − 1)` with step `Δ = s / (2^(b−1) − ½)` (so `±s` is within
half a step of the outermost levels) and decoded as `l · Δ`: `b` bits give `2^b` levels, zero included.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..errors import UserError

MIN_VALUE_BITS = 2
MAX_VALUE_BITS = 16
#: the integer dtype of quantization levels (holds every level of up to 16 bits)
LEVEL_DTYPE = torch.int16


def check_value_bits(value_bits) -> None:
    """`ValueError` naming `value_bits` unless it is None or an int in [2, 16]."""
    if value_bits is None:
        return
    if (
        isinstance(value_bits, bool)
        or not isinstance(value_bits, int)
        or not MIN_VALUE_BITS <= value_bits <= MAX_VALUE_BITS
    ):
        raise UserError(
            f"`value_bits` must be None (unquantized coefficients) or an int in [{MIN_VALUE_BITS}, {MAX_VALUE_BITS}], "
            f"got {value_bits!r}."
        )


def level_range(value_bits: int) -> Tuple[int, int]:
    """`(lowest, highest)` level of `value_bits`-bit codes: `(−2^(b−1), 2^(b−1) − 1)`."""
    half = 1 << (value_bits - 1)
    return -half, half - 1


def quantization_step(scale: torch.Tensor, value_bits: int) -> torch.Tensor:
    """The step `Δ = scale / (2^(b−1) − ½)` of each clipping scale (same shape as `scale`)."""
    return scale / ((1 << (value_bits - 1)) - 0.5)


def quantize(values: torch.Tensor, step: torch.Tensor, value_bits: int) -> torch.Tensor:
    """Levels (`int16`, same shape as `values`) of `values` with `step` (broadcast), rounded half to even
    and clamped to `level_range(value_bits)`."""
    low, high = level_range(value_bits)
    return torch.round(values / step).clamp_(low, high).to(LEVEL_DTYPE)


def dequantize(levels: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """`levels · step` in `step`'s dtype: the coefficients the levels stand for."""
    return levels.to(step.dtype) * step


def _inverse_cholesky(gram: torch.Tensor, minimum_pivot: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """For SPD matrices `gram` `[S, S, N]` (batch last), `L⁻¹` `[S, S, N]` (lower triangular) with
    `gram = L Lᵀ`, and a `[N]` mask of matrices too close to singular (a pivot² below `minimum_pivot`).

    Written as S vector steps over the batch: for S up to ~16 faster than one LAPACK call per vector."""
    size = gram.shape[0]
    lower = torch.zeros_like(gram)
    bad = torch.zeros(gram.shape[2], dtype=torch.bool, device=gram.device)
    for j in range(size):
        pivot = gram[j, j] - lower[j, :j].square().sum(0) if j else gram[j, j]
        bad |= pivot < minimum_pivot
        d = pivot.clamp_min(minimum_pivot).sqrt()
        lower[j, j] = d
        if j + 1 < size:
            column = gram[j + 1 :, j] - (lower[j + 1 :, :j] * lower[j, :j]).sum(1) if j else gram[j + 1 :, j]
            lower[j + 1 :, j] = column / d
    inverse = torch.zeros_like(gram)
    for i in range(size):
        inverse[i, i] = 1 / lower[i, i]
        if i:
            inverse[i, :i] = -(lower[i, :i, None] * inverse[:i, :i]).sum(0) / lower[i, i]
    return inverse, bad


def quantize_with_feedback(
    values: torch.Tensor,
    indices: torch.Tensor,
    atom_gram: torch.Tensor,
    step: torch.Tensor,
    value_bits: int,
    active: torch.Tensor,
    damping: float = 1e-4,
) -> torch.Tensor:
    """Levels of least-squares coefficients, quantized one slot at a time with the error fed forward.

    Args:
        values (`torch.Tensor` `[N, S]`): least-squares coefficients of each vector on its support (slot
            order = the order in which they are quantized; Batch-OMP's selection order puts the largest first).
        indices (`torch.LongTensor` `[N, S]`): the atom of each slot.
        atom_gram (`torch.Tensor` `[K, K]`): inner products of the atoms (`atoms @ atoms.T`).
        step (`torch.Tensor` `[N, S]`): the quantization step of each slot.
        value_bits (`int`): bits per level.
        active (`torch.BoolTensor` `[N, S]`): slots in the support (the others are ignored and get level 0).
        damping (`float`): added to the Gram matrices' diagonal, so nearly dependent supports stay stable.

    After slot j is rounded, the remaining coefficients are re-fitted by least squares to the residual
    left by the quantized ones (`‖x − Σ_{i≤j} q_i d_i − Σ_{i>j} γ_i d_i‖²` minimised over γ_{>j}), as in
    GPTQ/OBQ: `γ_{>j} −= (γ_j − q_j) / U_jj · U_{j,>j}` with `Uᵀ U` the inverse Gram matrix of the support.
    `U = J L⁻¹ J` for the Cholesky factor `L` of the Gram matrix in reversed slot order (J), so the work
    below runs in reversed order. Vectors whose support is numerically singular are rounded without
    feedback. Returns `int16` levels `[N, S]`.
    """
    n, s = values.shape
    dtype = torch.promote_types(values.dtype, torch.float32)
    if n == 0:
        return torch.zeros(n, s, dtype=LEVEL_DTYPE, device=values.device)
    k = atom_gram.shape[0]
    # reversed slot order, batch last: every step below is a contiguous vector op over N
    slots = indices.t().flip(0).contiguous()
    pairs = (slots[:, None, :] * k + slots[None, :, :]).reshape(-1)
    gram = atom_gram.to(dtype).reshape(-1).index_select(0, pairs).reshape(s, s, n)
    mask = active.t().flip(0).to(dtype)
    # slots outside the support: decoupled (identity rows and columns), so they neither move nor are moved
    gram.mul_(mask[:, None, :]).mul_(mask[None, :, :])
    gram.diagonal(dim1=0, dim2=1).add_((1 - mask).t() + damping)
    factor, bad = _inverse_cholesky(gram)
    keep = (~bad).to(dtype)
    factor.mul_(keep)
    factor.diagonal(dim1=0, dim2=1).add_((1 - keep)[:, None])  # plain rounding where singular
    work = values.t().flip(0).to(dtype) * mask
    steps = step.t().flip(0).to(dtype)
    levels = torch.zeros(s, n, dtype=LEVEL_DTYPE, device=values.device)
    for r in range(s - 1, -1, -1):  # slot j = s − 1 − r
        level = quantize(work[r], steps[r], value_bits)
        levels[r] = level
        if r:
            error = (work[r] - dequantize(level, steps[r])) * mask[r] / factor[r, r]
            work[:r] -= error * factor[r, :r]
    return torch.where(active, levels.flip(0).t(), torch.zeros_like(indices, dtype=LEVEL_DTYPE))


def canonical_order(indices: torch.Tensor, active: torch.Tensor, num_atoms: int) -> torch.Tensor:
    """The slot permutation `[N, S]` that sorts each row's support by atom index, unused slots last.

    Sorted supports are what the codes container stores as sets (no slot order to transmit)."""
    key = torch.where(active, indices, torch.full_like(indices, num_atoms))
    return key.argsort(dim=1)
