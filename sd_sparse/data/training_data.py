"""The one data pipeline of the trainer and the fit script: sources, held-out split, sharded loaders.

    config = TrainingDataConfig(train_data_dir="images", resolution=256)  # or the scripts' parsed flags
    data = build_training_data(config, accelerator, batch_size=16, seed=0)
    batch = next(data.batches)  # [B, 3, R, R] in [-1, 1] of this rank; data.validation: held-out crops

- Map-style sources (a folder, a `datasets` dataset, the shipped photographs) are scanned first
  (headers only): a bad image is an error naming it, or with `skip_bad_images` is left out and
  counted. Their loader is prepared by Accelerate, which gives each rank its own batches.
- `streaming` reads a `datasets.IterableDataset` shard by shard; `split_dataset_by_node` gives
  each rank its part, and `datasets` splits that among the loader's workers.
- Decoding and the transform (`ImageTransform`) run in the loader's workers.
- Held-out images: `validation_data_dir`, else `validation_split` of the images, by image (`splits`:
  by index for map-style sources, by a hash of the image's bytes or path for streams).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ._moved import moved_attribute
from .config import PHOTOGRAPH_REPEATS, TrainingDataConfig
from .image_datasets import BatchStream, EpochSampler, ImageDataset, StreamingImageDataset, collate_images
from .image_sources import ImageSource, load_stream
from .splits import split_source, split_stream
from .transforms import ImageTransform

if TYPE_CHECKING:
    import argparse


logger = logging.getLogger(__name__)

VALIDATION_SEED = 12345  # the held-out crops are the same at every validation and in every run


@dataclass
class TrainingData:
    """What `build_training_data` returns.

    batches: `next(batches)` → this rank's next training batch `[B, 3, R, R]` in [-1, 1] (on the
        accelerator's device for map-style sources, on the CPU for streams).
    validation: held-out crops `[V, 3, R, R]` (the same in every call and run), or training crops
        when nothing is held out (`held_out` False).
    validation_dataset: every held-out image once, transformed as `validation` is (no flip, fixed seed):
        a map-style `ImageDataset` or, for streams, a `StreamingImageDataset`; load it with a
        `DataLoader(..., collate_fn=collate_images)` to score all held-out images batch by batch.
    num_train_images: images in one epoch (after the split and the scan; × repeats), None for streams.
    batches_per_epoch: this rank's batches per epoch, None for streams.
    bad_images: the errors of the images the scan left out (`skip_bad_images`).
    """

    batches: BatchStream
    validation: torch.Tensor
    held_out: bool
    validation_dataset: Optional[Dataset] = None
    num_train_images: Optional[int] = None
    batches_per_epoch: Optional[int] = None
    bad_images: List[str] = field(default_factory=list)

    def num_skipped(self, accelerator=None) -> int:
        """Bad images left out so far: at the scan, plus while loading on every rank (a collective call)."""
        loading = torch.tensor(self.batches.num_skipped)
        if accelerator is not None and accelerator.num_processes > 1:
            loading = accelerator.reduce(loading.to(accelerator.device), reduction="sum").cpu()
        return len(self.bad_images) + int(loading)


def transforms(config: TrainingDataConfig):
    """(training transform, validation transform): the same scale and crop mode; validation never flips."""
    train = ImageTransform(config.resolution, config.resize_resolution, config.center_crop, config.random_flip)
    validation = ImageTransform(config.resolution, config.resize_resolution, config.center_crop, random_flip=False)
    return train, validation


def _source(config: TrainingDataConfig) -> ImageSource:
    if config.train_data_dir:
        return ImageSource.from_folder(config.train_data_dir, config.names("train_data_dir"))
    if config.dataset_name:
        return ImageSource.from_dataset(
            config.dataset_name, config.image_column, config_name=config.dataset_config_name, names=config.names
        )
    return ImageSource.from_photographs()


def _validation_crops(
    source: ImageSource, transform: ImageTransform, count: int, skip_bad_images: bool = False
) -> torch.Tensor:
    """`count` crops of `source` (wrapping around, with other random crops, when it has fewer images);
    with `skip_bad_images` an image that fails to decode is passed over."""
    dataset = ImageDataset(source, transform, VALIDATION_SEED, math.ceil(count / len(source)) + 1, skip_bad_images)
    crops = []
    for key in range(len(dataset)):
        crop = dataset[key]
        if crop is not None:
            crops.append(crop)
        if len(crops) == count:
            return torch.stack(crops)
    raise UserError("no validation image can be decoded.")


def build_training_data(
    config: Union[TrainingDataConfig, argparse.Namespace],
    accelerator=None,
    batch_size: int = 16,
    seed: int = 0,
    num_validation_images: int = 8,
) -> TrainingData:
    """The training batches of this rank and the held-out validation crops (see the module docstring).

    `config` is a `TrainingDataConfig`, or the scripts' parsed flags (`add_data_arguments`), read by
    `TrainingDataConfig.from_namespace`. Raises `ValueError` naming the argument or the file for bad
    input (an empty or missing folder, a bad image without `skip_bad_images`, too few images for one
    batch): the flag for parsed flags, the field (and its flag) for a config.
    """
    if not isinstance(config, TrainingDataConfig):
        config = TrainingDataConfig.from_namespace(config)
    config.check()
    names = config.names
    rank = accelerator.process_index if accelerator is not None else 0
    world_size = accelerator.num_processes if accelerator is not None else 1
    train_transform, validation_transform = transforms(config)
    validation_source = None
    if config.validation_data_dir:
        folder = ImageSource.from_folder(config.validation_data_dir, names("validation_data_dir"))
        validation_source, _ = folder.scan(config.resolution, names=names)
    workers = config.dataloader_num_workers
    loader_options = dict(
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        # the loader's own generator for its workers' base seed: starting an epoch (or resuming) then
        # draws nothing from the global RNG, which training uses (e.g. a VAE's posterior samples)
        generator=torch.Generator().manual_seed(seed),
    )
    nothing_held_out = f"validation reconstructs training images: nothing is held out ({names('validation_split')} 0)"

    if config.streaming:
        stream = load_stream(
            config.dataset_name,
            config.image_column,
            config_name=config.dataset_config_name,
            data_dir=config.train_data_dir,
            names=names,
        )
        column = "image" if config.train_data_dir else config.image_column
        if config.max_images is not None:
            stream = stream.take(config.max_images)
        fraction = 0.0 if validation_source is not None else config.validation_split
        validation_dataset = None
        if fraction > 0:
            stream, held = split_stream(stream, column, fraction)
            validation_source = _stream_validation_source(held, column, num_validation_images)
            validation_dataset = StreamingImageDataset(held, validation_transform, column, VALIDATION_SEED)
        from datasets.distributed import split_dataset_by_node

        stream = stream.shuffle(seed=seed, buffer_size=config.shuffle_buffer_size)
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        dataset = StreamingImageDataset(stream, train_transform, column, seed, rank, config.skip_bad_images)
        loader = DataLoader(dataset, batch_size=batch_size, **loader_options)
        batches = BatchStream(loader, [dataset], accelerator)
        if validation_source is None:
            logger.warning(nothing_held_out)
            validation_source = _stream_validation_source(stream, column, num_validation_images)
        validation = _validation_crops(
            validation_source, validation_transform, num_validation_images, config.skip_bad_images
        )
        if validation_dataset is None:
            validation_dataset = ImageDataset(
                validation_source, validation_transform, VALIDATION_SEED, skip_bad_images=config.skip_bad_images
            )
        held_out = config.validation_split > 0 or bool(config.validation_data_dir)
        return TrainingData(batches, validation, held_out, validation_dataset)

    source = _source(config)
    if config.max_images is not None:
        source = source.subset(range(min(config.max_images, len(source))))
    source, bad = source.scan(config.resolution, config.skip_bad_images, names=names)
    if validation_source is None and config.validation_split > 0:
        if len(source) < 2:
            raise UserError(
                f"{names('validation_split')} {config.validation_split} needs at least 2 usable images, got "
                f"{len(source)} (give {names('validation_data_dir')}, or {names('validation_split')} 0 to "
                "validate on training images)."
            )
        source, validation_source = split_source(source, config.validation_split, seed)
    held_out = validation_source is not None
    if not held_out:
        logger.warning(nothing_held_out)
        validation_source = source
    repeats = config.repeats or (PHOTOGRAPH_REPEATS if source.kind == "arrays" else 1)
    dataset = ImageDataset(source, train_transform, seed, repeats, config.skip_bad_images)
    sampler = EpochSampler(len(dataset), seed)
    # the sampler runs in the main process and keys carry the epoch: workers can live across epochs
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, persistent_workers=workers > 0, **loader_options
    )
    if accelerator is not None:
        loader = accelerator.prepare(loader)  # each rank its own batches, moved to its device
    if len(loader) == 0:
        raise UserError(f"{len(dataset)} training images give no batch of {batch_size} per process.")
    batches = BatchStream(loader, [sampler], accelerator)
    validation = _validation_crops(
        validation_source, validation_transform, num_validation_images, config.skip_bad_images
    )
    validation_dataset = ImageDataset(
        validation_source, validation_transform, VALIDATION_SEED, skip_bad_images=config.skip_bad_images
    )
    return TrainingData(batches, validation, held_out, validation_dataset, len(dataset), len(loader), bad)


def _stream_validation_source(stream, column: str, count: int) -> ImageSource:
    """The first `count` images of a stream (undecoded), as an in-memory source."""
    items = [({column: example[column]}) for example in stream.take(count)]
    if not items:
        raise UserError("the stream holds no images to validate on.")
    return ImageSource("dataset", items, column=column)


def __getattr__(name: str):
    # the flags moved to `arguments` (the library no longer depends on argparse), the stream split to `splits`
    from . import arguments, splits

    moved = {flags: (arguments, flags) for flags in ("BooleanFlag", "add_data_arguments", "check_data_arguments")}
    moved["_held_out_by_hash"] = (splits, "held_out_by_hash")
    return moved_attribute(__name__, name, moved)
