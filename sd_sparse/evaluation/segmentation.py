"""SC-VAE's unsupervised segmentation: K-means on the sparse codes of the latent positions (patches).

    codes = image_codes(model, images)                      # a SparseAutoencoder's `Codes` of [B, 3, H, W]
    labels = patch_clusters(codes, num_clusters=4)          # [B, h, w] cluster of each coded position
    segmentation_figure(images, labels, "segmentation.png")  # image | segmentation | overlay, per row

Each coded vector (a latent position, or a `P_H × P_W` latent patch with `patch_size > 1`) is described
by its dense code over the K atoms (VQ: a one-hot vector); positions whose codes use similar atoms
with similar coefficients fall into one cluster.
"""

from __future__ import annotations

import colorsys
import os
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..codec.codes import Codes
from ..errors import UserError
from ..sparse_coding.codes import SparseCodes


def dense_codes(codes: Union[Codes, SparseCodes, torch.Tensor]) -> torch.Tensor:
    """Dense code vectors: `Codes` → `[B, K, h, w]` (h, w: the grid of coded vectors, i.e. the latent
    size / patch size); `SparseCodes` → `[N, K]`; a tensor is returned as it is (float)."""
    if isinstance(codes, Codes):
        b, _, height, width, ph, pw, k = (int(v) for v in codes.layout.tolist())
        dense = codes.to_sparse().to_dense()  # [N, K], rows in (image, patch row, patch column) order
        return dense.reshape(b, height // ph, width // pw, k).permute(0, 3, 1, 2)
    if isinstance(codes, SparseCodes):
        return codes.to_dense()
    if isinstance(codes, torch.Tensor):
        return codes.float()
    raise TypeError(f"`codes` must be `Codes`, `SparseCodes` or a tensor, got {type(codes).__name__}.")


@torch.no_grad()
def image_codes(model: torch.nn.Module, images: torch.Tensor) -> Codes:
    """The `Codes` a `SparseAutoencoder` gives images `[B, 3, H, W]` in [-1, 1] (eval mode, no state change)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        return model.bottleneck.encode(model.encode(images.to(device)))
    finally:
        model.train(was_training)


def patch_clusters(
    codes: Union[Codes, SparseCodes, torch.Tensor],
    num_clusters: int,
    seed: int = 0,
    normalize: bool = False,
) -> torch.Tensor:
    """K-means (scikit-learn) cluster labels of code vectors.

    Args:
        codes: a bottleneck's `Codes`, or dense codes `[B, K, h, w]`, or code vectors `[N, K]`
            (`SparseCodes` too).
        num_clusters: the number of clusters (segments), at most the number of vectors.
        seed: K-means' initialisation seed (the labels are a function of it).
        normalize: cluster unit-norm code vectors (by which atoms are used, not by their magnitude).

    Returns:
        `torch.LongTensor` labels `[B, h, w]` (or `[N]` for `[N, K]` input), numbered 0, 1, ... in order of
        first appearance in raster order, so that equal clusterings give equal labels.
    """
    from sklearn.cluster import KMeans

    dense = dense_codes(codes)
    if dense.dim() == 4:
        b, k, h, w = dense.shape
        vectors = dense.permute(0, 2, 3, 1).reshape(-1, k)
        shape = (b, h, w)
    elif dense.dim() == 2:
        vectors, shape = dense, (dense.shape[0],)
    else:
        raise UserError(f"`codes` must be [B, K, h, w] or [N, K], got shape {tuple(dense.shape)}.")
    if not 1 <= num_clusters <= vectors.shape[0]:
        raise UserError(f"`num_clusters` must be in [1, {vectors.shape[0]}] (the code vectors), got {num_clusters}.")
    features = vectors.detach().double().cpu()
    if normalize:
        features = torch.nn.functional.normalize(features, dim=1)
    raw = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit_predict(features.numpy())
    _, first = np.unique(raw, return_index=True)
    order = np.argsort(np.argsort(first))  # cluster id → its rank by first appearance
    return torch.from_numpy(order[raw]).long().reshape(shape)


def palette(num_colors: int) -> np.ndarray:
    """`[num_colors, 3]` uint8 distinct colours (hues spread by the golden ratio)."""
    colors = [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95) for i in range(num_colors)]
    return (np.asarray(colors) * 255).round().astype(np.uint8).reshape(num_colors, 3)


def segmentation_map(labels: torch.Tensor, size: Optional[Sequence[int]] = None) -> np.ndarray:
    """Labels `[h, w]` → a uint8 colour image `[H, W, 3]` (nearest-neighbour up to `size` = (H, W))."""
    labels = labels.detach().cpu().long()
    if size is not None and tuple(size) != tuple(labels.shape):
        labels = torch.nn.functional.interpolate(labels[None, None].float(), size=tuple(size), mode="nearest")[0, 0]
        labels = labels.long()
    return palette(int(labels.max()) + 1)[labels.numpy()]


def segmentation_figure(
    images: torch.Tensor,
    labels: torch.Tensor,
    path: Union[str, os.PathLike],
    titles: Optional[Sequence[str]] = None,
    panel_size: int = 192,
    alpha: float = 0.5,
) -> str:
    """Writes a labelled PNG: per image a row with the image, its segmentation map and their overlay.

    Args:
        images: `[B, 3, H, W]` in [-1, 1].
        labels: `[B, h, w]` cluster labels (`patch_clusters`), shown at the image's size (nearest).
        titles: an optional title per row (e.g. the image's name).
    Returns the path written.
    """
    from ..data import to_image
    from .image_grid import labelled_grid

    if images.dim() != 4 or labels.dim() != 3 or images.shape[0] != labels.shape[0]:
        raise UserError(
            f"`images` [B, 3, H, W] and `labels` [B, h, w] must have the same B, got shapes {tuple(images.shape)} "
            f"and {tuple(labels.shape)}."
        )
    panels, captions = [], []
    for image, label in zip(images, labels):
        picture = to_image(image)
        seg = segmentation_map(label, picture.shape[:2])
        overlay = (picture * (1 - alpha) + seg * alpha).round().astype(np.uint8)
        clusters = len(torch.unique(label))
        panels.append([picture, seg, overlay])
        grid = f"{label.shape[0]}x{label.shape[1]}"
        captions.append(["image", f"segmentation: {clusters} clusters on the {grid} codes", "overlay"])
    grid_image = labelled_grid(
        panels,
        captions,
        panel_size=panel_size,
        row_titles=list(titles) if titles is not None else None,
        title="K-means clusters of the sparse codes (SC-VAE patch clustering)",
    )
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid_image.save(path)
    return path
