"""`EntropyCodedScalarQuantizer`: uniform scalar quantization with a fitted factorized prior (ECSQ)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from ..errors import UserError
from .base import Bottleneck, BottleneckOutput
from .distributed import all_reduce_sum_, world_size
from .factorized_levels import MAX_LEVEL, FactorizedLevels, uniform_levels
from .validation import Interval, check_indices


def _channel_steps(step, channels: int) -> torch.Tensor:
    """`step` (a number, or one per channel) as a float32 `[C]` tensor; `ValueError` naming `step` otherwise."""
    values = [step] * channels if isinstance(step, Real) and not isinstance(step, bool) else step
    ok = isinstance(values, (list, tuple)) and len(values) == channels
    ok = ok and all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)
    if not ok:
        raise UserError(
            f"`step` must be a positive finite number or {channels} of them (one per channel), got {step!r}."
        )
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


class EntropyCodedScalarQuantizer(Bottleneck):
    r"""Entropy-coded scalar quantization (ECSQ): the strong high-rate baseline.

    Each value of latent channel c is quantized uniformly with step `channel_step[c]` around the channel's
    running mean: level `l = clamp(round((z − mean[c]) / step[c]), −max_level, max_level)`, decoded as
    `mean[c] + l · step[c]`. The levels are entropy-coded against a factorized prior: a histogram of the
    levels of each dimension of the coded vectors (`[C·P_H·P_W, 2·max_level + 1]`), a decayed sum of the
    training batches' counts (`histogram_decay`). Mean and histograms are fitted in training mode and frozen
    in eval mode; under `torch.distributed` both are summed over ranks, so every rank holds the same ones.
    The loss is the commitment `β‖z − sg[ẑ]‖²`; the output passes gradients straight through.

    Codes: `Codes.indices` `[N, C·P_H·P_W]` hold `level + max_level` (in `[0, K)`, `K = 2·max_level + 1`).
    The codes container codes them against the histograms (`index_tables`), so a file costs about the
    fitted entropy (`bits_per_position`) instead of `log2 K` per value.

    Parameters:
        latent_channels (`int`, defaults to 16): channels C of the latents.
        step (`float` or `Sequence[float]`, defaults to 0.1): the quantization step in latent units, one for
            every channel or one per channel (the `channel_step` buffer `[C]`, which may also be set after
            construction, before fitting the histograms).
        max_level (`int`, defaults to 127): the largest |level|, in [1, 32767].
        patch_size (`int` or `(int, int)`, defaults to 1): how values are grouped into coded vectors.
        histogram_decay (`float`, defaults to 0.99): in [0, 1), the decay of the level histograms.
        beta (`float`, defaults to 0.25): commitment weight β.
    """

    _parameter_constraints = {
        "max_level": [Interval(Integral, 1, MAX_LEVEL, closed="both")],
        "histogram_decay": [Interval(Real, 0, 1, closed="left")],
    }

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 16,
        step: Union[float, Sequence[float]] = 0.1,
        max_level: int = 127,
        patch_size: Union[int, Sequence[int]] = 1,
        histogram_decay: float = 0.99,
        beta: float = 0.25,
    ):
        super().__init__()
        self.register_buffer("channel_step", _channel_steps(step, latent_channels))
        # fitted outside autograd, as the ScalarQuantizer's range: a parameter that does not require grad
        self.channel_mean = torch.nn.Parameter(torch.zeros(latent_channels), requires_grad=False)
        self.register_buffer("fitted_batches", torch.zeros((), dtype=torch.long))
        self.level_histograms = FactorizedLevels(self.vector_dim, max_level, histogram_decay)

    @property
    def num_atoms(self) -> int:
        """`K = 2·max_level + 1`, the levels a value index refers to."""
        return 2 * self.config.max_level + 1

    @property
    def bits_per_position(self) -> float:
        """The fitted entropy estimate per latent position: the entropy of the level histograms (with the
        codes container's uniform share mixed in) summed over the coded dimensions, over `P_H·P_W`. What a
        codes file's payload costs for latents distributed as the training ones (the header not counted);
        `log2 K` per value before any fitting."""
        return self.level_histograms.entropy_bits() / self.positions_per_vector

    def index_tables(self) -> torch.Tensor:
        """The codec's index model (`EntropyModel.index_tables`): the level histograms `[C·P_H·P_W, K]`."""
        return self.level_histograms.tables()

    def _grid(self, dtype: torch.dtype):
        """Per-dimension `(mean [D], step [D])` of the coded vectors, in `dtype`."""
        repeat = self.positions_per_vector
        return (
            self.channel_mean.to(dtype).repeat_interleave(repeat),
            self.channel_step.to(dtype).repeat_interleave(repeat),
        )

    @torch.no_grad()
    def _fit_mean(self, vectors: torch.Tensor) -> None:
        """Running mean of the channels: the average of the batches' channel means (over ranks too)."""
        c = self.config.latent_channels
        means = vectors.reshape(vectors.shape[0], c, -1).mean(dim=(0, 2))
        means = all_reduce_sum_(means.contiguous()) / world_size()
        weight = 1.0 / (self.fitted_batches + 1).to(means.dtype)
        mean = self.channel_mean.to(means.dtype)
        self.channel_mean.copy_(mean + (means - mean) * weight)
        self.fitted_batches.add_(1)

    def _encode_vectors(self, vectors: torch.Tensor):
        mean, step = self._grid(vectors.dtype)
        levels = uniform_levels(vectors - mean, step, self.config.max_level)
        return levels.long() + self.config.max_level, None

    def _decode_vectors(self, indices: torch.Tensor, values: Optional[torch.Tensor]) -> torch.Tensor:
        check_indices(indices, self.vector_dim, "one level per value")
        mean, step = self._grid(self.compute_dtype)
        return mean + (indices - self.config.max_level).to(self.compute_dtype) * step

    def forward(self, latents: torch.Tensor, return_dict: bool = True) -> Union[BottleneckOutput, tuple]:
        """Quantizes latents `[B, C, H, W]`; see `BottleneckOutput`."""
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            if self.training:
                self._fit_mean(vectors.detach())
            indices, _ = self._encode_vectors(vectors.detach())
            if self.training:
                self.level_histograms.observe(indices - self.config.max_level)
            reconstruction = self._decode_vectors(indices, None)
            loss = self.config.beta * F.mse_loss(vectors, reconstruction)
            usage = torch.bincount(indices.flatten(), minlength=self.num_atoms).float()
            coded = self.straight_through(vectors, reconstruction)
        codes = self.make_codes(indices, None, latents)
        return self.make_output(self.to_latents(coded, latents), loss, codes, usage, return_dict)
