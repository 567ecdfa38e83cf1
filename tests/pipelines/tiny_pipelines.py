"""Tiny, randomly initialised diffusers pipelines for tests, built fully offline.

Six pipelines (see `TINY_PIPELINES`) are assembled from configs with random weights (at most a few million
parameters, mostly far fewer); every tokenizer is built in memory (byte/character-level vocabularies; the
Qwen one also has merges for the words of QwenImage's prompt template); nothing touches the Hugging Face
Hub. The component sizes follow diffusers' own `get_dummy_components` in its pipeline tests, with 4 latent
channels and 2x VAE downsampling for Flux/Flux2 (theirs: 1 channel, no downsampling), a 224px CLIP image
encoder for SVD (it resizes PIL inputs to 224) and a one-layer-per-block SVD UNet, all at no real cost.
A call takes well under a second on one CPU thread.

Where the decode argument comes from: Flux decodes `latents / scaling_factor + shift_factor`, Flux2 the
batch-norm-denormalised, unpatchified latents, Sana `latents / scaling_factor`, QwenImage and Wan the
latents de-normalised with the VAE's `latents_mean`/`latents_std`, SVD `latents / scaling_factor`.

    pipe = tiny_pipeline("FluxPipeline")
    out = pipe(**tiny_call_kwargs("FluxPipeline"))

Every pipeline calls `pipe.vae.decode(...)` once per call with the kwargs below, so a test can wrap it to
record the latents it decodes (for SVD that holds because `decode_chunk_size` defaults to `num_frames`):

    FluxPipeline                  decode(latents[1, 4, 16, 16], return_dict=False)
    Flux2Pipeline                 decode(latents[1, 4, 16, 16], return_dict=False)
    SanaPipeline                  decode(latents[1, 4, 16, 16], return_dict=False)     (already / scaling_factor)
    QwenImagePipeline             decode(latents[1, 4, 1, 8, 8], return_dict=False)    (5-D: one frame)
    WanPipeline                   decode(latents[1, 16, 2, 4, 4], return_dict=False)   (5-D video latents)
    StableVideoDiffusionPipeline  decode(latents[2, 4, 16, 16], num_frames=2)          (frames flattened into batch)

Text prompts go through real (tiny, in-memory) tokenizers and text encoders for all five text-conditioned
pipelines; no `prompt_embeds` are precomputed. One substitution: Flux2's real tokenizer is a Mistral
`PixtralProcessor`, which transformers refuses to build without torchvision (not installed here). Flux2 only
calls `tokenizer.apply_chat_template(...)` on it for text prompts, so a plain fast tokenizer with a
Mistral-style chat template (`[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]...[/INST]`) stands in for it.
"""

from __future__ import annotations

import torch

from sd_sparse.testing import _byte_symbols, tiny_clip_tokenizer

TINY_PIPELINES = (
    "FluxPipeline",
    "Flux2Pipeline",
    "SanaPipeline",
    "QwenImagePipeline",
    "WanPipeline",
    "StableVideoDiffusionPipeline",
)

# ----------------------------------------------------------------------------------------------
# In-memory tokenizers
# ----------------------------------------------------------------------------------------------

_PRINTABLE = [chr(c) for c in range(ord(" ") + 1, ord("~") + 1)]  # '!'..'~'


def _t5_tokenizer(model_max_length: int = 512):
    """A T5 (Unigram, SentencePiece-style) tokenizer over single characters: pad=0, eos=1, unk=2."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in _PRINTABLE]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def _gemma_tokenizer(model_max_length: int = 512):
    """A Gemma (BPE with byte fallback) tokenizer: specials, 256 byte tokens, '▁' and printable ASCII."""
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in ["\u2581"] + _PRINTABLE:
        vocab[c] = len(vocab)
    return GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=True, model_max_length=model_max_length)


_QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


# The words of QwenImagePipeline's prompt template, each made one token (a leading space is part of a word):
# the pipeline drops the template's first 34 tokens (the system part, 34 tokens with Qwen's real tokenizer),
# which then leaves exactly the user prompt, as with the real tokenizer.
_QWEN_TEMPLATE_WORDS = ("system", "user", "assistant", "Describe") + tuple(
    " " + w
    for w in "the image by detailing color shape size texture quantity text spatial relationships of objects and "
    "background".split()
)


def _byte_to_symbol() -> dict[int, str]:
    """Byte value -> its byte-level BPE stand-in (GPT-2 convention: printable bytes stand for themselves)."""
    printable = [b for b in range(256) if chr(b) in _byte_symbols()]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def _byte_level_word_merges(words) -> list[tuple[str, str]]:
    """BPE merges that join each word's byte symbols left to right, so that each word becomes one token.

    A word that follows a space is listed with it (" the"): byte-level pre-tokenizers keep the space.
    """
    symbol = _byte_to_symbol()
    merges: list[tuple[str, str]] = []
    for word in words:
        chars = [symbol[b] for b in word.encode("utf-8")]
        prefix = chars[0]
        for c in chars[1:]:
            if (prefix, c) not in merges:
                merges.append((prefix, c))
            prefix += c
    return merges


def _qwen2_tokenizer():
    """A Qwen2 (byte-level BPE) tokenizer: single bytes, Qwen's chat/vision special tokens, and the words of
    QwenImage's prompt template as single tokens (so the template's system part is 34 tokens, as in Qwen's)."""
    from transformers import Qwen2Tokenizer

    merges = _byte_level_word_merges(_QWEN_TEMPLATE_WORDS)
    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    for s in _QWEN_SPECIALS:
        vocab[s] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": list(_QWEN_SPECIALS[1:])})  # never split them
    return tok


