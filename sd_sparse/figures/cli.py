"""`sd-sparse figures MODEL`: its flags (`add_figures_arguments`) and their run (`run_figures`), which calls
`sd_sparse.figures.make_figures`."""

from __future__ import annotations

import argparse
from typing import List

# importable from here too, as before they moved to model_figures.py
from .model_figures import FILENAMES, KINDS, load_images, load_model, make_figures  # noqa: F401


def add_figures_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the `figures` flags to `parser` (a subparser of `sd-sparse`, or a parser of its own)."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a folder written by the trainer (a SparseAutoencoder, with logs/ for the curves), or a diffusers "
        "AutoencoderKL / AutoencoderTiny folder, plain or coded (a pipeline's vae/ too)",
    )
    parser.add_argument(
        "--data", default=None, help="a folder of images (default: the photographs shipped with scikit-image/-learn)"
    )
    parser.add_argument(
        "--output_dir", default="outputs/figures", help="folder for KIND.png (default: outputs/figures)"
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=None,
        metavar="KIND",
        help=f"figures to make, of {', '.join(KINDS)} (default: every one MODEL allows)",
    )
    parser.add_argument(
        "--resolution", type=int, default=128, help="side of the images' scaled centre squares (default: 128)"
    )
    parser.add_argument("--max_images", type=int, default=8, help="images read from --data (default: 8)")
    parser.add_argument(
        "--num_atoms", type=int, default=64, help="atoms in the atoms grid, most used first (default: 64)"
    )
    parser.add_argument(
        "--components", type=int, default=8, help="singular components shown, at most the channels (default: 8)"
    )
    parser.add_argument("--flip_images", type=int, default=2, help="image pairs in the FLIP figure (default: 2)")
    parser.add_argument(
        "--compare",
        default=None,
        help="a second model or bottleneck folder whose atoms/codebook join the UMAP (default: a k-means codebook "
        "of MODEL's latent vectors, as a VQ of the same size would start)",
    )
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--seed", type=int, default=0, help="UMAP and k-means seed (default: 0)")
    return parser


def run_figures(args: argparse.Namespace) -> List[str]:
    """Runs `sd-sparse figures` from parsed `args` (`add_figures_arguments`): `make_figures` with the flags;
    returns the written PNG paths."""
    return make_figures(
        model=args.model,
        data=args.data,
        output_dir=args.output_dir,
        kinds=args.kinds,
        resolution=args.resolution,
        max_images=args.max_images,
        num_atoms=args.num_atoms,
        components=args.components,
        flip_images=args.flip_images,
        compare=args.compare,
        device=args.device,
        seed=args.seed,
    )
