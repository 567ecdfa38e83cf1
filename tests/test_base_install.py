"""A base install (`pip install sd_sparse`, no extras): every `sd-sparse` subcommand and every training program
runs, or stops with exit status 2 and one line naming the extra that it needs; never a traceback.

The extras' packages are hidden from each subprocess (Python's path finder is told they are not there), so
`import constriction` fails and `importlib.util.find_spec("constriction")` is None, as in a venv without them.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sd_sparse import DictionaryBottleneck, SparseAutoencoder
from sd_sparse.extras import EXTRA_OF_MODULE

ROOT = Path(__file__).resolve().parents[1]
# packages no extra of ours names but that code looks for (LPIPS weights, torchmetrics' FID backbone)
ALSO_HIDDEN = {"torch_fidelity", "lpips"}

RUNNER = """
import contextlib, io, json, sys
from importlib.machinery import PathFinder

HIDDEN = set(sys.argv[1].split(","))
_find = PathFinder.find_spec.__func__


def find_spec(cls, fullname, path=None, target=None):
    return None if fullname.split(".")[0] in HIDDEN else _find(cls, fullname, path, target)


PathFinder.find_spec = classmethod(find_spec)
import runpy

results = []
for module, argv in json.loads(sys.argv[2]):  # each command as `python -m MODULE ARGV` would run it
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [module, *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=False)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
with open(OUTPUT, "w") as f:
    json.dump(results, f)
"""


class Done:
    """What one command printed and returned."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_base(tmp_path, *commands, timeout=600):
    """Runs each `(module, [args])` as `python -m module args` would, one after the other in ONE Python process
    whose extras' packages are hidden (one import of torch and diffusers for all); returns a `Done` each."""
    import json

    runner, output = tmp_path / "base_install.py", tmp_path / "base_install.json"
    runner.write_text(f"OUTPUT = {str(output)!r}\n" + RUNNER)
    hidden = ",".join(sorted(set(EXTRA_OF_MODULE) | ALSO_HIDDEN))
    listed = json.dumps([[module, [str(a) for a in args]] for module, args in commands])
    done = subprocess.run(
        [sys.executable, str(runner), hidden, listed], capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [Done(**r) for r in json.loads(output.read_text())]


def user_error_line(done) -> str:
    """The run stopped with exit status 2 and one line on stderr, no traceback; returns that line."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[-1]


def test_the_hidden_packages_are_really_hidden(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib.util\nprint(importlib.util.find_spec('constriction'), importlib.util.find_spec('numpy') is None)\n"
        "import constriction\n"
    )
    (done,) = run_base(tmp_path, ("probe", []))
    assert done.stdout.split() == ["None", "False"] and "No module named 'constriction'" in done.stderr


def test_every_extra_module_is_declared_in_its_extra_and_not_in_the_core():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip() for r in requirements}

    core = names(project["dependencies"])
    for module, (extra, package) in EXTRA_OF_MODULE.items():
        assert package in names(project["optional-dependencies"][extra]), (module, extra)
        assert package not in core, f"{package} is a core dependency: {module} needs no extra"
    everything = project["optional-dependencies"]["all"][0]
    for extra in {extra for extra, _ in EXTRA_OF_MODULE.values()}:
        assert extra in everything, f"[all] leaves out [{extra}]"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two 64×64 photographs, a dictionary bottleneck for the reference VAE's 4 channels, a codes file
    written with the full install, a tiny SparseAutoencoder."""
    root = tmp_path_factory.mktemp("base")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
    torch.manual_seed(0)
    DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=2, patch_size=2).save_pretrained(root / "dict")
    from sd_sparse.cli import main

    assert (
        main(["compress", str(images / "0.png"), "--bottleneck", str(root / "dict"), "-o", str(root / "a.codes")]) == 0
    )
    SparseAutoencoder(hidden_channels=16, latent_channels=4, num_atoms=16, sparsity=2).save_pretrained(root / "model")
    return root


