"""`AutoencoderKLWithBottleneck`: diffusers' `AutoencoderKL` whose `decode` codes the latents first."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from .coded import CodedAutoencoderMixin


class AutoencoderKLWithBottleneck(CodedAutoencoderMixin, AutoencoderKL):
    r"""An `AutoencoderKL` with a latent bottleneck in front of its decoder: a drop-in `vae=` for every
    diffusers pipeline that uses `AutoencoderKL` (SD 1.x/2.x, SDXL, SD3, img2img, inpainting, ControlNet).

    `decode(z)` codes `z` before decoding, in the space the bottleneck was fitted in: diffusion-space
    latents `(z − shift_factor) · scaling_factor` (see `sd_sparse.autoencoders.scaling`), converted back
    before the decoder. Tiled and sliced decoding code the whole latent first. The bottleneck computes
    in float32 whatever the VAE's dtype.

    Build one from a VAE with `AutoencoderKLWithBottleneck.from_vae(vae, bottleneck)` (or
    `sd_sparse.with_bottleneck`); `save_pretrained` / `from_pretrained` round-trip the VAE's weights
    and config plus the bottleneck's class, config and weights (safetensors).

    Parameters:
        in_channels ... mid_block_add_attention: as in `diffusers.AutoencoderKL` (same defaults).
        bottleneck_class (`str`, defaults to `"DictionaryBottleneck"`): the sd_sparse bottleneck class.
        bottleneck_config (`dict`, *optional*): its config; `latent_channels` defaults to the VAE's and
            must equal it.

    Example:
        >>> vae = AutoencoderKLWithBottleneck.from_vae(pipe.vae, bottleneck)
        >>> pipe = StableDiffusionPipeline.from_pretrained(model_id, vae=vae)
        >>> out = vae.code(images, return_reference=True)  # codes, latent PSNR, bits per position
    """

    _vae_class = AutoencoderKL

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: Tuple[str, ...] = ("DownEncoderBlock2D",),
        up_block_types: Tuple[str, ...] = ("UpDecoderBlock2D",),
        block_out_channels: Tuple[int, ...] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        scaling_factor: float = 0.18215,
        shift_factor: Optional[float] = None,
        latents_mean: Optional[Tuple[float, ...]] = None,
        latents_std: Optional[Tuple[float, ...]] = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        bottleneck_class: str = "DictionaryBottleneck",
        bottleneck_config: Optional[dict] = None,
    ):
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            latents_mean=latents_mean,
            latents_std=latents_std,
            force_upcast=force_upcast,
            use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )
        self._build_bottleneck(bottleneck_class, bottleneck_config, latent_channels)

    @apply_forward_hook
    def decode(
        self,
        z: torch.Tensor,
        return_dict: bool = True,
        generator: Optional[torch.Generator] = None,
        apply_bottleneck: bool = True,
    ) -> Union[DecoderOutput, Tuple[torch.Tensor]]:
        """Decodes latents `z` `[B, C, h, w]` (the VAE's own space, as pipelines pass them) into images
        `[B, 3, H, W]`, coding them with the bottleneck first unless `apply_bottleneck=False`.

        Returns a `DecoderOutput`, or `(sample,)` with `return_dict=False`, as `AutoencoderKL.decode`.
        """
        if apply_bottleneck:
            z, _ = self.code_vae_latents(z)
        return super().decode(z, return_dict=return_dict, generator=generator)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> Union[DecoderOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """Images `[B, 3, H, W]` → coded reconstruction `[B, 3, H, W]`, with the bottleneck's loss in
        `commit_loss` (as `VQModel`); `(sample, commit_loss)` with `return_dict=False`."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        coded, out = self.code_vae_latents(z)
        dec = self.decode(coded, apply_bottleneck=False).sample
        if not return_dict:
            return dec, out.loss
        return DecoderOutput(sample=dec, commit_loss=out.loss)
