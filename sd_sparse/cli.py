"""The `sd-sparse` command line."""

from __future__ import annotations

import argparse
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sd-sparse", description="Sparse dictionary bottlenecks for latents.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="learn a dictionary and a VQ codebook on shipped photographs")
    demo.add_argument("--steps", type=int, default=600, help="training steps for each bottleneck")
    demo.add_argument("--atoms", type=int, default=512, help="K, atoms / codebook vectors")
    demo.add_argument("--sparsity", type=int, default=5, help="S, atoms per patch for the dictionary")
    demo.add_argument("--batch-size", type=int, default=1024, help="patches per step")
    demo.add_argument("--test-image", default="astronaut", help="the held-out photograph")
    demo.add_argument("--output-dir", default="outputs/demo", help="where the PNG and the table go")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        try:
            run_demo(
                steps=args.steps,
                num_atoms=args.atoms,
                sparsity=args.sparsity,
                batch_size=args.batch_size,
                test_image=args.test_image,
                output_dir=args.output_dir,
                seed=args.seed,
            )
        except ValueError as err:
            raise SystemExit(f"sd-sparse demo: {err}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
