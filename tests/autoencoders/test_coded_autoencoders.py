"""Coded VAEs: `AutoencoderKLWithBottleneck`, `AutoencoderTinyWithBottleneck` and `with_bottleneck`."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderOobleck, AutoencoderTiny
from diffusers.models.autoencoders.vae import DecoderOutput

from sd_sparse import (
    AutoencoderKLWithBottleneck,
    AutoencoderTinyWithBottleneck,
    DictionaryBottleneck,
    LISTABottleneck,
    VectorQuantizer,
    with_bottleneck,
)
from sd_sparse.autoencoders import to_diffusion_space, to_vae_space
from sd_sparse.testing import (
    tiny_autoencoder_tiny,
    tiny_stable_diffusion_3_components,
    tiny_stable_diffusion_components,
    tiny_stable_diffusion_xl_components,
)

# (builder of a plain VAE, its coded class, expected (scale, shift) of diffusion space)
VAES = {
    "sd": (lambda: tiny_stable_diffusion_components()["vae"], AutoencoderKLWithBottleneck, (0.18215, 0.0)),
    "sdxl": (lambda: tiny_stable_diffusion_xl_components()["vae"], AutoencoderKLWithBottleneck, (0.13025, 0.0)),
    "sd3": (lambda: tiny_stable_diffusion_3_components()["vae"], AutoencoderKLWithBottleneck, (1.5305, 0.0609)),
    "taesd": (lambda: tiny_autoencoder_tiny(), AutoencoderTinyWithBottleneck, (1.0, 0.0)),
}


def dictionary(channels: int, seed: int = 0, **kwargs) -> DictionaryBottleneck:
    torch.manual_seed(seed)
    config = dict(num_atoms=32, latent_channels=channels, sparsity=3, patch_size=2)
    return DictionaryBottleneck(**{**config, **kwargs}).eval()


def latents_like(vae, size: int = 8, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """VAE-space latents `[B, C, size, size]` of a plausible scale for this VAE."""
    generator = torch.Generator().manual_seed(seed)
    scale, shift = (vae.config.scaling_factor or 1.0), (vae.config.get("shift_factor") or 0.0)
    return torch.randn(batch, vae.config.latent_channels, size, size, generator=generator) / scale + shift


def decoder_weight(vae) -> torch.Tensor:
    """A convolution weight of the decoder (cast by `to` and by layerwise casting)."""
    return [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight


class Recorder:
    """Records every call of a module: inputs and outputs (a forward hook)."""

    def __init__(self, module):
        self.inputs, self.outputs = [], []
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.inputs.append(args[0].detach().clone())
        self.outputs.append(output)

    def remove(self):
        self.handle.remove()


@pytest.fixture(scope="module", params=sorted(VAES))
def family(request):
    make, coded_class, factors = VAES[request.param]
    vae = make()
    return request.param, vae, coded_class, factors


def test_from_vae_shares_weights_and_keeps_device_dtype_mode(family):
    name, vae, coded_class, _ = family
    bottleneck = dictionary(vae.config.latent_channels)
    coded = with_bottleneck(vae, bottleneck)
    assert type(coded) is coded_class and isinstance(coded, type(vae))
    assert coded.bottleneck is bottleneck and coded.training == vae.training
    plain = dict(vae.named_parameters())
    for key, param in coded.named_parameters():
        if not key.startswith("bottleneck."):
            assert param.data_ptr() == plain[key].data_ptr(), f"{key} was copied"
    assert set(plain) == {k for k, _ in coded.named_parameters() if not k.startswith("bottleneck.")}
    assert coded.device == vae.device and coded.dtype == vae.dtype
    assert coded.config.bottleneck_class == "DictionaryBottleneck"
    assert coded.config.bottleneck_config["num_atoms"] == 32
    assert coded.config.latent_channels == vae.config.latent_channels
    assert coded.config.force_upcast == vae.config.force_upcast  # pipelines read it to upcast the VAE

    half = with_bottleneck(vae.to(torch.bfloat16), dictionary(vae.config.latent_channels).to(torch.bfloat16))
    vae.to(torch.float32)
    assert half.dtype == torch.bfloat16 and half.bottleneck.dtype == torch.float32


def test_decode_codes_in_diffusion_space(family):
    """decode(z) = decoder(to_vae(bottleneck((z − shift)·scale))), with the factors of the VAE's config."""
    name, vae, _, (scale, shift) = family
    coded = with_bottleneck(vae, dictionary(vae.config.latent_channels))
    z = latents_like(vae)
    seen = Recorder(coded.bottleneck)
    with torch.no_grad():
        images = coded.decode(z).sample
        plain = vae.decode(z).sample
        bypass = coded.decode(z, apply_bottleneck=False).sample
    seen.remove()
    assert len(seen.inputs) == 1
    torch.testing.assert_close(seen.inputs[0], (z - shift) * scale)  # the space the bottleneck was fitted in
    expected_z = seen.outputs[0].latents / scale + shift
    with torch.no_grad():
        expected = vae.decode(expected_z).sample
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    assert (images - plain).abs().max() > 1e-3  # the bottleneck changed the image
    torch.testing.assert_close(bypass, plain, atol=0, rtol=0)
    tuple_out = coded.decode(z, return_dict=False)
    assert isinstance(tuple_out, tuple) and len(tuple_out) == 1
    torch.testing.assert_close(tuple_out[0], images)


