"""`TAESDAutoencoder`: the tiny autoencoders of the TAESD family (TAESD, TAESDXL, TAESD3, TAEF1, TAEF2) as a
diffusers model, downsampling 8.

TAESD-family models are small distilled stand-ins for a diffusion model's VAE: their latents live in that
VAE's latent space (TAEF2: FLUX.2's 32-channel latents; TAEF1, TAESD3: 16 channels; TAESD: SD's 4). The layout
(the published one, written out here with readable names):

- encoder: 3×3 conv → block → three stages of (3×3 conv, stride 2, no bias → 3 blocks) → 3×3 conv to the
  latent channels;
- decoder: soft clamp `tanh(z / 3) · 3` → 3×3 conv → ReLU → three stages of (3 blocks → nearest upsampling ×2
  → 3×3 conv, no bias) → block → 3×3 conv to RGB;
- block: `ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x)`, all 3×3 convs of `width` channels; with
  `midblock_group_norm` (TAEF2) the 3 deepest encoder blocks and the 3 first decoder blocks first add a
  global branch `x + conv1×1(ReLU(GroupNorm(4 groups)(conv1×1(x))))` (4·width hidden channels).

The published weights are `nn.Sequential` state dicts; `taesd_weights.py` maps their keys onto the names here
(`from_taesd_weights`, `to_taesd_state_dicts`). Images are diffusers' [-1, 1] (the published modules take and
return [0, 1]); latents are the VAE's own (`scaling_factor` 1, `shift_factor` 0 by default, as for diffusers'
`AutoencoderTiny`).
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..errors import UserError
from .taesd_weights import BLOCKS_PER_STAGE, NUM_STAGES, read_taesd_weights, to_taesd_state_dicts

__all__ = ["TAESDAutoencoder", "TAESDBlock", "TAESDDecoder", "TAESDEncoder"]

#: the spatial factor of every layout this class covers (three stride-2 stages)
DOWNSAMPLING = 8
#: the soft clamp of the latents before decoding: `tanh(z / LATENT_CLAMP) · LATENT_CLAMP`
LATENT_CLAMP = 3.0
#: config entries set by `__init__` (not its parameters) because diffusers' pipelines read them
_PIPELINE_CONFIG_KEYS = ("block_out_channels", "force_upcast")


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class TAESDGroupNormBranch(nn.Module):
    """TAEF2's global branch of a block: `conv1×1 → GroupNorm(4) → ReLU → conv1×1`, width → 4·width → width."""

    def __init__(self, channels: int, groups: int = 4, expansion: int = 4):
        super().__init__()
        hidden = channels * expansion
        self.expand = nn.Conv2d(channels, hidden, 1, bias=False)
        self.norm = nn.GroupNorm(groups, hidden)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(F.relu(self.norm(self.expand(x))))


class TAESDBlock(nn.Module):
    """Residual block `[B, C, h, w] → [B, C, h, w]`: `ReLU(conv3(ReLU(conv2(ReLU(conv1(x))))) + x)`, after
    `x = x + group_norm_branch(x)` when it has the branch."""

    def __init__(self, channels: int, group_norm: bool = False):
        super().__init__()
        self.group_norm_branch = TAESDGroupNormBranch(channels) if group_norm else None
        self.conv1 = _conv3x3(channels, channels)
        self.conv2 = _conv3x3(channels, channels)
        self.conv3 = _conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.group_norm_branch is not None:
            x = x + self.group_norm_branch(x)
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        return F.relu(self.conv3(h) + x)


