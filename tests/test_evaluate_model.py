"""`sd-sparse evaluate MODEL --data DIR` / `evaluate_model`: values, the n/a metrics, bad input; and our
PSNR/SSIM against torchmetrics'."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sd_sparse.cli import main
from sd_sparse.data import load_images, sample_photographs
from sd_sparse.evaluation import evaluate, evaluate_model
from sd_sparse.evaluation.model_evaluation import to_uint8
from sd_sparse.metrics import psnr, ssim

CROP = (72, 80)  # height, width of the PNGs: scaled to --resolution 32, or 64 (the reference VAE's sample size)


class ChannelStatistics(torch.nn.Module):
    """A deterministic stand-in for FID's Inception network (tests only): uint8 images `[B, 3, H, W]` →
    each channel's mean and standard deviation `[B, 6]`."""

    num_features = 6

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.double() / 255
        return torch.cat([pixels.mean((2, 3)), pixels.std((2, 3))], 1)


@pytest.fixture(autouse=True)
def no_weights_no_downloads(tmp_path, monkeypatch):
    """No LPIPS/Inception weights on disk (an empty torch hub cache), and any download attempt fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SD_SPARSE_LPIPS_WEIGHTS", raising=False)
    monkeypatch.delenv("SD_SPARSE_INCEPTION_WEIGHTS", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Five PNG crops of the shipped photographs; (folder, sorted paths)."""
    folder = tmp_path_factory.mktemp("held_out")
    photos = sample_photographs()
    paths = []
    for name in sorted(photos)[:5]:
        array = photos[name]
        top, left = (array.shape[0] - CROP[0]) // 2, (array.shape[1] - CROP[1]) // 2
        path = folder / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(array[top : top + CROP[0], left : left + CROP[1]])).save(path)
        paths.append(str(path))
    return str(folder), paths


@pytest.fixture(scope="module")
def sparse_autoencoder_dir(tmp_path_factory):
    from sd_sparse.models import SparseAutoencoder

    torch.manual_seed(0)
    model = SparseAutoencoder(hidden_channels=32, latent_channels=8, num_atoms=32, sparsity=3)
    folder = tmp_path_factory.mktemp("dlvae")
    model.save_pretrained(folder)
    return str(folder)


def _notices(caplog, prefix):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and prefix in r.getMessage()]


def test_cli_scores_a_sparse_autoencoder_like_evaluate(image_dir, sparse_autoencoder_dir, tmp_path, capsys, caplog):
    from sd_sparse.models import SparseAutoencoder

    folder, paths = image_dir
    out = tmp_path / "scores"
    argv = ["evaluate", sparse_autoencoder_dir, "--data", folder, "--resolution", "32", "--batch_size", "2"]
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--output_dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())

    model = SparseAutoencoder.from_pretrained(sparse_autoencoder_dir).eval()
    images = load_images(paths, 32)
    expected = evaluate(model, images, batch_size=2, with_ssim=True)
    assert metrics["images"] == 5 and metrics["resolution"] == 32 and metrics["model_class"] == "SparseAutoencoder"
    for ours, theirs in (("psnr", "image_psnr"), ("ssim", "ssim"), ("flip", "flip"), ("perplexity", "perplexity")):
        assert metrics[ours] == pytest.approx(expected[theirs], rel=1e-9), ours
    assert metrics["bits_per_position"] == model.bottleneck.bits_per_position == 3 * (5 + 16)
    assert metrics["num_codes"] == 32 and metrics["dead_codes"] == expected["dead_codes"]
    # the PSNR and SSIM, computed directly on the same reconstructions
    with torch.no_grad():
        recon = model(images).sample.clamp(-1, 1)
    reference, estimate = (images + 1) / 2, (recon + 1) / 2
    assert metrics["psnr"] == pytest.approx(float(psnr(reference, estimate, dim=(1, 2, 3)).mean()), abs=1e-4)
    assert metrics["ssim"] == pytest.approx(float(ssim(reference, estimate).mean()), abs=1e-5)
    assert 5 < metrics["psnr"] < 40 and 0 < metrics["ssim"] < 1 and 0 < metrics["flip"] < 1

    # no weights on disk: LPIPS and rFID are null, each with exactly one one-line notice
    assert metrics["lpips"] is None and metrics["rfid"] is None
    assert set(metrics["unavailable"]) == {"lpips", "rfid"}
    for prefix in ("LPIPS: n/a", "rFID: n/a"):
        (notice,) = _notices(caplog, prefix)
        assert "\n" not in notice and "Nothing is downloaded" in notice
    assert not _notices(caplog, "perceptual term")  # load_lpips's own warning is replaced by ours
    table = (out / "metrics.md").read_text()
    row = f"| 5 | 32 | {metrics['psnr']:.2f} | {metrics['ssim']:.4f} | n/a | {metrics['flip']:.4f} | n/a | 63.0 |"
    assert row in table
    printed = capsys.readouterr().out
    assert row in printed and f"wrote {out / 'metrics.json'}" in printed

    # batches of another size, the first 3 images only, the default output folder
    assert main([*argv[:-2], "--batch_size", "5", "--max_images", "3"]) == 0
    default = json.loads(open(os.path.join(sparse_autoencoder_dir, "evaluation", "metrics.json")).read())
    first3 = evaluate(model, images[:3], batch_size=5, with_ssim=True)
    assert default["images"] == 3 and default["psnr"] == pytest.approx(first3["image_psnr"], rel=1e-9)


