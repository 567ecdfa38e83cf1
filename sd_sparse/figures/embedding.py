"""UMAP of a dictionary's atoms and a VQ codebook's vectors, in one 2-D scatter."""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import torch

from ..errors import UserError


def embed_vectors(
    sets: Mapping[str, torch.Tensor],
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    seed: int = 0,
) -> Dict[str, np.ndarray]:
    """One UMAP fitted on all of `sets` (`{label: vectors [K_i, D]}`, one D) → `{label: points [K_i, 2]}`.

    The default `metric="cosine"` compares directions: a dictionary's atoms are unit-norm and act through
    their coefficients, a codebook's vectors are used as they are. `n_neighbors` is capped at the number
    of vectors − 1. Needs umap-learn (`pip install 'sd_sparse[plots]'`).
    """
    from ..extras import require

    umap = require("umap", "the embedding figure")
    if not sets:
        raise UserError("`sets` is empty: give at least one set of vectors.")
    arrays = {label: torch.as_tensor(v).detach().float().cpu().numpy() for label, v in sets.items()}
    dims = {label: a.shape[1] if a.ndim == 2 else None for label, a in arrays.items()}
    if None in dims.values() or len(set(dims.values())) != 1:
        shapes = ", ".join(f"{label}: {list(a.shape)}" for label, a in arrays.items())
        raise UserError(f"every set must be vectors [K, D] of one D to share an embedding, got {shapes}.")
    stacked = np.concatenate(list(arrays.values()))
    if len(stacked) < 4:
        raise UserError(f"UMAP needs at least 4 vectors, got {len(stacked)}.")
    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, len(stacked) - 1),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        n_jobs=1,  # a seed makes UMAP single-threaded anyway; saying so silences its warning
    )
    points = reducer.fit_transform(stacked)
    out, start = {}, 0
    for label, array in arrays.items():
        out[label] = points[start : start + len(array)]
        start += len(array)
    return out


def embedding_figure(points: Mapping[str, np.ndarray], title: Optional[str] = None, marker_size: float = 14.0):
    """A matplotlib figure: one scatter of `{label: points [K_i, 2]}`, one colour per set, with a legend."""
    from ._matplotlib import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 5.5))
    for k, (label, array) in enumerate(points.items()):
        axis.scatter(array[:, 0], array[:, 1], s=marker_size, alpha=0.8, color=f"C{k}", label=f"{label} ({len(array)})")
    axis.set_xlabel("UMAP 1")
    axis.set_ylabel("UMAP 2")
    axis.set_title(title or "UMAP of the atoms / codebook vectors")
    axis.legend(loc="best", fontsize=9)
    figure.tight_layout()
    return figure


def plot_embedding(
    sets: Mapping[str, torch.Tensor],
    path: str,
    title: Optional[str] = None,
    metric: str = "cosine",
    seed: int = 0,
) -> str:
    """Embeds `sets` (`embed_vectors`) and writes their scatter to the PNG `path`; returns `path`."""
    from ._matplotlib import save_figure

    points = embed_vectors(sets, metric=metric, seed=seed)
    title = title or f"UMAP ({metric} distance) of {sum(len(v) for v in sets.values())} vectors"
    return save_figure(embedding_figure(points, title), path)
