"""ISTA and FISTA: L1-regularised sparse coding with a fixed dictionary."""

from __future__ import annotations

import math

import torch

from ..errors import UserError


def soft_threshold(x: torch.Tensor, threshold) -> torch.Tensor:
    """Element-wise `sign(x) · max(|x| − threshold, 0)`."""
    return torch.sign(x) * torch.relu(x.abs() - threshold)


def lipschitz_constant(dictionary: torch.Tensor) -> torch.Tensor:
    """`λ_max(D Dᵀ)` for a dictionary `[K, L]`: the Lipschitz constant of the data term's gradient."""
    return torch.linalg.matrix_norm(dictionary.detach().float(), ord=2).square().to(dictionary.dtype)


def _check(signals, dictionary, sparsity_weight, num_iters):
    if signals.dim() != 2 or dictionary.dim() != 2 or signals.shape[1] != dictionary.shape[1]:
        raise UserError(
            "`signals` must be [N, L] and `dictionary` [K, L] with the same L, got "
            f"{tuple(signals.shape)} and {tuple(dictionary.shape)}."
        )
    if not (isinstance(sparsity_weight, (int, float)) and math.isfinite(sparsity_weight) and sparsity_weight >= 0):
        raise UserError(f"`sparsity_weight` must be a finite number >= 0, got {sparsity_weight!r}.")
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
        raise UserError(f"`num_iters` must be an int >= 1, got {num_iters!r}.")


def ista(signals: torch.Tensor, dictionary: torch.Tensor, sparsity_weight: float, num_iters: int = 100) -> torch.Tensor:
    """Minimises `½‖x − γD‖² + λ‖γ‖₁` per row by ISTA.

    Args:
        signals: `[N, L]`. dictionary: `[K, L]`, atoms as rows. sparsity_weight: λ ≥ 0.
    Returns:
        Dense codes `[N, K]`.
    """
    _check(signals, dictionary, sparsity_weight, num_iters)
    step = 1.0 / lipschitz_constant(dictionary).clamp_min(1e-12)
    gram = dictionary @ dictionary.t()
    xd = signals @ dictionary.t()
    codes = signals.new_zeros(signals.shape[0], dictionary.shape[0])
    for _ in range(num_iters):
        codes = soft_threshold(codes - step * (codes @ gram - xd), step * sparsity_weight)
    return codes


def fista(
    signals: torch.Tensor, dictionary: torch.Tensor, sparsity_weight: float, num_iters: int = 100
) -> torch.Tensor:
    """Same objective as `ista`, with Nesterov momentum (Beck & Teboulle 2009). Returns `[N, K]`."""
    _check(signals, dictionary, sparsity_weight, num_iters)
    step = 1.0 / lipschitz_constant(dictionary).clamp_min(1e-12)
    gram = dictionary @ dictionary.t()
    xd = signals @ dictionary.t()
    codes = signals.new_zeros(signals.shape[0], dictionary.shape[0])
    momentum_point, t = codes, 1.0
    for _ in range(num_iters):
        previous = codes
        codes = soft_threshold(momentum_point - step * (momentum_point @ gram - xd), step * sparsity_weight)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum_point = codes + ((t - 1) / t_next) * (codes - previous)
        t = t_next
    return codes
