"""User errors in the command line and the training scripts: one line `prog: message`, exit status 2,
and nothing trained, written or overwritten; bugs keep their traceback."""

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_server import HubServer

from sd_sparse.errors import exit_on_user_error
from sd_sparse.training import build_parser, main, train

ROOT = Path(__file__).resolve().parents[1]
TINY = "--num_atoms 16 --sparsity 2 --hidden_channels 16 --latent_channels 4 --train_batch_size 2 --resolution 16"
TINY = [*TINY.split(), "--max_images", "2", "--validation_steps", "100", "--eta", "1"]


def closed_port_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once the socket closes


def run_script(argv, endpoint, hf_home, token=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="2",
        HF_HUB_DOWNLOAD_TIMEOUT="2",
    )
    if token:
        env["HF_TOKEN"] = token
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *map(str, argv)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    return done, time.perf_counter() - start


def one_line(stderr: str, prefix: str) -> str:
    """The last stderr line, checked to be the user-error line (no traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(prefix), stderr[-3000:]
    return line


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_resuming_at_or_past_the_end_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    common = [*TINY, "--checkpointing_steps", "2", "--output_dir", str(out)]
    train(build_parser().parse_args([*common, "--max_train_steps", "4", "--validation_steps", "4"]))
    before = snapshot(out)
    assert "README.md" in before and "checkpoint-4/model.safetensors" in before
    capsys.readouterr()
    for resume, steps in [("latest", 4), ("latest", 3), (str(out / "checkpoint-2"), 2)]:
        with pytest.raises(SystemExit) as stop:
            main([*common, "--max_train_steps", str(steps), "--resume_from_checkpoint", resume])
        assert stop.value.code == 2
        line = one_line(capsys.readouterr().err, "")
        assert "nothing to train" in line and f"--max_train_steps is {steps}" in line
        assert snapshot(out) == before  # bit-identical, not even touched
    # one step further does train (from checkpoint-4)
    train(build_parser().parse_args([*common, "--max_train_steps", "5", "--resume_from_checkpoint", "latest"]))
    assert "checkpoint-5/model.safetensors" in snapshot(out)


def test_trainer_flag_errors_exit_2_and_bugs_keep_their_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--eta", "1.5", "--output_dir", str(tmp_path / "o")])
    assert stop.value.code == 2 and "--eta must be in [0, 1]" in one_line(capsys.readouterr().err, "")
    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--train_data_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")])
    assert stop.value.code == 2 and "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(RuntimeError, match="a bug"):  # not a user error: the traceback stays
        with exit_on_user_error("prog"):
            raise RuntimeError("a bug")
    with pytest.raises(SystemExit) as stop:
        with exit_on_user_error("prog"):
            raise FileNotFoundError("no such file: x.json")
    assert stop.value.code == 2 and capsys.readouterr().err == "prog: no such file: x.json\n"


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


def test_push_to_hub_checks_the_token_before_training(hub, tmp_path):
    out = tmp_path / "run"
    argv = ["train/train_dlvae.py", *TINY, "--max_train_steps", "2", "--output_dir", out]
    argv += ["--push_to_hub", "--hub_model_id", "user/never-trained"]
    done, _ = run_script(argv, hub.endpoint, tmp_path / "hf_home")
    assert done.returncode == 2
    assert "needs a Hugging Face token" in one_line(done.stderr, "train_dlvae.py: ")
    assert not any(out.glob("checkpoint-*")) and not (out / "config.json").exists()
    assert ("POST", "/api/repos/create") not in hub.state.requests

    done, _ = run_script(argv, hub.endpoint, tmp_path / "hf_home", token="hf_test")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchvision" not in done.stderr  # the trainer never imports diffusers' pipelines
    creates = [i for i, r in enumerate(hub.state.requests) if r == ("POST", "/api/repos/create")]
    commits = [i for i, r in enumerate(hub.state.requests) if r[1].endswith("/commit/main")]
    assert creates and commits and creates[0] < commits[0]


def test_an_unreachable_hub_stops_scripts_at_once(tmp_path):
    endpoint = closed_port_endpoint()
    out = tmp_path / "run"
    argv = ["train/train_vqvae.py", *TINY, "--max_train_steps", "2", "--output_dir", out]
    done, seconds = run_script([*argv, "--push_to_hub", "--hub_model_id", "user/x"], endpoint, tmp_path, "hf_x")
    assert done.returncode == 2 and seconds < 60
    assert "cannot reach the Hugging Face Hub at " + endpoint in one_line(done.stderr, "train_vqvae.py: ")
    assert not any(out.glob("checkpoint-*"))

    fit = ["train/fit_sd_bottleneck.py", "--max_train_steps", "2", "--max_images", "4", "--num_atoms", "8"]
    fit += ["--sparsity", "2", "--no_vq", "--output_dir", tmp_path / "fit", "--push_to_hub", "--hub_model_id", "u/d"]
    done, _ = run_script(fit, endpoint, tmp_path, "hf_x")
    assert done.returncode == 2 and "cannot reach" in one_line(done.stderr, "fit_sd_bottleneck.py: ")
    assert not (tmp_path / "fit" / "dictionary").exists()

    done, _ = run_script(["-m", "sd_sparse.cli", "pull", "user/x"], endpoint, tmp_path)
    assert done.returncode == 2 and "cannot reach the Hugging" in one_line(done.stderr, "sd-sparse pull: ")


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--learning_rate", "-1e-3", "--learning_rate must be > 0, got -0.001."),
        ("--learning_rate", "nan", "--learning_rate must be > 0, got nan."),
        ("--num_atoms", "0", "--num_atoms must be >= 1, got 0."),
        ("--sparsity", "20", "--sparsity 20 is larger than --num_atoms 16."),
        ("--beta", "-1", "--beta must be >= 0, got -1.0."),
        ("--decay", "1.5", "--decay must be in [0, 1], got 1.5."),
        ("--seed", "-1", "--seed must be in [0, 2**32 - 1], got -1."),
        ("--value_bits", "40", "--value_bits must be in [2, 16], got 40."),
        ("--block_out_channels", "8 0", "--block_out_channels must be >= 1, got 0."),
        ("--discriminator_learning_rate", "0", "--discriminator_learning_rate must be > 0, got 0.0."),
        ("--num_validation_images", "0", "--num_validation_images must be >= 1, got 0."),
    ],
)
def test_every_numeric_trainer_flag_is_checked_before_the_model_is_built(flag, value, message, tmp_path, capsys):
    from sd_sparse.training import trainer

    def no_model(args):
        raise AssertionError("the model was built before the flags were checked")

    real = trainer.build_model
    trainer.build_model = no_model
    try:
        with pytest.raises(SystemExit) as stop:
            main(
                [
                    *TINY,
                    *([flag, *value.split()] if " " in value else [f"{flag}={value}"]),
                    "--output_dir",
                    str(tmp_path / "o"),
                ]
            )
    finally:
        trainer.build_model = real
    assert stop.value.code == 2
    assert one_line(capsys.readouterr().err, "") == f"{Path(sys.argv[0]).name}: {message}"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--learning_rate", "-1e-3", "--learning_rate must be > 0, got -0.001."),
        ("--restart_threshold", "-0.5", "--restart_threshold must be >= 0, got -0.5."),
        ("--vq_num_atoms", "0", "--vq_num_atoms must be >= 1, got 0."),
        ("--max_eval_images", "0", "--max_eval_images must be >= 1, got 0."),
        ("--validation_split", "1", "--validation_split must be in [0, 1), got 1.0."),
    ],
)
def test_every_numeric_fit_flag_is_checked_before_anything_is_built(flag, value, message, tmp_path, capsys):
    from sd_sparse.training import fit_sd_bottleneck

    def nothing(*args, **kwargs):
        raise AssertionError("built or read before the flags were checked")

    saved = {name: getattr(fit_sd_bottleneck, name) for name in ("load_vae", "build_training_data", "Accelerator")}
    for name in saved:
        setattr(fit_sd_bottleneck, name, nothing)
    try:
        with pytest.raises(SystemExit) as stop:
            fit_sd_bottleneck.main([f"{flag}={value}", "--output_dir", str(tmp_path / "fit")])
    finally:
        for name, value_ in saved.items():
            setattr(fit_sd_bottleneck, name, value_)
    assert stop.value.code == 2
    assert one_line(capsys.readouterr().err, "") == f"fit_sd_bottleneck.py: {message}"


def test_divergence_is_reported_as_divergence_not_as_bad_latents(tmp_path, capsys):
    # a huge learning rate: the next step's latents are NaN, which the bottleneck's input check would call bad input
    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--learning_rate", "1e6", "--max_train_steps", "20", "--output_dir", str(tmp_path / "o")])
    assert stop.value.code == 2
    line = one_line(capsys.readouterr().err, "")
    assert "training diverged at step " in line and "--learning_rate 1e+06" in line, line
    assert "last loss " in line and "lower --learning_rate" in line and "`latents`" not in line, line
    step = int(line.split("training diverged at step ")[1].split(":")[0])
    assert 1 <= step <= 20


def test_a_non_finite_loss_is_divergence_naming_step_loss_and_learning_rate(tmp_path, capsys, monkeypatch):
    import torch

    from sd_sparse.training import trainer

    class InfiniteLoss(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, target, output):
            return (output - target).abs().mean() * float("inf")

    monkeypatch.setattr(trainer, "ReconstructionLoss", InfiniteLoss)
    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--learning_rate", "2e-4", "--max_train_steps", "3", "--output_dir", str(tmp_path / "o")])
    assert stop.value.code == 2
    line = one_line(capsys.readouterr().err, "")
    assert line.endswith(
        "training diverged at step 1: the loss became inf with --learning_rate 0.0002; lower --learning_rate "
        "(or clip with --max_grad_norm 1.0)."
    ), line
    # a user's own bad latents stay a bad-input error naming `latents`
    from sd_sparse import DictionaryBottleneck

    with pytest.raises(ValueError, match="`latents` contains NaN or infinite"):
        DictionaryBottleneck(16, 4, 2)(torch.full((1, 4, 2, 2), float("nan")))


def test_only_user_errors_become_one_line_everything_else_keeps_its_traceback():
    """`UserError` (a `ValueError`) is what our checks raise and the CLI prints as one line; a plain
    `ValueError` from anywhere else is a bug and keeps its traceback."""
    from sd_sparse.bottlenecks import DictionaryBottleneck
    from sd_sparse.errors import UserError, exit_on_user_error, user_error_message

    with pytest.raises(UserError, match="latents"):  # a check of ours
        DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=2)(torch.zeros(1, 3, 4, 4))
    assert issubclass(UserError, ValueError)
    assert user_error_message(UserError("`x` must be >= 1, got 0.")) == "`x` must be >= 1, got 0."
    assert user_error_message(ValueError("math domain error")) is None
    with pytest.raises(ValueError, match="math domain error"):
        with exit_on_user_error("prog"):
            raise ValueError("math domain error")
    with pytest.raises(SystemExit):
        with exit_on_user_error("prog"):
            raise UserError("`x` must be >= 1, got 0.")
