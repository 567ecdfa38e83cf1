"""Tiny offline components for TESTS only: a CLIP tokenizer and tiny Stable Diffusion pipelines.

Nothing here downloads anything; everything is built from configs with random weights. (The shipped
photographs and image helpers that the demo, trainer and fit script use live in `sd_sparse.data`.)
"""

from __future__ import annotations

import os

import torch

# the reference VAE is no test component: it lives in sd_sparse.autoencoders.reference (re-exported for old imports)
from .autoencoders.reference import REFERENCE_VAE, reference_vae_path  # noqa: F401

# ----------------------------------------------------------------------------------------------
# A tiny, randomly initialised Stable Diffusion pipeline built from configs (no download)
# ----------------------------------------------------------------------------------------------

TINY_SD_VERSION = "1"


def _byte_symbols():
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2/CLIP convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def tiny_clip_tokenizer(model_max_length: int = 32):
    """A CLIP tokenizer over single bytes (512 byte symbols + 2 specials, no merges), built in memory."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def sd_vae_architecture(
    block_out_channels=(128, 256, 512, 512), layers_per_block: int = 2, sample_size: int = 512, seed=None
):
    """An `AutoencoderKL` shaped like Stable Diffusion 1.x/2.x's (the defaults are SD-1.5's), with
    random weights: 4 latent channels, 8× downsampling, scaling factor 0.18215."""
    from diffusers import AutoencoderKL

    if seed is not None:
        torch.manual_seed(seed)
    blocks = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=layers_per_block,
        norm_num_groups=32,
        sample_size=sample_size,
        scaling_factor=0.18215,
    ).eval()


def tiny_stable_diffusion_components(seed: int = 0) -> dict:
    """Components of a tiny SD-1.x-shaped pipeline (4-channel latents, 8× VAE downsampling)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=32,
        )
    ).eval()
    vae = sd_vae_architecture(block_out_channels=(32, 32, 64, 64), layers_per_block=1, sample_size=64)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def tiny_stable_diffusion_path(cache_dir: str | None = None) -> str:
    """A saved tiny `StableDiffusionPipeline` folder, built once and cached on disk.

    Built in a temporary folder and renamed into place, so concurrent callers never see half of it. The
    folder's name carries the diffusers and transformers versions that wrote it: a folder saved by one
    version may not load in another (transformers 5.0 reads 5.24's CLIP text encoder as random weights).
    """
    import tempfile
    from importlib.metadata import version

    from .sparse_coding._native import cache_dir as default_cache

    root = cache_dir or os.path.join(str(default_cache()), "models")
    writers = f"diffusers-{version('diffusers')}-transformers-{version('transformers')}"
    target = os.path.join(root, f"tiny-stable-diffusion-v{TINY_SD_VERSION}-{writers}")
    if os.path.exists(os.path.join(target, "model_index.json")):
        return target  # without importing diffusers' pipelines (and transformers' image processors)
    from diffusers import StableDiffusionPipeline

    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root, prefix=".building-")
    pipe = StableDiffusionPipeline(**tiny_stable_diffusion_components(), requires_safety_checker=False)
    pipe.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------------------------
# Tiny SDXL, SD3, ControlNet and TAESD components (random weights, built from configs)
# ----------------------------------------------------------------------------------------------


def _tiny_clip_text_config(tokenizer, hidden_size: int = 32, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=projection_dim,
    )


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
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(_tiny_clip_text_config(tokenizer)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_text_config(tokenizer)).eval()
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
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
        norm_num_groups=32,
    ).eval()
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
    text_encoder = CLIPTextModelWithProjection(_tiny_clip_text_config(tokenizer)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_text_config(tokenizer)).eval()
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
