"""Where training images come from: a folder, a `datasets` dataset (map-style or streamed), the shipped photographs.

A source lists its images without decoding them, so memory does not grow with the dataset: a folder
is a list of paths, a `datasets` dataset stays memory-mapped (its image column is read as bytes and
decoded here, so a bad file raises an error that names it), a stream is read shard by shard.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from .naming import Names, flag
from .shipped_photographs import sample_photographs
from .transforms import BadImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: str, flag: str = "--train_data_dir") -> List[str]:
    """The image files under `folder` (recursively, sorted); `ValueError` for a missing or empty folder."""
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {folder} is not a folder.")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise UserError(f"{flag} {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return paths


def _open_rgb(source, name: str, min_side: Optional[int] = None, warn_alpha: bool = False):
    """Decodes a file (path or file object) → RGB `PIL.Image`; `BadImageError` naming it when it cannot.

    With `min_side`, a JPEG whose shorter side is longer is decoded at 1/2, 1/4 or 1/8 scale in the
    DCT domain (`PIL.Image.draft`), never below `min_side`: much faster when the image will be scaled
    down to `min_side` anyway. With `warn_alpha`, dropping transparency is a `UserWarning` naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            if min_side is not None and image.format == "JPEG" and min(image.size) > min_side:
                scale = min_side / min(image.size)
                image.draft("RGB", (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
            image.load()
            if warn_alpha and has_alpha(image):
                warnings.warn(
                    f"{name} has transparency (mode {image.mode}): the alpha channel is dropped, the image is "
                    "coded as RGB.",
                    stacklevel=3,
                )
            return image if image.mode == "RGB" else image.convert("RGB")  # no copy of RGB images
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise BadImageError(f"cannot read image {name}: {err}") from None


def read_image(path: str, min_side: Optional[int] = None, warn_alpha: bool = True):
    """An RGB `PIL.Image`; `BadImageError` (a `ValueError`) naming the file when it cannot be read.
    With `min_side`, large JPEGs are decoded at reduced scale, no smaller than that (see `_open_rgb`).
    An image with transparency (RGBA, LA, or a palette with a transparent colour) loses it, with a
    one-line warning naming the file unless `warn_alpha=False`."""
    return _open_rgb(path, path, min_side, warn_alpha=warn_alpha)


def has_alpha(image) -> bool:
    """Whether a `PIL.Image` carries transparency: an alpha band (RGBA, LA, PA, ...) or a transparent colour."""
    return "A" in image.getbands() or "transparency" in image.info


def _decode(data, name: str, min_side: Optional[int] = None):
    """A `datasets` Image value (a dict of bytes/path, or a PIL image) → RGB PIL image."""
    from PIL import Image

    if isinstance(data, Image.Image):
        return data.convert("RGB")
    if not isinstance(data, dict) or (data.get("bytes") is None and data.get("path") is None):
        raise BadImageError(f"{name} holds no image: {type(data).__name__}")
    source = io.BytesIO(data["bytes"]) if data.get("bytes") is not None else data["path"]
    return _open_rgb(source, name, min_side)


def _header_size(data, name: str) -> Tuple[int, int]:
    """(width, height) from the file header alone (no decoding); `BadImageError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, Image.Image):
        return data.size
    try:
        source = io.BytesIO(data["bytes"]) if isinstance(data, dict) and data.get("bytes") is not None else data
        if isinstance(source, dict):
            source = source["path"]
        with Image.open(source) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, TypeError, KeyError) as err:
        raise BadImageError(f"cannot read image {name}: {err}") from None


class ImageSource:
    """A list of images of a map-style source; `load(i)` decodes one, `name(i)` names it in errors.

    Build one with `ImageSource.from_folder`, `from_dataset` or `from_photographs`; `subset` keeps
    some of them (a split, the images that passed the scan).
    """

    def __init__(self, kind: str, items, column: Optional[str] = None, indices: Optional[Sequence[int]] = None):
        self.kind = kind  # "files", "dataset" or "arrays"
        self.items = items
        self.column = column
        self.indices = list(range(len(items))) if indices is None else list(indices)

    @classmethod
    def from_folder(cls, folder: str, flag: str = "--train_data_dir") -> ImageSource:
        return cls("files", image_files(folder, flag))

    @classmethod
    def from_dataset(
        cls,
        dataset_name: str,
        image_column: str = "image",
        split: str = "train",
        config_name: Optional[str] = None,
        names: Names = flag,
    ) -> ImageSource:
        """A `datasets` dataset (Hub name or local path; memory-mapped, not loaded), its image column read as
        bytes. Errors spell the arguments with `names` (`sd_sparse.data.naming`; default: the flags)."""
        dataset = _load_dataset(dataset_name, config_name, split, False, image_column, names=names)
        if len(dataset) == 0:
            raise UserError(f"{names('dataset_name')} {dataset_name} is empty.")
        return cls("dataset", dataset, column=image_column)

    @classmethod
    def from_photographs(cls) -> ImageSource:
        """The real photographs shipped with scikit-image and scikit-learn (the embedded default)."""
        photos: Dict[str, np.ndarray] = sample_photographs()
        return cls("arrays", list(photos.items()))

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, positions: Sequence[int]) -> ImageSource:
        """The images at `positions` of this source (positions, not original indices)."""
        return ImageSource(self.kind, self.items, self.column, [self.indices[p] for p in positions])

    def name(self, position: int) -> str:
        index = self.indices[position]
        if self.kind == "files":
            return self.items[index]
        if self.kind == "arrays":
            return f"photograph {self.items[index][0]}"
        return f"dataset row {index}"

    def load(self, position: int, min_side: Optional[int] = None):
        """The RGB `PIL.Image` at `position`; `BadImageError` naming it when it cannot be read. With
        `min_side`, a large JPEG may come back scaled down, its shorter side no smaller than that."""
        from PIL import Image

        index = self.indices[position]
        if self.kind == "files":
            return read_image(self.items[index], min_side, warn_alpha=False)  # training: no warning per image
        if self.kind == "arrays":
            return Image.fromarray(self.items[index][1])
        return _decode(self.items[index][self.column], self.name(position), min_side)

    def size(self, position: int) -> Tuple[int, int]:
        """(width, height) read from the header only: the cheap scan before training."""
        index = self.indices[position]
        if self.kind == "files":
            return _header_size(self.items[index], self.name(position))
        if self.kind == "arrays":
            height, width = self.items[index][1].shape[:2]
            return width, height
        return _header_size(self.items[index][self.column], self.name(position))

    def scan(self, min_size: int, skip_bad_images: bool = False, names: Names = flag) -> Tuple[ImageSource, List[str]]:
        """(the images that can be read and are at least `min_size` on each side, the bad ones' errors).

        Reads headers only. A bad image raises `BadImageError` naming it, unless `skip_bad_images`:
        then it is logged and left out. A file whose header reads but whose pixels do not is caught
        later, when it is decoded. Errors spell `resolution` and `skip_bad_images` with `names`.
        """
        good, bad = [], []
        for position in range(len(self)):
            try:
                width, height = self.size(position)
                if min(width, height) < min_size:
                    raise BadImageError(
                        f"{self.name(position)} is {width}x{height}, smaller than {names('resolution')} {min_size}."
                    )
            except BadImageError as err:
                if not skip_bad_images:
                    hint = f"(pass {names('skip_bad_images')} to leave such files out)"
                    raise BadImageError(f"{err} {hint}") from None
                logger.warning("skipping %s", err)
                bad.append(str(err))
                continue
            good.append(position)
        if not good:
            raise UserError(f"none of the {len(self)} images can be used (too small or unreadable).")
        return self.subset(good), bad


def _load_dataset(
    name: str,
    config_name: Optional[str],
    split: str,
    streaming: bool,
    image_column: str,
    data_dir: Optional[str] = None,
    names: Names = flag,
):
    """`datasets.load_dataset`, the image column cast to undecoded bytes; errors name the argument."""
    import datasets

    what = f"{names('train_data_dir')} {data_dir}" if data_dir else f"{names('dataset_name')} {name}"
    try:
        dataset = datasets.load_dataset(name, config_name, split=split, streaming=streaming, data_dir=data_dir)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise UserError(f"{what} (split {split}) cannot be loaded: {err}") from None
    columns = dataset.column_names if dataset.column_names is not None else list(dataset.features or {})
    if image_column not in columns:
        raise UserError(f"{names('image_column')} {image_column} is not in the dataset: {columns}")
    feature = (dataset.features or {}).get(image_column)
    if isinstance(feature, datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def load_stream(
    dataset_name: Optional[str] = None,
    image_column: str = "image",
    split: str = "train",
    config_name: Optional[str] = None,
    data_dir: Optional[str] = None,
    names: Names = flag,
):
    """A streamed `datasets.IterableDataset`: a Hub name or local path (parquet, webdataset, ... shards),
    or with `data_dir` a folder read by the `imagefolder` builder. The image column stays undecoded
    (decoded in the workers); shards are read as they are consumed. Errors spell the arguments with `names`."""
    if data_dir is not None:
        if not os.path.isdir(data_dir):
            raise UserError(f"{names('train_data_dir')} {data_dir} is not a folder.")
        return _load_dataset("imagefolder", None, split, True, "image", data_dir=data_dir, names=names)
    return _load_dataset(dataset_name, config_name, split, True, image_column, names=names)