def test_fid_with_a_custom_feature_extractor(image_dir, sparse_autoencoder_dir, tmp_path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from sd_sparse.models import SparseAutoencoder

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=generator)
    others = (images.double() * 0.6 + 40).round().to(torch.uint8)  # darker, lower contrast

    def fid(real, fake):
        metric = FrechetInceptionDistance(feature=ChannelStatistics(), normalize=False)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return float(metric.compute())

    assert fid(images, images) == pytest.approx(0.0, abs=1e-8)
    assert fid(images, others) > 1e-2

    # evaluate_model's rFID: the inputs vs their reconstructions
    folder, paths = image_dir
    metrics = evaluate_model(
        sparse_autoencoder_dir,
        folder,
        resolution=32,
        batch_size=2,
        output_dir=str(tmp_path),
        fid_feature_extractor=ChannelStatistics(),
        progress=False,
    )
    model = SparseAutoencoder.from_pretrained(sparse_autoencoder_dir).eval()
    images = load_images(paths, 32)
    _, recon = evaluate(model, images, return_reconstructions=True, with_flip=False)
    assert metrics["rfid"] == pytest.approx(fid(to_uint8(images), to_uint8(recon)), rel=1e-6)
    assert metrics["rfid"] > 1e-3 and "rfid" not in metrics["unavailable"]


def test_cli_reference_vae_with_a_bottleneck(image_dir, tmp_path):
    from diffusers import AutoencoderKL

    from sd_sparse import DictionaryBottleneck, with_bottleneck
    from sd_sparse.autoencoders import reference_vae_path

    folder, paths = image_dir
    torch.manual_seed(0)
    bottleneck = DictionaryBottleneck(32, 4, 2).eval()
    bottleneck.save_pretrained(tmp_path / "bottleneck")
    vae_path = reference_vae_path()
    common = ["evaluate", vae_path, "--data", folder, "--max_images", "3"]  # default resolution: sample_size 64
    assert main([*common, "--bottleneck", str(tmp_path / "bottleneck"), "--output_dir", str(tmp_path / "coded")]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "plain")]) == 0
    coded = json.loads((tmp_path / "coded" / "metrics.json").read_text())
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())

    vae = AutoencoderKL.from_pretrained(vae_path).eval()
    images = load_images(paths[:3], 64)
    expected = evaluate(with_bottleneck(vae, bottleneck).eval(), images, with_ssim=True)
    assert coded["resolution"] == 64 and coded["model_class"] == "AutoencoderKLWithBottleneck"
    assert coded["psnr"] == pytest.approx(expected["image_psnr"], rel=1e-6)
    assert coded["ssim"] == pytest.approx(expected["ssim"], rel=1e-6)
    assert coded["flip"] == pytest.approx(expected["flip"], rel=1e-6)
    assert coded["bits_per_position"] == bottleneck.bits_per_position == 2 * (5 + 16)
    assert plain["model_class"] == "AutoencoderKL" and plain["bits_per_position"] is None
    plain_expected = evaluate(vae, images, with_ssim=True)
    assert plain["psnr"] == pytest.approx(plain_expected["image_psnr"], rel=1e-6)
    # a coded VAE saved as one folder scores the same as the VAE + --bottleneck
    with_bottleneck(vae, bottleneck).save_pretrained(tmp_path / "coded_vae")
    assert main([*common[:1], str(tmp_path / "coded_vae"), *common[2:], "--output_dir", str(tmp_path / "one")]) == 0
    saved = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert saved["model_class"] == "AutoencoderKLWithBottleneck" and saved["bottleneck"] is None
    assert saved["psnr"] == pytest.approx(coded["psnr"], rel=1e-9) and saved["flip"] == pytest.approx(coded["flip"])
    # the (untrained) dictionary is really in the latent path: 2 of 32 atoms per 4-channel latent cost a little
    assert plain["psnr"] > coded["psnr"] + 1e-3


