"""Fit a dictionary bottleneck (and, for comparison, a VQ codebook) on a frozen Stable Diffusion VAE's latents.

    accelerate launch train/fit_sd_bottleneck.py \
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --train_data_dir ./photos --resolution 512 --output_dir sd15-dictionary [--cache_latents ./sd15-latents]

Images come from the shared data pipeline: a folder (--train_data_dir), a `datasets` dataset
(--dataset_name; --streaming reads it shard by shard) or, without either, the photographs shipped
with scikit-image and scikit-learn. Without --pretrained_model_name_or_path the offline tiny SD is
used. Every step, each rank encodes its own batch of images with the frozen VAE and the dictionary
and the VQ learn on those same latents. With --cache_latents DIR one epoch of latents is written once
to safetensors shards (reused by later runs of the same setup) and every step draws a random
minibatch from them instead. Checkpoints resume exactly. The held-out images are streamed through
the VAE and each bottleneck at the end. Writes `dictionary/` and `vq/` (save_pretrained),
`metrics.json` and `results.md` to --output_dir; the bottlenecks are saved before the evaluation starts.
Memory does not grow with the number of images. From an installed package:
`accelerate launch -m sd_sparse.training fit_sd_bottleneck ...`.
"""

import argparse
import gc
import json
import logging
import os

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from sd_sparse import VectorQuantizer
from sd_sparse.autoencoders import stable_diffusion_dictionary
from sd_sparse.data import ImageDataset, add_data_arguments, build_training_data, check_data_arguments
from sd_sparse.data.image_datasets import sample_generator
from sd_sparse.data.training_data import PHOTOGRAPH_REPEATS
from sd_sparse.errors import exit_on_user_error
from sd_sparse.training.arguments import (
    CHECKPOINT_FLAG_RANGES,
    SEED_RANGE,
    DeprecatedAlias,
    add_checkpoint_arguments,
    add_hub_arguments,
    check_flag_ranges,
)
from sd_sparse.training.checkpoints import check_resume_folder, load_checkpoint, resume_point, save_checkpoint_if_due
from sd_sparse.training.fit_latents import LatentSource, cache_epoch, cache_setup, prepare_fit_latents  # noqa: F401
from sd_sparse.training.fitting import Fitter, collect_latents, evaluate_on_vae
from sd_sparse.training.latent_cache import DTYPES

from ..errors import UserError

logger = logging.getLogger(__name__)

