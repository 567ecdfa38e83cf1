"""`DictionaryLatentPipeline`: Stable Diffusion whose VAE codes the generated latents with a bottleneck."""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..autoencoders import to_vae_space, with_bottleneck
from ..autoencoders.coded import CodedAutoencoderMixin
from ..autoencoders.coded_classes import AutoencoderKLWithBottleneck, AutoencoderTinyWithBottleneck
from ..bottleneck_classes import bottleneck_class
from ..bottlenecks import Bottleneck
from ..errors import UserError

_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")


@dataclass
class DictionaryLatentPipelineOutput(StableDiffusionPipelineOutput):
    """`StableDiffusionPipelineOutput` plus what the bottleneck did.

    Args:
        images: the images decoded from the coded latents; for `output_type="latent"` the generated
            latents `[B, C, h, w]`, which the coded VAE codes when it decodes them (as with any diffusers
            pipeline: `vae.decode(latents / scaling_factor)` gives this pipeline's images).
        nsfw_content_detected: as in Stable Diffusion.
        reference_images (*optional*): the decode of the same latents without the bottleneck, in the
            same `output_type` (with `return_reference=True`; for `"latent"`, the same latents).
        codes (`Codes`, *optional*): the bottleneck's codes of the whole batch (with `return_codes=True`).
        latent_psnr (`torch.Tensor` `[B]`, *optional*): PSNR of coded vs generated latents per image.
        bits_per_position (`float`, *optional*): storage per latent position of the codes.
    """

    reference_images: Any | None = None
    codes: Any | None = None
    latent_psnr: torch.Tensor | None = None
    bits_per_position: float | None = None


