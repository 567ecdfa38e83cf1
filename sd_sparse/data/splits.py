"""Held-out images, split by image and never by crop: the one place that decides which images are held out.

- `split_images`: a map-style source (a folder, a `datasets` dataset, the shipped photographs), by
  index: a seeded permutation, at least one image on each side (`split_source` applies it).
- `held_out_by_hash`: a stream, by a hash of each image's bytes (`split_stream` applies it), so an
  image stays on its side of the split wherever the data lives.
- `split_by_image`: named photographs, by name.
- `reference_split`: the shipped photographs as the reference VAE's training run split them.
"""

from __future__ import annotations

import math
import os
import zlib
from functools import partial
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..errors import UserError
from .shipped_photographs import sample_photographs

#: the held-out share and seed of the reference VAE's training run (`train/train_vae.py --validation_split 0.2`)
REFERENCE_VALIDATION_SPLIT = 0.2
REFERENCE_SPLIT_SEED = 0


def split_images(num_images: int, validation_fraction: float, seed: int = 0) -> Tuple[List[int], List[int]]:
    """(train indices, validation indices): a split by image, at least one image on each side."""
    if num_images < 2:
        raise UserError(f"need at least 2 images to hold some out, got {num_images}.")
    if not 0 < validation_fraction < 1:
        raise UserError(f"`validation_fraction` must be in (0, 1), got {validation_fraction}.")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed)).tolist()
    held = min(max(1, math.ceil(num_images * validation_fraction)), num_images - 1)
    return sorted(order[held:]), sorted(order[:held])


def split_source(source, validation_fraction: float, seed: int = 0):
    """(training source, held-out source) of an `ImageSource`, split by `split_images`."""
    train_positions, held_positions = split_images(len(source), validation_fraction, seed)
    return source.subset(train_positions), source.subset(held_positions)


def held_out_by_hash(example: dict, column: str, fraction: float, held_out: bool = True) -> bool:
    """A stream's split by image: is the image's bytes (read from a local path when the stream gives only
    the path; else the path or URL), hashed into [0, 1), below `fraction`?
    Returns that answer for `held_out=True` and its negation otherwise (a `filter` predicate)."""
    data = example[column]
    if isinstance(data, dict):
        key = data.get("bytes")
        path = data.get("path") or ""
        if key is None and os.path.isfile(path):  # a local file: its content, not where it happens to live
            with open(path, "rb") as f:
                key = f.read()
        key = key if key is not None else path.encode()
    else:
        key = repr(data).encode()
    return (zlib.crc32(key) / 2**32 < fraction) == held_out


def split_stream(stream, column: str, fraction: float):
    """(training stream, held-out stream) of a `datasets.IterableDataset`, filtered by `held_out_by_hash`."""
    train = stream.filter(partial(held_out_by_hash, column=column, fraction=fraction, held_out=False))
    held = stream.filter(partial(held_out_by_hash, column=column, fraction=fraction, held_out=True))
    return train, held


def split_by_image(
    photos: Dict[str, np.ndarray], test_names: Sequence[str]
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(train, test) dictionaries of photographs: the split is by image, never by crop."""
    unknown = set(test_names) - set(photos)
    if unknown:
        raise UserError(f"unknown test images {sorted(unknown)}; available: {sorted(photos)}.")
    train = {k: v for k, v in photos.items() if k not in test_names}
    test = {k: v for k, v in photos.items() if k in test_names}
    if not train:
        raise UserError("the split leaves no training image.")
    return train, test


def reference_split(
    validation_split: float = REFERENCE_VALIDATION_SPLIT, seed: int = REFERENCE_SPLIT_SEED
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(training, held-out) photographs, split by image as the trainer splits them: with the defaults,
    the split of the reference VAE's own run, so its held-out photographs were never seen in training."""
    photos = sample_photographs()
    names = list(photos)
    train, held = split_images(len(names), validation_split, seed)
    return {names[i]: photos[names[i]] for i in train}, {names[i]: photos[names[i]] for i in held}
