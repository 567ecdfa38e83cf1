"""Non-overlapping patch unfolding of latents `[B, C, H, W]` into coded vectors and back."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from ..errors import UserError


def as_patch_size(patch_size) -> Tuple[int, int]:
    """Normalises an int or (P_H, P_W) pair and checks it."""
    if isinstance(patch_size, int):
        patch_size = (patch_size, patch_size)
    patch_size = tuple(patch_size)
    if len(patch_size) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in patch_size):
        raise UserError(f"`patch_size` must be an int or a pair of ints >= 1, got {patch_size!r}.")
    return patch_size


def patchify(latents: torch.Tensor, patch_size: Sequence[int] = (1, 1)) -> torch.Tensor:
    """`[B, C, H, W]` → `[B·(H/P_H)·(W/P_W), C·P_H·P_W]`, rows ordered (b, h, w), each row (c, p_h, p_w).

    Uses permute-then-reshape, so each row is exactly one spatial patch (a `.view` of the
    unpermuted tensor would mix patches).
    """
    ph, pw = as_patch_size(patch_size)
    if latents.dim() != 4:
        raise UserError(f"`latents` must be [B, C, H, W], got shape {tuple(latents.shape)}.")
    b, c, h, w = latents.shape
    if h % ph or w % pw:
        raise UserError(f"latent height and width ({h}, {w}) must be divisible by `patch_size` ({ph}, {pw}).")
    patches = latents.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b * (h // ph) * (w // pw), c * ph * pw)


def unpatchify(vectors: torch.Tensor, shape: Sequence[int], patch_size: Sequence[int] = (1, 1)) -> torch.Tensor:
    """Inverse of `patchify`: vectors `[N, C·P_H·P_W]` → latents of `shape` `[B, C, H, W]`."""
    ph, pw = as_patch_size(patch_size)
    b, c, h, w = shape
    expected = (b * (h // ph) * (w // pw), c * ph * pw)
    if tuple(vectors.shape) != expected:
        raise UserError(f"`vectors` must be {list(expected)} for latents {list(shape)}, got {list(vectors.shape)}.")
    patches = vectors.reshape(b, h // ph, w // pw, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, c, h, w)
