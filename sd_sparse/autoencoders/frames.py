"""Video latents `[B, C, T, h, w]` coded frame by frame: folding frames into the batch and back."""

from __future__ import annotations

from typing import Optional

import torch


def fold_frames(latents: torch.Tensor) -> torch.Tensor:
    """Video latents `[B, C, T, h, w]` → frames `[B·T, C, h, w]` (video-major); 4-D latents unchanged."""
    if latents.dim() != 5:
        return latents
    b, c, t, h, w = latents.shape
    return latents.transpose(1, 2).reshape(b * t, c, h, w)


def unfold_frames(latents: torch.Tensor, frames: Optional[int]) -> torch.Tensor:
    """Frames `[B·T, C, h, w]` → video latents `[B, C, T, h, w]` (`frames` = T; None: unchanged)."""
    if frames is None:
        return latents
    bt, c, h, w = latents.shape
    return latents.reshape(bt // frames, frames, c, h, w).transpose(1, 2)


def with_frames(codes, frames: Optional[int]):
    """`codes` of folded video frames, marked as videos of `frames` frames each (None: unchanged)."""
    if frames is None:
        return codes
    import dataclasses

    return dataclasses.replace(codes, frames=torch.tensor([frames], dtype=torch.long))
