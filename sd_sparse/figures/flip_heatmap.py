"""FLIP error maps with a colour bar, next to the two images they compare."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import UserError
from ..metrics import flip, to_unit_range


def flip_error_map(reference: torch.Tensor, estimate: torch.Tensor) -> Tuple[float, np.ndarray]:
    """NVIDIA's FLIP (LDR) of two images `[3, H, W]` in [-1, 1]: `(mean, errors [H, W])`, the per-pixel
    error values in [0, 1] (flip-evaluator's map before its magma colouring; `errors.mean()` is the mean).

    Uses flip-evaluator (a core dependency).
    """
    mean, errors = flip(reference, estimate, colored=False)
    return mean, np.asarray(errors, dtype=np.float32).reshape(reference.shape[1:])


def flip_figure(
    references: torch.Tensor,
    estimates: torch.Tensor,
    titles: Sequence[str] = ("reference", "reconstruction"),
    title: Optional[str] = None,
    panel_inches: float = 3.0,
):
    """A matplotlib figure, a row per image pair of `references` / `estimates` `[B, 3, H, W]` in [-1, 1]: the
    two images and their FLIP error map (magma over [0, 1], one shared colour bar), every panel titled."""
    from ._matplotlib import pyplot

    if references.dim() == 3:
        references, estimates = references[None], estimates[None]
    if references.shape != estimates.shape or references.dim() != 4:
        raise UserError(
            f"`references` and `estimates` must be two [B, 3, H, W] batches, got {tuple(references.shape)} and "
            f"{tuple(estimates.shape)}."
        )
    plt = pyplot()
    rows = references.shape[0]
    figure, axes = plt.subplots(
        rows, 3, figsize=(3 * panel_inches + 0.8, rows * panel_inches + 0.4), squeeze=False, layout="constrained"
    )
    shown = None
    for r in range(rows):
        mean, errors = flip_error_map(references[r], estimates[r])
        for c, image in enumerate((references[r], estimates[r])):
            axes[r, c].imshow(to_unit_range(image.detach().float()).permute(1, 2, 0).cpu().numpy())
            axes[r, c].set_title(f"{titles[c]} {r + 1}" if rows > 1 else titles[c])
        shown = axes[r, 2].imshow(errors, cmap="magma", vmin=0.0, vmax=1.0)
        axes[r, 2].set_title(f"FLIP error (mean {mean:.3f})")
        for axis in axes[r]:
            axis.set_axis_off()
    figure.colorbar(shown, ax=axes[:, 2].tolist(), label="FLIP error", shrink=0.9)
    if title:
        figure.suptitle(title)
    return figure


def plot_flip(
    references: torch.Tensor,
    estimates: torch.Tensor,
    path: str,
    titles: Sequence[str] = ("reference", "reconstruction"),
    title: Optional[str] = None,
) -> str:
    """Writes `flip_figure(references, estimates)` to the PNG `path`; returns `path`."""
    from ._matplotlib import save_figure

    return save_figure(flip_figure(references, estimates, titles, title), path)