class TAESDDownStage(nn.Module):
    """Halves the side: a stride-2 3×3 conv (no bias), then `BLOCKS_PER_STAGE` blocks."""

    def __init__(self, channels: int, group_norm: bool = False):
        super().__init__()
        self.downsample = _conv3x3(channels, channels, stride=2, bias=False)
        self.blocks = nn.ModuleList(TAESDBlock(channels, group_norm) for _ in range(BLOCKS_PER_STAGE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class TAESDUpStage(nn.Module):
    """Doubles the side: `BLOCKS_PER_STAGE` blocks, nearest upsampling ×2, a 3×3 conv (no bias)."""

    def __init__(self, channels: int, group_norm: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(TAESDBlock(channels, group_norm) for _ in range(BLOCKS_PER_STAGE))
        self.upsample_conv = _conv3x3(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.upsample_conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TAESDEncoder(nn.Module):
    """Images `[B, 3, H, W]` in [0, 1] → latents `[B, latent_channels, H/8, W/8]` (sides rounded up)."""

    def __init__(self, latent_channels: int, width: int, group_norm: bool):
        super().__init__()
        self.conv_in = _conv3x3(3, width)
        self.block_in = TAESDBlock(width)
        # the group-norm branch is in the deepest stage only
        self.stages = nn.ModuleList(
            TAESDDownStage(width, group_norm and i == NUM_STAGES - 1) for i in range(NUM_STAGES)
        )
        self.conv_out = _conv3x3(width, latent_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_in(self.conv_in(x))
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(x)


class TAESDDecoder(nn.Module):
    """Latents `[B, latent_channels, h, w]` → images `[B, 3, 8h, 8w]` in about [0, 1] (not clamped)."""

    def __init__(self, latent_channels: int, width: int, group_norm: bool):
        super().__init__()
        self.conv_in = _conv3x3(latent_channels, width)
        # the group-norm branch is in the first (deepest) stage only
        self.stages = nn.ModuleList(TAESDUpStage(width, group_norm and i == 0) for i in range(NUM_STAGES))
        self.block_out = TAESDBlock(width)
        self.conv_out = _conv3x3(width, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv_in(torch.tanh(z / LATENT_CLAMP) * LATENT_CLAMP))
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(self.block_out(x))


class TAESDAutoencoder(ModelMixin, ConfigMixin):
    """A TAESD-family tiny autoencoder (downsampling 8): TAESD, TAESDXL, TAESD3, TAEF1 (`midblock_group_norm=False`)
    and TAEF2 (`midblock_group_norm=True`, FLUX.2's 32-channel latents, the defaults).

    Load the published weights with `TAESDAutoencoder.from_taesd_weights("taef2_encoder.pth",
    "taef2_decoder.pth")` (or `sd_sparse.autoencoders.loading.load_vae(folder)`); `save_pretrained` /
    `from_pretrained` as any diffusers model. Takes a bottleneck like diffusers' VAEs:
    `sd_sparse.with_bottleneck(vae, bottleneck)` → `TAESDAutoencoderWithBottleneck`.

    Parameters:
        latent_channels (`int`, defaults to 32): channels of the latents.
        width (`int`, defaults to 64): channels of every block.
        midblock_group_norm (`bool`, defaults to `True`): the group-norm branch in the 3 deepest encoder blocks
            and the 3 first decoder blocks (TAEF2).
        scaling_factor (`float`, defaults to 1.0), shift_factor (`float`, defaults to 0.0): diffusion-space latents
            are `(z − shift_factor) · scaling_factor` (`sd_sparse.autoencoders.scaling`).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 32,
        width: int = 64,
        midblock_group_norm: bool = True,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
    ):
        super().__init__()
        for name, value in (("latent_channels", latent_channels), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"`{name}` must be a positive int, got {value!r}.")
        self.encoder = TAESDEncoder(latent_channels, width, midblock_group_norm)
        self.decoder = TAESDDecoder(latent_channels, width, midblock_group_norm)
        self.spatial_compression_ratio = DOWNSAMPLING
        # what diffusers' pipelines read from a VAE's config (their `vae_scale_factor`, upcasting), as `AutoencoderTiny`
        self.register_to_config(block_out_channels=(width,) * (NUM_STAGES + 1), force_upcast=False)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' own, leaving out the config entries `__init__` registers for pipelines (no warning about them)."""
        config_dict = {k: v for k, v in config_dict.items() if k not in _PIPELINE_CONFIG_KEYS}
        return super().extract_init_dict(config_dict, **kwargs)

    def _check(self, name: str, tensor, channels: int, what: str) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or tensor.shape[1] != channels:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UserError(f"`{name}` must be a tensor [B, {channels}, H, W] of {what}, got {got}.")

    @apply_forward_hook
    def encode(self, sample: torch.Tensor, return_dict: bool = True) -> Union[AutoencoderTinyOutput, Tuple]:
        """Images `[B, 3, H, W]` in [-1, 1] → latents `[B, latent_channels, ⌈H/8⌉, ⌈W/8⌉]` (the VAE's own space),
        as `AutoencoderTinyOutput(latents)` (`(latents,)` with `return_dict=False`)."""
        self._check("sample", sample, 3, "images in [-1, 1]")
        latents = self.encoder(sample.add(1).div(2))
        return AutoencoderTinyOutput(latents=latents) if return_dict else (latents,)

    @apply_forward_hook
    def decode(
        self, z: torch.Tensor, return_dict: bool = True, generator: Optional[torch.Generator] = None
    ) -> Union[DecoderOutput, Tuple]:
        """Latents `[B, latent_channels, h, w]` (the VAE's own space) → images `[B, 3, 8h, 8w]` in about [-1, 1]
        (not clamped), as `DecoderOutput(sample)` (`(sample,)` with `return_dict=False`). `generator` is unused
        (the decoder is deterministic; pipelines pass one)."""
        self._check("z", z, self.config.latent_channels, "latents")
        images = self.decoder(z).mul(2).sub(1)
        return DecoderOutput(sample=images) if return_dict else (images,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> Union[DecoderOutput, Tuple]:
        """Images `[B, 3, H, W]` in [-1, 1] → their reconstruction `DecoderOutput(sample)` `[B, 3, H, W]` (H, W
        multiples of 8)."""
        latents = self.encode(sample).latents
        return self.decode(latents, return_dict=return_dict)

    # -- the published weight files (`taesd_weights.py`) ----------------------------------------------------
    @classmethod
    def _meta_state_dict(cls, config: dict) -> dict:
        """The state dict (meta tensors: names and shapes only) of a model of `config`."""
        with torch.device("meta"):
            return cls(**config).state_dict()

    @classmethod
    def from_taesd_weights(
        cls, encoder_path: str, decoder_path: str, torch_dtype: Optional[torch.dtype] = torch.float32
    ) -> TAESDAutoencoder:
        """The model from the published `*_encoder.pth` and `*_decoder.pth` (state dicts of `nn.Sequential`
        modules, e.g. `taef2_encoder.pth`): latent channels, width and the group-norm branch are read from
        them. In eval mode, in `torch_dtype` (None: the files' dtype). `ValueError` naming the file for a
        missing file, one that is not a TAESD-family state dict, or an encoder and decoder that do not match."""
        config, state = read_taesd_weights(encoder_path, decoder_path, cls._meta_state_dict)
        dtype = torch_dtype or next(iter(state.values())).dtype
        with torch.device("meta"):
            model = cls(**config)
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
        return model.eval()

    def to_taesd_state_dicts(self) -> Tuple[dict, dict]:
        """(encoder, decoder) state dicts in the published `nn.Sequential` layout (what `from_taesd_weights` reads)."""

        return to_taesd_state_dicts(self.state_dict())

    def save_taesd_weights(self, encoder_path: str, decoder_path: str) -> None:
        """Writes `to_taesd_state_dicts()` to `encoder_path` and `decoder_path` (`torch.save`), in this model's dtype."""
        encoder, decoder = self.to_taesd_state_dicts()
        torch.save(encoder, encoder_path)
        torch.save(decoder, decoder_path)
