"""Validation of the trainer: the model scored on held-out crops (PSNR, SSIM, FLIP, usage perplexity, LPIPS when
its weights are there) and a labelled PNG grid of inputs, outputs and targets per validation step.

    metrics = validate(model, data.validation, args, step, lpips)  # {"val/psnr": ..., ...}; writes validation/step-N.png
"""

from __future__ import annotations

import os
from typing import Dict

import torch

from ..data import to_image
from ..evaluation import evaluate
from ..metrics import psnr
from .tasks import DegradedInputModel, degrade, inpainting_mask, masked_psnr

GRID_PANEL_SIZE = 128  # smallest panel side of the validation grids (small crops are enlarged, nearest)


def validation_grid(inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, task: str, title: str):
    """A labelled PIL grid, one row per validation image `[V, 3, R, R]` (all in [-1, 1]): the degraded
    input (for a task other than reconstruction), the model's output and the target, each captioned with
    its PSNR against the target (and, for inpainting, the PSNR inside the masked square)."""
    from ..evaluation.image_grid import labelled_grid

    columns = [("input", inputs)] if task != "reconstruction" else []
    columns.append(("output" if task != "reconstruction" else "reconstruction", outputs))
    unit_targets = (targets + 1) / 2
    mask = inpainting_mask(*targets.shape[-2:]) if task == "inpainting" else None
    captions = []
    for name, images in columns:  # one caption list per column
        scores = psnr(unit_targets, (images.clamp(-1, 1) + 1) / 2, dim=(1, 2, 3)).tolist()
        texts = [f"{name} {score:.2f} dB" for score in scores]
        if mask is not None:
            inside = masked_psnr(targets, images.clamp(-1, 1), mask).tolist()
            texts = [f"{text} (mask {score:.2f})" for text, score in zip(texts, inside)]
        captions.append(texts)
    captions = [[*row, "target"] for row in zip(*captions)]  # rows: one per image
    panels = [[to_image(images[i]) for _, images in columns] + [to_image(targets[i])] for i in range(len(targets))]
    panel_size = max(GRID_PANEL_SIZE, targets.shape[-1])
    return labelled_grid(panels, captions, panel_size=panel_size, title=title)


@torch.no_grad()
def validate(model, crops: torch.Tensor, args, step: int, lpips=None) -> Dict[str, float]:
    """Scores the model on the held-out crops `[V, 3, R, R]` (the targets), fed `degrade(crops, --task)`:
    logs PSNR, SSIM, FLIP, usage perplexity (and LPIPS when its weights are there) of the outputs against
    the clean crops, plus the input's PSNR for a task and the PSNR inside the mask for inpainting; saves
    a labelled PNG grid `validation/step-N.png` (input, output, target per row)."""
    task = args.task
    scores, outputs = evaluate(
        DegradedInputModel(model, task, args.sr_factor),
        crops,
        batch_size=len(crops),
        with_ssim=True,
        lpips=lpips,
        return_reconstructions=True,
    )
    names = {"val/psnr": "image_psnr", "val/ssim": "ssim", "val/flip": "flip", "val/perplexity": "perplexity"}
    names["val/lpips"] = "lpips"  # None without local LPIPS weights: left out
    metrics = {key: scores[name] for key, name in names.items() if scores[name] is not None}
    crops = crops.float().cpu()
    inputs = degrade(crops, task, args.sr_factor)
    if task != "reconstruction":  # the baseline: how far the degraded input itself is from the target
        metrics["val/input_psnr"] = float(psnr((crops + 1) / 2, (inputs + 1) / 2, dim=(1, 2, 3)).mean())
    if task == "inpainting":
        mask = inpainting_mask(*crops.shape[-2:])
        metrics["val/psnr_mask"] = float(masked_psnr(crops, outputs, mask).mean())
    title = f"{task}, step {step}: {scores['image_psnr']:.2f} dB"
    grid = validation_grid(inputs, outputs, crops, task, title)
    os.makedirs(os.path.join(args.output_dir, "validation"), exist_ok=True)
    grid.save(os.path.join(args.output_dir, "validation", f"step-{step}.png"))
    return metrics
