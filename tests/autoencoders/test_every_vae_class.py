"""Every image and video VAE class of the installed diffusers takes a bottleneck through one mechanism.

One parametrized test over tiny, randomly initialised instances of every class (`tiny_vaes.py`), and of
sd_sparse's own VAE classes (`TAESDAutoencoder`): the coded
class builds, `decode(z, apply_bottleneck=False)` equals the plain decode bit for bit, the coded decode
differs and is finite, save/load decodes bit-identically, and `decompress(compress(x))` (through the codes
file) equals the coded decode. Audio and protein autoencoders are refused by name.
"""

import inspect

import diffusers
import pytest
import torch
from tiny_vaes import (
    IMAGE_VIDEO,
    SD_SPARSE_TINY_VAES,
    TINY_VAES,
    build_tiny_vae,
    prepare_loaded_tiny_vae,
    tiny_vae_entry,
    tiny_vae_input,
)

import sd_sparse
from sd_sparse import DictionaryBottleneck, with_bottleneck
from sd_sparse.autoencoders import family_of, latent_channels, supported_vae_classes
from sd_sparse.autoencoders.identity import downsampling_factor
from sd_sparse.autoencoders.loading import load_vae
from sd_sparse.autoencoders.scaling import decode_kwargs_for, to_diffusion_space, vae_latents
from sd_sparse.codec import codes_file_info
from sd_sparse.codec.codes import Codes


def _decode(vae, z, name, **kwargs):
    """`vae.decode(z)` with the entry's decode arguments; a fixed global seed for decoders that draw noise."""
    torch.manual_seed(0)
    out = vae.decode(z, **tiny_vae_entry(name).decode_kwargs, **kwargs)
    return out.sample if hasattr(out, "sample") else out


def _bottleneck(channels: int, seed: int = 1) -> DictionaryBottleneck:
    torch.manual_seed(seed)
    return DictionaryBottleneck(num_atoms=16, latent_channels=channels, sparsity=2, patch_size=1).eval()


def test_the_tiny_zoo_covers_every_autoencoder_class_of_diffusers():
    names = {n for n in dir(diffusers) if "utoencoder" in n} | {"VQModel", "ConsistencyDecoderVAE"}
    assert names == set(TINY_VAES)
    assert set(IMAGE_VIDEO) == set(supported_vae_classes())  # what families.py supports is what runs here
    for name, entry in TINY_VAES.items():
        assert family_of(getattr(diffusers, name)).kind == entry.kind or (
            entry.kind,
            family_of(getattr(diffusers, name)).kind,
        ) == ("image", "video"), name