DATA_DEFAULTS = """data defaults of this script:
  --resolution         64 for the offline tiny SD, 512 for a real model
  --center_crop        on for --train_data_dir / --dataset_name (--no_center_crop: random crops),
                       off for the shipped photographs (random crops)
  --resize_resolution  --resolution for --train_data_dir / --dataset_name (the whole image's centre
                       square; never scaled up, so a value >= the images' shorter side crops at native
                       scale), native scale for the shipped photographs
  --repeats            1, or 100 crops of each shipped photograph per epoch
  --random_flip        off
  --validation_split   0.2
  The shipped photographs smaller than --resolution are left out (--skip_bad_images)."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fit_sd_bottleneck.py", description=__doc__, epilog=DATA_DEFAULTS, formatter_class=_HelpFormatter
    )
    model = parser.add_argument_group("VAE")
    model.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="a diffusers pipeline (SD, SDXL, SD3, Flux, FLUX.2, Sana, Qwen-Image, Wan, ...) or VAE folder, or a Hub id, "
        "with any diffusers image or video VAE class (None: the offline tiny SD); video VAEs are fitted on "
        "one-frame videos of the images",
    )
    model.add_argument("--vae_subfolder", default="vae", help="the VAE's subfolder ('' for a VAE folder)")
    data = add_data_arguments(parser)
    data.add_argument(
        "--no_center_crop",
        "--no-center_crop",
        dest="center_crop",
        action="store_false",
        help="random crops instead of centre crops",
    )
    data.add_argument("--validation_fraction", dest="validation_split", type=float, action=DeprecatedAlias,
                      help=argparse.SUPPRESS)  # fmt: skip
    parser.set_defaults(resolution=None, center_crop=None, random_flip=False, validation_split=0.2)
    bottlenecks = parser.add_argument_group("bottlenecks")
    bottlenecks.add_argument("--num_atoms", type=int, default=512, help="dictionary atoms K")
    bottlenecks.add_argument("--sparsity", type=int, default=8, help="atoms per coded vector S")
    bottlenecks.add_argument("--patch_size", type=int, default=4, help="latent patch coded as one vector")
    bottlenecks.add_argument("--dictionary_update", default="gradient", choices=["gradient", "bcd"])
    bottlenecks.add_argument(
        "--restart_threshold",
        type=float,
        default=0.5,
        help="restart codes/atoms whose usage share falls below this fraction of 1/K (0: off)",
    )
    bottlenecks.add_argument("--vq_num_atoms", type=int, default=512, help="VQ codebook size")
    bottlenecks.add_argument("--vq_patch_size", type=int, default=1, help="latent patch of one VQ code")
    bottlenecks.add_argument("--no_vq", action="store_true", help="fit the dictionary only")
    fitting = parser.add_argument_group("fitting")
    fitting.add_argument("--max_train_steps", type=int, default=500, help="fitting steps")
    fitting.add_argument("--train_batch_size", type=int, default=16, help="images (latents) per step and process")
    fitting.add_argument("--learning_rate", type=float, default=1e-3, help="Adam's, for the gradient dictionary")
    fitting.add_argument("--encode_batch_size", type=int, default=8, help="images per VAE encode/decode call")
    fitting.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="the VAE's dtype")
    fitting.add_argument("--output_dir", default="sd-bottleneck", help="bottlenecks, metrics and checkpoints")
    fitting.add_argument("--seed", type=int, default=0, help="initial weights, the split, the crops, the draws")
    add_checkpoint_arguments(fitting, "fitting")
    fitting.add_argument(
        "--cache_latents",
        default=None,
        metavar="DIR",
        help="write one epoch of training latents to safetensors shards in DIR (or reuse those of the same "
        "setup) and fit on random minibatches of them",
    )
    fitting.add_argument("--cache_dtype", default="float32", choices=sorted(DTYPES), help="dtype of cached latents")
    fitting.add_argument("--cache_shard_size", type=int, default=1024, help="latents per cache shard file")
    fitting.add_argument(
        "--rebuild_cache", action="store_true", help="replace a --cache_latents folder made by another setup"
    )
    evaluation = parser.add_argument_group("held-out evaluation")
    evaluation.add_argument(
        "--max_eval_images", type=int, default=None, help="score at most this many held-out crops (None: all)"
    )
    evaluation.add_argument("--no_flip", action="store_true", help="skip the FLIP metric")
    hub = parser.add_argument_group("Hub")
    add_hub_arguments(hub, "push both bottlenecks with model cards", "repo for the dictionary (the VQ goes to <id>-vq)")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sparsity > args.num_atoms:
        parser.error(f"--sparsity {args.sparsity} is larger than --num_atoms {args.num_atoms}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    return resolve_data_defaults(args)


def resolve_data_defaults(args):
    """Fills the data flags left at None with this script's defaults (see DATA_DEFAULTS)."""
    photographs = not (args.train_data_dir or args.dataset_name)
    if args.resolution is None:
        args.resolution = 64 if args.pretrained_model_name_or_path is None else 512
    if args.center_crop is None:
        args.center_crop = not photographs
    if args.resize_resolution is None and not photographs:
        args.resize_resolution = args.resolution
    if args.repeats is None:
        args.repeats = PHOTOGRAPH_REPEATS if photographs else 1
    if photographs:
        args.skip_bad_images = True  # e.g. at 512 px, the photographs smaller than that
    return args


#: every numeric flag of this script and its range (the data flags: `check_data_arguments`)
FIT_FLAG_RANGES = {
    "seed": SEED_RANGE,
    "num_atoms": ">= 1",
    "sparsity": ">= 1",
    "patch_size": ">= 1",
    "restart_threshold": ">= 0",
    "vq_num_atoms": ">= 1",
    "vq_patch_size": ">= 1",
    "max_train_steps": ">= 1",
    "train_batch_size": ">= 1",
    "learning_rate": "> 0",
    "encode_batch_size": ">= 1",
    **CHECKPOINT_FLAG_RANGES,
    "cache_shard_size": ">= 1",
    "max_eval_images": ">= 1",
}


def check_arguments(args) -> None:
    """`ValueError` naming the flag, before anything is read or built: every numeric flag's range, then
    the data flags and the cache folder."""
    check_flag_ranges(args, FIT_FLAG_RANGES)
    check_data_arguments(args)
    if args.cache_latents and os.path.exists(args.cache_latents) and not os.path.isdir(args.cache_latents):
        raise UserError(f"--cache_latents {args.cache_latents} is not a folder.")


