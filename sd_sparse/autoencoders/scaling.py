"""Latent scaling and shift: the one place that converts between a VAE's latents and diffusion space.

A diffusion model sees `(z − shift) · scale`, where `z` is what the VAE's encoder makes and `scale`,
`shift` come from the VAE (its family's definition, `families.py`). Bottlenecks are fitted and code
in that space, so one fitted on a VAE drops into any pipeline using it. The coded VAEs and the
fitting code convert with the functions here, never with their own arithmetic.

The families' spaces:
- `"config"` (most VAEs): `scale` is the config's `scaling_factor` (1 where it has none) and `shift` its
  `shift_factor` (0 where it has none or None: SD 1.x/2.x, SDXL; SD3, Flux set one). Where the VAE
  holds per-channel `latents_mean` and `latents_std` (in its config: SDXL-family VAEs such as
  Playground v2.5, Wan, Qwen-Image, Mochi; or as buffers: LTX-Video), `shift = mean` and
  `scale = scaling_factor / std`, as those pipelines use them.
- `"per_frame_stats"` (Cosmos): `latents_mean`/`latents_std` hold one value per channel and latent frame
  (`[C·T_max]`), cut to the latents' T, as `CosmosTextToWorldPipeline` uses them (it also divides by its
  scheduler's `sigma_data`, which the VAE does not know: here the space is that of `sigma_data = 1`).
- `"batch_norm_2x2"` (FLUX.2): the VAE's batch-norm running statistics over 2×2-patchified latents,
  `(patchify(z) − mean) / sqrt(var + eps)`, as `Flux2Pipeline` normalizes them; here un-patchified
  again, so the latents keep the VAE's `[B, C, h, w]` layout (a 2×2 bottleneck patch sees exactly
  the normalized 4·C-vector the transformer sees, in another order).

Latents are `[B, C, h, w]` (images) or `[B, C, T, h, w]` (videos); the factors broadcast over both.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch

from ..errors import UserError
from .families import family_of

Factor = Union[float, torch.Tensor]


def _channel_values(vae, name: str):
    """Per-channel `latents_mean` / `latents_std` from the config, else from a buffer of that name; or None."""
    value = vae.config.get(name, None)
    if value is None:
        buffer = vae._buffers.get(name) if hasattr(vae, "_buffers") else None
        if isinstance(buffer, torch.Tensor) and not buffer.is_meta:
            return buffer.detach().float().reshape(-1).cpu()
        return None
    return torch.tensor(list(value), dtype=torch.float32)


def latent_scaling(vae) -> Tuple[Factor, Factor]:
    """`(scale, shift)` of a diffusers VAE: diffusion-space latents are `(z − shift) · scale`.

    Python floats, or float32 tensors `[1, C, 1, 1]` (per channel), `[1, C, P_H, P_W]` (per channel
    and position in a patch, tiled over the latents: FLUX.2) or `[1, C, T_max, 1, 1]` (per channel and
    latent frame, cut to the latents' frames: Cosmos). See the module docstring for each family.
    """
    from .families import latent_channels

    config = vae.config
    if family_of(vae).latent_space == "per_frame_stats":
        mean, std = _channel_values(vae, "latents_mean"), _channel_values(vae, "latents_std")
        if mean is None or std is None:
            return 1.0, 0.0
        channels = latent_channels(vae)
        if len(mean) % channels or len(std) != len(mean):
            raise UserError(
                f"the VAE's `latents_mean` ({len(mean)}) and `latents_std` ({len(std)}) must hold the same whole "
                f"number of values per latent channel ({channels})."
            )
        return 1.0 / std.view(1, channels, -1, 1, 1), mean.view(1, channels, -1, 1, 1)
    if family_of(vae).latent_space == "batch_norm_2x2":
        bn = vae.bn
        channels = latent_channels(vae)
        ph, pw = tuple(config.get("patch_size", (2, 2)))
        mean = bn.running_mean.detach().float().cpu().view(1, channels, ph, pw)
        std = torch.sqrt(bn.running_var.detach().float().cpu() + float(config.batch_norm_eps)).view(1, channels, ph, pw)
        return 1.0 / std, mean
    scale = config.get("scaling_factor", None)
    scale = 1.0 if scale is None else float(scale)
    mean, std = _channel_values(vae, "latents_mean"), _channel_values(vae, "latents_std")
    if mean is not None and std is not None:
        channels = config.get("latent_channels", None) or config.get("z_dim", None) or len(mean)
        if len(mean) != channels or len(std) != channels:
            raise UserError(
                f"the VAE's `latents_mean` ({len(mean)}) and `latents_std` ({len(std)}) must have one value "
                f"per latent channel ({channels})."
            )
        return scale / std.view(1, -1, 1, 1), mean.view(1, -1, 1, 1)
    shift = config.get("shift_factor", None)
    return scale, 0.0 if shift is None else float(shift)


def _like(factor: Factor, tensor: torch.Tensor) -> Factor:
    """`factor` broadcastable to latents `tensor` `[B, C, h, w]` or `[B, C, T, h, w]`, on its device and dtype."""
    if not isinstance(factor, torch.Tensor):
        return factor
    if factor.dim() == 5:  # per channel and latent frame: cut to the latents' frames (images: the first)
        frames = tensor.shape[2] if tensor.dim() == 5 else 1
        if frames > factor.shape[2]:
            raise UserError(
                f"latents with {frames} frames: the VAE's statistics cover {factor.shape[2]} latent frames."
            )
        factor = factor[:, :, :frames]
        factor = factor if tensor.dim() == 5 else factor[:, :, 0]
        return factor.to(device=tensor.device, dtype=tensor.dtype)
    ph, pw = factor.shape[-2:]
    if ph > 1 or pw > 1:  # per position in a latent patch: tiled over the latents (cropped at odd edges)
        h, w = tensor.shape[-2:]
        factor = factor.repeat(1, 1, -(-h // ph), -(-w // pw))[..., :h, :w]
    if tensor.dim() == 5:
        factor = factor.unsqueeze(2)
    return factor.to(device=tensor.device, dtype=tensor.dtype)


def to_diffusion_space(vae, z: torch.Tensor) -> torch.Tensor:
    """The VAE's own latents `z` `[B, C, (T,) h, w]` → diffusion-space latents `(z − shift) · scale`."""
    scale, shift = latent_scaling(vae)
    if isinstance(shift, float) and shift == 0.0:
        return z * _like(scale, z)
    return (z - _like(shift, z)) * _like(scale, z)


def to_vae_space(vae, latents: torch.Tensor) -> torch.Tensor:
    """Diffusion-space latents `[B, C, (T,) h, w]` → the VAE's own latents `latents / scale + shift` (what
    the pipelines pass to `vae.decode`)."""
    scale, shift = latent_scaling(vae)
    z = latents / _like(scale, latents)
    if isinstance(shift, float) and shift == 0.0:
        return z
    return z + _like(shift, latents)


def vae_latents(encoded, sample: bool = False, generator=None) -> torch.Tensor:
    """What a diffusers VAE's `encode` returned → its latents: the posterior's mode (or a sample with
    `sample=True`) where there is a posterior, else the latents it returned."""
    if isinstance(encoded, (tuple, list)):
        encoded = encoded[0]
    if hasattr(encoded, "latent_dist"):
        dist = encoded.latent_dist
        return dist.sample(generator) if sample else dist.mode()
    if hasattr(encoded, "latents"):
        return encoded.latents
    if hasattr(encoded, "latent"):  # AutoencoderDC, AutoencoderRAE
        return encoded.latent
    if hasattr(encoded, "mode") and callable(encoded.mode):  # a bare posterior
        return encoded.sample(generator) if sample else encoded.mode()
    if isinstance(encoded, torch.Tensor):
        return encoded
    raise UserError(f"cannot read latents from {type(encoded).__name__} (what the VAE's encode returned).")


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
    """Images `[B, 3, H, W]` (or, for video VAEs, videos `[B, 3, T, H, W]`) in [-1, 1] → diffusion-space
    latents `[B, C, H/f, W/f]` (videos: `[B, C, T', H/f, W/f]`).

    A video VAE encodes images as one-frame videos and returns 4-D latents for them (one latent frame
    each). Uses the posterior's mode unless `sample=True`; VAEs without a posterior (`AutoencoderTiny`,
    `AutoencoderDC`) return their latents.
    """
    family = family_of(vae)
    channels = family.image_channels or vae.config.get("in_channels", 3)
    video = family.kind == "video"
    shape = f"[B, {channels}, H, W] images or [B, {channels}, T, H, W] videos" if video else f"[B, {channels}, H, W]"
    dims = (4, 5) if video else (4,)
    if not isinstance(images, torch.Tensor) or images.dim() not in dims or images.shape[1] != channels:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UserError(f"`images` must be a tensor {shape} in [-1, 1] for a {type(vae).__name__}, got {got}.")
    single_frames = video and images.dim() == 4
    if single_frames:
        images = images.unsqueeze(2)
    encoded = vae.encode(images.to(device=vae.device, dtype=vae.dtype))
    latents = to_diffusion_space(vae, vae_latents(encoded, sample=sample, generator=generator))
    return latents[:, :, 0] if single_frames else latents


def decode_kwargs_for(vae, z: torch.Tensor) -> dict:
    """Keyword arguments `vae.decode(z, ...)` needs beyond the latents (its family's `decode_defaults`)."""
    out = {}
    for name, rule in family_of(vae).decode_defaults.items():
        if rule == "batch":
            out[name] = z.shape[0]
    return out


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, **decode_kwargs) -> torch.Tensor:
    """Diffusion-space latents `[B, C, h, w]` → images `[B, 3, H, W]` (video latents `[B, C, T, h, w]` →
    videos `[B, 3, T', H, W]`) in [-1, 1] (not clamped). A video VAE decodes 4-D latents as one-frame
    videos and returns images.

    `decode_kwargs` go to `vae.decode` (e.g. `apply_bottleneck=False` for a coded VAE).
    """
    single_frames = family_of(vae).kind == "video" and latents.dim() == 4
    if single_frames:
        latents = latents.unsqueeze(2)
    z = to_vae_space(vae, latents).to(device=vae.device, dtype=vae.dtype)
    decoded = vae.decode(z, **{**decode_kwargs_for(vae, z), **decode_kwargs})
    images = decoded.sample if hasattr(decoded, "sample") else decoded
    if images.dim() == 5 and family_of(vae).frames_first_output:
        images = images.transpose(1, 2)
    return images[:, :, 0] if single_frames else images
