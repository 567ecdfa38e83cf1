"""`VAEIdentity`: the VAE a codes file records (fingerprint and spatial factor), and how a VAE becomes one.

The container records which VAE the coded latents came from (so decoding with another VAE is an error, and
the file's bits per pixel are known), but computing that identity needs to know diffusers' VAE classes,
which is the autoencoders' business (`sd_sparse.autoencoders.identity`), above the codec. So the container
only takes a `VAEIdentity` value, and the dependency is inverted:

- callers that know the VAE compute the identity themselves (`sd_sparse.autoencoders.identity.vae_identity`)
  and pass it;
- `Codes.to_bytes(bottleneck, vae=...)` / `Codes.from_bytes(..., vae=...)` also take the VAE itself (a plain
  or coded diffusers VAE), as they always have: `as_vae_identity` turns it into a `VAEIdentity` through a
  resolver registered with `register_vae_identity`. `sd_sparse/__init__.py`, which runs before any
  `sd_sparse` module, registers `sd_sparse.autoencoders.identity.vae_identity` (imported on first use),
  so the codec never imports the autoencoders and a VAE is still accepted wherever it was.

This module imports nothing heavy (no torch): the package root imports it to register the resolver.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import UserError

__all__ = ["VAEIdentity", "as_vae_identity", "register_vae_identity"]


@dataclass(frozen=True)
class VAEIdentity:
    """What a codes file records of a VAE.

    Args:
        fingerprint (`str`): 16 hex digits identifying the VAE (class, config, weights; see
            `sd_sparse.autoencoders.identity.vae_fingerprint`). A coded VAE and its plain VAE share it.
        downsampling_factor (`int`, *optional*): image side / latent side (8 for Stable Diffusion's VAE); None
            when unknown (the file then records 0 and reports no bits per pixel).
        name (`str`, defaults to `"VAE"`): the VAE's class name, for error messages only (not recorded).
    """

    fingerprint: str
    downsampling_factor: Optional[int] = None
    name: str = "VAE"


_resolver: Optional[Callable[[Any], VAEIdentity]] = None


def register_vae_identity(resolver: Callable[[Any], VAEIdentity]) -> None:
    """Sets the function `as_vae_identity` applies to a VAE object (`sd_sparse/__init__.py` registers
    `sd_sparse.autoencoders.identity.vae_identity`)."""
    global _resolver
    if not callable(resolver):
        raise UserError(f"`resolver` must be a callable VAE -> VAEIdentity, got {type(resolver).__name__}.")
    _resolver = resolver


def as_vae_identity(vae) -> Optional[VAEIdentity]:
    """`vae` as a `VAEIdentity`: None stays None, a `VAEIdentity` is returned as is, a VAE (plain or coded
    diffusers VAE) goes through the registered resolver."""
    if vae is None or isinstance(vae, VAEIdentity):
        return vae
    if _resolver is None:
        raise UserError(
            f"cannot identify the VAE {type(vae).__name__}: no VAE identity resolver is registered; pass "
            "`sd_sparse.autoencoders.identity.vae_identity(vae)` instead."
        )
    identity = _resolver(vae)
    if not isinstance(identity, VAEIdentity):
        raise UserError(f"the VAE identity resolver returned {type(identity).__name__}, not a `VAEIdentity`.")
    return identity


# -- deprecated: these lived in `sd_sparse.codec.container` ----------------------------------------------
def vae_fingerprint(vae) -> str:
    """Deprecated: use `sd_sparse.autoencoders.identity.vae_fingerprint`."""
    _warn("vae_fingerprint", "vae_fingerprint")
    return as_vae_identity(vae).fingerprint


def vae_downsampling(vae) -> Optional[int]:
    """Deprecated: use `sd_sparse.autoencoders.identity.downsampling_factor` (which raises instead of
    returning None for a VAE whose factor it cannot tell)."""
    _warn("vae_downsampling", "downsampling_factor")
    return as_vae_identity(vae).downsampling_factor


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"sd_sparse.codec.{old} is deprecated: use sd_sparse.autoencoders.identity.{new}.",
        DeprecationWarning,
        stacklevel=3,
    )
