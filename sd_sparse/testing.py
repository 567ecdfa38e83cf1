"""Offline test material: real photographs shipped inside installed packages, and patch sets.

Nothing here downloads anything. The photographs come from scikit-image's bundled data and
scikit-learn's `load_sample_images()` (both in the `metrics`/`dev` extras).
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence, Tuple

import numpy as np
import torch

_SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
    "stereo_motorcycle",
)


def sample_photographs() -> Dict[str, np.ndarray]:
    """Real colour photographs, `{name: uint8 array [H, W, 3]}`, sorted by name.

    Raises `ImportError` naming the missing package when neither scikit-image nor scikit-learn is
    installed (`pip install sd_sparse[metrics]`).
    """
    photos: Dict[str, np.ndarray] = {}
    try:
        import skimage.data
    except ImportError:
        skimage = None
    else:
        for name in _SKIMAGE_PHOTOS:
            loader = getattr(skimage.data, name, None)
            if loader is None:
                continue
            try:
                image = loader()
            except Exception:  # a data file that is not bundled would need a download: skip it
                continue
            image = image[0] if isinstance(image, tuple) else image  # stereo pairs: left view
            photos[name] = np.ascontiguousarray(image[..., :3])
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        pass
    else:
        bundle = load_sample_images()
        for filename, image in zip(bundle.filenames, bundle.images):
            name = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
            photos[name] = np.ascontiguousarray(image)
    if not photos:
        raise ImportError("sample photographs need scikit-image or scikit-learn: pip install 'sd_sparse[metrics]'")
    return dict(sorted(photos.items()))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 `[H, W, 3]` → float `[3, H, W]` in [-1, 1] (the diffusers convention)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"`image` must be a uint8 array [H, W, 3], got {image.dtype} {image.shape}.")
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 127.5 - 1


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """float `[3, H, W]` in [-1, 1] → uint8 `[H, W, 3]`."""
    return ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def photo_patches(
    images: Iterable[np.ndarray],
    patch_size: int = 8,
    max_patches: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Non-overlapping `patch_size` crops of every image, `[N, 3, P, P]` in [-1, 1].

    Each image contributes its full grid of patches (edges that do not fill a patch are cropped);
    with `max_patches`, a random subset (fixed by `seed`) is kept.
    """
    if patch_size < 1:
        raise ValueError(f"`patch_size` must be >= 1, got {patch_size}.")
    pieces = []
    for image in images:
        x = to_tensor(image)
        h, w = (x.shape[1] // patch_size) * patch_size, (x.shape[2] // patch_size) * patch_size
        if h == 0 or w == 0:
            raise ValueError(f"an image of shape {image.shape} is smaller than `patch_size` {patch_size}.")
        x = x[:, :h, :w].reshape(3, h // patch_size, patch_size, w // patch_size, patch_size)
        pieces.append(x.permute(1, 3, 0, 2, 4).reshape(-1, 3, patch_size, patch_size))
    if not pieces:
        raise ValueError("`images` is empty.")
    patches = torch.cat(pieces)
    if max_patches is not None and max_patches < patches.shape[0]:
        keep = torch.randperm(patches.shape[0], generator=torch.Generator().manual_seed(seed))[:max_patches]
        patches = patches[keep]
    return patches


def split_by_image(
    photos: Dict[str, np.ndarray], test_names: Sequence[str]
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(train, test) dictionaries of photographs: the split is by image, never by crop."""
    unknown = set(test_names) - set(photos)
    if unknown:
        raise ValueError(f"unknown test images {sorted(unknown)}; available: {sorted(photos)}.")
    train = {k: v for k, v in photos.items() if k not in test_names}
    test = {k: v for k, v in photos.items() if k in test_names}
    if not train:
        raise ValueError("the split leaves no training image.")
    return train, test


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

    Built in a temporary folder and renamed into place, so concurrent callers never see half of it.
    """
    import os
    import tempfile

    from diffusers import StableDiffusionPipeline

    from .sparse_coding._native import cache_dir as default_cache

    root = cache_dir or os.path.join(str(default_cache()), "models")
    target = os.path.join(root, f"tiny-stable-diffusion-v{TINY_SD_VERSION}")
    if os.path.exists(os.path.join(target, "model_index.json")):
        return target
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
