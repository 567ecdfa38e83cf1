"""The `sd-sparse` command line: `demo`, `demo-patches`, `compress`, `decompress`, `evaluate`, `push`, `pull`,
`figures`. Each job's flags and run live in `sd_sparse.commands` (figures: `sd_sparse.figures.cli`); this module
assembles them and runs one."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .commands.compress import (  # noqa: F401 (importable from here, as before)
    DEFAULT_MAX_PIXELS,
    add_compress_parsers,
    check_image_size,
    encode_memory_bytes,
    image_paths,
    run_compress,
    run_decompress,
)
from .commands.demo import add_demo_parsers, run_demo_command, run_demo_patches_command
from .commands.evaluate import add_evaluate_parser, run_evaluate
from .commands.flags import SnakeCaseArgumentParser, snake_case_flags
from .commands.hub import add_hub_parsers, run_pull, run_push
from .errors import exit_on_user_error

__all__ = ["SnakeCaseArgumentParser", "build_parser", "main", "snake_case_flags"]


def build_parser() -> argparse.ArgumentParser:
    parser = SnakeCaseArgumentParser(prog="sd-sparse", description="Sparse dictionary bottlenecks for latents.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_demo_parsers(commands)  # demo, demo-patches
    add_compress_parsers(commands)  # compress, decompress
    add_evaluate_parser(commands)
    add_hub_parsers(commands)  # push, pull

    from .figures.cli import add_figures_arguments

    add_figures_arguments(
        commands.add_parser("figures", help="atoms, UMAP, singular components, training curves, FLIP maps (PNG)")
    )
    return snake_case_flags(parser)  # one flag style: --snake_case, the dashed spelling a deprecated alias


def run_figures_command(args: argparse.Namespace) -> str:
    """`sd-sparse figures`: writes the figures; returns the line to print."""
    from .figures.cli import run_figures

    paths = run_figures(args)
    return f"wrote {len(paths)} figure(s) to {args.output_dir}: {', '.join(os.path.basename(p) for p in paths)}"


#: what runs each command: a function of the parsed flags returning the text to print (None: it printed its own)
COMMANDS = {
    "demo": run_demo_command,
    "demo-patches": run_demo_patches_command,
    "compress": run_compress,
    "decompress": run_decompress,
    "evaluate": run_evaluate,
    "push": run_push,
    "pull": run_pull,
    "figures": run_figures_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. A user error (a bad value, a missing folder, no Hub token, an unreachable Hub,
    a repo that does not exist) prints `sd-sparse COMMAND: message` and exits with status 2."""
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}"
    with warnings.catch_warnings(), exit_on_user_error(prog):
        # a warning is one line `sd-sparse COMMAND: warning: message` (no source line)
        warnings.showwarning = lambda message, category, *_, **__: print(
            f"{prog}: warning: {message}", file=sys.stderr, flush=True
        )
        text = COMMANDS[args.command](args)
        if text is not None:
            print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
