"""`AutoencoderTinyWithBottleneck`: diffusers' `AutoencoderTiny` (TAESD family) whose `decode` codes first."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from diffusers import AutoencoderTiny
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from .coded import CodedAutoencoderMixin


class AutoencoderTinyWithBottleneck(CodedAutoencoderMixin, AutoencoderTiny):
    r"""An `AutoencoderTiny` (TAESD, TAESDXL, TAESD3, TAEF1) with a latent bottleneck in front of its
    decoder: a drop-in `vae=` wherever diffusers pipelines accept `AutoencoderTiny`.

    Coding converts with this VAE's own config, as the pipelines do before `decode`: TAESD's latents
    for SD 1.x/SDXL are already in diffusion space (`scaling_factor` 1, `shift_factor` 0), while a
    tiny VAE configured with other factors (SD3/Flux-style) is converted like
    `AutoencoderKLWithBottleneck`. Tiled and sliced decoding code the whole latent first; the
    bottleneck computes in float32.

    Parameters:
        in_channels ... shift_factor: as in `diffusers.AutoencoderTiny` (same defaults).
        bottleneck_class (`str`, defaults to `"DictionaryBottleneck"`), bottleneck_config (`dict`,
            *optional*): as in `AutoencoderKLWithBottleneck`.
    """

    _vae_class = AutoencoderTiny

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        encoder_block_out_channels: Tuple[int, ...] = (64, 64, 64, 64),
        decoder_block_out_channels: Tuple[int, ...] = (64, 64, 64, 64),
        act_fn: str = "relu",
        upsample_fn: str = "nearest",
        latent_channels: int = 4,
        upsampling_scaling_factor: int = 2,
        num_encoder_blocks: Tuple[int, ...] = (1, 3, 3, 3),
        num_decoder_blocks: Tuple[int, ...] = (3, 3, 3, 1),
        latent_magnitude: int = 3,
        latent_shift: float = 0.5,
        force_upcast: bool = False,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        bottleneck_class: str = "DictionaryBottleneck",
        bottleneck_config: Optional[dict] = None,
    ):
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            encoder_block_out_channels=encoder_block_out_channels,
            decoder_block_out_channels=decoder_block_out_channels,
            act_fn=act_fn,
            upsample_fn=upsample_fn,
            latent_channels=latent_channels,
            upsampling_scaling_factor=upsampling_scaling_factor,
            num_encoder_blocks=num_encoder_blocks,
            num_decoder_blocks=num_decoder_blocks,
            latent_magnitude=latent_magnitude,
            latent_shift=latent_shift,
            force_upcast=force_upcast,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
        )
        self._build_bottleneck(bottleneck_class, bottleneck_config, latent_channels)

    @apply_forward_hook
    def decode(
        self,
        x: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
        apply_bottleneck: bool = True,
    ) -> Union[DecoderOutput, Tuple[torch.Tensor]]:
        """Decodes latents `x` `[B, C, h, w]` into images `[B, 3, H, W]`, coding them with the bottleneck
        first unless `apply_bottleneck=False`. Returns a `DecoderOutput`, or `(sample,)`."""
        if apply_bottleneck:
            x, _ = self.code_vae_latents(x)
        return super().decode(x, generator=generator, return_dict=return_dict)

    def forward(
        self, sample: torch.Tensor, return_dict: bool = True
    ) -> Union[DecoderOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """Images `[B, 3, H, W]` → coded reconstruction, the bottleneck's loss in `commit_loss`;
        `(sample, commit_loss)` with `return_dict=False`. (The bottleneck replaces `AutoencoderTiny`'s
        8-bit rounding of the latents.)"""
        z = self.encode(sample).latents
        coded, out = self.code_vae_latents(z)
        dec = self.decode(coded, apply_bottleneck=False).sample
        if not return_dict:
            return dec, out.loss
        return DecoderOutput(sample=dec, commit_loss=out.loss)
