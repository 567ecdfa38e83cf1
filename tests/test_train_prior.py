"""train/train_prior.py: a `CodePrior` trained on a frozen bottleneck's codes of the offline tiny SD's latents."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from launch import launch_two_processes
from safetensors.torch import load_file

from sd_sparse import CodePrior, DictionaryBottleneck, VectorQuantizer

ROOT = Path(__file__).resolve().parents[1]
# the shipped photographs (6 of them: 1 held out at the default split), small crops, a tiny prior
TINY = ["--max_images", "6", "--resolution", "32", "--train_batch_size", "4", "--encode_batch_size", "4"]
TINY += ["--embedding_dim", "8", "--hidden_dim", "16", "--context_size", "3", "--max_eval_images", "4"]
TINY += ["--learning_rate", "1e-2"]


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_the_rng_left_alone():
    """The script seeds the global RNGs (`set_seed`): the tests after these see them as they were."""
    import random

    threads = torch.get_num_threads()
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


@pytest.fixture(scope="module")
def bottlenecks(tmp_path_factory):
    """Folders of two frozen bottlenecks of the tiny SD's 4-channel latents, and of an 8-channel one:
    sparse codes with 4-bit coefficients (the prior's sets), a VQ (slots)."""
    folder = tmp_path_factory.mktemp("bottlenecks")
    torch.manual_seed(0)
    made = {
        "dictionary": DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=2, patch_size=2, value_bits=4),
        "vq": VectorQuantizer(16, 4, init_from_data=False),
        "eight_channels": VectorQuantizer(16, 8, init_from_data=False),
    }
    for name, bottleneck in made.items():
        bottleneck.save_pretrained(folder / name)
    return folder


def load_script():
    """The program behind train/train_prior.py (shipped in the package)."""
    from sd_sparse.training import train_prior

    return train_prior


def prior_state(out):
    return load_file(out / "prior" / "diffusion_pytorch_model.safetensors")


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{key} differs"


def user_error(capsys, argv):
    """`main(argv)` must stop with exit status 2 and one line `train_prior.py: ...` on stderr; returns it."""
    with pytest.raises(SystemExit) as stop:
        load_script().main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    line = err.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert line.startswith("train_prior.py: ") and "Traceback" not in err, err
    return line


def test_a_tiny_run_writes_the_prior_the_coded_vae_and_held_out_bits(bottlenecks, tmp_path, capsys):
    from sd_sparse.autoencoders.loading import load_vae

    out = tmp_path / "run"
    argv = ["--bottleneck", str(bottlenecks / "dictionary"), *TINY, "--output_dir", str(out)]
    prior = load_script().main([*argv, "--max_train_steps", "20", "--logging_steps", "10"])
    saved = CodePrior.from_pretrained(out / "prior")
    assert_same_state(saved.state_dict(), prior.state_dict())
    assert (saved.config.sets, saved.config.value_bits, saved.config.hidden_dim) == (True, 4, 16)
    torch.manual_seed(0)
    frozen = DictionaryBottleneck.from_pretrained(bottlenecks / "dictionary")
    saved.check_bottleneck(frozen)  # the prior of this bottleneck, saved next to it unchanged
    assert_same_state(DictionaryBottleneck.from_pretrained(out / "bottleneck").state_dict(), frozen.state_dict())
    coded = load_vae(str(out / "vae"))
    assert_same_state(coded.bottleneck.state_dict(), frozen.state_dict())

    report = json.loads((out / "metrics.json").read_text())
    metrics = report["metrics"]
    assert report["steps"] == 20 and report["world_size"] == 1 and metrics["images"] == 4
    assert report["prior"]["embedding_dim"] == 8 and report["bottleneck"] == str(bottlenecks / "dictionary")
    for key in (
        "prior_bits_per_position",
        "codes_file_bits_per_position",
        "codes_file_bits_per_position_without_prior",
    ):
        assert np.isfinite(metrics[key]) and metrics[key] > 0, key
    # the float network's bits are what the file's range coder spends without the header (a few bits more)
    assert metrics["codes_file_bits_per_position"] > metrics["prior_bits_per_position"]
    logged = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged] == [10, 20]
    assert all(np.isfinite(line["train/bits_per_position"]) for line in logged)
    table = capsys.readouterr().out
    assert "| codes file with the prior |" in table and "| codes file without the prior |" in table
    assert "codes file with the prior" in (out / "results.md").read_text()

    # the coded VAE written here is a VAE the program takes: its own bottleneck, no --bottleneck
    again = tmp_path / "again"
    coded_argv = ["--pretrained_model_name_or_path", str(out / "vae"), "--vae_subfolder", "", *TINY]
    load_script().main([*coded_argv, "--max_train_steps", "2", "--output_dir", str(again)])
    saved.check_bottleneck(DictionaryBottleneck.from_pretrained(again / "bottleneck"))
    assert json.loads((again / "metrics.json").read_text())["bottleneck"] == "the coded VAE's"


