"""`ResidualVectorQuantizer`: S stages of vector quantization, each coding what the previous ones left.

Built from our `VectorQuantizer` (one per stage) rather than by wrapping vector-quantize-pytorch's
`ResidualVQ`, which fixes its DDP synchronisation when it is constructed (`sync_codebook` defaults to
whether a process group exists then, and forcing it on fails without one), runs its k-means
initialisation in eval-mode forwards too (so `encode` would change state), keeps EMA codebooks as
buffers (invisible to diffusers' `EMAModel`) and always quantizes in float32. Each stage here has the
VQ contract's tested behaviour: EMA or gradient codebooks, data initialisation broadcast from rank 0,
EMA statistics summed over ranks, restarts of rarely used codes.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from .base import Bottleneck, BottleneckOutput
from .validation import Interval, check_indices
from .vector_quantizer import VectorQuantizer, nearest_codes


class ResidualVectorQuantizer(Bottleneck):
    r"""Residual vector quantization (RVQ; Juang & Gray 1982, SoundStream: Zeghidour et al. 2021).

    Stage 1 replaces each coded vector (a latent fiber, or a `patch_size` patch of fibers) by the
    nearest vector of its codebook, stage s does the same to what stages 1 … s−1 left (the residual),
    and the reconstruction is the sum of the S chosen codebook vectors; gradients pass straight through
    to the input. Every stage is a `VectorQuantizer` with the options below, its loss computed on its own
    input; the loss is the sum over stages. Codes: `Codes.indices` `[N, S]` (column s = stage s's code),
    no values; `bits_per_position` is `S · log2 K / (P_H·P_W)`.

    Parameters:
        num_atoms (`int`, defaults to 512): K, the codebook size of every stage.
        latent_channels (`int`, defaults to 16): channels C of the latents.
        num_stages (`int`, defaults to 4): S, the number of residual stages (codes per coded vector).
        patch_size (`int` or `(int, int)`, defaults to 1): code non-overlapping P_H × P_W patches
            (vectors of dimension `C·P_H·P_W`).
        beta (`float`, defaults to 0.25): commitment weight β of each stage.
        use_ema (`bool`, defaults to `True`): update the codebooks by exponential moving averages instead
            of by gradient.
        decay (`float`, defaults to 0.99): EMA decay.
        epsilon (`float`, defaults to 1e-5): Laplace smoothing of EMA cluster sizes.
        restart_threshold (`float`, defaults to 0.5): per stage, restart codes whose moving-average share
            of the selections falls below `restart_threshold / K` (see `VectorQuantizer`); 0 disables.
        usage_decay (`float`, defaults to 0.99): decay of the usage average.
        init_from_data (`bool`, defaults to `True`): on the first training batch, initialise each stage's
            codebook from its input (k-means with `kmeans_iters` iterations; 0 = random samples).
        kmeans_iters (`int`, defaults to 0): Lloyd iterations for the data-driven initialisation.

    `usage` in the output counts selections of each code index over all stages (`[K]`, as
    `codes.usage()`). Under `torch.distributed` every stage keeps identical codebooks on all ranks.
    """

    _parameter_constraints = {"num_stages": [Interval(Integral, 1, None)]}

    @register_to_config
    def __init__(
        self,
        num_atoms: int = 512,
        latent_channels: int = 16,
        num_stages: int = 4,
        patch_size: Union[int, Sequence[int]] = 1,
        beta: float = 0.25,
        use_ema: bool = True,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        restart_threshold: float = 0.5,
        usage_decay: float = 0.99,
        init_from_data: bool = True,
        kmeans_iters: int = 0,
    ):
        super().__init__()
        self.stages = torch.nn.ModuleList(
            VectorQuantizer(
                num_atoms,
                self.vector_dim,
                patch_size=1,
                beta=beta,
                use_ema=use_ema,
                decay=decay,
                epsilon=epsilon,
                restart_threshold=restart_threshold,
                usage_decay=usage_decay,
                init_from_data=init_from_data,
                kmeans_iters=kmeans_iters,
            )
            for _ in range(num_stages)
        )

    @property
    def bits_per_position(self) -> float:
        """`S · log2 K` bits per coded vector, spread over its `P_H·P_W` positions."""
        return self.config.num_stages * math.log2(self.config.num_atoms) / self.positions_per_vector

    def _codebooks(self, dtype: torch.dtype):
        return [stage.codebook.to(dtype) for stage in self.stages]

    def _encode_vectors(self, vectors: torch.Tensor):
        residual, indices = vectors, []
        for codebook in self._codebooks(vectors.dtype):
            index = nearest_codes(residual, codebook.detach())
            residual = residual - F.embedding(index, codebook.detach())
            indices.append(index)
        return torch.stack(indices, dim=1), None

    def _decode_vectors(self, indices: torch.Tensor, values: Optional[torch.Tensor]) -> torch.Tensor:
        check_indices(indices, self.config.num_stages, "one code per stage")
        reconstruction = None
        for s, codebook in enumerate(self._codebooks(self.compute_dtype)):
            quantized = F.embedding(indices[:, s], codebook)
            reconstruction = quantized if reconstruction is None else reconstruction + quantized
        return reconstruction

    def forward(self, latents: torch.Tensor, return_dict: bool = True) -> Union[BottleneckOutput, tuple]:
        """Quantizes latents `[B, C, H, W]` in S residual stages; see `BottleneckOutput`."""
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            residual, reconstruction, indices, loss, usage = vectors, None, [], 0.0, 0.0
            for stage in self.stages:
                quantized, index, stage_loss, stage_usage = stage.quantize_vectors(residual)
                # the same additions, in the same order, as `_decode_vectors`: decode(encode(z)) is bitwise forward(z)
                reconstruction = quantized if reconstruction is None else reconstruction + quantized
                residual = residual - quantized.detach()
                indices.append(index)
                loss = loss + stage_loss
                usage = usage + stage_usage
            coded = self.straight_through(vectors, reconstruction)
        codes = self.make_codes(torch.stack(indices, dim=1), None, latents)
        return self.make_output(self.to_latents(coded, latents), loss, codes, usage, return_dict)
