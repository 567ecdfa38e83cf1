"""The one evaluation function (`evaluate`) and its streaming accumulator (`ReconstructionMetrics`): what a
bottleneck or an autoencoder costs on held-out data."""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from ..errors import UserError
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


class ReconstructionMetrics:
    """`evaluate`'s metrics accumulated batch by batch: `update` each batch, `compute` at the end.

    Only sums, counts and the usage histogram are kept, so memory does not grow with the number of
    images; `all_reduce` adds up the accumulators of all processes (`torch.distributed`), so each rank
    can score its own share of a held-out set. The arguments are those of `evaluate`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        vae=None,
        latents: Optional[bool] = None,
        with_flip: bool = True,
        with_ssim: bool = False,
        lpips: Optional[torch.nn.Module] = None,
        max_flip_images: Optional[int] = None,
        psnr_reduction: str = "mean",
    ):
        if psnr_reduction not in ("mean", "pooled"):
            raise UserError(f"`psnr_reduction` must be 'mean' or 'pooled', got {psnr_reduction!r}.")
        self.model = model
        self.vae = vae
        self.latents = vae is not None if latents is None else latents
        self.images = vae is not None or not self.latents
        self.with_flip = with_flip
        self.with_ssim = with_ssim
        self.lpips = lpips
        self.max_flip_images = max_flip_images
        self.psnr_reduction = psnr_reduction
        self.usage: Optional[torch.Tensor] = None
        # sum and count of each per-image score; squared error and elements for the pooled PSNR
        self.sums = dict.fromkeys(self._SUMS, 0.0)

    _SUMS = (
        "images",
        "latent_psnr",
        "image_psnr",
        "squared_error",
        "elements",
        "ssim",
        "ssim_count",
        "flip",
        "flip_count",
        "lpips",
        "lpips_count",
    )

    @torch.no_grad()
    def update(
        self, inputs: torch.Tensor, reference: Optional[torch.Tensor] = None, return_reconstructions: bool = False
    ) -> Optional[torch.Tensor]:
        """Scores one batch `[B, C, H, W]` (images in [-1, 1], or latents) in eval mode.

        `reference`: the plain decode `[B, 3, H, W]` of latent `inputs` (clamped to [-1, 1]) when the
        caller already has it, e.g. to score several bottlenecks on one decode; default: decoded here.
        Returns the reconstructed images `[B, 3, H, W]` (CPU, [-1, 1]) with `return_reconstructions`.
        """
        from ..autoencoders import decode_latents

        if inputs.dim() != 4 or inputs.shape[0] == 0:
            raise UserError(f"`inputs` must be a non-empty [N, C, H, W] batch, got shape {tuple(inputs.shape)}.")
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(inputs.to(_device(self.model)))
        finally:
            self.model.train(was_training)
        coded = _reconstruction(out).to(inputs.device, inputs.dtype)
        counts = getattr(out, "usage", None)
        if counts is not None:
            counts = counts.detach().double().cpu()
            self.usage = counts if self.usage is None else self.usage + counts
        sums = self.sums
        sums["images"] += inputs.shape[0]
        if self.latents:
            sums["latent_psnr"] += float(latent_psnr(inputs, coded).clamp(max=PSNR_CEILING).sum())
        if not self.images:
            return None
        if self.vae is not None:
            if reference is None:
                reference = decode_latents(self.vae, inputs).clamp(-1, 1)
            reference = reference.float().cpu()
            recon = decode_latents(self.vae, coded).clamp(-1, 1).float().cpu()
        else:
            reference, recon = inputs.clamp(-1, 1).float().cpu(), coded.clamp(-1, 1).float().cpu()
        ref01, rec01 = (reference + 1) / 2, (recon + 1) / 2
        sums["image_psnr"] += float(psnr(ref01, rec01, dim=(1, 2, 3)).clamp(max=PSNR_CEILING).double().sum())
        sums["squared_error"] += float((ref01.double() - rec01.double()).square().sum())
        sums["elements"] += ref01.numel()
        if self.with_ssim:
            scores = ssim(ref01, rec01)
            sums["ssim"] += float(scores.double().sum())
            sums["ssim_count"] += scores.numel()
        if self.with_flip and reference.shape[1] == 3:
            room = len(reference)
            if self.max_flip_images is not None:
                room = max(min(room, self.max_flip_images - int(sums["flip_count"])), 0)
            for a, b in list(zip(reference, recon))[:room]:
                sums["flip"] += float(flip(a, b)[0])
                sums["flip_count"] += 1
        if self.lpips is not None:
            scores = self.lpips(reference.to(_device(self.lpips)), recon.to(_device(self.lpips))).float().cpu()
            sums["lpips"] += float(scores.double().sum())
            sums["lpips_count"] += scores.numel()
        return recon if return_reconstructions else None

    def all_reduce(self, device: Optional[torch.device] = None) -> None:
        """Sums the accumulators of all processes in place (a collective call; a no-op without a
        process group). `device`: where the sums travel (a CUDA device under NCCL)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        size = torch.tensor([0 if self.usage is None else self.usage.numel()], device=device)
        dist.all_reduce(size, op=dist.ReduceOp.MAX)  # a rank that saw no batch has no histogram
        usage = torch.zeros(int(size), dtype=torch.float64) if self.usage is None else self.usage
        values = torch.cat([torch.tensor([self.sums[k] for k in self._SUMS], dtype=torch.float64), usage])
        values = values.to(device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values.cpu()
        self.sums = {k: float(v) for k, v in zip(self._SUMS, values[: len(self._SUMS)].tolist())}
        self.usage = values[len(self._SUMS) :] if int(size) else None

    def compute(self) -> Dict[str, float | int | None]:
        """The metrics of all images so far (see `evaluate`)."""
        sums = self.sums
        count = max(sums["images"], 1)
        if not self.images or not sums["images"]:
            image_psnr = None
        elif self.psnr_reduction == "pooled":
            error = sums["squared_error"]
            image_psnr = min(10 * math.log10(sums["elements"] / error), PSNR_CEILING) if error else PSNR_CEILING
        else:
            image_psnr = sums["image_psnr"] / count
        usage = self.usage
        metrics: Dict[str, float | int | None] = {}
        if self.latents:
            metrics["latent_psnr"] = sums["latent_psnr"] / count if sums["images"] else None
        metrics.update(
            image_psnr=image_psnr,
            ssim=sums["ssim"] / sums["ssim_count"] if sums["ssim_count"] else None,
            flip=sums["flip"] / sums["flip_count"] if sums["flip_count"] else None,
            lpips=sums["lpips"] / sums["lpips_count"] if sums["lpips_count"] else None,
            perplexity=float(perplexity(usage)) if usage is not None else None,
            num_codes=int(usage.numel()) if usage is not None else None,
            dead_codes=int((usage == 0).sum()) if usage is not None else None,
            bits_per_position=_bits(self.model),
            images=int(sums["images"]),
        )
        return metrics


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
    if inputs.dim() != 4 or inputs.shape[0] == 0:
        raise UserError(f"`inputs` must be a non-empty [N, C, H, W] batch, got shape {tuple(inputs.shape)}.")
    if batch_size < 1:
        raise UserError(f"`batch_size` must be >= 1, got {batch_size}.")
    scores = ReconstructionMetrics(
        model,
        vae=vae,
        latents=latents,
        with_flip=with_flip,
        with_ssim=with_ssim,
        lpips=lpips,
        max_flip_images=max_flip_images,
        psnr_reduction=psnr_reduction,
    )
    recons = []
    for start in range(0, inputs.shape[0], batch_size):
        recon = scores.update(inputs[start : start + batch_size], return_reconstructions=return_reconstructions)
        if recon is not None:
            recons.append(recon)
    metrics = scores.compute()
    if return_reconstructions:
        return metrics, torch.cat(recons) if recons else None
    return metrics
