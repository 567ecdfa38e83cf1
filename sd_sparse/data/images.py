"""Whole small image sets in memory (the demo, the CLI, tests) and the helpers around them.

Training reads images lazily instead (`training_data`, `image_sources`). Every reader raises
`ValueError` naming the file or flag at fault (an empty or missing folder, an unreadable file, an
image smaller than the resolution).
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from ..errors import UserError
from . import splits
from ._moved import moved_attribute
from .image_sources import ImageSource, read_image
from .transforms import ImageTransform

#: names that moved to `splits`; the old paths still work, with a FutureWarning
_MOVED = {"split_images": (splits, "split_images")}


def read_images(
    train_data_dir: Optional[str] = None,
    dataset_name: Optional[str] = None,
    image_column: str = "image",
    max_images: Optional[int] = None,
) -> List[Tuple[str, object]]:
    """`(name, RGB PIL image)` pairs, in a fixed order, from a folder of image files or a `datasets`
    dataset (a Hub name or a local path, its `train` split), all decoded: for small sets. Give exactly
    one source; training reads the same sources lazily through `ImageSource`."""
    if bool(train_data_dir) == bool(dataset_name):
        raise UserError("give one of --train_data_dir and --dataset_name.")
    if train_data_dir:
        source = ImageSource.from_folder(train_data_dir)
    else:
        source = ImageSource.from_dataset(dataset_name, image_column)
    count = len(source) if max_images is None else min(max_images, len(source))
    return [(source.name(i), source.load(i)) for i in range(count)]


def prepare_image(image, resolution: int, name: str = "image") -> torch.Tensor:
    """A PIL image → `[3, R, R]` in [-1, 1]: the centre square, scaled (bicubic) to `resolution`.

    `ImageTransform(resolution, resize_resolution=resolution, center_crop=True)`; `resolution` must be a
    multiple of 8 (a VAE's downsampling); an image smaller than it is an error naming it.
    """
    return ImageTransform(resolution, resize_resolution=resolution, center_crop=True)(image, name=name)


def load_images(paths: Iterable[str], resolution: int) -> torch.Tensor:
    """Image files → `[N, 3, R, R]` in [-1, 1] (see `prepare_image`); `ValueError` naming a bad file."""
    tensors = [prepare_image(read_image(path), resolution, name=str(path)) for path in paths]
    if not tensors:
        raise UserError("no images found.")
    return torch.stack(tensors)


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


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)
