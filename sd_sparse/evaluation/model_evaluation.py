"""`evaluate_model`: a saved autoencoder's reconstructions of a folder of held-out images, scored with
PSNR, SSIM, LPIPS, FLIP and rFID (`sd-sparse evaluate MODEL --data DIR`).

Images stream batch by batch: only sums (and FID's feature moments) are kept, so memory does not grow
with the number of images. PSNR, SSIM, FLIP and LPIPS are `ReconstructionMetrics`' (the numbers
`sd_sparse.evaluation.evaluate` gives on the same images); rFID is torchmetrics'
`FrechetInceptionDistance` between the input images and their reconstructions.

Nothing is downloaded. LPIPS loads through `sd_sparse.losses.load_lpips` (local files only); FID's
Inception network loads only from a local file (`inception_weights`, or `SD_SPARSE_INCEPTION_WEIGHTS`)
and needs the `torch-fidelity` package that torchmetrics builds it from. Without them the metric is
None ("n/a" in the table) and one line says why.

PSNR and SSIM are sd_sparse's own (`sd_sparse.metrics`), not torchmetrics': its
`PeakSignalNoiseRatio` agrees with ours to ~1e-6 dB, and its `StructuralSimilarityIndexMeasure` map
agrees with ours to ~1e-8 on the windows that lie inside the image, but since torchmetrics PR #2721
(2024) it averages the map over the whole image, its border windows computed on reflect-padded
pixels. Ours averages the inside windows only, as Wang et al.'s reference code and scikit-image do
(~1e-2 apart on 128×128 photographs, less on larger images).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import UserError
from ..extras import is_installed
from .reconstruction import ReconstructionMetrics

logger = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 256
INCEPTION_WEIGHTS_ENV = "SD_SPARSE_INCEPTION_WEIGHTS"
LPIPS_WEIGHTS_ENV = "SD_SPARSE_LPIPS_WEIGHTS"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception
METRICS_JSON = "metrics.json"
METRICS_MARKDOWN = "metrics.md"


# -- the model ---------------------------------------------------------------------------------------------
def load_model_for_evaluation(model_path: str, bottleneck_path: Optional[str] = None) -> nn.Module:
    """The autoencoder saved in `model_path`, in eval mode: a `SparseAutoencoder` (what the trainer saves),
    or a diffusers `AutoencoderKL`/`AutoencoderTiny` folder (or a pipeline's `vae/`), plain or coded; with
    `bottleneck_path` (a bottleneck folder) the VAE gets that bottleneck (`sd_sparse.with_bottleneck`).
    Folders only: nothing is looked up on the Hub. Errors name the argument (`MODEL`, `--bottleneck`)."""
    from ..autoencoders.loading import load_bottleneck
    from ..loading import load_by_class_name

    if not os.path.isdir(model_path):
        raise UserError(f"MODEL {model_path} is not a folder.")
    if bottleneck_path is not None and not os.path.isdir(bottleneck_path):
        raise UserError(f"--bottleneck {bottleneck_path} is not a folder.")
    hints = {"bottleneck": "a bottleneck: pass the VAE it codes as MODEL and this folder as --bottleneck."}
    model = load_by_class_name(model_path, "MODEL", kinds=("sparse_autoencoder", "vae"), hints=hints).eval()
    if bottleneck_path is None:
        return model
    from ..models import SparseAutoencoder

    if isinstance(model, SparseAutoencoder):
        raise UserError(
            f"--bottleneck codes a diffusers VAE's latents; MODEL {model_path} is a SparseAutoencoder with "
            "its own bottleneck."
        )
    from ..autoencoders import with_bottleneck

    return with_bottleneck(model, load_bottleneck(bottleneck_path)).eval()


def resolution_multiple(model: nn.Module) -> Tuple[int, str]:
    """(the multiple every image side must be, how it comes about): the model's downsampling × its
    bottleneck's patch size, and a multiple of 8 (what `ImageTransform` crops)."""
    from ..autoencoders.identity import downsampling_factor

    factor = getattr(model, "downsampling_factor", None) or downsampling_factor(model)
    bottleneck = getattr(model, "bottleneck", None)
    patch = tuple(bottleneck.patch_size) if bottleneck is not None else (1, 1)
    multiple = math.lcm(factor * patch[0], factor * patch[1], 8)
    reason = f"the model downsamples by {factor}"
    if bottleneck is not None:
        reason += f" and its bottleneck codes {patch[0]}x{patch[1]} latent patches"
    return multiple, reason + "; image crops are multiples of 8"


def default_resolution(model: nn.Module) -> int:
    """The model's `sample_size` (diffusers VAEs), else `DEFAULT_RESOLUTION` (256)."""
    size = model.config.get("sample_size") if hasattr(model.config, "get") else None
    if isinstance(size, (list, tuple)) and size:
        size = min(size)
    return int(size) if isinstance(size, int) and size > 0 else DEFAULT_RESOLUTION


# -- the metrics that need weights ------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silences one logger's warnings (we say it ourselves, in one line)."""
    quieted = logging.getLogger(logger_name)
    level = quieted.level
    quieted.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quieted.setLevel(level)


def load_lpips_for_evaluation(perceptual_weights: Optional[str] = None) -> Tuple[Optional[nn.Module], Optional[str]]:
    """(LPIPS, None), or (None, why it is n/a): `load_lpips` on `perceptual_weights` (then
    `SD_SPARSE_LPIPS_WEIGHTS`, torch's hub cache and the `lpips` package). An explicit folder that does
    not hold the weights is a `ValueError` naming `--perceptual_weights`."""
    from ..losses.perceptual import load_lpips

    if perceptual_weights is not None:
        try:
            return load_lpips(perceptual_weights), None
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"--perceptual_weights: {err}") from None
    with _quiet("sd_sparse.losses.perceptual"):
        lpips = load_lpips()
    if lpips is not None:
        return lpips, None
    env = os.environ.get(LPIPS_WEIGHTS_ENV)
    where = f"{LPIPS_WEIGHTS_ENV}={env} does not hold them" if env else "none in torch's hub cache or the lpips package"
    return None, (
        f"LPIPS: n/a, no local LPIPS weights ({where}); pass --perceptual_weights DIR (a folder saved by "
        "LPIPS.save_pretrained, or vgg16-*.pth + vgg.pth). Nothing is downloaded."
    )


