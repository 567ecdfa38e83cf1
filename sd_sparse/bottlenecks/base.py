"""What every bottleneck shares: the output dataclass and latent ↔ vector plumbing."""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from ..codec.codes import Codes, encode_signature
from ..codec.quantization import (
    canonical_order,
    check_value_bits,
    dequantize,
    quantization_step,
    quantize,
    quantize_with_feedback,
)
from ..configuration import SavedClassCheckMixin
from ..metrics import perplexity as usage_perplexity
from .distributed import all_reduce_max_, all_reduce_sum_, broadcast_
from .patches import as_patch_size, patchify, unpatchify

_VALUE_SCALES = ("atom", "dictionary")


@dataclass
class BottleneckOutput(BaseOutput):
    """Output of every bottleneck's `forward`.

    Args:
        latents (`torch.Tensor` of shape `[B, C, H, W]`): the reconstruction ẑ, with
            straight-through gradients to the input latents when they require grad (otherwise
            exactly `bottleneck.decode(codes)`).
        loss (`torch.Tensor`, scalar): the bottleneck's own loss (codebook/dictionary term +
            β · commitment, or LISTA's latent reconstruction + sparsity).
        codes (`Codes`): what the latents were compressed to (`[N, S]` indices, and coefficients for
            sparse codes); N runs over (batch, patch row, patch column).
        usage (`torch.Tensor` of shape `[K]`): how many coded vectors used each code/atom.
        perplexity (`torch.Tensor`, scalar): `exp(entropy)` of the normalised `usage` (max K).
        dead_codes (`torch.Tensor`, scalar): codes/atoms unused in this batch.
    """

    latents: torch.Tensor
    loss: torch.Tensor
    codes: Codes
    usage: torch.Tensor
    perplexity: torch.Tensor
    dead_codes: torch.Tensor


