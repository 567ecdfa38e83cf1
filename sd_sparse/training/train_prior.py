r"""Train a learned prior (`CodePrior`) over the codes of a frozen bottleneck on a frozen VAE's latents.

    accelerate launch train/train_prior.py --bottleneck <dir> \
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --train_data_dir ./photos --resolution 512 --output_dir sd15-prior [--cache_latents ./sd15-latents]

--bottleneck is a bottleneck folder written by save_pretrained (e.g. fit_sd_bottleneck's `<out>/dictionary` or
`<out>/vq`); it may be left out when the VAE is a coded one, whose own bottleneck is then used. Images come
from the shared data pipeline, as in fit_sd_bottleneck (a folder, a `datasets` dataset or the shipped
photographs; without --pretrained_model_name_or_path the offline tiny SD). Every step, each rank takes its
batch of latents (its images encoded by the frozen VAE, or with --cache_latents random rows of a latent
cache), codes them with the frozen bottleneck and takes one Adam step of the prior's bits per position
(gradients averaged over the ranks). Checkpoints resume exactly. Writes a `CodePriorPipeline` folder
(`model_index.json`, `prior/` the CodePrior, `vae/` the coded VAE; `CodePriorPipeline.from_pretrained(output_dir)`
generates images) and `bottleneck/`, then scores the held-out images on the main process: the prior's bits per position
and the measured size of their codes file with and without the prior (`metrics.json`, `results.md` and the
prior's model card `prior/README.md`). --push_to_hub uploads the prior folder. From an installed package:
`accelerate launch -m sd_sparse.training train_prior ...`.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
from typing import Dict, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from sd_sparse.data import build_training_data, check_data_arguments
from sd_sparse.errors import UserError, exit_on_user_error
from sd_sparse.training.arguments import (
    CHECKPOINT_FLAG_RANGES,
    SEED_RANGE,
    add_checkpoint_arguments,
    add_hub_arguments,
    check_flag_ranges,
)
from sd_sparse.training.checkpoints import check_resume_folder, load_checkpoint, resume_point, save_checkpoint_if_due
from sd_sparse.training.fit_latents import (
    LATENT_FLAG_RANGES,
    LatentSource,
    add_latent_cache_arguments,
    check_cache_folder,
    held_out_dataset,
    next_latents,
    prepare_fit_latents,
)
from sd_sparse.training.fitting import Fitter, collect_latents
from sd_sparse.training.frozen_vae import (
    DATA_DEFAULTS,
    add_frozen_vae_data_arguments,
    add_vae_arguments,
    load_vae,
    resolve_data_defaults,
)
from sd_sparse.training.metrics_log import append_metrics_line, metrics_log_path

logger = logging.getLogger(__name__)

PROG = "train_prior.py"
#: the rows of the held-out table: metrics.json key and what it measures
HELD_OUT_ROWS = {
    "prior_bits_per_position": "the prior's bits (float network)",
    "codes_file_bits_per_position": "codes file with the prior",
    "codes_file_bits_per_position_without_prior": "codes file without the prior",
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, epilog=DATA_DEFAULTS, formatter_class=_HelpFormatter
    )
    model = add_vae_arguments(parser)
    model.add_argument(
        "--bottleneck",
        default=None,
        metavar="DIR",
        help="the frozen bottleneck whose codes the prior models: a folder written by save_pretrained (None: the "
        "bottleneck of a coded VAE)",
    )
    add_frozen_vae_data_arguments(parser)
    prior = parser.add_argument_group("prior")
    prior.add_argument("--embedding_dim", type=int, default=32, help="embedding of a coded cell in the context")
    prior.add_argument("--hidden_dim", type=int, default=128, help="width of the context MLP, depth state and heads")
    prior.add_argument("--context_size", type=int, default=5, help="k of the masked k x k context window (odd)")
    training = parser.add_argument_group("training")
    training.add_argument("--max_train_steps", type=int, default=1000, help="optimizer steps")
    training.add_argument("--train_batch_size", type=int, default=16, help="images (latents) per step and process")
    training.add_argument("--learning_rate", type=float, default=1e-3, help="Adam's")
    training.add_argument("--adam_weight_decay", type=float, default=0.0, help="Adam's decoupled weight decay")
    training.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="the VAE's dtype")
    training.add_argument("--output_dir", default="code-prior", help="prior, bottleneck, VAE, metrics, checkpoints")
    training.add_argument("--seed", type=int, default=0, help="initial weights, the split, the crops, the draws")
    training.add_argument("--logging_steps", type=int, default=50, help="log the training loss every N steps")
    training.add_argument(
        "--logging_dir", default="logs", help="folder of metrics.jsonl (the logged losses), relative to --output_dir"
    )
    add_checkpoint_arguments(training, "training")
    add_latent_cache_arguments(training)
    evaluation = parser.add_argument_group("held-out evaluation")
    evaluation.add_argument(
        "--max_eval_images", type=int, default=None, help="score at most this many held-out crops (None: all)"
    )
    hub = parser.add_argument_group("Hub")
    add_hub_arguments(hub, "push the prior folder", "repo for the prior")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    return resolve_data_defaults(args)


#: every numeric flag of this script and its range (the data flags: `check_data_arguments`)
PRIOR_FLAG_RANGES = {
    "seed": SEED_RANGE,
    "embedding_dim": ">= 1",
    "hidden_dim": ">= 1",
    "context_size": ">= 1",
    "max_train_steps": ">= 1",
    "train_batch_size": ">= 1",
    "learning_rate": "> 0",
    "adam_weight_decay": ">= 0",
    "logging_steps": ">= 1",
    **CHECKPOINT_FLAG_RANGES,
    **LATENT_FLAG_RANGES,
    "max_eval_images": ">= 1",
}


def check_arguments(args) -> None:
    """`ValueError` naming the flag, before anything is read or built: every numeric flag's range, an even
    --context_size, the data flags, the cache folder and a missing --bottleneck folder."""
    check_flag_ranges(args, PRIOR_FLAG_RANGES)
    if args.context_size % 2 == 0:
        raise UserError(f"--context_size must be odd, got {args.context_size}.")
    check_data_arguments(args)
    check_cache_folder(args)
    if args.bottleneck is not None and not os.path.isdir(args.bottleneck):
        raise UserError(f"--bottleneck {args.bottleneck} is not a folder.")


def load_bottleneck(path: str):
    """The bottleneck saved in the folder `path` (`save_pretrained`), by the class its config names."""
    from sd_sparse.loading import load_by_class_name

    hint = "not a bottleneck: pass the bottleneck's own folder (e.g. fit_sd_bottleneck's <out>/dictionary)."
    return load_by_class_name(
        path, "--bottleneck", kinds=("bottleneck",), hints={"vae": hint, "sparse_autoencoder": hint}
    )


def frozen_bottleneck(args, given, coded, vae, source: str):
    """The bottleneck the prior models: `given` (--bottleneck), else `coded` (the coded VAE's); `ValueError`
    without either, or when its latent channels are not the VAE's."""
    from sd_sparse.autoencoders.families import latent_channels

    bottleneck = given if given is not None else coded
    if bottleneck is None:
        raise UserError(
            f"--bottleneck is missing and --pretrained_model_name_or_path {source} is not a coded VAE: pass the "
            "folder of the bottleneck whose codes the prior models."
        )
    channels, vae_channels = bottleneck.config.latent_channels, latent_channels(vae)
    if channels != vae_channels:
        where = f"--bottleneck {args.bottleneck}" if given is not None else "the coded VAE's bottleneck"
        raise UserError(
            f"{where} codes {channels}-channel latents but the VAE of {source} makes {vae_channels}-channel ones: "
            "pass a bottleneck fitted on this VAE's latents."
        )
    return bottleneck


class CodedBottleneck:
    """Saved with the checkpoints: which bottleneck's codes the prior learns (class and config fingerprint). A
    checkpoint resumes only with the same bottleneck."""

    def __init__(self, bottleneck):
        self.description = f"{bottleneck.coding_class_name} (config {bottleneck.config_fingerprint})"

    def state_dict(self):
        return {"bottleneck": self.description}

    def load_state_dict(self, state):
        if state["bottleneck"] != self.description:
            raise UserError(
                f"the checkpoint's prior learned the codes of {state['bottleneck']}, this run's bottleneck is "
                f"{self.description}: resume with the same --bottleneck."
            )


def train_steps(args, fitter: Fitter, bottleneck, data, cache, vae, accelerator, first_step: int) -> None:
    """Steps `first_step + 1` to `--max_train_steps`: this rank's batch of latents, its codes (frozen
    bottleneck), one Adam step of the prior's bits per position; the loss (mean over the ranks) logged every
    `--logging_steps` steps, checkpoints."""
    main = accelerator.is_main_process
    fitter.train()
    with tqdm(initial=first_step, total=args.max_train_steps, disable=not main, desc="training the prior") as bar:
        for step in range(first_step + 1, args.max_train_steps + 1):
            latents = next_latents(args, data, cache, vae, accelerator, step)
            with torch.no_grad():
                codes = bottleneck.encode(latents)
            loss = fitter.step(codes).loss.detach()
            bar.update(1)
            if step % args.logging_steps == 0 or step == args.max_train_steps:
                bits = float(accelerator.reduce(loss, "mean"))  # every rank takes part
                bar.set_postfix(bits_per_position=f"{bits:.4f}")
                if main:
                    append_metrics_line(metrics_log_path(args), step, {"train/bits_per_position": bits})
                    logger.info("step %d: %.4f bits per position", step, bits)
            save_checkpoint_if_due(accelerator, args, step)


def _joined(parts: List):
    """The codes of several batches of images as one `Codes` (one codes file)."""
    from sd_sparse.codec.codes import Codes

    first = parts[0]
    layout = first.layout.clone()
    layout[0] = sum(int(p.layout[0]) for p in parts)

    def cat(name):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    fields = {n: cat(n) for n in ("indices", "coefficients", "levels", "residual")}
    return Codes(layout=layout, signature=first.signature, frames=first.frames, **fields)


def held_out_latents(vae, dataset, args, progress: bool) -> Optional[torch.Tensor]:
    """The VAE latents `[N, C, h, w]` (CPU) of the first `--max_eval_images` held-out crops; None for none."""
    from torch.utils.data import DataLoader, IterableDataset, Subset

    from sd_sparse.data import collate_images

    if not isinstance(dataset, IterableDataset):
        count = len(dataset) if args.max_eval_images is None else min(len(dataset), args.max_eval_images)
        dataset = Subset(dataset, range(count))
    loader = DataLoader(
        dataset,
        batch_size=args.encode_batch_size,
        collate_fn=collate_images,
        num_workers=args.dataloader_num_workers,
    )
    chunks, seen = [], 0
    for batch in tqdm(loader, desc="encoding held-out images", disable=not progress, leave=False):
        images = batch["pixel_values"]
        if args.max_eval_images is not None and seen >= args.max_eval_images:
            break
        if images is None:  # bad images only
            continue
        if args.max_eval_images is not None:
            images = images[: args.max_eval_images - seen]
        seen += images.shape[0]
        chunks.append(collect_latents(vae, images, args.encode_batch_size).cpu())
    return torch.cat(chunks) if chunks else None


@torch.no_grad()
def evaluate_prior(prior, bottleneck, latents: torch.Tensor, batch_size: int) -> Dict:
    """On held-out latents `[N, C, h, w]`: the prior's mean bits per position (its float network, as trained)
    and the measured bits per position of their codes file with and without the prior (header included; None,
    and `codes_file_missing` saying what installs it, without the compression extra). Moves both models to
    the CPU (the codes file's coding runs there)."""
    from sd_sparse.codec.container import measured_bits_per_position
    from sd_sparse.extras import MissingExtraError

    bottleneck_device = bottleneck.device
    parts, bits = [], 0.0
    for start in range(0, latents.shape[0], batch_size):
        codes = bottleneck.encode(latents[start : start + batch_size].to(bottleneck_device))
        bits += float(prior(codes).bits.double().sum())
        parts.append(codes.to("cpu"))
    codes = _joined(parts)
    positions = latents.shape[0] * latents.shape[-2] * latents.shape[-1]
    metrics = {"images": int(latents.shape[0]), "prior_bits_per_position": bits / positions}
    try:
        prior_cpu, bottleneck_cpu = prior.to("cpu"), bottleneck.to("cpu")
        metrics["codes_file_bits_per_position"] = measured_bits_per_position(codes, bottleneck_cpu, prior=prior_cpu)
        metrics["codes_file_bits_per_position_without_prior"] = measured_bits_per_position(codes, bottleneck_cpu)
    except MissingExtraError as err:  # the range coder is optional: the table says what installs it
        metrics["codes_file_bits_per_position"] = metrics["codes_file_bits_per_position_without_prior"] = None
        metrics["codes_file_missing"] = str(err)
    return metrics


def results_table(metrics: Dict) -> str:
    """Markdown table of the held-out bits per latent position."""
    lines = ["| held-out codes | bits per latent position |", "|---|---|"]
    for key, name in HELD_OUT_ROWS.items():
        value = metrics.get(key)
        missing = f"n/a: {metrics.get('codes_file_missing')}"
        lines.append(f"| {name} | {missing if value is None else f'{value:.4f}'} |")
    return "\n".join(lines)


def train_prior(args):
    """Trains, saves and evaluates the prior; returns it (every rank: the same weights)."""
    from sd_sparse.priors import CodePrior

    check_arguments(args)
    check_resume_folder(args)  # a missing folder stops the run before the images are read
    # the prior trains in float32 (its coding copy is fixed-point); --mixed_precision is the VAE's dtype
    accelerator = Accelerator(mixed_precision="no")
    main = accelerator.is_main_process
    logging.basicConfig(level=logging.INFO if main else logging.WARNING)
    given = load_bottleneck(args.bottleneck) if args.bottleneck is not None else None
    # bad images stop the run here (a header scan), before the VAE loads; batches load in the workers
    data = build_training_data(args, accelerator, args.train_batch_size, args.seed, num_validation_images=1)
    resume_path, first_step = resume_point(args)
    vae, source, coded = load_vae(args, accelerator)
    bottleneck = frozen_bottleneck(args, given, coded, vae, source)
    bottleneck.requires_grad_(False).eval().to(accelerator.device)
    repo = None
    if args.push_to_hub and main:
        from sd_sparse.hub import create_hub_repo

        repo = create_hub_repo(args.hub_model_id, token=args.hub_token)  # before the training, not after

    set_seed(args.seed)  # the same initial weights on every rank
    prior = CodePrior.from_bottleneck(
        bottleneck, embedding_dim=args.embedding_dim, hidden_dim=args.hidden_dim, context_size=args.context_size
    ).to(accelerator.device)
    fitter = Fitter(prior, args.learning_rate, accelerator, weight_decay=args.adam_weight_decay)
    accelerator.register_for_checkpointing(data.batches)  # the data position: resumed runs see the same batches
    cache, described = prepare_fit_latents(args, data, vae, source, accelerator)
    accelerator.register_for_checkpointing(LatentSource(described))
    accelerator.register_for_checkpointing(CodedBottleneck(bottleneck))
    set_seed(args.seed)  # the same RNG whatever ran before (a cache built or reused); a resume restores it
    load_checkpoint(accelerator, resume_path, first_step)

    train_steps(args, fitter, bottleneck, data, cache, vae, accelerator, first_step)
    data.batches.close()  # stops the loader's workers
    # let the DDP wrapper go while the process group lives (see fit_sd_bottleneck)
    del fitter
    accelerator.free_memory()
    gc.collect()
    prior.eval()
    num_skipped = data.num_skipped(accelerator)  # every rank takes part in the sum
    accelerator.wait_for_everyone()
    if main:
        write_outputs(args, prior, bottleneck, vae, source, data, described, num_skipped, repo, accelerator)
    accelerator.end_training()
    return prior


def write_outputs(args, prior, bottleneck, vae, source, data, described, num_skipped, repo, accelerator) -> None:
    """The main process's end of a run: `prior/`, `bottleneck/` and `vae/` (saved before the evaluation
    starts), the held-out evaluation, `metrics.json`, `results.md`, the push."""
    from sd_sparse.autoencoders import with_bottleneck
    from sd_sparse.pipelines.code_prior import CodePriorPipeline

    out = args.output_dir
    # a CodePriorPipeline folder (model_index.json, vae/, prior/): `CodePriorPipeline.from_pretrained(out)`
    CodePriorPipeline(vae=with_bottleneck(vae, bottleneck), prior=prior).save_pretrained(out)
    bottleneck.save_pretrained(os.path.join(out, "bottleneck"))
    if num_skipped:
        logger.warning("left out %d bad images (unreadable or smaller than --resolution)", num_skipped)
    latents = held_out_latents(vae, held_out_dataset(data, args), args, progress=True)
    if latents is None:
        raise UserError("no held-out image could be read: nothing to evaluate the prior on (the prior is saved).")
    metrics = evaluate_prior(prior, bottleneck, latents, args.encode_batch_size)
    report = {
        "base_model": source,
        "bottleneck": args.bottleneck or "the coded VAE's",
        "resolution": args.resolution,
        "train_images": data.num_train_images // args.repeats if data.num_train_images is not None else None,
        "held_out": data.held_out,
        "steps": args.max_train_steps,
        "train_batch_size": args.train_batch_size,
        "world_size": accelerator.num_processes,
        "latents": described,
        "prior": {k: v for k, v in prior.config.items() if not k.startswith("_")},
        "metrics": metrics,
    }
    if args.skip_bad_images:
        report["skipped_bad_images"] = num_skipped
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    table = results_table(metrics)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    from sd_sparse.hub import prior_model_card, push_training_run

    with open(os.path.join(out, "prior", "README.md"), "w") as f:
        f.write(prior_model_card(prior, source, table))
    print(table)
    if repo is not None:
        url = push_training_run(
            os.path.join(out, "prior"), repo, token=args.hub_token, commit_message="Upload CodePrior"
        )
        print(f"pushed the prior to {url}")
    print(f"Wrote {os.path.abspath(out)}")


def main(argv=None):
    """Parses the flags and trains; a user error (bad images or flags, a model or bottleneck that cannot be
    found or does not fit, a cache of another setup, no Hub token, an unreachable Hub) prints one line and
    exits with status 2."""
    args = parse_args(argv)
    with exit_on_user_error(PROG):
        return train_prior(args)
