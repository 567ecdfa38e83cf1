"""`TAESDAutoencoder`: the TAESD-family tiny autoencoders (TAEF2's layout) as a diffusers model and an sd_sparse VAE.

Tiny random models (width 8) only, nothing downloaded; the published weights are used only when
`SD_SPARSE_TAEF2_WEIGHTS` names the folder holding `taef2_encoder.pth` and `taef2_decoder.pth`.
"""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import sd_sparse
from sd_sparse import DictionaryBottleneck, TAESDAutoencoder, with_bottleneck
from sd_sparse.autoencoders import decode_latents, encode_latents
from sd_sparse.autoencoders.identity import downsampling_factor, vae_fingerprint
from sd_sparse.autoencoders.loading import load_vae
from sd_sparse.cli import main
from sd_sparse.codec import codes_file_info
from sd_sparse.codec.codes import Codes
from sd_sparse.errors import UserError

TAEF2_WEIGHTS_ENV = "SD_SPARSE_TAEF2_WEIGHTS"


def _tiny(seed=0, latent_channels=4, group_norm=True, **config) -> TAESDAutoencoder:
    torch.manual_seed(seed)
    model = TAESDAutoencoder(latent_channels=latent_channels, width=8, midblock_group_norm=group_norm, **config)
    with torch.no_grad():  # GroupNorm's affine parameters start at 1 and 0: make them count
        for name, param in model.named_parameters():
            if ".norm." in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def _images(batch=2, height=32, width=24, seed=0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _write_taesd_weights(model, folder, name="taetest"):
    os.makedirs(folder, exist_ok=True)
    paths = (os.path.join(folder, f"{name}_encoder.pth"), os.path.join(folder, f"{name}_decoder.pth"))
    model.save_taesd_weights(*paths)
    return paths


# -- the published nn.Sequential layout, written from its description: what the weight files' keys mean ------
def _conv(n_in, n_out, **kwargs):
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Block(nn.Module):
    def __init__(self, width, group_norm):
        super().__init__()
        self.conv = nn.Sequential(_conv(width, width), nn.ReLU(), _conv(width, width), nn.ReLU(), _conv(width, width))
        self.skip = nn.Identity()
        self.pool = None
        if group_norm:
            hidden = 4 * width
            self.pool = nn.Sequential(
                nn.Conv2d(width, hidden, 1, bias=False),
                nn.GroupNorm(4, hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, width, 1, bias=False),
            )

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + self.skip(x))


class _Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


def _published(latent_channels, width, group_norm):
    def blocks(gn=False):
        return [_Block(width, gn) for _ in range(3)]

    def down():
        return _conv(width, width, stride=2, bias=False)

    def up():
        return [nn.Upsample(scale_factor=2), _conv(width, width, bias=False)]

    encoder = nn.Sequential(
        _conv(3, width), _Block(width, False), down(), *blocks(), down(), *blocks(), down(), *blocks(group_norm)
    )
    encoder.append(_conv(width, latent_channels))
    decoder = nn.Sequential(_Clamp(), _conv(latent_channels, width), nn.ReLU(), *blocks(group_norm), *up())
    decoder.extend([*blocks(), *up(), *blocks(), *up(), _Block(width, False), _conv(width, 3)])
    return encoder.eval(), decoder.eval()


