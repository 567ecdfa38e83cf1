"""`sd-sparse push` and `sd-sparse pull`: a saved bottleneck or pipeline folder to and from the Hub."""

from __future__ import annotations

import argparse
import json
import os

from ..errors import UserError


def add_hub_parsers(commands) -> None:
    """Adds `push` and `pull` to `commands` (the `sd-sparse` subparsers)."""
    push = commands.add_parser("push", help="upload a saved bottleneck or pipeline folder to the Hub")
    push.add_argument("folder", help="a folder written by save_pretrained")
    push.add_argument("repo_id")
    push.add_argument("--base_model", default=None, help="the SD model whose VAE the bottleneck was fitted on")
    push.add_argument("--metrics", default=None, help="a metrics.json from fit_sd_bottleneck.py")
    push.add_argument("--hub_token", "--token", dest="token", default=None, help="a Hugging Face token")
    push.add_argument("--private", action="store_true")

    pull = commands.add_parser("pull", help="download a bottleneck or pipeline repo from the Hub")
    pull.add_argument("repo_id")
    pull.add_argument("--local_dir", default=None, help="where to put it (default: the Hub cache)")
    pull.add_argument("--revision", default=None)
    pull.add_argument("--hub_token", "--token", dest="token", default=None, help="a Hugging Face token")


def run_push(args: argparse.Namespace) -> str:
    """`sd-sparse push`: loads the folder (a bottleneck or a pipeline) and the metrics first, so a bad folder fails
    before the Hub is touched; then checks the token and creates the repo; then uploads."""
    from ..hub import create_hub_repo

    if not os.path.isdir(args.folder):
        raise UserError(f"folder {args.folder} does not exist.")
    private = args.private or None
    if os.path.isfile(os.path.join(args.folder, "model_index.json")):
        from ..pipelines import DictionaryLatentPipeline

        pipe = DictionaryLatentPipeline.from_pretrained(args.folder)
        create_hub_repo(args.repo_id, token=args.token, private=private)
        return pipe.push_to_hub(args.repo_id, token=args.token, private=private)
    config_path = os.path.join(args.folder, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"{args.folder} holds neither a bottleneck (config.json) nor a pipeline (model_index.json).")
    from ..loading import load_by_class_name

    bottleneck = load_by_class_name(args.folder, "folder", kinds=("bottleneck",))
    metrics = None
    if args.metrics:
        with open(args.metrics) as f:
            metrics = json.load(f)
        metrics = metrics.get("metrics", {}).get(os.path.basename(os.path.normpath(args.folder)), metrics)
    create_hub_repo(args.repo_id, token=args.token, private=private)
    return bottleneck.push_to_hub(
        args.repo_id, token=args.token, private=private, base_model=args.base_model, metrics=metrics
    )


def run_pull(args: argparse.Namespace) -> str:
    """`sd-sparse pull`: downloads the repo; returns the local folder."""
    from huggingface_hub import snapshot_download

    return snapshot_download(args.repo_id, revision=args.revision, local_dir=args.local_dir, token=args.token)
