"""The LASERS / VQ-VAE lightweight encoder and decoder (2 strided convs + 2 residual blocks)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """`x + conv1x1(relu(conv3x3(relu(x))))`, shape `[B, C, H, W]` → same."""

    def __init__(self, channels: int, residual_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, residual_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(residual_channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def run_layers(owner: nn.Module, layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`layers(x)`, with each residual block recomputed in the backward pass when `owner` has gradient
    checkpointing on (diffusers' `enable_gradient_checkpointing` sets `gradient_checkpointing` and
    `_gradient_checkpointing_func`)."""
    checkpointing = owner.gradient_checkpointing and torch.is_grad_enabled()
    for layer in layers:
        if checkpointing and isinstance(layer, ResidualBlock):
            x = owner._gradient_checkpointing_func(layer, x)
        else:
            x = layer(x)
    return x


class LightweightEncoder(nn.Module):
    """Images `[B, in, H, W]` → latents `[B, latent_channels, H/4, W/4]`: two 4×4 stride-2 convs, a
    3×3 conv, `num_residual_blocks` residual blocks and a 1×1 projection to the embedding dimension."""

    def __init__(
        self, in_channels=3, hidden_channels=128, residual_channels=32, num_residual_blocks=2, latent_channels=16
    ):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels // 2, hidden_channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
            *[ResidualBlock(hidden_channels, residual_channels) for _ in range(num_residual_blocks)],
            nn.ReLU(),
            nn.Conv2d(hidden_channels, latent_channels, 1),
        )
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_layers(self, self.net, x)


class LightweightDecoder(nn.Module):
    """Latents `[B, latent_channels, h, w]` → images `[B, out, 4h, 4w]`, mirroring the encoder."""

    def __init__(
        self, out_channels=3, hidden_channels=128, residual_channels=32, num_residual_blocks=2, latent_channels=16
    ):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, hidden_channels, 3, padding=1),
            *[ResidualBlock(hidden_channels, residual_channels) for _ in range(num_residual_blocks)],
            nn.ReLU(),
            nn.ConvTranspose2d(hidden_channels, hidden_channels // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden_channels // 2, out_channels, 4, stride=2, padding=1),
        )
        self.gradient_checkpointing = False

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the output layer (the adaptive GAN weight is taken there)."""
        return self.net[-1].weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return run_layers(self, self.net, z)
