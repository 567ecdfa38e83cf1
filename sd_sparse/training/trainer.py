"""One Accelerate trainer for DL-VAE, DL-GAN, VQ-VAE, VQ-GAN, SC-VAE and SD's AutoencoderKL (the scripts in
train/ only set defaults): the model built once, then the training loop.

Its parts, one job each: `arguments` (the flags, their ranges and checks), `checkpoints` (atomic save, exact
resume, total limit; shared with the fit program), `validation` (held-out scores and grids), `metrics_log`
(`metrics.jsonl`); the model card is written by `sd_sparse.hub`. The names that lived here before the split
(`build_parser`, `check_arguments`, `save_checkpoint`, `validate`, ...) are still importable from this module.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

from ..data import build_training_data
from ..errors import UserError, exit_on_user_error
from ..hub import autoencoder_training_summary, create_hub_repo, push_training_run, write_autoencoder_model_card
from ..losses import PatchGANDiscriminator, ReconstructionLoss, adaptive_gan_weight, discriminator_loss, generator_loss
from ..losses.perceptual import load_lpips
from ..models import SparseAutoencoder, flat_bottleneck_config
from .arguments import (  # noqa: F401  (re-exported: these lived here)
    DEFAULT_MAX_TRAIN_STEPS,
    EXTRAS,
    SEED_RANGE,
    TRACKER_PACKAGES,
    TRAINER_FLAG_RANGES,
    build_parser,
    check_arguments,
    check_flag_ranges,
    check_trackers,
    derive_max_train_steps,
)
from .checkpoints import (  # noqa: F401  (CHECKPOINT_PREFIX, save_checkpoint: re-exported)
    CHECKPOINT_PREFIX,
    check_resume_folder,
    load_checkpoint,
    resume_point,
    save_checkpoint,
    save_checkpoint_if_due,
)
from .metrics_log import METRICS_FILE, append_metrics_line, metrics_log_path  # noqa: F401
from .tasks import degrade
from .validation import GRID_PANEL_SIZE, validate, validation_grid  # noqa: F401

logger = logging.getLogger(__name__)


class TrainingDivergedError(UserError, FloatingPointError):
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


def build_model(args):
    """A `SparseAutoencoder`, or with `--model_type kl` an `AutoencoderKL` wrapped for training."""
    if args.model_type == "kl":
        from .autoencoder_kl import AutoencoderKLForTraining, build_autoencoder_kl

        vae = build_autoencoder_kl(
            args.latent_channels, args.block_out_channels, args.layers_per_block, sample_size=args.resolution
        )
        return AutoencoderKLForTraining(vae, kl_weight=args.kl_weight)
    bottleneck_class, bottleneck_config = flat_bottleneck_config(
        latent_attention=args.latent_attention,
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
        value_bits=args.value_bits,
        value_refit=args.value_refit,
    )
    return SparseAutoencoder(
        architecture=args.architecture,
        hidden_channels=args.hidden_channels,
        block_out_channels=tuple(args.block_out_channels),
        latent_channels=args.latent_channels,
        bottleneck_class=bottleneck_class,
        bottleneck_config=bottleneck_config,
        latent_attention=args.latent_attention,
    )


@dataclass
class _TrainingState:
    """What the loop updates: the prepared model, its optimizer and scheduler, the GAN's (None without
    `--gan`), the EMA of the parameters (None without `--use_ema`)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    discriminator: Optional[torch.nn.Module] = None
    d_optimizer: Optional[torch.optim.Optimizer] = None
    d_scheduler: object = None
    ema: object = None


def _make_accelerator(args):
    """The `Accelerator` of the flags: accumulation, precision, trackers and their folder."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
    )


def _check_launch(accelerator) -> None:
    """Processes started by `accelerate launch` that each train alone (no device for each) are an error."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise UserError(
            f"launched as {launched} processes, but each trains alone (no GPU for each process?): on CPUs set "
            "ACCELERATE_USE_CPU=true, e.g. with configs/accelerate/cpu_2_processes.yaml."
        )


def _prepare_training(args, model, accelerator) -> _TrainingState:
    """The EMA, the optimizers and schedulers (and the GAN's discriminator), prepared by `accelerator`; the EMA
    registered for checkpointing. Draws the discriminator's initial weights from the global RNG."""
    from diffusers.optimization import get_scheduler

    num_processes = accelerator.num_processes
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
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, betas=(0.5, 0.9) if args.gan else (0.9, 0.999))
    # the prepared scheduler steps once per process per optimizer step, as in diffusers' examples
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=args.max_train_steps * num_processes,
    )
    if not args.gan:
        return _TrainingState(*accelerator.prepare(model, optimizer, lr_scheduler), ema=ema)
    discriminator = PatchGANDiscriminator(num_layers=args.discriminator_layers, norm=args.discriminator_norm)
    if args.discriminator_norm == "batch" and num_processes > 1:
        discriminator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
    d_optimizer = torch.optim.Adam(
        discriminator.parameters(), lr=args.discriminator_learning_rate or args.learning_rate, betas=(0.5, 0.9)
    )
    # the discriminator's schedule counts its own steps, from --discriminator_start_step on
    d_scheduler = get_scheduler(
        args.lr_scheduler,
        d_optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=max(1, args.max_train_steps - args.discriminator_start_step) * num_processes,
    )
    prepared = accelerator.prepare(model, optimizer, lr_scheduler, discriminator, d_optimizer, d_scheduler)
    return _TrainingState(*prepared, ema=ema)


