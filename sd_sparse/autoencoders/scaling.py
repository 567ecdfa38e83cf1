"""Latent scaling and shift: the one place that converts between a VAE's latents and diffusion space.

A diffusion model sees `(z − shift) · scale`, where `z` is what the VAE's encoder makes and `scale`,
`shift` come from the VAE's own config (`scaling_factor`, `shift_factor`). Bottlenecks are fitted
and code in that space, so one fitted on a VAE drops into any pipeline using it. The coded VAEs and
the fitting code convert with the functions here, never with their own arithmetic.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch

Factor = Union[float, torch.Tensor]


def latent_scaling(vae) -> Tuple[Factor, Factor]:
    """`(scale, shift)` of a diffusers VAE: diffusion-space latents are `(z − shift) · scale`.

    `scale` is the config's `scaling_factor` (1 where it has none) and `shift` its `shift_factor`
    (0 where it has none or it is None, as for SD 1.x/2.x and SDXL; SD3 and Flux set one). Where the
    config holds per-channel `latents_mean` and `latents_std` (SDXL-family VAEs such as Playground
    v2.5), they are used as the SDXL pipelines use them: `shift = mean`, `scale = scaling_factor / std`,
    returned as float32 tensors of shape `[1, C, 1, 1]`; otherwise both are Python floats.
    """
    config = vae.config
    scale = config.get("scaling_factor", None)
    scale = 1.0 if scale is None else float(scale)
    mean, std = config.get("latents_mean", None), config.get("latents_std", None)
    if mean is not None and std is not None:
        channels = config.get("latent_channels", len(mean))
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"the VAE config's `latents_mean` ({len(mean)}) and `latents_std` ({len(std)}) must have one value "
                f"per latent channel ({channels})."
            )
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        return scale / std_t, mean_t
    shift = config.get("shift_factor", None)
    return scale, 0.0 if shift is None else float(shift)


def _like(factor: Factor, tensor: torch.Tensor) -> Factor:
    return factor.to(device=tensor.device, dtype=tensor.dtype) if isinstance(factor, torch.Tensor) else factor


def to_diffusion_space(vae, z: torch.Tensor) -> torch.Tensor:
    """The VAE's own latents `z` `[B, C, h, w]` → diffusion-space latents `(z − shift) · scale`."""
    scale, shift = latent_scaling(vae)
    if isinstance(shift, float) and shift == 0.0:
        return z * _like(scale, z)
    return (z - _like(shift, z)) * _like(scale, z)


def to_vae_space(vae, latents: torch.Tensor) -> torch.Tensor:
    """Diffusion-space latents `[B, C, h, w]` → the VAE's own latents `latents / scale + shift` (what
    the pipelines pass to `vae.decode`)."""
    scale, shift = latent_scaling(vae)
    z = latents / _like(scale, latents)
    if isinstance(shift, float) and shift == 0.0:
        return z
    return z + _like(shift, latents)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
    """Images `[B, 3, H, W]` in [-1, 1] → diffusion-space latents `[B, C, H/f, W/f]`.

    Uses the posterior's mode (`AutoencoderKL`) unless `sample=True`; `AutoencoderTiny` has no
    posterior and returns its latents.
    """
    channels = vae.config.in_channels
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != channels:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a tensor [B, {channels}, H, W] in [-1, 1], got {shape}.")
    encoded = vae.encode(images.to(device=vae.device, dtype=vae.dtype))
    if hasattr(encoded, "latent_dist"):
        z = encoded.latent_dist.sample(generator) if sample else encoded.latent_dist.mode()
    else:
        z = encoded.latents
    return to_diffusion_space(vae, z)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, **decode_kwargs) -> torch.Tensor:
    """Diffusion-space latents `[B, C, h, w]` → images `[B, 3, H, W]` in [-1, 1] (not clamped).

    `decode_kwargs` go to `vae.decode` (e.g. `apply_bottleneck=False` for a coded VAE).
    """
    z = to_vae_space(vae, latents).to(device=vae.device, dtype=vae.dtype)
    return vae.decode(z, **decode_kwargs).sample