class Bottleneck(SavedClassCheckMixin, ModelMixin, ConfigMixin):
    """Base class of the latent bottlenecks: one contract for VQ, dictionary and LISTA.

    Every bottleneck is also the codec's `EntropyModel` (`sd_sparse.codec.entropy_model`): the codes
    container reads its identity, usage prior and value levels through that interface.

    Subclasses code vectors of dimension `latent_channels · P_H · P_W` and implement
    `_encode_vectors`, `_decode_vectors`, `bits_per_position` and `forward`. Shared here:
    `encode(latents) -> Codes`, `decode(codes) -> latents`, input checks (`latents` must be finite
    `[B, C, H, W]`; set `check_latents = False` to skip the finiteness check, which costs one
    device-to-host sync per call on a GPU), and the restarts of rarely used codes/atoms.
    """

    _supports_gradient_checkpointing = False
    # bottlenecks compute in float32 whatever the storage dtype: never cast them layer by layer
    _skip_layerwise_casting_patterns = [""]
    check_latents: bool = True

    def _setup_patches(self, latent_channels: int, patch_size) -> None:
        if isinstance(latent_channels, bool) or not isinstance(latent_channels, int) or latent_channels < 1:
            raise ValueError(f"`latent_channels` must be an int >= 1, got {latent_channels!r}.")
        self.patch_size = as_patch_size(patch_size)
        self.vector_dim = latent_channels * self.patch_size[0] * self.patch_size[1]

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32, or float64 for a float64 model: codes are never computed in half precision."""
        return torch.promote_types(self.dtype, torch.float32)

    @property
    def num_atoms(self) -> int:
        """K, the number of atoms / codebook vectors (scalar quantizers: levels per value) that indices refer to."""
        return self.config.num_atoms

    @property
    def config_fingerprint(self) -> str:
        """16 hex digits identifying the class and configuration (not the weights) of this bottleneck.

        Computed once: the registered config is frozen after construction."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            public = {k: v for k, v in self.config.items() if not k.startswith("_")}
            if public.get("value_bits") is None:  # unquantized: the fingerprint of configs before `value_bits`
                public = {k: v for k, v in public.items() if not k.startswith("value_")}
            text = json.dumps({"class": type(self).__name__, "config": public}, sort_keys=True, default=str)
            cached = self.__dict__["_fingerprint"] = hashlib.sha256(text.encode()).hexdigest()[:16]
            self.__dict__["_signature"] = encode_signature(type(self).__name__, cached)
        return cached

    @property
    def bits_per_position(self) -> float | None:
        """Storage of the codes per latent position (one spatial site), or None when variable."""
        raise NotImplementedError

    def check_latents_tensor(self, latents) -> None:
        """`ValueError` naming `latents` unless it is a finite `[B, C, H, W]` tensor this bottleneck codes."""
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"`latents` must be a tensor [B, C, H, W], got {shape}.")
        channels = self.config.latent_channels
        if latents.shape[1] != channels:
            raise ValueError(
                f"`latents` must have {channels} channels ([B, {channels}, H, W]), got shape {tuple(latents.shape)}."
            )
        ph, pw = self.patch_size
        if latents.shape[2] % ph or latents.shape[3] % pw:
            raise ValueError(
                f"`latents` height and width {tuple(latents.shape[2:])} must be divisible by `patch_size` ({ph}, {pw})."
            )
        if not latents.is_floating_point():
            raise ValueError(f"`latents` must be a floating-point tensor, got {latents.dtype}.")
        if self.check_latents and not bool(torch.isfinite(latents).all()):
            raise ValueError("`latents` contains NaN or infinite values; nothing was coded or updated.")

    def to_vectors(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `[B, C, H, W]` → coded vectors `[N, C·P_H·P_W]` in `compute_dtype` (checked)."""
        self.check_latents_tensor(latents)
        return patchify(latents.to(self.compute_dtype), self.patch_size)

    def to_latents(self, vectors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return unpatchify(vectors, like.shape, self.patch_size).to(like.dtype)

    @staticmethod
    def full_precision(latents: torch.Tensor):
        """Disables autocast so codes are computed in float32 under mixed precision."""
        if isinstance(latents, torch.Tensor) and torch.is_autocast_enabled(latents.device.type):
            return torch.autocast(latents.device.type, enabled=False)
        return nullcontext()

    # -- the codes API ---------------------------------------------------------------------------
    def _encode_vectors(self, vectors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Vectors `[N, D]` → (indices `[N, S]` long, values `[N, S]` or None[, levels `[N, S]` int16 of
        quantized values]). No state change."""
        raise NotImplementedError

    def _decode_vectors(self, indices: torch.Tensor, values: Optional[torch.Tensor]) -> torch.Tensor:
        """(indices, values) → vectors `[N, D]` in `compute_dtype`."""
        raise NotImplementedError

    def make_codes(
        self,
        indices: torch.Tensor,
        values: Optional[torch.Tensor],
        latents: torch.Tensor,
        levels: Optional[torch.Tensor] = None,
    ) -> Codes:
        """Wraps slots of the vectors of `latents` `[B, C, H, W]` into self-describing `Codes` (with the
        integer `levels` of quantized coefficients, when the bottleneck quantizes them)."""
        # the metadata stays on the CPU: no host-to-device copy per forward, no sync when it is read
        layout = torch.tensor([*latents.shape, *self.patch_size, self.num_atoms], dtype=torch.long)
        self.config_fingerprint  # noqa: B018 (computes the cached signature once)
        return Codes(
            indices=indices.detach(),
            coefficients=None if values is None else values.detach(),
            layout=layout,
            signature=self.__dict__["_signature"],
            levels=None if levels is None else levels.detach(),
        )

    def encode(self, latents: torch.Tensor) -> Codes:
        """Codes of latents `[B, C, H, W]` (no gradients, no state change, whatever the mode)."""
        with torch.no_grad(), self.full_precision(latents):
            indices, values, *levels = self._encode_vectors(self.to_vectors(latents))
            return self.make_codes(indices, values, latents, levels[0] if levels else None)

    def decode(self, codes: Codes) -> torch.Tensor:
        """Latents `[B, C, H, W]` (in `compute_dtype`) from `codes` made by this bottleneck's `encode`.

        Equals `forward(latents).latents` bit for bit when the latents do not require grad.
        """
        self.check_codes(codes)
        with self.full_precision(codes.indices):
            values = None if codes.coefficients is None else codes.coefficients.to(self.device)
            vectors = self._decode_vectors(codes.indices.to(self.device), values)
        return unpatchify(vectors, codes.latent_shape, self.patch_size)

    def check_codes(self, codes) -> None:
        """`ValueError` unless `codes` were made by a bottleneck of this class and configuration."""
        if not isinstance(codes, Codes):
            raise ValueError(f"`codes` must be `Codes` from `Bottleneck.encode`, got {type(codes).__name__}.")
        mine = (type(self).__name__, self.config_fingerprint)
        theirs = (codes.bottleneck_class, codes.fingerprint)
        if theirs != mine:
            raise ValueError(
                f"`codes` were made by {theirs[0]} (config {theirs[1]}), but this is {mine[0]} (config {mine[1]}): "
                "decode them with the bottleneck that encoded them."
            )
        if codes.patch_size != tuple(self.patch_size) or codes.latent_shape[1] != self.config.latent_channels:
            raise ValueError(f"`codes` layout {codes.latent_shape}/{codes.patch_size} does not fit this bottleneck.")

    def make_output(self, latents, loss, codes: Codes, usage, return_dict: bool) -> Union[BottleneckOutput, Tuple]:
        output = BottleneckOutput(
            latents=latents,
            loss=loss,
            codes=codes,
            usage=usage,
            perplexity=usage_perplexity(usage),
            dead_codes=(usage == 0).sum(),
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def straight_through(vectors: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """`reconstruction` with gradients passed straight through to `vectors` when they need them
        (otherwise the reconstruction itself, so outputs equal `decode(encode(...))` exactly)."""
        if vectors.requires_grad:
            return vectors + (reconstruction - vectors).detach()
        return reconstruction

    # -- restarts of rarely used codes / atoms ----------------------------------------------------
    def _setup_restarts(self, restart_threshold: float, usage_decay: float) -> None:
        check_unit_interval("restart_threshold", restart_threshold, closed_right=True)
        check_unit_interval("usage_decay", usage_decay)
        if restart_threshold > 0:
            K = self.config.num_atoms
            # share of the selections per code/atom, started at the uniform share
            self.register_buffer("usage_average", torch.full((K,), 1.0 / K))
            self.register_buffer("restart_pending", torch.zeros(K, dtype=torch.bool))
            self.register_buffer("restart_vectors", torch.zeros(K, self.vector_dim))

    @torch.no_grad()
    def _plan_restarts(self, vectors: torch.Tensor, reconstruction: torch.Tensor, usage: torch.Tensor) -> None:
        """Updates the usage average and picks replacements for codes/atoms below the threshold; they are
        applied at the start of the next training forward (after this step's backward). No host sync."""
        K = self.config.num_atoms
        usage = all_reduce_sum_(usage.to(self.usage_average.dtype).clone())
        share = usage / usage.sum().clamp_min(1)
        decay = self.config.usage_decay
        self.usage_average.mul_(decay).add_(share, alpha=1 - decay)
        dead = self.usage_average < self.config.restart_threshold / K
        # candidates: the worst-represented vectors themselves (largest residual first, the K-SVD rule)
        residual_norms = (vectors - reconstruction).square().sum(1)
        order = residual_norms.topk(min(K, vectors.shape[0])).indices
        candidates = broadcast_(vectors[order].contiguous())
        # the i-th dead code takes the i-th candidate (wrapping round when there are fewer candidates)
        slot = (torch.cumsum(dead.long(), 0) - 1).clamp_min(0) % candidates.shape[0]
        self.restart_vectors.copy_(candidates[slot].to(self.restart_vectors.dtype))
        self.restart_pending.copy_(dead)
        self.usage_average.copy_(torch.where(dead, torch.full_like(self.usage_average, 1.0 / K), self.usage_average))

    # -- coefficient quantization (sparse codes with `value_bits`) ---------------------------------
    def _setup_value_quantization(self, value_bits, value_scale: str, value_scale_decay: float) -> None:
        check_value_bits(value_bits)
        if value_scale not in _VALUE_SCALES:
            raise ValueError(f"`value_scale` must be one of {_VALUE_SCALES}, got {value_scale!r}.")
        check_unit_interval("value_scale_decay", value_scale_decay)
        if value_bits is None:
            return
        size = self.config.num_atoms if value_scale == "atom" else 1
        # the clipping scale of the coefficients (per atom or one), a decaying peak hold of the largest
        # |coefficient| of the training batches; it starts at the norm of a unit-variance vector
        self.register_buffer("coefficient_scale", torch.full((size,), float(self.vector_dim) ** 0.5))
        self.register_buffer("coefficient_scale_seen", torch.zeros(size, dtype=torch.bool))

    @property
    def value_bits(self) -> Optional[int]:
        """Bits per quantized coefficient, or None for unquantized (float) coefficients."""
        return self.config.get("value_bits")

    def coefficient_step(self, indices: torch.Tensor) -> torch.Tensor:
        """The quantization step `[N, S]` (in `compute_dtype`) of each slot of atom `indices` `[N, S]`."""
        if self.value_bits is None:
            raise ValueError(f"{type(self).__name__} has no quantized coefficients (`value_bits` is None).")
        step = quantization_step(self.coefficient_scale.to(self.compute_dtype), self.value_bits).to(indices.device)
        return step[indices] if step.shape[0] > 1 else step.expand(indices.shape)

    def quantize_values(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Integer levels (`int16` `[N, S]`) of `values` `[N, S]` of atoms `indices` `[N, S]`, rounded
        with this bottleneck's current scales (no error feedback; `forward` and `encode` may use it)."""
        return quantize(values.to(self.compute_dtype), self.coefficient_step(indices), self.value_bits)

    def dequantize_values(self, indices: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Coefficients `[N, S]` (in `compute_dtype`) that `levels` of atoms `indices` stand for: bit for
        bit the values `forward` and `encode` put in `Codes.coefficients`."""
        return dequantize(levels, self.coefficient_step(indices))

    @torch.no_grad()
    def _observe_coefficient_scale(self, indices: torch.Tensor, values: torch.Tensor, active: torch.Tensor) -> None:
        """Peak hold of the largest |coefficient| (per atom or overall; the maximum over ranks, so every
        rank keeps the same scales): a scale jumps to a larger batch peak at once and decays towards smaller
        ones by `value_scale_decay` per batch. Scales not seen yet take the batch peak."""
        scale, seen = self.coefficient_scale, self.coefficient_scale_seen
        magnitudes = values.detach().abs().to(scale.dtype) * active
        peak = torch.zeros_like(scale)
        if scale.shape[0] > 1:
            peak.scatter_reduce_(0, indices.reshape(-1), magnitudes.reshape(-1), reduce="amax")
        elif magnitudes.numel():
            peak = magnitudes.amax().reshape(1)
        peak = all_reduce_max_(peak.contiguous())
        observed = peak > 0
        decay = self.config.value_scale_decay
        moved = torch.where(seen, torch.maximum(decay * scale + (1 - decay) * peak, peak), peak)
        scale.copy_(torch.where(observed, moved, scale))
        seen.logical_or_(observed)

    def _quantize_codes(
        self, indices: torch.Tensor, values: torch.Tensor, atoms: Optional[torch.Tensor] = None, observe: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float sparse codes → canonical quantized codes `(indices, values, levels)`, each `[N, S]`.

        Slots with a non-zero value form the support; with `observe` (training forwards) they first update
        the clipping scales. With `atoms` `[K, L]` the levels are chosen with error feedback (`quantize_with_feedback`,
        slots in their given order), otherwise by rounding. The slots are then sorted by atom index,
        unused slots last with index 0 and level 0 (the order the codes container stores as a set), and
        `values = dequantize_values(indices, levels)`. Values that carry gradients get them straight
        through (the forward value is exactly the dequantized one).
        """
        active = values.detach() != 0
        if observe:
            self._observe_coefficient_scale(indices, values, active)
        step = self.coefficient_step(indices)
        if atoms is not None:
            atoms = atoms.detach()
            levels = quantize_with_feedback(values.detach(), indices, atoms @ atoms.t(), step, self.value_bits, active)
        else:
            levels = quantize(values.detach(), step, self.value_bits)
            levels = torch.where(active, levels, torch.zeros_like(levels))
        order = canonical_order(indices, active, self.config.num_atoms)
        active = active.gather(1, order)
        indices = torch.where(active, indices.gather(1, order), torch.zeros_like(indices))
        levels = levels.gather(1, order)
        quantized = self.dequantize_values(indices, levels)
        if values.requires_grad:  # + exactly 0 in the forward pass, identity gradient to the support's values
            moving = values.gather(1, order).to(quantized.dtype)
            quantized = quantized + (moving - moving.detach()) * active
        return indices, quantized, levels

    # -- the codec's `EntropyModel` interface (what the codes container reads) -----------------------------
    @property
    def coding_class_name(self) -> str:
        """The name `Codes` and codes files record for this bottleneck: its class name."""
        return type(self).__name__

    def usage_prior(self) -> Optional[torch.Tensor]:
        """How often each code/atom is selected, `[K]` (float64 on the CPU, any positive scale), that the
        codes container entropy-codes indices against; None when the bottleneck keeps no usage statistics
        (indices then cost `log2 K` each, or `log2 C(K, S)` per sparse support). Here: the usage average
        the restarts keep (`restart_threshold > 0`); a bottleneck with other statistics overrides it."""
        average = getattr(self, "usage_average", None)
        return None if average is None else average.detach().to(device="cpu", dtype=torch.float64)

    def coding_state_digest(self) -> str:
        """16 hex digits identifying this bottleneck's state (weights, scales, usage statistics): codes
        files record it, so decoding with another fitting of the same configuration is an error."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            tensor = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        base_model: str | None = None,
        metrics: dict | None = None,
    ) -> str:
        """Uploads weights, config and a model card (config, base VAE, metrics, bits per position)."""
        from ..hub import push_bottleneck

        return push_bottleneck(self, repo_id, base_model, metrics, token, private, commit_message)

    def grid_shape(self, latents: torch.Tensor) -> Tuple[int, int, int]:
        """(B, H/P_H, W/P_W): how the N coded vectors are laid out."""
        b, _, h, w = latents.shape
        return b, h // self.patch_size[0], w // self.patch_size[1]


def sparse_code_bits(num_atoms: int, sparsity: int, value_bits: int | None = None) -> float:
    """Bits of one sparse code of S atoms out of K: `log2 C(K, S) + S·value_bits` with quantized values (the
    support as a set), `S·(log2 K + 16)` without (S indices and S float16 values, the papers' count)."""
    if value_bits is None:
        return sparsity * (math.log2(num_atoms) + 16)
    return math.log2(math.comb(num_atoms, sparsity)) + sparsity * value_bits


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