def _run_steps(args, accelerator, state: _TrainingState, data, reconstruction, perceptual, first_step: int):
    """Steps `first_step + 1` to `--max_train_steps`: the optimizer steps (with accumulation, clipping, the GAN
    and the EMA), checkpoints, validation, logs. Returns the last validation metrics (None if none ran)."""
    from tqdm.auto import tqdm

    model, discriminator, ema = state.model, state.discriminator, state.ema
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
        logs = {"lr": state.lr_scheduler.get_last_lr()[0]}  # the learning rate of this step's update
        use_gan = discriminator is not None and step > args.discriminator_start_step
        if use_gan:
            logs["d_lr"] = state.d_scheduler.get_last_lr()[0]
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
                state.optimizer.step()
                state.lr_scheduler.step()
                state.optimizer.zero_grad(set_to_none=True)
                if use_gan:
                    state.d_optimizer.zero_grad(set_to_none=True)  # drop what the generator loss left there
                    logits = discriminator(torch.cat([batch, out.sample.detach()]))
                    real, fake = logits.chunk(2)
                    d_loss = discriminator_loss(real, fake, args.gan_loss)
                    accelerator.backward(d_loss)
                    if args.max_grad_norm is not None and accelerator.sync_gradients:
                        norm = accelerator.clip_grad_norm_(discriminator.parameters(), args.max_grad_norm)
                        logs["d_grad_norm"] = float(norm)
                    state.d_optimizer.step()
                    state.d_scheduler.step()
                    state.d_optimizer.zero_grad(set_to_none=True)
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
        save_checkpoint_if_due(accelerator, args, step)
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
            append_metrics_line(metrics_log_path(args), step, logs)
    progress.close()
    return last_metrics


def train(args, accelerator=None):
    """Runs the whole training; returns the unwrapped (model, discriminator or None).

    With `--use_ema` the returned (and saved) model carries the EMA parameters and the trained buffers.
    `args.max_train_steps` is set to the number of steps run (derived from `--num_train_epochs` if needed).
    """
    from accelerate.utils import set_seed

    check_arguments(args)  # every flag, before the model is built
    set_seed(args.seed)  # same initial weights on every rank (DDP also broadcasts them)
    model = build_model(args)  # the model's own configuration errors surface here
    check_arguments(args, model)  # and what depends on the model (--resolution vs. its downsampling)
    # the set-up below (LPIPS weights, the data) leaves alone the random stream that the discriminator's
    # initial weights and the training steps draw from: the one the model was built from
    with torch.random.fork_rng(devices=[]):
        check_resume_folder(args)  # a missing folder stops the run before the images are read
        perceptual = load_lpips(args.perceptual_weights) if args.eta < 1 else None
        if accelerator is None:
            accelerator = _make_accelerator(args)
        _check_launch(accelerator)
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
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    state = _prepare_training(args, model, accelerator)
    accelerator.register_for_checkpointing(data.batches)  # the data position: resumed runs see the same batches
    if perceptual is not None:
        perceptual = perceptual.to(accelerator.device)
    reconstruction = ReconstructionLoss(eta=args.eta, perceptual=perceptual, warn=False)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        if args.report_to != "none":
            accelerator.init_trackers(args.tracker_project_name, config={k: str(v) for k, v in vars(args).items()})
    load_checkpoint(accelerator, resume_path, first_step)
    if state.ema is not None and resume_path is not None:
        state.ema.to(accelerator.device)  # loaded on the CPU

    last_metrics = _run_steps(args, accelerator, state, data, reconstruction, perceptual, first_step)
    num_skipped = data.num_skipped(accelerator)  # every rank takes part in the sum
    if num_skipped:
        logger.warning("left out %d bad images (unreadable or smaller than --resolution)", num_skipped)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(state.model)
    if state.ema is not None:
        state.ema.copy_to(unwrapped.parameters())  # the saved model: EMA parameters, trained buffers
    disc = accelerator.unwrap_model(state.discriminator) if state.discriminator is not None else None
    if accelerator.is_main_process:
        if args.model_type == "kl":  # SD's scaling_factor: unit-variance latents, from 4 batches of training crops
            from .autoencoder_kl import fit_scaling_factor

            crops = torch.cat([next(data.batches) for _ in range(4)])
            logger.info("scaling_factor %.5f", fit_scaling_factor(unwrapped.vae, crops))
        unwrapped.save_pretrained(args.output_dir)
        if disc is not None:
            disc.save_pretrained(os.path.join(args.output_dir, "discriminator"))
        held_out, with_lpips = data.held_out, perceptual is not None
        training = autoencoder_training_summary(args, accelerator.num_processes, held_out, with_lpips, num_skipped)
        write_autoencoder_model_card(args.output_dir, unwrapped, last_metrics, training)
        if args.push_to_hub:
            push_training_run(args.output_dir, args.hub_model_id, token=args.hub_token)
    data.batches.close()
    # free the DDP wrappers before the process group goes: freed after it, a gloo wrapper can hang
    del state, model
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
