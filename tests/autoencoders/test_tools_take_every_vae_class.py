"""`sd-sparse compress | decompress | evaluate | figures` and the fit script take VAEs of other classes:
a FLUX.2 VAE (32-channel family, batch-norm latent space) for images, a Wan VAE for videos (frames in,
frames out) and for fitting on one-frame videos."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_vaes import build_tiny_vae

from sd_sparse import DictionaryBottleneck, with_bottleneck
from sd_sparse.autoencoders import latent_channels
from sd_sparse.cli import main
from sd_sparse.data import read_image, to_tensor


def _save(tmp_path, name):
    vae = build_tiny_vae(name)
    torch.manual_seed(1)
    bottleneck = DictionaryBottleneck(num_atoms=16, latent_channels=latent_channels(vae), sparsity=2, patch_size=1)
    vae.save_pretrained(tmp_path / f"{name}_vae")
    bottleneck.save_pretrained(tmp_path / f"{name}_bottleneck")
    return vae, bottleneck, str(tmp_path / f"{name}_vae"), str(tmp_path / f"{name}_bottleneck")


def _frames(folder, count, size=16, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3))
    for t in range(count):  # a moving gradient, so frames differ
        frame = np.clip(base + 10 * t, 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(os.path.join(folder, f"frame_{t:02d}.png"))
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def test_compress_and_decompress_a_video_frame_by_frame(tmp_path, capsys):
    vae, bottleneck, vae_dir, bottleneck_dir = _save(tmp_path, "AutoencoderKLWan")
    paths = _frames(tmp_path / "clip", 5)
    out = str(tmp_path / "clip.sdsc")
    assert (
        main(
            ["compress", str(tmp_path / "clip"), "--video", "--vae", vae_dir, "--bottleneck", bottleneck_dir, "-o", out]
        )
        == 0
    )
    assert "a video of 5 frames 16x16" in capsys.readouterr().out
    assert main(["decompress", out, "--vae", vae_dir, "--bottleneck", bottleneck_dir, "-o", str(tmp_path / "out")]) == 0
    written = sorted(os.listdir(tmp_path / "out"))
    assert written == [f"clip_000_{t:04d}.png" for t in range(5)]
    # the frames are the coded VAE's decode of the video, as PNG
    video = torch.stack([to_tensor(np.asarray(read_image(p))) for p in paths], dim=1)[None]
    coded = with_bottleneck(vae, bottleneck).eval()
    expected = coded.decompress(coded.compress(video))[0]
    for t, name in enumerate(written):
        got = to_tensor(np.asarray(read_image(str(tmp_path / "out" / name))))
        assert (got - expected[:, t]).abs().max() <= 1 / 127.5 + 1e-6

    with pytest.raises(SystemExit) as exit_info:
        main(
            ["compress", *paths, "--video", "--bottleneck", bottleneck_dir, "-o", out]
        )  # the reference VAE: images only
    assert exit_info.value.code == 2
    assert "--video needs a video VAE" in capsys.readouterr().err


def test_compress_evaluate_and_figures_take_a_flux2_vae(tmp_path, capsys):
    vae, bottleneck, vae_dir, bottleneck_dir = _save(tmp_path, "AutoencoderKLFlux2")
    paths = _frames(tmp_path / "photos", 2)
    out = str(tmp_path / "photos.sdsc")
    assert main(["compress", *paths, "--vae", vae_dir, "--bottleneck", bottleneck_dir, "-o", out]) == 0
    assert main(["decompress", out, "--vae", vae_dir, "--bottleneck", bottleneck_dir, "-o", str(tmp_path / "o")]) == 0
    assert sorted(os.listdir(tmp_path / "o")) == ["photos_000.png", "photos_001.png"]
    capsys.readouterr()

    report = tmp_path / "evaluation"
    args = ["evaluate", vae_dir, "--bottleneck", bottleneck_dir, "--data", str(tmp_path / "photos")]
    assert main([*args, "--resolution", "16", "--output_dir", str(report)]) == 0
    metrics = json.load(open(report / "metrics.json"))
    assert "AutoencoderKLFlux2WithBottleneck" in json.dumps(metrics) or metrics

    coded_dir = str(tmp_path / "coded")
    with_bottleneck(vae, bottleneck).save_pretrained(coded_dir)
    figures = tmp_path / "figures"
    assert main(["figures", coded_dir, "--kinds", "atoms", "--output_dir", str(figures)]) == 0
    assert (figures / "atoms.png").is_file()


@pytest.mark.parametrize("name", ["AutoencoderKLWan", "AutoencoderKLFlux2"])
def test_the_fit_script_fits_on_any_vae_class(name, tmp_path):
    """A VAE folder (`--vae_subfolder ''`) of a video VAE (fitted on one-frame videos of the images) or of
    FLUX.2's class; the bottlenecks come out with that VAE's latent channels."""
    from sd_sparse.data import sample_photographs
    from sd_sparse.training import fit_sd_bottleneck

    vae, _, vae_dir, _ = _save(tmp_path, name)
    photos = tmp_path / "photos"
    photos.mkdir()
    for key, image in list(sample_photographs().items())[:4]:
        Image.fromarray(image[:64, :64]).save(photos / f"{key}.png")
    out = tmp_path / "fit"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit_sd_bottleneck.main(
            ["--pretrained_model_name_or_path", vae_dir, "--vae_subfolder", "", "--train_data_dir", str(photos)]
            + ["--resolution", "16", "--max_train_steps", "3", "--num_atoms", "16", "--sparsity", "2"]
            + ["--patch_size", "2", "--vq_num_atoms", "16", "--train_batch_size", "2", "--no_flip"]
            + ["--output_dir", str(out), "--validation_split", "0.5"]
        )
    finally:
        torch.set_num_threads(threads)
    report = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(report["metrics"]["dictionary"]["latent_psnr"])
    assert DictionaryBottleneck.from_pretrained(out / "dictionary").config.latent_channels == latent_channels(vae)
