"""`make_figures`: the figures of a trained model (atoms, UMAP, singular components, training curves, FLIP maps)
written as PNG files; `sd-sparse figures` (`sd_sparse.figures.cli`) calls it with its flags."""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence

from ..errors import UserError
from ..extras import is_installed

logger = logging.getLogger(__name__)

KINDS = ("atoms", "umap", "components", "curves", "flip")
FILENAMES = {kind: f"{kind}.png" for kind in KINDS}


def load_model(path: str, flag: str = "MODEL"):
    """A `SparseAutoencoder`, or a diffusers VAE (plain or coded), or a bottleneck, from a folder saved with
    `save_pretrained` (its class read from `config.json`; a pipeline's `vae/` too). `ValueError` naming `flag`."""
    from ..loading import load_by_class_name

    return load_by_class_name(path, flag)


def load_images(data: Optional[str], resolution: int, max_images: int):
    """Images `[N, 3, R, R]` in [-1, 1]: the first `max_images` of the folder `data` (default: the shipped
    photographs), their centre squares scaled to `resolution`."""
    import torch
    from PIL import Image

    from ..data import image_files, prepare_image, read_image, sample_photographs

    if data is None:
        items = [(name, Image.fromarray(array)) for name, array in sample_photographs().items()][:max_images]
    else:
        items = [(path, read_image(path)) for path in image_files(data, flag="--data")[:max_images]]
    return torch.stack([prepare_image(image, resolution, name=name) for name, image in items])


# the packages each kind needs (module: the extra that installs it)
_PACKAGES = {
    "atoms": {},
    "umap": {"umap": "plots", "matplotlib": "plots"},
    "components": {"matplotlib": "plots"},
    "curves": {"matplotlib": "plots", "scipy": "plots"},
    "flip": {"matplotlib": "plots"},
}


def _check_arguments(kinds, max_images: int, num_atoms: int, components: int, flip_images: int, data) -> None:
    """`ValueError` naming the flag for an unknown kind, a bad count or a missing `--data` folder."""
    unknown = [k for k in kinds or () if k not in KINDS]
    if unknown:
        raise UserError(f"--kinds: unknown kind {', '.join(map(repr, unknown))} (choose from {', '.join(KINDS)}).")
    for flag, value in (
        ("--max_images", max_images),
        ("--num_atoms", num_atoms),
        ("--components", components),
        ("--flip_images", flip_images),
    ):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}.")
    if data is not None and not os.path.isdir(data):
        raise UserError(f"--data {data} is not a folder.")


def _choose_kinds(model, model_path: str, kinds: Optional[Sequence[str]], resolution: int) -> List[str]:
    """The kinds to make (default: those `model` allows and whose packages are installed); `ValueError`
    naming the flag for a kind asked for that cannot be made."""
    from .atoms import dictionary_atoms
    from .curves import find_metrics_file

    kinds = list(dict.fromkeys(kinds)) if kinds else None
    if resolution < 8 or resolution % 8 or resolution % model.block_size:
        raise UserError(
            f"--resolution {resolution} must be a positive multiple of 8 and of {model.block_size} (the "
            "model's downsampling x its patch size)."
        )
    reasons = {}
    try:
        dictionary_atoms(model.bottleneck)
    except ValueError:
        name = type(model.bottleneck).__name__ if model.bottleneck is not None else "no bottleneck"
        reasons["atoms"] = reasons["umap"] = (
            f"MODEL {model_path} has no dictionary or codebook ({type(model.model).__name__} with {name})"
        )
    try:
        find_metrics_file(model_path)
    except ValueError as err:
        reasons["curves"] = str(err).rstrip(".")
    for kind, packages in _PACKAGES.items():
        missing = [name for name in packages if not is_installed(name)]
        if missing and kind not in reasons:
            extras = sorted({packages[name] for name in missing})
            installs = " ".join(f"'sd_sparse[{extra}]'" for extra in extras)
            reasons[kind] = f"needs {', '.join(missing)}: pip install {installs}"
    if kinds is None:
        for kind, reason in reasons.items():
            logger.warning("figures: skipped %s: %s.", kind, reason)
        chosen = [k for k in KINDS if k not in reasons]
        if not chosen:
            raise UserError("no figure can be made: " + "; ".join(f"{k} {r}" for k, r in reasons.items()) + ".")
        return chosen
    for kind in kinds:
        if kind in reasons:
            raise UserError(f"--kinds {kind}: {reasons[kind]}.")
    return kinds


def _label(bottleneck, owner: str) -> str:
    from ..bottlenecks import VectorQuantizer

    kind = "VQ codebook" if isinstance(bottleneck, VectorQuantizer) else f"{type(bottleneck).__name__} atoms"
    return f"{owner}: {kind}"


