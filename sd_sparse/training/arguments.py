"""The flags of the training programs: the trainer's parser (diffusers `examples/` names, per-program defaults),
the range of every numeric flag, the checks that stop a run before anything is built, and the flag helpers the
fit program (`fit_sd_bottleneck`) shares with the trainer.

    args = build_parser({"bottleneck_type": "vq"}, prog="train_vqvae.py").parse_args(argv)
    check_arguments(args)  # ValueError naming the flag: `--NAME must be RANGE, got VALUE.`
"""

from __future__ import annotations

import argparse
import math
import warnings
from typing import Dict, Optional

from ..codec.quantization import MAX_VALUE_BITS, MIN_VALUE_BITS
from ..data import add_data_arguments, check_data_arguments
from ..errors import UserError
from ..extras import is_installed
from .tasks import TASKS, check_task


class DeprecatedAlias(argparse.Action):
    """A renamed flag: sets the new one's value, with a FutureWarning naming it."""

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is deprecated: use --{self.dest}", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_checkpoint_arguments(group: argparse._ArgumentGroup, state: str = "training") -> None:
    """`--checkpointing_steps`, `--checkpoints_total_limit` and `--resume_from_checkpoint` (see `checkpoints`);
    `state` names what a checkpoint holds in the help ("training", "fitting")."""
    group.add_argument("--checkpointing_steps", type=int, default=500, help=f"save the {state} state every N steps")
    group.add_argument(
        "--checkpoints_total_limit", type=int, default=None, help="keep at most this many checkpoints (None: all)"
    )
    group.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")


def add_hub_arguments(group: argparse._ArgumentGroup, push_help: str, model_id_help: str) -> None:
    """`--push_to_hub` (help `push_help`), `--hub_model_id` (help `model_id_help`) and `--hub_token`."""
    group.add_argument("--push_to_hub", action="store_true", help=push_help)
    group.add_argument("--hub_model_id", default=None, help=model_id_help)
    group.add_argument("--hub_token", default=None, help="None: the token of `hf auth login` / HF_TOKEN")


