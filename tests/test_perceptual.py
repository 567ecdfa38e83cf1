"""LPIPS from local files only: formula, loading both file layouts, clear errors, switched off without weights."""

import logging
import socket

import pytest
import torch

from sd_sparse.losses import LPIPS, ReconstructionLoss, load_lpips
from sd_sparse.losses.perceptual import TAP_CHANNELS, VGG16_TAPS


def images(seed, shape=(2, 3, 32, 32)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_original_files(folder, seed=0):
    """Files laid out like torchvision's VGG16 checkpoint and the lpips package's vgg.pth, random values."""
    torch.manual_seed(seed)
    source = LPIPS()
    trunk = {f"features.{k}": v.clone() for k, v in source.features.state_dict().items()}
    trunk["classifier.0.weight"] = torch.randn(8, 8)  # the classifier is ignored
    torch.save(trunk, folder / "vgg16-397923af.pth")
    torch.save({f"lin{i}.model.1.weight": h.detach().clone() for i, h in enumerate(source.heads)}, folder / "vgg.pth")
    return source


def test_distance_is_the_weighted_feature_difference():
    torch.manual_seed(0)
    model = LPIPS()
    x, y = images(1), images(2)
    d = model(x, y)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(model(x, x), torch.zeros(2))
    torch.testing.assert_close(model(y, x), d)
    # only the first tap weighted, all channels 1: the mean over space of the squared distance of
    # unit-normalised relu1_2 features
    with torch.no_grad():
        for i, head in enumerate(model.heads):
            head.fill_(1.0 if i == 0 else 0.0)
    trunk = model.features[: VGG16_TAPS[0] + 1]
    fx, fy = (trunk((v - model.shift) / model.scale) for v in (x, y))
    fx, fy = fx / fx.norm(dim=1, keepdim=True), fy / fy.norm(dim=1, keepdim=True)
    torch.testing.assert_close(model(x, y), (fx - fy).square().sum(1).mean((1, 2)), rtol=1e-4, atol=1e-6)


def test_frozen_but_differentiable_in_its_input():
    model = LPIPS()
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    y = images(2).requires_grad_()
    model(images(1), y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_loads_the_original_files_and_round_trips(tmp_path, no_network):
    source = write_original_files(tmp_path)
    loaded = load_lpips(str(tmp_path))
    assert isinstance(loaded, LPIPS)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    saved = tmp_path / "saved"
    loaded.save_pretrained(saved)
    again = load_lpips(str(saved))
    x, y = images(3), images(4)
    torch.testing.assert_close(again(x, y), source(x, y))


def test_environment_variable_and_torch_hub_cache(tmp_path, monkeypatch, no_network, caplog):
    write_original_files(tmp_path)
    monkeypatch.setenv("SD_SPARSE_LPIPS_WEIGHTS", str(tmp_path))
    assert isinstance(load_lpips(), LPIPS)
    # nothing in the environment, an empty hub cache, no lpips package: None and a warning, no download
    monkeypatch.delenv("SD_SPARSE_LPIPS_WEIGHTS")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with caplog.at_level(logging.WARNING):
        assert load_lpips() is None
    assert "switched off" in caplog.text and "vgg16-397923af.pth" in caplog.text


def test_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vgg16"):
        load_lpips(str(tmp_path))
    write_original_files(tmp_path)
    torch.save({f"lin{i}.model.1.weight": torch.ones(1, 3, 1, 1) for i in range(5)}, tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match=r"heads|0.*shape \(1, 3, 1, 1\), expected \(1, 64, 1, 1\)"):
        load_lpips(str(tmp_path))
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match="lacks"):
        load_lpips(str(tmp_path))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        LPIPS()(images(1), images(2, (2, 3, 16, 16)))


def test_reconstruction_loss_with_lpips():
    torch.manual_seed(0)
    lpips = LPIPS()
    x, y = images(1), images(2)
    loss = ReconstructionLoss(eta=0.5, perceptual=lpips)(x, y)
    torch.testing.assert_close(loss, 0.5 * (x - y).square().mean() + 0.5 * lpips(x, y).mean())
    assert len(TAP_CHANNELS) == len(lpips.heads) == 5
