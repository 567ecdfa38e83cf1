"""Losses for the standalone autoencoders: reconstruction and GAN terms."""

from .gan import (
    PatchGANDiscriminator,
    adaptive_gan_weight,
    discriminator_factor,
    discriminator_loss,
    generator_loss,
    hinge_discriminator_loss,
    vanilla_discriminator_loss,
)
from .perceptual import LPIPS, load_lpips
from .reconstruction import ReconstructionLoss

__all__ = [
    "LPIPS",
    "load_lpips",
    "PatchGANDiscriminator",
    "ReconstructionLoss",
    "adaptive_gan_weight",
    "discriminator_factor",
    "discriminator_loss",
    "generator_loss",
    "hinge_discriminator_loss",
    "vanilla_discriminator_loss",
]
