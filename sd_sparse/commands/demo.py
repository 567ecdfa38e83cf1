"""`sd-sparse demo` and `sd-sparse demo-patches`: their flags, and the calls into `sd_sparse.demo`."""

from __future__ import annotations

import argparse


def add_demo_parsers(commands) -> None:
    """Adds `demo` and `demo-patches` to `commands` (the `sd-sparse` subparsers)."""
    demo = commands.add_parser("demo", help="fit a dictionary and a VQ on a VAE's latents, run the pipeline")
    demo.add_argument("--model", default=None, help="Stable Diffusion folder or Hub id (default: offline tiny SD)")
    demo.add_argument("--prompt", default="blue sunflower")
    demo.add_argument("--steps", type=int, default=150, help="fitting steps for each bottleneck")
    demo.add_argument("--vq_atoms", type=int, default=4096, help="K of the VQ codebook (log2 K bits per position)")
    demo.add_argument("--atoms", type=int, default=256, help="K, the dictionary's atoms")
    demo.add_argument("--sparsity", type=int, default=4, help="S, atoms per coded patch")
    demo.add_argument("--patch_size", type=int, default=2, help="latent patch coded by the dictionary")
    demo.add_argument(
        "--value_bits", type=int, default=6, help="bits per quantized coefficient (0: unquantized float32)"
    )
    demo.add_argument(
        "--test_images",
        nargs="+",
        default=None,
        metavar="IMAGE",
        help="held-out images to code: image files (centre square scaled to --crop_size) or names of the shipped "
        "photographs (default: the two the reference VAE never saw)",
    )
    demo.add_argument("--crop_size", type=int, default=256, help="side of the held-out centre crops")
    demo.add_argument(
        "--train_crops", type=int, default=48, help="random 128 px training crops whose latents the bottlenecks fit"
    )
    demo.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="torch threads (default: OMP_NUM_THREADS if set, else the cores other processes leave free, at least 1)",
    )
    demo.add_argument("--resolution", type=int, default=None, help="prompt image size (default 64 tiny, 512 real)")
    demo.add_argument("--inference_steps", type=int, default=None)
    demo.add_argument("--output_dir", default="outputs/demo")
    demo.add_argument("--seed", type=int, default=0)

    patches = commands.add_parser("demo-patches", help="dictionary vs VQ on 8x8 photo patches (no VAE)")
    patches.add_argument("--steps", type=int, default=600, help="training steps for each bottleneck")
    patches.add_argument("--atoms", type=int, default=512)
    patches.add_argument("--sparsity", type=int, default=5)
    patches.add_argument("--batch_size", type=int, default=1024)
    patches.add_argument("--test_image", default="astronaut", help="the held-out photograph")
    patches.add_argument("--output_dir", default="outputs/demo-patches")
    patches.add_argument("--seed", type=int, default=0)


def run_demo_command(args: argparse.Namespace) -> None:
    """`sd-sparse demo`: `run_stable_diffusion_demo` with the flags (it prints its own lines)."""
    from ..demo import run_stable_diffusion_demo

    run_stable_diffusion_demo(
        model=args.model,
        prompt=args.prompt,
        steps=args.steps,
        vq_atoms=args.vq_atoms,
        num_atoms=args.atoms,
        sparsity=args.sparsity,
        patch_size=args.patch_size,
        value_bits=args.value_bits or None,
        resolution=args.resolution,
        num_inference_steps=args.inference_steps,
        test_images=args.test_images,
        crop_size=args.crop_size,
        train_crops=args.train_crops,
        output_dir=args.output_dir,
        seed=args.seed,
        num_threads=args.num_threads,
    )


def run_demo_patches_command(args: argparse.Namespace) -> None:
    """`sd-sparse demo-patches`: `run_demo` with the flags (it prints its own table)."""
    from ..demo import run_demo

    run_demo(
        steps=args.steps,
        num_atoms=args.atoms,
        sparsity=args.sparsity,
        batch_size=args.batch_size,
        test_image=args.test_image,
        output_dir=args.output_dir,
        seed=args.seed,
    )
