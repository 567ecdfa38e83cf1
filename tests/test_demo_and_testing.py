"""Offline photographs, patch extraction, and the `sd-sparse demo` main job on tiny settings."""

import numpy as np
import pytest
import torch

from sd_sparse.cli import main
from sd_sparse.demo import run_demo
from sd_sparse.testing import photo_patches, sample_photographs, split_by_image, to_image, to_tensor


def test_sample_photographs_are_real_colour_images():
    photos = sample_photographs()
    assert {"astronaut", "china", "flower", "coffee"} <= set(photos)
    for name, image in photos.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert image.shape[0] >= 256 and image.shape[1] >= 256, name
        assert image.std() > 20, name  # not blank


def test_photo_patches_are_the_image_crops():
    image = sample_photographs()["coffee"]
    patches = photo_patches([image], patch_size=8)
    h, w = image.shape[0] // 8, image.shape[1] // 8
    assert patches.shape == (h * w, 3, 8, 8)
    assert patches.min() >= -1 and patches.max() <= 1
    # patch (row 3, column 5) is that crop of the image
    torch.testing.assert_close(patches[3 * w + 5], to_tensor(image[24:32, 40:48]))
    assert np.array_equal(to_image(to_tensor(image)), image)
    subset = photo_patches([image], patch_size=8, max_patches=100, seed=1)
    assert subset.shape == (100, 3, 8, 8)
    with pytest.raises(ValueError, match="empty"):
        photo_patches([])
    with pytest.raises(ValueError, match="smaller than `patch_size`"):
        photo_patches([np.zeros((4, 4, 3), np.uint8)])


def test_split_is_by_image():
    photos = sample_photographs()
    train, test = split_by_image(photos, ["astronaut"])
    assert set(test) == {"astronaut"} and "astronaut" not in train
    assert set(train) | set(test) == set(photos)
    with pytest.raises(ValueError, match="unknown test images"):
        split_by_image(photos, ["nope"])


def test_demo_dictionary_beats_vq_and_writes_outputs(tmp_path, capsys):
    results = run_demo(steps=40, num_atoms=64, sparsity=4, batch_size=256, output_dir=str(tmp_path))
    dictionary, vq = results
    assert dictionary.psnr > vq.psnr + 3
    assert 1 < vq.perplexity <= 64 and 1 < dictionary.perplexity <= 64
    assert vq.bits_per_vector == 6 and dictionary.bits_per_vector == 4 * (6 + 16)
    assert (tmp_path / "reconstructions.png").stat().st_size > 10_000
    table = (tmp_path / "results.md").read_text()
    assert "| dictionary (Batch-OMP, S=4) |" in table and "| vector quantization (EMA) |" in table
    assert "PSNR (dB)" in capsys.readouterr().out


def test_cli_reports_bad_arguments():
    with pytest.raises(SystemExit, match="`steps` must be >= 1"):
        main(["demo-patches", "--steps", "0"])
    with pytest.raises(SystemExit, match="unknown test images"):
        main(["demo-patches", "--steps", "1", "--test-image", "nope"])
