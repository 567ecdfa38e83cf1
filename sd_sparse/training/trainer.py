"""One Accelerate trainer for DL-VAE, DL-GAN, VQ-VAE, VQ-GAN and SC-VAE (the scripts in train/ only set defaults)."""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import shutil
from typing import Dict, Optional, Sequence

import torch

from ..codec.quantization import MAX_VALUE_BITS, MIN_VALUE_BITS
from ..data import add_data_arguments, build_training_data, check_data_arguments, to_image
from ..errors import exit_on_user_error
from ..evaluation import evaluate
from ..extras import is_installed
from ..hub import autoencoder_model_card, create_hub_repo, push_training_run
from ..losses import PatchGANDiscriminator, ReconstructionLoss, adaptive_gan_weight, discriminator_loss, generator_loss
from ..losses.perceptual import load_lpips
from ..metrics import psnr
from ..models import SparseAutoencoder
from .tasks import TASKS, DegradedInputModel, check_task, degrade, inpainting_mask, masked_psnr

logger = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "checkpoint-"


class TrainingDivergedError(ValueError, FloatingPointError):
    """The training diverged: its loss, or the latents the encoder made of finite images, became NaN or
    infinite. A user error (one line, exit status 2, see `sd_sparse.errors`) naming the step, the loss and
    the learning rate, with the flags that help; not the bad-input error of the bottleneck's own check."""

    def __init__(
        self,
        step: int,
        loss: Optional[float],
        learning_rate: float,
        flag_learning_rate: Optional[float] = None,
        cause: Optional[BaseException] = None,
    ):
        self.step, self.loss, self.learning_rate = step, loss, learning_rate
        lr = f"learning rate {learning_rate:g}"
        if flag_learning_rate is not None and flag_learning_rate != learning_rate:
            lr += f" (--learning_rate {flag_learning_rate:g})"
        elif flag_learning_rate is not None:
            lr = f"--learning_rate {flag_learning_rate:g}"
        if cause is None:
            what = f"the loss became {loss}"
        else:
            previous = f"{loss:.6g} at step {step - 1}" if loss is not None else "none yet"
            what = f"the encoder's latents became NaN or infinite (last loss {previous})"
        super().__init__(
            f"training diverged at step {step}: {what} with {lr}; lower --learning_rate (or clip with "
            "--max_grad_norm 1.0)."
        )


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
    run.add_argument("--checkpointing_steps", type=int, default=500, help="save the training state every N steps")
    run.add_argument(
        "--checkpoints_total_limit", type=int, default=None, help="keep at most this many checkpoints (None: all)"
    )
    run.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    run.add_argument("--validation_steps", type=int, default=500, help="validate every N steps")
    run.add_argument("--num_validation_images", type=int, default=8, help="held-out crops reconstructed at validation")
    run.add_argument("--report_to", default="none", help="tensorboard, wandb, ... or none")
    run.add_argument("--tracker_project_name", default="sd_sparse", help="project name given to the trackers")
    run.add_argument(
        "--logging_dir", default="logs", help="trackers' folder, and metrics.jsonl, relative to --output_dir"
    )
    run.add_argument("--push_to_hub", action="store_true", help="upload the output folder (without checkpoints)")
    run.add_argument("--hub_model_id", default=None, help="user/name of the Hub repo")
    run.add_argument("--hub_token", default=None, help="None: the token of `hf auth login` / HF_TOKEN")
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


def build_model(args):
    """A `SparseAutoencoder`, or with `--model_type kl` an `AutoencoderKL` wrapped for training."""
    if args.model_type == "kl":
        from .autoencoder_kl import AutoencoderKLForTraining, build_autoencoder_kl

        vae = build_autoencoder_kl(
            args.latent_channels, args.block_out_channels, args.layers_per_block, sample_size=args.resolution
        )
        return AutoencoderKLForTraining(vae, kl_weight=args.kl_weight)
    return SparseAutoencoder(
        architecture=args.architecture,
        hidden_channels=args.hidden_channels,
        block_out_channels=tuple(args.block_out_channels),
        latent_channels=args.latent_channels,
        bottleneck_type=args.bottleneck_type,
        num_atoms=args.num_atoms,
        sparsity=args.sparsity,
        patch_size=args.patch_size,
        beta=args.beta,
        dictionary_update=args.dictionary_update,
        decay=args.decay,
        restart_threshold=args.restart_threshold,
        num_lista_blocks=args.num_lista_blocks,
        sparsity_weight=args.sparsity_weight,
        latent_attention=args.latent_attention,
        value_bits=args.value_bits,
        value_refit=args.value_refit,
    )


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
            raise ValueError(f"--report_to {name} needs the {packages[0]} package: pip install {install}")


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
    "checkpointing_steps": ">= 1",
    "checkpoints_total_limit": ">= 1",
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
                raise ValueError(f"--{name} must be {rule}, got {v}.")