@pytest.mark.parametrize("name", IMAGE_VIDEO + tuple(SD_SPARSE_TINY_VAES))
def test_every_image_and_video_vae_class_takes_a_bottleneck(name, tmp_path):
    vae = build_tiny_vae(name)
    x = tiny_vae_input(name)
    with torch.no_grad():
        z = vae_latents(vae.encode(x))
        coded = with_bottleneck(vae, _bottleneck(latent_channels(vae))).eval()
        assert type(coded).__name__ == f"{name}WithBottleneck" and isinstance(coded, type(vae))
        assert getattr(sd_sparse, f"{name}WithBottleneck") is type(coded)
        # one spatial factor for every class: what the VAE states, else what its encoder's levels give
        stated = vars(vae).get("spatial_compression_ratio") or vae.config.get("spatial_compression_ratio", None)
        assert downsampling_factor(vae) == downsampling_factor(coded) == (stated or x.shape[-1] // z.shape[-1])

        plain = _decode(vae, z, name)
        unchanged = _decode(coded, z, name, apply_bottleneck=False)
        assert torch.equal(unchanged, plain)
        decoded = _decode(coded, z, name)
        assert decoded.shape == plain.shape and torch.isfinite(decoded).all()
        assert not torch.allclose(decoded, plain, atol=1e-4)

        # the class's own forward signature: the coded reconstruction (posterior mode) and the bottleneck's loss
        accepted = inspect.signature(coded.forward).parameters
        options = {"sample_posterior": False, **tiny_vae_entry(name).decode_kwargs}
        torch.manual_seed(0)
        forward = coded(x, **{k: v for k, v in options.items() if k in accepted})
        assert torch.isfinite(forward.sample).all() and forward.commit_loss.dim() == 0
        torch.testing.assert_close(forward.sample, decoded, atol=1e-5, rtol=0)

        coded.save_pretrained(tmp_path)
        loaded = prepare_loaded_tiny_vae(load_vae(str(tmp_path)).eval())
        assert type(loaded) is type(coded)
        assert torch.equal(_decode(loaded, z, name), decoded)

        codes = coded.compress(x)
        assert isinstance(codes, Codes)
        assert codes.num_frames == (z.shape[2] if z.dim() == 5 else None)
        data = codes.to_bytes(coded.bottleneck, vae=coded)
        assert codes_file_info(data).vae_factor == downsampling_factor(vae)
        torch.manual_seed(0)
        images = loaded.decompress(data)
    if family_of(vae).frames_first_output:  # Allegro decodes [B, T, 3, H, W]; decompress gives [B, 3, T, H, W]
        decoded = decoded.transpose(1, 2)
    torch.testing.assert_close(images, decoded.clamp(-1, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [n for n, e in TINY_VAES.items() if e.kind not in ("image", "video")])
def test_audio_and_protein_autoencoders_are_refused_by_name(name):
    vae = build_tiny_vae(name, allow_any_kind=True)
    with pytest.raises(ValueError, match=rf"{name} cannot take a bottleneck: it is an? (audio VAE|protein)"):
        with_bottleneck(vae, _bottleneck(4))
    with pytest.raises(AttributeError, match=name):
        getattr(sd_sparse, f"{name}WithBottleneck")


def test_a_bottleneck_of_the_wrong_width_names_both(tmp_path):
    vae = build_tiny_vae("AutoencoderKLWan")
    with pytest.raises(ValueError, match=r"codes 8-channel latents .* VAE makes 4-channel"):
        with_bottleneck(vae, _bottleneck(8))
    coded = with_bottleneck(vae, _bottleneck(4))
    with pytest.raises(ValueError, match=r"`z` must be a tensor \[B, 4, T, h, w\] of AutoencoderKLWanWithBottleneck"):
        coded.decode(torch.zeros(1, 3, 1, 4, 4))


def test_flux2_codes_in_the_batch_normalized_space_its_pipeline_uses():
    """FLUX.2's denoiser sees `(patchify(z) − running_mean) / sqrt(running_var + eps)`; the bottleneck
    codes exactly those values (un-patchified), so a 2×2 bottleneck patch holds one transformer token."""
    vae = build_tiny_vae("AutoencoderKLFlux2")
    channels = latent_channels(vae)
    torch.manual_seed(0)
    vae.bn.running_mean.copy_(torch.randn(4 * channels))
    vae.bn.running_var.copy_(torch.rand(4 * channels) + 0.5)
    z = torch.randn(2, channels, 6, 8)
    from diffusers import Flux2Pipeline

    patches = Flux2Pipeline._patchify_latents(z)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    expected = Flux2Pipeline._unpatchify_latents((patches - vae.bn.running_mean.view(1, -1, 1, 1)) / std)
    torch.testing.assert_close(to_diffusion_space(vae, z), expected, atol=1e-6, rtol=0)


def test_video_codes_count_frames_and_index_by_video():
    vae = build_tiny_vae("AutoencoderKLWan")
    coded = with_bottleneck(vae, _bottleneck(4)).eval()
    videos = torch.cat([tiny_vae_input("AutoencoderKLWan", seed=s) for s in (0, 1)])
    codes = coded.compress(videos)
    frames = codes.num_frames
    assert frames == 3 and codes.num_images == 2 * frames and codes.num_items == 2
    second = codes[1]
    assert second.num_frames == frames and second.num_images == frames
    torch.testing.assert_close(coded.decompress(second), coded.decompress(codes)[1:], atol=1e-5, rtol=0)
    assert Codes.from_bytes(codes.to_bytes(coded.bottleneck), coded.bottleneck).num_frames == frames
    # a video VAE also codes images, as one-frame videos
    images = videos[:, :, 0]
    assert coded.compress(images).num_frames is None
    assert coded.decompress(coded.compress(images)).dim() == 4
    assert decode_kwargs_for(coded, torch.zeros(1)) == {}