def test_scaling_round_trip_matches_the_pipelines(family):
    """`to_vae_space` is what the pipelines pass to `vae.decode`; `to_diffusion_space` inverts it."""
    name, vae, _, (scale, shift) = family
    latents = torch.randn(2, vae.config.latent_channels, 4, 4)
    torch.testing.assert_close(to_vae_space(vae, latents), latents / scale + shift)
    torch.testing.assert_close(to_diffusion_space(vae, to_vae_space(vae, latents)), latents)


def test_tiled_and_sliced_decoding_code_the_whole_latent_first(family):
    name, vae, _, _ = family
    coded = with_bottleneck(vae, dictionary(vae.config.latent_channels))
    z = latents_like(vae, size=12)
    seen = Recorder(coded.bottleneck)
    decoder_calls = Recorder(coded.decoder)
    with torch.no_grad():
        untiled = coded.decode(z).sample
        coded.enable_tiling()
        coded.tile_latent_min_size, coded.tile_sample_min_size = 4, 32  # tiny tiles: 12x12 latents need several
        tiled = coded.decode(z).sample
        coded.disable_tiling()
        coded.enable_slicing()
        sliced = coded.decode(z).sample
        coded.disable_slicing()
    seen.remove()
    decoder_calls.remove()
    assert len(seen.outputs) == 3  # one coding per decode, never one per tile or slice
    untiled_codes, tiled_codes, sliced_codes = (out.codes for out in seen.outputs)
    assert untiled_codes.latent_shape == tiled_codes.latent_shape == tuple(z.shape)
    for codes in (tiled_codes, sliced_codes):
        torch.testing.assert_close(codes.indices, untiled_codes.indices, atol=0, rtol=0)
        torch.testing.assert_close(codes.coefficients, untiled_codes.coefficients, atol=0, rtol=0)
    assert len(decoder_calls.outputs) > 1 + 1 + 2  # the tiled decode ran the decoder on several tiles
    assert tiled.shape == untiled.shape and not torch.equal(tiled, untiled)  # tiles are blended
    torch.testing.assert_close(sliced, untiled, atol=1e-4, rtol=0)  # batched vs one-by-one convolutions


def check_round_trip(vae, coded_class, bottleneck, folder):
    coded = with_bottleneck(vae, bottleneck)
    coded.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == coded_class.__name__
    assert config["bottleneck_class"] == type(bottleneck).__name__
    assert config["bottleneck_config"]["latent_channels"] == vae.config.latent_channels
    loaded = coded_class.from_pretrained(folder)
    assert type(loaded) is coded_class and type(loaded.bottleneck) is type(bottleneck) and not loaded.training
    state = loaded.state_dict()
    for key, value in coded.state_dict().items():
        assert torch.equal(state[key], value), key
    z = latents_like(vae, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(z).sample, coded.decode(z).sample, atol=0, rtol=0)
    return loaded


