"""One view of the autoencoders the figures draw: images ↔ latents, and the bottleneck between them."""

from __future__ import annotations

from typing import Optional

import torch

from ..autoencoders.scaling import decode_latents, encode_latents
from ..bottlenecks import Bottleneck
from ..errors import UserError
from ..models import SparseAutoencoder


class LatentModel:
    """An autoencoder seen through its latents.

    A `SparseAutoencoder` codes its own latents (`encode` / `decode`); a diffusers VAE (`AutoencoderKL`,
    `AutoencoderTiny`, plain or coded with a bottleneck) is seen in diffusion space (`encode_latents` /
    `decode_latents`), where its bottleneck codes. `decode` never applies the bottleneck; `code` does.
    """

    def __init__(self, model: torch.nn.Module):
        if not isinstance(model, torch.nn.Module) or not (
            isinstance(model, SparseAutoencoder) or (hasattr(model, "encode") and hasattr(model, "decode"))
        ):
            raise UserError(f"expected a SparseAutoencoder or a diffusers VAE, got {type(model).__name__}.")
        self.model = model

    @property
    def is_sparse_autoencoder(self) -> bool:
        return isinstance(self.model, SparseAutoencoder)

    @property
    def bottleneck(self) -> Optional[Bottleneck]:
        """The bottleneck in the latent path, or None for a plain VAE."""
        bottleneck = getattr(self.model, "bottleneck", None)
        return bottleneck if isinstance(bottleneck, Bottleneck) else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def downsampling_factor(self) -> int:
        """Image side / latent side (4 or 2^(blocks−1) for a SparseAutoencoder, 8 for Stable Diffusion's VAE)."""
        if self.is_sparse_autoencoder:
            return self.model.downsampling_factor
        from ..autoencoders.identity import downsampling_factor

        return downsampling_factor(self.model)

    @property
    def block_size(self) -> int:
        """The side images must be a multiple of: the downsampling factor × the bottleneck's patch size."""
        patch = max(self.bottleneck.patch_size) if self.bottleneck is not None else 1
        return self.downsampling_factor * patch

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images `[B, 3, H, W]` in [-1, 1] → latents `[B, C, H/f, W/f]` (before the bottleneck)."""
        if self.is_sparse_autoencoder:
            return self.model.encode(images.to(self.device, self.model.dtype))
        return encode_latents(self.model, images)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `[B, C, h, w]` → images `[B, 3, h·f, w·f]`, about [-1, 1] (not clamped; no bottleneck)."""
        if self.is_sparse_autoencoder:
            return self.model.decode(latents.to(self.device, self.model.dtype))
        kwargs = {"apply_bottleneck": False} if self.bottleneck is not None else {}
        return decode_latents(self.model, latents, **kwargs)

    @torch.no_grad()
    def code(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `[B, C, h, w]` → what the decoder sees after the bottleneck (the latents themselves without one)."""
        if self.bottleneck is None:
            return latents
        return self.bottleneck.decode(self.bottleneck.encode(latents)).to(latents.dtype)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Images `[B, 3, H, W]` → their reconstructions through the bottleneck, clamped to [-1, 1]."""
        return self.decode(self.code(self.encode(images))).clamp(-1, 1)
