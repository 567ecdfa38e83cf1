"""SparseAutoencoder (DL-VAE / VQ-VAE / SC-VAE configurations), PatchGAN and the loss terms."""

import logging

import pytest
import torch

from sd_sparse import SparseAutoencoder
from sd_sparse.bottlenecks import LISTABottleneck, patchify
from sd_sparse.losses import (
    PatchGANDiscriminator,
    ReconstructionLoss,
    adaptive_gan_weight,
    discriminator_factor,
    discriminator_loss,
    generator_loss,
)
from sd_sparse.models import LatentAttention, LightweightEncoder

CONFIGS = {
    "dl-vae": dict(bottleneck_config=dict(num_atoms=64)),
    "vq-vae": dict(bottleneck_class="VectorQuantizer", bottleneck_config=dict(num_atoms=64)),
    "sc-vae": dict(
        bottleneck_class="LISTABottleneck",
        bottleneck_config=dict(num_atoms=64, num_blocks=2, sparsity=5),
        latent_attention=True,
    ),
    "vqgan-dl": dict(
        architecture="vqgan",
        block_out_channels=(32, 64),
        latent_channels=4,
        bottleneck_config=dict(num_atoms=32, patch_size=2, sparsity=3),
    ),
}


def images(b=2, size=32, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_shapes_and_gradients(name):
    torch.manual_seed(0)
    model = SparseAutoencoder(**CONFIGS[name])
    x = images()
    out = model(x)
    f = model.downsampling_factor
    assert out.sample.shape == x.shape
    assert out.latents.shape == (2, model.config.latent_channels, 32 // f, 32 // f) == out.coded_latents.shape
    (out.bottleneck_loss + (out.sample - x).square().mean()).backward()
    for part in (model.encoder, model.decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert model.last_layer.grad is not None
    if name == "sc-vae":
        assert out.latent_weights.shape == (2, 1, 8, 8)
        torch.testing.assert_close(out.latent_weights.mean((1, 2, 3)), torch.ones(2))
    as_tuple = model(x, return_dict=False)
    assert as_tuple[0].shape == x.shape


def test_lasers_pair_matches_the_paper():
    encoder = LightweightEncoder()
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    strided = [c for c in convs if c.stride == (2, 2)]
    assert len(strided) == 2 and all(c.kernel_size == (4, 4) for c in strided)
    assert strided[1].out_channels == 128
    assert encoder(images(1, 32)).shape == (1, 16, 8, 8)


@pytest.mark.parametrize("name", ["dl-vae", "vq-vae"])
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = SparseAutoencoder(**CONFIGS[name])
    model(images())  # data-driven / EMA state
    model.eval().save_pretrained(tmp_path)
    loaded = SparseAutoencoder.from_pretrained(tmp_path).eval()
    x = images(seed=1)
    assert torch.equal(model(x).sample, loaded(x).sample)


def test_latent_weights_reweight_the_lista_loss():
    torch.manual_seed(0)
    lista = LISTABottleneck(num_atoms=32, latent_channels=4, num_blocks=2)
    z = torch.randn(2, 4, 4, 4)
    n = patchify(z).shape[0]
    plain = lista(z).loss
    torch.testing.assert_close(lista(z, vector_weights=torch.ones(n)).loss, plain)
    weights = torch.zeros(n)
    weights[0] = n  # all the weight on one vector
    code = lista.coefficients(patchify(z))
    first = ((code[0] @ lista.atoms - patchify(z)[0]).square().sum() + 0.1 * code[0].abs().sum()) / 4
    torch.testing.assert_close(lista(z, vector_weights=weights).loss, first)
    with pytest.raises(ValueError, match="one weight per coded vector"):
        lista(z, vector_weights=torch.ones(3))
    assert LatentAttention(4)(z).shape == (2, 1, 4, 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(architecture="unet"), "architecture"),
        (dict(bottleneck_type="kmeans"), "bottleneck_type"),
        (dict(latent_attention=True), "latent_attention"),
        (dict(num_atoms=4, sparsity=5), "sparsity"),
    ],
)
def test_invalid_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseAutoencoder(**kwargs)


def test_invalid_images():
    model = SparseAutoencoder(num_atoms=16)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(images(size=30))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(1, 1, 32, 32))


def test_patchgan_shapes_and_errors():
    d = PatchGANDiscriminator()
    assert d(images(2, 64)).shape == (2, 1, 6, 6)
    assert PatchGANDiscriminator(norm="group", num_layers=2)(images(1, 64)).shape == (1, 1, 14, 14)
    with pytest.raises(ValueError, match="norm"):
        PatchGANDiscriminator(norm="layer")


def test_gan_losses_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # hinge: relu(1 - real) = [0, 0.5], relu(1 + fake) = [0, 1]
    torch.testing.assert_close(discriminator_loss(real, fake, "hinge"), torch.tensor(0.5 * (0.25 + 0.5)))
    expected = 0.5 * (torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean())
    torch.testing.assert_close(discriminator_loss(real, fake, "vanilla"), expected)
    torch.testing.assert_close(generator_loss(fake, "hinge"), torch.tensor(1.0))
    with pytest.raises(ValueError, match="kind"):
        generator_loss(fake, "wasserstein")
    assert discriminator_factor(9, 10) == 0.0 and discriminator_factor(10, 10, 0.8) == 0.8


def test_adaptive_weight_is_the_gradient_norm_ratio():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(8, 4)
    out = layer(x)
    recon = out.square().mean()
    gan = -(3 * out).mean()
    g_recon = torch.autograd.grad(recon, layer.weight, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, layer.weight, retain_graph=True)[0]
    weight = adaptive_gan_weight(recon, gan, layer.weight)
    torch.testing.assert_close(weight, g_recon.norm() / (g_gan.norm() + 1e-6))
    assert not weight.requires_grad
    assert float(adaptive_gan_weight(recon, gan, layer.weight, max_weight=1e-3)) == pytest.approx(1e-3)


def test_reconstruction_loss(caplog):
    x, y = images(seed=1), images(seed=2)
    with caplog.at_level(logging.WARNING):
        plain = ReconstructionLoss(eta=0.5)
    assert "MSE only" in caplog.text
    torch.testing.assert_close(plain(x, y), (x - y).square().mean())

    class Perceptual(torch.nn.Module):
        def forward(self, a, b):
            return (a - b).abs().mean((1, 2, 3))

    mixed = ReconstructionLoss(eta=0.25, perceptual=Perceptual())(x, y)
    torch.testing.assert_close(mixed, 0.25 * (x - y).square().mean() + 0.75 * (x - y).abs().mean())
    with pytest.raises(ValueError, match="eta"):
        ReconstructionLoss(eta=1.5)


def test_sparse_autoencoder_refuses_a_folder_saved_by_another_class(tmp_path):
    from sd_sparse import VectorQuantizer

    VectorQuantizer(num_atoms=8, latent_channels=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="saved by VectorQuantizer, not SparseAutoencoder"):
        SparseAutoencoder.from_pretrained(tmp_path)
