"""The Accelerate trainer behind train/*.py: outputs, exact resume, rank identity, bad input."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from launch import launch_two_processes
from PIL import Image

from sd_sparse import SparseAutoencoder
from sd_sparse.losses import PatchGANDiscriminator
from sd_sparse.training import build_parser, train
from sd_sparse.training.trainer import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--num_atoms",
    "32",
    "--sparsity",
    "3",
    "--hidden_channels",
    "32",
    "--latent_channels",
    "8",
    "--train_batch_size",
    "4",
    "--resolution",
    "16",
    "--max_images",
    "4",
]


def run(argv):
    return train(build_parser().parse_args(argv))


def states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and set(a) == set(b)


def test_dlgan_run_writes_model_discriminator_checkpoints_and_validation(tmp_path):
    out = tmp_path / "run"
    model, disc = run(
        [
            *TINY,
            "--gan",
            "--discriminator_layers",
            "2",
            "--discriminator_start_step",
            "2",
            "--max_train_steps",
            "4",
            "--checkpointing_steps",
            "2",
            "--checkpoints_total_limit",
            "1",
            "--validation_steps",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-4"]
    assert (out / "validation" / "step-2.png").exists() and (out / "validation" / "step-4.png").exists()
    loaded = SparseAutoencoder.from_pretrained(out)
    assert states_equal(loaded.state_dict(), model.state_dict())
    assert states_equal(PatchGANDiscriminator.from_pretrained(out / "discriminator").state_dict(), disc.state_dict())


@pytest.mark.parametrize(
    "variant",
    [
        ["--bottleneck_type", "vq", "--restart_threshold", "0.5"],
        ["--gan", "--discriminator_layers", "2", "--discriminator_start_step", "1"],
    ],
)
def test_resume_ends_with_the_same_weights(tmp_path, variant):
    common = [*TINY, *variant, "--checkpointing_steps", "3", "--validation_steps", "100"]
    straight, straight_disc = run([*common, "--max_train_steps", "6", "--output_dir", str(tmp_path / "a")])
    run([*common, "--max_train_steps", "3", "--output_dir", str(tmp_path / "b")])
    resumed, resumed_disc = run(
        [*common, "--max_train_steps", "6", "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "latest"]
    )
    assert states_equal(straight.state_dict(), resumed.state_dict())
    if straight_disc is not None:
        assert states_equal(straight_disc.state_dict(), resumed_disc.state_dict())
    # steps 4-6 did move the weights, so the comparison means something
    from safetensors.torch import load_file

    at_step_3 = load_file(tmp_path / "b" / "checkpoint-3" / "model.safetensors")
    assert not torch.equal(at_step_3["encoder.net.0.weight"], resumed.state_dict()["encoder.net.0.weight"])


def test_interrupted_checkpoint_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    from accelerate import Accelerator

    out = tmp_path / "atomic"
    run([*TINY, "--max_train_steps", "2", "--checkpointing_steps", "2", "--output_dir", str(out)])
    accelerator = Accelerator()

    def killed(path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        Path(path, "half-written.bin").write_bytes(b"\0" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(accelerator, "save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, str(out), 4, None)
    assert not (out / "checkpoint-4").exists() and (out / "checkpoint-2" / "model.safetensors").exists()
    resumed, _ = run([*TINY, "--max_train_steps", "3", "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert resumed is not None


RANK_VARIANTS = {
    # VQ with EMA statistics and dead-code restarts, plus the discriminator
    "vqgan": ["--bottleneck_type", "vq", "--restart_threshold", "0.5", "--gan", "--discriminator_layers", "2"],
    # the dictionary, gradient-learned, with atom restarts (threshold high enough to fire in 4 steps)
    # (and its crops decoded by a loader worker on each rank)
    "dlvae": ["--bottleneck_type", "dictionary", "--restart_threshold", "0.99", "--dataloader_num_workers", "1"],
}


@pytest.mark.parametrize("variant", RANK_VARIANTS)
def test_two_ranks_stay_bit_identical(tmp_path, variant):
    out = tmp_path / "ddp"
    done = launch_two_processes(
        ROOT / "tests" / "train_rank_states.py",
        *TINY,
        *RANK_VARIANTS[variant],
        "--discriminator_start_step",
        "1",
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "100",
        "--validation_steps",
        "100",
        "--output_dir",
        out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    for part in ("model", "discriminator"):
        for key, value in (rank0[part] or {}).items():
            assert torch.equal(value, rank1[part][key]), f"{part}.{key} differs between ranks"
    if variant == "vqgan":
        assert float(rank0["model"]["bottleneck.ema_cluster_size"].sum()) > 0  # EMA statistics were updated
    else:
        assert rank0["discriminator"] is None
        restarted = (
            rank0["model"]["bottleneck.restart_pending"].any()
            or (rank0["model"]["bottleneck.usage_average"] == 1 / 32).any()
        )
        assert bool(restarted)  # some atoms were (or are about to be) restarted


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "images"
    path.mkdir()
    return path


def test_bad_input_stops_before_training(folder, tmp_path):
    out = ["--output_dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="holds no images"):
        run([*TINY, "--train_data_dir", str(folder), *out])
    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        run([*TINY, "--train_data_dir", str(folder), *out])
    (folder / "broken.png").unlink()
    Image.fromarray(np.zeros((12, 40, 3), np.uint8)).save(folder / "small.png")
    with pytest.raises(ValueError, match="smaller than --resolution 16"):
        run([*TINY, "--train_data_dir", str(folder), *out])
    with pytest.raises(ValueError, match="multiple of 8"):
        run([*TINY, "--resolution", "20", "--patch_size", "2", *out])
    with pytest.raises(ValueError, match=r"--sparsity 40 is larger than --num_atoms 32"):
        run([*TINY, "--sparsity", "40", *out])
    with pytest.raises(ValueError, match="too small for a 3-layer PatchGAN"):
        run([*TINY, "--gan", *out])
    with pytest.raises(ValueError, match="does not exist"):
        run([*TINY, "--resume_from_checkpoint", str(tmp_path / "nope"), *out])
    with pytest.raises(FileNotFoundError, match="perceptual weights"):
        run([*TINY, "--perceptual_weights", str(folder), *out])
    with pytest.raises(ValueError, match="--eta must be in"):
        run([*TINY, "--eta", "1.5", *out])
    assert not (tmp_path / "o" / "config.json").exists()


def test_scripts_set_their_family():
    """Each train/train_NAME.py runs the program NAME, whose defaults pick its model family."""
    from sd_sparse.training.programs import TRAINER_DEFAULTS

    for name, key, value in [
        ("dlvae", "bottleneck_type", "dictionary"),
        ("dlgan", "gan", True),
        ("vqvae", "bottleneck_type", "vq"),
        ("vqgan", "gan", True),
        ("scvae", "latent_attention", True),
        ("vae", "model_type", "kl"),
    ]:
        text = (ROOT / "train" / f"train_{name}.py").read_text()
        assert f'run_program("train_{name}")' in text, name
        args = build_parser(TRAINER_DEFAULTS[f"train_{name}"]).parse_args([])
        assert getattr(args, key) == value, name
    assert build_parser().parse_args([]).gan is False


def test_perceptual_term_uses_local_lpips_or_is_switched_off(tmp_path, monkeypatch, caplog):
    from test_perceptual import write_original_files

    weights = tmp_path / "lpips"
    weights.mkdir()
    write_original_files(weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    common = [*TINY, "--max_train_steps", "2", "--validation_steps", "2", "--eta", "0.5"]
    with_lpips, _ = run([*common, "--perceptual_weights", str(weights), "--output_dir", str(tmp_path / "a")])
    card = (tmp_path / "a" / "README.md").read_text()
    assert '"perceptual": "LPIPS (VGG16)"' in card and "val/lpips" in card
    with caplog.at_level(logging.WARNING):
        without, _ = run([*common, "--output_dir", str(tmp_path / "b")])
    assert "perceptual term is switched off" in caplog.text
    assert '"perceptual": "off"' in (tmp_path / "b" / "README.md").read_text()
    mse_only, _ = run([*common, "--eta", "1.0", "--output_dir", str(tmp_path / "c")])
    assert states_equal(without.state_dict(), mse_only.state_dict())  # off means exactly MSE
    assert not states_equal(with_lpips.state_dict(), without.state_dict())


def test_names_split_out_of_the_trainer_are_still_importable_from_it():
    from sd_sparse.training import (
        arguments,
        checkpoints,
        fit_latents,
        fit_sd_bottleneck,
        frozen_vae,
        metrics_log,
        train_prior,
        trainer,
        validation,
    )

    moved = {
        arguments: ["build_parser", "check_arguments", "check_flag_ranges", "check_trackers", "derive_max_train_steps"],
        checkpoints: ["CHECKPOINT_PREFIX", "resume_point", "save_checkpoint"],
        metrics_log: ["METRICS_FILE", "append_metrics_line"],
        validation: ["GRID_PANEL_SIZE", "validate", "validation_grid"],
    }
    for module, names in moved.items():
        for name in names:
            assert getattr(trainer, name) is getattr(module, name), name
    for name in ("SEED_RANGE", "TRAINER_FLAG_RANGES", "TRACKER_PACKAGES", "DEFAULT_MAX_TRAIN_STEPS"):
        assert getattr(trainer, name) is getattr(arguments, name)
    for name in ("cache_setup", "cache_epoch", "LatentSource", "next_full_batch", "held_out_dataset"):
        assert getattr(fit_sd_bottleneck, name) is getattr(fit_latents, name)
    # written once: the programs on a frozen VAE share its flags, its loading and their latents
    for name in ("load_vae", "resolve_data_defaults", "DATA_DEFAULTS"):
        assert getattr(fit_sd_bottleneck, name) is getattr(frozen_vae, name) is getattr(train_prior, name), name
    for name in ("next_latents", "prepare_fit_latents", "LatentSource", "held_out_dataset"):
        assert getattr(fit_sd_bottleneck, name) is getattr(fit_latents, name) is getattr(train_prior, name), name


def test_checkpoints_are_listed_by_step_and_resumed_from_the_latest(tmp_path):
    from argparse import Namespace

    from sd_sparse.training.checkpoints import check_resume_folder, list_checkpoints, resume_point

    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-12.tmp", "checkpoint-x", "logs"):
        (tmp_path / name).mkdir()
    assert list_checkpoints(str(tmp_path)) == [
        (2, str(tmp_path / "checkpoint-2")),
        (10, str(tmp_path / "checkpoint-10")),
    ]
    args = Namespace(output_dir=str(tmp_path), resume_from_checkpoint="latest", max_train_steps=11)
    check_resume_folder(args)  # 'latest' is looked up later
    assert resume_point(args) == (str(tmp_path / "checkpoint-10"), 10)
    args.max_train_steps = 10
    with pytest.raises(ValueError, match="nothing to train"):
        resume_point(args)
    for folder, message in (("checkpoint-x", "is not a checkpoint-<step> folder"), ("gone", "does not exist")):
        args.resume_from_checkpoint = str(tmp_path / folder)
        with pytest.raises(ValueError, match=message):
            check_resume_folder(args)
    assert resume_point(Namespace(resume_from_checkpoint=None)) == (None, 0)
