"""Which VAE latents came from: a VAE's fingerprint and spatial factor, what codes files record.

`vae_identity(vae)` is the `sd_sparse.codec.VAEIdentity` the codes container records (the codec cannot
import this module; `sd_sparse/__init__.py` registers `vae_identity` with it, see
`sd_sparse/codec/vae_identity.py`). `downsampling_factor(vae)` is the one place that tells a diffusers VAE's
spatial factor, for every class `families.py` lists.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional

import torch

from ..codec.vae_identity import VAEIdentity
from ..errors import UserError
from .families import family_of

__all__ = ["downsampling_factor", "vae_fingerprint", "vae_identity"]

# config keys listing one entry per resolution level of the encoder (all but the last level halve the side)
_LEVEL_KEYS = ("block_out_channels", "encoder_block_out_channels", "ch_mult")


def _plain_class(vae) -> type:
    """The diffusers class of a plain or coded VAE."""
    return getattr(vae, "_vae_class", None) or type(vae)


def vae_fingerprint(vae) -> str:
    """16 hex digits identifying a diffusers VAE: class, config and the first 4096 values of every weight,
    rounded to float16 (so float32 and float16 copies of one checkpoint agree; a bfloat16 copy, which
    rounds differently, counts as another VAE). A coded VAE and its plain VAE share a fingerprint: the
    bottleneck is left out (the file names it separately)."""
    config = {
        k: v
        for k, v in dict(vae.config).items()
        if not k.startswith("_") and k not in ("bottleneck_class", "bottleneck_config")
    }
    # JSON: a config built in code (tuples) and the same config read from a file (lists) agree
    digest = hashlib.sha256(
        json.dumps({"class": _plain_class(vae).__name__, "config": config}, sort_keys=True, default=str).encode()
    )
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith("bottleneck.") or not tensor.is_floating_point() or tensor.is_meta:
            continue
        sample = tensor.detach().reshape(-1)[:4096].to("cpu", torch.float16)
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _find_downsampling_factor(vae) -> Optional[int]:
    config = getattr(vae, "config", None) or {}
    # 1. what the VAE says: diffusers' VAEs set `spatial_compression_ratio` (an attribute or a config entry)
    ratio = vars(vae).get("spatial_compression_ratio") or config.get("spatial_compression_ratio", None)
    if _positive_int(ratio):
        return ratio
    # 2. a family whose factor is a config entry of another name (RAE: `patch_size`)
    key = family_of(vae).factor_key
    if key is not None and _positive_int(config.get(key, None)):
        return config[key]
    # 3. the encoder's levels: VidTok lists the downsampling ones, the others halve on all but the last
    spatial_ds = config.get("spatial_ds", None)
    if isinstance(spatial_ds, (list, tuple)):
        return 2 ** len(spatial_ds)
    for key in _LEVEL_KEYS:
        levels = config.get(key, None)
        if levels:
            return 2 ** (len(levels) - 1)
    return None


def downsampling_factor(vae) -> int:
    """Image side / latent side of a diffusers VAE, plain or coded (8 for Stable Diffusion's).

    Read, in this order, from the VAE's own `spatial_compression_ratio` (attribute, then config), its family's
    `factor_key` (`families.py`), then its encoder's levels (`block_out_channels`, `encoder_block_out_channels`
    or `ch_mult`: `2^(levels − 1)`; VidTok's `spatial_ds`: `2^len`). `ValueError` naming the class when none
    of these tells it.
    """
    factor = _find_downsampling_factor(vae)
    if factor is None:
        raise UserError(
            f"cannot tell the downsampling factor of {_plain_class(vae).__name__}: it has no "
            "`spatial_compression_ratio` and its config lists no encoder levels; give its family a `factor_key` "
            "in sd_sparse.autoencoders.families.VAE_FAMILIES."
        )
    return factor


def vae_identity(vae) -> VAEIdentity:
    """What a codes file records of `vae` (a plain or coded diffusers VAE): its fingerprint and spatial factor
    (None when unknown: the file then reports no bits per pixel)."""
    return VAEIdentity(
        fingerprint=vae_fingerprint(vae),
        downsampling_factor=_find_downsampling_factor(vae),
        name=_plain_class(vae).__name__,
    )
