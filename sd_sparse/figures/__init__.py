"""Figures of a trained model, PNG files made with matplotlib (the `plots` extra) or PIL grids:

- `atoms`: the dictionary's atoms (or a VQ codebook) decoded to image patches, most used first;
- `embedding`: a UMAP of a dictionary's atoms and a codebook's vectors in one scatter;
- `singular_components`: the top singular components of a batch of latents, projected and decoded;
- `curves`: the trainer's logged scalars (`logs/metrics.jsonl`), raw and Savitzky–Golay smoothed;
- `flip_heatmap`: FLIP error maps with a colour bar, next to the images they compare;
- `model_figures`: `make_figures`, every figure of a trained model at once;
- `cli`: `sd-sparse figures MODEL`, which calls `make_figures`.

Names load on first use: importing this package imports neither torch nor matplotlib.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_dir, lazy_getattr

_import_structure = {
    "atoms": [
        "DecodedAtoms",
        "atom_latents",
        "atom_usage",
        "atoms_grid",
        "decode_atoms",
        "dictionary_atoms",
        "plot_atoms",
    ],
    "cli": ["add_figures_arguments", "run_figures"],
    "curves": ["curves_figure", "plot_curves", "read_metrics", "savgol_window", "smooth"],
    "embedding": ["embed_vectors", "embedding_figure", "plot_embedding"],
    "flip_heatmap": ["flip_error_map", "flip_figure", "plot_flip"],
    "latent_model": ["LatentModel"],
    "model_figures": ["KINDS", "make_figures"],
    "singular_components": [
        "SingularComponents",
        "component_latents",
        "components_grid",
        "latent_svd",
        "plot_singular_components",
        "project",
    ],
}

__all__ = [
    "DecodedAtoms",
    "KINDS",
    "LatentModel",
    "SingularComponents",
    "add_figures_arguments",
    "atom_latents",
    "atom_usage",
    "atoms_grid",
    "component_latents",
    "components_grid",
    "curves_figure",
    "decode_atoms",
    "dictionary_atoms",
    "embed_vectors",
    "embedding_figure",
    "flip_error_map",
    "flip_figure",
    "latent_svd",
    "make_figures",
    "plot_atoms",
    "plot_curves",
    "plot_embedding",
    "plot_flip",
    "plot_singular_components",
    "project",
    "read_metrics",
    "run_figures",
    "savgol_window",
    "smooth",
]

if TYPE_CHECKING:
    from .atoms import (
        DecodedAtoms,
        atom_latents,
        atom_usage,
        atoms_grid,
        decode_atoms,
        dictionary_atoms,
        plot_atoms,
    )
    from .cli import add_figures_arguments, run_figures
    from .curves import curves_figure, plot_curves, read_metrics, savgol_window, smooth
    from .embedding import embed_vectors, embedding_figure, plot_embedding
    from .flip_heatmap import flip_error_map, flip_figure, plot_flip
    from .latent_model import LatentModel
    from .model_figures import KINDS, make_figures
    from .singular_components import (
        SingularComponents,
        component_latents,
        components_grid,
        latent_svd,
        plot_singular_components,
        project,
    )

__getattr__ = lazy_getattr(__name__, _import_structure)
__dir__ = lazy_dir(__name__, _import_structure)