def load_vae(args, accelerator):
    """The VAE of `--pretrained_model_name_or_path` (a pipeline, or a VAE folder with `--vae_subfolder ""`), of
    any diffusers image or video VAE class its config names; a coded one without its bottleneck."""
    from diffusers import AutoencoderKL

    from sd_sparse.autoencoders.coded import CodedAutoencoderMixin
    from sd_sparse.autoencoders.loading import VAE_CLASSES_DESCRIPTION, vae_class
    from sd_sparse.offline import tiny_stable_diffusion_path

    source = args.pretrained_model_name_or_path or tiny_stable_diffusion_path()
    subfolder = args.vae_subfolder or None
    try:
        name = AutoencoderKL.load_config(source, subfolder=subfolder).get("_class_name")  # any VAE's config.json
    except OSError as err:
        raise UserError(
            f"--pretrained_model_name_or_path {source}: no VAE config in {subfolder or 'the folder'} "
            f"({str(err).splitlines()[0]}); for a VAE folder pass --vae_subfolder ''."
        ) from None
    cls = vae_class(name)
    if cls is None:
        raise UserError(
            f"--pretrained_model_name_or_path {source}: its VAE is a {name}, not {VAE_CLASSES_DESCRIPTION}."
        )
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision, torch.float32)
    vae = cls.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype)
    if isinstance(vae, CodedAutoencoderMixin):
        vae = vae.without_bottleneck()
    vae.requires_grad_(False).eval().to(accelerator.device)
    return vae, source


def build_bottlenecks(args, channels: int):
    """{"dictionary": DictionaryBottleneck, "vq": VectorQuantizer (unless --no_vq)}, from the global RNG."""
    bottlenecks = {
        "dictionary": stable_diffusion_dictionary(
            channels,
            args.num_atoms,
            args.sparsity,
            args.patch_size,
            dictionary_update=args.dictionary_update,
            init_from_data=True,
            restart_threshold=args.restart_threshold,
        )
    }
    if not args.no_vq:
        bottlenecks["vq"] = VectorQuantizer(
            args.vq_num_atoms, channels, patch_size=args.vq_patch_size, restart_threshold=args.restart_threshold
        )
    return bottlenecks


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


def held_out_dataset(data, args):
    """`data.validation_dataset`, with as many random crops of each held-out image as an epoch takes
    (`--repeats`, e.g. 100 of each shipped photograph); centre crops are scored once."""
    validation = data.validation_dataset
    if isinstance(validation, ImageDataset) and not args.center_crop and args.repeats > 1:
        return ImageDataset(validation.source, validation.transform, validation.seed, args.repeats)
    return validation


def fit_steps(args, fitters, data, cache, vae, accelerator, first_step: int) -> None:
    """Steps `first_step + 1` to `--max_train_steps`: one batch of latents per rank and step (from the
    cache, or this rank's images encoded once), each bottleneck's training step on it, checkpoints."""
    rank, device = accelerator.process_index, accelerator.device
    for fitter in fitters.values():
        fitter.train()
    main = accelerator.is_main_process
    with tqdm(initial=first_step, total=args.max_train_steps, disable=not main, desc="fitting") as progress:
        for step in range(first_step + 1, args.max_train_steps + 1):
            if cache is not None:  # random rows, a function of (seed, rank, step): nothing to restore on resume
                latents = cache.sample(args.train_batch_size, sample_generator(args.seed, rank, step))
            else:
                images = next_full_batch(data.batches, args.train_batch_size, accelerator.num_processes)
                latents = collect_latents(vae, images, args.encode_batch_size)
            latents = latents.to(device)
            for fitter in fitters.values():
                fitter.step(latents)
            progress.update(1)
            save_checkpoint_if_due(accelerator, args, step)


def hub_repos(args):
    """{bottleneck name: repo id}: the dictionary goes to --hub_model_id, the VQ to <id>-vq."""
    names = ["dictionary"] + ([] if args.no_vq else ["vq"])
    return {name: args.hub_model_id if name == "dictionary" else f"{args.hub_model_id}-{name}" for name in names}


