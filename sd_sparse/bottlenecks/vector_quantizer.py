"""`VectorQuantizer`: the VQ-VAE bottleneck (nearest code, straight-through, commitment, EMA)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from .base import Bottleneck, BottleneckOutput
from .distributed import all_reduce_sum_, broadcast_
from .initialisation import DataInitialisationMixin
from .restarts import RestartsMixin
from .validation import Interval


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor, chunk_size: int = 2048) -> torch.Tensor:
    """Index of the nearest codebook row (squared L2) for each of `vectors` `[N, D]`; returns `[N]`.

    Chunked so that memory stays at one `[chunk, K]` distance buffer.
    """
    half_norms = 0.5 * codebook.square().sum(1)
    out = torch.empty(vectors.shape[0], dtype=torch.long, device=vectors.device)
    for start in range(0, vectors.shape[0], chunk_size):
        # argmin ||x - e||^2 = argmin (||e||^2 / 2 - x.e)
        scores = torch.addmm(half_norms, vectors[start : start + chunk_size], codebook.t(), alpha=-1)
        out[start : start + chunk_size] = scores.argmin(1)
    return out


def kmeans(vectors: torch.Tensor, num_clusters: int, num_iters: int, generator=None) -> torch.Tensor:
    """Lloyd's k-means started from random samples; returns centroids `[num_clusters, D]`."""
    picks = torch.randint(0, vectors.shape[0], (num_clusters,), device=vectors.device, generator=generator)
    centroids = vectors[picks].clone()
    for _ in range(num_iters):
        assign = nearest_codes(vectors, centroids)
        counts = torch.bincount(assign, minlength=num_clusters).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
    return centroids


