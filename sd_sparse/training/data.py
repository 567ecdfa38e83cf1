"""Training images for the standalone autoencoders: loading, checking, deterministic batches."""

from __future__ import annotations

import os
from typing import Optional

import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_training_images(
    train_data_dir: Optional[str] = None,
    dataset_name: Optional[str] = None,
    image_column: str = "image",
    min_size: int = 1,
    max_images: Optional[int] = None,
) -> list:
    """Images as uint8 tensors `[3, H, W]` (full size; crops are taken per batch).

    From a folder of image files, a `datasets` dataset, or, with neither, the photographs shipped
    with scikit-image/scikit-learn. Raises `ValueError` for an empty or missing folder, an
    unreadable file, or an image smaller than `min_size` on either side, naming the file.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    images, names = [], []
    if train_data_dir:
        if not os.path.isdir(train_data_dir):
            raise ValueError(f"--train_data_dir {train_data_dir} is not a folder.")
        paths = sorted(
            os.path.join(root, n)
            for root, _, files in os.walk(train_data_dir)
            for n in files
            if n.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not paths:
            raise ValueError(f"--train_data_dir {train_data_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        for path in paths[:max_images]:
            try:
                images.append(np.asarray(Image.open(path).convert("RGB")))
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"cannot read image {path}: {err}") from None
            names.append(path)
    elif dataset_name:
        import datasets

        data = datasets.load_dataset(dataset_name, split="train")
        if image_column not in data.column_names:
            raise ValueError(f"--image_column {image_column} is not in the dataset: {data.column_names}")
        if len(data) == 0:
            raise ValueError(f"--dataset_name {dataset_name} is empty.")
        for i, image in enumerate(data[image_column][:max_images]):
            images.append(np.asarray(image.convert("RGB")))
            names.append(f"row {i}")
    else:
        from ..testing import sample_photographs

        for name, image in list(sample_photographs().items())[:max_images]:
            images.append(image)
            names.append(name)
    tensors = []
    for name, image in zip(names, images):
        if min(image.shape[:2]) < min_size:
            raise ValueError(f"{name} is {image.shape[1]}x{image.shape[0]}, smaller than --resolution {min_size}.")
        tensors.append(torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous())
    return tensors


def random_crops(images: list, resolution: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` random `resolution` crops (random image, position, horizontal flip), `[B, 3, R, R]` in [-1, 1].

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
