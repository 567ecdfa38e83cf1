"""Where the fit program (`fit_sd_bottleneck`) takes its latents from: the frozen VAE's encodes of each step's
images, or with `--cache_latents DIR` a latent cache (`latent_cache`) of one epoch, keyed by what produced it.

    cache, described = prepare_fit_latents(args, data, vae, source, accelerator)  # cache None: encode every step
    accelerator.register_for_checkpointing(LatentSource(described))  # resumes only from the same source
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

from tqdm.auto import tqdm

from ..errors import UserError
from .fitting import collect_latents
from .latent_cache import LatentCache, prepare_latent_cache

logger = logging.getLogger(__name__)


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
