"""`TrainingDataConfig`: what `build_training_data` reads, typed; the scripts' data flags are its fields.

    config = TrainingDataConfig(train_data_dir="images", resolution=256, validation_split=0.1)
    data = build_training_data(config, accelerator, batch_size=16, seed=0)

`add_data_arguments` (`sd_sparse.data.arguments`) makes one flag per field, with the same name and
default; `TrainingDataConfig.from_namespace` turns the parsed flags back into a config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional

from ..errors import UserError
from .naming import field, flag
from .transforms import check_crop_size

PHOTOGRAPH_REPEATS = 100  # the shipped photographs are few and large: many small crops of each per epoch


@dataclass
class TrainingDataConfig:
    """The training images, their crops and the held-out split (the flags of `add_data_arguments`).

    Source (at most one of `train_data_dir` and `dataset_name`; neither: the shipped photographs):
        train_data_dir (`str`, *optional*): a folder of images, nested folders fine.
        dataset_name (`str`, *optional*): a `datasets` name or local path with an image column.
        dataset_config_name (`str`, *optional*): the configuration of `dataset_name`.
        image_column (`str`, defaults to `"image"`): the image column of `dataset_name`.
        streaming (`bool`, defaults to `False`): stream `dataset_name` (or `train_data_dir` through the
            `imagefolder` builder) shard by shard instead of memory-mapping it.
        shuffle_buffer_size (`int`, defaults to 1000): examples in a stream's shuffle buffer.
        max_images (`int`, *optional*): use at most this many images (None: all).
    Crops:
        resolution (`int`, defaults to 32): side of the square crops, a multiple of 8.
        resize_resolution (`int`, *optional*): scale images down so that their shorter side is this,
            before cropping (None: crop at native scale).
        center_crop (`bool`, defaults to `False`): centre crops instead of random ones.
        random_flip (`bool`, defaults to `True`): flip training crops horizontally at random.
        repeats (`int`, *optional*): crops of each image per epoch (None: 1, or `PHOTOGRAPH_REPEATS`
            for the shipped photographs).
    Loading:
        dataloader_num_workers (`int`, defaults to 0): loader worker processes (0: the main process).
        skip_bad_images (`bool`, defaults to `False`): leave out unreadable or too-small images (logged
            and counted) instead of stopping.
    Held out:
        validation_data_dir (`str`, *optional*): a folder of held-out images (wins over the split).
        validation_split (`float`, defaults to 0.1): fraction of the images held out, by image
            (0: validate on training images).
    """

    train_data_dir: Optional[str] = None
    dataset_name: Optional[str] = None
    dataset_config_name: Optional[str] = None
    image_column: str = "image"
    streaming: bool = False
    shuffle_buffer_size: int = 1000
    max_images: Optional[int] = None
    resolution: int = 32
    resize_resolution: Optional[int] = None
    center_crop: bool = False
    random_flip: bool = True
    repeats: Optional[int] = None
    dataloader_num_workers: int = 0
    skip_bad_images: bool = False
    validation_data_dir: Optional[str] = None
    validation_split: float = 0.1

    #: whether errors name the flags (a config from `from_namespace`) rather than the fields
    _from_flags: ClassVar[bool] = False

    @classmethod
    def from_namespace(cls, args) -> TrainingDataConfig:
        """The config of parsed data flags (`add_data_arguments`): each field from the attribute of its
        name (its default when absent); other attributes are ignored. Its errors name the flags."""
        values = {f.name: getattr(args, f.name, f.default) for f in dataclasses.fields(cls)}
        config = cls(**values)
        config._from_flags = True
        return config

    def names(self, name: str) -> str:
        """How an error spells the argument `name`: its flag, or its field and flag (see `naming`)."""
        return flag(name) if self._from_flags else field(name)

    def check(self) -> None:
        """`ValueError` naming the argument, before anything is read."""
        n = self.names
        if self.train_data_dir and self.dataset_name:
            raise UserError(f"give one of {n('train_data_dir')} and {n('dataset_name')}, not both.")
        if self.streaming and not (self.train_data_dir or self.dataset_name):
            raise UserError(f"{n('streaming')} needs {n('dataset_name')} or {n('train_data_dir')}.")
        for name, at_least, optional in (
            ("max_images", 1, True),
            ("repeats", 1, True),
            ("dataloader_num_workers", 0, False),
            ("shuffle_buffer_size", 1, False),
        ):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if value is None or value < at_least:
                raise UserError(f"{n(name)} must be >= {at_least}, got {value}.")
        if not 0 <= self.validation_split < 1:
            raise UserError(f"{n('validation_split')} must be in [0, 1), got {self.validation_split}.")
        check_crop_size(self.resolution, self.resize_resolution, n)