# -- the weight files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("group_norm", [True, False])
def test_the_weight_files_mean_the_published_modules_and_load_back_bit_for_bit(group_norm, tmp_path):
    model = _tiny(group_norm=group_norm)
    encoder_path, decoder_path = _write_taesd_weights(model, tmp_path)
    encoder_state = torch.load(encoder_path, weights_only=True)
    decoder_state = torch.load(decoder_path, weights_only=True)
    assert ("11.pool.1.bias" in encoder_state) == ("3.pool.0.weight" in decoder_state) == group_norm
    assert "13.conv.4.weight" in encoder_state and "18.conv.0.bias" in decoder_state and "19.weight" in decoder_state

    # the files hold exactly the published layout's keys and drive it to the same outputs
    encoder, decoder = _published(4, 8, group_norm)
    encoder.load_state_dict(encoder_state, strict=True)
    decoder.load_state_dict(decoder_state, strict=True)
    x = _images()
    with torch.no_grad():
        z = model.encode(x).latents
        assert torch.equal(z, encoder(x.add(1).div(2)))
        assert torch.equal(model.decode(z).sample, decoder(z).mul(2).sub(1))

        loaded = TAESDAutoencoder.from_taesd_weights(encoder_path, decoder_path)
        assert dict(loaded.config) == dict(model.config) and not loaded.training
        assert torch.equal(loaded.encode(x).latents, z)
        assert torch.equal(loaded.decode(z).sample, model.decode(z).sample)
    assert vae_fingerprint(loaded) == vae_fingerprint(model)


def test_the_files_configure_the_model_and_keep_their_dtype(tmp_path):
    model = _tiny(latent_channels=6, group_norm=False).half()
    paths = _write_taesd_weights(model, tmp_path)
    assert torch.load(paths[0], weights_only=True)["0.weight"].dtype == torch.float16
    loaded = TAESDAutoencoder.from_taesd_weights(*paths)
    assert loaded.dtype == torch.float32
    assert dict(loaded.config) == {**dict(_tiny(latent_channels=6, group_norm=False).config)}
    assert TAESDAutoencoder.from_taesd_weights(*paths, torch_dtype=None).dtype == torch.float16


def test_wrong_weight_files_are_named(tmp_path):
    encoder_path, decoder_path = _write_taesd_weights(_tiny(), tmp_path / "a")
    other_encoder, other_decoder = _write_taesd_weights(_tiny(latent_channels=5), tmp_path / "b")
    with pytest.raises(UserError, match=r"`encoder_path` .*missing_encoder\.pth: no such file"):
        TAESDAutoencoder.from_taesd_weights(str(tmp_path / "missing_encoder.pth"), decoder_path)
    garbage = tmp_path / "garbage_decoder.pth"
    garbage.write_bytes(b"not a weight file")
    with pytest.raises(UserError, match=r"`decoder_path` .*garbage_decoder\.pth is not a PyTorch weight file"):
        TAESDAutoencoder.from_taesd_weights(encoder_path, str(garbage))
    tensor = tmp_path / "tensor_encoder.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(UserError, match=r"`encoder_path` .*tensor_encoder\.pth holds no state dict"):
        TAESDAutoencoder.from_taesd_weights(str(tensor), decoder_path)
    with pytest.raises(UserError, match=r"`encoder_path` .*taetest_decoder\.pth holds a TAESD decoder"):
        TAESDAutoencoder.from_taesd_weights(decoder_path, encoder_path)
    with pytest.raises(UserError, match=r"`decoder_path` .* does not match .*4-channel latents"):
        TAESDAutoencoder.from_taesd_weights(encoder_path, other_decoder)
    # a key of another layout (e.g. a block where a conv is)
    state = torch.load(encoder_path, weights_only=True)
    state["20.weight"] = torch.zeros(1)
    odd = tmp_path / "odd_encoder.pth"
    torch.save(state, odd)
    with pytest.raises(
        UserError, match=r"`encoder_path` .*odd_encoder\.pth is not a TAESD-family encoder.*'20\.weight'"
    ):
        TAESDAutoencoder.from_taesd_weights(str(odd), decoder_path)
    del state["20.weight"], state["12.conv.2.bias"]
    torch.save(state, odd)
    with pytest.raises(UserError, match=r"missing keys \['12\.conv\.2\.bias'\]"):
        TAESDAutoencoder.from_taesd_weights(str(odd), decoder_path)


