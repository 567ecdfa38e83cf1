"""The data flags of `train/train_*.py` and `train/fit_sd_bottleneck.py`: one per `TrainingDataConfig` field.

parser = argparse.ArgumentParser(); add_data_arguments(parser)
args = parser.parse_args()
check_data_arguments(args)  # ValueError naming the flag, before anything is read
data = build_training_data(args, ...)  # or TrainingDataConfig.from_namespace(args)
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from .config import PHOTOGRAPH_REPEATS, TrainingDataConfig


class BooleanFlag(argparse.Action):
    """`--NAME` sets True and `--no_NAME` False (snake_case, as every flag here); `--no-NAME`, what argparse's
    `BooleanOptionalAction` spells, is accepted too."""

    def __init__(self, option_strings, dest, default=None, help=None):
        negated = [f"--no{sep}{o[2:]}" for o in option_strings if o.startswith("--") for sep in ("_", "-")]
        super().__init__([*option_strings, *negated], dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith(("--no_", "--no-")))


#: the help of each data flag, in the order of `TrainingDataConfig`'s fields
HELP = {
    "train_data_dir": "a folder of images, nested folders fine (None, without --dataset_name: the shipped photographs)",
    "dataset_name": "a datasets name or local path with an image column",
    "dataset_config_name": "the configuration of --dataset_name",
    "image_column": "the image column of --dataset_name",
    "streaming": "stream --dataset_name (or --train_data_dir through the imagefolder builder) shard by shard "
    "instead of memory-mapping it; needs --max_train_steps",
    "shuffle_buffer_size": "examples in a stream's shuffle buffer",
    "max_images": "use at most this many images (None: all)",
    "resolution": "side of the square crops",
    "resize_resolution": "scale images down so that their shorter side is this, before cropping "
    "(None: crop at native scale)",
    "center_crop": "centre crops instead of random ones",
    "random_flip": "flip training crops horizontally at random",
    "repeats": f"crops of each image per epoch (None: 1, or {PHOTOGRAPH_REPEATS} for the shipped photographs)",
    "dataloader_num_workers": "loader worker processes (0: load in the main process)",
    "skip_bad_images": "leave out unreadable or too-small images (logged and counted) instead of stopping",
    "validation_data_dir": "a folder of held-out images for validation (wins over the split)",
    "validation_split": "fraction of the images held out for validation, by image (0: validate on training images)",
}


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The data flags shared by `train/train_*.py` and `train/fit_sd_bottleneck.py` (diffusers' names):
    `--NAME` for each field `NAME` of `TrainingDataConfig`, with its default. A boolean field is a switch:
    `--NAME` when it defaults to False, `--NAME` / `--no_NAME` (`BooleanFlag`) when it defaults to True."""
    types = typing.get_type_hints(TrainingDataConfig)
    data = parser.add_argument_group("data")
    for field in dataclasses.fields(TrainingDataConfig):
        flag, kind = f"--{field.name}", types[field.name]
        if kind is bool:
            action = BooleanFlag if field.default else "store_true"
            data.add_argument(flag, action=action, default=field.default, help=HELP[field.name])
            continue
        value_type = next((t for t in (int, float) if kind in (t, typing.Optional[t])), None)
        data.add_argument(flag, type=value_type, default=field.default, help=HELP[field.name])
    return data


def check_data_arguments(args) -> None:
    """`ValueError` naming the flag, before anything is read (`TrainingDataConfig.check` of the flags)."""
    TrainingDataConfig.from_namespace(args).check()
