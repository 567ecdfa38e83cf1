"""Tiny offline components for TESTS only: tiny SDXL, SD3, ControlNet, TAESD and code-prior (`CodePriorPipeline`)
components with random weights.

Nothing here downloads anything; everything is built from configs. Run-time code never imports this module:
the tiny Stable Diffusion that the demo and the fit script use by default, its tokenizer and the SD-shaped VAE
live in `sd_sparse.offline` (re-exported here for the tests' convenience), the reference VAE in
`sd_sparse.autoencoders.reference`, the shipped photographs in `sd_sparse.data`.
"""

from __future__ import annotations

import torch

# re-exported for the tests (and older imports): these live where run-time code can use them
from .autoencoders.reference import REFERENCE_VAE, reference_vae_path  # noqa: F401
from .offline import (  # noqa: F401
    TINY_SD_VERSION,
    byte_symbols,
    sd_vae_architecture,
    tiny_clip_text_config,
    tiny_clip_tokenizer,
    tiny_stable_diffusion_components,
    tiny_stable_diffusion_path,
    tiny_unet,
)

_byte_symbols = byte_symbols  # the older private name, still imported by tests/pipelines/tiny_pipelines.py

# ----------------------------------------------------------------------------------------------
# Tiny SDXL, SD3, ControlNet and TAESD components (random weights, built from configs)
# ----------------------------------------------------------------------------------------------


def _tiny_vae(latent_channels: int = 4, scaling_factor: float = 0.18215, shift_factor=None, **kwargs):
    """A 4-level `AutoencoderKL` (8× downsampling) of 32/64 channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        **kwargs,
    ).eval()


def tiny_stable_diffusion_xl_components(seed: int = 0) -> dict:
    """Components of a tiny `StableDiffusionXLPipeline`: two CLIP text encoders (the second with a
    projection, giving the pooled embedding), a U-Net with SDXL's `text_time` conditioning, and a VAE
    with SDXL's scaling factor 0.13025 (4-channel latents, 8× downsampling; 64×64 images by default)."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config(tokenizer)).eval()
    time_embed_dim = 8
    unet = tiny_unet(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 1),
        # 6 micro-conditioning numbers (sizes, crop) embedded to 8 each, plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * time_embed_dim + 32,
        cross_attention_dim=32 + 32,  # the two encoders' hidden states, concatenated
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return {
        "vae": _tiny_vae(scaling_factor=0.13025),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tiny_clip_tokenizer(),
        "unet": unet,
        "scheduler": scheduler,
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_stable_diffusion_3_components(seed: int = 0) -> dict:
    """Components of a tiny `StableDiffusion3Pipeline`: two CLIP text encoders with projections, no T5
    (`text_encoder_3=None`: SD3 then uses zeros for the T5 embeddings), a one-layer
    `SD3Transformer2DModel`, and a VAE with SD3's 16 latent channels, scaling factor 1.5305 and shift
    factor 0.0609 (8× downsampling; 64×64 images by default).

    A pipeline saved from these loads with `from_pretrained(path, text_encoder_3=None, tokenizer_3=None)`
    (diffusers does not treat SD3's T5 as optional)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModelWithProjection(tiny_clip_text_config(tokenizer)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config(tokenizer)).eval()
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,  # = num_attention_heads · attention_head_dim
        joint_attention_dim=64,  # the two CLIP hidden states concatenated (and the zero T5 embedding)
        pooled_projection_dim=64,  # the two pooled CLIP projections concatenated
    ).eval()
    return {
        "vae": _tiny_vae(
            latent_channels=16,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": None,
        "tokenizer": tokenizer,
        "tokenizer_2": tiny_clip_tokenizer(),
        "tokenizer_3": None,
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_controlnet(seed: int = 0):
    """A tiny `ControlNetModel` matching `tiny_stable_diffusion_components()`' U-Net (conditioning
    images at the pipeline's resolution, 8× downsampled to the latents)."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    return ControlNetModel(
        in_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        conditioning_embedding_out_channels=(16, 16, 32, 32),  # three stride-2 convolutions: 8×
    ).eval()


def tiny_autoencoder_tiny(latent_channels: int = 4, seed: int = 0):
    """A tiny `AutoencoderTiny` (TAESD architecture, 8× downsampling) with random weights."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(
        latent_channels=latent_channels,
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(16, 16, 16, 16),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    ).eval()


# ----------------------------------------------------------------------------------------------
# A tiny CodePriorPipeline (coded VAE and an untrained prior)
# ----------------------------------------------------------------------------------------------

TINY_CODE_PRIOR_BOTTLENECKS = ("dictionary", "vq")


def tiny_code_prior_components(bottleneck: str = "dictionary", seed: int = 0, shift_factor=None) -> dict:
    """Components of a tiny `CodePriorPipeline`: the tiny 8×-downsampling VAE (64×64 images, 8×8 latents; its
    latent `shift_factor` as given) coded by a small bottleneck, and an untrained `CodePrior` of its codes
    (E = 8, hidden 16, 3×3 context), all in eval mode.

    `bottleneck`: `"dictionary"` (`DictionaryBottleneck`, K = 16, S = 3, 2×2 patches, 4-bit levels: the prior
    models sets of (atom, level) pairs; sizes are multiples of 16 px) or `"vq"` (`VectorQuantizer`, K = 16, one
    index per latent position; multiples of 8 px)."""
    from .autoencoders import with_bottleneck
    from .bottlenecks import DictionaryBottleneck, VectorQuantizer
    from .priors import CodePrior

    if bottleneck not in TINY_CODE_PRIOR_BOTTLENECKS:
        raise ValueError(f"`bottleneck` must be one of {TINY_CODE_PRIOR_BOTTLENECKS}, got {bottleneck!r}.")
    torch.manual_seed(seed)
    vae = _tiny_vae(shift_factor=shift_factor)
    if bottleneck == "dictionary":
        coder = DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=3, patch_size=2, value_bits=4)
    else:
        coder = VectorQuantizer(num_atoms=16, latent_channels=4, use_ema=False)
    coded = with_bottleneck(vae, coder.eval())
    prior = CodePrior.from_bottleneck(coded.bottleneck, embedding_dim=8, hidden_dim=16, context_size=3)
    return {"vae": coded.eval(), "prior": prior.eval()}
