"""`FiniteScalarQuantizer`: FSQ (Mentzer et al. 2023) of latent vectors, wrapping vector-quantize-pytorch's `FSQ`.

Needs the optional extra: `pip install 'sd_sparse[baselines]'`.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from ..errors import UserError
from .base import Bottleneck, BottleneckOutput
from .distributed import all_reduce_sum_
from .initialisation import DataInitialisationMixin
from .validation import check_indices


def load_fsq_class() -> type:
    """vector-quantize-pytorch's `FSQ`, or an `ImportError` naming the extra that installs it."""
    from importlib.metadata import version

    from ..extras import require

    FSQ = require("vector_quantize_pytorch", "FiniteScalarQuantizer (it wraps vector-quantize-pytorch's FSQ)").FSQ
    found = version("vector-quantize-pytorch")
    hint = "pip install 'sd_sparse[baselines]' (vector-quantize-pytorch>=1.25)"
    if tuple(int(part) for part in re.findall(r"\d+", found)[:2]) < (
        1,
        25,
    ):  # older FSQ.quantize ignores `preserve_symmetry` or adds noise in training
        raise ImportError(f"FiniteScalarQuantizer needs vector-quantize-pytorch>=1.25, found {found}: {hint}.")
    return FSQ


def as_levels(levels, dim: int, preserve_symmetry: bool) -> list:
    """`levels` (an int for every dimension, or one int per dimension) as a list of `dim` ints, checked."""
    if isinstance(levels, int) and not isinstance(levels, bool):
        levels = [levels] * dim
    levels = list(levels) if isinstance(levels, (list, tuple)) else None
    if levels is None or len(levels) != dim:
        raise UserError(
            f"`levels` must be an int or {dim} ints (one per dimension C·P_H·P_W of a coded vector), got {levels!r}."
        )
    smallest = 2 if preserve_symmetry else 3
    if not all(isinstance(l, int) and not isinstance(l, bool) and smallest <= l <= 2**16 for l in levels):
        hint = "" if preserve_symmetry else " (2 levels need `preserve_symmetry=True`)"
        raise UserError(f"`levels` must be ints in [{smallest}, 65536]{hint}, got {levels!r}.")
    return levels