_MISTRAL_SPECIALS = (
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[IMG]",
    "[IMG_BREAK]",
    "[IMG_END]",
)

# Mistral-Small-3.x-style chat template; content may be a string or a list of {"type": "text"|"image"} parts.
_MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['content'] is string %}{% set parts = [{'type': 'text', 'text': m['content']}] %}"
    "{% else %}{% set parts = m['content'] %}{% endif %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{% elif m['role'] == 'user' %}[INST]{% endif %}"
    "{% for p in parts %}"
    "{% if p['type'] == 'text' %}{{ p['text'] }}{% elif p['type'] == 'image' %}[IMG]{% endif %}"
    "{% endfor %}"
    "{% if m['role'] == 'system' %}[/SYSTEM_PROMPT]{% elif m['role'] == 'user' %}[/INST]"
    "{% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def _mistral_tokenizer():
    """A byte-level BPE fast tokenizer with Mistral's special tokens and a Mistral-style chat template.

    Stands in for Flux2's `PixtralProcessor` (which needs torchvision): Flux2 only calls
    `apply_chat_template` on it for text prompts, which a tokenizer with a chat template provides.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(_MISTRAL_SPECIALS)}
    for s in _byte_symbols():
        vocab[s] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=list(_MISTRAL_SPECIALS[4:]),
        chat_template=_MISTRAL_CHAT_TEMPLATE,
        model_max_length=512,
    )


# ----------------------------------------------------------------------------------------------
# Text encoders
# ----------------------------------------------------------------------------------------------


def _clip_text_encoder(tokenizer, hidden_size: int = 32):
    from transformers import CLIPTextModel

    from sd_sparse.offline import tiny_clip_text_config

    return CLIPTextModel(tiny_clip_text_config(tokenizer, hidden_size=hidden_size, projection_dim=hidden_size)).eval()


def _t5_config_kwargs(tokenizer, d_model: int = 32) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


# ----------------------------------------------------------------------------------------------
# Components, one builder per pipeline
# ----------------------------------------------------------------------------------------------


def _flux(seed: int) -> dict:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed in 2x2 patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    tokenizer = tiny_clip_tokenizer(model_max_length=32)
    torch.manual_seed(seed)
    text_encoder = _clip_text_encoder(tokenizer)
    tokenizer_2 = _t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder_2 = T5EncoderModel(T5Config(**_t5_config_kwargs(tokenizer_2))).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),  # 2x downsampling
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "transformer": transformer,
        "vae": vae,
        "image_encoder": None,
        "feature_extractor": None,
    }


def _flux2(seed: int) -> dict:
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels patchified 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,  # = len(text_encoder_out_layers) * text hidden size
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
    )
    tokenizer = _mistral_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    special = dict(bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=ids("<pad>"))
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 37,
            "max_position_embeddings": 512,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1000000000.0,
            "sliding_window": None,
            **special,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "image_size": 30,
            "patch_size": 6,
            "num_channels": 3,
        },
        image_seq_length=4,
        vision_feature_layer=-1,
        image_token_index=ids("[IMG]"),
        **special,
    )
    torch.manual_seed(seed)
    text_encoder = Mistral3ForConditionalGeneration(config).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
        "vae": vae,
    }


def _sana(seed: int) -> dict:
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=32,
    )
    torch.manual_seed(seed)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    tokenizer = _gemma_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer),
            hidden_size=8,
            head_dim=16,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.02,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            attn_implementation="eager",
        )
    ).eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def _qwen_image(seed: int) -> dict:
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,  # 4 latent channels packed in 2x2 patches
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    tokenizer = _qwen2_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    special = dict(bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"))
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            **special,
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16,
        vocab_size=len(tokenizer),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        **special,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def _wan(seed: int) -> dict:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    tokenizer = _t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(**_t5_config_kwargs(tokenizer))).eval()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer_2": None,
    }


def _svd(seed: int) -> dict:
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    try:  # the PIL backend: transformers warns when CLIPImageProcessor falls back to it without torchvision
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            # SVD resizes PIL inputs to 224x224 for the image encoder; 32px patches keep that to 7x7 tokens
            image_size=224,
            intermediate_size=37,
            patch_size=32,
        )
    ).eval()
    return {
        "unet": unet,
        "image_encoder": image_encoder,
        "scheduler": scheduler,
        "vae": vae,
        "feature_extractor": CLIPImageProcessor(crop_size=224, size=224),
    }


_BUILDERS = {
    "FluxPipeline": _flux,
    "Flux2Pipeline": _flux2,
    "SanaPipeline": _sana,
    "QwenImagePipeline": _qwen_image,
    "WanPipeline": _wan,
    "StableVideoDiffusionPipeline": _svd,
}


def _check(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown tiny pipeline {name!r}; choose one of {TINY_PIPELINES}")


def tiny_pipeline_components(name: str, seed: int = 0) -> dict:
    """The components of the tiny `name` pipeline: float32, eval mode, random weights seeded by `seed`."""
    _check(name)
    components = _BUILDERS[name](seed)
    for value in components.values():
        if isinstance(value, torch.nn.Module):
            if any(p.dtype != torch.float32 for p in value.parameters()):  # only if torch's default dtype differs
                value.to(dtype=torch.float32)
            value.eval()
    return components


def tiny_pipeline(name: str, seed: int = 0):
    """The tiny `name` pipeline on CPU, with its progress bar disabled."""
    import diffusers

    pipe = getattr(diffusers, name)(**tiny_pipeline_components(name, seed))
    pipe.to("cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _svd_input_image(seed: int):
    """A deterministic 32x32 RGB PIL image for the image-to-video pipeline."""
    from PIL import Image

    g = torch.Generator("cpu").manual_seed(seed)
    pixels = (torch.rand(32, 32, 3, generator=g) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="RGB")


def tiny_call_kwargs(name: str, seed: int = 0) -> dict:
    """Arguments for a fast (2 steps, tiny size), deterministic call of the tiny `name` pipeline.

    A fresh `torch.Generator` seeded with `seed` each time: two calls with fresh kwargs give identical outputs.
    Outputs are numpy (`output_type="np"`): images `(1, H, W, 3)`, videos `(1, frames, H, W, 3)`.
    """
    _check(name)
    common = {
        "num_inference_steps": 2,
        "generator": torch.Generator("cpu").manual_seed(seed),
        "output_type": "np",
    }
    if name == "FluxPipeline":
        return {
            "prompt": "a painting of a squirrel",
            "height": 32,
            "width": 32,
            "guidance_scale": 3.5,
            "max_sequence_length": 32,
            **common,
        }
    if name == "Flux2Pipeline":
        return {
            "prompt": "a dog is dancing",
            "height": 32,
            "width": 32,
            "guidance_scale": 4.0,
            # the byte-level tokenizer spends ~190 tokens on Flux2's system message; keep the prompt in
            "max_sequence_length": 224,
            "text_encoder_out_layers": (1,),  # the tiny Mistral has one layer (default: layers 10, 20, 30)
            **common,
        }
    if name == "SanaPipeline":
        return {
            "prompt": "a painting of a squirrel",
            "negative_prompt": "",
            "height": 32,
            "width": 32,
            "guidance_scale": 4.5,
            "max_sequence_length": 32,
            "complex_human_instruction": None,  # skip the long default instruction prefix
            "use_resolution_binning": False,  # else it renders at a 256px-bin size and resizes
            **common,
        }
    if name == "QwenImagePipeline":
        return {
            "prompt": "a dancing monkey",
            "negative_prompt": None,
            "height": 32,
            "width": 32,
            "true_cfg_scale": 1.0,
            "max_sequence_length": 32,
            **common,
        }
    if name == "WanPipeline":
        return {
            "prompt": "a dancing monkey",
            "negative_prompt": "blurry",
            "height": 32,
            "width": 32,
            "num_frames": 5,
            "guidance_scale": 5.0,
            "max_sequence_length": 32,
            **common,
        }
    # StableVideoDiffusionPipeline
    return {
        "image": _svd_input_image(seed),
        "height": 32,
        "width": 32,
        "num_frames": 2,
        "min_guidance_scale": 1.0,
        "max_guidance_scale": 2.5,
        "fps": 7,
        "motion_bucket_id": 127,
        "noise_aug_strength": 0.02,
        **common,
    }
