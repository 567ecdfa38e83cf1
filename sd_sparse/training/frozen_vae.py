"""The frozen VAE of the programs that learn on its latents (`fit_sd_bottleneck`, `train_prior`): its flags, the
data defaults those programs share, and loading it.

    parser = argparse.ArgumentParser(epilog=DATA_DEFAULTS)
    add_vae_arguments(parser); add_frozen_vae_data_arguments(parser)
    args = resolve_data_defaults(parser.parse_args())
    vae, source, bottleneck = load_vae(args, accelerator)  # bottleneck: a coded VAE's own, else None
"""

from __future__ import annotations

import argparse

import torch

from ..data import add_data_arguments
from ..data.training_data import PHOTOGRAPH_REPEATS
from ..errors import UserError

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


def add_vae_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """`--pretrained_model_name_or_path` and `--vae_subfolder`, in a group "VAE" (returned)."""
    model = parser.add_argument_group("VAE")
    model.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="a diffusers pipeline (SD, SDXL, SD3, Flux, FLUX.2, Sana, Qwen-Image, Wan, ...) or VAE folder, or a Hub id, "
        "with any diffusers image or video VAE class (None: the offline tiny SD); video VAEs are fitted on "
        "one-frame videos of the images",
    )
    model.add_argument("--vae_subfolder", default="vae", help="the VAE's subfolder ('' for a VAE folder)")
    return model


def add_frozen_vae_data_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The shared data flags (`add_data_arguments`) with `--no_center_crop` and this family's defaults (None
    where `resolve_data_defaults` fills them in); returns the group."""
    data = add_data_arguments(parser)
    data.add_argument(
        "--no_center_crop",
        "--no-center_crop",
        dest="center_crop",
        action="store_false",
        help="random crops instead of centre crops",
    )
    parser.set_defaults(resolution=None, center_crop=None, random_flip=False, validation_split=0.2)
    return data


def resolve_data_defaults(args):
    """Fills the data flags left at None with the defaults of `DATA_DEFAULTS`; returns `args`."""
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


def load_vae(args, accelerator):
    """(VAE, its source, bottleneck or None): the VAE of `--pretrained_model_name_or_path` (a pipeline, or a VAE
    folder with `--vae_subfolder ""`), of any diffusers image or video VAE class its config names, frozen on
    the accelerator's device in `--mixed_precision`'s dtype. A coded VAE comes back plain, with its bottleneck
    (float32, on the CPU) as the third item."""
    from diffusers import AutoencoderKL

    from ..autoencoders.coded import CodedAutoencoderMixin
    from ..autoencoders.loading import VAE_CLASSES_DESCRIPTION, vae_class
    from ..offline import tiny_stable_diffusion_path

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
    bottleneck = None
    if isinstance(vae, CodedAutoencoderMixin):
        bottleneck = vae.bottleneck.float().cpu()
        vae = vae.without_bottleneck()
    vae.requires_grad_(False).eval().to(accelerator.device)
    return vae, source, bottleneck
