"""train/train_vae.py: a diffusers AutoencoderKL trained by the same trainer (SD's recipe)."""

import json

import torch
from diffusers import AutoencoderKL
from launch import launch_two_processes
from test_training import ROOT, run, states_equal

VAE_TINY = [
    "--model_type",
    "kl",
    "--latent_channels",
    "4",
    "--block_out_channels",
    "8",
    "8",
    "--resolution",
    "16",
    "--train_batch_size",
    "4",
    "--max_images",
    "4",
    "--validation_steps",
    "100",
]


def test_train_vae_saves_a_plain_autoencoder_kl_with_its_scaling_factor(tmp_path):
    out = tmp_path / "vae"
    model, disc = run(
        [
            *VAE_TINY,
            "--gan",
            "--discriminator_layers",
            "2",
            "--discriminator_start_step",
            "1",
            "--layers_per_block",
            "2",
            "--max_train_steps",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    vae = AutoencoderKL.from_pretrained(out)
    assert states_equal(vae.state_dict(), model.vae.state_dict()) and disc is not None
    assert vae.config.latent_channels == 4 and len(vae.config.block_out_channels) == 2
    assert vae.config.layers_per_block == 2 and len(vae.encoder.down_blocks[0].resnets) == 2
    # the scaling factor gives unit-variance latent means on training crops
    factor = vae.config.scaling_factor
    assert factor != 0.18215 and 0 < factor < 1e6
    card = (out / "README.md").read_text()
    assert "AutoencoderKL" in card and '"model_type": "kl"' in card
    with torch.no_grad():
        images = torch.rand(2, 3, 16, 16) * 2 - 1
        assert vae(images).sample.shape == (2, 3, 16, 16)


def test_kl_term_is_logged_and_weighted(tmp_path, monkeypatch):
    from accelerate import Accelerator

    history = {}
    monkeypatch.setattr(
        Accelerator, "log", lambda self, values, step=None, log_kwargs=None: history.update({step: values})
    )
    run([*VAE_TINY, "--max_train_steps", "1", "--kl_weight", "0.5", "--eta", "1", "--output_dir", str(tmp_path / "a")])
    logged = history[1]
    assert logged["kl"] > 0 and abs(logged["loss"] - (logged["recon"] + 0.5 * logged["kl"])) < 1e-4


def test_vae_resume_is_exact(tmp_path):
    # the posterior's samples come from the global RNG, restored with the checkpoint
    common = [*VAE_TINY, "--use_ema", "--checkpointing_steps", "2"]
    straight, _ = run([*common, "--max_train_steps", "4", "--output_dir", str(tmp_path / "a")])
    run([*common, "--max_train_steps", "2", "--output_dir", str(tmp_path / "b")])
    resumed, _ = run(
        [*common, "--max_train_steps", "4", "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "latest"]
    )
    assert states_equal(straight.state_dict(), resumed.state_dict())


def test_vae_two_ranks_stay_bit_identical(tmp_path):
    out = tmp_path / "ddp"
    done = launch_two_processes(
        ROOT / "tests" / "train_rank_states.py",
        *VAE_TINY,
        "--max_train_steps",
        "3",
        "--checkpointing_steps",
        "100",
        "--output_dir",
        out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert set(rank0["model"]) == set(rank1["model"])
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), key
    assert json.loads((out / "config.json").read_text())["_class_name"] == "AutoencoderKL"


def test_bad_vae_arguments_name_the_flag(tmp_path):
    import pytest

    from sd_sparse.training.autoencoder_kl import build_autoencoder_kl, fit_scaling_factor

    for flag, value, message in [
        ("--kl_weight", "nan", "kl_weight"),
        ("--layers_per_block", "0", "layers_per_block"),
        ("--latent_channels", "0", "latent_channels"),
    ]:
        with pytest.raises(ValueError, match=message):
            run([*VAE_TINY, flag, value, "--max_train_steps", "1", "--output_dir", str(tmp_path / "a")])
    assert not (tmp_path / "a").exists()  # stopped before anything was written
    vae = build_autoencoder_kl(4, (8, 8), 1, 16)
    with pytest.raises(ValueError, match="non-empty"):
        fit_scaling_factor(vae, torch.zeros(0, 3, 16, 16))
    assert vae.config.scaling_factor == 0.18215  # unchanged