@pytest.mark.parametrize("cache", [False, True], ids=["encoded-every-step", "cached-latents"])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(bottlenecks, tmp_path, cache, capsys):
    """Random crops and flips, 2 batches per epoch: the resumed run (from step 3, mid-epoch) restores the data
    position, the prior, Adam's state and the RNG, and ends with the same bytes."""
    script = load_script()
    argv = ["--bottleneck", str(bottlenecks / "dictionary"), *TINY, "--train_batch_size", "2"]
    argv += ["--no_center_crop", "--random_flip", "--checkpointing_steps", "3", "--max_eval_images", "1"]
    if cache:
        argv += ["--cache_latents", str(tmp_path / "cache")]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    script.main([*argv, "--output_dir", str(whole), "--max_train_steps", "6"])
    assert sorted(p.name for p in whole.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    script.main([*argv, "--output_dir", str(parts), "--max_train_steps", "3"])
    script.main([*argv, "--output_dir", str(parts), "--max_train_steps", "6", "--resume_from_checkpoint", "latest"])
    assert_same_state(prior_state(whole), prior_state(parts))
    # the equality has power: three steps fewer end elsewhere
    three = load_file(parts / "checkpoint-3" / "model.safetensors")
    assert any(not torch.equal(value, three[key]) for key, value in prior_state(whole).items())
    if not cache:  # another bottleneck of the same shapes: its codes are other codes, the resume is refused
        torch.manual_seed(1)
        other = tmp_path / "other"
        DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=2, patch_size=1, value_bits=4).save_pretrained(
            other
        )
        resume = [*argv[2:], "--bottleneck", str(other), "--output_dir", str(parts), "--max_train_steps", "9"]
        line = user_error(capsys, [*resume, "--resume_from_checkpoint", str(whole / "checkpoint-6")])
        assert "the checkpoint's prior learned the codes of DictionaryBottleneck (config " in line
        assert line.endswith("resume with the same --bottleneck.")


RANK_STATES = """
import os, sys, torch
from sd_sparse.training import train_prior as script
args = script.parse_args(sys.argv[1:])
prior = script.train_prior(args)
torch.save(prior.state_dict(), os.path.join(args.output_dir, "rank%s.pt" % os.environ.get("RANK", "0")))
"""