def fit_bottlenecks(args):
    """Fits and evaluates the bottlenecks, writes the outputs; returns {name: fitted bottleneck}."""
    check_arguments(args)
    check_resume_folder(args)  # a missing folder stops the run before the images are read
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    main = accelerator.is_main_process
    logging.basicConfig(level=logging.INFO if main else logging.WARNING)
    # bad images stop the run here (a header scan), before the VAE loads; batches load in the workers
    data = build_training_data(args, accelerator, args.train_batch_size, args.seed, num_validation_images=1)
    resume_path, first_step = resume_point(args)
    vae, source = load_vae(args, accelerator)
    repos = {}
    if args.push_to_hub and main:
        from sd_sparse.hub import create_hub_repo

        # a missing token or an unreachable Hub stops the run now, not after the fitting
        repos = {name: create_hub_repo(repo, token=args.hub_token) for name, repo in hub_repos(args).items()}

    set_seed(args.seed)  # the same initial weights on every rank
    from sd_sparse.autoencoders.families import latent_channels

    bottlenecks = build_bottlenecks(args, latent_channels(vae))
    fitters = {
        name: Fitter(b.to(accelerator.device), args.learning_rate, accelerator) for name, b in bottlenecks.items()
    }
    accelerator.register_for_checkpointing(data.batches)  # the data position: resumed runs see the same batches
    for fitter in fitters.values():
        if fitter.optimizer is None:  # learns outside autograd (EMA, BCD): not prepared, saved as a custom object
            accelerator.register_for_checkpointing(fitter.model)
    cache, described = prepare_fit_latents(args, data, vae, source, accelerator)
    accelerator.register_for_checkpointing(LatentSource(described))
    # step 1's data-driven initialisation draws from the global RNG: the same whatever ran before
    # (a cache built or reused); a resumed run restores the RNG with the checkpoint
    set_seed(args.seed)
    load_checkpoint(accelerator, resume_path, first_step)

    fit_steps(args, fitters, data, cache, vae, accelerator, first_step)
    data.batches.close()  # stops the loader's workers
    # let the DDP wrappers go while the process group lives: a reducer that outlives it and is freed
    # last can deadlock a gloo group (its destructor joins a thread that waits for the GIL)
    fitters.clear()
    accelerator.free_memory()
    gc.collect()
    for bottleneck in bottlenecks.values():
        bottleneck.eval()

    if main:  # what was fitted is on disk before any evaluation can fail
        for name, bottleneck in bottlenecks.items():
            bottleneck.save_pretrained(os.path.join(args.output_dir, name))
    metrics = evaluate_on_vae(
        bottlenecks,
        vae,
        held_out_dataset(data, args),
        args.encode_batch_size,
        accelerator,
        args.dataloader_num_workers,
        with_flip=not args.no_flip,
        max_images=args.max_eval_images,
        progress=main,
    )
    num_skipped = data.num_skipped(accelerator)  # every rank takes part in the sum
    if num_skipped:
        logger.warning("left out %d bad images (unreadable or smaller than --resolution)", num_skipped)
    accelerator.wait_for_everyone()
    if main:
        from sd_sparse.hub import metrics_table, push_bottleneck

        report = {
            "base_model": source,
            "resolution": args.resolution,
            "train_images": data.num_train_images // args.repeats if data.num_train_images is not None else None,
            "held_out_images": next(iter(metrics.values()))["images"],
            "held_out": data.held_out,
            "steps": args.max_train_steps,
            "train_batch_size": args.train_batch_size,
            "world_size": accelerator.num_processes,
            "latents": described,
            "metrics": metrics,
        }
        if args.skip_bad_images:
            report["skipped_bad_images"] = num_skipped
        with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
            json.dump(report, f, indent=2)
        table = metrics_table(metrics)
        with open(os.path.join(args.output_dir, "results.md"), "w") as f:
            f.write(table + "\n")
        print(table)
        if args.push_to_hub:
            for name, bottleneck in bottlenecks.items():
                url = push_bottleneck(
                    bottleneck, repos[name], base_model=source, metrics=metrics[name], token=args.hub_token
                )
                print(f"pushed {name} to {url}")
        print(f"Wrote {os.path.abspath(args.output_dir)}")
    accelerator.end_training()
    return bottlenecks


def main(argv=None):
    """Parses the flags and fits; a user error (bad images or flags, a model that cannot be found, a
    cache of another setup, no Hub token, an unreachable Hub) prints one line and exits with status 2."""
    args = parse_args(argv)
    with exit_on_user_error("fit_sd_bottleneck.py"):
        return fit_bottlenecks(args)
