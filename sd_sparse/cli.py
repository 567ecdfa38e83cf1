"""The `sd-sparse` command line: `demo`, `demo-patches`, `push`, `pull`."""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from .errors import exit_on_user_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sd-sparse", description="Sparse dictionary bottlenecks for latents.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fit a dictionary and a VQ on a VAE's latents, run the pipeline")
    demo.add_argument("--model", default=None, help="Stable Diffusion folder or Hub id (default: offline tiny SD)")
    demo.add_argument("--prompt", default="blue sunflower")
    demo.add_argument("--steps", type=int, default=300, help="fitting steps for each bottleneck")
    demo.add_argument("--atoms", type=int, default=512, help="K, atoms / codebook vectors")
    demo.add_argument("--sparsity", type=int, default=8, help="S, atoms per coded patch")
    demo.add_argument("--patch-size", type=int, default=4, help="latent patch coded by the dictionary")
    demo.add_argument("--resolution", type=int, default=None, help="image size (default 64 tiny, 512 real)")
    demo.add_argument("--inference-steps", type=int, default=None)
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--seed", type=int, default=0)

    patches = commands.add_parser("demo-patches", help="dictionary vs VQ on 8x8 photo patches (no VAE)")
    patches.add_argument("--steps", type=int, default=600, help="training steps for each bottleneck")
    patches.add_argument("--atoms", type=int, default=512)
    patches.add_argument("--sparsity", type=int, default=5)
    patches.add_argument("--batch-size", type=int, default=1024)
    patches.add_argument("--test-image", default="astronaut", help="the held-out photograph")
    patches.add_argument("--output-dir", default="outputs/demo-patches")
    patches.add_argument("--seed", type=int, default=0)

    push = commands.add_parser("push", help="upload a saved bottleneck or pipeline folder to the Hub")
    push.add_argument("folder", help="a folder written by save_pretrained")
    push.add_argument("repo_id")
    push.add_argument("--base-model", default=None, help="the SD model whose VAE the bottleneck was fitted on")
    push.add_argument("--metrics", default=None, help="a metrics.json from fit_sd_bottleneck.py")
    push.add_argument("--token", default=None)
    push.add_argument("--private", action="store_true")

    pull = commands.add_parser("pull", help="download a bottleneck or pipeline repo from the Hub")
    pull.add_argument("repo_id")
    pull.add_argument("--local-dir", default=None, help="where to put it (default: the Hub cache)")
    pull.add_argument("--revision", default=None)
    pull.add_argument("--token", default=None)
    return parser


def _push(args) -> str:
    """Loads the folder (a bottleneck or a pipeline) and the metrics first, so a bad folder fails
    before the Hub is touched; then checks the token and creates the repo; then uploads."""
    from .hub import create_hub_repo

    if not os.path.isdir(args.folder):
        raise ValueError(f"folder {args.folder} does not exist.")
    private = args.private or None
    if os.path.isfile(os.path.join(args.folder, "model_index.json")):
        from .pipelines import DictionaryLatentPipeline

        pipe = DictionaryLatentPipeline.from_pretrained(args.folder)
        create_hub_repo(args.repo_id, token=args.token, private=private)
        return pipe.push_to_hub(args.repo_id, token=args.token, private=private)
    config_path = os.path.join(args.folder, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{args.folder} holds neither a bottleneck (config.json) nor a pipeline (model_index.json).")
    import sd_sparse

    with open(config_path) as f:
        class_name = json.load(f).get("_class_name")
    cls = getattr(sd_sparse, str(class_name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, sd_sparse.Bottleneck):
        raise ValueError(f"{config_path} names {class_name!r}, which is not an sd_sparse bottleneck.")
    metrics = None
    if args.metrics:
        with open(args.metrics) as f:
            metrics = json.load(f)
        metrics = metrics.get("metrics", {}).get(os.path.basename(os.path.normpath(args.folder)), metrics)
    bottleneck = cls.from_pretrained(args.folder)
    create_hub_repo(args.repo_id, token=args.token, private=private)
    return bottleneck.push_to_hub(
        args.repo_id, token=args.token, private=private, base_model=args.base_model, metrics=metrics
    )


def _pull(args) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(args.repo_id, revision=args.revision, local_dir=args.local_dir, token=args.token)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. A user error (a bad value, a missing folder, no Hub token, an unreachable Hub,
    a repo that does not exist) prints `sd-sparse COMMAND: message` and exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with exit_on_user_error(f"{parser.prog} {args.command}"):
        if args.command == "demo":
            from .demo import run_stable_diffusion_demo

            run_stable_diffusion_demo(
                model=args.model,
                prompt=args.prompt,
                steps=args.steps,
                num_atoms=args.atoms,
                sparsity=args.sparsity,
                patch_size=args.patch_size,
                resolution=args.resolution,
                num_inference_steps=args.inference_steps,
                output_dir=args.output_dir,
                seed=args.seed,
            )
        elif args.command == "demo-patches":
            from .demo import run_demo

            run_demo(
                steps=args.steps,
                num_atoms=args.atoms,
                sparsity=args.sparsity,
                batch_size=args.batch_size,
                test_image=args.test_image,
                output_dir=args.output_dir,
                seed=args.seed,
            )
        elif args.command == "push":
            print(_push(args))
        elif args.command == "pull":
            print(_pull(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