def initial_affine(levels: int, preserve_symmetry: bool) -> Tuple[float, float, float]:
    """`(extreme, centre, gain)` for a unit Gaussian dimension quantized to `levels` FSQ values:
    `output_scale = σ · extreme` puts FSQ's ±1 where a good uniform quantizer of a Gaussian has its outer
    levels (Max 1960's optimal steps for 2-4 levels, `√(2 ln L)` beyond); `centre` is the middle of FSQ's
    values (an even L without symmetry has −1 … 1 − 2/L), put on the mean; `input_scale = gain / output_scale`
    makes `ẑ ≈ z` near the centre (FSQ's tanh bound has slope `(L−1)/2 · (1 − offset² / ((L−1)/2)²)`
    there, its values step by `1/(L//2)`)."""
    extreme = {2: 0.8, 3: 1.22, 4: 1.5}.get(levels, math.sqrt(2 * math.log(levels)))
    if preserve_symmetry or levels % 2:
        return extreme, 0.0, 1.0
    half = (levels - 1) / 2
    return extreme, -1 / levels, (levels // 2) / (half - 0.25 / half)


class FiniteScalarQuantizer(DataInitialisationMixin, Bottleneck):
    r"""Finite scalar quantization (FSQ; Mentzer et al. 2023) of latent vectors.

    Each dimension d of a coded vector (a latent fiber, or a `patch_size` patch of fibers, dimension
    `D = C·P_H·P_W`) is normalised, `u = (z − shift) · input_scale`, bounded and rounded to one of
    `levels[d]` values `q ∈ [−1, 1]` by vector-quantize-pytorch's `FSQ` (tanh bound, straight-through
    rounding), and reconstructed as `ẑ = shift + output_scale · q`. The three `[D]` parameters are learned
    by gradient through the loss `‖ẑ − sg[z]‖² + β‖z − sg[ẑ]‖²` (the codebook term trains them, the
    commitment term reaches the encoder), and, with `init_from_data`, start from the first training
    batch's mean and standard deviation σ (FSQ's ±1 at about `±σ·√(2 ln L)`, see `initial_affine`).
    The output latents pass gradients straight through to the input, as every bottleneck's.

    Codes: `Codes.indices` `[N, D]`, the level index of each dimension in `[0, levels[d])` (not the
    product index, which overflows for patches); `Codes.num_atoms` is `max(levels)`. `bits_per_position`
    is `Σ_d log2 levels[d] / (P_H·P_W)`.

    Parameters:
        levels (`int` or list of `int`, defaults to 5): quantization levels of every dimension, or one
            count per dimension (`D` of them), each >= 3 (>= 2 with `preserve_symmetry`).
        latent_channels (`int`, defaults to 16): channels C of the latents.
        patch_size (`int` or `(int, int)`, defaults to 1): code non-overlapping P_H × P_W patches.
        beta (`float`, defaults to 0.25): commitment weight β.
        init_from_data (`bool`, defaults to `True`): set `shift`, `input_scale` and `output_scale` from the
            first training batch (statistics summed over ranks under `torch.distributed`).
        preserve_symmetry (`bool`, defaults to `False`): FSQ's symmetry-preserving levels (arXiv
            2411.19842, §3.2), which also allow 2 levels.

    Needs `pip install 'sd_sparse[baselines]'` (vector-quantize-pytorch).
    """

    @register_to_config
    def __init__(
        self,
        levels: Union[int, Sequence[int]] = 5,
        latent_channels: int = 16,
        patch_size: Union[int, Sequence[int]] = 1,
        beta: float = 0.25,
        init_from_data: bool = True,
        preserve_symmetry: bool = False,
    ):
        super().__init__()
        self._levels = as_levels(levels, self.vector_dim, preserve_symmetry)
        fsq_class = load_fsq_class()
        options = {"preserve_symmetry": True} if preserve_symmetry else {}
        # no product indices (their implicit codebook has prod(levels) rows): level indices are ours
        self.quantizer = fsq_class(levels=self._levels, return_indices=False, **options)
        self.register_buffer("level_counts", torch.tensor(self._levels, dtype=torch.long), persistent=False)
        self.shift = torch.nn.Parameter(torch.zeros(self.vector_dim))
        self.input_scale = torch.nn.Parameter(torch.ones(self.vector_dim))
        self.output_scale = torch.nn.Parameter(torch.ones(self.vector_dim))
        self._setup_data_initialisation(init_from_data)

    @property
    def num_atoms(self) -> int:
        """The largest level count: level indices lie in `[0, max(levels))`."""
        return max(self._levels)

    @property
    def bits_per_position(self) -> float:
        """`Σ_d log2 levels[d]` bits per coded vector, spread over its `P_H·P_W` positions."""
        return sum(math.log2(l) for l in self._levels) / self.positions_per_vector

    def _initialize_from_data(self, vectors: torch.Tensor) -> None:
        """Affine maps from the batch's mean and standard deviation (statistics summed over ranks)."""
        count = torch.full((1, vectors.shape[1]), float(vectors.shape[0]), dtype=vectors.dtype, device=vectors.device)
        stats = all_reduce_sum_(torch.cat([count, vectors.sum(0, keepdim=True), vectors.square().sum(0, keepdim=True)]))
        mean = stats[1] / stats[0]
        std = (stats[2] / stats[0] - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
        extreme, centre, gain = torch.tensor(
            [initial_affine(l, self.config.preserve_symmetry) for l in self._levels], dtype=std.dtype, device=std.device
        ).unbind(1)
        self.output_scale.copy_(std * extreme)
        self.shift.copy_(mean - std * extreme * centre)
        self.input_scale.copy_(gain / (std * extreme))

    def _parameters_in(self, dtype: torch.dtype):
        return self.shift.to(dtype), self.input_scale.to(dtype), self.output_scale.to(dtype)

    def _quantize(self, vectors: torch.Tensor) -> torch.Tensor:
        """FSQ's bounded, straight-through rounded values `q` `[N, D]` in [−1, 1]."""
        shift, input_scale, _ = self._parameters_in(vectors.dtype)
        return self.quantizer.quantize((vectors - shift) * input_scale)

    def _level_indices(self, q: torch.Tensor) -> torch.Tensor:
        levels = self.level_counts.to(q.dtype)
        if self.config.preserve_symmetry:
            return ((q.detach() + 1) * (levels - 1) / 2).round().long()
        half_width = (self.level_counts // 2).to(q.dtype)
        return (q.detach() * half_width).round().long() + self.level_counts // 2

    def _grid_values(self, indices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Level indices `[N, D]` → FSQ's values `q` in [−1, 1] (the inverse of `_level_indices`)."""
        levels = self.level_counts.to(dtype)
        if self.config.preserve_symmetry:
            return indices.to(dtype) * (2 / (levels - 1)) - 1
        half_width = self.level_counts // 2
        return (indices - half_width).to(dtype) / half_width.to(dtype)

    def _encode_vectors(self, vectors: torch.Tensor):
        return self._level_indices(self._quantize(vectors)), None

    def _decode_vectors(self, indices: torch.Tensor, values: Optional[torch.Tensor]) -> torch.Tensor:
        check_indices(indices, self.vector_dim, "one level per dimension")
        shift, _, output_scale = self._parameters_in(self.compute_dtype)
        return shift + output_scale * self._grid_values(indices, self.compute_dtype)

    def forward(self, latents: torch.Tensor, return_dict: bool = True) -> Union[BottleneckOutput, tuple]:
        """Quantizes latents `[B, C, H, W]`; see `BottleneckOutput`."""
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            self._maybe_initialize(vectors)
            q = self._quantize(vectors.detach())  # gradients reach input_scale through the rounding
            indices = self._level_indices(q)
            shift, _, output_scale = self._parameters_in(vectors.dtype)
            reconstruction = self._decode_vectors(indices, None)  # exactly what `decode` computes
            trained = shift + output_scale * q
            loss = F.mse_loss(trained, vectors.detach()) + self.config.beta * F.mse_loss(vectors, trained.detach())
            usage = torch.bincount(indices.flatten(), minlength=self.num_atoms).float()
            coded = self.straight_through(vectors, reconstruction)
        codes = self.make_codes(indices, None, latents)
        return self.make_output(self.to_latents(coded, latents), loss, codes, usage, return_dict)
