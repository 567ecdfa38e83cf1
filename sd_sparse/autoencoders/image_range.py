"""The check every image entering a coded VAE's `compress` passes: floating point, finite, in [-1, 1]."""

from __future__ import annotations

import torch

from ..errors import UserError

#: how far outside [-1, 1] `compress` lets images go (rounding of the user's own scaling)
IMAGE_RANGE_TOLERANCE = 1e-3


def check_image_range(images: torch.Tensor, name: str = "images") -> None:
    """`ValueError` naming `name` for images `[B, 3, H, W]` that are empty, not finite or outside [-1, 1]
    (± `IMAGE_RANGE_TOLERANCE`), with the scaling that fixes the common cases ([0, 255]); a warning for
    images all in [0, 1] (`images * 2 - 1`; none for flat images). Other shapes are left to the encoder's own check."""
    if not isinstance(images, torch.Tensor) or images.dim() not in (4, 5):
        return
    if images.shape[0] == 0:
        raise UserError(f"`{name}` is empty: nothing to compress.")
    if not images.is_floating_point():
        raise UserError(
            f"`{name}` must be floating-point in [-1, 1] (the diffusers convention), got {images.dtype}: "
            f"for 8-bit images pass `{name}.float() / 127.5 - 1`."
        )
    if not bool(torch.isfinite(images).all()):
        raise UserError(f"`{name}` contains NaN or infinite values.")
    low, high = float(images.min()), float(images.max())
    tol = IMAGE_RANGE_TOLERANCE
    if low < -1 - tol or high > 1 + tol:
        if low >= -tol and high <= 255 + tol:
            hint = f": they look like [0, 255] images, pass `{name} / 127.5 - 1`"
        else:
            hint = f" (for [0, 255] images pass `{name} / 127.5 - 1`, for [0, 1] images `{name} * 2 - 1`)"
        raise UserError(
            f"`{name}` must be in [-1, 1] (the diffusers convention), got values in [{low:.4g}, {high:.4g}]{hint}."
        )
    if low >= 0 and high > 0.5 and images[0].numel() >= 3 * 16 * 16:  # a [-1, 1] photo has dark pixels
        import warnings

        warnings.warn(
            f"`{name}` are all in [0, {high:.4g}]: the VAE expects [-1, 1]; if they are [0, 1] images pass "
            f"`{name} * 2 - 1`.",
            stacklevel=3,
        )
