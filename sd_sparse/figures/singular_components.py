"""The top singular components of a batch of latents: projections and decodes, labelled with their variance share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from .latent_model import LatentModel


@dataclass
class SingularComponents:
    """`latent_svd`'s result.

    Args:
        components (`[k, C]`): unit-norm directions in channel space (right singular vectors), strongest first.
        singular_values (`[k]`): their singular values, descending.
        shares (`[k]`): each one's share of the total variance of the centred latents (descending, sum ≤ 1).
        mean (`[C]`): the per-channel mean that was subtracted.
    """

    components: torch.Tensor
    singular_values: torch.Tensor
    shares: torch.Tensor
    mean: torch.Tensor


def latent_svd(latents: torch.Tensor, k: Optional[int] = None) -> SingularComponents:
    """SVD over positions of latents `[N, C, h, w]`: the `N·h·w` channel vectors, centred by their mean, as
    rows of a matrix `[N·h·w, C]`; returns its top `k` (default and at most C) right singular vectors
    (float64)."""
    if not isinstance(latents, torch.Tensor) or latents.dim() != 4:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise UserError(f"`latents` must be a tensor [N, C, h, w], got {shape}.")
    channels = latents.shape[1]
    k = channels if k is None else int(k)
    if not 1 <= k <= channels:
        raise UserError(f"`k` must be in [1, {channels}] (the latent channels), got {k}.")
    rows = latents.detach().permute(0, 2, 3, 1).reshape(-1, channels).to(torch.float64).cpu()
    if rows.shape[0] < 2:
        raise UserError("singular components need at least 2 latent positions.")
    mean = rows.mean(0)
    _, values, vh = torch.linalg.svd(rows - mean, full_matrices=False)
    energy = values.square()
    shares = energy / energy.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return SingularComponents(components=vh[:k], singular_values=values[:k], shares=shares[:k], mean=mean)


def project(latents: torch.Tensor, components: SingularComponents) -> torch.Tensor:
    """The coordinates of latents `[N, C, h, w]` on each component: maps `[N, k, h, w]` (float64)."""
    centred = latents.detach().to(torch.float64).cpu() - components.mean.reshape(1, -1, 1, 1)
    return torch.einsum("nchw,kc->nkhw", centred, components.components)


def component_latents(latents: torch.Tensor, components: SingularComponents, index: int) -> torch.Tensor:
    """Latents `[N, C, h, w]` reduced to the mean plus their part along component `index` (float64)."""
    coordinates = project(latents, components)[:, index]  # [N, h, w]
    direction = components.components[index].reshape(1, -1, 1, 1)
    return components.mean.reshape(1, -1, 1, 1) + coordinates[:, None] * direction


def _diverging(maps: np.ndarray, limit: float) -> np.ndarray:
    """Maps `[..., h, w]` → uint8 RGB `[..., h, w, 3]` on a blue–white–red scale over [−limit, limit]."""
    from ._matplotlib import colormap

    unit = 0.5 + 0.5 * maps / max(limit, 1e-12)
    return (colormap("RdBu_r")(np.clip(unit, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def components_grid(
    latents: torch.Tensor,
    components: SingularComponents,
    model=None,
    images: Optional[torch.Tensor] = None,
    panel_size: int = 96,
    title: Optional[str] = None,
):
    """A PIL grid per latent of `latents` `[N, C, h, w]`: a row of its projections on each component
    (blue − / red +, one symmetric scale per component) and, with `model`, a row of each component's part
    decoded (`component_latents`); every panel captioned with the component's variance share. The first
    column holds the images (`images` `[N, 3, H, W]`, *optional*) and the full decodes."""
    from ..data import to_image
    from ..evaluation.image_grid import labelled_grid

    model = model if model is None or isinstance(model, LatentModel) else LatentModel(model)
    maps = project(latents, components).numpy()  # [N, k, h, w]
    limits = np.abs(maps).max(axis=(0, 2, 3))
    k = maps.shape[1]
    decoded = None
    if model is not None:
        decoded = [
            model.decode(component_latents(latents, components, j).to(torch.float32)).float().cpu().clamp(-1, 1)
            for j in range(k)
        ]
        full = model.decode(latents.float()).float().cpu().clamp(-1, 1)
    shares = [f"{100 * float(components.shares[j]):.1f}%" for j in range(k)]
    panels, captions, row_titles = [], [], []
    for n in range(maps.shape[0]):
        panels.append([None if images is None else to_image(images[n])])
        panels[-1] += [_diverging(maps[n, j], float(limits[j])) for j in range(k)]
        captions.append(
            ["" if images is None else "image"] + [f"PC{j + 1} {shares[j]} (±{limits[j]:.2g})" for j in range(k)]
        )
        row_titles.append(f"{n + 1}: projection")
        if decoded is not None:
            panels.append([to_image(full[n])] + [to_image(decoded[j][n]) for j in range(k)])
            captions.append(["full decode"] + [f"mean + PC{j + 1} {shares[j]}" for j in range(k)])
            row_titles.append(f"{n + 1}: decoded")
    return labelled_grid(
        panels, captions, panel_size=panel_size, row_titles=row_titles, title=title, font_size=11, gap=4
    )


def plot_singular_components(
    latents: torch.Tensor,
    path: str,
    k: Optional[int] = None,
    model=None,
    images: Optional[torch.Tensor] = None,
    num_rows: int = 2,
    panel_size: int = 96,
) -> str:
    """Fits `latent_svd(latents, k)` on the whole batch and writes `components_grid` of its first
    `num_rows` latents to the PNG `path`; returns `path`."""
    from ._matplotlib import save_image

    components = latent_svd(latents, k)
    shown = slice(0, max(1, num_rows))
    total = 100 * float(components.shares.sum())
    title = (
        f"top {len(components.shares)} singular components of {latents.shape[0]} latents "
        f"[{latents.shape[1]}x{latents.shape[2]}x{latents.shape[3]}] ({total:.1f}% of the variance)"
    )
    grid = components_grid(
        latents[shown], components, model, None if images is None else images[shown], panel_size, title
    )
    return save_image(grid, path)
