"""`DictionaryLatentPipeline`: Stable Diffusion whose generated latents pass through a bottleneck."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Union

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..bottlenecks import Bottleneck, DictionaryBottleneck, LISTABottleneck, VectorQuantizer
from ..stable_diffusion.autoencoder import AutoencoderKLWithBottleneck


@dataclass
class DictionaryLatentPipelineOutput(StableDiffusionPipelineOutput):
    """`StableDiffusionPipelineOutput` plus what the bottleneck did.

    Args:
        images: the images decoded from the coded latents (or the coded latents for
            `output_type="latent"`).
        nsfw_content_detected: as in Stable Diffusion.
        reference_images (*optional*): the decode of the same latents without the bottleneck, in
            the same `output_type` (with `return_reference=True`).
        codes (*optional*): the bottleneck's codes of the whole batch (with `return_codes=True`).
        latent_psnr (`torch.Tensor` `[B]`, *optional*): PSNR of coded vs generated latents per image.
        bits_per_position (`float`, *optional*): storage per latent position of the codes.
    """

    reference_images: Any | None = None
    codes: Any | None = None
    latent_psnr: torch.Tensor | None = None
    bits_per_position: float | None = None


class DictionaryLatentPipeline(StableDiffusionPipeline):
    r"""Text-to-image Stable Diffusion with a latent bottleneck (`DictionaryBottleneck`,
    `VectorQuantizer` or `LISTABottleneck`) between the denoiser and the VAE decoder.

    Every argument of `StableDiffusionPipeline.__call__` keeps working; the generated latents are
    coded by `bottleneck` before decoding. Once the bottleneck is fitted its coding is
    deterministic, so no fine-tuning of the VAE or U-Net is needed (LASERS, Table 8).

    Parameters:
        bottleneck ([`~sd_sparse.Bottleneck`], *optional*): the latent bottleneck; without one the
            pipeline decodes the latents unchanged.
        (the other components are those of `StableDiffusionPipeline`)
    """

    _optional_components = StableDiffusionPipeline._optional_components + ["bottleneck"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        safety_checker: StableDiffusionSafetyChecker,
        feature_extractor: CLIPImageProcessor,
        image_encoder: CLIPVisionModelWithProjection = None,
        requires_safety_checker: bool = True,
        # a Union of the concrete classes: diffusers' from_pipe matches component types exactly
        bottleneck: Union[DictionaryBottleneck, VectorQuantizer, LISTABottleneck] = None,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )
        if bottleneck is not None and not isinstance(bottleneck, Bottleneck):
            raise ValueError(f"`bottleneck` must be an sd_sparse Bottleneck, got {type(bottleneck).__name__}.")
        if bottleneck is not None and vae is not None and bottleneck.config.embedding_dim != vae.config.latent_channels:
            raise ValueError(
                f"`bottleneck` codes {bottleneck.config.embedding_dim}-channel latents but the VAE makes "
                f"{vae.config.latent_channels}-channel ones."
            )
        self.register_modules(bottleneck=bottleneck)

    @torch.no_grad()
    def __call__(
        self,
        *args,
        output_type: str | None = "pil",
        return_dict: bool = True,
        return_reference: bool = False,
        return_codes: bool = False,
        **kwargs,
    ):
        """As `StableDiffusionPipeline.__call__`, plus:

        Args:
            return_reference (`bool`, defaults to `False`): also decode the latents without the
                bottleneck (`output.reference_images`), to see the bottleneck's cost at a glance.
            return_codes (`bool`, defaults to `False`): also return the codes (`output.codes`).

        Returns:
            `DictionaryLatentPipelineOutput`, or a tuple `(images, nsfw_content_detected)` with
            `return_dict=False` (plus `reference_images` when asked for).
        """
        for name, value in (("return_reference", return_reference), ("return_codes", return_codes)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be a bool, got {value!r}.")
        generated = super().__call__(*args, output_type="latent", return_dict=True, **kwargs)
        latents = generated.images
        if self.bottleneck is None:
            coded, codes, psnr, bits = latents, None, None, None
        else:
            result = AutoencoderKLWithBottleneck(self.vae, self.bottleneck).code(latents)
            coded = result.latents.to(latents.dtype)
            codes = result.codes if return_codes else None
            from ..metrics import bits_per_position, latent_psnr

            psnr, bits = latent_psnr(latents, coded), bits_per_position(self.bottleneck)

        reference = None
        if output_type == "latent":
            images, has_nsfw = coded, None
            reference = latents if return_reference else None
        else:
            images, has_nsfw = self._decode(coded, output_type, kwargs.get("generator"))
            if return_reference:
                reference, _ = self._decode(latents, output_type, kwargs.get("generator"), check_safety=False)
        self.maybe_free_model_hooks()

        if not return_dict:
            return (images, has_nsfw, reference) if return_reference else (images, has_nsfw)
        return DictionaryLatentPipelineOutput(
            images=images,
            nsfw_content_detected=has_nsfw,
            reference_images=reference,
            codes=codes,
            latent_psnr=psnr,
            bits_per_position=bits,
        )

    def _decode(self, latents: torch.Tensor, output_type: str, generator, check_safety: bool = True):
        image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False, generator=generator)[0]
        has_nsfw: List[bool] | None = None
        if check_safety:
            image, has_nsfw = self.run_safety_checker(image, self._execution_device, latents.dtype)
        denormalize = [True] * image.shape[0] if has_nsfw is None else [not flagged for flagged in has_nsfw]
        return self.image_processor.postprocess(image, output_type=output_type, do_denormalize=denormalize), has_nsfw
