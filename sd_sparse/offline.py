"""The tiny offline Stable Diffusion that `sd-sparse demo` and `train/fit_sd_bottleneck.py` use when no model
is given: an SD-1.x-shaped pipeline (CLIP text encoder, U-Net, `AutoencoderKL`, DDIM) with random weights, built
from configs and saved once to the cache, and the in-memory CLIP tokenizer it needs. Nothing here downloads
anything. (Its pictures mean nothing: it checks the wiring. Real weights come from `--model` or
`--pretrained_model_name_or_path`.)

    from sd_sparse.offline import tiny_stable_diffusion_path
    pipe = DictionaryLatentPipeline.from_pretrained(tiny_stable_diffusion_path(), bottleneck=bottleneck)
"""

from __future__ import annotations

import os

import torch

__all__ = [
    "TINY_SD_VERSION",
    "byte_symbols",
    "sd_vae_architecture",
    "tiny_clip_text_config",
    "tiny_clip_tokenizer",
    "tiny_stable_diffusion_components",
    "tiny_stable_diffusion_path",
]

#: bumped when the tiny pipeline's components change, so that a cached folder of the older one is not reused
TINY_SD_VERSION = "1"


def byte_symbols() -> list:
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

    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def tiny_clip_text_config(tokenizer, hidden_size: int = 32, projection_dim: int = 32):
    """The `CLIPTextConfig` of a tiny 2-layer CLIP text encoder over `tokenizer`'s vocabulary."""
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


def tiny_unet(**config):
    """A tiny `UNet2DConditionModel` in eval mode: 8×8 latents of 4 channels, two blocks of 32 and 64
    channels, one layer each; `config` sets the rest (block types, cross-attention, conditioning)."""
    from diffusers import UNet2DConditionModel

    base = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1)
    return UNet2DConditionModel(**{**base, "norm_num_groups": 32, **config}).eval()


def tiny_stable_diffusion_components(seed: int = 0) -> dict:
    """Components of a tiny SD-1.x-shaped pipeline (4-channel latents, 8× VAE downsampling; 64×64 images by
    default), random weights drawn from `seed`: `StableDiffusionPipeline(**components, requires_safety_checker=False)`."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer)).eval()
    vae = sd_vae_architecture(block_out_channels=(32, 32, 64, 64), layers_per_block=1, sample_size=64)
    unet = tiny_unet(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
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
