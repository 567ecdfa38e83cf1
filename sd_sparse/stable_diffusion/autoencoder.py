"""A bottleneck in AutoencoderKL's latent path, without modifying diffusers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from diffusers.utils import BaseOutput

from ..bottlenecks import Bottleneck, BottleneckOutput
from ..metrics import bits_per_position, latent_psnr


def latent_scaling(vae) -> tuple:
    """(scaling_factor, shift_factor) of a diffusers VAE config (shift 0 where it has none)."""
    scale = getattr(vae.config, "scaling_factor", None) or 1.0
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return float(scale), float(shift)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
    """Images `[B, 3, H, W]` in [-1, 1] → diffusion-space latents `(z − shift)·scale`, `[B, C, H/8, W/8]`.

    Uses the posterior's mode unless `sample=True`.
    """
    if images.dim() != 4 or images.shape[1] != vae.config.in_channels:
        raise ValueError(f"`images` must be [B, {vae.config.in_channels}, H, W] in [-1, 1], got {tuple(images.shape)}.")
    scale, shift = latent_scaling(vae)
    posterior = vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist
    z = posterior.sample(generator) if sample else posterior.mode()
    return (z - shift) * scale


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Diffusion-space latents → images `[B, 3, H, W]` in [-1, 1] (not clamped)."""
    scale, shift = latent_scaling(vae)
    return vae.decode((latents / scale + shift).to(device=vae.device, dtype=vae.dtype)).sample


@dataclass
class CodedAutoencoderOutput(BaseOutput):
    """Output of `AutoencoderKLWithBottleneck`.

    Args:
        images (`torch.Tensor` `[B, 3, H, W]`): decoded from the coded latents, in [-1, 1] (clamped).
        latents (`torch.Tensor` `[B, C, h, w]`): the coded diffusion-space latents.
        reference_latents (`torch.Tensor` `[B, C, h, w]`): the latents before the bottleneck.
        codes: the bottleneck's codes (see `BottleneckOutput.codes`).
        latent_psnr (`torch.Tensor` `[B]`): PSNR of coded vs reference latents (peak = reference range).
        bits_per_position (`float` or None): storage per latent position of the codes.
        reference_images (`torch.Tensor`, *optional*): the plain VAE decode, when asked for.
        bottleneck_output (`BottleneckOutput`): everything the bottleneck returned.
    """

    images: torch.Tensor
    latents: torch.Tensor
    reference_latents: torch.Tensor
    codes: object
    latent_psnr: torch.Tensor
    bits_per_position: float | None
    reference_images: torch.Tensor | None = None
    bottleneck_output: BottleneckOutput | None = None


class AutoencoderKLWithBottleneck:
    """encode → scale/shift → bottleneck → unscale → decode, around an unmodified `AutoencoderKL`.

    The bottleneck works on diffusion-space latents (what a diffusion model generates), so one fitted
    here drops into a Stable Diffusion pipeline as it is.

    Example:
        >>> coded = AutoencoderKLWithBottleneck(pipe.vae, bottleneck)(images, return_reference=True)
        >>> coded.latent_psnr, coded.bits_per_position
    """

    def __init__(self, vae, bottleneck: Bottleneck):
        if bottleneck.config.embedding_dim != vae.config.latent_channels:
            raise ValueError(
                f"the bottleneck codes {bottleneck.config.embedding_dim}-channel latents but the VAE makes "
                f"{vae.config.latent_channels}-channel ones: build it with embedding_dim={vae.config.latent_channels}."
            )
        self.vae = vae
        self.bottleneck = bottleneck

    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        return encode_latents(self.vae, images, sample, generator)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae, latents)

    @torch.no_grad()
    def code(self, latents: torch.Tensor) -> BottleneckOutput:
        """Runs the bottleneck (in eval mode: no state changes) on diffusion-space latents."""
        was_training = self.bottleneck.training
        self.bottleneck.eval()
        try:
            return self.bottleneck(latents.to(self.bottleneck.device))
        finally:
            self.bottleneck.train(was_training)

    def __call__(
        self, images: torch.Tensor, return_reference: bool = False, sample: bool = False, generator=None
    ) -> CodedAutoencoderOutput:
        return self.forward(images, return_reference, sample, generator)

    def forward(
        self, images: torch.Tensor, return_reference: bool = False, sample: bool = False, generator=None
    ) -> CodedAutoencoderOutput:
        """Images `[B, 3, H, W]` in [-1, 1] through VAE + bottleneck; see `CodedAutoencoderOutput`."""
        reference = self.encode(images, sample, generator)
        return self.from_latents(reference, return_reference)

    def from_latents(self, latents: torch.Tensor, return_reference: bool = False) -> CodedAutoencoderOutput:
        """Codes given diffusion-space latents and decodes them (e.g. latents a pipeline generated)."""
        out = self.code(latents)
        coded = out.latents.to(latents.dtype)
        return CodedAutoencoderOutput(
            images=self.decode(coded).clamp(-1, 1),
            latents=coded,
            reference_latents=latents,
            codes=out.codes,
            latent_psnr=latent_psnr(latents.to(coded.device), coded),
            bits_per_position=bits_per_position(self.bottleneck),
            reference_images=self.decode(latents).clamp(-1, 1) if return_reference else None,
            bottleneck_output=out,
        )


def stable_diffusion_dictionary(
    latent_channels: int = 4, num_atoms: int = 512, sparsity: int = 8, patch_size: int = 4, **kwargs
):
    """A `DictionaryBottleneck` shaped for SD latents: 4×4 patches of 4 channels (64-dim vectors),
    S = 8 atoms each, i.e. 8·(9 + 16)/16 = 12.5 bits per position instead of 64 (4 float16 values)."""
    from ..bottlenecks import DictionaryBottleneck

    return DictionaryBottleneck(num_atoms, latent_channels, sparsity, patch_size=patch_size, **kwargs)


def stable_diffusion_vector_quantizer(
    latent_channels: int = 4, num_embeddings: int = 512, patch_size: Union[int, tuple] = 1, **kwargs
):
    """A `VectorQuantizer` for SD latents (per position by default: log2 K bits per position)."""
    from ..bottlenecks import VectorQuantizer

    return VectorQuantizer(num_embeddings, latent_channels, patch_size=patch_size, **kwargs)
