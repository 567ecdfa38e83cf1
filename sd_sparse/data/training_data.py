"""The one data pipeline of the trainer and the fit script: flags, sources, held-out split, sharded loaders.

    parser = argparse.ArgumentParser(); add_data_arguments(parser)
    data = build_training_data(args, accelerator, batch_size=args.train_batch_size, seed=args.seed)
    batch = next(data.batches)  # [B, 3, R, R] in [-1, 1] of this rank; data.validation: held-out crops

- Map-style sources (a folder, a `datasets` dataset, the shipped photographs) are scanned first
  (headers only): a bad image is an error naming it, or with `--skip_bad_images` is left out and
  counted. Their loader is prepared by Accelerate, which gives each rank its own batches.
- `--streaming` reads a `datasets.IterableDataset` shard by shard; `split_dataset_by_node` gives
  each rank its part, and `datasets` splits that among the loader's workers.
- Decoding and the transform (`ImageTransform`) run in the loader's workers.
- Held-out images: `--validation_data_dir`, else `--validation_split` of the images, by image (by
  index for map-style sources, by a hash of the image's bytes or path for streams).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from functools import partial
from typing import List, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from .image_datasets import BatchStream, EpochSampler, ImageDataset, StreamingImageDataset, collate_images
from .image_sources import ImageSource, load_stream
from .transforms import ImageTransform


class BooleanFlag(argparse.Action):
    """`--NAME` sets True and `--no_NAME` False (snake_case, as every flag here); `--no-NAME`, what argparse's
    `BooleanOptionalAction` spells, is accepted too."""

    def __init__(self, option_strings, dest, default=None, help=None):
        negated = [f"--no{sep}{o[2:]}" for o in option_strings if o.startswith("--") for sep in ("_", "-")]
        super().__init__([*option_strings, *negated], dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith(("--no_", "--no-")))


logger = logging.getLogger(__name__)

VALIDATION_SEED = 12345  # the held-out crops are the same at every validation and in every run
PHOTOGRAPH_REPEATS = 100  # the shipped photographs are few and large: many small crops of each per epoch


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The data flags shared by `train/train_*.py` and `train/fit_sd_bottleneck.py` (diffusers' names)."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train_data_dir",
        default=None,
        help="a folder of images, nested folders fine (None, without --dataset_name: the shipped photographs)",
    )
    data.add_argument("--dataset_name", default=None, help="a datasets name or local path with an image column")
    data.add_argument("--dataset_config_name", default=None, help="the configuration of --dataset_name")
    data.add_argument("--image_column", default="image", help="the image column of --dataset_name")
    data.add_argument(
        "--streaming",
        action="store_true",
        help="stream --dataset_name (or --train_data_dir through the imagefolder builder) shard by shard "
        "instead of memory-mapping it; needs --max_train_steps",
    )
    data.add_argument("--shuffle_buffer_size", type=int, default=1000, help="examples in a stream's shuffle buffer")
    data.add_argument("--max_images", type=int, default=None, help="use at most this many images (None: all)")
    data.add_argument("--resolution", type=int, default=32, help="side of the square crops")
    data.add_argument(
        "--resize_resolution",
        type=int,
        default=None,
        help="scale images down so that their shorter side is this, before cropping (None: crop at native scale)",
    )
    data.add_argument("--center_crop", action="store_true", help="centre crops instead of random ones")
    data.add_argument(
        "--random_flip",
        action=BooleanFlag,
        default=True,
        help="flip training crops horizontally at random",
    )
    data.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"crops of each image per epoch (None: 1, or {PHOTOGRAPH_REPEATS} for the shipped photographs)",
    )
    data.add_argument(
        "--dataloader_num_workers", type=int, default=0, help="loader worker processes (0: load in the main process)"
    )
    data.add_argument(
        "--skip_bad_images",
        action="store_true",
        help="leave out unreadable or too-small images (logged and counted) instead of stopping",
    )
    data.add_argument(
        "--validation_data_dir", default=None, help="a folder of held-out images for validation (wins over the split)"
    )
    data.add_argument(
        "--validation_split",
        type=float,
        default=0.1,
        help="fraction of the images held out for validation, by image (0: validate on training images)",
    )
    return data


def check_data_arguments(args) -> None:
    """`ValueError` naming the flag, before anything is read."""
    if args.train_data_dir and args.dataset_name:
        raise ValueError("give one of --train_data_dir and --dataset_name, not both.")
    if args.streaming and not (args.train_data_dir or args.dataset_name):
        raise ValueError("--streaming needs --dataset_name or --train_data_dir.")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max_images must be >= 1, got {args.max_images}.")
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}.")
    if args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers must be >= 0, got {args.dataloader_num_workers}.")
    if args.shuffle_buffer_size < 1:
        raise ValueError(f"--shuffle_buffer_size must be >= 1, got {args.shuffle_buffer_size}.")
    if not 0 <= args.validation_split < 1:
        raise ValueError(f"--validation_split must be in [0, 1), got {args.validation_split}.")
    ImageTransform(args.resolution, args.resize_resolution)  # resolution and resize_resolution checks


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
    bad_images: the errors of the images the scan left out (`--skip_bad_images`).
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


def transforms(args):
    """(training transform, validation transform): the same scale and crop mode; validation never flips."""
    train = ImageTransform(args.resolution, args.resize_resolution, args.center_crop, args.random_flip)
    validation = ImageTransform(args.resolution, args.resize_resolution, args.center_crop, random_flip=False)
    return train, validation


def _source(args) -> ImageSource:
    if args.train_data_dir:
        return ImageSource.from_folder(args.train_data_dir)
    if args.dataset_name:
        return ImageSource.from_dataset(args.dataset_name, args.image_column, config_name=args.dataset_config_name)
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
    raise ValueError("no validation image can be decoded.")


def _held_out_by_hash(example, column: str, fraction: float, held_out: bool) -> bool:
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


def build_training_data(
    args,
    accelerator=None,
    batch_size: int = 16,
    seed: int = 0,
    num_validation_images: int = 8,
) -> TrainingData:
    """The training batches of this rank and the held-out validation crops (see the module docstring).

    Raises `ValueError` naming the flag or the file for bad input (an empty or missing folder, a bad
    image without `--skip_bad_images`, too few images for one batch).
    """
    check_data_arguments(args)
    rank = accelerator.process_index if accelerator is not None else 0
    world_size = accelerator.num_processes if accelerator is not None else 1
    train_transform, validation_transform = transforms(args)
    validation_source = None
    if args.validation_data_dir:
        validation_source, _ = ImageSource.from_folder(args.validation_data_dir, "--validation_data_dir").scan(
            args.resolution
        )
    workers = args.dataloader_num_workers
    loader_options = dict(
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        # the loader's own generator for its workers' base seed: starting an epoch (or resuming) then
        # draws nothing from the global RNG, which training uses (e.g. a VAE's posterior samples)
        generator=torch.Generator().manual_seed(seed),
    )

    if args.streaming:
        stream = load_stream(
            args.dataset_name,
            args.image_column,
            config_name=args.dataset_config_name,
            data_dir=args.train_data_dir,
        )
        column = "image" if args.train_data_dir else args.image_column
        if args.max_images is not None:
            stream = stream.take(args.max_images)
        fraction = 0.0 if validation_source is not None else args.validation_split
        validation_dataset = None
        if fraction > 0:
            held = stream.filter(partial(_held_out_by_hash, column=column, fraction=fraction, held_out=True))
            validation_source = _stream_validation_source(held, column, num_validation_images)
            validation_dataset = StreamingImageDataset(held, validation_transform, column, VALIDATION_SEED)
            stream = stream.filter(partial(_held_out_by_hash, column=column, fraction=fraction, held_out=False))
        from datasets.distributed import split_dataset_by_node

        stream = stream.shuffle(seed=seed, buffer_size=args.shuffle_buffer_size)
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        dataset = StreamingImageDataset(stream, train_transform, column, seed, rank, args.skip_bad_images)
        loader = DataLoader(dataset, batch_size=batch_size, **loader_options)
        batches = BatchStream(loader, [dataset], accelerator)
        if validation_source is None:
            logger.warning("validation reconstructs training images: nothing is held out (--validation_split 0)")
            validation_source = _stream_validation_source(stream, column, num_validation_images)
        validation = _validation_crops(
            validation_source, validation_transform, num_validation_images, args.skip_bad_images
        )
        if validation_dataset is None:
            validation_dataset = ImageDataset(
                validation_source, validation_transform, VALIDATION_SEED, skip_bad_images=args.skip_bad_images
            )
        held_out = args.validation_split > 0 or bool(args.validation_data_dir)
        return TrainingData(batches, validation, held_out, validation_dataset)

    source = _source(args)
    if args.max_images is not None:
        source = source.subset(range(min(args.max_images, len(source))))
    source, bad = source.scan(args.resolution, args.skip_bad_images)
    if validation_source is None and args.validation_split > 0:
        from .images import split_images

        if len(source) < 2:
            raise ValueError(
                f"--validation_split {args.validation_split} needs at least 2 usable images, got {len(source)} "
                "(give --validation_data_dir, or --validation_split 0 to validate on training images)."
            )
        train_positions, held_positions = split_images(len(source), args.validation_split, seed)
        source, validation_source = source.subset(train_positions), source.subset(held_positions)
    held_out = validation_source is not None
    if not held_out:
        logger.warning("validation reconstructs training images: nothing is held out (--validation_split 0)")
        validation_source = source
    repeats = args.repeats or (PHOTOGRAPH_REPEATS if source.kind == "arrays" else 1)
    dataset = ImageDataset(source, train_transform, seed, repeats, args.skip_bad_images)
    sampler = EpochSampler(len(dataset), seed)
    # the sampler runs in the main process and keys carry the epoch: workers can live across epochs
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, persistent_workers=workers > 0, **loader_options
    )
    if accelerator is not None:
        loader = accelerator.prepare(loader)  # each rank its own batches, moved to its device
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training images give no batch of {batch_size} per process.")
    batches = BatchStream(loader, [sampler], accelerator)
    validation = _validation_crops(validation_source, validation_transform, num_validation_images, args.skip_bad_images)
    validation_dataset = ImageDataset(
        validation_source, validation_transform, VALIDATION_SEED, skip_bad_images=args.skip_bad_images
    )
    return TrainingData(batches, validation, held_out, validation_dataset, len(dataset), len(loader), bad)


def _stream_validation_source(stream, column: str, count: int) -> ImageSource:
    """The first `count` images of a stream (undecoded), as an in-memory source."""
    items = [({column: example[column]}) for example in stream.take(count)]
    if not items:
        raise ValueError("the stream holds no images to validate on.")
    return ImageSource("dataset", items, column=column)
