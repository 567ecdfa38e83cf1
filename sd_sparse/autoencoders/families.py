"""Which diffusers VAE classes take a bottleneck, and what differs between their families: one entry each.

Every image or video VAE class of diffusers takes a bottleneck through one mechanism
(`coded_vae_class`); what differs between families is said here, next to `scaling.py`, which uses it:

- `channels_key`: the config key holding the number of latent channels (`latent_channels`, Wan's
  and Qwen-Image's `z_dim`, KVAE's and VidTok's `z_channels`, RAE's `encoder_hidden_size`);
- `latent_space`: how the latents the denoiser sees are made from the VAE's own (`scaling.py`):
  `"config"` (`scaling_factor`, `shift_factor`, `latents_mean`/`latents_std` from the config or the
  VAE's buffers, as the pipelines use them), `"batch_norm_2x2"` (FLUX.2: the VAE's batch-norm
  statistics over 2×2-patchified latents) or `"per_frame_stats"` (Cosmos: `latents_mean`/`latents_std`
  per channel and latent frame);
- `kind`: `"image"` (latents `[B, C, h, w]`) or `"video"` (latents `[B, C, T, h, w]`, coded frame
  by frame); `"audio"` and `"other"` classes are refused with `reason`;
- `image_channels`: the channels of the images the encoder takes, where the config's `in_channels` says
  something else (Mochi: 15 Fourier features of RGB);
- `frames_first_output`: `decode` returns videos `[B, T, 3, H, W]` (Allegro; `decode_latents` turns
  them into `[B, 3, T, H, W]` as its pipeline does);
- `decode_defaults`: keyword arguments `decode` needs that a bottleneck's codes do not carry
  (SVD's temporal decoder: `num_frames`, all coded frames being one clip);
- `factor_key`: the config key holding the spatial factor (image side / latent side) where the VAE states
  no `spatial_compression_ratio` and its levels do not tell it (RAE: `patch_size`, the decoder's pixels
  per latent token); `identity.downsampling_factor` reads it.

A class not listed is treated as an image VAE with the `"config"` space: adding a future class
is one entry here, not a new file.

VAE classes that live in sd_sparse rather than diffusers (`SD_SPARSE_VAE_CLASSES`: `TAESDAutoencoder`) take a
bottleneck, load and are recorded in codes files exactly as diffusers' classes; `known_vae_class` finds either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from ..errors import UserError


@dataclass(frozen=True)
class VAEFamily:
    """What a diffusers VAE class needs to take a bottleneck (see the module docstring)."""

    kind: str = "image"
    channels_key: str = "latent_channels"
    latent_space: str = "config"
    decode_defaults: Dict[str, str] = field(default_factory=dict)
    image_channels: Optional[int] = None
    frames_first_output: bool = False
    factor_key: Optional[str] = None
    pipelines: tuple = ()
    reason: Optional[str] = None

    @property
    def supported(self) -> bool:
        return self.kind in ("image", "video")


_VIDEO = VAEFamily(kind="video")
_AUDIO = "an audio VAE: its latents are 1-D sequences, not images, and no bottleneck here codes them"

#: one entry per diffusers autoencoder class (0.42); `pipelines` lists diffusers pipelines using it (for the docs' table)
VAE_FAMILIES: Dict[str, VAEFamily] = {
    "AutoencoderKL": VAEFamily(
        pipelines=("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline", "FluxPipeline")
    ),
    "AutoencoderTiny": VAEFamily(pipelines=("StableDiffusionPipeline", "FluxPipeline")),
    "AsymmetricAutoencoderKL": VAEFamily(pipelines=("StableDiffusionInpaintPipeline",)),
    "ConsistencyDecoderVAE": VAEFamily(pipelines=("StableDiffusionPipeline",)),
    "VQModel": VAEFamily(pipelines=("KandinskyV22Pipeline",)),
    "AutoencoderDC": VAEFamily(pipelines=("SanaPipeline",)),
    "AutoencoderKLFlux2": VAEFamily(latent_space="batch_norm_2x2", pipelines=("Flux2Pipeline", "Flux2KleinPipeline")),
    "AutoencoderKLHunyuanImage": VAEFamily(pipelines=("HunyuanImagePipeline",)),
    "AutoencoderKLKVAE": VAEFamily(channels_key="z_channels"),
    "AutoencoderRAE": VAEFamily(channels_key="encoder_hidden_size", factor_key="patch_size"),
    "AutoencoderKLTemporalDecoder": VAEFamily(
        decode_defaults={"num_frames": "batch"}, pipelines=("StableVideoDiffusionPipeline",)
    ),
    "AutoencoderKLQwenImage": VAEFamily(kind="video", channels_key="z_dim", pipelines=("QwenImagePipeline",)),
    "AutoencoderKLQwenImage21": VAEFamily(kind="video", channels_key="z_dim"),
    "AutoencoderKLWan": VAEFamily(kind="video", channels_key="z_dim", pipelines=("WanPipeline",)),
    "AutoencoderKLHunyuanVideo": VAEFamily(kind="video", pipelines=("HunyuanVideoPipeline",)),
    "AutoencoderKLHunyuanVideo15": _VIDEO,
    "AutoencoderKLHunyuanImageRefiner": _VIDEO,
    "AutoencoderKLCogVideoX": VAEFamily(kind="video", pipelines=("CogVideoXPipeline",)),
    "AutoencoderKLCosmos": VAEFamily(
        kind="video", latent_space="per_frame_stats", pipelines=("CosmosTextToWorldPipeline",)
    ),
    "AutoencoderKLLTXVideo": VAEFamily(kind="video", pipelines=("LTXPipeline",)),
    "AutoencoderKLLTX2Video": _VIDEO,
    "AutoencoderKLMochi": VAEFamily(kind="video", image_channels=3, pipelines=("MochiPipeline",)),
    "AutoencoderKLAllegro": VAEFamily(kind="video", frames_first_output=True, pipelines=("AllegroPipeline",)),
    "AutoencoderKLMagvit": VAEFamily(kind="video", pipelines=("EasyAnimatePipeline",)),
    "AutoencoderKLKVAEVideo": VAEFamily(kind="video", channels_key="z_channels"),
    "AutoencoderKLMiniMaxH3": _VIDEO,
    "AutoencoderVidTok": VAEFamily(kind="video", channels_key="z_channels"),
    "AutoencoderOobleck": VAEFamily(kind="audio", reason=_AUDIO),
    "AutoencoderKLKVAEAudio": VAEFamily(kind="audio", reason=_AUDIO),
    "AutoencoderKLLTX2Audio": VAEFamily(kind="audio", reason=_AUDIO),
    "AutoencoderKLMiniMaxH3Audio": VAEFamily(kind="audio", reason=_AUDIO),
    "AutoencoderSAME": VAEFamily(kind="audio", reason=_AUDIO),
    "RFD4ProteinaAutoencoder": VAEFamily(
        kind="other", reason="a protein-structure autoencoder: its latents are per-residue sequences, not images"
    ),
}

_DEFAULT = VAEFamily()

#: VAE classes that live in sd_sparse, not in diffusers: class name -> module (imported on first use). Their
#: family is their `VAE_FAMILIES` entry, else the default image family with the `"config"` latent space.
SD_SPARSE_VAE_CLASSES: Dict[str, str] = {"TAESDAutoencoder": "sd_sparse.autoencoders.taesd"}


def known_vae_class(name) -> Optional[type]:
    """`diffusers.<name>`, or the sd_sparse VAE class `name` (`SD_SPARSE_VAE_CLASSES`); None for other names
    (the class may still be refused by `check_supported`)."""
    if not isinstance(name, str) or not name:
        return None
    module = SD_SPARSE_VAE_CLASSES.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(module), name)
    import diffusers

    try:
        cls = getattr(diffusers, name, None)
    except ImportError:  # a class whose optional dependency is missing
        return None
    return cls if isinstance(cls, type) else None


def family_of(vae_or_class) -> VAEFamily:
    """The `VAEFamily` of a diffusers VAE (plain or coded) or VAE class; the default image family for
    classes not listed (and the first listed base class for subclasses)."""
    cls = vae_or_class if isinstance(vae_or_class, type) else type(vae_or_class)
    cls = getattr(cls, "_vae_class", None) or cls
    for base in cls.__mro__:
        if base.__name__ in VAE_FAMILIES and base.__module__.startswith("diffusers"):
            return VAE_FAMILIES[base.__name__]
    return VAE_FAMILIES.get(cls.__name__, _DEFAULT)


def check_supported(vae_class: type) -> VAEFamily:
    """The family of `vae_class`; `ValueError` naming the class and the reason when it cannot take a bottleneck."""
    from diffusers import ModelMixin

    if not (isinstance(vae_class, type) and issubclass(vae_class, ModelMixin)):
        name = vae_class.__name__ if isinstance(vae_class, type) else type(vae_class).__name__
        raise UserError(f"a bottleneck goes into a diffusers VAE (a ModelMixin with encode/decode), got {name}.")

    if known_vae_class(vae_class.__name__) is not vae_class:
        raise UserError(
            f"{vae_class.__name__} is not one of diffusers' VAE classes (or sd_sparse's: "
            f"{', '.join(SD_SPARSE_VAE_CLASSES)}): coded classes are made for those (and found by their names when "
            f"a saved coded VAE loads); wrap the class it derives from."
        )
    family = family_of(vae_class)
    if not family.supported:
        raise UserError(f"{vae_class.__name__} cannot take a bottleneck: it is {family.reason}.")
    if not (callable(getattr(vae_class, "encode", None)) and callable(getattr(vae_class, "decode", None))):
        raise UserError(f"{vae_class.__name__} cannot take a bottleneck: it has no `encode` and `decode`.")
    return family


def latent_channels(vae) -> int:
    """The number of latent channels of a diffusers VAE (from its config: `latent_channels`, `z_dim`, ...)."""
    config = vae.config
    keys = (family_of(vae).channels_key, "latent_channels", "z_dim", "z_channels")
    for key in keys:
        value = config.get(key, None)
        if isinstance(value, int):
            return value
    raise UserError(
        f"{type(vae).__name__}'s config names no latent channel count ({', '.join(dict.fromkeys(keys))}): "
        f"add its family to sd_sparse.autoencoders.families.VAE_FAMILIES."
    )


def supported_vae_classes() -> Dict[str, VAEFamily]:
    """{class name: family} of every autoencoder class of the installed diffusers that takes a bottleneck."""
    import diffusers

    names = [n for n in dir(diffusers) if "utoencoder" in n or n in ("VQModel", "ConsistencyDecoderVAE")]
    out = {}
    for name in sorted(names):
        try:
            cls = getattr(diffusers, name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and family_of(cls).supported:
            out[name] = family_of(cls)
    return out


_SPACE_NAMES = {
    "config": "config",
    "batch_norm_2x2": "batch norm, 2×2 patches",
    "per_frame_stats": "per channel and frame",
}


def vae_support_table(tested_pipelines=()) -> str:
    """The docs' table of diffusers autoencoder classes (`docs/pipelines.md`): which take a bottleneck, in which
    latent space, and the diffusers pipelines they serve (`tested_pipelines`, those run in the test suite, in
    bold). `tests/test_readme.py` checks that the page holds exactly this table."""
    import diffusers

    names = sorted(n for n in dir(diffusers) if "utoencoder" in n or n in ("VQModel", "ConsistencyDecoderVAE"))
    rows = [
        "| diffusers class (`<Class>WithBottleneck`) | latents | latent space | pipelines |",
        "|---|---|---|---|",
    ]
    refused = []
    for name in names:
        family = family_of(getattr(diffusers, name))
        if not family.supported:
            refused.append(f"`{name}` ({family.kind})")
            continue
        shape = "video" if family.kind == "video" else "image"
        space = _SPACE_NAMES[family.latent_space]
        pipelines = ", ".join(f"**{p}**" if p in tested_pipelines else p for p in family.pipelines) or "—"
        rows.append(f"| `{name}` | {shape} | {space} | {pipelines} |")
    supported = len(rows) - 2
    footer = (
        f"\n{supported} of {len(names)} autoencoder classes in diffusers {diffusers.__version__} take a bottleneck; "
        f"refused with a `ValueError` naming the class and why: {', '.join(refused)}. "
        "Every class in the table passes one parametrized test (`tests/autoencoders/test_every_vae_class.py`); "
        "pipelines in bold run in the test suite with a coded VAE (tiny, offline components). Latents: image "
        "`[B, C, h, w]`, video `[B, C, T, h, w]` (coded frame by frame). Latent space: config = "
        "`(z − shift_factor)·scaling_factor`, or `(z − latents_mean)·scaling_factor/latents_std` where the VAE "
        "has per-channel statistics (config or buffers); batch norm = FLUX.2's statistics over 2×2-patchified "
        "latents; per channel and frame = Cosmos's statistics."
    )
    return "\n".join(rows) + "\n" + footer + "\n"
