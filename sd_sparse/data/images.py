"""Image sources (a folder, a `datasets` dataset, the shipped photographs), checks and transforms.

Every reader raises `ValueError` naming the file or flag at fault (an empty or missing folder, an
unreadable file, an image smaller than the resolution), so scripts can stop before any work.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: str, flag: str = "--train_data_dir") -> List[str]:
    """The image files under `folder` (recursively, sorted); `ValueError` for a missing or empty folder."""
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {folder} is not a folder.")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise ValueError(f"{flag} {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return paths


def read_image(path: str):
    """An RGB `PIL.Image`; `ValueError` naming the file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def read_images(
    train_data_dir: Optional[str] = None,
    dataset_name: Optional[str] = None,
    image_column: str = "image",
    max_images: Optional[int] = None,
) -> List[Tuple[str, object]]:
    """`(name, RGB PIL image)` pairs, in a fixed order, from a folder of image files or a `datasets`
    dataset (a Hub name or a local path, its `train` split). Give exactly one source."""
    if bool(train_data_dir) == bool(dataset_name):
        raise ValueError("give one of --train_data_dir and --dataset_name.")
    if train_data_dir:
        return [(path, read_image(path)) for path in image_files(train_data_dir)[:max_images]]
    import datasets

    data = datasets.load_dataset(dataset_name, split="train")
    if image_column not in data.column_names:
        raise ValueError(f"--image_column {image_column} is not in the dataset: {data.column_names}")
    if max_images is not None:
        data = data.select(range(min(max_images, len(data))))
    if len(data) == 0:
        raise ValueError(f"--dataset_name {dataset_name} is empty.")
    return [(f"row {i}", image.convert("RGB")) for i, image in enumerate(data[image_column])]


def load_training_images(
    train_data_dir: Optional[str] = None,
    dataset_name: Optional[str] = None,
    image_column: str = "image",
    min_size: int = 1,
    max_images: Optional[int] = None,
) -> List[torch.Tensor]:
    """Images as uint8 tensors `[3, H, W]` at full size (crops are taken per batch).

    From a folder of image files, a `datasets` dataset, or, with neither, the shipped photographs.
    Raises `ValueError` for an empty or missing folder, an unreadable file, or an image smaller than
    `min_size` on either side, naming the file.
    """
    import numpy as np

    if train_data_dir or dataset_name:
        named = [
            (name, np.asarray(image))
            for name, image in read_images(train_data_dir, dataset_name, image_column, max_images)
        ]
    else:
        from .photographs import sample_photographs

        named = list(sample_photographs().items())[:max_images]
    tensors = []
    for name, image in named:
        if min(image.shape[:2]) < min_size:
            raise ValueError(f"{name} is {image.shape[1]}x{image.shape[0]}, smaller than --resolution {min_size}.")
        tensors.append(torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous())
    return tensors


def prepare_image(image, resolution: int, name: str = "image") -> torch.Tensor:
    """A PIL image → `[3, R, R]` in [-1, 1] (centre square crop, bicubic resize to `resolution`).

    `resolution` must be a multiple of 8 (a VAE's downsampling); an image smaller than it is an error.
    """
    import numpy as np
    from PIL import Image

    if resolution < 8 or resolution % 8:
        raise ValueError(f"`resolution` must be a multiple of 8 (the VAE's downsampling), got {resolution}.")
    w, h = image.size
    if min(w, h) < resolution:
        raise ValueError(f"{name} is {w}x{h}, smaller than --resolution {resolution}.")
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.convert("RGB").crop((left, top, left + side, top + side))
    image = image.resize((resolution, resolution), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1


def load_images(paths: Iterable[str], resolution: int) -> torch.Tensor:
    """Image files → `[N, 3, R, R]` in [-1, 1] (see `prepare_image`); `ValueError` naming a bad file."""
    tensors = [prepare_image(read_image(path), resolution, name=str(path)) for path in paths]
    if not tensors:
        raise ValueError("no images found.")
    return torch.stack(tensors)


def split_images(num_images: int, validation_fraction: float, seed: int = 0) -> Tuple[List[int], List[int]]:
    """(train indices, validation indices): a split by image, at least one image on each side."""
    if num_images < 2:
        raise ValueError(f"need at least 2 images to hold some out, got {num_images}.")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"`validation_fraction` must be in (0, 1), got {validation_fraction}.")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed)).tolist()
    held = min(max(1, math.ceil(num_images * validation_fraction)), num_images - 1)
    return sorted(order[held:]), sorted(order[:held])


def random_crops(images: Sequence[torch.Tensor], resolution: int, batch_size: int, generator: torch.Generator):
    """`batch_size` random `resolution` crops (random image, position, horizontal flip) of uint8
    images `[3, H, W]`, as `[B, 3, R, R]` in [-1, 1].

    Everything is drawn from `generator`, so a batch is a function of the generator's state: a
    resumed run that restores it sees the same batches.
    """
    picks = torch.randint(0, len(images), (batch_size,), generator=generator).tolist()
    batch = []
    for i in picks:
        image = images[i]
        top = int(torch.randint(0, image.shape[1] - resolution + 1, (), generator=generator))
        left = int(torch.randint(0, image.shape[2] - resolution + 1, (), generator=generator))
        crop = image[:, top : top + resolution, left : left + resolution]
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        batch.append(crop)
    return torch.stack(batch).float() / 127.5 - 1
