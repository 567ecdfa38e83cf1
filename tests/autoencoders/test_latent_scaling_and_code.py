"""Latent scaling/shift (the one conversion to diffusion space) and the coded VAE's `code()` report."""

import pytest
import torch
from diffusers import AutoencoderKL

from sd_sparse import with_bottleneck
from sd_sparse.autoencoders import (
    decode_latents,
    encode_latents,
    latent_scaling,
    stable_diffusion_dictionary,
    stable_diffusion_vector_quantizer,
)
from sd_sparse.data import photo_patches, sample_photographs
from sd_sparse.metrics import bits_per_position, latent_psnr
from sd_sparse.testing import tiny_stable_diffusion_components


def small_vae(**config) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32,
        **{"latent_channels": 4, **config},
    ).eval()


@pytest.mark.parametrize(
    "family,scale,shift",
    [("SD 1.x/2.x", 0.18215, None), ("SDXL", 0.13025, None), ("SD3", 1.5305, 0.0609)],
)
def test_vae_families_scaling_and_shift(family, scale, shift):
    vae = small_vae(scaling_factor=scale, shift_factor=shift)
    assert latent_scaling(vae) == (scale, shift or 0.0)
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    z = vae.encode(images).latent_dist.mode()
    latents = encode_latents(vae, images)
    torch.testing.assert_close(latents, (z - (shift or 0.0)) * scale)
    torch.testing.assert_close(decode_latents(vae, latents), vae.decode(z).sample, atol=1e-4, rtol=0)
    coded = with_bottleneck(vae, stable_diffusion_dictionary(num_atoms=16, sparsity=2, patch_size=2)).code(images)
    assert coded.latents.shape == z.shape and torch.isfinite(coded.latent_psnr).all()


def test_per_channel_latent_statistics_as_the_sdxl_pipelines_use_them():
    """A config with `latents_mean`/`latents_std` (Playground v2.5-style): diffusion space is
    `(z − mean) · scaling_factor / std`, the inverse of SDXL's `latents · std / scaling_factor + mean`."""
    mean, std = [0.1, -0.2, 0.3, 0.0], [1.0, 2.0, 0.5, 1.5]
    vae = small_vae(scaling_factor=0.5, latents_mean=mean, latents_std=std)
    scale, shift = latent_scaling(vae)
    assert scale.shape == shift.shape == (1, 4, 1, 1)
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    z = vae.encode(images).latent_dist.mode()
    latents = encode_latents(vae, images)
    m, s = torch.tensor(mean).view(1, 4, 1, 1), torch.tensor(std).view(1, 4, 1, 1)
    torch.testing.assert_close(latents, (z - m) * 0.5 / s)
    torch.testing.assert_close(latents * s / 0.5 + m, z, atol=1e-5, rtol=1e-5)  # what SDXL's pipeline decodes
    with pytest.raises(ValueError, match="one value per latent channel"):
        latent_scaling(small_vae(latents_mean=[0.0] * 3, latents_std=[1.0] * 3))


def test_code_reports_codes_psnr_bits_and_reference():
    vae = tiny_stable_diffusion_components()["vae"]
    torch.manual_seed(0)
    bottleneck = stable_diffusion_dictionary(num_atoms=64, sparsity=4, patch_size=2).eval()
    coded_vae = with_bottleneck(vae, bottleneck)
    images = photo_patches([sample_photographs()["astronaut"]], patch_size=64, max_patches=2)
    coded = coded_vae.code(images, return_reference=True)
    with torch.no_grad():
        z = vae.encode(images).latent_dist.mode()
        plain = vae.decode(z).sample.clamp(-1, 1)
    torch.testing.assert_close(coded.reference_latents, z * vae.config.scaling_factor)
    torch.testing.assert_close(coded.reference_images, plain, atol=1e-4, rtol=0)
    torch.testing.assert_close(coded.latents, bottleneck(coded.reference_latents).latents)
    assert coded.codes.indices.shape == (2 * 4 * 4, 4)  # 8x8 latents in 2x2 patches, S = 4
    torch.testing.assert_close(coded.latent_psnr, latent_psnr(coded.reference_latents, coded.latents))
    assert coded.bits_per_position == bits_per_position(bottleneck) == 4 * (6 + 16) / 4
    with torch.no_grad():
        through = vae.decode(coded.latents / vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(coded.images, through, atol=1e-5, rtol=0)
    assert (coded.images - coded.reference_images).abs().max() > 1e-3

    # the same from latents (what a pipeline returns with output_type="latent"), without decoding
    from_latents = coded_vae.code(latents=coded.reference_latents, return_images=False)
    assert from_latents.images is None and from_latents.reference_images is None
    torch.testing.assert_close(from_latents.latents, coded.latents)

    # a bottleneck in training mode is left in it, and unchanged
    bottleneck.train()
    before = {k: v.clone() for k, v in bottleneck.state_dict().items()}
    coded_vae.code(latents=coded.reference_latents, return_images=False)
    assert bottleneck.training and all(torch.equal(before[k], v) for k, v in bottleneck.state_dict().items())
    bottleneck.eval()


def test_presets_and_bits_per_position():
    assert bits_per_position(stable_diffusion_dictionary()) == 8 * (9 + 16) / 16
    assert bits_per_position(stable_diffusion_vector_quantizer()) == 9
    assert bits_per_position(stable_diffusion_vector_quantizer(patch_size=2)) == 9 / 4
    assert (
        with_bottleneck(tiny_stable_diffusion_components()["vae"], stable_diffusion_dictionary()).bits_per_position
        == 12.5
    )
