"""`ScalarQuantizer`: uniform per-channel scalar quantization with a range fitted from data."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from .base import Bottleneck, BottleneckOutput
from .distributed import all_reduce_max_, all_reduce_sum_, world_size
from .validation import Interval, check_indices


class ScalarQuantizer(Bottleneck):
    r"""Uniform scalar quantization of every latent value with `bits` bits: the trivial baseline.

    Each value of latent channel c is rounded to the nearest of `2^bits` evenly spaced levels from
    `lower[c]` to `upper[c]` (values outside are clamped to the end levels). The range is fitted from the
    data in training mode and frozen in eval mode:
    - `range_quantile = 0`: the running minimum and maximum of each channel over every training batch;
    - `range_quantile = q > 0`: the per-batch q and 1 − q quantiles of each channel, averaged over the
      training batches.
    Under `torch.distributed` minima/maxima are reduced (and quantiles averaged) over ranks, so all
    ranks hold the same range. The loss is the commitment `β‖z − sg[ẑ]‖²` (nothing is learned by
    gradient); the output passes gradients straight through to the input.

    Codes: `Codes.indices` `[N, C·P_H·P_W]`, the level index of each value; `Codes.num_atoms` is
    `2^bits`. `bits_per_position` is `C · bits` whatever the patch size (patches only group values).

    Parameters:
        latent_channels (`int`, defaults to 16): channels C of the latents.
        bits (`int`, defaults to 4): bits per value, in [1, 16].
        patch_size (`int` or `(int, int)`, defaults to 1): how values are grouped into coded vectors.
        range_quantile (`float`, defaults to 0.0): in [0, 0.5); 0 fits the min/max range.
        beta (`float`, defaults to 0.25): commitment weight β.
    """

    _parameter_constraints = {
        "bits": [Interval(Integral, 1, 16, closed="both")],
        "range_quantile": [Interval(Real, 0, 0.5, closed="left")],
    }

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 16,
        bits: int = 4,
        patch_size: Union[int, Sequence[int]] = 1,
        range_quantile: float = 0.0,
        beta: float = 0.25,
    ):
        super().__init__()
        # fitted outside autograd, as an EMA codebook: parameters that do not require grad
        self.lower = torch.nn.Parameter(torch.full((latent_channels,), -1.0), requires_grad=False)
        self.upper = torch.nn.Parameter(torch.full((latent_channels,), 1.0), requires_grad=False)
        self.register_buffer("fitted_batches", torch.zeros((), dtype=torch.long))

    @property
    def num_atoms(self) -> int:
        """`2^bits`, the number of levels a value index refers to."""
        return 2**self.config.bits

    @property
    def bits_per_position(self) -> float:
        """`C · bits` per latent position."""
        return float(self.config.latent_channels * self.config.bits)

    def _per_channel(self, vectors: torch.Tensor) -> torch.Tensor:
        """Vectors `[N, C·P_H·P_W]` → values `[C, N·P_H·P_W]` (each row one channel)."""
        c = self.config.latent_channels
        return vectors.reshape(vectors.shape[0], c, -1).transpose(0, 1).reshape(c, -1)

    @torch.no_grad()
    def _fit_range(self, vectors: torch.Tensor) -> None:
        values = self._per_channel(vectors)
        first = self.fitted_batches == 0
        q = self.config.range_quantile
        if q == 0:
            low = -all_reduce_max_(-values.min(1).values)
            high = all_reduce_max_(values.max(1).values.clone())
            low = torch.where(first, low, torch.minimum(self.lower.to(low.dtype), low))
            high = torch.where(first, high, torch.maximum(self.upper.to(high.dtype), high))
        else:
            m = values.shape[1]
            k = int(q * (m - 1)) + 1  # nearest rank (kthvalue needs no size limit, unlike torch.quantile)
            bounds = torch.stack([values.kthvalue(k, 1).values, values.kthvalue(m - k + 1, 1).values])
            bounds = all_reduce_sum_(bounds) / world_size()
            weight = 1.0 / (self.fitted_batches + 1).to(bounds.dtype)  # running mean over batches
            low = self.lower.to(bounds.dtype) + (bounds[0] - self.lower.to(bounds.dtype)) * weight
            high = self.upper.to(bounds.dtype) + (bounds[1] - self.upper.to(bounds.dtype)) * weight
        self.lower.copy_(low)
        self.upper.copy_(high)
        self.fitted_batches.add_(1)

    def _grid(self, dtype: torch.dtype):
        """Per-dimension `(lower [D], step [D])` of the coded vectors, in `dtype`."""
        repeat = self.positions_per_vector
        lower = self.lower.to(dtype).repeat_interleave(repeat)
        span = (self.upper.to(dtype) - self.lower.to(dtype)).clamp_min(torch.finfo(dtype).tiny)
        return lower, span.repeat_interleave(repeat) / (self.num_atoms - 1)

    def _encode_vectors(self, vectors: torch.Tensor):
        lower, step = self._grid(vectors.dtype)
        return ((vectors - lower) / step).round().clamp(0, self.num_atoms - 1).long(), None

    def _decode_vectors(self, indices: torch.Tensor, values: Optional[torch.Tensor]) -> torch.Tensor:
        check_indices(indices, self.vector_dim, "one level per value")
        lower, step = self._grid(self.compute_dtype)
        return lower + indices.to(self.compute_dtype) * step

    def forward(self, latents: torch.Tensor, return_dict: bool = True) -> Union[BottleneckOutput, tuple]:
        """Quantizes latents `[B, C, H, W]`; see `BottleneckOutput`."""
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            if self.training:
                self._fit_range(vectors.detach())
            indices, _ = self._encode_vectors(vectors.detach())
            reconstruction = self._decode_vectors(indices, None)
            loss = self.config.beta * F.mse_loss(vectors, reconstruction)
            usage = torch.bincount(indices.flatten(), minlength=self.num_atoms).float()
            coded = self.straight_through(vectors, reconstruction)
        codes = self.make_codes(indices, None, latents)
        return self.make_output(self.to_latents(coded, latents), loss, codes, usage, return_dict)
