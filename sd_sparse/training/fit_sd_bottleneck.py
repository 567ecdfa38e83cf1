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

from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from sd_sparse import VectorQuantizer
from sd_sparse.autoencoders import stable_diffusion_dictionary
from sd_sparse.data import build_training_data, check_data_arguments
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
from sd_sparse.training.fit_latents import (  # noqa: F401 (cache_setup, cache_epoch, next_full_batch: also read here)
    LATENT_FLAG_RANGES,
    LatentSource,
    add_latent_cache_arguments,
    cache_epoch,
    cache_setup,
    check_cache_folder,
    held_out_dataset,
    next_full_batch,
    next_latents,
    prepare_fit_latents,
)
from sd_sparse.training.fitting import Fitter, evaluate_on_vae
from sd_sparse.training.frozen_vae import (  # noqa: F401 (resolve_data_defaults: also read here)
    DATA_DEFAULTS,
    add_frozen_vae_data_arguments,
    add_vae_arguments,
    load_vae,
    resolve_data_defaults,
)

logger = logging.getLogger(__name__)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fit_sd_bottleneck.py", description=__doc__, epilog=DATA_DEFAULTS, formatter_class=_HelpFormatter
    )
    add_vae_arguments(parser)
    data = add_frozen_vae_data_arguments(parser)
    data.add_argument("--validation_fraction", dest="validation_split", type=float, action=DeprecatedAlias,
                      help=argparse.SUPPRESS)  # fmt: skip
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
    fitting.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="the VAE's dtype")
    fitting.add_argument("--output_dir", default="sd-bottleneck", help="bottlenecks, metrics and checkpoints")
    fitting.add_argument("--seed", type=int, default=0, help="initial weights, the split, the crops, the draws")
    add_checkpoint_arguments(fitting, "fitting")
    add_latent_cache_arguments(fitting)
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
    **CHECKPOINT_FLAG_RANGES,
    **LATENT_FLAG_RANGES,
    "max_eval_images": ">= 1",
}


def check_arguments(args) -> None:
    """`ValueError` naming the flag, before anything is read or built: every numeric flag's range, then
    the data flags and the cache folder."""
    check_flag_ranges(args, FIT_FLAG_RANGES)
    check_data_arguments(args)
    check_cache_folder(args)


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


def fit_steps(args, fitters, data, cache, vae, accelerator, first_step: int) -> None:
    """Steps `first_step + 1` to `--max_train_steps`: one batch of latents per rank and step (from the
    cache, or this rank's images encoded once), each bottleneck's training step on it, checkpoints."""
    for fitter in fitters.values():
        fitter.train()
    main = accelerator.is_main_process
    with tqdm(initial=first_step, total=args.max_train_steps, disable=not main, desc="fitting") as progress:
        for step in range(first_step + 1, args.max_train_steps + 1):
            latents = next_latents(args, data, cache, vae, accelerator, step)
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
    vae, source, _ = load_vae(args, accelerator)  # a coded VAE: the plain one, its bottleneck left out
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
