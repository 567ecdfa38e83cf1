"""Training a diffusers `AutoencoderKL` with the sd_sparse trainer: the SD recipe's KL term inside one forward.

Stable Diffusion's VAE is trained with a reconstruction loss (L1/L2 plus LPIPS), a small KL term
towards N(0, I) (weight 1e-6) and, later, a PatchGAN. The trainer adds the reconstruction, LPIPS and
GAN terms; `AutoencoderKLForTraining` computes the posterior, its sample, the decode and the KL in a
single `forward`, so that a DDP-wrapped model sees one forward per step (calling `encode` and
`decode` separately would bypass DDP's gradient hooks). What is saved is the plain `AutoencoderKL`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from diffusers.utils import BaseOutput

from ..errors import UserError


@dataclass
class AutoencoderKLTrainingOutput(BaseOutput):
    """`sample` `[B, 3, H, W]`; `bottleneck_loss`: `kl_weight × kl` (the trainer adds it to the loss);
    `kl`: the KL divergence to N(0, I), summed over the latent and averaged over the batch;
    `perplexity`: None (no codes)."""

    sample: torch.Tensor
    bottleneck_loss: torch.Tensor
    kl: torch.Tensor
    perplexity: Optional[torch.Tensor] = None


def build_autoencoder_kl(
    latent_channels: int = 4,
    block_out_channels: Sequence[int] = (64, 128, 128, 128),
    layers_per_block: int = 1,
    sample_size: int = 256,
):
    """A diffusers `AutoencoderKL` of SD's architecture at another size: downsampling `2^(len(blocks) − 1)`."""
    from diffusers import AutoencoderKL

    blocks = len(block_out_channels)
    if blocks < 1 or any(int(width) < 1 for width in block_out_channels):
        raise UserError(f"`block_out_channels` needs at least one positive width, got {list(block_out_channels)}.")
    for name, value in (("latent_channels", latent_channels), ("layers_per_block", layers_per_block)):
        if value < 1:
            raise UserError(f"`{name}` must be >= 1, got {value}.")
    groups = min(32, *block_out_channels)
    if any(width % groups for width in block_out_channels):
        raise UserError(f"every width of `block_out_channels` {list(block_out_channels)} must divide by {groups}.")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=groups,
        sample_size=sample_size,
    )


class AutoencoderKLForTraining(torch.nn.Module):
    """Wraps an `AutoencoderKL` for the trainer: `forward(images)` → `AutoencoderKLTrainingOutput`.

    In training mode the decoder reconstructs a sample of the posterior (the reparameterisation of
    SD's recipe); in eval mode its mode, so validation is deterministic. `save_pretrained`,
    `config`, `enable_gradient_checkpointing` and `last_layer` (for the adaptive GAN weight) are the
    wrapped VAE's.
    """

    def __init__(self, vae, kl_weight: float = 1e-6):
        super().__init__()
        if not kl_weight >= 0:  # also refuses NaN
            raise UserError(f"`kl_weight` must be >= 0, got {kl_weight}.")
        self.vae = vae
        self.kl_weight = kl_weight

    @property
    def config(self):
        return self.vae.config

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.vae.decoder.conv_out.weight

    def enable_gradient_checkpointing(self) -> None:
        self.vae.enable_gradient_checkpointing()

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        self.vae.save_pretrained(save_directory, **kwargs)

    def forward(self, images: torch.Tensor) -> AutoencoderKLTrainingOutput:
        posterior = self.vae.encode(images).latent_dist
        latents = posterior.sample() if self.training else posterior.mode()
        sample = self.vae.decode(latents).sample
        kl = posterior.kl().mean()
        return AutoencoderKLTrainingOutput(sample=sample, bottleneck_loss=self.kl_weight * kl, kl=kl)


@torch.no_grad()
def fit_scaling_factor(vae, images: torch.Tensor, batch_size: int = 16) -> float:
    """1 / the standard deviation of the latent means of `images` `[N, 3, H, W]`: SD's `scaling_factor`,
    which gives the diffusion-space latents unit variance. Registered in `vae.config` and returned."""
    if images.dim() != 4 or images.shape[0] == 0 or images.shape[1] != vae.config.in_channels:
        raise UserError(
            f"`images` must be a non-empty [N, {vae.config.in_channels}, H, W] batch, got {tuple(images.shape)}."
        )
    was_training = vae.training
    vae.eval()
    total = total_sq = count = 0.0
    device = next(vae.parameters()).device
    for start in range(0, images.shape[0], batch_size):
        latents = vae.encode(images[start : start + batch_size].to(device)).latent_dist.mode().double()
        total += float(latents.sum())
        total_sq += float(latents.square().sum())
        count += latents.numel()
    vae.train(was_training)
    variance = total_sq / count - (total / count) ** 2
    factor = float(1 / max(variance, 1e-12) ** 0.5)
    vae.register_to_config(scaling_factor=factor)
    return factor
