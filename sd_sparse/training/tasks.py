"""Downstream tasks of the LASERS paper (supplement §12): the autoencoder maps a degraded image to the clean one.

- `reconstruction`: the input is the image itself.
- `super_resolution`: the image downsampled by `sr_factor` (bicubic, antialiased) and upsampled back
  to full size (bicubic), e.g. 64→256 in the paper, 16→64 on 64² crops here; the target is the image.
- `inpainting`: a centred square of side a quarter of the image's shorter side is set to 0 (mid-grey
  in the [-1, 1] range; the paper "sets the pixel values to 0" and feeds no mask channel); the target is
  the whole image.

    inputs = degrade(batch, "super_resolution", sr_factor=4)  # [B, 3, H, W] → [B, 3, H, W]
    out = model(inputs); loss = reconstruction(batch, out.sample)

Every degradation is deterministic and batched (no loop over images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError

TASKS = ("reconstruction", "super_resolution", "inpainting")
MASK_FRACTION = 0.25  # side of the inpainting square / side of the image (paper: 0.25)
MASK_VALUE = 0.0


def check_task(task: str, sr_factor: int = 4, resolution: int | None = None) -> None:
    """`ValueError` naming the flag for an unknown `--task` or, for super-resolution, an `--sr_factor`
    below 2 or not dividing `--resolution`."""
    if task not in TASKS:
        raise UserError(f"--task must be one of {', '.join(TASKS)}; got {task!r}.")
    if task != "super_resolution":
        return
    if sr_factor < 2:
        raise UserError(f"--sr_factor must be >= 2, got {sr_factor}.")
    if resolution is not None and resolution % sr_factor:
        raise UserError(f"--sr_factor {sr_factor} must divide --resolution {resolution}.")


def inpainting_mask(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean `[H, W]`, True on the centred square of side `min(H, W) // 4` that inpainting blanks out."""
    side = max(1, int(min(height, width) * MASK_FRACTION))
    top, left = (height - side) // 2, (width - side) // 2
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[top : top + side, left : left + side] = True
    return mask


def bicubic_degradation(images: torch.Tensor, sr_factor: int) -> torch.Tensor:
    """`[B, C, H, W]` → `[B, C, H, W]`: bicubic (antialiased) down to `H/f × W/f`, bicubic back up,
    clamped to [-1, 1]. `H` and `W` must be multiples of `sr_factor`."""
    height, width = images.shape[-2:]
    if sr_factor < 2 or height % sr_factor or width % sr_factor:
        raise UserError(f"`sr_factor` ({sr_factor}) must be >= 2 and divide the image size {height}x{width}.")
    small = F.interpolate(
        images, size=(height // sr_factor, width // sr_factor), mode="bicubic", antialias=True, align_corners=False
    )
    return F.interpolate(small, size=(height, width), mode="bicubic", align_corners=False).clamp(-1, 1)


def degrade(images: torch.Tensor, task: str, sr_factor: int = 4) -> torch.Tensor:
    """The model's input for `task`: images `[B, C, H, W]` in [-1, 1] → degraded images `[B, C, H, W]`.

    `reconstruction` returns `images` itself; the other tasks return a new tensor (the input is not
    modified). The target of every task is `images`.
    """
    if images.dim() != 4:
        raise UserError(f"`images` must be [B, C, H, W], got shape {tuple(images.shape)}.")
    if task == "reconstruction":
        return images
    if task == "super_resolution":
        return bicubic_degradation(images, sr_factor)
    if task == "inpainting":
        mask = inpainting_mask(images.shape[-2], images.shape[-1], images.device)
        return images.masked_fill(mask, MASK_VALUE)
    raise UserError(f"`task` must be one of {', '.join(TASKS)}; got {task!r}.")


def masked_psnr(reference: torch.Tensor, estimate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR `[B]` (dB, images in [-1, 1] scored in [0, 1]) over the pixels where `mask` `[H, W]`
    is True, e.g. inside the inpainting square; an exact match scores 200 dB (the evaluation's ceiling)."""
    error = (reference.float() - estimate.float()).div(2).square()  # the [0, 1] range: (a - b) / 2
    weights = mask.to(error.device, error.dtype).expand_as(error)
    mse = (error * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-20))  # at most 200 dB


class DegradedInputModel(torch.nn.Module):
    """`model` fed `degrade(images, task, sr_factor)`: `forward(images)` returns `model(degraded images)`.

    Lets the evaluation functions that compare a model's output with its input (`sd_sparse.evaluation.
    evaluate`) score a task against the clean target: they call `wrapped(target)` and compare with it.
    """

    def __init__(self, model: torch.nn.Module, task: str, sr_factor: int = 4):
        super().__init__()
        check_task(task, sr_factor)
        self.model = model
        self.task = task
        self.sr_factor = sr_factor
        self.training = model.training  # evaluate() restores this mode, not a fresh module's

    @property
    def bottleneck(self):
        """The wrapped model's bottleneck (for the bits-per-position column), or None."""
        return getattr(self.model, "bottleneck", None)

    def forward(self, images: torch.Tensor, *args, **kwargs):
        return self.model(degrade(images, self.task, self.sr_factor), *args, **kwargs)