# -- the model -----------------------------------------------------------------------------------------------
def test_shapes_ranges_and_input_checks():
    model = _tiny()
    x = _images(batch=2, height=32, width=24)
    with torch.no_grad():
        z = model.encode(x).latents
        assert z.shape == (2, 4, 4, 3)
        images = model(x).sample
        assert images.shape == x.shape and torch.equal(images, model.decode(z).sample)
        assert model.encode(x, return_dict=False)[0].shape == z.shape
        assert torch.equal(model.decode(z, return_dict=False)[0], images)
    assert downsampling_factor(model) == 8
    with pytest.raises(UserError, match=r"`sample` must be a tensor \[B, 3, H, W\]"):
        model.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(UserError, match=r"`z` must be a tensor \[B, 4, H, W\] of latents"):
        model.decode(torch.zeros(1, 3, 2, 2))
    with pytest.raises(UserError, match="`width` must be a positive int"):
        TAESDAutoencoder(width=0)


def test_the_decoder_soft_clamps_the_latents():
    model = _tiny()
    z = torch.randn(1, 4, 2, 2) * 3
    with torch.no_grad():  # tanh(z / 3) · 3 saturates at ±3: far latents decode alike, near ones do not
        assert torch.equal(model.decode(z * 1000).sample, model.decode(z * 2000).sample)
        assert not torch.allclose(model.decode(z).sample, model.decode(z * 2).sample, atol=1e-3)


def test_save_pretrained_and_from_pretrained_are_exact(tmp_path):
    model = _tiny(scaling_factor=0.5, shift_factor=0.1)
    model.save_pretrained(tmp_path)
    loaded = TAESDAutoencoder.from_pretrained(tmp_path).eval()
    public = {k: v for k, v in loaded.config.items() if not k.startswith("_")}
    assert public == {k: v for k, v in model.config.items() if not k.startswith("_")} and public["shift_factor"] == 0.1
    x = _images()
    with torch.no_grad():
        assert torch.equal(loaded(x).sample, model(x).sample)
    assert type(load_vae(str(tmp_path))) is TAESDAutoencoder


def test_the_latent_space_is_the_configs():
    model = _tiny(scaling_factor=2.0, shift_factor=0.5)
    x = _images()
    with torch.no_grad():
        z = model.encode(x).latents
        latents = encode_latents(model, x)
        torch.testing.assert_close(latents, (z - 0.5) * 2.0)
        torch.testing.assert_close(decode_latents(model, latents), model.decode(z).sample, atol=1e-5, rtol=0)


# -- as an sd_sparse VAE ---------------------------------------------------------------------------------------
def _bottleneck(channels=4):
    torch.manual_seed(1)
    return DictionaryBottleneck(num_atoms=16, latent_channels=channels, sparsity=2, patch_size=1).eval()


def test_it_takes_a_bottleneck_and_round_trips_codes_files(tmp_path):
    model = _tiny()
    coded = with_bottleneck(model, _bottleneck()).eval()
    assert type(coded) is sd_sparse.TAESDAutoencoderWithBottleneck
    assert sd_sparse.autoencoders.coded_vae_class(TAESDAutoencoder) is type(coded)
    x = _images()
    with torch.no_grad():
        z = model.encode(x).latents
        assert torch.equal(coded.decode(z, apply_bottleneck=False).sample, model.decode(z).sample)
        decoded = coded.decode(z).sample
        assert not torch.allclose(decoded, model.decode(z).sample, atol=1e-4)
        assert torch.equal(coded.without_bottleneck().decode(z).sample, model.decode(z).sample)

    coded.save_pretrained(tmp_path / "coded")
    loaded = load_vae(str(tmp_path / "coded")).eval()
    assert type(loaded) is type(coded)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z).sample, decoded)

    data = coded.compress(x).to_bytes(coded.bottleneck, vae=coded)
    info = codes_file_info(data)
    assert info.vae_factor == 8
    images = loaded.decompress(data)
    torch.testing.assert_close(images, decoded.clamp(-1, 1), atol=1e-5, rtol=0)
    assert torch.equal(Codes.from_bytes(data, coded.bottleneck, vae=model).indices, coded.compress(x).indices)
    other = with_bottleneck(_tiny(seed=5), coded.bottleneck).eval()  # another TAESD: the file names both
    with pytest.raises(ValueError, match="TAESDAutoencoder"):
        other.decompress(data)


