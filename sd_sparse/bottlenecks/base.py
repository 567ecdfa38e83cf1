"""What every bottleneck shares: the output dataclass and latent ↔ vector plumbing."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from ..metrics import perplexity as usage_perplexity
from ..sparse_coding.codes import SparseCodes
from .patches import as_patch_size, patchify, unpatchify


@dataclass
class BottleneckOutput(BaseOutput):
    """Output of every bottleneck's `forward`.

    Args:
        latents (`torch.Tensor` of shape `[B, C, H, W]`): the reconstruction ẑ, with
            straight-through gradients to the input latents in training.
        loss (`torch.Tensor`, scalar): the bottleneck's own loss (codebook/dictionary term +
            β · commitment, or LISTA's latent reconstruction + sparsity).
        codes (`torch.LongTensor` `[N]` or `SparseCodes`): what each coded vector was compressed to
            (VQ: indices; dictionary/LISTA: `SparseCodes` with `[N, S]` indices and values). N runs
            over (batch, patch row, patch column).
        usage (`torch.Tensor` of shape `[K]`): how many coded vectors used each code/atom.
        perplexity (`torch.Tensor`, scalar): `exp(entropy)` of the normalised `usage` (max K).
        dead_codes (`torch.Tensor`, scalar): codes/atoms unused in this batch.
    """

    latents: torch.Tensor
    loss: torch.Tensor
    codes: Union[torch.Tensor, SparseCodes]
    usage: torch.Tensor
    perplexity: torch.Tensor
    dead_codes: torch.Tensor


class Bottleneck(ModelMixin, ConfigMixin):
    """Base class: subclasses code vectors of dimension `embedding_dim · P_H · P_W`."""

    _supports_gradient_checkpointing = False

    def _setup_patches(self, embedding_dim: int, patch_size) -> None:
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be an int >= 1, got {embedding_dim!r}.")
        self.patch_size = as_patch_size(patch_size)
        self.vector_dim = embedding_dim * self.patch_size[0] * self.patch_size[1]

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32, or float64 for a float64 model: codes are never computed in half precision."""
        return torch.promote_types(self.dtype, torch.float32)

    def to_vectors(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `[B, C, H, W]` → coded vectors `[N, C·P_H·P_W]` in `compute_dtype` (checked)."""
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"`latents` must be a tensor [B, C, H, W], got {shape}.")
        if latents.shape[1] != self.config.embedding_dim:
            raise ValueError(
                f"`latents` must have {self.config.embedding_dim} channels ([B, {self.config.embedding_dim}, H, W]), "
                f"got shape {tuple(latents.shape)}."
            )
        return patchify(latents.to(self.compute_dtype), self.patch_size)

    def to_latents(self, vectors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return unpatchify(vectors, like.shape, self.patch_size).to(like.dtype)

    @staticmethod
    def full_precision(latents: torch.Tensor):
        """Disables autocast so codes are computed in float32 under mixed precision."""
        if torch.is_autocast_enabled(latents.device.type):
            return torch.autocast(latents.device.type, enabled=False)
        return nullcontext()

    def make_output(self, latents, loss, codes, usage, return_dict: bool) -> Union[BottleneckOutput, Tuple]:
        output = BottleneckOutput(
            latents=latents,
            loss=loss,
            codes=codes,
            usage=usage,
            perplexity=usage_perplexity(usage),
            dead_codes=(usage == 0).sum(),
        )
        return output if return_dict else output.to_tuple()

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        base_model: str | None = None,
        metrics: dict | None = None,
        **kwargs,
    ) -> str:
        """Uploads weights, config and a model card (config, base VAE, metrics, bits per position)."""
        from ..hub import push_bottleneck

        return push_bottleneck(self, repo_id, base_model, metrics, token, private, commit_message)

    def grid_shape(self, latents: torch.Tensor) -> Tuple[int, int, int]:
        """(B, H/P_H, W/P_W): how the N coded vectors are laid out."""
        b, _, h, w = latents.shape
        return b, h // self.patch_size[0], w // self.patch_size[1]


def check_positive_int(name: str, value, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (maximum is not None and value > maximum):
        bound = f"in [1, {maximum}]" if maximum is not None else ">= 1"
        raise ValueError(f"`{name}` must be an int {bound}, got {value!r}.")


def check_unit_interval(name: str, value, closed_right: bool = False) -> None:
    ok = isinstance(value, (int, float)) and 0 <= value and (value <= 1 if closed_right else value < 1)
    if not ok:
        raise ValueError(f"`{name}` must be in [0, 1{']' if closed_right else ')'}, got {value!r}.")


def check_nonnegative(name: str, value) -> None:
    if not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value >= 0
        and value == value
        and value != float("inf")
    ):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
