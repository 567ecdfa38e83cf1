"""Tiny, randomly initialised instances of every autoencoder class in the installed diffusers.

One entry per class in ``TINY_VAES`` (every ``diffusers`` name containing "utoencoder", plus ``VQModel`` and
``ConsistencyDecoderVAE``), each with the keyword arguments of a tiny instance and the shape of an input its
*encoder* takes, so a single parametrized test can run over the whole zoo::

    from tiny_vaes import IMAGE_VIDEO, TINY_VAES, build_tiny_vae, tiny_vae_input  # (tests/autoencoders/*)

    @pytest.mark.parametrize("name", IMAGE_VIDEO)
    def test_something(name):
        vae = build_tiny_vae(name)
        x = tiny_vae_input(name)
        ...

Only ``image``/``video`` entries are meant to be built and run here; ``audio`` and ``other`` entries carry a
tiny config too (so tests can assert such VAEs are refused with a clear error), but ``build_tiny_vae`` refuses
them unless asked with ``allow_any_kind=True``. ``AutoencoderKLAllegro`` needs a non-config setting (one-tile
tiling): after ``from_pretrained`` on a saved tiny one, call ``prepare_loaded_tiny_vae``.

Configs are written for speed on a CPU: construction plus one encode and one decode of ``sample_shape`` stays
well under a second for every image/video entry. Nothing is downloaded: every model is built from its config.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

__all__ = [
    "IMAGE_VIDEO",
    "SD_SPARSE_TINY_VAES",
    "TINY_VAES",
    "TinyVAE",
    "build_tiny_vae",
    "prepare_loaded_tiny_vae",
    "tiny_vae_entry",
    "tiny_vae_input",
]


@dataclass(frozen=True)
class TinyVAE:
    """A tiny config for one autoencoder class.

    class_name: the ``diffusers`` attribute name of the class.
    init: keyword arguments for the class's constructor.
    sample_shape: the input the ENCODER takes — ``[B, 3, H, W]`` for image VAEs, ``[B, 3, T, H, W]`` for video
        VAEs (and for the image VAEs built on a video backbone, which take ``T = 1``), the raw waveform /
        spectrogram / coordinates for audio and other kinds.
    kind: "image", "video", "audio" or "other".
    decode_kwargs: extra keyword arguments ``decode`` needs (beyond the latents).
    note: anything odd about the class.
    """

    class_name: str
    init: dict
    sample_shape: tuple
    kind: str
    decode_kwargs: dict = field(default_factory=dict)
    note: str = ""


def _entry(class_name, init, sample_shape, kind, decode_kwargs=None, note=""):
    return TinyVAE(
        class_name=class_name,
        init=init,
        sample_shape=tuple(sample_shape),
        kind=kind,
        decode_kwargs=dict(decode_kwargs or {}),
        note=note,
    )


_ENTRIES = [
    # ------------------------------------------------------------------------------------------- image VAEs
    _entry(
        "AutoencoderKL",
        dict(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=16,
        ),
        (1, 3, 16, 16),
        "image",
        note="Reference SD-style KL VAE; spatial compression 2 with two blocks.",
    ),
    _entry(
        "AsymmetricAutoencoderKL",
        dict(
            down_block_types=("DownEncoderBlock2D",) * 2,
            down_block_out_channels=(8, 16),
            layers_per_down_block=1,
            up_block_types=("UpDecoderBlock2D",) * 2,
            up_block_out_channels=(8, 16),
            layers_per_up_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=16,
        ),
        (1, 3, 16, 16),
        "image",
        note="decode(z, generator=None, image=None, mask=None): the MaskConditionDecoder takes an optional "
        "masked image + mask (inpainting); without them it decodes from z alone.",
    ),
    _entry(
        "AutoencoderDC",
        dict(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=4,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 16),
            decoder_block_out_channels=(8, 16),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1),
            encoder_qkv_multiscales=((), (5,)),
            decoder_qkv_multiscales=((), (5,)),
            downsample_block_type="conv",
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
        ),
        (1, 3, 16, 16),
        "image",
        note="Deterministic encoder: encode() returns EncoderOutput(latent=...) (no distribution). "
        "Spatial compression 2**(len(blocks)-1); H, W must divide by it.",
    ),
    _entry(
        "AutoencoderKLFlux2",
        dict(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=16,
            patch_size=(2, 2),
        ),
        (1, 3, 16, 16),
        "image",
        note="Latent normalisation lives in a BatchNorm2d `bn` over the 2x2-patchified latents "
        "(latent_channels*4 channels: running_mean/running_var, eps=batch_norm_eps); encode/decode do NOT apply "
        "it, the Flux2 pipelines do.",
    ),
    _entry(
        "AutoencoderKLHunyuanImage",
        dict(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(32, 32),
            layers_per_block=1,
            spatial_compression_ratio=2,
            sample_size=16,
            scaling_factor=1.0,
        ),
        (1, 3, 16, 16),
        "image",
        note="GroupNorm(32) is hard-coded, so block channels must be multiples of 32; "
        "block_out_channels[-1] must divide by 2*latent_channels. scaling_factor defaults to None in the class "
        "(the pipeline divides by it), so the tiny config sets 1.0.",
    ),
    _entry(
        "AutoencoderKLKVAE",
        dict(
            in_channels=3,
            channels=32,
            num_enc_blocks=1,
            num_dec_blocks=1,
            z_channels=4,
            double_z=True,
            ch_mult=(1, 2),
            sample_size=16,
        ),
        (1, 3, 16, 16),
        "image",
        note="GroupNorm(32) hard-coded: channels must be a multiple of 32. Latent channel key is `z_channels`.",
    ),
    _entry(
        "AutoencoderKLQwenImage",
        dict(
            base_dim=24,
            z_dim=4,
            dim_mult=[1, 2],
            num_res_blocks=1,
            temperal_downsample=[False],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        ),
        (1, 3, 1, 16, 16),
        "image",
        note="Image VAE on Wan's causal-3D backbone: the encoder takes 5-D [B, 3, T=1, H, W] and returns 5-D "
        "latents [B, z_dim, 1, h, w]. latents_mean/latents_std are config lists (len z_dim).",
    ),
    _entry(
        "AutoencoderKLQwenImage21",
        dict(
            base_dim=8,
            decoder_base_dim=8,
            z_dim=4,
            dim_mult=[1, 1],
            num_res_blocks=1,
            temperal_downsample=[False],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
            in_channels=3,
            out_channels=3,
            scale_factor_temporal=1,
            scale_factor_spatial=2,
        ),
        (1, 3, 1, 16, 16),
        "image",
        note="Released checkpoint is RGBA (in_channels=out_channels=4, patch_size, 16x spatial); the tiny one "
        "uses 3 channels so it fits the [B, 3, ...] contract. 5-D input with T=1 like QwenImage; decode clamps "
        "to [-1, 1]. Residual (DC-AE-like) shortcuts need in_dim*downsample_factor % out_dim == 0, so the "
        "last dim_mult must equal the one before it.",
    ),
    _entry(
        "AutoencoderRAE",
        dict(
            encoder_type="dinov2",
            encoder_hidden_size=64,
            encoder_patch_size=8,
            encoder_num_hidden_layers=1,
            encoder_input_size=32,
            patch_size=8,
            decoder_hidden_size=32,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=64,
            num_channels=3,
        ),
        (1, 3, 32, 32),
        "image",
        note="Representation autoencoder: a frozen ViT encoder (transformers Dinov2WithRegisters, random here; "
        "head_dim fixed at 64 so encoder_hidden_size must be a multiple of 64) + MAE-style decoder. "
        "encode() returns EncoderOutput(latent=...), deterministic (noise only in training). Input is resized "
        "to encoder_input_size and normalised with ImageNet mean/std, i.e. it expects images in [0, 1], and "
        "decode returns images in [0, 1]-ish space, at image_size = patch_size*sqrt(num_patches) (32 here). "
        "Latent normalisation (_latents_mean/_latents_std buffers, scaling_factor) is applied INSIDE "
        "encode/decode.",
    ),
    _entry(
        "AutoencoderTiny",
        dict(
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            num_encoder_blocks=(1, 1),
            num_decoder_blocks=(1, 1),
            latent_channels=4,
        ),
        (1, 3, 16, 16),
        "image",
        note="TAESD: deterministic, encode() returns AutoencoderTinyOutput(latents=...); decode clamps via "
        "tanh-ish output. latent_magnitude/latent_shift are only for scale_latents/unscale_latents (uint8 "
        "packing), scaling_factor=1.0.",
    ),
    _entry(
        "AutoencoderKLTemporalDecoder",
        dict(
            block_out_channels=(32, 32),
            down_block_types=("DownEncoderBlock2D",) * 2,
            latent_channels=4,
            layers_per_block=1,
            sample_size=16,
        ),
        (2, 3, 16, 16),
        "image",
        decode_kwargs=dict(num_frames=2),
        note="SVD VAE: 2-D image encoder, temporal decoder. The batch axis holds the frames of ONE video; "
        "decode(z, num_frames) needs num_frames to divide the batch (here B=2 frames, num_frames=2). "
        "GroupNorm(32) in the decoder: block_out_channels[0] must be a multiple of 32.",
    ),
    _entry(
        "VQModel",
        dict(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            latent_channels=3,
            norm_num_groups=4,
            num_vq_embeddings=16,
            sample_size=16,
        ),
        (1, 3, 16, 16),
        "image",
        note="encode() returns VQEncoderOutput(latents=...) BEFORE quantisation; decode(h, force_not_quantize="
        "False) quantises to the codebook (force_not_quantize=True skips it). No scaling in the pipelines.",
    ),
    _entry(
        "ConsistencyDecoderVAE",
        dict(
            encoder_block_out_channels=(8, 16),
            encoder_in_channels=3,
            encoder_out_channels=4,
            encoder_down_block_types=("DownEncoderBlock2D",) * 2,
            encoder_layers_per_block=1,
            encoder_norm_num_groups=4,
            latent_channels=4,
            decoder_add_attention=False,
            decoder_block_out_channels=(8, 16),
            decoder_down_block_types=("ResnetDownsampleBlock2D",) * 2,
            decoder_up_block_types=("ResnetUpsampleBlock2D",) * 2,
            decoder_in_channels=7,
            decoder_layers_per_block=1,
            decoder_norm_num_groups=4,
            decoder_out_channels=6,
            scaling_factor=0.18215,
            sample_size=16,
        ),
        (1, 3, 16, 16),
        "image",
        decode_kwargs=dict(num_inference_steps=2),
        note="decode(z, generator=None, num_inference_steps=2) is a 2-step consistency-model sampler: it draws "
        "noise, so pass a seeded torch.Generator for reproducible output. decode first maps "
        "z -> (z*scaling_factor - means)/stds with fixed 4-channel `means`/`stds` buffers (latent_channels "
        "must be 4).",
    ),
    # ------------------------------------------------------------------------------------------- video VAEs
    _entry(
        "AutoencoderKLWan",
        dict(
            base_dim=8,
            z_dim=4,
            dim_mult=[1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        ),
        (1, 3, 5, 16, 16),
        "video",
        note="Causal 3-D: T = 1 + 2k frames here (one temporal downsample; 1 + 4k for the released 4x). "
        "latents_mean/latents_std are config lists; decode clamps to [-1, 1].",
    ),
    _entry(
        "AutoencoderKLCogVideoX",
        dict(
            block_out_channels=(8, 8, 8),
            down_block_types=("CogVideoXDownBlock3D",) * 3,
            up_block_types=("CogVideoXUpBlock3D",) * 3,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
            sample_height=16,
            sample_width=16,
        ),
        (1, 3, 9, 16, 16),
        "video",
        note="T = 1 + 8k for a shape-preserving round trip: each temporal down/upsample keeps the first frame "
        "when the count is odd, so 9 -> 3 latent frames -> 9, but 5 -> 2 -> 8. Frames are encoded in batches "
        "of 8 (num_sample_frames_batch_size).",
    ),
    _entry(
        "AutoencoderKLHunyuanVideo",
        dict(
            latent_channels=4,
            down_block_types=("HunyuanVideoDownBlock3D",) * 3,
            up_block_types=("HunyuanVideoUpBlock3D",) * 3,
            block_out_channels=(8, 8, 8),
            layers_per_block=1,
            norm_num_groups=4,
            spatial_compression_ratio=4,
            temporal_compression_ratio=4,
            mid_block_add_attention=True,
        ),
        (1, 3, 5, 16, 16),
        "video",
        note="Causal: T = 1 + 4k.",
    ),
    _entry(
        "AutoencoderKLHunyuanVideo15",
        dict(
            latent_channels=4,
            block_out_channels=(16, 16),
            layers_per_block=1,
            spatial_compression_ratio=4,
            temporal_compression_ratio=2,
            downsample_match_channel=False,
            upsample_match_channel=False,
        ),
        (1, 3, 5, 16, 16),
        "video",
        note="DC-AE-style 3-D VAE (space/time-to-channel shortcuts). T = 1 + (temporal ratio)*k.",
    ),
    _entry(
        "AutoencoderKLHunyuanImageRefiner",
        dict(
            latent_channels=4,
            block_out_channels=(16, 16),
            layers_per_block=1,
            spatial_compression_ratio=4,
            temporal_compression_ratio=2,
            downsample_match_channel=False,
            upsample_match_channel=False,
        ),
        (1, 3, 5, 16, 16),
        "video",
        note="HunyuanImage-2.1 refiner VAE: same 3-D architecture family as HunyuanVideo 1.5 (video input), but "
        "its 'temporal' downsample does not reduce the frame count (it only doubles channels), so latent T = "
        "input T; the refiner pipeline feeds single frames [B, 3, 1, H, W].",
    ),
    _entry(
        "AutoencoderKLKVAEVideo",
        dict(
            ch=32,
            ch_mult=(1, 2),
            num_res_blocks=1,
            in_channels=3,
            out_ch=3,
            z_channels=4,
            temporal_compress_times=2,
        ),
        (1, 3, 3, 16, 16),
        "video",
        note="(T - 1) must divide by temporal_compress_times. GroupNorm(32) hard-coded: ch multiple of 32. "
        "Stateful cache (cache_dict) across frames.",
    ),
    _entry(
        "AutoencoderKLLTXVideo",
        dict(
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1),
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        ),
        (1, 3, 5, 16, 16),
        "video",
        note="T = 1 + 4k here. decode(z, temb=None): with timestep_conditioning=True (LTX 0.9.1+) the pipeline "
        "passes temb=decode_timestep and adds decode_noise_scale noise first. latents_mean/std are buffers "
        "(zeros/ones at init).",
    ),
    _entry(
        "AutoencoderKLLTX2Video",
        dict(
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(16, 32, 64),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, True, True),
            decoder_spatio_temporal_scaling=(True, True, True),
            decoder_inject_noise=(False, False, False, False),
            downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
            upsample_residual=(True, True, True),
            upsample_factor=(2, 2, 2),
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
            encoder_spatial_padding_mode="zeros",
            decoder_spatial_padding_mode="zeros",
        ),
        (1, 3, 9, 16, 16),
        "video",
        note="T = 1 + 8k. encode(x, causal=None), decode(z, temb=None, causal=None). latents_mean/std buffers.",
    ),
    _entry(
        "AutoencoderKLMagvit",
        dict(
            latent_channels=4,
            block_out_channels=(8, 8, 8),
            down_block_types=("SpatialDownBlock3D", "SpatialTemporalDownBlock3D", "SpatialTemporalDownBlock3D"),
            up_block_types=("SpatialUpBlock3D", "SpatialTemporalUpBlock3D", "SpatialTemporalUpBlock3D"),
            layers_per_block=1,
            norm_num_groups=8,
            spatial_group_norm=True,
        ),
        (1, 3, 5, 16, 16),
        "video",
        note="EasyAnimate VAE. T = 1 + 4k here.",
    ),
    _entry(
        "AutoencoderKLMochi",
        dict(
            in_channels=15,
            latent_channels=4,
            encoder_block_out_channels=(32, 32, 32, 32),
            decoder_block_out_channels=(32, 32, 32, 32),
            layers_per_block=(1, 1, 1, 1, 1),
            temporal_expansions=(1, 2, 3),
            spatial_expansions=(2, 2, 2),
            add_attention_block=(False, True, True, True, True),
            latents_mean=(0.0,) * 4,
            latents_std=(1.0,) * 4,
        ),
        (1, 3, 7, 16, 16),
        "video",
        note="in_channels=15 is the Fourier-feature-expanded RGB (the encoder adds them); the input is still "
        "3-channel. T = 1 + 6k. GroupNorm(32) hard-coded: block channels must be multiples of 32.",
    ),
    _entry(
        "AutoencoderKLAllegro",
        dict(
            block_out_channels=(8, 8),
            down_block_types=("AllegroDownBlock3D",) * 2,
            up_block_types=("AllegroUpBlock3D",) * 2,
            temporal_downsample_blocks=(True, False),
            temporal_upsample_blocks=(False, True),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=2,
            sample_size=16,
        ),
        (1, 3, 4, 16, 16),
        "video",
        note="Encoding/decoding WITHOUT tiling raises NotImplementedError; tiling uses instance attributes "
        "kernel=(24 frames, sample_size, sample_size) and fixed overlaps (8, 120, 80) that cannot be made tiny "
        "from the config. build_tiny_vae (and prepare_loaded_tiny_vae after from_pretrained) enables tiling with "
        "one tile = the whole sample. decode returns [B, T, C, H, W] (frames before channels!); the Allegro "
        "pipeline permutes it back.",
    ),
    _entry(
        "AutoencoderKLCosmos",
        dict(
            latent_channels=4,
            encoder_block_out_channels=(8, 8),
            decode_block_out_channels=(8, 8),
            attention_resolutions=(),
            resolution=16,
            num_layers=1,
            patch_size=2,
            patch_type="haar",
            spatial_compression_ratio=4,
            temporal_compression_ratio=4,
            latents_mean=[0.0] * 12,
            latents_std=[1.0] * 12,
        ),
        (1, 3, 5, 16, 16),
        "video",
        note="encode() is annotated `-> Tensor` but returns AutoencoderKLOutput(latent_dist=IdentityDistribution)"
        ": mode()/sample() return the deterministic latent. latents_mean/std are config lists laid out "
        "channel-major per latent frame (the default has 256 = 16 channels x 16 frames; pipelines do "
        ".view(1, C, -1, 1, 1)[:, :, :T]); the tiny one has 4 x 3 (identity values).",
    ),
    _entry(
        "AutoencoderKLMiniMaxH3",
        dict(
            latent_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            spatial_downsample_factors=(2, 2),
            temporal_downsample_factors=(2, 2),
            norm_num_groups=8,
            decoder_num_layers=1,
            decoder_num_attention_heads=2,
            decoder_attention_head_dim=8,
            decoder_num_register_tokens=2,
            decoder_ffn_mult=2,
            clip_length=17,
            token_drop=3,
            latents_mean=(0.0,) * 4,
            latents_std=(1.0,) * 4,
        ),
        (1, 3, 22, 8, 8),
        "video",
        note="Clip-chunked video VAE with a ViT decoder: 17n + 5 frames -> 5n + 2 latent frames (22 -> 7 here); "
        "input frames are padded to whole clips.",
    ),
    _entry(
        "AutoencoderVidTok",
        dict(
            ch=16,
            ch_mult=[1, 2, 2],
            z_channels=4,
            double_z=True,
            num_res_blocks=1,
            spatial_ds=[0, 1],
            spatial_us=[1, 2],
            tempo_ds=[0, 1],
            tempo_us=[1, 2],
            regularizer="kl",
            is_causal=False,
        ),
        (1, 3, 16, 16, 16),
        "video",
        note="encode(x) takes NO return_dict: with regularizer='kl' it returns AutoencoderKLOutput, with 'fsq' a "
        "(quantised_z, indices) tuple. decode(z, decode_from_indices=False) returns a plain Tensor (no "
        "return_dict, no DecoderOutput). Non-causal here (as in diffusers' own tests): decode needs at least "
        "16 // temporal_ratio latent frames (num_latent_frames_batch_size) and trims to a multiple of it, so "
        "T = 16 frames -> 4 latent frames -> 16. The causal variant (is_causal=True) never gives the frame "
        "count back: T -> about T // r latent frames -> (latent*r - (r-1)) frames (decode drops the first "
        "r-1). Uses LayerNorm, no GroupNorm constraint.",
    ),
    # ------------------------------------------------------------------------------------------- audio VAEs
    _entry(
        "AutoencoderOobleck",
        dict(
            encoder_hidden_size=12,
            decoder_channels=12,
            decoder_input_channels=6,
            audio_channels=2,
            downsampling_ratios=[2, 4],
            channel_multiples=[1, 2],
        ),
        (1, 2, 24),
        "audio",
        note="Stable Audio waveform VAE [B, audio_channels, samples].",
    ),
    _entry(
        "AutoencoderKLKVAEAudio",
        dict(
            encoder_dim=4,
            encoder_rates=[2, 2],
            latent_dim=16,
            codebook_dim=4,
            decoder_dim=16,
            decoder_rates=[2, 2],
            num_channels=1,
            attn_num_heads=2,
        ),
        (1, 1, 64),
        "audio",
        note="encode(audio_data) waveform [B, num_channels, samples].",
    ),
    _entry(
        "AutoencoderKLLTX2Audio",
        dict(
            in_channels=2,
            output_channels=2,
            latent_channels=4,
            base_channels=16,
            ch_mult=(1, 2, 4),
            resolution=16,
            attn_resolutions=None,
            num_res_blocks=2,
            norm_type="pixel",
            causality_axis="height",
            mid_block_add_attention=False,
            sample_rate=16000,
            mel_hop_length=160,
            mel_bins=16,
            is_causal=True,
            double_z=True,
        ),
        (1, 2, 8, 16),
        "audio",
        note="Mel-spectrogram VAE: input [B, channels, frames, mel_bins] (4-D but NOT an image). Causal along "
        "time: 8 frames -> 2 latent frames -> 5 decoded frames.",
    ),
    _entry(
        "AutoencoderKLMiniMaxH3Audio",
        dict(
            encoder_dim=4,
            encoder_rates=(2, 2),
            latent_dim=32,
            latent_channels=8,
            num_attention_heads=2,
            decoder_dim=16,
            decoder_rates=(2, 2),
            decoder_kernel_sizes=(4, 4),
            resblock_kernel_sizes=(3, 7),
            resblock_dilation_sizes=((1, 3), (1, 3)),
            sampling_rate=32000,
            latents_mean=[0.0] * 8,
            latents_std=[1.0] * 8,
        ),
        (1, 1, 16),
        "audio",
        note="Waveform [B, 1, samples] (padded to a whole number of hops).",
    ),
    _entry(
        "AutoencoderSAME",
        dict(
            audio_channels=2,
            patch_size=4,
            encoder_channels=16,
            encoder_c_mults=[1, 2],
            encoder_strides=[2, 2],
            encoder_transformer_depths=[1, 1],
            latent_dim=8,
            use_differential_attention=False,
            dim_heads=8,
            ff_mult=2,
            sampling_rate=44100,
        ),
        (1, 2, 128),
        "audio",
        note="Waveform [B, audio_channels, samples]; encode(sample), decode(latents).",
    ),
    # ------------------------------------------------------------------------------------------- other
    _entry(
        "RFD4ProteinaAutoencoder",
        dict(
            atom37_mask=[[True] * 37] * 4,
            allowed_residue_types=[[True] * 4] * 7,
            latent_dim=4,
            n_residue_types=4,
            num_token_types=7,
            nlayers=1,
            token_dim=16,
            nheads=2,
            dim_cond=8,
            pair_repr_dim=8,
            token_type_emb_dim=4,
        ),
        (1, 8, 37, 3),
        "other",
        note="Protein structure autoencoder: encode(coords_nm [B, N, 37, 3], padding_mask [B, N], token_type, "
        "atom37_mask, conditioning={...}) -> per-token latents [B, N, latent_dim]; the conditioning dict must hold "
        "the preprocessor's topology features (e.g. 'is_in_context_conditioning'), so a bare coordinate tensor "
        "cannot be encoded. decode(z_latent, ca_coors_nm, padding_mask, ...). Not an image VAE; the tiny "
        "config only constructs.",
    ),
]

TINY_VAES: dict[str, TinyVAE] = {entry.class_name: entry for entry in _ENTRIES}
IMAGE_VIDEO: tuple[str, ...] = tuple(n for n, e in TINY_VAES.items() if e.kind in ("image", "video"))

#: sd_sparse's own VAE classes (`sd_sparse.autoencoders.families.SD_SPARSE_VAE_CLASSES`), built and run the same way
SD_SPARSE_TINY_VAES: dict[str, TinyVAE] = {
    "TAESDAutoencoder": _entry(
        "TAESDAutoencoder",
        dict(latent_channels=4, width=8, midblock_group_norm=True),
        (1, 3, 16, 16),
        "image",
        note="TAEF2's layout (group-norm branch), width 8: deterministic, encode() returns "
        "AutoencoderTinyOutput(latents=...), downsampling 8.",
    ),
}


def tiny_vae_entry(class_name: str) -> TinyVAE:
    """The ``TinyVAE`` of a diffusers class (``TINY_VAES``) or of an sd_sparse one (``SD_SPARSE_TINY_VAES``)."""
    return TINY_VAES.get(class_name) or SD_SPARSE_TINY_VAES[class_name]


def prepare_loaded_tiny_vae(vae):
    """Re-apply the non-config settings a tiny VAE needs (only Allegro: one-tile tiling). Idempotent; call it
    after ``from_pretrained`` on a saved tiny VAE."""
    import diffusers

    if isinstance(vae, diffusers.AutoencoderKLAllegro):  # (coded ones too)
        entry = TINY_VAES["AutoencoderKLAllegro"]
        _, _, frames, height, width = entry.sample_shape
        vae.enable_tiling()
        # Allegro only encodes/decodes tile by tile; make one tile cover the whole tiny sample.
        vae.kernel = (frames, height, width)
        vae.stride = (frames, height, width)
    return vae


def build_tiny_vae(class_name: str, seed: int = 0, *, allow_any_kind: bool = False):
    """The tiny ``class_name`` model: float32, eval mode, weights from ``torch.manual_seed(seed)``."""
    from sd_sparse.autoencoders.families import known_vae_class

    entry = tiny_vae_entry(class_name)
    if entry.kind not in ("image", "video") and not allow_any_kind:
        raise ValueError(f"{class_name} is a {entry.kind!r} autoencoder, not an image/video VAE")
    cls = known_vae_class(class_name)
    torch.manual_seed(seed)
    vae = cls(**copy.deepcopy(entry.init))  # (a constructor must not alter the shared config)
    if vae.dtype != torch.float32:  # (constructed in float32 unless the default dtype was changed)
        vae = vae.to(torch.float32)
    return prepare_loaded_tiny_vae(vae.eval())


def tiny_vae_input(class_name: str, seed: int = 0) -> torch.Tensor:
    """A deterministic float32 input of ``sample_shape`` with values in [-1, 1]."""
    entry = tiny_vae_entry(class_name)
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(entry.sample_shape, generator=generator, dtype=torch.float32) * 2 - 1
