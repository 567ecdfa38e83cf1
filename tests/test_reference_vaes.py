"""The reference VAEs shipped with sd_sparse: 4, 16 and 32 latent channels, trained (not random), small."""

import os

import pytest
import torch

from sd_sparse.autoencoders import encode_latents, reference_vae_path
from sd_sparse.autoencoders.loading import load_vae
from sd_sparse.errors import UserError


@pytest.mark.parametrize("channels", [4, 16, 32])
def test_each_reference_vae_loads_and_encodes_to_its_channel_count(channels):
    path = reference_vae_path(channels)
    assert sorted(os.listdir(path)) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    assert os.path.getsize(os.path.join(path, "diffusion_pytorch_model.safetensors")) < 8_000_000
    vae = load_vae(path).eval()
    assert type(vae).__name__ == "AutoencoderKL" and vae.config.latent_channels == channels
    assert vae.config.scaling_factor != 1.0  # fitted to the training latents (1.0: the untrained default)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = encode_latents(vae, images)
    assert latents.shape == (2, channels, 8, 8) and torch.isfinite(latents).all()
    # the channels carry different information (a trained VAE, not a constant or copied map)
    assert latents.flatten(2).std(-1).mean() > 0.05


def test_the_default_is_the_four_channel_vae_and_other_counts_are_user_errors():
    assert reference_vae_path() == reference_vae_path(4)
    assert reference_vae_path(16) != reference_vae_path(32) != reference_vae_path(4)
    for bad in (8, 0, "16", True):
        with pytest.raises(UserError, match="latent_channels"):
            reference_vae_path(bad)