def load_fid_for_evaluation(
    inception_weights: Optional[str] = None, feature_extractor: Optional[nn.Module] = None
) -> Tuple[Optional[nn.Module], Optional[str]]:
    """(a torchmetrics `FrechetInceptionDistance` fed uint8 images `[B, 3, H, W]`, None), or (None, why
    rFID is n/a).

    The Inception network (2048 pool features, torch-fidelity's port of the TF FID network) loads only
    from `inception_weights` or the file in `SD_SPARSE_INCEPTION_WEIGHTS`, never from the network;
    torchmetrics builds it with the `torch-fidelity` package. `feature_extractor`: any module mapping
    uint8 images to features `[B, F]`, used instead (for tests). An explicit `inception_weights` that is
    not a file is a `ValueError` naming `--inception_weights`.
    """
    if inception_weights is not None and not os.path.isfile(inception_weights):
        raise UserError(f"--inception_weights {inception_weights} is not a file.")
    if not is_installed("torchmetrics"):
        return None, "rFID: n/a, it needs torchmetrics (pip install 'sd_sparse[metrics]')."
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature_extractor is not None:
        return FrechetInceptionDistance(feature=feature_extractor, normalize=False), None
    path = inception_weights or os.environ.get(INCEPTION_WEIGHTS_ENV)
    if not path:
        return None, (
            f"rFID: n/a, no local Inception weights; pass --inception_weights FILE (or set {INCEPTION_WEIGHTS_ENV}) "
            f"to torch-fidelity's {INCEPTION_WEIGHTS_FILE}. Nothing is downloaded."
        )
    if not os.path.isfile(path):
        return None, f"rFID: n/a, {INCEPTION_WEIGHTS_ENV}={path} is not a file. Nothing is downloaded."
    if not is_installed("torch_fidelity"):
        return None, (
            "rFID: n/a, torchmetrics builds its Inception network with the torch-fidelity package, which is not "
            "installed (pip install torch-fidelity)."
        )
    try:  # with a weights path torch-fidelity reads the file and never calls its downloader
        return FrechetInceptionDistance(feature=2048, normalize=False, feature_extractor_weights_path=path), None
    except (RuntimeError, OSError, KeyError, ValueError) as err:
        raise UserError(f"Inception weights {path}: not the FID Inception network's ({str(err)[:200]}).") from None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] → uint8 in [0, 255] (rounded), what FID's Inception network reads."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# -- the evaluation ---------------------------------------------------------------------------------------
