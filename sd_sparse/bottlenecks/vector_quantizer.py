"""`VectorQuantizer`: the VQ-VAE bottleneck (nearest code, straight-through, commitment, EMA)."""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from .base import Bottleneck, BottleneckOutput, check_nonnegative, check_positive_int, check_unit_interval
from .distributed import all_reduce_sum_, broadcast_
from .patches import unpatchify


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


class VectorQuantizer(Bottleneck):
    r"""Vector quantization of latent vectors (van den Oord et al. 2017), the VQ-VAE/VQ-GAN bottleneck.

    Each coded vector (a latent fiber, or a `patch_size` patch of fibers) is replaced by its nearest
    codebook vector; gradients pass straight through to the input. The loss is
    `‖sg[z] − e‖² + β‖z − sg[e]‖²`, or only `β‖z − sg[e]‖²` with EMA codebook updates.

    Parameters:
        num_embeddings (`int`, defaults to 512): K, the codebook size.
        embedding_dim (`int`, defaults to 16): channels C of the latents.
        patch_size (`int` or `(int, int)`, defaults to 1): code non-overlapping P_H × P_W patches
            (vectors of dimension `C·P_H·P_W`).
        beta (`float`, defaults to 0.25): commitment weight β.
        use_ema (`bool`, defaults to `True`): update the codebook by exponential moving averages
            (Laplace-smoothed) instead of by gradient.
        decay (`float`, defaults to 0.99): EMA decay.
        epsilon (`float`, defaults to 1e-5): Laplace smoothing of EMA cluster sizes.
        dead_code_threshold (`float`, defaults to 0): with EMA, codes whose EMA cluster size falls
            below this are restarted from random input vectors of the batch (0 disables).
        init_from_data (`bool`, defaults to `True`): on the first training batch, initialise the
            codebook from the batch's vectors (k-means with `kmeans_iters` iterations; 0 = random
            samples).
        kmeans_iters (`int`, defaults to 0): Lloyd iterations for the data-driven initialisation.

    Under `torch.distributed`, EMA statistics are summed over ranks and the data-driven
    initialisation and restarts are broadcast from rank 0, so every rank keeps the same codebook.
    """

    @register_to_config
    def __init__(
        self,
        num_embeddings: int = 512,
        embedding_dim: int = 16,
        patch_size: Union[int, Sequence[int]] = 1,
        beta: float = 0.25,
        use_ema: bool = True,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
        init_from_data: bool = True,
        kmeans_iters: int = 0,
    ):
        super().__init__()
        check_positive_int("num_embeddings", num_embeddings)
        check_nonnegative("beta", beta)
        check_unit_interval("decay", decay)
        check_nonnegative("epsilon", epsilon)
        check_nonnegative("dead_code_threshold", dead_code_threshold)
        if isinstance(kmeans_iters, bool) or not isinstance(kmeans_iters, int) or kmeans_iters < 0:
            raise ValueError(f"`kmeans_iters` must be an int >= 0, got {kmeans_iters!r}.")
        self._setup_patches(embedding_dim, patch_size)
        codebook = torch.randn(num_embeddings, self.vector_dim) / self.vector_dim**0.5
        self.codebook = torch.nn.Parameter(codebook, requires_grad=not use_ema)
        self.register_buffer("ema_cluster_size", torch.zeros(num_embeddings))
        self.register_buffer("ema_embed_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(not init_from_data))
        self._initialized = not init_from_data

    def _maybe_initialize(self, vectors: torch.Tensor) -> None:
        if self._initialized:
            return
        if bool(self.initialized):  # e.g. loaded from a checkpoint: one host sync, once
            self._initialized = True
            return
        centroids = kmeans(vectors, self.config.num_embeddings, self.config.kmeans_iters)
        broadcast_(centroids)
        self.codebook.data.copy_(centroids)
        self.ema_embed_sum.copy_(centroids)
        self.ema_cluster_size.fill_(1.0)
        self.initialized.fill_(True)
        self._initialized = True

    @torch.no_grad()
    def _ema_update(self, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        K = self.config.num_embeddings
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
        if self.config.dead_code_threshold > 0:
            dead = self.ema_cluster_size < self.config.dead_code_threshold
            picks = torch.randint(0, vectors.shape[0], (K,), device=vectors.device)
            replacement = broadcast_(vectors[picks].contiguous())
            self.codebook.data.copy_(torch.where(dead[:, None], replacement, self.codebook.data))
            self.ema_embed_sum.copy_(torch.where(dead[:, None], replacement, self.ema_embed_sum))
            self.ema_cluster_size.copy_(
                torch.where(dead, torch.ones_like(self.ema_cluster_size), self.ema_cluster_size)
            )

    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """Code indices `[N]` for latents `[B, C, H, W]` (no gradients, no state change)."""
        with torch.no_grad(), self.full_precision(latents):
            return nearest_codes(self.to_vectors(latents), self.codebook.to(self.compute_dtype))

    def decode_indices(self, indices: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Latents `shape` `[B, C, H, W]` from code indices `[N]`."""
        return unpatchify(self.codebook[indices], shape, self.patch_size)

    def forward(self, latents: torch.Tensor, return_dict: bool = True) -> Union[BottleneckOutput, tuple]:
        """Quantizes latents `[B, C, H, W]`; see `BottleneckOutput`."""
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            if self.training:
                self._maybe_initialize(vectors.detach())
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
            straight_through = vectors + (quantized - vectors).detach()
            usage = torch.bincount(indices, minlength=self.config.num_embeddings).float()
        return self.make_output(self.to_latents(straight_through, latents), loss, indices, usage, return_dict)