class VectorQuantizer(RestartsMixin, DataInitialisationMixin, Bottleneck):
    r"""Vector quantization of latent vectors (van den Oord et al. 2017), the VQ-VAE/VQ-GAN bottleneck.

    Each coded vector (a latent fiber, or a `patch_size` patch of fibers) is replaced by its nearest
    codebook vector; gradients pass straight through to the input. The loss is
    `‖sg[z] − e‖² + β‖z − sg[e]‖²`, or only `β‖z − sg[e]‖²` with EMA codebook updates. Its codes are
    1-sparse: `Codes.indices` `[N, 1]`, no values.

    Parameters:
        num_atoms (`int`, defaults to 512): K, the codebook size (the atoms of a 1-sparse code).
        latent_channels (`int`, defaults to 16): channels C of the latents.
        patch_size (`int` or `(int, int)`, defaults to 1): code non-overlapping P_H × P_W patches
            (vectors of dimension `C·P_H·P_W`).
        beta (`float`, defaults to 0.25): commitment weight β.
        use_ema (`bool`, defaults to `True`): update the codebook by exponential moving averages
            (Laplace-smoothed) instead of by gradient.
        decay (`float`, defaults to 0.99): EMA decay.
        epsilon (`float`, defaults to 1e-5): Laplace smoothing of EMA cluster sizes.
        restart_threshold (`float`, defaults to 0.5): restart rarely used codes during training. Each
            code's share of the selections is tracked as a moving average (`usage_decay`); a code whose
            share falls below `restart_threshold` times the uniform share `1/K` is replaced by one of
            the batch's worst represented vectors (largest quantization error). In [0, 1]; 0 disables.
            The same rule as `DictionaryBottleneck`'s.
        usage_decay (`float`, defaults to 0.99): decay of the usage average.
        init_from_data (`bool`, defaults to `True`): on the first training batch, initialise the
            codebook from the batch's vectors (k-means with `kmeans_iters` iterations; 0 = random
            samples).
        kmeans_iters (`int`, defaults to 0): Lloyd iterations for the data-driven initialisation.

    Under `torch.distributed`, EMA statistics and usage are summed over ranks and the data-driven
    initialisation and restart candidates are broadcast from rank 0, so every rank keeps the same codebook.
    """

    _parameter_constraints = {
        "decay": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None)],
        "kmeans_iters": [Interval(Integral, 0, None)],
    }

    @register_to_config
    def __init__(
        self,
        num_atoms: int = 512,
        latent_channels: int = 16,
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
        codebook = torch.randn(num_atoms, self.vector_dim) / self.vector_dim**0.5
        self.codebook = torch.nn.Parameter(codebook, requires_grad=not use_ema)
        self.register_buffer("ema_cluster_size", torch.zeros(num_atoms))
        self.register_buffer("ema_embed_sum", codebook.clone())
        self._setup_data_initialisation(init_from_data)
        self._setup_restarts()

    @property
    def bits_per_position(self) -> float:
        """`log2 K` bits per coded vector, spread over its `P_H·P_W` positions."""
        return math.log2(self.config.num_atoms) / self.positions_per_vector

    def _initialize_from_data(self, vectors: torch.Tensor) -> None:
        """Codebook: k-means centroids of the batch (`kmeans_iters` Lloyd iterations; broadcast from rank 0)."""
        centroids = kmeans(vectors, self.config.num_atoms, self.config.kmeans_iters)
        broadcast_(centroids)
        self.codebook.data.copy_(centroids)
        self.ema_embed_sum.copy_(centroids)
        self.ema_cluster_size.fill_(1.0)

    @torch.no_grad()
    def _ema_update(self, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        K = self.config.num_atoms
        decay, eps = self.config.decay, self.config.epsilon
        counts = torch.bincount(indices, minlength=K).to(vectors.dtype)
        sums = torch.zeros(K, vectors.shape[1], device=vectors.device, dtype=vectors.dtype).index_add_(
            0, indices, vectors
        )
        stats = all_reduce_sum_(torch.cat([counts[:, None], sums], dim=1))
        counts, sums = stats[:, 0], stats[:, 1:]
        self.ema_cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + eps) / (total + K * eps) * total
        self.codebook.data.copy_(self.ema_embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _apply_restarts(self) -> None:
        pending = self.restart_pending
        replacement = self.restart_vectors.to(self.codebook.dtype)
        self.codebook.data.copy_(torch.where(pending[:, None], replacement, self.codebook.data))
        if self.config.use_ema:  # a restarted code starts as a cluster of one vector: itself
            self.ema_embed_sum.copy_(torch.where(pending[:, None], replacement, self.ema_embed_sum))
            self.ema_cluster_size.copy_(
                torch.where(pending, torch.ones_like(self.ema_cluster_size), self.ema_cluster_size)
            )
        pending.zero_()

    def usage_prior(self) -> Optional[torch.Tensor]:
        """The entropy model of the indices (see `RestartsMixin.usage_prior`): the restarts' usage average, or
        without restarts the EMA cluster sizes (None while they are all zero: nothing counted yet)."""
        prior = super().usage_prior()
        if prior is None and bool((self.ema_cluster_size > 0).any()):
            prior = self.ema_cluster_size.detach().to(device="cpu", dtype=torch.float64)
        return prior

    def _encode_vectors(self, vectors: torch.Tensor):
        return nearest_codes(vectors, self.codebook.to(vectors.dtype).detach())[:, None], None

    def _decode_vectors(self, indices: torch.Tensor, values) -> torch.Tensor:
        return F.embedding(indices[:, 0], self.codebook.to(self.compute_dtype))

    def quantize_vectors(self, vectors: torch.Tensor):
        """Vectors `[N, D]` (in `compute_dtype`) → `(quantized [N, D], indices [N], loss, usage [K])`.

        `quantized` holds codebook rows exactly (with gradients to the codebook when it is learned by
        gradient); `loss` is the codebook term + β · commitment. In training mode this also initialises,
        restarts and EMA-updates the codebook (synchronised over ranks). Shared by `forward` and the
        stages of `ResidualVectorQuantizer`.
        """
        restarts = self.restarts_active
        self._maybe_initialize(vectors)
        if restarts:
            self._apply_restarts()
        codebook = self.codebook.to(vectors.dtype)
        indices = nearest_codes(vectors.detach(), codebook.detach())
        quantized = F.embedding(indices, codebook)  # deterministic backward, unlike indexing
        if self.training and self.config.use_ema:
            self._ema_update(vectors.detach(), indices)
        commitment = F.mse_loss(vectors, quantized.detach())
        if self.config.use_ema:
            loss = self.config.beta * commitment
        else:
            loss = F.mse_loss(quantized, vectors.detach()) + self.config.beta * commitment
        usage = torch.bincount(indices, minlength=self.config.num_atoms).float()
        if restarts:
            self._plan_restarts(vectors.detach(), quantized.detach(), usage)
        return quantized, indices, loss, usage

    def forward(self, latents: torch.Tensor, return_dict: bool = True) -> Union[BottleneckOutput, tuple]:
        """Quantizes latents `[B, C, H, W]`; see `BottleneckOutput`."""
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            quantized, indices, loss, usage = self.quantize_vectors(vectors)
            coded = self.straight_through(vectors, quantized)
        codes = self.make_codes(indices[:, None], None, latents)
        return self.make_output(self.to_latents(coded, latents), loss, codes, usage, return_dict)
