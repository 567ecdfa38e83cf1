"""train/fit_sd_bottleneck.py and the Stable Diffusion demo, on the offline tiny SD."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from launch import launch_two_processes
from PIL import Image

from sd_sparse import DictionaryBottleneck, VectorQuantizer
from sd_sparse.data import sample_photographs
from sd_sparse.demo import run_stable_diffusion_demo

ROOT = Path(__file__).resolve().parents[1]


def user_error(capsys, run):
    """`run()` must stop with exit status 2 and one line `fit_sd_bottleneck.py: ...` on stderr; returns it."""
    with pytest.raises(SystemExit) as stop:
        run()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    line = err.rstrip("\n").split("\n")[-1].split("\r")[-1]  # after any progress bar of `datasets`
    assert line.startswith("fit_sd_bottleneck.py: ") and "Traceback" not in err, err
    return line


def load_script():
    spec = importlib.util.spec_from_file_location("fit_sd_bottleneck", ROOT / "train" / "fit_sd_bottleneck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name, image in list(sample_photographs().items())[:6]:
        Image.fromarray(image[:96, :128]).save(folder / f"{name}.png")
    return folder


def test_fit_script_writes_bottlenecks_metrics_and_table(image_folder, tmp_path, capsys):
    out = tmp_path / "fit"
    load_script().main(
        [
            "--train_data_dir",
            str(image_folder),
            "--resolution",
            "64",
            "--max_train_steps",
            "30",
            "--num_atoms",
            "32",
            "--sparsity",
            "4",
            "--patch_size",
            "2",
            "--vq_num_atoms",
            "32",
            "--output_dir",
            str(out),
            "--validation_fraction",
            "0.34",
        ]
    )
    report = json.loads((out / "metrics.json").read_text())
    assert report["train_images"] == 3 and report["held_out_images"] == 3
    for name in ("dictionary", "vq"):
        m = report["metrics"][name]
        assert np.isfinite(m["latent_psnr"]) and np.isfinite(m["image_psnr"]) and 0 <= m["flip"] <= 1
        assert 1 <= m["perplexity"] <= 32
    assert report["metrics"]["dictionary"]["bits_per_position"] == 4 * (5 + 16) / 4
    assert report["metrics"]["vq"]["bits_per_position"] == 5
    assert isinstance(DictionaryBottleneck.from_pretrained(out / "dictionary"), DictionaryBottleneck)
    assert isinstance(VectorQuantizer.from_pretrained(out / "vq"), VectorQuantizer)
    assert "| dictionary |" in (out / "results.md").read_text()
    assert "latent PSNR" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--resolution", "60"], "multiple of 8"),
        (["--resolution", "128"], "smaller than --resolution 128"),
    ],
)
def test_fit_script_rejects_bad_images(image_folder, tmp_path, extra, match, capsys):
    argv = ["--train_data_dir", str(image_folder), "--output_dir", str(tmp_path / "out"), *extra]
    assert match in user_error(capsys, lambda: load_script().main(argv))
    assert not (tmp_path / "out").exists()


def test_fit_script_rejects_bad_folders_and_arguments(tmp_path, capsys):
    script = load_script()
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--train_data_dir", str(empty), "--output_dir", str(tmp_path / "o")]
    assert "holds no images" in user_error(capsys, lambda: script.main(argv))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    (broken / "b.png").write_bytes(b"not a png")
    argv = ["--train_data_dir", str(broken), "--output_dir", str(tmp_path / "o")]
    assert "cannot read image" in user_error(capsys, lambda: script.main(argv))
    for argv in (["--num_atoms", "4", "--sparsity", "8"], ["--train_data_dir", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as stop:  # argparse's own errors: usage and status 2
            script.main(argv)
        assert stop.value.code == 2


def test_stable_diffusion_demo_writes_grid_and_table(tmp_path, capsys):
    metrics = run_stable_diffusion_demo(
        steps=20, num_atoms=32, sparsity=4, num_inference_steps=2, output_dir=str(tmp_path)
    )
    assert len(metrics) == 2
    for m in metrics.values():
        assert np.isfinite(m["prompt_latent_psnr"]) and 0 <= m["prompt_flip"] <= 1
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[0] > 4 * grid.size[1]  # five panels side by side
    assert "blue sunflower" in (tmp_path / "results.md").read_text()
    assert DictionaryBottleneck.from_pretrained(tmp_path / "dictionary").config.sparsity == 4
    assert "bits per latent position" in capsys.readouterr().out


def test_fit_script_runs_on_two_processes(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): both ranks fit together and rank 0 writes."""
    out = tmp_path / "ddp"
    done = launch_two_processes(
        ROOT / "train" / "fit_sd_bottleneck.py",
        "--output_dir",
        out,
        "--max_train_steps",
        10,
        "--max_images",
        24,
        "--num_atoms",
        32,
        "--sparsity",
        4,
        "--vq_num_atoms",
        32,
        "--no_flip",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"dictionary", "vq"} and report["metrics"]["vq"]["flip"] is None


def test_fit_script_reads_a_datasets_dataset(image_folder, tmp_path, capsys):
    """--dataset_name goes through `datasets.load_dataset` (here a local image folder, offline)."""
    out = tmp_path / "from_dataset"
    load_script().main(
        [
            "--dataset_name",
            str(image_folder),
            "--resolution",
            "64",
            "--max_train_steps",
            "5",
            "--num_atoms",
            "16",
            "--sparsity",
            "2",
            "--no_vq",
            "--no_flip",
            "--output_dir",
            str(out),
        ]
    )
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"dictionary"} and report["train_images"] + report["held_out_images"] == 6
    argv = ["--dataset_name", str(image_folder), "--image_column", "pixels", "--output_dir", str(out)]
    assert "--image_column pixels" in user_error(capsys, lambda: load_script().main(argv))