def test_save_and_load_round_trip_in_safetensors(family, tmp_path):
    name, vae, coded_class, _ = family
    check_round_trip(vae, coded_class, dictionary(vae.config.latent_channels), tmp_path / "coded")
    as_half = coded_class.from_pretrained(tmp_path / "coded", torch_dtype=torch.float16)
    assert as_half.dtype == torch.float16 and as_half.bottleneck.dtype == torch.float32


@pytest.mark.parametrize("bottleneck_class", [VectorQuantizer, LISTABottleneck])
def test_every_bottleneck_class_round_trips(bottleneck_class, tmp_path):
    torch.manual_seed(0)
    bottleneck = bottleneck_class(num_atoms=16, latent_channels=4, patch_size=2).eval()
    check_round_trip(tiny_stable_diffusion_components()["vae"], AutoencoderKLWithBottleneck, bottleneck, tmp_path)


def test_forward_returns_the_coded_reconstruction_and_commit_loss(family):
    name, vae, _, (scale, shift) = family
    coded = with_bottleneck(vae, dictionary(vae.config.latent_channels))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        out = coded(images)
        encoded = coded.encode(images)
        z = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
        expected = coded.decode(z).sample
        loss = coded.bottleneck((z - shift) * scale).loss
    assert isinstance(out, DecoderOutput)
    torch.testing.assert_close(out.sample, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.commit_loss, loss)
    sample, commit_loss = coded(images, return_dict=False)
    torch.testing.assert_close(sample, out.sample)

    # trainable end to end: the loss reaches the decoder and the (gradient-mode) dictionary
    coded.train()
    try:
        out = coded(images)
        (out.sample.square().mean() + out.commit_loss).backward()
        assert coded.bottleneck.dictionary.grad is not None and coded.bottleneck.dictionary.grad.abs().sum() > 0
        assert any(p.grad is not None for p in coded.decoder.parameters())
    finally:
        coded.eval()
        coded.zero_grad(set_to_none=True)


def test_bottleneck_stays_float32_when_the_vae_is_cast(family):
    name, vae, coded_class, _ = family
    coded = with_bottleneck(vae, dictionary(vae.config.latent_channels))
    weights = coded.bottleneck.dictionary.detach().clone()
    # what SDXL's pipeline does around decode when force_upcast is set: fp16 → fp32 → fp16
    for dtype in (torch.float16, torch.float32, torch.bfloat16):
        coded.to(dtype)
        assert coded.dtype == dtype and decoder_weight(coded).dtype == dtype
        assert coded.bottleneck.dtype == torch.float32
    assert torch.equal(coded.bottleneck.dictionary, weights)  # never rounded through half precision
    coded.half()
    assert coded.bottleneck.dtype == torch.float32
    coded.to(torch.bfloat16)
    z = latents_like(vae).to(torch.bfloat16)
    with torch.no_grad():
        images = coded.decode(z).sample
    assert images.dtype == torch.bfloat16 and torch.isfinite(images).all()
    coded.float()

    assert "bottleneck" in coded_class._skip_layerwise_casting_patterns
    cast = with_bottleneck(vae, dictionary(vae.config.latent_channels))
    cast.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert decoder_weight(cast).dtype == torch.float8_e4m3fn
    assert all(p.dtype == torch.float32 for p in cast.bottleneck.parameters())


def test_model_offload_hooks_fire_for_decode_and_code(family):
    """`@apply_forward_hook` stays on `decode` (and is on `code`), so model CPU offload moves the VAE."""
    name, vae, _, _ = family
    coded = with_bottleneck(vae, dictionary(vae.config.latent_channels))

    class Hook:
        calls = 0

        def pre_forward(self, module):
            Hook.calls += 1

    coded._hf_hook = Hook()
    try:
        with torch.no_grad():
            coded.decode(latents_like(vae))
            assert Hook.calls >= 1
            before = Hook.calls
            coded.code(latents=torch.randn(1, vae.config.latent_channels, 8, 8))
            assert Hook.calls > before
    finally:
        del coded._hf_hook


