"""Images → codes file → images through a coded VAE: exact, self-checking, and as small as claimed."""

import os

import pytest
import torch

from sd_sparse import Codes, with_bottleneck
from sd_sparse.autoencoders import stable_diffusion_dictionary, stable_diffusion_vector_quantizer
from sd_sparse.data import photo_patches, sample_photographs
from sd_sparse.testing import tiny_stable_diffusion_components


@pytest.fixture(scope="module")
def vae():
    return tiny_stable_diffusion_components()["vae"]


@pytest.fixture(scope="module")
def images():
    return photo_patches([sample_photographs()["astronaut"]], patch_size=64, max_patches=2)


@pytest.mark.parametrize("make", [stable_diffusion_dictionary, stable_diffusion_vector_quantizer])
def test_compress_to_file_and_back_is_bit_exact(vae, images, make, tmp_path):
    torch.manual_seed(0)
    bottleneck = make(num_atoms=64, patch_size=2).eval()
    coded = with_bottleneck(vae, bottleneck)
    codes = coded.compress(images)
    assert codes.latent_shape == (2, 4, 8, 8)
    codes.save(tmp_path / "images.codes")
    restored = coded.decompress(Codes.load(tmp_path / "images.codes"))
    # exactly what the coded VAE's decode (what every pipeline calls) makes of the same latents
    with torch.no_grad():  # (latents that need grad get straight-through gradients, not exact codes)
        z = vae.encode(images).latent_dist.mode()
        assert torch.equal(restored, coded.decode(z).sample.clamp(-1, 1))
        assert not torch.equal(restored, vae.decode(z).sample.clamp(-1, 1))  # the bottleneck did something
    # the file holds the codes and little else: at most 1 KiB of header and metadata over the payload
    positions = 2 * 8 * 8
    payload_bits = bottleneck.bits_per_position * positions
    if codes.coefficients is not None:  # stored as they were computed (float32), not float16
        payload_bits += codes.coefficients.numel() * 16
    assert os.path.getsize(tmp_path / "images.codes") <= payload_bits / 8 + 1024


def test_decompress_refuses_codes_of_another_bottleneck(vae, images):
    torch.manual_seed(0)
    first = with_bottleneck(vae, stable_diffusion_dictionary(num_atoms=64, patch_size=2).eval())
    second = with_bottleneck(vae, stable_diffusion_dictionary(num_atoms=32, patch_size=2).eval())
    with pytest.raises(ValueError, match="made by DictionaryBottleneck"):
        second.decompress(first.compress(images))


def test_compress_rejects_bad_images_naming_them(vae):
    coded = with_bottleneck(vae, stable_diffusion_dictionary(num_atoms=32).eval())
    before = {k: v.clone() for k, v in coded.bottleneck.state_dict().items()}
    for images, match in [
        (torch.zeros(0, 3, 64, 64), "`images` is empty"),
        (torch.full((1, 3, 64, 64), float("nan")), "`images` contains NaN"),
        (torch.zeros(1, 3, 60, 64), r"`images` height and width \(60, 64\) must be multiples of 32x32"),
        (torch.zeros(3, 64, 64), r"`images` must be a tensor \[B, 3, H, W\]"),
        # [0, 255] images: the expected range and the fix, before the VAE or the bottleneck runs
        (torch.full((1, 3, 64, 64), 200.0), r"`images` must be in \[-1, 1\].*\[0, 255\].*`images / 127\.5 - 1`"),
        (torch.full((1, 3, 64, 64), 200, dtype=torch.uint8), r"`images` must be floating-point.*127\.5 - 1"),
        (
            torch.full((1, 3, 64, 64), -2.0),
            r"`images` must be in \[-1, 1\] \(the diffusers convention\), got values in \[-2, -2\]",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            coded.compress(images)
    for k, v in coded.bottleneck.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="not a readable codes file"):
        Codes.load("/nonexistent/images.codes")


def test_compress_checks_the_range_with_a_small_tolerance_and_warns_on_0_1_images(vae, images):
    coded = with_bottleneck(vae, stable_diffusion_dictionary(num_atoms=32, patch_size=2).eval())
    inside = images.clamp(-1, 1) * 1.0009  # rounding of the caller's own scaling: accepted
    assert coded.compress(inside).latent_shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"\[-1, 1\].*for \[0, 1\] images `images \* 2 - 1`"):
        coded.compress(images * 1.01 - 0.5)
    with pytest.warns(UserWarning, match=r"`images` are all in \[0, 1\].*`images \* 2 - 1`"):
        coded.compress((images + 1) / 2)


def test_compress_in_batches_gives_the_codes_of_one_batch(vae, images):
    torch.manual_seed(0)
    coded = with_bottleneck(vae, stable_diffusion_dictionary(num_atoms=64, patch_size=2).eval())
    whole, one_by_one = coded.compress(images), coded.compress(images, batch_size=1, progress=True)
    assert torch.equal(whole.indices, one_by_one.indices) and torch.equal(whole.layout, one_by_one.layout)
    torch.testing.assert_close(whole.coefficients, one_by_one.coefficients)
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        coded.compress(images, batch_size=0)
