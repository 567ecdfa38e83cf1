"""The one fitting loop (`sd_sparse.training.fit`) and the one evaluation function (`sd_sparse.evaluation.evaluate`)."""

import math

import pytest
import torch

from sd_sparse import DictionaryBottleneck, SparseAutoencoder, VectorQuantizer
from sd_sparse.evaluation import evaluate
from sd_sparse.metrics import latent_psnr, psnr
from sd_sparse.training import fit


def clustered(n=256, dim=4, seed=0):
    """Latents [n, dim, 2, 2] whose positions sit near 8 centres: easy to code."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, dim, generator=g)
    picks = torch.randint(0, 8, (n, 2, 2), generator=g)
    return (centres[picks] + 0.01 * torch.randn(n, 2, 2, dim, generator=g)).permute(0, 3, 1, 2).contiguous()


def test_fit_trains_gradient_and_ema_bottlenecks_and_is_seeded():
    torch.manual_seed(1234)  # the untrained dictionary is the same whichever tests ran before
    data = clustered()
    before = evaluate(DictionaryBottleneck(16, 4, 2, init_from_data=False), data, latents=True)["latent_psnr"]
    torch.manual_seed(0)
    a = fit(DictionaryBottleneck(16, 4, 2, init_from_data=False), data, steps=60, batch_size=32, learning_rate=1e-2)
    torch.manual_seed(0)
    b = fit(DictionaryBottleneck(16, 4, 2, init_from_data=False), data, steps=60, batch_size=32, learning_rate=1e-2)
    assert not a.training and torch.equal(a.dictionary, b.dictionary)  # eval mode; same seed, same weights
    assert evaluate(a, data, latents=True)["latent_psnr"] > before + 3
    vq = VectorQuantizer(16, 4)  # EMA: no parameter has a gradient, the training forward learns
    assert not any(p.requires_grad for p in vq.parameters())
    codebook = vq.codebook.clone()
    fit(vq, data, steps=5, batch_size=32)
    assert not torch.equal(codebook, vq.codebook)
    with pytest.raises(ValueError, match="steps"):
        fit(vq, data, steps=0)
    with pytest.raises(ValueError, match="empty"):
        fit(vq, data[:0], steps=1)


def test_fit_takes_a_batch_function_a_loss_a_callback_and_times_steps():
    torch.manual_seed(0)
    model = SparseAutoencoder(hidden_channels=16, latent_channels=4, num_atoms=16, sparsity=2)
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    drawn, seen, times = [], [], []

    def batches(generator):
        drawn.append(torch.randint(0, 8, (4,), generator=generator))
        return images[drawn[-1]]

    fit(
        model,
        batches,
        steps=3,
        seed=7,
        loss=lambda batch, out: (out.sample - batch).square().mean() + out.bottleneck_loss,
        callback=lambda step, m: seen.append((step, m is model, m.training)),
        step_times=times,
    )
    assert seen == [(1, True, True), (2, True, True), (3, True, True)] and len(times) == 3
    assert all(t > 0 for t in times)
    g = torch.Generator().manual_seed(7)  # the batches come from a generator seeded with `seed`
    assert all(torch.equal(d, torch.randint(0, 8, (4,), generator=g)) for d in drawn)


def test_evaluate_an_autoencoder_on_images():
    torch.manual_seed(0)
    model = SparseAutoencoder(hidden_channels=16, latent_channels=4, num_atoms=16, sparsity=2).train()
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    m, recon = evaluate(model, images, batch_size=2, with_ssim=True, max_flip_images=3, return_reconstructions=True)
    assert model.training  # the mode is restored
    with torch.no_grad():
        model.eval()
        expected = model(images).sample.clamp(-1, 1)
    torch.testing.assert_close(recon, expected)
    per_image = psnr((images + 1) / 2, (expected + 1) / 2, dim=(1, 2, 3))
    assert m["image_psnr"] == pytest.approx(float(per_image.mean()), rel=1e-6)
    pooled = evaluate(model, images, batch_size=2, with_flip=False, psnr_reduction="pooled")
    assert pooled["image_psnr"] == pytest.approx(float(psnr((images + 1) / 2, (expected + 1) / 2)), rel=1e-6)
    assert pooled["flip"] is None and 0 <= m["flip"] <= 1 and 0 < m["ssim"] <= 1 and m["lpips"] is None
    assert m["images"] == 5 and m["num_codes"] == 16 and m["bits_per_position"] == 2 * (4 + 16)
    assert 1 <= m["perplexity"] <= 16 and 0 <= m["dead_codes"] <= 16
    assert "latent_psnr" not in m


def test_evaluate_latents_with_and_without_a_vae():
    from sd_sparse.testing import sd_vae_architecture

    vae = sd_vae_architecture(block_out_channels=(32, 32), layers_per_block=1, sample_size=16, seed=0)
    data = clustered(n=6)
    bottleneck = fit(VectorQuantizer(16, 4), clustered(), steps=20, batch_size=32)
    alone = evaluate(bottleneck, data, latents=True, batch_size=4)
    with torch.no_grad():
        coded = bottleneck(data).latents
    assert alone["latent_psnr"] == pytest.approx(float(latent_psnr(data, coded).mean()), rel=1e-6)
    assert alone["image_psnr"] is None and alone["flip"] is None and alone["bits_per_position"] == 4
    through = evaluate(bottleneck, data, vae=vae, batch_size=4)
    assert through["latent_psnr"] == pytest.approx(alone["latent_psnr"], rel=1e-6)
    assert math.isfinite(through["image_psnr"]) and 0 <= through["flip"] <= 1  # coded vs plain decode
    assert evaluate(torch.nn.Identity(), data, vae=vae)["image_psnr"] == 200.0  # identical decodes: capped


def test_evaluate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="psnr_reduction"):
        evaluate(torch.nn.Identity(), torch.zeros(1, 3, 4, 4), psnr_reduction="median")
    with pytest.raises(ValueError, match="inputs"):
        evaluate(torch.nn.Identity(), torch.zeros(0, 3, 4, 4))
