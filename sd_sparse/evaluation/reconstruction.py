"""The one evaluation function: what a bottleneck or an autoencoder costs on held-out data."""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from ..metrics import bits_per_position, flip, latent_psnr, perplexity, psnr, ssim

PSNR_CEILING = 200.0  # an exact match has infinite PSNR; averages use this instead


def _reconstruction(output) -> torch.Tensor:
    """What a model returned as its reconstruction: an autoencoder's `sample`, a bottleneck's `latents`."""
    for name in ("sample", "latents"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, torch.Tensor):
        return output
    raise TypeError(f"cannot find a reconstruction (`sample` or `latents`) in a {type(output).__name__}.")


def _bits(model) -> float | None:
    from ..bottlenecks import Bottleneck

    bottleneck = model if isinstance(model, Bottleneck) else getattr(model, "bottleneck", None)
    return bits_per_position(bottleneck) if isinstance(bottleneck, Bottleneck) else None


def _device(module: torch.nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    *,
    vae=None,
    latents: Optional[bool] = None,
    batch_size: int = 8,
    with_flip: bool = True,
    with_ssim: bool = False,
    lpips: Optional[torch.nn.Module] = None,
    max_flip_images: Optional[int] = None,
    psnr_reduction: str = "mean",
    return_reconstructions: bool = False,
):
    """Held-out metrics of `model` on `inputs`, in eval mode (no state changes), batch by batch.

    Args:
        model: a bottleneck (its output's `latents` is the reconstruction) or an autoencoder such as
            `SparseAutoencoder` (its output's `sample`).
        inputs (`[N, C, H, W]`): images in [-1, 1], or latents (with `vae` or `latents=True`), e.g.
            a VAE's diffusion-space latents from `sd_sparse.training.collect_latents`.
        vae: a diffusers VAE whose latents `model` codes. The image metrics then compare the decode
            of the coded latents with the decode of the input latents, i.e. the plain VAE
            reconstruction.
        latents: the inputs are latents (default: whether `vae` is given): the latent PSNR compares
            coded and input latents; without `vae` no image metric is computed.
        with_flip, with_ssim: compute FLIP (first `max_flip_images` images, 3-channel images only) and
            SSIM (off by default: it costs about as much as a tiny VAE's decode).
        lpips: an `LPIPS` module (`sd_sparse.losses.load_lpips`), or None to skip the column.
        psnr_reduction: `"mean"` averages the per-image PSNR (each capped at 200 dB); `"pooled"` is the
            PSNR of the mean squared error over all images (also capped).
        return_reconstructions: also return the reconstructed images `[N, 3, H, W]` (CPU, [-1, 1]).

    Returns:
        a dict: `latent_psnr` (for latents), `image_psnr`, `ssim`, `flip`, `lpips` (dB / means over
        images; None when not computed), `perplexity` (usage over all inputs), `num_codes`,
        `dead_codes`, `bits_per_position`, `images`; and the reconstructions when asked for.
    """
    if psnr_reduction not in ("mean", "pooled"):
        raise ValueError(f"`psnr_reduction` must be 'mean' or 'pooled', got {psnr_reduction!r}.")
    if inputs.dim() != 4 or inputs.shape[0] == 0:
        raise ValueError(f"`inputs` must be a non-empty [N, C, H, W] batch, got shape {tuple(inputs.shape)}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    latents = vae is not None if latents is None else latents
    images = vae is not None or not latents
    if vae is not None:
        from ..autoencoders import decode_latents
    device = _device(model)
    lpips_device = _device(lpips) if lpips is not None else None
    was_training = model.training
    model.eval()
    usage = None
    latent_scores, image_scores, ssim_scores, flip_scores, lpips_scores, recons = [], [], [], [], [], []
    squared_error, elements = 0.0, 0
    try:
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start : start + batch_size]
            out = model(batch.to(device))
            coded = _reconstruction(out).to(batch.device, batch.dtype)
            counts = getattr(out, "usage", None)
            if counts is not None:
                usage = counts.detach().cpu() if usage is None else usage + counts.detach().cpu()
            if latents:
                latent_scores.append(latent_psnr(batch, coded).cpu())
            if not images:
                continue
            if vae is not None:
                reference = decode_latents(vae, batch).clamp(-1, 1).float().cpu()
                recon = decode_latents(vae, coded).clamp(-1, 1).float().cpu()
            else:
                reference, recon = batch.clamp(-1, 1).float().cpu(), coded.clamp(-1, 1).float().cpu()
            ref01, rec01 = (reference + 1) / 2, (recon + 1) / 2
            image_scores.append(psnr(ref01, rec01, dim=(1, 2, 3)))
            squared_error += float((ref01.double() - rec01.double()).square().sum())
            elements += ref01.numel()
            if with_ssim:
                ssim_scores.append(ssim(ref01, rec01))
            if with_flip and reference.shape[1] == 3:
                room = len(reference) if max_flip_images is None else max(max_flip_images - len(flip_scores), 0)
                flip_scores += [flip(a, b)[0] for a, b in list(zip(reference, recon))[:room]]
            if lpips is not None:
                lpips_scores.append(lpips(reference.to(lpips_device), recon.to(lpips_device)).float().cpu())
            if return_reconstructions:
                recons.append(recon)
    finally:
        model.train(was_training)

    def capped_mean(scores):
        return float(torch.cat(scores).clamp(max=PSNR_CEILING).mean())

    if not images:
        image_psnr = None
    elif psnr_reduction == "pooled":
        image_psnr = min(10 * math.log10(elements / squared_error), PSNR_CEILING) if squared_error else PSNR_CEILING
    else:
        image_psnr = capped_mean(image_scores)
    metrics: Dict[str, float | int | None] = {}
    if latents:
        metrics["latent_psnr"] = capped_mean(latent_scores)
    metrics.update(
        image_psnr=image_psnr,
        ssim=float(torch.cat(ssim_scores).mean()) if ssim_scores else None,
        flip=float(sum(flip_scores) / len(flip_scores)) if flip_scores else None,
        lpips=float(torch.cat(lpips_scores).mean()) if lpips_scores else None,
        perplexity=float(perplexity(usage)) if usage is not None else None,
        num_codes=int(usage.numel()) if usage is not None else None,
        dead_codes=int((usage == 0).sum()) if usage is not None else None,
        bits_per_position=_bits(model),
        images=int(inputs.shape[0]),
    )
    if return_reconstructions:
        return metrics, torch.cat(recons) if recons else None
    return metrics
