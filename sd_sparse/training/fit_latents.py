"""Where the programs that learn on a frozen VAE's latents (`fit_sd_bottleneck`, `train_prior`) take them from:
the VAE's encodes of each step's images, or with `--cache_latents DIR` a latent cache (`latent_cache`) of one
epoch, keyed by what produced it; and the held-out images they are scored on.

    add_latent_cache_arguments(group)  # --cache_latents, --cache_dtype, --cache_shard_size, --rebuild_cache
    cache, described = prepare_fit_latents(args, data, vae, source, accelerator)  # cache None: encode every step
    accelerator.register_for_checkpointing(LatentSource(described))  # resumes only from the same source
    latents = next_latents(args, data, cache, vae, accelerator, step)  # this rank's batch of the step
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os

import torch
from tqdm.auto import tqdm

from ..data.image_datasets import ImageDataset, sample_generator
from ..errors import UserError
from .fitting import collect_latents
from .latent_cache import DTYPES, LatentCache, prepare_latent_cache

logger = logging.getLogger(__name__)


#: the ranges of the flags of `add_latent_cache_arguments` and `--encode_batch_size`
LATENT_FLAG_RANGES = {"encode_batch_size": ">= 1", "cache_shard_size": ">= 1"}


def add_latent_cache_arguments(group: argparse._ArgumentGroup) -> None:
    """`--encode_batch_size`, `--cache_latents`, `--cache_dtype`, `--cache_shard_size` and `--rebuild_cache`."""
    group.add_argument("--encode_batch_size", type=int, default=8, help="images per VAE encode/decode call")
    group.add_argument(
        "--cache_latents",
        default=None,
        metavar="DIR",
        help="write one epoch of training latents to safetensors shards in DIR (or reuse those of the same "
        "setup) and train on random minibatches of them",
    )
    group.add_argument("--cache_dtype", default="float32", choices=sorted(DTYPES), help="dtype of cached latents")
    group.add_argument("--cache_shard_size", type=int, default=1024, help="latents per cache shard file")
    group.add_argument(
        "--rebuild_cache", action="store_true", help="replace a --cache_latents folder made by another setup"
    )


def check_cache_folder(args) -> None:
    """`ValueError` for a `--cache_latents` path that exists but is not a folder."""
    if args.cache_latents and os.path.exists(args.cache_latents) and not os.path.isdir(args.cache_latents):
        raise UserError(f"--cache_latents {args.cache_latents} is not a folder.")


def _path(value):
    return os.path.abspath(value) if value and os.path.exists(value) else value


def cache_setup(args, vae, source, num_train_images):
    """What the cached latents depend on: compared with a cache's manifest before it is reused."""
    config = json.dumps(dict(vae.config), sort_keys=True, default=str)
    return {
        "vae": {
            "source": _path(source),
            "subfolder": args.vae_subfolder,
            "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
            "dtype": str(vae.dtype).replace("torch.", ""),
        },
        "data": {
            "train_data_dir": _path(args.train_data_dir),
            "dataset_name": _path(args.dataset_name),
            "dataset_config_name": args.dataset_config_name,
            "image_column": args.image_column,
            "streaming": args.streaming,
            "max_images": args.max_images,
            "skip_bad_images": args.skip_bad_images,
            "validation_data_dir": _path(args.validation_data_dir),
            "validation_split": args.validation_split,
            "seed": args.seed,  # the held-out split and the random crops
            "train_images": num_train_images,
        },
        "transform": {
            "resolution": args.resolution,
            "resize_resolution": args.resize_resolution,
            "center_crop": args.center_crop,
            "random_flip": args.random_flip,
            "repeats": args.repeats,
        },
    }


class LatentSource:
    """Saved with the checkpoints: where the latents come from (fresh encodes, or which cache). A
    checkpoint resumes only from the same source, so the resumed steps see the same latents."""

    def __init__(self, description: str):
        self.description = description

    def state_dict(self):
        return {"latents": self.description}

    def load_state_dict(self, state):
        if state["latents"] != self.description:
            raise UserError(
                f"the checkpoint was fitted on {state['latents']}, this run on {self.description}: "
                "resume with the same --cache_latents setting."
            )


def cache_epoch(data, vae, args, progress: bool):
    """`write_latents` of the cache: encodes one epoch of this rank's training batches."""

    def write_latents(writer):
        batches, total = data.batches, data.batches_per_epoch  # None for a stream: read to its end
        with tqdm(total=total, desc="caching latents", disable=not progress) as bar:
            while total is None or batches.batch < total:
                images = next(batches)
                if batches.epoch > 0:  # a stream rolled over into its next epoch
                    break
                writer.add(collect_latents(vae, images, args.encode_batch_size))
                bar.update(1)

    return write_latents


def prepare_fit_latents(args, data, vae, source: str, accelerator):
    """(the latent cache of `--cache_latents`, built or reused, or None without it; the description of the
    latents that `LatentSource` saves with the checkpoints). Every rank calls it; building the cache reads
    the training images once, after which `data.batches` is closed."""
    if not args.cache_latents:
        return None, "latents encoded at every step"
    cache: LatentCache = prepare_latent_cache(
        args.cache_latents,
        cache_setup(args, vae, source, data.num_train_images),
        cache_epoch(data, vae, args, accelerator.is_main_process),
        accelerator,
        shard_size=args.cache_shard_size,
        dtype=args.cache_dtype,
        rebuild=args.rebuild_cache,
    )
    data.batches.close()  # the training images are not read again
    manifest = json.dumps(cache.manifest, sort_keys=True)
    described = f"cache {hashlib.sha256(manifest.encode()).hexdigest()[:16]} ({len(cache)} latents)"
    logger.info("fitting on %d cached latents %s", len(cache), tuple(cache.shape))
    return cache, described


def next_full_batch(batches, batch_size: int, num_processes: int) -> torch.Tensor:
    """This rank's next batch of images. With several processes only full batches of `batch_size` count:
    a partial one (the end of a stream's epoch on this rank, or bad images left out) is passed over, so
    that every rank codes as many latents at every step (the restart candidates that the bottlenecks
    broadcast must have one shape on all ranks)."""
    first_epoch = batches.epoch
    while True:
        images = next(batches)
        if num_processes == 1 or images.shape[0] == batch_size:
            return images
        if batches.epoch > first_epoch + 1:
            raise UserError(
                f"an epoch of the training data gave no full batch of --train_batch_size {batch_size} on "
                "this process: lower it or add images."
            )


def next_latents(args, data, cache, vae, accelerator, step: int) -> torch.Tensor:
    """This rank's latents of `step`, on the accelerator's device: `--train_batch_size` random rows of the
    cache (a function of (seed, rank, step): nothing to restore on resume), or its next batch of images
    encoded by the VAE (`next_full_batch`)."""
    if cache is not None:
        latents = cache.sample(args.train_batch_size, sample_generator(args.seed, accelerator.process_index, step))
    else:
        images = next_full_batch(data.batches, args.train_batch_size, accelerator.num_processes)
        latents = collect_latents(vae, images, args.encode_batch_size)
    return latents.to(accelerator.device)


def held_out_dataset(data, args):
    """`data.validation_dataset`, with as many random crops of each held-out image as an epoch takes
    (`--repeats`, e.g. 100 of each shipped photograph); centre crops are scored once."""
    validation = data.validation_dataset
    if isinstance(validation, ImageDataset) and not args.center_crop and args.repeats > 1:
        return ImageDataset(validation.source, validation.transform, validation.seed, args.repeats)
    return validation
