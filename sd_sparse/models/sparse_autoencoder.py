"""`SparseAutoencoder`: encoder + any bottleneck + decoder (DL-VAE, VQ-VAE, SC-VAE are configurations)."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder, Encoder
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..bottleneck_classes import bottleneck_class as bottleneck_class_of
from ..configuration import SavedClassCheckMixin, upgrade_config
from ..errors import UserError
from .flat_config import BOTTLENECK_TYPES, FLAT_BOTTLENECK_OPTIONS, flat_bottleneck_config, upgrade_flat_config
from .lasers import LightweightDecoder, LightweightEncoder

ARCHITECTURES = ("lasers", "vqgan")
#: deprecated: the `bottleneck_type` values (`flat_config.BOTTLENECK_TYPES` maps them to classes)
BOTTLENECKS = tuple(BOTTLENECK_TYPES)


@dataclass
class SparseAutoencoderOutput(BaseOutput):
    """Output of `SparseAutoencoder.forward`.

    Args:
        sample (`torch.Tensor` `[B, C, H, W]`): the reconstruction.
        latents (`torch.Tensor` `[B, D, h, w]`): the encoder output.
        coded_latents (`torch.Tensor` `[B, D, h, w]`): what the decoder saw (after the bottleneck).
        bottleneck_loss (`torch.Tensor`, scalar): the bottleneck's own loss.
        codes, usage, perplexity, dead_codes: as in `BottleneckOutput`.
        latent_weights (`torch.Tensor` `[B, 1, h, w]`, *optional*): SC-VAE attention weights of the
            per-latent loss (mean 1 per image), when `latent_attention=True`.
    """

    sample: torch.Tensor
    latents: torch.Tensor
    coded_latents: torch.Tensor
    bottleneck_loss: torch.Tensor
    codes: object
    usage: torch.Tensor
    perplexity: torch.Tensor
    dead_codes: torch.Tensor
    latent_weights: Optional[torch.Tensor] = None


class LatentAttention(nn.Module):
    """SC-VAE's small attention network: latents `[B, D, h, w]` → weights `[B, 1, h, w]`, a softmax
    over positions scaled to mean 1, so the per-latent loss is re-weighted, not re-scaled."""

    def __init__(self, latent_channels: int, hidden_channels: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, hidden_channels, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden_channels, 1, 1)
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        logits = self.net(latents)
        b, _, h, w = logits.shape
        return torch.softmax(logits.reshape(b, -1), dim=1).reshape(b, 1, h, w) * (h * w)


class SparseAutoencoder(SavedClassCheckMixin, ModelMixin, ConfigMixin):
    r"""An autoencoder with a latent bottleneck: DL-VAE (`bottleneck_class="DictionaryBottleneck"`), VQ-VAE
    (`"VectorQuantizer"`) or SC-VAE (`"LISTABottleneck"`, optionally with `latent_attention=True`), or any other
    sd_sparse bottleneck (`"ResidualVectorQuantizer"`, `"FiniteScalarQuantizer"`, `"ScalarQuantizer"`,
    `"EntropyCodedScalarQuantizer"`); add a
    discriminator for the GAN variants.

    Parameters:
        in_channels / out_channels (`int`, defaults to 3): image channels.
        architecture (`str`, defaults to `"lasers"`): `"lasers"` (2 strided 4×4 convs + residual
            blocks, downsampling 4) or `"vqgan"` (diffusers' `Encoder`/`Decoder`, downsampling
            2^(len(block_out_channels) − 1)).
        hidden_channels, residual_channels, num_residual_blocks: the LASERS pair (128, 32, 2).
        block_out_channels, layers_per_block, norm_num_groups: the VQGAN pair.
        latent_channels (`int`, defaults to 16): L, latent channels (the bottleneck's `latent_channels`).
        bottleneck_class (`str`, defaults to `"DictionaryBottleneck"`): the sd_sparse bottleneck class, by name
            (as the coded VAEs' `bottleneck_class`).
        bottleneck_config (`dict`, *optional*): that class's arguments (`latent_channels` is filled in); None:
            the class's defaults (DL-VAE: K = 512 atoms, S = 5, restarts below half the uniform share
            (`restart_threshold=0.5`, which adds 0.2–1.9 dB in `benchmarks/reconstruction.py`)). The saved
            config holds the bottleneck's whole config.
        latent_attention (`bool`, defaults to `False`): SC-VAE's attention weights on the latent loss (for a
            bottleneck whose forward takes `vector_weights`: LISTA).

    The flat form of sd_sparse 0.1 (`bottleneck_type="dictionary" | "vq" | "lista"`, `num_atoms`, `sparsity`,
    `patch_size`, `beta`, ...: `flat_config.FLAT_BOTTLENECK_OPTIONS`) still works, with a `FutureWarning`, and
    configs saved with it load to the same model.
    """

    # the encoder/decoder blocks (LASERS residual blocks, diffusers' Encoder/Decoder) are recomputed in
    # the backward pass after `enable_gradient_checkpointing()`; the bottleneck never is
    _supports_gradient_checkpointing = True
    # the flat bottleneck options of sd_sparse 0.1, taken by `**kwargs` with a FutureWarning
    _deprecated_kwargs = list(FLAT_BOTTLENECK_OPTIONS)

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        architecture: str = "lasers",
        hidden_channels: int = 128,
        residual_channels: int = 32,
        num_residual_blocks: int = 2,
        block_out_channels: Sequence[int] = (128, 128, 256),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        latent_channels: int = 16,
        bottleneck_class: str = "DictionaryBottleneck",
        bottleneck_config: Optional[Dict[str, Any]] = None,
        latent_attention: bool = False,
        **kwargs,
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise UserError(f"`architecture` must be one of {ARCHITECTURES}, got {architecture!r}.")
        if kwargs:  # the flat options of sd_sparse 0.1 (deprecated)
            if bottleneck_config is not None or bottleneck_class != "DictionaryBottleneck":
                raise UserError(f"pass either bottleneck_class/bottleneck_config or the flat {sorted(kwargs)}.")
            bottleneck_class, bottleneck_config = self._from_flat_options(latent_attention, kwargs)
        cls = bottleneck_class_of(bottleneck_class)
        if latent_attention and "vector_weights" not in inspect.signature(cls.forward).parameters:
            raise UserError(
                f"`latent_attention` weights the per-vector bottleneck loss, which {cls.__name__} does not take: "
                "use it with bottleneck_class='LISTABottleneck'."
            )
        if architecture == "lasers":
            self.encoder = LightweightEncoder(
                in_channels, hidden_channels, residual_channels, num_residual_blocks, latent_channels
            )
            self.decoder = LightweightDecoder(
                out_channels, hidden_channels, residual_channels, num_residual_blocks, latent_channels
            )
        else:
            blocks = tuple(block_out_channels)
            self.encoder = Encoder(
                in_channels,
                latent_channels,
                ("DownEncoderBlock2D",) * len(blocks),
                blocks,
                layers_per_block,
                norm_num_groups,
                double_z=False,
            )
            self.decoder = Decoder(
                latent_channels,
                out_channels,
                ("UpDecoderBlock2D",) * len(blocks),
                blocks,
                layers_per_block,
                norm_num_groups,
            )
        config = {k: v for k, v in (bottleneck_config or {}).items() if not k.startswith("_")}
        config.setdefault("latent_channels", latent_channels)
        if config["latent_channels"] != latent_channels:
            raise UserError(
                f"`bottleneck_config` codes {config['latent_channels']}-channel latents but `latent_channels` is "
                f"{latent_channels}: leave latent_channels out of bottleneck_config."
            )
        self.bottleneck = cls.from_config(config)
        # the saved config names the class and holds its whole config (defaults included)
        public = {k: v for k, v in self.bottleneck.config.items() if not k.startswith("_")}
        # (and `from_config(model.config)` must not take them for defaults: diffusers drops `_use_default_values`)
        defaults = [k for k in self.config.get("_use_default_values", []) if not k.startswith("bottleneck_")]
        self.register_to_config(bottleneck_class=cls.__name__, bottleneck_config=public, _use_default_values=defaults)
        self.attention = LatentAttention(latent_channels) if latent_attention else None

    @staticmethod
    def _from_flat_options(latent_attention: bool, flat_options: dict):
        unknown = sorted(set(flat_options) - set(FLAT_BOTTLENECK_OPTIONS))
        if unknown:
            raise TypeError(f"SparseAutoencoder got unexpected keyword arguments {unknown}.")
        warnings.warn(
            f"SparseAutoencoder({', '.join(f'{k}=' for k in flat_options)}...) is deprecated: pass "
            "bottleneck_class='DictionaryBottleneck' | 'VectorQuantizer' | 'LISTABottleneck' | ... and "
            "bottleneck_config={...} (sd_sparse.models.flat_config.flat_bottleneck_config translates).",
            FutureWarning,
            stacklevel=4,
        )
        return flat_bottleneck_config(latent_attention=latent_attention, **flat_options)

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
        """As diffusers' `from_config`; configs saved with the flat `bottleneck_type` options load unchanged."""
        if isinstance(config, dict):
            config = upgrade_flat_config(upgrade_config(config))
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @property
    def downsampling_factor(self) -> int:
        if self.config.architecture == "lasers":
            return 4
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output-layer weight, where the adaptive GAN weight is measured."""
        if self.config.architecture == "lasers":
            return self.decoder.last_layer
        return self.decoder.conv_out.weight

    def _check(self, sample: torch.Tensor) -> None:
        if sample.dim() != 4 or sample.shape[1] != self.config.in_channels:
            raise UserError(f"`sample` must be [B, {self.config.in_channels}, H, W], got {tuple(sample.shape)}.")
        multiple = self.downsampling_factor * max(self.bottleneck.patch_size)
        if sample.shape[2] % multiple or sample.shape[3] % multiple:
            raise UserError(
                f"image height and width ({sample.shape[2]}, {sample.shape[3]}) must be divisible by {multiple} "
                f"(downsampling {self.downsampling_factor} × patch size {max(self.bottleneck.patch_size)})."
            )

    def encode(self, sample: torch.Tensor) -> torch.Tensor:
        """Images `[B, C, H, W]` in [-1, 1] → latents `[B, L, H/f, W/f]` (before the bottleneck)."""
        self._check(sample)
        return self.encoder(sample)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `[B, L, h, w]` → images `[B, C, h·f, w·f]` (no bottleneck applied)."""
        return self.decoder(latents)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """Encode → bottleneck → decode; see `SparseAutoencoderOutput`."""
        latents = self.encode(sample)
        weights = None
        if self.attention is not None:
            weights = self.attention(latents)
            ph, pw = self.bottleneck.patch_size
            per_vector = F.avg_pool2d(weights, (ph, pw)).flatten()
            coded = self.bottleneck(latents, vector_weights=per_vector)
        else:
            coded = self.bottleneck(latents)
        output = SparseAutoencoderOutput(
            sample=self.decode(coded.latents),
            latents=latents,
            coded_latents=coded.latents,
            bottleneck_loss=coded.loss,
            codes=coded.codes,
            usage=coded.usage,
            perplexity=coded.perplexity,
            dead_codes=coded.dead_codes,
            latent_weights=weights,
        )
        return output if return_dict else output.to_tuple()