def _bottleneck_folder(tmp_path):
    from sd_sparse import DictionaryBottleneck

    folder = tmp_path / "a_bottleneck"
    DictionaryBottleneck(32, 4, 2).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing model", "sd-sparse evaluate: MODEL {tmp}/nope is not a folder."),
        ("missing data", "sd-sparse evaluate: --data {tmp}/no_images is not a folder."),
        ("empty data", "sd-sparse evaluate: --data {tmp}/empty holds no images"),
        ("not a model", "sd-sparse evaluate: MODEL {tmp}/empty holds no model"),
        ("a bottleneck as model", "sd-sparse evaluate: MODEL {tmp}/a_bottleneck holds a DictionaryBottleneck"),
        ("resolution", "sd-sparse evaluate: --resolution 20 must be a multiple of 8 (the model downsamples by 4"),
        ("inception weights", "sd-sparse evaluate: --inception_weights {tmp}/none.pth is not a file."),
        ("batch size", "sd-sparse evaluate: --batch_size must be >= 1, got 0."),
        ("perceptual weights", "sd-sparse evaluate: --perceptual_weights: perceptual weights '{tmp}/empty'"),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_2(case, message, image_dir, sparse_autoencoder_dir, tmp_path, capsys):
    folder, _ = image_dir
    (tmp_path / "empty").mkdir()
    model, data, extra = sparse_autoencoder_dir, folder, []
    if case == "missing model":
        model = str(tmp_path / "nope")
    elif case == "missing data":
        data = str(tmp_path / "no_images")
    elif case == "empty data":
        data = str(tmp_path / "empty")
    elif case == "not a model":
        model = str(tmp_path / "empty")
    elif case == "a bottleneck as model":
        model = _bottleneck_folder(tmp_path)
    elif case == "resolution":
        extra = ["--resolution", "20"]
    elif case == "inception weights":
        extra = ["--inception_weights", str(tmp_path / "none.pth")]
    elif case == "batch size":
        extra = ["--batch_size", "0"]
    elif case == "perceptual weights":
        extra = ["--perceptual_weights", str(tmp_path / "empty")]
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", model, "--data", data, "--resolution", "32", *extra, "--output_dir", str(tmp_path / "o")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(tmp=tmp_path)), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_inception_weights_without_torch_fidelity_are_na(image_dir, sparse_autoencoder_dir, tmp_path, monkeypatch):
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if _TORCH_FIDELITY_AVAILABLE:
        pytest.skip("torch-fidelity is installed")
    weights = tmp_path / "weights-inception.pth"
    torch.save({}, weights)
    monkeypatch.setenv("SD_SPARSE_INCEPTION_WEIGHTS", str(weights))
    folder, _ = image_dir
    metrics = evaluate_model(
        sparse_autoencoder_dir, folder, resolution=32, max_images=2, output_dir=str(tmp_path), progress=False
    )
    assert metrics["rfid"] is None and "torch-fidelity" in metrics["unavailable"]["rfid"]
    assert "| n/a | 63.0 |" in (tmp_path / "metrics.md").read_text()


# -- our PSNR and SSIM against torchmetrics' ---------------------------------------------------------------
def _pairs():
    """(reference, estimate) `[B, 3, H, W]` in [0, 1]: random images, and real photographs with noise."""
    generator = torch.Generator().manual_seed(0)
    noisy = torch.rand(4, 3, 64, 48, generator=generator, dtype=torch.float64)
    yield "random", noisy, (noisy + 0.1 * torch.randn(noisy.shape, generator=generator, dtype=noisy.dtype)).clamp(0, 1)
    photos = [torch.from_numpy(p[:128, :128].copy()).permute(2, 0, 1) for p in sample_photographs().values()]
    real = torch.stack(photos).double() / 255
    yield (
        "photographs",
        real,
        (real + 0.05 * torch.randn(real.shape, generator=generator, dtype=real.dtype)).clamp(0, 1),
    )


@pytest.mark.parametrize("name,reference,estimate", list(_pairs()), ids=lambda v: v if isinstance(v, str) else "")
def test_psnr_and_ssim_agree_with_torchmetrics(name, reference, estimate):
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    per_image = peak_signal_noise_ratio(estimate, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))
    assert torch.allclose(psnr(reference, estimate, dim=(1, 2, 3)), per_image.double(), atol=1e-5, rtol=0)
    pooled = peak_signal_noise_ratio(estimate, reference, data_range=1.0)
    assert float(psnr(reference, estimate)) == pytest.approx(float(pooled), abs=1e-5)

    tm_mean, tm_map = structural_similarity_index_measure(
        estimate, reference, data_range=1.0, sigma=1.5, kernel_size=11, reduction="none", return_full_image=True
    )
    ours = ssim(reference, estimate).double()
    # the windows inside the image agree; torchmetrics also averages the 5-pixel border of windows computed
    # on reflect-padded pixels (since its PR #2721), ours does not (as Wang et al.'s code and scikit-image)
    assert torch.allclose(ours, tm_map[..., 5:-5, 5:-5].mean((1, 2, 3)), atol=1e-6, rtol=0)
    assert float((ours - tm_mean).abs().max()) > 1e-4
    skimage_metrics = pytest.importorskip("skimage.metrics")
    for a, b, score in zip(reference, estimate, ours):
        expected = skimage_metrics.structural_similarity(
            a.permute(1, 2, 0).numpy(),
            b.permute(1, 2, 0).numpy(),
            channel_axis=2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(score) == pytest.approx(expected, abs=1e-6)
