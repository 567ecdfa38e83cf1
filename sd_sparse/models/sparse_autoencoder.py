"""`SparseAutoencoder`: encoder + any bottleneck + decoder (DL-VAE, VQ-VAE, SC-VAE are configurations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder, Encoder
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..bottlenecks import DictionaryBottleneck, LISTABottleneck, VectorQuantizer
from ..configuration import SavedClassCheckMixin
from .lasers import LightweightDecoder, LightweightEncoder

ARCHITECTURES = ("lasers", "vqgan")
BOTTLENECKS = ("dictionary", "vq", "lista")


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
    r"""An autoencoder with a latent bottleneck: DL-VAE (`bottleneck_type="dictionary"`), VQ-VAE (`"vq"`)
    or SC-VAE (`"lista"`, optionally with `latent_attention=True`); add a discriminator for the GAN
    variants.

    Parameters:
        in_channels / out_channels (`int`, defaults to 3): image channels.
        architecture (`str`, defaults to `"lasers"`): `"lasers"` (2 strided 4×4 convs + residual
            blocks, downsampling 4) or `"vqgan"` (diffusers' `Encoder`/`Decoder`, downsampling
            2^(len(block_out_channels) − 1)).
        hidden_channels, residual_channels, num_residual_blocks: the LASERS pair (128, 32, 2).
        block_out_channels, layers_per_block, norm_num_groups: the VQGAN pair.
        latent_channels (`int`, defaults to 16): L, latent channels.
        bottleneck_type (`str`, defaults to `"dictionary"`): `"dictionary"`, `"vq"` or `"lista"`.
        num_atoms (`int`, defaults to 512): K atoms / codebook vectors.
        sparsity (`int`, *optional*, defaults to 5): S for the dictionary (and a hard top-S for LISTA
            when set there).
        patch_size (`int`, defaults to 1): latent patch coded as one vector.
        beta (`float`, defaults to 0.25): commitment weight.
        dictionary_update (`str`, defaults to `"gradient"`): dictionary learning mode.
        use_ema, decay: VQ options (EMA 0.99 by default).
        restart_threshold (`float`, defaults to 0.5): codes/atoms whose moving-average share of the
            selections falls below this fraction of the uniform share `1/K` are restarted from the
            worst-coded vectors of the batch (the same rule for VQ and the dictionary; 0 is the
            papers' plain VQ-VAE / DL-VAE). In `benchmarks/reconstruction.py` this adds 0.2–1.9 dB
            and ~80 to the dictionary's usage perplexity.
        num_lista_blocks (`int`, defaults to 5), sparsity_weight (`float`, defaults to 0.1): LISTA.
        latent_attention (`bool`, defaults to `False`): SC-VAE's attention weights on the latent loss
            (LISTA only).
        value_bits (`int`, *optional*): quantize the sparse coefficients to `value_bits`-bit levels inside
            the forward (straight-through), so training sees the codes that are stored (dictionary, and
            LISTA with `sparsity`); None keeps float coefficients.
        value_refit (`bool`, defaults to `False`): the dictionary quantizes its coefficients one at a time,
            re-fitting the rest to what is left (see `DictionaryBottleneck`).
    """

    # the encoder/decoder blocks (LASERS residual blocks, diffusers' Encoder/Decoder) are recomputed in
    # the backward pass after `enable_gradient_checkpointing()`; the bottleneck never is
    _supports_gradient_checkpointing = True

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
        bottleneck_type: str = "dictionary",
        num_atoms: int = 512,
        sparsity: Optional[int] = 5,
        patch_size: Union[int, Sequence[int]] = 1,
        beta: float = 0.25,
        dictionary_update: str = "gradient",
        use_ema: bool = True,
        decay: float = 0.99,
        restart_threshold: float = 0.5,
        num_lista_blocks: int = 5,
        sparsity_weight: float = 0.1,
        latent_attention: bool = False,
        value_bits: Optional[int] = None,
        value_refit: bool = False,
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"`architecture` must be one of {ARCHITECTURES}, got {architecture!r}.")
        if bottleneck_type not in BOTTLENECKS:
            raise ValueError(f"`bottleneck_type` must be one of {BOTTLENECKS}, got {bottleneck_type!r}.")
        if latent_attention and bottleneck_type != "lista":
            raise ValueError("`latent_attention` weights LISTA's per-latent loss: use it with bottleneck_type='lista'.")
        if value_bits is not None and bottleneck_type == "vq":
            raise ValueError(
                "`value_bits` quantizes sparse coefficients: use it with bottleneck_type 'dictionary' or 'lista'."
            )
        if value_refit and bottleneck_type != "dictionary":
            raise ValueError("`value_refit` is a dictionary option: use it with bottleneck_type='dictionary'.")
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
        if bottleneck_type == "dictionary":
            self.bottleneck = DictionaryBottleneck(
                num_atoms,
                latent_channels,
                sparsity or 5,
                patch_size,
                beta,
                dictionary_update=dictionary_update,
                restart_threshold=restart_threshold,
                value_bits=value_bits,
                value_refit=value_refit,
            )
        elif bottleneck_type == "vq":
            self.bottleneck = VectorQuantizer(
                num_atoms, latent_channels, patch_size, beta, use_ema, decay, restart_threshold=restart_threshold
            )
        else:
            self.bottleneck = LISTABottleneck(
                num_atoms,
                latent_channels,
                num_lista_blocks,
                sparsity_weight,
                sparsity=sparsity,
                patch_size=patch_size,
                value_bits=value_bits,
            )
        self.attention = LatentAttention(latent_channels) if latent_attention else None

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
            raise ValueError(f"`sample` must be [B, {self.config.in_channels}, H, W], got {tuple(sample.shape)}.")
        multiple = self.downsampling_factor * max(self.bottleneck.patch_size)
        if sample.shape[2] % multiple or sample.shape[3] % multiple:
            raise ValueError(
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
