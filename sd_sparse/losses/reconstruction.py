"""Reconstruction loss `η·L2 + (1 − η)·perceptual`, with the perceptual term optional."""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

logger = logging.getLogger(__name__)


class ReconstructionLoss(nn.Module):
    """`η·‖x − x̂‖² + (1 − η)·perceptual(x, x̂)` for images in [-1, 1] (LASERS §1.1, η = 0.5).

    `perceptual` is any module mapping two image batches to a per-image distance `[B]` or a scalar,
    e.g. `load_lpips()` (LPIPS from weights the user has locally). Without one, the perceptual term is
    switched off — the loss is plain MSE — and a warning says so (`warn=False` when the caller has
    already warned); nothing is ever downloaded.
    """

    def __init__(self, eta: float = 0.5, perceptual: Optional[nn.Module] = None, warn: bool = True):
        super().__init__()
        if not 0.0 <= eta <= 1.0:
            raise UserError(f"`eta` must be in [0, 1], got {eta}.")
        self.eta = eta
        self.perceptual = perceptual
        if perceptual is None and eta < 1.0 and warn:
            logger.warning(
                "sd_sparse: no perceptual (LPIPS-style) weights given; the reconstruction loss is MSE only. "
                "Pass `perceptual=load_lpips(folder)` with weights you have locally to use η·L2 + (1−η)·perceptual."
            )

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        if images.shape != reconstructions.shape:
            raise UserError(
                f"`images` {tuple(images.shape)} and `reconstructions` {tuple(reconstructions.shape)} differ."
            )
        mse = F.mse_loss(reconstructions, images)
        if self.perceptual is None or self.eta == 1.0:
            return mse
        return self.eta * mse + (1 - self.eta) * self.perceptual(images, reconstructions).mean()
