#!/usr/bin/env python
"""Fit a dictionary bottleneck (and, for comparison, a VQ codebook) on a frozen Stable Diffusion VAE's latents.

    accelerate launch train/fit_sd_bottleneck.py \
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --train_data_dir ./photos --resolution 512 --output_dir sd15-dictionary

Without --pretrained_model_name_or_path the offline tiny pipeline of `sd_sparse.testing` is used,
and without --train_data_dir / --dataset_name the photographs shipped with scikit-image and
scikit-learn (random crops). The split between fitting and held-out evaluation is by image.
Writes `dictionary/` and `vq/` (save_pretrained), `metrics.json` and `results.md` to --output_dir.
"""

import argparse
import json
import logging
import os

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from sd_sparse import VectorQuantizer
from sd_sparse.autoencoders import stable_diffusion_dictionary
from sd_sparse.data import (
    image_files,
    load_images,
    photo_patches,
    prepare_image,
    read_images,
    sample_photographs,
    split_images,
)
from sd_sparse.errors import exit_on_user_error
from sd_sparse.evaluation import evaluate
from sd_sparse.training import collect_latents, fit

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="SD pipeline folder or Hub id (default: the offline tiny SD)",
    )
    parser.add_argument("--vae_subfolder", default="vae")
    parser.add_argument("--train_data_dir", default=None, help="a folder of images (imagefolder layout)")
    parser.add_argument("--dataset_name", default=None, help="a datasets name or path with an image column")
    parser.add_argument("--image_column", default="image")
    parser.add_argument(
        "--resolution", type=int, default=None, help="square crop size (default: 512, or 64 for the tiny SD)"
    )
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--validation_fraction", type=float, default=0.2)
    parser.add_argument("--num_atoms", type=int, default=512)
    parser.add_argument("--sparsity", type=int, default=8)
    parser.add_argument("--patch_size", type=int, default=4)
    parser.add_argument("--dictionary_update", default="gradient", choices=["gradient", "bcd"])
    parser.add_argument(
        "--restart_threshold",
        type=float,
        default=0.5,
        help="restart codes/atoms whose usage share falls below this fraction of 1/K (0: off)",
    )
    parser.add_argument("--vq_num_atoms", type=int, default=512)
    parser.add_argument("--vq_patch_size", type=int, default=1)
    parser.add_argument("--no_vq", action="store_true", help="fit the dictionary only")
    parser.add_argument("--max_train_steps", type=int, default=500)
    parser.add_argument("--train_batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--encode_batch_size", type=int, default=8)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--output_dir", default="sd-bottleneck")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_flip", action="store_true", help="skip the FLIP metric")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None, help="repo for the dictionary (the VQ goes to <id>-vq)")
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)
    if args.sparsity > args.num_atoms:
        parser.error(f"--sparsity {args.sparsity} is larger than --num_atoms {args.num_atoms}")
    if args.train_data_dir and not os.path.isdir(args.train_data_dir):
        parser.error(f"--train_data_dir {args.train_data_dir} is not a folder")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    return args


def load_vae(args, accelerator):
    from diffusers import AutoencoderKL

    from sd_sparse.testing import tiny_stable_diffusion_path

    source = args.pretrained_model_name_or_path or tiny_stable_diffusion_path()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision, torch.float32)
    vae = AutoencoderKL.from_pretrained(source, subfolder=args.vae_subfolder, torch_dtype=dtype)
    vae.requires_grad_(False).eval().to(accelerator.device)
    return vae, source


def load_dataset_images(args, resolution):
    """All images `[N, 3, R, R]` in [-1, 1], in a fixed order: each file or dataset row centre-cropped
    and resized, or, without either, every full tile of the shipped photographs."""
    if args.train_data_dir:
        return load_images(image_files(args.train_data_dir)[: args.max_images], resolution)
    if args.dataset_name:
        named = read_images(dataset_name=args.dataset_name, image_column=args.image_column, max_images=args.max_images)
        return torch.stack([prepare_image(image, resolution, name) for name, image in named])
    crops = photo_patches(sample_photographs().values(), patch_size=resolution)
    return crops[: args.max_images] if args.max_images else crops


def main(argv=None):
    """Parses the flags and fits; a user error (bad images or flags, a model that cannot be found, no Hub
    token, an unreachable Hub) prints one line and exits with status 2."""
    args = parse_args(argv)
    with exit_on_user_error("fit_sd_bottleneck.py"):
        fit_bottlenecks(args)


def hub_repos(args):
    """{bottleneck name: repo id}: the dictionary goes to --hub_model_id, the VQ to <id>-vq."""
    names = ["dictionary"] + ([] if args.no_vq else ["vq"])
    return {name: args.hub_model_id if name == "dictionary" else f"{args.hub_model_id}-{name}" for name in names}


def fit_bottlenecks(args):
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    set_seed(args.seed)
    resolution = args.resolution or (64 if args.pretrained_model_name_or_path is None else 512)
    images = load_dataset_images(args, resolution)  # bad images stop the run before anything loads
    vae, source = load_vae(args, accelerator)
    repos = {}
    if args.push_to_hub and accelerator.is_main_process:
        from sd_sparse.hub import create_hub_repo

        # a missing token or an unreachable Hub stops the run now, not after the fitting
        repos = {name: create_hub_repo(repo, token=args.hub_token) for name, repo in hub_repos(args).items()}
    train_ids, held_ids = split_images(images.shape[0], args.validation_fraction, args.seed)
    with accelerator.split_between_processes(train_ids) as shard:  # each process encodes its share
        train_latents = collect_latents(vae, images[shard], args.encode_batch_size, accelerator.is_main_process)
    held_latents = collect_latents(vae, images[held_ids], args.encode_batch_size)
    logger.info(
        "%d images for fitting, %d held out; latents %s", len(train_ids), len(held_ids), tuple(train_latents.shape[1:])
    )

    channels = vae.config.latent_channels
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

    metrics = {}
    for name, bottleneck in bottlenecks.items():
        bottleneck.to(accelerator.device)
        fit(
            bottleneck,
            train_latents,
            args.max_train_steps,
            args.train_batch_size,
            args.learning_rate,
            seed=args.seed + accelerator.process_index,
            accelerator=accelerator,
            progress=accelerator.is_main_process,
            desc=f"fitting {name}",
        )
        if accelerator.is_main_process:
            metrics[name] = evaluate(
                bottleneck, held_latents, vae=vae, batch_size=args.encode_batch_size, with_flip=not args.no_flip
            )
            bottleneck.save_pretrained(os.path.join(args.output_dir, name))
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        from sd_sparse.hub import metrics_table, push_bottleneck

        report = {
            "base_model": source,
            "resolution": resolution,
            "train_images": len(train_ids),
            "held_out_images": len(held_ids),
            "steps": args.max_train_steps,
            "metrics": metrics,
        }
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


if __name__ == "__main__":
    main()
