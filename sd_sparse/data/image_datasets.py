"""Datasets, sampler and batch stream of the training data: decoding and transforms in the loader's workers.

Determinism is by construction, not by worker RNG state: every sample is transformed with a
generator seeded from (seed, its key), and a map-style key is `epoch × len + index`. So a batch is a
function of the run's seed and its position, whatever `num_workers` is, and a resumed run that
restores the position (`BatchStream.state_dict`) sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils.data import Dataset, IterableDataset, Sampler

from ..errors import UserError
from .image_sources import ImageSource, _decode
from .transforms import BadImageError, ImageTransform

logger = logging.getLogger(__name__)


def sample_generator(*keys: int) -> torch.Generator:
    """A generator seeded from integer keys (seed, epoch, index, ...): the randomness of one sample."""
    value = 0
    for key in keys:
        value = (value * 1_000_003 + int(key) + 1) % (2**61 - 1)
    return torch.Generator().manual_seed(value)


class ImageDataset(Dataset):
    """Map-style training or validation images: `dataset[key]` → `[3, R, R]` in [-1, 1], or None for a
    bad image with `skip_bad_images`.

    `len` is `len(source) × repeats` (each image `repeats` times per epoch, each time another random
    crop). A key beyond `len` (the `EpochSampler` passes `epoch × len + index`) picks image
    `index % len(source)` with fresh randomness.
    """

    def __init__(
        self,
        source: ImageSource,
        transform: ImageTransform,
        seed: int = 0,
        repeats: int = 1,
        skip_bad_images: bool = False,
    ):
        if repeats < 1:
            raise UserError(f"`repeats` must be >= 1, got {repeats}.")
        if len(source) == 0:
            raise UserError("the image source is empty.")
        self.source = source
        self.transform = transform
        self.seed = seed
        self.repeats = repeats
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.source) * self.repeats

    def __getitem__(self, key: int) -> Optional[torch.Tensor]:
        position = (int(key) % len(self)) % len(self.source)
        try:
            image = self.source.load(position, min_side=self.transform.resize_resolution)
            return self.transform(image, sample_generator(self.seed, key), self.source.name(position))
        except BadImageError as err:
            if not self.skip_bad_images:
                raise
            logger.warning("skipping %s", err)
            return None


class EpochSampler(Sampler):
    """Keys `epoch × n + i` for a permutation of `range(n)` drawn from (seed, epoch); `set_epoch` moves on.

    The same on every rank (Accelerate shards its batches); `shuffle=False` keeps the order.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True):
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.length, generator=sample_generator(self.seed, self.epoch)).tolist()
        else:
            order = range(self.length)
        offset = self.epoch * self.length
        return iter([offset + i for i in order])


class StreamingImageDataset(IterableDataset):
    """A streamed `datasets.IterableDataset` (already split for this rank) decoded and transformed
    in the loader's workers; yields `[3, R, R]` in [-1, 1] (None for a skipped bad image).

    `datasets` hands each worker its own shards; sample `n` of worker `w` in epoch `e` is transformed
    with the generator of (seed, rank, e, w, n), so a replayed epoch gives the same samples.
    """

    def __init__(
        self,
        stream,
        transform: ImageTransform,
        image_column: str = "image",
        seed: int = 0,
        rank: int = 0,
        skip_bad_images: bool = False,
    ):
        self.stream = stream
        self.transform = transform
        self.image_column = image_column
        self.seed = seed
        self.rank = rank
        self.skip_bad_images = skip_bad_images
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.stream, "set_epoch"):
            self.stream.set_epoch(epoch)  # reshuffles the shards and the shuffle buffer

    def __iter__(self) -> Iterator[Optional[torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        for count, example in enumerate(self.stream):
            data = example[self.image_column]
            path = data.get("path") if isinstance(data, dict) else None
            name = path or f"stream example {count} (rank {self.rank}, worker {worker})"
            try:
                image = _decode(data, name, min_side=self.transform.resize_resolution)
                yield self.transform(image, sample_generator(self.seed, self.rank, self.epoch, worker, count), name)
            except BadImageError as err:
                if not self.skip_bad_images:
                    raise
                logger.warning("skipping %s", err)
                yield None


def _skipping(iterator, count: int):
    """The items of `iterator` after its first `count` (which are still produced: a stream's replay)."""
    for index, item in enumerate(iterator):
        if index >= count:
            yield item


def collate_images(samples: List[Optional[torch.Tensor]]) -> Dict[str, object]:
    """`{"pixel_values": [B, 3, R, R] or None, "num_skipped": bad images left out of this batch}`."""
    kept = [sample for sample in samples if sample is not None]
    return {
        "pixel_values": torch.stack(kept) if kept else None,
        "num_skipped": len(samples) - len(kept),
    }


class BatchStream:
    """Training batches epoch after epoch, with a position that is saved and restored with checkpoints.

    `next(stream)` → `pixel_values` `[B, 3, R, R]`. The position is (epoch, batches taken in this
    epoch). After `load_state_dict`, a map-style loader skips the batches already taken by their
    indices (Accelerate's `skip_first_batches`: nothing is decoded); a stream replays them (decoded,
    then dropped), which is exact because a stream's epoch is a function of its seed. Register the
    stream with `accelerator.register_for_checkpointing`.
    """

    def __init__(self, loader, epoch_setters=(), accelerator=None):
        self.loader = loader
        self.epoch_setters = list(epoch_setters)
        self.accelerator = accelerator
        self.epoch = 0
        self.batch = 0
        self.num_skipped = 0  # bad images left out while loading (this rank)
        self._iterator = None

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "num_skipped": self.num_skipped}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.num_skipped = int(state.get("num_skipped", 0))
        self._iterator = None

    def _start(self):
        for setter in self.epoch_setters:
            setter.set_epoch(self.epoch)
        loader = self.loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)  # an Accelerate loader: keeps its own epoch counter in step
        if not self.batch:
            return iter(loader)
        if self.accelerator is not None and not isinstance(loader.dataset, IterableDataset):
            return iter(self.accelerator.skip_first_batches(loader, self.batch))
        return _skipping(iter(loader), self.batch)

    def close(self) -> None:
        """Stops the loader's workers now (they also stop when the stream is garbage-collected)."""
        iterator, self._iterator = self._iterator, None
        if hasattr(iterator, "_shutdown_workers"):  # a torch DataLoader's iterator
            iterator._shutdown_workers()
        elif hasattr(iterator, "close"):  # a generator (Accelerate's loaders, a replay): frees its DataLoader iterator
            iterator.close()
        loader = getattr(self.loader, "base_dataloader", self.loader)  # under Accelerate's wrapper
        persistent = getattr(loader, "_iterator", None)  # the iterator a loader with persistent workers keeps
        if hasattr(persistent, "_shutdown_workers"):
            persistent._shutdown_workers()
            loader._iterator = None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        while True:
            if self._iterator is None:
                self._iterator = self._start()
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self.batch == 0:
                    raise UserError(
                        "an epoch of the training data gave no batch: fewer images than one batch per process "
                        "(a smaller batch size, --train_batch_size in the scripts, or more images)."
                    ) from None
                self.epoch, self.batch, self._iterator = self.epoch + 1, 0, None
                continue
            self.batch += 1
            self.num_skipped += int(batch["num_skipped"])
            if batch["pixel_values"] is not None:
                return batch["pixel_values"]