def build_parser(defaults: Optional[Dict] = None, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The flags of every training script (diffusers `examples/` names), with per-script defaults; `prog` names
    the program in usage and error lines (default: the script's file name)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a sparse-bottleneck autoencoder with Accelerate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(p)  # sources, transforms, loader workers, held-out split: shared with the fit script
    run = p.add_argument_group("training")
    run.add_argument("--output_dir", default="sparse-autoencoder", help="model, checkpoints, logs and validation")
    run.add_argument("--seed", type=int, default=0, help="initial weights and the crops of every step")
    run.add_argument("--train_batch_size", type=int, default=16, help="per process")
    run.add_argument(
        "--num_train_epochs",
        type=int,
        default=None,
        help="train this many epochs; an epoch is ceil(images × repeats / (train_batch_size × processes × "
        "gradient_accumulation_steps)) optimizer steps. Ignored when --max_train_steps is given",
    )
    run.add_argument(
        "--max_train_steps",
        type=int,
        default=None,
        help="optimizer steps; wins over --num_train_epochs (None: from --num_train_epochs, else 1000)",
    )
    run.add_argument("--learning_rate", type=float, default=1e-4, help="the generator's (and default discriminator's)")
    run.add_argument(
        "--lr_scheduler",
        default="constant",
        choices=[
            "linear",
            "cosine",
            "cosine_with_restarts",
            "polynomial",
            "constant",
            "constant_with_warmup",
        ],
        help="diffusers.optimization.get_scheduler; one per optimizer (generator, discriminator)",
    )
    run.add_argument("--lr_warmup_steps", type=int, default=0, help="warmup optimizer steps of --lr_scheduler")
    run.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    run.add_argument(
        "--max_grad_norm",
        type=float,
        default=None,
        help="clip each model's gradient norm to this (None: no clipping; diffusers' examples use 1.0)",
    )
    run.add_argument(
        "--use_ema",
        action="store_true",
        help="keep an EMA of the autoencoder's parameters (diffusers' EMAModel): used for validation and saved "
        "as the final model (buffers stay the trained ones)",
    )
    run.add_argument("--ema_decay", type=float, default=0.9999, help="EMA decay with --use_ema")
    run.add_argument("--foreach_ema", action="store_true", help="faster foreach EMA update (more memory)")
    run.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="recompute the encoder's and decoder's blocks in the backward pass to save memory",
    )
    run.add_argument(
        "--allow_tf32", action="store_true", help="TF32 matmuls and convolutions on Ampere+ GPUs (no-op on CPU)"
    )
    run.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="Accelerate's")
    add_checkpoint_arguments(run, "training")
    run.add_argument("--validation_steps", type=int, default=500, help="validate every N steps")
    run.add_argument("--num_validation_images", type=int, default=8, help="held-out crops reconstructed at validation")
    run.add_argument("--report_to", default="none", help="tensorboard, wandb, ... or none")
    run.add_argument("--tracker_project_name", default="sd_sparse", help="project name given to the trackers")
    run.add_argument(
        "--logging_dir", default="logs", help="trackers' folder, and metrics.jsonl, relative to --output_dir"
    )
    add_hub_arguments(run, "upload the output folder (without checkpoints)", "user/name of the Hub repo")
    task = p.add_argument_group("downstream task (LASERS supplement §12)")
    task.add_argument(
        "--task",
        default="reconstruction",
        help=f"one of {', '.join(TASKS)}: the model maps degraded crops (bicubic-blurred by --sr_factor, or with a "
        "centred square of side 1/4 set to 0) to the clean ones; the metrics compare with the clean crops",
    )
    task.add_argument(
        "--sr_factor",
        type=int,
        default=4,
        help="super_resolution: downsampling factor of the input (must divide --resolution)",
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--model_type",
        default="sparse",
        choices=["sparse", "kl"],
        help="sparse: a SparseAutoencoder (DL/VQ/SC-VAE); kl: a diffusers AutoencoderKL (SD's VAE recipe, "
        "train/train_vae.py), which uses --latent_channels, --block_out_channels, --layers_per_block, --kl_weight",
    )
    model.add_argument("--kl_weight", type=float, default=1e-6, help="weight of the KL term (--model_type kl)")
    model.add_argument("--layers_per_block", type=int, default=1, help="resnet layers per block (--model_type kl)")
    model.add_argument("--architecture", default="lasers", choices=["lasers", "vqgan"], help="encoder/decoder pair")
    model.add_argument(
        "--bottleneck_type", default="dictionary", choices=["dictionary", "vq", "lista"], help="DL, VQ or SC"
    )
    model.add_argument("--latent_channels", type=int, default=16, help="L, latent channels")
    model.add_argument("--hidden_channels", type=int, default=128, help="width of the lasers pair")
    model.add_argument(
        "--block_out_channels", type=int, nargs="+", default=[128, 128, 256], help="widths of the vqgan pair"
    )
    model.add_argument("--num_atoms", type=int, default=512, help="K atoms / codebook vectors")
    model.add_argument("--sparsity", type=int, default=5, help="S, atoms per latent vector")
    model.add_argument("--patch_size", type=int, default=1, help="latent patch coded as one vector")
    model.add_argument("--beta", type=float, default=0.25, help="commitment weight")
    model.add_argument(
        "--dictionary_update", default="gradient", choices=["gradient", "bcd"], help="dictionary learning mode"
    )
    model.add_argument("--decay", type=float, default=0.99, help="VQ EMA decay")
    model.add_argument("--num_lista_blocks", type=int, default=5, help="LISTA iterations")
    model.add_argument("--sparsity_weight", type=float, default=0.1, help="LISTA's L1 weight")
    model.add_argument("--latent_attention", action="store_true", help="SC-VAE's attention-weighted latent loss")
    model.add_argument(
        "--value_bits",
        type=int,
        default=None,
        help="quantize the sparse coefficients to this many bits in training (dictionary, LISTA; None: float)",
    )
    model.add_argument(
        "--value_refit",
        action="store_true",
        help="dictionary: quantize coefficients one at a time, re-fitting the rest",
    )
    model.add_argument(
        "--restart_threshold",
        type=float,
        default=0.5,
        help="restart codes/atoms whose usage share falls below this fraction of 1/K (0: off)",
    )
    model.add_argument(
        "--eta", type=float, default=0.5, help="L2 share of the reconstruction loss; the rest is LPIPS (paper: 0.5)"
    )
    model.add_argument(
        "--perceptual_weights",
        default=None,
        help="local LPIPS weights (a folder; see sd_sparse.losses.load_lpips). None: SD_SPARSE_LPIPS_WEIGHTS or "
        "torch's hub cache; without weights the perceptual term is off (warning). Nothing is downloaded.",
    )
    gan = p.add_argument_group("GAN")
    gan.add_argument("--gan", action="store_true", help="add the PatchGAN discriminator (DL-GAN, VQ-GAN)")
    gan.add_argument("--discriminator_start_step", type=int, default=0, help="the GAN losses start after this step")
    gan.add_argument("--discriminator_weight", type=float, default=0.8, help="times the adaptive GAN weight")
    gan.add_argument("--discriminator_learning_rate", type=float, default=None, help="None: --learning_rate")
    gan.add_argument("--gan_loss", default="hinge", choices=["hinge", "vanilla"], help="GAN loss")
    gan.add_argument("--discriminator_layers", type=int, default=3, help="PatchGAN layers")
    gan.add_argument(
        "--discriminator_norm",
        default="group",
        choices=["batch", "group", "none"],
        help="group by default: batch-norm statistics would differ between ranks",
    )
    if defaults:
        p.set_defaults(**defaults)
    return p