class DictionaryLatentPipeline(StableDiffusionPipeline):
    r"""Text-to-image Stable Diffusion whose VAE codes the generated latents with a bottleneck
    (`DictionaryBottleneck`, `VectorQuantizer` or `LISTABottleneck`) before decoding.

    The bottleneck lives in the VAE: `vae` is an `AutoencoderKLWithBottleneck` (or
    `AutoencoderTinyWithBottleneck`), and `pipe.bottleneck` reads `pipe.vae.bottleneck` (setting it
    re-wraps the VAE). It is not a component of its own, so the components are exactly Stable
    Diffusion's and `pipe.to(dtype)` casts every one of them (the bottleneck inside the VAE stays
    float32). Once the
    bottleneck is fitted its coding is deterministic, so no fine-tuning of the VAE or U-Net is needed
    (LASERS, Table 8). Over `StableDiffusionPipeline` it adds the outputs `reference_images`, `codes`,
    `latent_psnr` and `bits_per_position`.

    Parameters:
        vae: a coded VAE (`with_bottleneck(vae, bottleneck)`), or a plain `AutoencoderKL` /
            `AutoencoderTiny` (left plain until `pipe.bottleneck = bottleneck`).

    The other components are those of `StableDiffusionPipeline`. `from_pretrained(path, bottleneck=b)` and
    `from_pipe(pipe, bottleneck=b)` wrap the loaded VAE.
    """

    def __init__(
        self,
        vae: Union[AutoencoderKLWithBottleneck, AutoencoderTinyWithBottleneck, AutoencoderKL, AutoencoderTiny],
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        safety_checker: StableDiffusionSafetyChecker,
        feature_extractor: CLIPImageProcessor,
        image_encoder: CLIPVisionModelWithProjection = None,
        requires_safety_checker: bool = True,
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

    @property
    def bottleneck(self) -> Optional[Bottleneck]:
        """The coded VAE's bottleneck (None with a plain VAE). Setting it re-wraps `vae`; None unwraps it."""
        return getattr(self.vae, "bottleneck", None) if isinstance(self.vae, CodedAutoencoderMixin) else None

    @bottleneck.setter
    def bottleneck(self, bottleneck: Optional[Bottleneck]) -> None:
        if bottleneck is None:
            if isinstance(self.vae, CodedAutoencoderMixin):
                self.vae = self.vae.without_bottleneck()
        else:
            _check_bottleneck(bottleneck, self.vae)
            self.vae = with_bottleneck(self.vae, bottleneck)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        bottleneck: Optional[Bottleneck] = None,
        **kwargs,
    ):
        """As `DiffusionPipeline.from_pretrained` (whose keyword arguments `kwargs` are), plus `bottleneck`,
        which wraps the folder's VAE (or replaces a coded one's bottleneck). Folders saved by earlier
        sd_sparse versions, with a separate `bottleneck/` component, load too."""
        if bottleneck is not None:
            _check_bottleneck(bottleneck, None)
        legacy = _legacy_bottleneck(cls, pretrained_model_name_or_path, kwargs)
        token = _LOADING_LEGACY.set(legacy is not None)
        try:
            pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        finally:
            _LOADING_LEGACY.reset(token)
        bottleneck = bottleneck if bottleneck is not None else legacy
        if bottleneck is not None:
            pipe.bottleneck = bottleneck
        return pipe

    @classmethod
    def from_pipe(cls, pipeline, bottleneck: Optional[Bottleneck] = None, **kwargs):
        """As `DiffusionPipeline.from_pipe` (whose keyword arguments `kwargs` are), plus `bottleneck`, which
        wraps the VAE (sharing its weights) or replaces a coded one's bottleneck; `pipeline` is left alone."""
        if bottleneck is not None:
            _check_bottleneck(bottleneck, getattr(pipeline, "vae", None))
        pipe = super().from_pipe(pipeline, **kwargs)
        if bottleneck is not None:
            pipe.bottleneck = bottleneck
        return pipe

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' own, refusing folders with a separate `bottleneck/` component (earlier sd_sparse) unless
        `DictionaryLatentPipeline.from_pretrained`, which reads that component, is loading them."""
        entry = config_dict.get("bottleneck") if isinstance(config_dict, dict) else None
        if isinstance(entry, (list, tuple)) and not _LOADING_LEGACY.get():
            raise UserError(
                f"this pipeline folder stores its bottleneck as a separate `bottleneck/` component {list(entry)} "
                "(saved by an earlier sd_sparse): load it with `DictionaryLatentPipeline.from_pretrained(path)`, "
                "which reads that component, and `save_pretrained` it again to update the folder."
            )
        if entry is not None:
            config_dict = {k: v for k, v in config_dict.items() if k != "bottleneck"}
        return super().extract_init_dict(config_dict, **kwargs)

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, List[str]] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_inference_steps: int = 50,
        timesteps: List[int] = None,
        sigmas: List[float] = None,
        guidance_scale: float = 7.5,
        negative_prompt: Optional[Union[str, List[str]]] = None,
        num_images_per_prompt: Optional[int] = 1,
        eta: float = 0.0,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        ip_adapter_image: Optional[PipelineImageInput] = None,
        ip_adapter_image_embeds: Optional[List[torch.Tensor]] = None,
        output_type: Optional[str] = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: Optional[Dict[str, Any]] = None,
        guidance_rescale: float = 0.0,
        clip_skip: Optional[int] = None,
        callback_on_step_end: Optional[
            Union[Callable[[int, int, Dict], None], PipelineCallback, MultiPipelineCallbacks]
        ] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["latents"],  # noqa: B006 (diffusers' signature)
        return_reference: bool = False,
        return_codes: bool = False,
    ):
        r"""Generates images whose latents went through the bottleneck.

        Args:
            prompt (`str` or `List[str]`, *optional*): what to generate; or pass `prompt_embeds`.
            height (`int`, *optional*), width (`int`, *optional*): image size in pixels; defaults to the
                U-Net's `sample_size` times the VAE's downsampling factor.
            num_inference_steps (`int`, defaults to 50): denoising steps.
            timesteps (`List[int]`, *optional*): custom descending timesteps, for schedulers whose
                `set_timesteps` accepts them (instead of `num_inference_steps`).
            sigmas (`List[float]`, *optional*): custom sigmas, for schedulers that accept them.
            guidance_scale (`float`, defaults to 7.5): classifier-free guidance weight; guidance is on
                when it is above 1.
            negative_prompt (`str` or `List[str]`, *optional*): what to steer away from (with guidance).
            num_images_per_prompt (`int`, defaults to 1): images generated for each prompt.
            eta (`float`, defaults to 0.0): DDIM's η (ignored by other schedulers).
            generator (`torch.Generator` or a list of them, *optional*): makes generation deterministic.
            latents (`torch.Tensor` `[B, C, h, w]`, *optional*): initial noisy latents (sampled otherwise).
            prompt_embeds (`torch.Tensor`, *optional*): precomputed text embeddings instead of `prompt`.
            negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed negative text embeddings.
            ip_adapter_image (`PipelineImageInput`, *optional*): image prompt for a loaded IP-Adapter.
            ip_adapter_image_embeds (`List[torch.Tensor]`, *optional*): precomputed IP-Adapter image
                embeddings, one tensor `[B, num_images, dim]` per adapter.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"`, or `"latent"` for the generated
                diffusion-space latents (uncoded: the coded VAE codes them when decoding; the codes and
                `latent_psnr` are reported all the same, `bottleneck.decode(codes)` gives the coded latents).
            return_dict (`bool`, defaults to `True`): return a `DictionaryLatentPipelineOutput` rather
                than a tuple.
            cross_attention_kwargs (`dict`, *optional*): passed to the attention processors (e.g. LoRA `scale`).
            guidance_rescale (`float`, defaults to 0.0): guidance rescale factor (Lin et al. 2023), against
                over-exposure with zero terminal SNR.
            clip_skip (`int`, *optional*): CLIP layers to skip for the prompt embeddings.
            callback_on_step_end (callable, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                called after each denoising step as `callback_on_step_end(pipe, step, timestep, tensors)`.
            callback_on_step_end_tensor_inputs (`List[str]`, defaults to `["latents"]`): the tensors
                passed to `callback_on_step_end` (from `_callback_tensor_inputs`).
            return_reference (`bool`, defaults to `False`): also decode the latents without the
                bottleneck (`output.reference_images`), to see its cost at a glance.
            return_codes (`bool`, defaults to `False`): also return the codes (`output.codes`).

        Returns:
            `DictionaryLatentPipelineOutput`, or with `return_dict=False` the tuple
            `(images, nsfw_content_detected)`, plus `reference_images` when asked for.
        """
        for name, value in (("return_reference", return_reference), ("return_codes", return_codes)):
            if not isinstance(value, bool):
                raise UserError(f"`{name}` must be a bool, got {value!r}.")
        generated = super().__call__(
            prompt=prompt,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            timesteps=timesteps,
            sigmas=sigmas,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            num_images_per_prompt=num_images_per_prompt,
            eta=eta,
            generator=generator,
            latents=latents,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            ip_adapter_image=ip_adapter_image,
            ip_adapter_image_embeds=ip_adapter_image_embeds,
            output_type="latent",
            return_dict=True,
            cross_attention_kwargs=cross_attention_kwargs,
            guidance_rescale=guidance_rescale,
            clip_skip=clip_skip,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        generated_latents = generated.images
        coded_vae = isinstance(self.vae, CodedAutoencoderMixin)
        if coded_vae:
            coded = self.vae.code(latents=generated_latents, return_images=False)
            coded_latents, psnr, bits = coded.latents, coded.latent_psnr, coded.bits_per_position
            codes = coded.codes if return_codes else None
        else:
            coded_latents, codes, psnr, bits = generated_latents, None, None, None

        reference = None
        if output_type == "latent":  # what vae.decode(latents / scaling_factor) turns into this pipeline's images
            images, has_nsfw = generated_latents, None
            reference = generated_latents if return_reference else None
        else:
            images, has_nsfw = self._decode_coded(coded_latents, output_type, generator, check_safety=True)
            if return_reference:
                reference, _ = self._decode_coded(generated_latents, output_type, generator, check_safety=False)
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

    def _decode_coded(self, latents: torch.Tensor, output_type: str, generator, check_safety: bool):
        """Diffusion-space latents that need no further coding → postprocessed images, NSFW flags."""
        extra = {"apply_bottleneck": False} if isinstance(self.vae, CodedAutoencoderMixin) else {}
        image = self.vae.decode(to_vae_space(self.vae, latents), return_dict=False, generator=generator, **extra)[0]
        has_nsfw = None
        if check_safety:
            image, has_nsfw = self.run_safety_checker(image, self._execution_device, latents.dtype)
        denormalize = [True] * image.shape[0] if has_nsfw is None else [not flagged for flagged in has_nsfw]
        return self.image_processor.postprocess(image, output_type=output_type, do_denormalize=denormalize), has_nsfw


#: set while `DictionaryLatentPipeline.from_pretrained` loads a folder with a separate `bottleneck/` component
_LOADING_LEGACY = contextvars.ContextVar("sd_sparse_loading_legacy_pipeline", default=False)


def _check_bottleneck(bottleneck, vae) -> None:
    """`ValueError` naming `bottleneck` before anything is loaded or changed."""
    from ..autoencoders.coded import check_channels
    from ..autoencoders.families import latent_channels

    if not isinstance(bottleneck, Bottleneck):
        raise UserError(f"`bottleneck` must be an sd_sparse Bottleneck, got {type(bottleneck).__name__}.")
    if vae is not None:
        check_channels(bottleneck.config.latent_channels, latent_channels(vae))


def _legacy_bottleneck(cls, path, kwargs) -> Optional[Bottleneck]:
    """The bottleneck of a folder saved with a separate `bottleneck/` component (sd_sparse 0.1), or None."""
    hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    try:
        index = cls.load_config(path, **hub)
    except (OSError, ValueError):
        return None  # not a pipeline folder: let diffusers report it
    entry = index.get("bottleneck")
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[0] is None:
        return None
    loader = bottleneck_class(entry[1])
    if os.path.isdir(os.fspath(path)):
        return loader.from_pretrained(os.path.join(os.fspath(path), "bottleneck"))
    return loader.from_pretrained(path, subfolder="bottleneck", **hub)
