"""Downstream tasks (LASERS supplement §12): the degradations, the trainer's --task, labelled validation
grids, and SC-VAE's patch clustering."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_training import TINY, run

from sd_sparse import SparseAutoencoder
from sd_sparse.evaluation.segmentation import image_codes, patch_clusters, segmentation_figure
from sd_sparse.training import trainer as trainer_module
from sd_sparse.training.tasks import DegradedInputModel, degrade, inpainting_mask, masked_psnr


def test_super_resolution_keeps_shape_and_constant_images():
    constant = torch.full((2, 3, 16, 16), 0.3)
    degraded = degrade(constant, "super_resolution", sr_factor=4)
    assert degraded.shape == constant.shape
    torch.testing.assert_close(degraded, constant, atol=1e-5, rtol=0)

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    original = images.clone()
    first, second = degrade(images, "super_resolution", 4), degrade(images, "super_resolution", 4)
    assert torch.equal(first, second) and torch.equal(images, original)  # deterministic, input untouched
    assert first.min() >= -1 and first.max() <= 1
    assert (first - images).abs().mean() > 0.1  # noise does not survive a ×4 bicubic round trip
    # what is left is the low-resolution image: downsampling the degraded image changes little
    small = torch.nn.functional.interpolate(images, size=(8, 8), mode="bicubic", antialias=True)
    small_again = torch.nn.functional.interpolate(first, size=(8, 8), mode="bicubic", antialias=True)
    assert (small - small_again).abs().mean() < (small - images[..., ::4, ::4]).abs().mean()


def test_inpainting_blanks_exactly_the_centred_square():
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25  # no zeros
    degraded = degrade(images, "inpainting")
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[24:40, 24:40] = True  # side 64 / 4 = 16, centred
    assert torch.equal(inpainting_mask(64, 64), expected)
    assert torch.equal(degraded == 0, expected.expand_as(degraded))
    assert torch.equal(degraded[..., ~expected], images[..., ~expected])
    assert degrade(images, "reconstruction") is images
    # the PSNR inside the mask sees only the square
    outside_wrong = images.clone()
    outside_wrong[..., ~expected] = -1
    assert torch.equal(masked_psnr(images, outside_wrong, expected), torch.full((2,), 200.0))  # the ceiling


def test_degrade_rejects_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        degrade(torch.zeros(1, 3, 16, 16), "denoise")
    with pytest.raises(ValueError, match="sr_factor"):
        degrade(torch.zeros(1, 3, 16, 16), "super_resolution", sr_factor=3)


@pytest.mark.parametrize("task", ["super_resolution", "inpainting"])
def test_trainer_feeds_degraded_inputs_and_labels_the_grid(tmp_path, monkeypatch, task):
    batches, seen = [], []
    real_degrade, real_forward = trainer_module.degrade, SparseAutoencoder.forward

    def recording_degrade(images, *args, **kwargs):
        batches.append(images.detach().clone())
        return real_degrade(images, *args, **kwargs)

    def recording_forward(self, sample, *args, **kwargs):
        seen.append(sample.detach().clone())
        return real_forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "degrade", recording_degrade)
    monkeypatch.setattr(SparseAutoencoder, "forward", recording_forward)
    out = tmp_path / task
    run([*TINY, "--task", task, "--max_train_steps", "2", "--num_validation_images", "2", "--output_dir", str(out)])

    # the two training steps: the model saw degrade(batch), not the batch
    for batch, model_input in zip(batches[:2], seen[:2]):
        assert torch.equal(model_input, real_degrade(batch, task, 4))
        assert not torch.equal(model_input, batch)
    training = (out / "README.md").read_text()
    assert f'"task": "{task}"' in training
    assert ('"sr_factor": 4' in training) == (task == "super_resolution")
    last = json.loads((out / "logs" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "val/input_psnr" in last and ("val/psnr_mask" in last) == (task == "inpainting")

    grid = np.asarray(Image.open(out / "validation" / "step-2.png").convert("L"))
    panel, gap, columns = 128, 6, 3  # input, output, target; 16² crops shown at the smallest panel size
    assert grid.shape[1] == columns * (panel + gap) + gap
    assert grid.shape[0] > 2 * panel
    caption_top = 13 + 4 + 2 * gap  # below the title line (font 13)
    for column in range(columns):
        left = gap + column * (panel + gap)
        strip = grid[caption_top : caption_top + 17, left : left + panel]
        assert (strip < 100).sum() > 20, f"column {column} has no caption"


@pytest.mark.parametrize(
    "flags, flag",
    [
        (["--task", "denoise"], "--task"),
        (["--task", "super_resolution", "--sr_factor", "1"], "--sr_factor"),
        (["--task", "super_resolution", "--sr_factor", "32"], "--sr_factor"),  # does not divide 16
    ],
)
def test_bad_task_flags_stop_before_anything_is_written(tmp_path, flags, flag):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=flag):
        run([*TINY, *flags, "--output_dir", str(out)])
    assert not out.exists()


def test_degraded_input_model_keeps_the_wrapped_mode():
    model = SparseAutoencoder(hidden_channels=16, latent_channels=8, num_atoms=16, sparsity=2).eval()
    from sd_sparse.evaluation import evaluate

    evaluate(DegradedInputModel(model, "inpainting"), torch.zeros(1, 3, 16, 16), with_flip=False)
    assert not model.training


def test_patch_clusters_separates_two_groups_of_codes():
    generator = torch.Generator().manual_seed(0)
    codes = torch.zeros(40, 16)
    codes[:20, :3] = 1 + 0.1 * torch.rand(20, 3, generator=generator)  # group A: atoms 0-2
    codes[20:, 8:11] = -1 + 0.1 * torch.rand(20, 3, generator=generator)  # group B: atoms 8-10
    labels = patch_clusters(codes, num_clusters=2)
    assert labels.shape == (40,)
    assert torch.equal(labels, torch.tensor([0] * 20 + [1] * 20))

    grid = codes.reshape(2, 4, 5, 16).permute(0, 3, 1, 2)  # [B, K, h, w]: image 0 group A, image 1 group B
    labels = patch_clusters(grid, num_clusters=2)
    assert labels.shape == (2, 4, 5) and (labels[0] == 0).all() and (labels[1] == 1).all()
    with pytest.raises(ValueError, match="num_clusters"):
        patch_clusters(codes, num_clusters=41)


def test_patch_clusters_of_model_codes_and_figure(tmp_path):
    torch.manual_seed(0)
    model = SparseAutoencoder(hidden_channels=16, latent_channels=8, num_atoms=16, sparsity=2)
    images = torch.zeros(2, 3, 32, 32)
    images[:, :, :, 16:] = 1  # half dark, half bright
    labels = patch_clusters(image_codes(model, images), num_clusters=2)
    assert labels.shape == (2, 8, 8) and set(labels.unique().tolist()) == {0, 1}
    path = segmentation_figure(images, labels, tmp_path / "segmentation.png", titles=["a", "b"], panel_size=64)
    figure = np.asarray(Image.open(path).convert("RGB"))
    assert figure.shape[1] > 3 * 64 and figure.shape[0] > 2 * 64
    assert (figure.min(axis=2) < 60).sum() > 100  # text (and the dark half of the images)


def test_downstream_benchmark_quick_smoke_run(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "benchmarks/downstream.py", "--quick", "--tasks", "inpainting", "--output_dir", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "downstream_quick.json").read_text())["rows"]
    assert [(row["model"], row["task"]) for row in rows] == [("VQ-VAE", "inpainting"), ("DL-VAE", "inpainting")]
    assert all(row["psnr"] > 0 and row["psnr_mask"] > 0 and row["fid"] is None for row in rows)
    assert "| inpainting | DL-VAE |" in (tmp_path / "downstream_quick.md").read_text()