# the packages each Accelerate tracker needs (any one of them)
TRACKER_PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "comet_ml": ("comet_ml",),
    "aim": ("aim",),
    "mlflow": ("mlflow",),
    "clearml": ("clearml",),
    "dvclive": ("dvclive",),
    "swanlab": ("swanlab",),
    "trackio": ("trackio",),
}
EXTRAS = {"tensorboard"}  # trackers with an sd_sparse extra
DEFAULT_MAX_TRAIN_STEPS = 1000


def check_trackers(report_to: str) -> None:
    """A tracker whose package is missing stops the run now, with the command that installs it."""

    for name in (n.strip() for n in report_to.split(",")):
        packages = TRACKER_PACKAGES.get(name)
        if packages and not any(is_installed(pkg) for pkg in packages):
            install = f"'sd_sparse[{name}]'" if name in EXTRAS else packages[0]
            raise UserError(f"--report_to {name} needs the {packages[0]} package: pip install {install}")


# the ranges a numeric flag's value must lie in (`check_flag_ranges`)
_RANGES = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    f"in [{MIN_VALUE_BITS}, {MAX_VALUE_BITS}]": lambda v: MIN_VALUE_BITS <= v <= MAX_VALUE_BITS,
    "in [0, 2**32 - 1]": lambda v: 0 <= v < 2**32,  # what numpy's seed takes (accelerate's set_seed)
}
SEED_RANGE = "in [0, 2**32 - 1]"
#: the ranges of the flags of `add_checkpoint_arguments`
CHECKPOINT_FLAG_RANGES = {"checkpointing_steps": ">= 1", "checkpoints_total_limit": ">= 1"}

