"""PatchGAN discriminator, GAN losses, the adaptive GAN weight and the discriminator start step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import UserError

NORMS = ("batch", "group", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    return nn.Identity()


class PatchGANDiscriminator(ModelMixin, ConfigMixin):
    r"""PatchGAN (Isola et al. 2017, the taming-transformers VQGAN setup): images `[B, C, H, W]` →
    real/fake logits `[B, 1, H', W']`, one per overlapping patch.

    Parameters:
        in_channels (`int`, defaults to 3), base_channels (`int`, defaults to 64),
        num_layers (`int`, defaults to 3): strided 4×4 conv layers after the first.
        norm (`str`, defaults to `"batch"`): `"batch"`, `"group"` or `"none"`. (Under DDP, batch
            norm statistics differ per rank unless converted to `SyncBatchNorm`.)
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in NORMS:
            raise UserError(f"`norm` must be one of {NORMS}, got {norm!r}.")
        if num_layers < 1:
            raise UserError(f"`num_layers` must be >= 1, got {num_layers}.")
        layers = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        channels = base_channels
        for i in range(1, num_layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(channels, out, 4, stride, 1, bias=norm == "none"), _norm(norm, out), nn.LeakyReLU(0.2)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """`½(E[relu(1 − D(x))] + E[relu(1 + D(x̂))])`."""
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def vanilla_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """`½(E[softplus(−D(x))] + E[softplus(D(x̂))])` (binary cross-entropy on logits)."""
    return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())


def generator_loss(fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """The generator's GAN term: `−E[D(x̂)]` (hinge) or `E[softplus(−D(x̂))]` (vanilla)."""
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "vanilla":
        return F.softplus(-fake_logits).mean()
    raise UserError(f"`kind` must be 'hinge' or 'vanilla', got {kind!r}.")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    if kind == "hinge":
        return hinge_discriminator_loss(real_logits, fake_logits)
    if kind == "vanilla":
        return vanilla_discriminator_loss(real_logits, fake_logits)
    raise UserError(f"`kind` must be 'hinge' or 'vanilla', got {kind!r}.")


def adaptive_gan_weight(
    reconstruction_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    delta: float = 1e-6,
    max_weight: float = 1e4,
) -> torch.Tensor:
    """λ = ‖∇_{G_L} ℓ_recon‖ / (‖∇_{G_L} ℓ_GAN‖ + δ), at the decoder's last layer, clamped to
    `[0, max_weight]` and detached (LASERS §1.3, after Esser et al.)."""
    recon_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (recon_grad.norm() / (gan_grad.norm() + delta)).clamp(0.0, max_weight).detach()


def discriminator_factor(step: int, start_step: int, weight: float = 1.0) -> float:
    """`weight` once training reaches `start_step`, 0 before (the discriminator starts late)."""
    return weight if step >= start_step else 0.0