@pytest.fixture(scope="module")
def base_runs(folders, tmp_path_factory):
    """Every command of the tests below, run in one base-install process: `{name: Done}`."""
    work = tmp_path_factory.mktemp("runs")
    tiny = ["--num_atoms", 8, "--sparsity", 2, "--hidden_channels", 16, "--latent_channels", 4, "--resolution", 16]
    tiny += ["--train_batch_size", 2, "--max_images", 4, "--max_train_steps", 2, "--validation_steps", 1]
    fit = ["--max_train_steps", 2, "--max_images", 4, "--num_atoms", 8, "--max_eval_images", 2]
    prior = ["--max_train_steps", 2, "--max_images", 4, "--max_eval_images", 2, "--embedding_dim", 4]
    prior += ["--hidden_dim", 8, "--context_size", 3, "--output_dir", work / "prior"]
    demo = ["--steps", 5, "--vq_atoms", 16, "--atoms", 16, "--sparsity", 2, "--value_bits", 4, "--train_crops", 4]
    demo += ["--crop_size", 64, "--output_dir", work / "demo"]
    cli = "sd_sparse.cli"
    commands = {
        "compress": (
            cli,
            ["compress", folders / "images" / "0.png", "--bottleneck", folders / "dict", "-o", work / "b.codes"],
        ),
        "decompress": (cli, ["decompress", folders / "a.codes", "--bottleneck", folders / "dict", "-o", work / "out"]),
        "evaluate": (
            cli,
            [
                "evaluate",
                folders / "model",
                "--data",
                folders / "images",
                "--resolution",
                32,
                "--output_dir",
                work / "eval",
            ],
        ),
        "figures": (cli, ["figures", folders / "model", "--output_dir", work / "figs"]),
        "figures umap": (cli, ["figures", folders / "model", "--kinds", "umap", "--output_dir", work / "figs2"]),
        "pull": (cli, ["pull", "a/b"]),
        "push": (cli, ["push", work / "none", "a/b"]),
        "demo": (cli, ["demo", *demo]),
        "train_dlvae": ("sd_sparse.training", ["train_dlvae", *tiny, "--output_dir", work / "dlvae"]),
        "fit_sd_bottleneck": ("sd_sparse.training", ["fit_sd_bottleneck", *fit, "--output_dir", work / "fit"]),
        "train_prior": ("sd_sparse.training", ["train_prior", "--bottleneck", folders / "dict", *prior]),
        "train_nothing": ("sd_sparse.training", ["train_nothing"]),
    }
    return work, dict(zip(commands, run_base(work, *commands.values())))


def test_compress_and_decompress_name_the_compression_extra(base_runs):
    work, runs = base_runs
    assert user_error_line(runs["compress"]) == (
        "sd-sparse compress: the codes container needs constriction, which is not installed: "
        "pip install 'sd_sparse[compression]'"
    )
    assert not (work / "b.codes").exists()
    assert "pip install 'sd_sparse[compression]'" in user_error_line(runs["decompress"])
    assert not list(work.glob("out/*.png"))


def test_evaluate_reports_what_needs_an_extra_as_n_a_and_goes_on(base_runs):
    work, runs = base_runs
    assert runs["evaluate"].returncode == 0, runs["evaluate"].stderr[-3000:]
    assert "rFID: n/a, it needs torchmetrics (pip install 'sd_sparse[metrics]')" in runs["evaluate"].stdout
    assert (work / "eval" / "metrics.json").is_file()


def test_figures_make_what_they_can_and_name_the_plots_extra(base_runs):
    work, runs = base_runs
    assert runs["figures"].returncode == 0, runs["figures"].stderr[-3000:]
    assert "pip install 'sd_sparse[plots]'" in runs["figures"].stderr
    assert [p.name for p in (work / "figs").glob("*.png")] == ["atoms.png"]  # drawn with PIL alone
    assert "pip install 'sd_sparse[plots]'" in user_error_line(runs["figures umap"])


def test_hub_commands_stop_with_one_line_offline(base_runs):
    _, runs = base_runs
    assert "cannot reach the Hugging Face Hub" in user_error_line(runs["pull"])
    assert "does not exist" in user_error_line(runs["push"])


def test_the_demo_runs(base_runs):
    work, runs = base_runs
    assert runs["demo"].returncode == 0, runs["demo"].stderr[-3000:]
    assert (work / "demo" / "grid.png").is_file()


def test_training_programs_ship_with_the_package_and_run(base_runs):
    """`python -m sd_sparse.training PROGRAM`: a trainer validates (FLIP, SSIM, PSNR) and saves; the fit script
    saves its bottlenecks and evaluates them; train_prior saves its prior and scores it."""
    work, runs = base_runs
    assert runs["train_dlvae"].returncode == 0, runs["train_dlvae"].stderr[-3000:]
    assert SparseAutoencoder.from_pretrained(work / "dlvae").config.bottleneck_config["num_atoms"] == 8
    assert runs["fit_sd_bottleneck"].returncode == 0, runs["fit_sd_bottleneck"].stderr[-3000:]
    assert (work / "fit" / "dictionary" / "config.json").is_file() and (work / "fit" / "metrics.json").is_file()
    # the prior trains and scores its bits; the codes file sizes need the compression extra, named in the table
    assert runs["train_prior"].returncode == 0, runs["train_prior"].stderr[-3000:]
    metrics = json.loads((work / "prior" / "metrics.json").read_text())["metrics"]
    assert np.isfinite(metrics["prior_bits_per_position"]) and metrics["codes_file_bits_per_position"] is None
    assert "| codes file with the prior | n/a: " in runs["train_prior"].stdout
    assert "pip install 'sd_sparse[compression]'" in runs["train_prior"].stdout
    assert runs["train_nothing"].returncode == 2
    assert "usage: python -m sd_sparse.training" in runs["train_nothing"].stderr