def test_latents_of_any_size_are_padded_for_the_patches(family):
    name, vae, _, _ = family
    coded = with_bottleneck(vae, dictionary(vae.config.latent_channels))  # 2x2 patches
    z = latents_like(vae, size=9, batch=1)
    seen = Recorder(coded.bottleneck)
    with torch.no_grad():
        images = coded.decode(z).sample
        reference = vae.decode(z).sample
    seen.remove()
    assert images.shape == reference.shape
    assert seen.outputs[0].codes.latent_shape[2:] == (10, 10)


def test_with_bottleneck_replaces_and_removes_a_bottleneck():
    vae = tiny_stable_diffusion_components()["vae"]
    coded = with_bottleneck(vae, dictionary(4))
    other = dictionary(4, seed=1)
    recoded = with_bottleneck(coded, other)
    assert type(recoded) is AutoencoderKLWithBottleneck and recoded.bottleneck is other
    assert coded.bottleneck is not other  # the first coded VAE is untouched
    plain = recoded.without_bottleneck()
    assert type(plain) is AutoencoderKL
    assert plain.decoder.conv_out.weight.data_ptr() == vae.decoder.conv_out.weight.data_ptr()
    assert AutoencoderKLWithBottleneck.from_vae(vae, other).bottleneck is other


def test_errors_name_the_problem(tmp_path):
    vae = tiny_stable_diffusion_components()["vae"]
    with pytest.raises(ValueError, match=r"16-channel.*4-channel"):
        with_bottleneck(vae, dictionary(16))
    with pytest.raises(ValueError, match="sd_sparse Bottleneck"):
        with_bottleneck(vae, torch.nn.Identity())
    audio = AutoencoderOobleck(
        encoder_hidden_size=2,
        downsampling_ratios=[2],
        decoder_channels=2,
        decoder_input_channels=4,
        audio_channels=1,
        channel_multiples=[1],
    )
    with pytest.raises(ValueError, match="AutoencoderOobleck cannot take a bottleneck: it is an audio VAE"):
        with_bottleneck(audio, dictionary(4))

    class MyVAE(AutoencoderKL):
        pass

    with pytest.raises(ValueError, match="MyVAE"):
        with_bottleneck(MyVAE(block_out_channels=(32,), norm_num_groups=32), dictionary(4))
    with pytest.raises(ValueError, match="AutoencoderKL"):
        AutoencoderTinyWithBottleneck.from_vae(vae, dictionary(4))

    coded = with_bottleneck(vae, dictionary(4))
    with pytest.raises(ValueError, match=r"`z` must be a tensor \[B, 4, h, w\]"):
        coded.decode(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="exactly one of `images`"):
        coded.code()
    with pytest.raises(ValueError, match=r"`images` must be a tensor \[B, 3, H, W\]"):
        coded.code(images=torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"`latents` must be a tensor \[B, 4, h, w\]"):
        coded.code(latents=torch.randn(4, 8, 8))

    vae.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="saved by AutoencoderKL.*with_bottleneck"):
        AutoencoderKLWithBottleneck.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="`bottleneck_class` must name an sd_sparse bottleneck"):
        AutoencoderKLWithBottleneck(block_out_channels=(32,), bottleneck_class="os.system")


def test_a_config_alone_builds_a_coded_vae():
    """diffusers builds models from their configs (`from_config`, the testers): the default bottleneck
    is a dictionary for the VAE's latent channels."""
    coded = AutoencoderTinyWithBottleneck(
        encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4, latent_channels=4
    )
    assert isinstance(coded.bottleneck, DictionaryBottleneck) and coded.bottleneck.config.latent_channels == 4
    rebuilt = AutoencoderTinyWithBottleneck.from_config(coded.config)
    assert rebuilt.config.bottleneck_config == coded.config.bottleneck_config
    assert isinstance(AutoencoderTiny.from_config(tiny_autoencoder_tiny().config), AutoencoderTiny)
