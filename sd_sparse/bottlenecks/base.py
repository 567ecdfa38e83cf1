"""What every bottleneck shares: the output dataclass and latent ↔ vector plumbing."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from ..codec.codes import Codes, encode_signature
from ..configuration import SavedClassCheckMixin
from ..errors import UserError
from ..metrics import perplexity as usage_perplexity
from .patches import as_patch_size, patchify, unpatchify
from .validation import Interval, check_latents, collect_constraints, validate_parameters


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
    device-to-host sync per call on a GPU) and the config checks (`_parameter_constraints`, declared by
    each class and component, checked once here). The components a bottleneck composes live in files
    of their own: `RestartsMixin` (restarts of rarely used codes/atoms), `ValueQuantizationMixin`
    (`value_bits`), `DataInitialisationMixin` (`init_from_data`).
    """

    _supports_gradient_checkpointing = False
    # bottlenecks compute in float32 whatever the storage dtype: never cast them layer by layer
    _skip_layerwise_casting_patterns = [""]
    check_latents: bool = True
    #: what each config value may be (scikit-learn style; merged over the class hierarchy, see `validation`)
    _parameter_constraints = {
        "num_atoms": [Interval(Integral, 1, None)],
        "latent_channels": [Interval(Integral, 1, None)],
        "beta": [Interval(Real, 0, None)],
    }

    #: config keys whose value None (off) is left out of `config_fingerprint` (options added later)
    _optional_config_keys: Tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        # `@register_to_config` registers the arguments before the subclass's `__init__` body runs
        validate_parameters(collect_constraints(type(self)), self.config)
        self.patch_size = as_patch_size(self.config.get("patch_size", 1))
        self.vector_dim = self.config.latent_channels * self.positions_per_vector

    @property
    def positions_per_vector(self) -> int:
        """`P_H·P_W`, the latent positions one coded vector covers."""
        return self.patch_size[0] * self.patch_size[1]

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
            # options added after codes files existed: left out while off, so old files keep decoding
            public = {k: v for k, v in public.items() if not (k in self._optional_config_keys and v is None)}
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
        check_latents(latents, self.config.latent_channels, self.patch_size, finite=self.check_latents)

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
        quantized values or None[, residual levels `[N, D]`]]). No state change."""
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
        residual: Optional[torch.Tensor] = None,
    ) -> Codes:
        """Wraps slots of the vectors of `latents` `[B, C, H, W]` into self-describing `Codes` (with the
        integer `levels` of quantized coefficients, when the bottleneck quantizes them, and the `residual`
        levels `[N, D]` of bottlenecks that code one)."""
        # the metadata stays on the CPU: no host-to-device copy per forward, no sync when it is read
        layout = torch.tensor([*latents.shape, *self.patch_size, self.num_atoms], dtype=torch.long)
        self.config_fingerprint  # noqa: B018 (computes the cached signature once)
        return Codes(
            indices=indices.detach(),
            coefficients=None if values is None else values.detach(),
            layout=layout,
            signature=self.__dict__["_signature"],
            levels=None if levels is None else levels.detach(),
            residual=None if residual is None else residual.detach(),
        )

    def encode(self, latents: torch.Tensor) -> Codes:
        """Codes of latents `[B, C, H, W]` (no gradients, no state change, whatever the mode)."""
        with torch.no_grad(), self.full_precision(latents):
            indices, values, *extra = self._encode_vectors(self.to_vectors(latents))
            extra = extra + [None] * (2 - len(extra))
            return self.make_codes(indices, values, latents, extra[0], extra[1])

    def decode(self, codes: Codes) -> torch.Tensor:
        """Latents `[B, C, H, W]` (in `compute_dtype`) from `codes` made by this bottleneck's `encode`.

        Equals `forward(latents).latents` bit for bit when the latents do not require grad.
        """
        self.check_codes(codes)
        with self.full_precision(codes.indices):
            values = None if codes.coefficients is None else codes.coefficients.to(self.device)
            vectors = self._decode_vectors(codes.indices.to(self.device), values)
            if codes.residual is not None:
                vectors = self._add_residual(vectors, codes.residual.to(self.device))
        return unpatchify(vectors, codes.latent_shape, self.patch_size)

    def check_codes(self, codes) -> None:
        """`ValueError` unless `codes` were made by a bottleneck of this class and configuration."""
        if not isinstance(codes, Codes):
            raise UserError(f"`codes` must be `Codes` from `Bottleneck.encode`, got {type(codes).__name__}.")
        mine = (type(self).__name__, self.config_fingerprint)
        theirs = (codes.bottleneck_class, codes.fingerprint)
        if theirs != mine:
            raise UserError(
                f"`codes` were made by {theirs[0]} (config {theirs[1]}), but this is {mine[0]} (config {mine[1]}): "
                "decode them with the bottleneck that encoded them."
            )
        if codes.patch_size != tuple(self.patch_size) or codes.latent_shape[1] != self.config.latent_channels:
            raise UserError(f"`codes` layout {codes.latent_shape}/{codes.patch_size} does not fit this bottleneck.")
        if (codes.residual is not None) != self.codes_residual:
            raise UserError(
                f"`codes` {'carry' if codes.residual is not None else 'lack'} a residual, but this "
                f"{type(self).__name__} {'codes one' if self.codes_residual else 'does not code one'}."
            )
        if codes.residual is not None and codes.residual.shape[1] != self.vector_dim:
            raise UserError(f"`codes.residual` must be [N, {self.vector_dim}], got {tuple(codes.residual.shape)}.")

    # -- residual levels (bottlenecks that code what their codes leave: `DictionaryBottleneck(residual_step=...)`) --
    @property
    def codes_residual(self) -> bool:
        """Whether this bottleneck's codes carry residual levels (`Codes.residual`)."""
        return False

    def _add_residual(self, vectors: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Decoded vectors `[N, D]` plus what the residual levels `[N, D]` stand for."""
        raise UserError(f"{type(self).__name__} codes no residual.")

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

    # -- the value model (sparse codes with `value_bits` override it: `ValueQuantizationMixin`) -----------
    @property
    def value_bits(self) -> Optional[int]:
        """Bits per quantized coefficient, or None for unquantized (float) coefficients."""
        return self.config.get("value_bits")

    def dequantize_values(self, indices: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        raise UserError(f"{type(self).__name__} has no quantized coefficients (`value_bits` is None).")

    # -- the codec's `EntropyModel` interface (what the codes container reads) -----------------------------
    @property
    def coding_class_name(self) -> str:
        """The name `Codes` and codes files record for this bottleneck: its class name."""
        return type(self).__name__

    def usage_prior(self) -> Optional[torch.Tensor]:
        """How often each code/atom is selected, `[K]` (float64 on the CPU, any positive scale), that the
        codes container entropy-codes indices against; None when the bottleneck keeps no usage statistics
        (indices then cost `log2 K` each, or `log2 C(K, S)` per sparse support). Here: None; bottlenecks
        with statistics override it (`RestartsMixin`: the usage average; VQ: also its EMA cluster sizes)."""
        return None

    def coding_state_digest(self) -> str:
        """16 hex digits identifying this bottleneck's state (weights, scales, usage statistics): codes
        files record it, so decoding with another fitting of the same configuration is an error."""
        digest = hashlib.sha256()
        unfitted = self._unfitted_state_keys()
        for name, tensor in sorted(self.state_dict().items()):
            if name in unfitted:
                continue
            tensor = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def _unfitted_state_keys(self) -> set:
        """Names of state entries the digest leaves out while they hold nothing fitted (statistics added after
        codes files existed, which an old checkpoint lacks): files written before keep decoding."""
        return set()

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        subfolder: str | None = None,
        base_model: str | None = None,
        metrics: dict | None = None,
    ) -> str:
        """Uploads weights, config and a model card (config, base VAE, metrics, bits per position); returns
        the commit URL. Takes diffusers' `ModelMixin.push_to_hub` arguments (`create_pr`, `safe_serialization`,
        `variant`, `subfolder`, ...) and passes them on; `base_model` and `metrics` go into the card (and
        `metrics.json`). As diffusers does, a push into a `subfolder` writes no model card."""
        from ..hub import push_bottleneck

        return push_bottleneck(
            self,
            repo_id,
            base_model=base_model,
            metrics=metrics,
            token=token,
            private=private,
            commit_message=commit_message,
            create_pr=create_pr,
            safe_serialization=safe_serialization,
            variant=variant,
            subfolder=subfolder,
        )
