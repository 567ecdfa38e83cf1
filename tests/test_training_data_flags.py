"""The trainer on the shared data pipeline: exact resume with loader workers (map-style and streamed),
bad files, held-out validation grids, and the data flags' errors."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_training import ROOT, TINY, run, states_equal
from test_training_data import make_folder

from sd_sparse.data import to_image

_at = TINY.index("--max_images")
FOLDER_TINY = TINY[:_at] + TINY[_at + 2 :]  # all the folder's images


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "images", 10, size=(40, 40))


@pytest.mark.parametrize(
    "source", [["--dataloader_num_workers", "2"], ["--streaming", "--dataloader_num_workers", "2"]]
)
def test_resume_mid_epoch_with_workers_is_exact(tmp_path, folder, source):
    # 9 training images (1 held out), 4 crops a step: the checkpoint at step 3 falls inside the 2nd epoch
    common = [*FOLDER_TINY, "--train_data_dir", str(folder), *source, "--checkpointing_steps", "3"]
    common += ["--validation_steps", "100"]
    if "--streaming" in source:  # a stream's split hashes image bytes: none of these 10 falls in 10%
        held = make_folder(tmp_path / "held", 2, size=(40, 40), nested=False)
        common += ["--validation_data_dir", str(held)]  # 10 training images: step 3 is in the 2nd epoch
    straight, _ = run([*common, "--max_train_steps", "6", "--output_dir", str(tmp_path / "a")])
    run([*common, "--max_train_steps", "3", "--output_dir", str(tmp_path / "b")])
    resumed, _ = run(
        [*common, "--max_train_steps", "6", "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "latest"]
    )
    assert states_equal(straight.state_dict(), resumed.state_dict())
    at_step_3 = load_file(tmp_path / "b" / "checkpoint-3" / "model.safetensors")
    assert not torch.equal(at_step_3["encoder.net.0.weight"], resumed.state_dict()["encoder.net.0.weight"])


def grid_targets(monkeypatch):
    """The target images `[V, 3, R, R]` of every validation grid the trainer draws, in order."""
    from sd_sparse.training import validation as validation_module

    shown, real = [], validation_module.validation_grid

    def spy(inputs, outputs, targets, task, title):
        shown.append(targets)
        return real(inputs, outputs, targets, task, title)

    monkeypatch.setattr(validation_module, "validation_grid", spy)
    return shown


def test_validation_grid_shows_held_out_images(tmp_path, folder, monkeypatch):
    held = make_folder(tmp_path / "held", 2, size=(16, 16), nested=False)
    out = tmp_path / "run"
    shown = grid_targets(monkeypatch)
    argv = [*FOLDER_TINY, "--train_data_dir", str(folder), "--validation_data_dir", str(held)]
    run([*argv, "--num_validation_images", "2", "--max_train_steps", "1", "--output_dir", str(out)])
    originals = [np.asarray(Image.open(held / f"img{i:04d}.png")) for i in range(2)]
    # the held-out images, nothing else, are the grid's targets
    assert np.array_equal(to_image(torch.cat(list(shown[-1]), dim=2)), np.concatenate(originals, axis=1))
    grid = Image.open(out / "validation" / "step-1.png")
    assert grid.size[0] == 2 * (128 + 6) + 6 and grid.size[1] > 2 * 128  # reconstruction | target; a row each
    card = (out / "README.md").read_text()
    assert "held-out images" in card


def test_bad_images_stop_the_run_in_one_line_or_are_skipped_and_counted(tmp_path, folder):
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    argv = [*FOLDER_TINY, "--train_data_dir", str(folder), "--max_train_steps", "2", "--validation_steps", "100"]
    done = subprocess.run(
        [sys.executable, "train/train_dlvae.py", *argv, "--output_dir", str(tmp_path / "a")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "broken.jpg" in done.stderr.strip().splitlines()[-1] and "--skip_bad_images" in done.stderr
    assert not (tmp_path / "a").exists()  # stopped before anything was written
    out = tmp_path / "b"
    run([*argv, "--skip_bad_images", "--output_dir", str(out)])
    assert '"skipped_bad_images": 1' in (out / "README.md").read_text()


def test_streaming_needs_max_train_steps_for_epochs(tmp_path, folder):
    argv = [*FOLDER_TINY, "--train_data_dir", str(folder), "--streaming", "--num_train_epochs", "2"]
    with pytest.raises(ValueError, match="--streaming give --max_train_steps"):
        run([*argv, "--output_dir", str(tmp_path / "a")])


def test_validation_crops_match_the_shared_pipeline(tmp_path, folder, monkeypatch):
    """The grid's targets are `build_training_data(...).validation` (the held-out split, no flips)."""
    from sd_sparse.data import build_training_data
    from sd_sparse.training import build_parser

    out = tmp_path / "run"
    shown = grid_targets(monkeypatch)
    argv = [*FOLDER_TINY, "--train_data_dir", str(folder), "--validation_split", "0.3", "--num_validation_images", "3"]
    run([*argv, "--max_train_steps", "1", "--output_dir", str(out)])
    args = build_parser().parse_args([*argv, "--output_dir", str(out)])
    expected = build_training_data(args, batch_size=4, seed=0, num_validation_images=3).validation
    assert torch.equal(shown[-1], expected)


def test_a_launch_whose_processes_train_alone_stops(tmp_path, monkeypatch):
    # `accelerate launch` of 2 processes on CPUs without ACCELERATE_USE_CPU: each would be a world of one
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU=true"):
        run([*TINY, "--max_train_steps", "1", "--output_dir", str(tmp_path / "a")])
    assert not (tmp_path / "a").exists()