def test_load_vae_and_the_command_line_take_a_folder_of_weight_files(tmp_path, capsys):
    model = _tiny()
    weights = tmp_path / "taetest"
    _write_taesd_weights(model, weights)
    loaded = load_vae(str(weights))
    assert type(loaded) is TAESDAutoencoder and vae_fingerprint(loaded) == vae_fingerprint(model)

    _bottleneck().save_pretrained(tmp_path / "bottleneck")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    paths = sorted(str(p) for p in photos.iterdir())
    codes = str(tmp_path / "photos.sdsc")
    flags = ["--vae", str(weights), "--bottleneck", str(tmp_path / "bottleneck")]
    assert main(["compress", *paths, *flags, "-o", codes]) == 0
    assert main(["decompress", codes, *flags, "-o", str(tmp_path / "out")]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["photos_000.png", "photos_001.png"]
    report = tmp_path / "evaluation"
    args = ["evaluate", str(weights), "--data", str(photos), "--resolution", "16", "--output_dir", str(report)]
    assert main(args) == 0
    assert np.isfinite(json.load(open(report / "metrics.json"))["psnr"])
    assert main([*args, "--bottleneck", str(tmp_path / "bottleneck")]) == 0
    assert np.isfinite(json.load(open(report / "metrics.json"))["psnr"])
    capsys.readouterr()

    _write_taesd_weights(_tiny(seed=2), weights, name="other")
    with pytest.raises(UserError, match="several TAESD-family weight pairs"):
        load_vae(str(weights))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"--vae .*empty: no VAE config found .* no TAESD-family weights"):
        load_vae(str(tmp_path / "empty"))


@pytest.mark.parametrize("coded", [False, True])
def test_it_is_the_vae_of_a_diffusers_pipeline_saved_and_loaded(coded, tmp_path):
    from diffusers import StableDiffusionPipeline

    from sd_sparse.offline import tiny_stable_diffusion_path

    pipe = StableDiffusionPipeline.from_pretrained(tiny_stable_diffusion_path())
    pipe.vae = with_bottleneck(_tiny(), _bottleneck()).eval() if coded else _tiny()
    pipe.save_pretrained(tmp_path)
    assert json.load(open(tmp_path / "model_index.json"))["vae"] == ["sd_sparse", type(pipe.vae).__name__]
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert type(loaded.vae) is type(pipe.vae) and loaded.vae_scale_factor == 8
    for (name, theirs), ours in zip(loaded.vae.state_dict().items(), pipe.vae.state_dict().values()):
        assert torch.equal(theirs, ours), name
    kwargs = dict(num_inference_steps=2, height=32, width=32, output_type="np")
    images = loaded("a photograph", generator=torch.Generator().manual_seed(0), **kwargs).images
    expected = pipe("a photograph", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert images.shape == (1, 32, 32, 3) and np.array_equal(images, expected)


# -- the published TAEF2 weights (only where SD_SPARSE_TAEF2_WEIGHTS names their folder) ----------------------
@pytest.mark.skipif(not os.environ.get(TAEF2_WEIGHTS_ENV), reason=f"{TAEF2_WEIGHTS_ENV} names no TAEF2 weights")
def test_taef2_reconstructs_a_shipped_photograph():
    from sd_sparse.data import photo_crops, sample_photographs
    from sd_sparse.metrics import psnr

    vae = load_vae(os.environ[TAEF2_WEIGHTS_ENV])
    assert dict(vae.config)["latent_channels"] == 32 and vae.config.midblock_group_norm
    x = photo_crops([sample_photographs()["astronaut"]], 256, 1, center_crop=True)
    with torch.no_grad():
        z = vae.encode(x).latents
        y = vae.decode(z).sample.clamp(-1, 1)
    assert z.shape == (1, 32, 32, 32)
    value = float(psnr(x, y, data_range=2.0))
    print(f"TAEF2 PSNR on astronaut (256 centre crop): {value:.2f} dB")
    assert value > 27.0
