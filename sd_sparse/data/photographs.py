"""The shipped photographs (`shipped_photographs`) as tensors: conversions, patches, crops, and a folder of them."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ..errors import UserError
from . import splits
from ._moved import moved_attribute
from .shipped_photographs import sample_photographs
from .transforms import ImageTransform

#: names that moved to `splits`; the old paths still work, with a FutureWarning
_MOVED = {
    name: (splits, name)
    for name in ("split_by_image", "reference_split", "REFERENCE_VALIDATION_SPLIT", "REFERENCE_SPLIT_SEED")
}


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 `[H, W, 3]` → float `[3, H, W]` in [-1, 1] (the diffusers convention)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UserError(f"`image` must be a uint8 array [H, W, 3], got {image.dtype} {image.shape}.")
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 127.5 - 1


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """float `[3, H, W]` in [-1, 1] → uint8 `[H, W, 3]`."""
    return ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def photo_patches(
    images: Iterable[np.ndarray],
    patch_size: int = 8,
    max_patches: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Non-overlapping `patch_size` crops of every image, `[N, 3, P, P]` in [-1, 1].

    Each image contributes its full grid of patches (edges that do not fill a patch are cropped);
    with `max_patches`, a random subset (fixed by `seed`) is kept.
    """
    if patch_size < 1:
        raise UserError(f"`patch_size` must be >= 1, got {patch_size}.")
    pieces = []
    for image in images:
        x = to_tensor(image)
        h, w = (x.shape[1] // patch_size) * patch_size, (x.shape[2] // patch_size) * patch_size
        if h == 0 or w == 0:
            raise UserError(f"an image of shape {image.shape} is smaller than `patch_size` {patch_size}.")
        x = x[:, :h, :w].reshape(3, h // patch_size, patch_size, w // patch_size, patch_size)
        pieces.append(x.permute(1, 3, 0, 2, 4).reshape(-1, 3, patch_size, patch_size))
    if not pieces:
        raise UserError("`images` is empty.")
    patches = torch.cat(pieces)
    if max_patches is not None and max_patches < patches.shape[0]:
        keep = torch.randperm(patches.shape[0], generator=torch.Generator().manual_seed(seed))[:max_patches]
        patches = patches[keep]
    return patches


def save_sample_photographs(folder: str, split: str = "all") -> list:
    """Writes the shipped photographs to `folder` as `NAME.png` (folder created) and returns the paths:
    `split="all"`, `"train"` or `"held_out"` (the reference VAE's split, see `reference_split`). A folder to
    try the scripts' `--train_data_dir` and the commands' image arguments on."""
    import os

    from PIL import Image

    if split == "all":
        photos = sample_photographs()
    elif split in ("train", "held_out"):
        photos = splits.reference_split()[0 if split == "train" else 1]
    else:
        raise UserError(f"`split` must be 'all', 'train' or 'held_out', got {split!r}.")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, image in photos.items():
        paths.append(os.path.join(folder, f"{name}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


def photo_crops(
    photos: Iterable[np.ndarray], resolution: int, count: int, seed: int = 0, center_crop: bool = False
) -> torch.Tensor:
    """`count` crops `[count, 3, resolution, resolution]` in [-1, 1], cycling over the photographs large
    enough for them: random crops (seeded), or centre crops."""
    from PIL import Image

    if count < 1:
        raise UserError(f"`count` must be >= 1, got {count}.")
    usable = [p for p in photos if min(p.shape[:2]) >= resolution]
    if not usable:
        raise UserError(f"no photograph is at least {resolution} pixels on its short side (`resolution`).")
    transform = ImageTransform(resolution, center_crop=center_crop)
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([transform(Image.fromarray(usable[i % len(usable)]), generator) for i in range(count)])


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)