def test_two_processes_train_one_prior(bottlenecks, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): each rank codes its own images, the gradients are
    averaged, both ranks end with the same bytes, which rank 0 saved; the output folder is a
    `CodePriorPipeline` that generates images (end to end: launch → save_pretrained → from_pretrained)."""
    out = tmp_path / "ddp"
    helper = tmp_path / "prior_rank_states.py"
    helper.write_text(RANK_STATES)
    argv = ["--bottleneck", bottlenecks / "vq", *TINY, "--train_batch_size", 2, "--max_train_steps", 4]
    argv += ["--output_dir", out, "--checkpointing_steps", 2, "--logging_steps", 2]
    done = launch_two_processes(helper, *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert_same_state(rank0, rank1)
    assert_same_state(prior_state(out), rank0)
    torch.manual_seed(0)  # the program's initial weights (set_seed(0)): training moved them
    fresh = CodePrior.from_bottleneck(VectorQuantizer.from_pretrained(bottlenecks / "vq"), 8, 16, 3)
    assert any(not torch.equal(value, fresh.state_dict()[key]) for key, value in rank0.items())
    report = json.loads((out / "metrics.json").read_text())
    assert report["world_size"] == 2 and np.isfinite(report["metrics"]["codes_file_bits_per_position"])
    assert sorted(p.name for p in (out / "checkpoint-4").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    # the output folder is a pipeline: from_pretrained → images, sampled by the trained prior
    from sd_sparse.pipelines.code_prior import CodePriorPipeline

    pipe = CodePriorPipeline.from_pretrained(out)
    assert_same_state(pipe.prior.state_dict(), rank0)
    images = pipe(num_images_per_prompt=2, height=16, width=16, generator=torch.Generator().manual_seed(0)).images
    assert [image.size for image in images] == [(16, 16), (16, 16)]
    again = pipe(num_images_per_prompt=2, height=16, width=16, generator=torch.Generator().manual_seed(0)).images
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))


def test_user_errors_are_one_line_and_write_nothing(bottlenecks, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    dictionary = ["--bottleneck", str(bottlenecks / "dictionary")]
    for extra, message in [
        (["--context_size", "4"], "--context_size must be odd, got 4."),
        (["--embedding_dim", "0"], "--embedding_dim must be >= 1, got 0."),
        (["--adam_weight_decay", "-1"], "--adam_weight_decay must be >= 0, got -1.0."),
        (["--logging_steps", "0"], "--logging_steps must be >= 1, got 0."),
        (["--checkpointing_steps", "0"], "--checkpointing_steps must be >= 1, got 0."),
        (["--validation_split", "1.5"], "--validation_split must be in [0, 1), got 1.5."),
    ]:
        line = user_error(capsys, [*dictionary, *extra, "--output_dir", str(out)])
        assert line == f"train_prior.py: {message}", extra
    missing = tmp_path / "nowhere"
    line = user_error(capsys, ["--bottleneck", str(missing), "--output_dir", str(out)])
    assert line == f"train_prior.py: --bottleneck {missing} is not a folder."
    line = user_error(capsys, ["--bottleneck", str(bottlenecks / "eight_channels"), *TINY, "--output_dir", str(out)])
    assert "codes 8-channel latents but the VAE of" in line and "makes 4-channel ones" in line
    line = user_error(capsys, [*TINY, "--output_dir", str(out)])
    assert "--bottleneck is missing and --pretrained_model_name_or_path" in line and "not a coded VAE" in line
    line = user_error(capsys, ["--bottleneck", str(bottlenecks / "vq" / "config.json"), "--output_dir", str(out)])
    assert line.endswith("config.json is not a folder.")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)  # no token anywhere: stopped before training
    push = ["--bottleneck", str(bottlenecks / "vq"), *TINY, "--push_to_hub", "--hub_model_id", "user/prior"]
    assert "needs a Hugging Face token" in user_error(capsys, [*push, "--output_dir", str(out)])
    assert not out.exists()


def test_train_prior_is_one_of_the_programs(monkeypatch, capsys):
    """`python -m sd_sparse.training` lists it and runs it (here `--help`, in this process)."""
    import runpy

    from sd_sparse.training.programs import PROGRAMS, run_program

    assert "train_prior" in PROGRAMS
    assert 'run_program("train_prior")' in (ROOT / "train" / "train_prior.py").read_text()
    with pytest.raises(SystemExit) as stop:
        run_program("train_prior", ["--help"])
    assert stop.value.code == 0
    help_text = capsys.readouterr().out
    assert "accelerate launch train/train_prior.py --bottleneck <dir>" in help_text and "--context_size" in help_text
    monkeypatch.setattr(sys, "argv", ["python -m sd_sparse.training"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("sd_sparse.training", run_name="__main__")
    assert stop.value.code == 2 and "train_prior" in capsys.readouterr().err


def test_push_to_hub_uploads_the_prior_with_its_card(bottlenecks, tmp_path):
    """`train/train_prior.py --push_to_hub` against the local Hub-compatible server: the prior folder (weights,
    config, model card with the held-out table) is committed, the REPO_ID placeholder filled in."""
    import os

    from hub_server import HubServer
    from launch import run_with_deadline

    out = tmp_path / "pushed"
    argv = [sys.executable, "train/train_prior.py", "--bottleneck", str(bottlenecks / "vq"), *TINY]
    argv += ["--max_train_steps", "2", "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "user/prior"]
    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf"), HF_TOKEN="hf_x")
        env.update(HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
        done = run_with_deadline(argv, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        commits = [c for c in hub.state.commits if c["repo"] == "user/prior"]
    assert len(commits) == 1
    assert sorted(commits[0]["paths"]) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    card = (out / "prior" / "README.md").read_text()
    assert 'CodePrior.from_pretrained("user/prior")' in card and "| codes file with the prior |" in card
    assert "VectorQuantizer (config " in card and "pushed the prior to " in done.stdout
