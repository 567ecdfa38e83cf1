"""Fitting a bottleneck on a frozen VAE's latents, and measuring what it costs."""

from __future__ import annotations

import math
from typing import Dict, Iterable

import torch
from tqdm.auto import tqdm

from ..bottlenecks import Bottleneck
from ..metrics import bits_per_position, flip, latent_psnr, perplexity, psnr
from .autoencoder import decode_latents, encode_latents


@torch.no_grad()
def collect_latents(vae, images: torch.Tensor, batch_size: int = 8, progress: bool = False) -> torch.Tensor:
    """Diffusion-space latents `[N, C, H/8, W/8]` (float32, on the VAE's device) of images `[N, 3, H, W]`."""
    if images.shape[0] == 0:
        raise ValueError("`images` is empty: no latents to fit on.")
    chunks = []
    for start in tqdm(range(0, images.shape[0], batch_size), desc="encoding", disable=not progress, leave=False):
        chunks.append(encode_latents(vae, images[start : start + batch_size]).float())
    return torch.cat(chunks)


def fit_bottleneck(
    bottleneck: Bottleneck,
    latents: torch.Tensor,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    accelerator=None,
    progress: bool = False,
    desc: str = "fitting",
) -> Bottleneck:
    """Trains `bottleneck` on latents `[N, C, h, w]` for `steps` minibatches (the VAE stays frozen).

    Parameters with gradients (a gradient-mode dictionary, a non-EMA codebook, LISTA) are trained
    with Adam; EMA codebooks and BCD dictionaries update themselves in every training forward. With
    an `accelerate.Accelerator`, the bottleneck is prepared for distributed training (each process
    should pass its own shard of latents). Returns the (unwrapped) bottleneck in eval mode.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    if latents.shape[0] == 0:
        raise ValueError("`latents` is empty.")
    trainable = [p for p in bottleneck.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=learning_rate) if trainable else None
    model = bottleneck
    if accelerator is not None and optimizer is not None:
        model, optimizer = accelerator.prepare(bottleneck, optimizer)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        picks = torch.randint(0, latents.shape[0], (min(batch_size, latents.shape[0]),), generator=generator)
        out = model(latents[picks.to(latents.device)])
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            if accelerator is not None:
                accelerator.backward(out.loss)
            else:
                out.loss.backward()
            optimizer.step()
    bottleneck.eval()
    return bottleneck


@torch.no_grad()
def evaluate_bottleneck(
    vae, bottleneck: Bottleneck, latents: torch.Tensor, batch_size: int = 8, with_flip: bool = True
) -> Dict[str, float | None]:
    """Held-out cost of the bottleneck, measured against the plain VAE reconstruction.

    Returns latent PSNR (dB, mean over images), image PSNR and FLIP (coded decode vs plain decode),
    usage perplexity over all codes, dead codes, and bits per latent position.
    """
    was_training = bottleneck.training
    bottleneck.eval()
    latent_scores, image_scores, flip_scores = [], [], []
    usage = None
    for start in range(0, latents.shape[0], batch_size):
        reference = latents[start : start + batch_size]
        out = bottleneck(reference.to(bottleneck.device))
        coded = out.latents.to(reference.dtype)
        usage = out.usage if usage is None else usage + out.usage
        latent_scores.append(latent_psnr(reference, coded))
        plain = decode_latents(vae, reference).clamp(-1, 1).float()
        through = decode_latents(vae, coded).clamp(-1, 1).float()
        image_scores.append(psnr((plain + 1) / 2, (through + 1) / 2, dim=(1, 2, 3)))
        if with_flip:
            flip_scores += [flip(p, t)[0] for p, t in zip(plain, through)]
    bottleneck.train(was_training)

    def finite_mean(values):
        values = torch.cat(values).clamp(max=200.0)  # an exact match has infinite PSNR
        return float(values.mean())

    return {
        "latent_psnr": finite_mean(latent_scores),
        "image_psnr": finite_mean(image_scores),
        "flip": float(sum(flip_scores) / len(flip_scores)) if flip_scores else None,
        "perplexity": float(perplexity(usage)),
        "num_codes": int(usage.numel()),
        "dead_codes": int((usage == 0).sum()),
        "bits_per_position": bits_per_position(bottleneck),
        "images": int(latents.shape[0]),
    }


def load_images(paths: Iterable[str], resolution: int) -> torch.Tensor:
    """Images `[N, 3, R, R]` in [-1, 1]: each file centre-cropped to a square and resized to `resolution`.

    Raises a clear `ValueError` for an unreadable file or one smaller than `resolution`.
    """
    from PIL import Image, UnidentifiedImageError

    tensors = []
    for path in paths:
        try:
            image = Image.open(path).convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from None
        tensors.append(prepare_image(image, resolution, name=str(path)))
    if not tensors:
        raise ValueError("no images found.")
    return torch.stack(tensors)


def prepare_image(image, resolution: int, name: str = "image") -> torch.Tensor:
    """A PIL image → `[3, R, R]` in [-1, 1] (centre square crop, bicubic resize)."""
    import numpy as np
    from PIL import Image

    if resolution < 8 or resolution % 8:
        raise ValueError(f"`resolution` must be a multiple of 8 (the VAE's downsampling), got {resolution}.")
    w, h = image.size
    if min(w, h) < resolution:
        raise ValueError(f"{name} is {w}x{h}, smaller than --resolution {resolution}.")
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = (
        image.convert("RGB").crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.BICUBIC)
    )
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1


def split_images(num_images: int, validation_fraction: float, seed: int = 0):
    """(train indices, validation indices): a split by image, at least one image on each side."""
    if num_images < 2:
        raise ValueError(f"need at least 2 images to hold some out, got {num_images}.")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"`validation_fraction` must be in (0, 1), got {validation_fraction}.")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed)).tolist()
    held = min(max(1, math.ceil(num_images * validation_fraction)), num_images - 1)
    return sorted(order[held:]), sorted(order[:held])
