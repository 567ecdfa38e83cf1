"""Checkpoints of the training programs (the trainer and the fit program): Accelerate's saved state in
`<output_dir>/checkpoint-<step>`, written atomically, at most `--checkpoints_total_limit` kept, and resumed
exactly from `--resume_from_checkpoint <folder>|latest`.

    check_resume_folder(args)                        # before anything is read: a missing folder is an error
    path, first_step = resume_point(args)            # (None, 0) for a fresh run
    load_checkpoint(accelerator, path, first_step)   # after every stateful object is registered
    for step in range(first_step + 1, args.max_train_steps + 1):
        ...
        save_checkpoint_if_due(accelerator, args, step)
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import List, Optional, Tuple

from ..errors import UserError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"


def _step_of(name: str) -> Optional[int]:
    """The step of a `checkpoint-<step>` folder name, None for any other name."""
    digits = name[len(CHECKPOINT_PREFIX) :]
    return int(digits) if name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


def list_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """[(step, folder)] of the complete checkpoints in `output_dir`, oldest first (`.tmp` folders left out)."""
    if not os.path.isdir(output_dir):
        return []
    steps = ((_step_of(name), name) for name in os.listdir(output_dir))
    return sorted((step, os.path.join(output_dir, name)) for step, name in steps if step is not None)


def resume_point(args) -> Tuple[Optional[str], int]:
    """(checkpoint folder or None, its step) of `--resume_from_checkpoint`, checked before anything runs.

    Resuming at or past `--max_train_steps` is an error: there is nothing to train, and a run that went
    on would rewrite the saved model and its card without the metrics of the steps it never ran.
    """
    path = args.resume_from_checkpoint
    if not path:
        return None, 0
    if path == "latest":
        found = list_checkpoints(args.output_dir)
        if not found:
            logger.info("no checkpoint in %s: starting from scratch", args.output_dir)
            return None, 0
        path = found[-1][1]
    if not os.path.isdir(path):
        raise UserError(f"--resume_from_checkpoint {path} does not exist.")
    step = _step_of(os.path.basename(os.path.normpath(path)))
    if step is None:
        raise UserError(f"--resume_from_checkpoint {path} is not a {CHECKPOINT_PREFIX}<step> folder.")
    if args.max_train_steps is not None and step >= args.max_train_steps:
        raise UserError(
            f"--resume_from_checkpoint {path} is at step {step} and --max_train_steps is {args.max_train_steps}: "
            f"nothing to train, nothing written. Pass --max_train_steps above {step} to train on."
        )
    return path, step


def check_resume_folder(args) -> None:
    """A named `--resume_from_checkpoint` folder that is missing (or not a checkpoint) stops the run before the
    images are read; 'latest' is looked up later (`resume_point`)."""
    if args.resume_from_checkpoint and args.resume_from_checkpoint != "latest":
        resume_point(args)


def load_checkpoint(accelerator, path: Optional[str], step: int) -> None:
    """`accelerator.load_state(path)` (nothing for a fresh run, `path` None): the models, optimizers,
    schedulers, RNGs and every object registered with `register_for_checkpointing`."""
    if path is not None:
        accelerator.load_state(path)
        logger.info("resumed from %s at step %d", path, step)


def save_checkpoint(accelerator, output_dir: str, step: int, total_limit: Optional[int]) -> str:
    """`accelerator.save_state` into a temporary folder, renamed into place once complete; then only the
    newest `total_limit` checkpoints are kept (None: all). Every rank calls it."""
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
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_checkpoint_if_due(accelerator, args, step: int) -> None:
    """`save_checkpoint` every `--checkpointing_steps` steps and at the last step (`--max_train_steps`)."""
    if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
        save_checkpoint(accelerator, args.output_dir, step, args.checkpoints_total_limit)
