"""The dictionary's atoms (or a VQ codebook's vectors) decoded to image patches, in a labelled grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..bottlenecks import Bottleneck, DictionaryBottleneck, LISTABottleneck, VectorQuantizer
from ..bottlenecks.patches import unpatchify
from ..errors import UserError
from .latent_model import LatentModel


def dictionary_atoms(bottleneck: Bottleneck) -> torch.Tensor:
    """The vectors a bottleneck codes with, `[K, C·P_H·P_W]` (float32, detached): a dictionary's unit-norm
    atoms (`DictionaryBottleneck`, `LISTABottleneck`) or a `VectorQuantizer`'s codebook."""
    if isinstance(bottleneck, (DictionaryBottleneck, LISTABottleneck)):
        return bottleneck.atoms.detach().float()
    if isinstance(bottleneck, VectorQuantizer):
        return bottleneck.codebook.detach().float()
    name = type(bottleneck).__name__ if bottleneck is not None else "no bottleneck"
    raise UserError(
        f"atoms need a dictionary or a VQ codebook (DictionaryBottleneck, LISTABottleneck, VectorQuantizer), got {name}."
    )


def atom_usage(bottleneck: Bottleneck, latents: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """How often each atom is selected, `[K]` float64: counted over the codes of `latents` `[B, C, h, w]`
    (slots with a zero coefficient left out), else the bottleneck's moving usage average; None when
    neither is there."""
    if latents is None:
        return bottleneck.usage_prior()
    codes = bottleneck.encode(latents)
    indices = codes.indices
    if codes.coefficients is not None:
        indices = indices[codes.coefficients != 0]
    counts = torch.bincount(indices.reshape(-1).cpu(), minlength=bottleneck.num_atoms)
    return counts.to(torch.float64)


def typical_coefficient(bottleneck: Bottleneck, latents: torch.Tensor) -> float:
    """How strongly an atom stands for a whole coded vector: the median, over the codes of `latents`
    `[B, C, h, w]`, of each code's largest |coefficient| (its leading atom's; about the vectors' norm). 1 for
    codes without coefficients (VQ: the codebook vector is the latent)."""
    codes = bottleneck.encode(latents)
    if codes.coefficients is None:
        return 1.0
    leading = codes.coefficients.abs().amax(dim=1)
    leading = leading[leading > 0]
    return float(leading.median()) if leading.numel() else 1.0


def usage_order(usage: Optional[torch.Tensor], num_atoms: int) -> torch.Tensor:
    """Atom indices `[K]`, most used first (ties and `usage=None`: by index)."""
    if usage is None:
        return torch.arange(num_atoms)
    return torch.sort(-usage.to(torch.float64).cpu(), stable=True).indices


def atom_latents(
    bottleneck: Bottleneck,
    indices: Sequence[int],
    scale: float = 1.0,
    background: Optional[torch.Tensor] = None,
    latent_patches: int = 3,
) -> torch.Tensor:
    """One small latent per atom, `[N, C, h, w]` with `h = latent_patches·P_H`, `w = latent_patches·P_W`:
    the middle patch is `scale` × the atom reshaped to its latent patch `[C, P_H, P_W]` (what the bottleneck
    decodes for a patch coded by that atom alone), the rest `background` (broadcast to `[C, h, w]`, e.g. a
    mean latent `[C, 1, 1]`; zeros when None)."""
    atoms = dictionary_atoms(bottleneck)
    indices = torch.as_tensor(list(indices), dtype=torch.long)
    channels = bottleneck.config.latent_channels
    ph, pw = bottleneck.patch_size
    patches = unpatchify(atoms[indices], (len(indices), channels, ph, pw), (ph, pw))  # [N, C, P_H, P_W]
    h, w = latent_patches * ph, latent_patches * pw
    latents = torch.zeros(len(indices), channels, h, w)
    if background is not None:
        latents = latents + background.detach().float().cpu().reshape(1, *background.shape[-3:])
    top, left = (latent_patches // 2) * ph, (latent_patches // 2) * pw
    latents[:, :, top : top + ph, left : left + pw] = scale * patches
    return latents


@dataclass
class DecodedAtoms:
    """`decode_atoms`' result: `images` `[N, 3, H, W]` in [-1, 1] (clamped), the `latents` `[N, C, h, w]`
    they were decoded from, the atom `indices` `[N]`, their `usage` shares `[N]` (None when unknown) and
    the coefficient `scale` used."""

    images: torch.Tensor
    latents: torch.Tensor
    indices: torch.Tensor
    usage: Optional[torch.Tensor]
    scale: float


@torch.no_grad()
def decode_atoms(
    model,
    num_atoms: int = 64,
    latents: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    background: Optional[torch.Tensor] = None,
    latent_patches: int = 3,
    batch_size: int = 16,
) -> DecodedAtoms:
    """Decodes the first `num_atoms` atoms of `model`'s bottleneck (most used first when usage is known).

    Args:
        model: a `SparseAutoencoder` or a coded diffusers VAE (or a `LatentModel` of one).
        latents (`[B, C, h, w]`, *optional*): latents of real images; they give the usage (counted over their
            codes), the default `scale` (`typical_coefficient`) and the default `background` (their
            per-channel mean `[C, 1, 1]`). Without them: the moving usage average, scale 1, zeros.
    """
    model = model if isinstance(model, LatentModel) else LatentModel(model)
    bottleneck = model.bottleneck
    dictionary_atoms(bottleneck)  # a clear error for a bottleneck without atoms
    usage = atom_usage(bottleneck, latents)
    if latents is not None:
        scale = typical_coefficient(bottleneck, latents) if scale is None else scale
        background = latents.float().mean(dim=(0, 2, 3)).reshape(-1, 1, 1) if background is None else background
    scale = 1.0 if scale is None else float(scale)
    order = usage_order(usage, bottleneck.num_atoms)[: max(0, int(num_atoms))]
    small = atom_latents(bottleneck, order.tolist(), scale, background, latent_patches)
    images = torch.cat([model.decode(chunk).float().cpu() for chunk in small.split(batch_size)]).clamp(-1, 1)
    shares = None
    if usage is not None:
        shares = (usage / usage.sum().clamp_min(1e-12))[order].float()
    return DecodedAtoms(images=images, latents=small, indices=order, usage=shares, scale=scale)


def atoms_grid(decoded: DecodedAtoms, columns: int = 8, panel_size: int = 64, title: Optional[str] = None):
    """A PIL grid of the decoded atoms, `columns` per row, each captioned with its index (and its share of the
    selections, when the usage is known)."""
    from ..data import to_image
    from ..evaluation.image_grid import labelled_grid

    panels, captions = [], []
    for k, (index, image) in enumerate(zip(decoded.indices.tolist(), decoded.images)):
        if k % columns == 0:
            panels.append([])
            captions.append([])
        caption = f"atom {index}"
        if decoded.usage is not None:
            caption += f"\n{100 * float(decoded.usage[k]):.1f}% used"
        panels[-1].append(to_image(image))
        captions[-1].append(caption)
    if not panels:
        raise UserError("no atoms to draw: `num_atoms` must be >= 1.")
    return labelled_grid(panels, captions, panel_size=panel_size, title=title, font_size=11, gap=4)


def plot_atoms(
    model,
    path: str,
    num_atoms: int = 64,
    latents: Optional[torch.Tensor] = None,
    columns: int = 8,
    panel_size: int = 64,
    latent_patches: int = 3,
) -> str:
    """Writes the grid of `decode_atoms(model, num_atoms, latents)` to the PNG `path`; returns `path`."""
    from ._matplotlib import save_image

    model = model if isinstance(model, LatentModel) else LatentModel(model)
    decoded = decode_atoms(model, num_atoms, latents=latents, latent_patches=latent_patches)
    kind = "codebook vectors" if isinstance(model.bottleneck, VectorQuantizer) else "atoms"
    order = "most used first (share of the selections)" if decoded.usage is not None else "by index"
    title = (
        f"{len(decoded.indices)} of {model.bottleneck.num_atoms} {kind}, decoded (scale {decoded.scale:.3g}); {order}"
    )
    return save_image(atoms_grid(decoded, columns, panel_size, title), path)