def _compare_set(model, compare: str):
    """`(label, vectors [K, D])` of the `--compare` folder's atoms or codebook; `ValueError` naming the flag."""
    from ..bottlenecks import Bottleneck
    from .atoms import dictionary_atoms
    from .latent_model import LatentModel

    other = load_model(compare, "--compare")
    other = other if isinstance(other, Bottleneck) else LatentModel(other).bottleneck
    try:
        vectors = dictionary_atoms(other)
    except ValueError as err:
        raise UserError(f"--compare {compare}: {err}") from None
    dim = model.bottleneck.vector_dim
    if vectors.shape[1] != dim:
        raise UserError(
            f"--compare {compare} codes vectors of {vectors.shape[1]} values, MODEL's of {dim}: they cannot share "
            "an embedding."
        )
    return _label(other, "--compare"), vectors


def _umap_sets(model, latents, compared: Optional[tuple], seed: int):
    """`{label: vectors [K, D]}`: MODEL's atoms and the `--compare` set (default: a k-means codebook of MODEL's
    latent vectors, K = MODEL's atoms, as a VQ initialised from data starts)."""
    import torch

    from ..bottlenecks.patches import patchify
    from ..bottlenecks.vector_quantizer import kmeans
    from .atoms import dictionary_atoms

    bottleneck = model.bottleneck
    sets = {_label(bottleneck, "MODEL"): dictionary_atoms(bottleneck)}
    if compared is not None:
        sets[compared[0]] = compared[1]
    else:
        vectors = patchify(latents.float().cpu(), bottleneck.patch_size)
        generator = torch.Generator().manual_seed(seed)
        codebook = kmeans(vectors, bottleneck.num_atoms, 20, generator=generator)
        sets["k-means codebook of MODEL's latents"] = codebook
    return sets


def make_figures(
    model: str,
    data: Optional[str] = None,
    output_dir: str = "outputs/figures",
    kinds: Optional[Sequence[str]] = None,
    resolution: int = 128,
    max_images: int = 8,
    num_atoms: int = 64,
    components: int = 8,
    flip_images: int = 2,
    compare: Optional[str] = None,
    device: Optional[str] = None,
    seed: int = 0,
) -> List[str]:
    """Writes `output_dir/KIND.png` for each of `kinds` (default: every kind `model` allows) and returns the paths.

    `model`: a folder (a `SparseAutoencoder` from the trainer, or a diffusers VAE, plain or coded); `data`: a
    folder of images (default: the shipped photographs), the first `max_images` scaled to `resolution`² centre
    squares; `num_atoms`: atoms in the atoms grid; `components`: singular components shown; `flip_images`: image
    pairs in the FLIP figure; `compare`: a second model or bottleneck folder for the UMAP (default: a k-means
    codebook of `model`'s latents); `device`: default cuda when available; `seed`: UMAP and k-means. These are
    the `sd-sparse figures` flags, and bad input (a missing folder, an unknown kind, a model without a dictionary
    for `atoms`, no log for `curves`) raises `ValueError` naming the flag, before anything is written.
    """
    import torch

    from .latent_model import LatentModel

    _check_arguments(kinds, max_images, num_atoms, components, flip_images, data)
    loaded = load_model(model)
    from ..bottlenecks import Bottleneck

    if isinstance(loaded, Bottleneck):
        raise UserError(f"MODEL {model} is a bare {type(loaded).__name__}: figures need the autoencoder around it.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    latent_model = LatentModel(loaded.to(device).eval())
    kinds = _choose_kinds(latent_model, model, kinds, resolution)
    compared = _compare_set(latent_model, compare) if compare and "umap" in kinds else None
    torch.manual_seed(seed)
    needs_images = {"atoms", "umap", "components", "flip"} & set(kinds)
    images = latents = None
    if needs_images:
        images = load_images(data, resolution, max_images)
        latents = latent_model.encode(images).float()
    paths = []
    for kind in kinds:
        path = os.path.join(output_dir, FILENAMES[kind])
        if kind == "atoms":
            from .atoms import plot_atoms

            paths.append(plot_atoms(latent_model, path, num_atoms, latents=latents))
        elif kind == "umap":
            from .embedding import plot_embedding

            paths.append(plot_embedding(_umap_sets(latent_model, latents, compared, seed), path, seed=seed))
        elif kind == "components":
            from .singular_components import plot_singular_components

            k = min(components, latents.shape[1])
            paths.append(plot_singular_components(latents.cpu(), path, k, model=latent_model, images=images))
        elif kind == "curves":
            from .curves import plot_curves

            paths.append(plot_curves(model, path))
        elif kind == "flip":
            from .flip_heatmap import plot_flip

            shown = images[:flip_images]
            recon = latent_model.reconstruct(shown).float().cpu()
            coded = "through the bottleneck" if latent_model.bottleneck is not None else "(no bottleneck)"
            title = f"{os.path.basename(os.path.normpath(model))}: reconstructions {coded}, {resolution}px"
            paths.append(plot_flip(shown, recon, path, titles=("image", "reconstruction"), title=title))
    return paths