#: every numeric flag of the trainer (train/*.py) and its range; None values (a default of None) pass
TRAINER_FLAG_RANGES = {
    "seed": SEED_RANGE,
    "train_batch_size": ">= 1",
    "num_train_epochs": ">= 1",
    "max_train_steps": ">= 1",
    "learning_rate": "> 0",
    "lr_warmup_steps": ">= 0",
    "gradient_accumulation_steps": ">= 1",
    "max_grad_norm": "> 0",
    "ema_decay": "in [0, 1]",
    **CHECKPOINT_FLAG_RANGES,
    "validation_steps": ">= 1",
    "num_validation_images": ">= 1",
    "kl_weight": ">= 0",
    "layers_per_block": ">= 1",
    "latent_channels": ">= 1",
    "hidden_channels": ">= 1",
    "block_out_channels": ">= 1",
    "num_atoms": ">= 1",
    "sparsity": ">= 1",
    "patch_size": ">= 1",
    "beta": ">= 0",
    "decay": "in [0, 1]",
    "num_lista_blocks": ">= 1",
    "sparsity_weight": ">= 0",
    "value_bits": f"in [{MIN_VALUE_BITS}, {MAX_VALUE_BITS}]",
    "restart_threshold": ">= 0",
    "eta": "in [0, 1]",
    "discriminator_start_step": ">= 0",
    "discriminator_weight": ">= 0",
    "discriminator_learning_rate": "> 0",
    "discriminator_layers": ">= 1",
}


def check_flag_ranges(args, ranges: Dict[str, str]) -> None:
    """`ValueError` `--NAME must be RANGE, got VALUE.` for the first flag of `ranges` ({name: range, one of
    `_RANGES`}) whose value (each value, for a list) is out of its range or not finite. Cheap: run it before
    anything is built or read."""
    for name, rule in ranges.items():
        value = getattr(args, name, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is None:
                continue
            if not (isinstance(v, (int, float)) and math.isfinite(v) and _RANGES[rule](v)):
                raise UserError(f"--{name} must be {rule}, got {v}.")


def check_arguments(args, model=None) -> None:
    """Errors that must stop a run before any training step, each naming its flag: every numeric flag's
    range and the flags' combinations (`train` checks these before building the model), then, given the
    `model`, `--resolution` against its downsampling."""
    check_flag_ranges(args, TRAINER_FLAG_RANGES)
    if args.model_type == "sparse" and args.bottleneck_type != "vq" and args.sparsity > args.num_atoms:
        raise UserError(f"--sparsity {args.sparsity} is larger than --num_atoms {args.num_atoms}.")
    if model is not None:
        multiple = model.downsampling_factor * (args.patch_size if args.model_type == "sparse" else 1)
        if args.resolution < multiple or args.resolution % multiple:
            raise UserError(
                f"--resolution {args.resolution} must be a multiple of {multiple} "
                f"(downsampling {model.downsampling_factor} × --patch_size {args.patch_size})."
            )
    if args.model_type == "kl" and (args.value_bits is not None or args.value_refit):
        raise UserError("--value_bits and --value_refit quantize sparse codes: --model_type kl has none.")
    if args.push_to_hub and not args.hub_model_id:
        raise UserError("--push_to_hub needs --hub_model_id.")
    check_data_arguments(args)
    check_task(args.task, args.sr_factor, args.resolution)
    if args.streaming and args.num_train_epochs is not None and args.max_train_steps is None:
        raise UserError("--num_train_epochs needs the dataset's length: with --streaming give --max_train_steps.")
    if args.gan and args.resolution < 4 * 2**args.discriminator_layers:
        raise UserError(
            f"--resolution {args.resolution} is too small for a {args.discriminator_layers}-layer PatchGAN: "
            f"use at least {4 * 2**args.discriminator_layers} or fewer --discriminator_layers."
        )
    if args.report_to != "none":
        check_trackers(args.report_to)


def derive_max_train_steps(args, batches_per_epoch) -> int:
    """`--max_train_steps` if given, else `--num_train_epochs` × optimizer steps per epoch, else 1000.

    An epoch is ceil(batches per process / gradient_accumulation_steps) optimizer steps, the batches
    being those of `--train_batch_size` crops of every training image (× `--repeats`) split across ranks.
    """
    if args.max_train_steps is not None:
        return args.max_train_steps
    if args.num_train_epochs is None:
        return DEFAULT_MAX_TRAIN_STEPS
    return args.num_train_epochs * math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