def check_arguments(args, model=None) -> None:
    """Errors that must stop a run before any training step, each naming its flag: every numeric flag's
    range and the flags' combinations (`train` checks these before building the model), then, given the
    `model`, `--resolution` against its downsampling."""
    check_flag_ranges(args, TRAINER_FLAG_RANGES)
    if args.model_type == "sparse" and args.bottleneck_type != "vq" and args.sparsity > args.num_atoms:
        raise ValueError(f"--sparsity {args.sparsity} is larger than --num_atoms {args.num_atoms}.")
    if model is not None:
        multiple = model.downsampling_factor * (args.patch_size if args.model_type == "sparse" else 1)
        if args.resolution < multiple or args.resolution % multiple:
            raise ValueError(
                f"--resolution {args.resolution} must be a multiple of {multiple} "
                f"(downsampling {model.downsampling_factor} × --patch_size {args.patch_size})."
            )
    if args.model_type == "kl" and (args.value_bits is not None or args.value_refit):
        raise ValueError("--value_bits and --value_refit quantize sparse codes: --model_type kl has none.")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id.")
    check_data_arguments(args)
    check_task(args.task, args.sr_factor, args.resolution)
    if args.streaming and args.num_train_epochs is not None and args.max_train_steps is None:
        raise ValueError("--num_train_epochs needs the dataset's length: with --streaming give --max_train_steps.")
    if args.gan and args.resolution < 4 * 2**args.discriminator_layers:
        raise ValueError(
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


def _checkpoints(output_dir: str):
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit():
            found.append((int(name[len(CHECKPOINT_PREFIX) :]), os.path.join(output_dir, name)))
    return sorted(found)


def resume_point(args):
    """(checkpoint folder or None, its step) of `--resume_from_checkpoint`, checked before anything runs.

    Resuming at or past `--max_train_steps` is an error: there is nothing to train, and a run that went
    on would rewrite the saved model and its card without the metrics of the steps it never ran.
    """
    path = args.resume_from_checkpoint
    if not path:
        return None, 0
    if path == "latest":
        found = _checkpoints(args.output_dir)
        if not found:
            logger.info("no checkpoint in %s: starting from scratch", args.output_dir)
            return None, 0
        path = found[-1][1]
    if not os.path.isdir(path):
        raise ValueError(f"--resume_from_checkpoint {path} does not exist.")
    name = os.path.basename(os.path.normpath(path))
    if not (name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit()):
        raise ValueError(f"--resume_from_checkpoint {path} is not a {CHECKPOINT_PREFIX}<step> folder.")
    step = int(name[len(CHECKPOINT_PREFIX) :])
    if args.max_train_steps is not None and step >= args.max_train_steps:
        raise ValueError(
            f"--resume_from_checkpoint {path} is at step {step} and --max_train_steps is {args.max_train_steps}: "
            f"nothing to train, nothing written. Pass --max_train_steps above {step} to train on."
        )
    return path, step


def save_checkpoint(accelerator, output_dir: str, step: int, total_limit: Optional[int]) -> str:
    """`accelerator.save_state` into a temporary folder, renamed into place once complete."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    tmp = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # a kill before this line leaves only the .tmp folder, never a torn checkpoint
        if total_limit is not None:
            for _, old in _checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


METRICS_FILE = "metrics.jsonl"


def append_metrics_line(path: str, step: int, logs: Dict[str, float]) -> None:
    """Appends one JSON line `{"step": step, **logs}` to `path` (`<output_dir>/<logging_dir>/metrics.jsonl`).

    Written whatever `--report_to` says; a resumed run appends steps it had logged before the checkpoint
    again, and readers keep the latest timeline (`sd_sparse.figures.curves.read_metrics`)."""
    import json

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, **logs}, default=float) + "\n")


GRID_PANEL_SIZE = 128  # smallest panel side of the validation grids (small crops are enlarged, nearest)


def validation_grid(inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, task: str, title: str):
    """A labelled PIL grid, one row per validation image `[V, 3, R, R]` (all in [-1, 1]): the degraded
    input (for a task other than reconstruction), the model's output and the target, each captioned with
    its PSNR against the target (and, for inpainting, the PSNR inside the masked square)."""
    from ..evaluation.image_grid import labelled_grid

    columns = [("input", inputs)] if task != "reconstruction" else []
    columns.append(("output" if task != "reconstruction" else "reconstruction", outputs))
    unit_targets = (targets + 1) / 2
    mask = inpainting_mask(*targets.shape[-2:]) if task == "inpainting" else None
    captions = []
    for name, images in columns:  # one caption list per column
        scores = psnr(unit_targets, (images.clamp(-1, 1) + 1) / 2, dim=(1, 2, 3)).tolist()
        texts = [f"{name} {score:.2f} dB" for score in scores]
        if mask is not None:
            inside = masked_psnr(targets, images.clamp(-1, 1), mask).tolist()
            texts = [f"{text} (mask {score:.2f})" for text, score in zip(texts, inside)]
        captions.append(texts)
    captions = [[*row, "target"] for row in zip(*captions)]  # rows: one per image
    panels = [[to_image(images[i]) for _, images in columns] + [to_image(targets[i])] for i in range(len(targets))]
    panel_size = max(GRID_PANEL_SIZE, targets.shape[-1])
    return labelled_grid(panels, captions, panel_size=panel_size, title=title)


@torch.no_grad()
def validate(model, crops: torch.Tensor, args, step: int, lpips=None) -> Dict[str, float]:
    """Scores the model on the held-out crops `[V, 3, R, R]` (the targets), fed `degrade(crops, --task)`:
    logs PSNR, SSIM, FLIP, usage perplexity (and LPIPS when its weights are there) of the outputs against
    the clean crops, plus the input's PSNR for a task and the PSNR inside the mask for inpainting; saves
    a labelled PNG grid `validation/step-N.png` (input, output, target per row)."""
    task = args.task
    scores, outputs = evaluate(
        DegradedInputModel(model, task, args.sr_factor),
        crops,
        batch_size=len(crops),
        with_ssim=True,
        lpips=lpips,
        return_reconstructions=True,
    )
    names = {"val/psnr": "image_psnr", "val/ssim": "ssim", "val/flip": "flip", "val/perplexity": "perplexity"}
    names["val/lpips"] = "lpips"  # None without local LPIPS weights: left out
    metrics = {key: scores[name] for key, name in names.items() if scores[name] is not None}
    crops = crops.float().cpu()
    inputs = degrade(crops, task, args.sr_factor)
    if task != "reconstruction":  # the baseline: how far the degraded input itself is from the target
        metrics["val/input_psnr"] = float(psnr((crops + 1) / 2, (inputs + 1) / 2, dim=(1, 2, 3)).mean())
    if task == "inpainting":
        mask = inpainting_mask(*crops.shape[-2:])
        metrics["val/psnr_mask"] = float(masked_psnr(crops, outputs, mask).mean())
    title = f"{task}, step {step}: {scores['image_psnr']:.2f} dB"
    grid = validation_grid(inputs, outputs, crops, task, title)
    os.makedirs(os.path.join(args.output_dir, "validation"), exist_ok=True)
    grid.save(os.path.join(args.output_dir, "validation", f"step-{step}.png"))
    return metrics


def train(args, accelerator=None):
    """Runs the whole training; returns the unwrapped (model, discriminator or None).

    With `--use_ema` the returned (and saved) model carries the EMA parameters and the trained buffers.
    `args.max_train_steps` is set to the number of steps run (derived from `--num_train_epochs` if needed).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler

    check_arguments(args)  # every flag, before any model is built
    model = build_model(args)  # the model's own configuration errors surface here
    check_arguments(args, model)  # and what depends on the model (--resolution vs. its downsampling)
    if args.resume_from_checkpoint and args.resume_from_checkpoint != "latest":
        resume_point(args)  # a missing folder stops the run before the images are read
    perceptual = load_lpips(args.perceptual_weights) if args.eta < 1 else None
    if accelerator is None:
        accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=args.mixed_precision,
            log_with=None if args.report_to == "none" else args.report_to,
            project_config=ProjectConfiguration(
                project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
            ),
        )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise ValueError(
            f"launched as {launched} processes, but each trains alone (no GPU for each process?): on CPUs set "
            "ACCELERATE_USE_CPU=true, e.g. with configs/accelerate/cpu_2_processes.yaml."
        )
    # bad images stop the run here (a header scan), before training; batches load in the workers
    data = build_training_data(
        args, accelerator, args.train_batch_size, args.seed, num_validation_images=args.num_validation_images
    )
    args.max_train_steps = derive_max_train_steps(args, data.batches_per_epoch)
    resume_path, first_step = resume_point(args)
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.push_to_hub and accelerator.is_main_process:
        # a missing token or an unreachable Hub stops the run now, not after the training
        args.hub_model_id = create_hub_repo(args.hub_model_id, token=args.hub_token)
    set_seed(args.seed)  # same initial weights on every rank (DDP also broadcasts them)
    model = build_model(args)
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        # every parameter: those without gradients (VQ's EMA codebook) are copied, not averaged
        ema = EMAModel(
            model.parameters(),
            decay=args.ema_decay,
            foreach=args.foreach_ema,
            model_cls=SparseAutoencoder if args.model_type == "sparse" else type(model.vae),
            model_config=model.config,
        )
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)  # saved and resumed with the checkpoints
    accelerator.register_for_checkpointing(data.batches)  # the data position: resumed runs see the same batches
    discriminator = None
    d_optimizer = d_scheduler = None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, betas=(0.5, 0.9) if args.gan else (0.9, 0.999))
    # the prepared scheduler steps once per process per optimizer step, as in diffusers' examples
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    if args.gan:
        discriminator = PatchGANDiscriminator(num_layers=args.discriminator_layers, norm=args.discriminator_norm)
        if args.discriminator_norm == "batch" and accelerator.num_processes > 1:
            discriminator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
        d_optimizer = torch.optim.Adam(
            discriminator.parameters(), lr=args.discriminator_learning_rate or args.learning_rate, betas=(0.5, 0.9)
        )
        # the discriminator's schedule counts its own steps, from --discriminator_start_step on
        d_scheduler = get_scheduler(
            args.lr_scheduler,
            d_optimizer,
            num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=max(1, args.max_train_steps - args.discriminator_start_step) * accelerator.num_processes,
        )
        model, optimizer, lr_scheduler, discriminator, d_optimizer, d_scheduler = accelerator.prepare(
            model, optimizer, lr_scheduler, discriminator, d_optimizer, d_scheduler
        )
    else:
        model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    if perceptual is not None:
        perceptual = perceptual.to(accelerator.device)
    reconstruction = ReconstructionLoss(eta=args.eta, perceptual=perceptual, warn=False)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        if args.report_to != "none":
            accelerator.init_trackers(args.tracker_project_name, config={k: str(v) for k, v in vars(args).items()})

    if resume_path is not None:
        accelerator.load_state(resume_path)
        if ema is not None:
            ema.to(accelerator.device)  # loaded on the CPU
        logger.info("resumed from %s at step %d", resume_path, first_step)

    from tqdm.auto import tqdm

    unwrapped = accelerator.unwrap_model(model)
    progress = tqdm(
        range(first_step, args.max_train_steps),
        initial=first_step,
        total=args.max_train_steps,
        disable=not accelerator.is_local_main_process,
        desc="training",
    )
    model.train()
    last_metrics = None
    last_loss = None  # the previous step's loss, for the divergence message
    for step in range(first_step + 1, args.max_train_steps + 1):
        logs = {"lr": lr_scheduler.get_last_lr()[0]}  # the learning rate of this step's update
        use_gan = discriminator is not None and step > args.discriminator_start_step
        if use_gan:
            logs["d_lr"] = d_scheduler.get_last_lr()[0]
        for _ in range(args.gradient_accumulation_steps):
            batch = next(data.batches).to(accelerator.device, non_blocking=True)  # the target
            inputs = degrade(batch, args.task, args.sr_factor)  # the batch itself for --task reconstruction
            with accelerator.accumulate(model):
                try:
                    out = model(inputs)
                except ValueError as err:  # the bottleneck's check of non-finite latents: divergence, not bad input
                    if "NaN or infinite" not in str(err) or not bool(torch.isfinite(inputs).all()):
                        raise
                    raise TrainingDivergedError(step, last_loss, logs["lr"], args.learning_rate, err) from err
                recon = reconstruction(batch, out.sample)
                loss = recon + out.bottleneck_loss
                if use_gan:
                    g_loss = generator_loss(discriminator(out.sample), args.gan_loss)
                    weight = adaptive_gan_weight(recon, g_loss, unwrapped.last_layer) * args.discriminator_weight
                    loss = loss + weight * g_loss
                accelerator.backward(loss)
                if args.max_grad_norm is not None and accelerator.sync_gradients:
                    logs["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm))
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if use_gan:
                    d_optimizer.zero_grad(set_to_none=True)  # drop what the generator loss left there
                    logits = discriminator(torch.cat([batch, out.sample.detach()]))
                    real, fake = logits.chunk(2)
                    d_loss = discriminator_loss(real, fake, args.gan_loss)
                    accelerator.backward(d_loss)
                    if args.max_grad_norm is not None and accelerator.sync_gradients:
                        norm = accelerator.clip_grad_norm_(discriminator.parameters(), args.max_grad_norm)
                        logs["d_grad_norm"] = float(norm)
                    d_optimizer.step()
                    d_scheduler.step()
                    d_optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unwrapped.parameters())  # once per optimizer step (the last micro-step synced)
        logs.update(loss=float(loss.detach()), recon=float(recon.detach()))
        if out.perplexity is not None:
            logs["perplexity"] = float(out.perplexity)
        if getattr(out, "kl", None) is not None:
            logs["kl"] = float(out.kl.detach())
        if not math.isfinite(logs["loss"]):
            raise TrainingDivergedError(step, logs["loss"], logs["lr"], args.learning_rate)
        last_loss = logs["loss"]
        progress.update(1)
        progress.set_postfix(loss=f"{logs['loss']:.4f}")
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
            save_checkpoint(accelerator, args.output_dir, step, args.checkpoints_total_limit)
        if accelerator.is_main_process and (step % args.validation_steps == 0 or step == args.max_train_steps):
            if ema is not None:  # validate the EMA weights, then put the trained ones back
                ema.store(unwrapped.parameters())
                ema.copy_to(unwrapped.parameters())
            last_metrics = validate(unwrapped, data.validation, args, step, perceptual)
            if ema is not None:
                ema.restore(unwrapped.parameters())
            logs.update(last_metrics)
            logger.info("step %d: %s", step, logs)
        accelerator.log(logs, step=step)
        if accelerator.is_main_process:  # the file log of scalars `sd-sparse figures` reads (no tracker needed)
            append_metrics_line(os.path.join(args.output_dir, args.logging_dir, METRICS_FILE), step, logs)
    progress.close()

    num_skipped = data.num_skipped(accelerator)  # every rank takes part in the sum
    if num_skipped:
        logger.warning("left out %d bad images (unreadable or smaller than --resolution)", num_skipped)
    accelerator.wait_for_everyone()
    if ema is not None:
        ema.copy_to(unwrapped.parameters())  # the saved model: EMA parameters, trained buffers
    disc = accelerator.unwrap_model(discriminator) if discriminator is not None else None
    if accelerator.is_main_process:
        if args.model_type == "kl":  # SD's scaling_factor: unit-variance latents, from 4 batches of training crops
            from .autoencoder_kl import fit_scaling_factor

            crops = torch.cat([next(data.batches) for _ in range(4)])
            logger.info("scaling_factor %.5f", fit_scaling_factor(unwrapped.vae, crops))
        unwrapped.save_pretrained(args.output_dir)
        if disc is not None:
            disc.save_pretrained(os.path.join(args.output_dir, "discriminator"))
        training = {
            k: getattr(args, k)
            for k in (
                "model_type",
                "gan",
                "eta",
                "learning_rate",
                "lr_scheduler",
                "lr_warmup_steps",
                "train_batch_size",
                "max_train_steps",
                "resolution",
                "seed",
            )
        }
        training["task"] = args.task
        if args.task == "super_resolution":
            training["sr_factor"] = args.sr_factor
        if args.use_ema:
            training["ema_decay"] = args.ema_decay
        training["world_size"] = accelerator.num_processes
        training["validation"] = "held-out images" if data.held_out else "training images"
        if args.skip_bad_images:
            training["skipped_bad_images"] = num_skipped
        training["perceptual"] = "LPIPS (VGG16)" if perceptual is not None else "off"
        with open(os.path.join(args.output_dir, "README.md"), "w") as f:
            f.write(autoencoder_model_card(unwrapped, last_metrics, training))
        if args.push_to_hub:
            push_training_run(args.output_dir, args.hub_model_id, token=args.hub_token)
    data.batches.close()
    # free the DDP wrappers before the process group goes: freed after it, a gloo wrapper can hang
    del model, discriminator, optimizer, d_optimizer, lr_scheduler, d_scheduler
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()
    return unwrapped, disc


def main(argv: Optional[Sequence[str]] = None, defaults: Optional[Dict] = None, prog: Optional[str] = None):
    """Entry point of the train/*.py scripts: a user error (a bad flag value, a missing file, no Hub
    token, an unreachable Hub) prints one line and exits with status 2."""
    parser = build_parser(defaults, prog=prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with exit_on_user_error(parser.prog):
        return train(args)