def evaluate_model(
    model: str,
    data_dir: str,
    *,
    bottleneck: Optional[str] = None,
    resolution: Optional[int] = None,
    batch_size: int = 8,
    max_images: Optional[int] = None,
    perceptual_weights: Optional[str] = None,
    inception_weights: Optional[str] = None,
    output_dir: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
    num_workers: int = 0,
    fid_feature_extractor: Optional[nn.Module] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Scores the reconstructions of the images in `data_dir` by the model saved in `model`.

    Args:
        model: a folder: a `SparseAutoencoder` (`SparseAutoencoder.save_pretrained`, what the trainers
            write), or a diffusers `AutoencoderKL`/`AutoencoderTiny` (or a pipeline with a `vae/`), plain or
            coded (`AutoencoderKLWithBottleneck`, ...).
        data_dir: a folder of held-out images (searched recursively, sorted by path); each is scored on its
            centre square scaled (bicubic, never up) to `resolution` (`ImageTransform`, as in training).
        bottleneck: a bottleneck folder (`save_pretrained`) put in the VAE's latent path.
        resolution: the side of the scored crops; a multiple of the model's downsampling × its
            bottleneck's patch size (and of 8). Default: the VAE's `sample_size`, else 256.
        batch_size, max_images: images per forward pass; score only the first `max_images`.
        perceptual_weights: a folder with LPIPS weights (see `sd_sparse.losses.load_lpips`).
        inception_weights: torch-fidelity's FID Inception weights file (default: `SD_SPARSE_INCEPTION_WEIGHTS`).
        output_dir: where `metrics.json` and `metrics.md` go (default: `<model>/evaluation`).
        device: where the model runs (default: CUDA when available).
        num_workers: image-decoding processes (`torch.utils.data.DataLoader`).
        fid_feature_extractor: a module mapping uint8 images `[B, 3, H, W]` to features `[B, F]`, used by
            rFID instead of Inception (for tests).
        progress: show a tqdm progress bar.

    Returns:
        a dict (also written as `metrics.json`): `psnr` (dB, mean over images, each capped at 200), `ssim`,
        `lpips`, `flip` (means over images), `rfid` (FID between the inputs and their reconstructions;
        noisy below a few thousand images), None for a metric that is n/a, with the reason in
        `unavailable`; `bits_per_position` of the bottleneck's codes and its code `perplexity`,
        `num_codes`, `dead_codes` (when the model reports usage); `images`, `resolution`, `model`,
        `model_class`, `bottleneck`, `data`, `output_dir`.
    """
    from tqdm.auto import tqdm

    from ..data import ImageDataset, ImageSource, ImageTransform

    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}.")
    if max_images is not None and max_images < 1:
        raise UserError(f"--max_images must be >= 1, got {max_images}.")
    if num_workers < 0:
        raise UserError(f"--num_workers must be >= 0, got {num_workers}.")
    if perceptual_weights is not None and not os.path.isdir(perceptual_weights):
        raise UserError(f"--perceptual_weights {perceptual_weights} is not a folder.")
    if inception_weights is not None and not os.path.isfile(inception_weights):
        raise UserError(f"--inception_weights {inception_weights} is not a file.")
    source = ImageSource.from_folder(data_dir, flag="--data")
    if max_images is not None and max_images < len(source):
        source = source.subset(range(max_images))
    autoencoder = load_model_for_evaluation(model, bottleneck)
    multiple, reason = resolution_multiple(autoencoder)
    if resolution is None:
        resolution = default_resolution(autoencoder)
    if resolution < multiple or resolution % multiple:
        raise UserError(f"--resolution {resolution} must be a multiple of {multiple} ({reason}).")
    lpips, lpips_note = load_lpips_for_evaluation(perceptual_weights)
    fid, fid_note = load_fid_for_evaluation(inception_weights, fid_feature_extractor)
    if fid is not None and len(source) < 2:
        fid, fid_note = None, f"rFID: n/a, it needs at least 2 images, --data {data_dir} gives {len(source)}."
    with_flip = is_installed("flip_evaluator")  # a core dependency: n/a only in a broken install
    flip_note = None if with_flip else "FLIP: n/a, it needs flip-evaluator (pip install flip-evaluator)."
    unavailable = {}
    for name, note in (("lpips", lpips_note), ("flip", flip_note), ("rfid", fid_note)):
        if note is not None:
            unavailable[name] = note
            logger.warning("%s", note)

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autoencoder.to(device)
    if lpips is not None:
        lpips.to(device)
    if fid is not None:
        fid.to(device)
    scores = ReconstructionMetrics(autoencoder, with_flip=with_flip, with_ssim=True, lpips=lpips)
    transform = ImageTransform(resolution, resize_resolution=resolution, center_crop=True)
    loader = torch.utils.data.DataLoader(
        ImageDataset(source, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    with tqdm(total=len(source), unit="img", desc="evaluate", disable=not progress) as bar:
        for images in loader:
            reconstructions = scores.update(images, return_reconstructions=True)
            if fid is not None:
                fid.update(to_uint8(images).to(device), real=True)
                fid.update(to_uint8(reconstructions).to(device), real=False)
            bar.update(images.shape[0])
    computed = scores.compute()
    metrics: Dict[str, Any] = {
        "model": model,
        "model_class": type(autoencoder).__name__,
        "bottleneck": bottleneck,
        "data": data_dir,
        "images": computed["images"],
        "resolution": resolution,
        "psnr": computed["image_psnr"],
        "ssim": computed["ssim"],
        "lpips": computed["lpips"],
        "flip": computed["flip"],
        "rfid": float(fid.compute()) if fid is not None else None,
        "bits_per_position": computed["bits_per_position"],
        "perplexity": computed["perplexity"],
        "num_codes": computed["num_codes"],
        "dead_codes": computed["dead_codes"],
        "unavailable": unavailable,
    }
    output_dir = output_dir or os.path.join(model, "evaluation")
    metrics["output_dir"] = output_dir
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, METRICS_JSON), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    with open(os.path.join(output_dir, METRICS_MARKDOWN), "w") as f:
        f.write(metrics_markdown(metrics))
    return metrics


# -- the table --------------------------------------------------------------------------------------------
_COLUMNS = (
    ("images", "images", "{:d}"),
    ("resolution", "resolution", "{:d}"),
    ("psnr", "PSNR (dB) ↑", "{:.2f}"),
    ("ssim", "SSIM ↑", "{:.4f}"),
    ("lpips", "LPIPS ↓", "{:.4f}"),
    ("flip", "FLIP ↓", "{:.4f}"),
    ("rfid", "rFID ↓", "{:.2f}"),
    ("bits_per_position", "bits / latent position", "{:.1f}"),
)


def metrics_markdown(metrics: Dict[str, Any]) -> str:
    """`evaluate_model`'s dict → a markdown header line, a one-row table ("n/a" for None), and why
    each n/a metric is n/a."""
    model = metrics["model"] + (f" + {metrics['bottleneck']}" if metrics.get("bottleneck") else "")
    lines: List[str] = [
        f"Reconstructions of `{metrics['data']}` by `{model}` ({metrics['model_class']})",
        "",
        "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |",
        "|" + "|".join("---:" for _ in _COLUMNS) + "|",
        "| "
        + " | ".join("n/a" if metrics.get(key) is None else fmt.format(metrics[key]) for key, _, fmt in _COLUMNS)
        + " |",
    ]
    if metrics.get("unavailable"):
        lines.append("")
        lines += [f"- {note}" for note in metrics["unavailable"].values()]
    return "\n".join(lines) + "\n"
