"""The one image transform of the trainer, the fit script and the demo: optional downscale, square crop, flip."""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import UserError
from .naming import Names, parameter


class BadImageError(UserError):
    """An image that cannot be read or is too small; its message names the file (or dataset row)."""


def check_crop_size(resolution: int, resize_resolution: Optional[int] = None, names: Names = parameter) -> None:
    """`ValueError` naming the argument (spelled by `names`) unless `resolution` is a multiple of 8 and
    `resize_resolution`, if given, is at least `resolution`."""
    if resolution < 8 or resolution % 8:
        raise UserError(f"{names('resolution')} must be a multiple of 8 (the VAE's downsampling), got {resolution}.")
    if resize_resolution is not None and resize_resolution < resolution:
        raise UserError(
            f"{names('resize_resolution')} must be at least {names('resolution')} {resolution}, got {resize_resolution}."
        )


class ImageTransform:
    """A PIL image → `[3, resolution, resolution]` float32 in [-1, 1].

    1. Scale: with `resize_resolution`, an image whose shorter side is longer than it is scaled down
       (bicubic) so that the shorter side equals it; images are never scaled up. Without it (the
       trainer's default) crops are taken at the image's native scale.
    2. Crop a `resolution` square: the centre one (`center_crop`), or a random one.
    3. Flip horizontally with probability 1/2 (`random_flip`).

    Every random draw comes from the `generator` passed per call, so a sample is a function of its
    seed: workers, restarts and resumed runs all see the same crops. Scaling and cropping are one
    resampling of the crop window (`PIL.Image.resize(box=...)`), not a resize of the whole image.

    An image smaller than `resolution` on either side raises `BadImageError` naming it.
    """

    def __init__(
        self,
        resolution: int,
        resize_resolution: Optional[int] = None,
        center_crop: bool = False,
        random_flip: bool = False,
    ):
        check_crop_size(resolution, resize_resolution)
        self.resolution = resolution
        self.resize_resolution = resize_resolution
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __repr__(self) -> str:
        return (
            f"ImageTransform(resolution={self.resolution}, resize_resolution={self.resize_resolution}, "
            f"center_crop={self.center_crop}, random_flip={self.random_flip})"
        )

    def check_size(self, width: int, height: int, name: str) -> None:
        """`BadImageError` naming `name` when the image is smaller than the crop."""
        if min(width, height) < self.resolution:
            raise BadImageError(f"{name} is {width}x{height}, smaller than --resolution {self.resolution}.")

    def __call__(self, image, generator: Optional[torch.Generator] = None, name: str = "image") -> torch.Tensor:
        import numpy as np
        from PIL import Image

        if generator is None and (self.random_flip or not self.center_crop):
            raise UserError("a random crop or flip needs a `generator`.")
        width, height = image.size
        self.check_size(width, height, name)
        shorter = min(width, height)
        # the crop window in source pixels: `resolution` after scaling the shorter side to resize_resolution
        scale = 1.0 if self.resize_resolution is None else min(1.0, self.resize_resolution / shorter)
        window = min(shorter, round(self.resolution / scale))
        if self.center_crop:
            left, top = (width - window) // 2, (height - window) // 2
        else:
            top = int(torch.randint(0, height - window + 1, (), generator=generator))
            left = int(torch.randint(0, width - window + 1, (), generator=generator))
        if image.mode != "RGB":
            image = image.convert("RGB")  # (convert() copies even an RGB image: only when needed)
        if window == self.resolution:
            image = image.crop((left, top, left + window, top + window))
        else:
            box = (left, top, left + window, top + window)
            image = image.resize((self.resolution, self.resolution), Image.BICUBIC, box=box)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1
        if self.random_flip and bool(torch.rand((), generator=generator) < 0.5):
            pixels = pixels.flip(-1)
        return pixels
