"""train/fit_sd_bottleneck.py and the Stable Diffusion demo, on the offline tiny SD."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from launch import launch_two_processes
from PIL import Image
from safetensors.torch import load_file

from sd_sparse import DictionaryBottleneck, VectorQuantizer
from sd_sparse.data import sample_photographs
from sd_sparse.demo import run_stable_diffusion_demo

ROOT = Path(__file__).resolve().parents[1]
# small bottlenecks, small batches, no FLIP: each step encodes its batch with the tiny SD's VAE
TINY = ["--num_atoms", 16, "--sparsity", 2, "--patch_size", 2, "--vq_num_atoms", 16, "--no_flip"]
TINY += ["--train_batch_size", 4, "--encode_batch_size", 4, "--resolution", 32]


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_the_rng_left_alone():
    """The tiny SD's convolutions are too small to gain from threads, and lose much to a busy machine;
    the script seeds the global RNGs (`set_seed`): the tests after these see them as they were."""
    import random

    threads = torch.get_num_threads()
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


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
    """The program behind train/fit_sd_bottleneck.py (shipped in the package)."""
    from sd_sparse.training import fit_sd_bottleneck

    return fit_sd_bottleneck


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
            "32",
            "--max_train_steps",
            "12",
            "--num_atoms",
            "32",
            "--sparsity",
            "4",
            "--patch_size",
            "2",
            "--vq_num_atoms",
            "32",
            "--train_batch_size",
            "4",
            "--output_dir",
            str(out),
            "--validation_split",
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
    with pytest.raises(SystemExit) as stop:  # argparse's own errors: usage and status 2
        script.main(["--num_atoms", "4", "--sparsity", "8"])
    assert stop.value.code == 2
    argv = ["--train_data_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")]
    assert "is not a folder" in user_error(capsys, lambda: script.main(argv))
    (tmp_path / "file").write_text("")
    for extra, message in [
        (["--checkpointing_steps", "0"], "--checkpointing_steps must be >= 1"),
        (["--max_eval_images", "0"], "--max_eval_images must be >= 1"),
        (["--resume_from_checkpoint", str(tmp_path / "nowhere")], "does not exist"),
        (["--cache_latents", str(tmp_path / "file")], "is not a folder"),
        (["--validation_split", "1.5"], "--validation_split must be in [0, 1)"),
    ]:
        argv = ["--max_images", "3", "--output_dir", str(tmp_path / "o"), *extra]
        assert message in user_error(capsys, lambda argv=argv: script.main(argv)), extra
    assert not (tmp_path / "o").exists()


def test_fit_script_data_defaults_and_the_deprecated_flag(image_folder):
    script = load_script()
    folder = script.parse_args(["--train_data_dir", str(image_folder)])
    assert (folder.resolution, folder.resize_resolution, folder.center_crop) == (64, 64, True)
    assert (folder.random_flip, folder.repeats, folder.validation_split) == (False, 1, 0.2)
    real = script.parse_args(["--dataset_name", "x", "--pretrained_model_name_or_path", "y", "--no_center_crop"])
    assert script.parse_args(["--no-center_crop"]).center_crop is False  # the older spelling still works
    assert (real.resolution, real.resize_resolution, real.center_crop) == (512, 512, False)
    photos = script.parse_args(["--resolution", "128"])
    assert (photos.resize_resolution, photos.center_crop, photos.repeats, photos.skip_bad_images) == (
        None,
        False,
        100,
        True,
    )
    with pytest.warns(FutureWarning, match="--validation_fraction is deprecated: use --validation_split"):
        assert script.parse_args(["--validation_fraction", "0.3"]).validation_split == 0.3


def test_stable_diffusion_demo_codes_held_out_photographs_with_the_reference_vae(tmp_path, capsys):
    metrics = run_stable_diffusion_demo(
        steps=20, vq_atoms=64, num_atoms=32, sparsity=2, value_bits=4, num_inference_steps=2, output_dir=str(tmp_path)
    )
    assert list(metrics) == ["VQ K=64", "dictionary 2x2 K=32 S=2 4-bit"]
    for m in metrics.values():
        assert np.isfinite(m["prompt_latent_psnr"]) and 0 <= m["prompt_flip"] <= 1
        # the measured codes-file rate: at most the fixed-length claim plus the header's share of 2 crops
        assert 0 < m["measured_bits_per_position"] <= m["bits_per_position"] + 0.5
        # a trained VAE's latents are coded far better than the random VAE's static
        assert m["image_psnr"] > 25
    out = capsys.readouterr().out
    assert "the reference VAE (trained here)" in out and "held out: chelsea, flower" in out
    results = (tmp_path / "results.md").read_text()
    assert "blue sunflower" in results and "measured bits per position (codes file)" in results
    # the grid's layout (cells, colour bars, no empty cell): tests/test_demo.py
    saved = DictionaryBottleneck.from_pretrained(tmp_path / "dictionary")
    assert (saved.config.sparsity, saved.config.value_bits, saved.config.value_refit) == (2, 4, True)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["demo", "--steps", "0"], "sd-sparse demo: `steps` must be >= 1, got 0."),
        (
            ["demo", "--sparsity", "9", "--atoms", "8"],
            "sd-sparse demo: `sparsity` (9) must be at most `num_atoms` (8).",
        ),
        (["demo", "--value_bits", "1"], "sd-sparse demo: `value_bits` must be None"),
        (["demo", "--crop_size", "100"], "sd-sparse demo: `crop_size` must be a multiple of 8"),
        (["demo", "--test_images", "nope"], "sd-sparse demo: unknown test images"),
    ],
)
def test_demo_user_errors_are_one_line(argv, message, capsys):
    from sd_sparse.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


RANK_STATES = """
import os, sys, torch
from sd_sparse.training import fit_sd_bottleneck as script
args = script.parse_args(sys.argv[2:])
bottlenecks = script.fit_bottlenecks(args)
states = {name: bottleneck.state_dict() for name, bottleneck in bottlenecks.items()}
torch.save(states, os.path.join(args.output_dir, "rank%s.pt" % os.environ.get("RANK", "0")))
"""


@pytest.mark.parametrize("cache", [False, True], ids=["encoded-every-step", "cached-latents"])
def test_fit_script_runs_on_two_processes_with_identical_bottlenecks(tmp_path, cache):
    """`accelerate launch` with 2 CPU processes (gloo): each rank encodes (or caches the latents of) its
    own images, both fit together, rank 0 writes; both ranks end with the same bytes."""
    out, cache_dir = tmp_path / "ddp", tmp_path / "cache"
    helper = tmp_path / "fit_rank_states.py"
    helper.write_text(RANK_STATES)
    argv = ["--output_dir", out, *TINY, "--max_train_steps", 6, "--max_images", 6, "--repeats", 2]
    argv += ["--max_eval_images", 3, "--checkpointing_steps", 4]
    if cache:
        argv += ["--cache_latents", cache_dir, "--cache_shard_size", 3]
    done = launch_two_processes(helper, ROOT / "train" / "fit_sd_bottleneck.py", *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"dictionary", "vq"} and report["metrics"]["vq"]["flip"] is None
    assert report["world_size"] == 2 and report["held_out_images"] == 3 and report["train_images"] == 4
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    if cache:
        manifest = json.loads((cache_dir / "manifest.json").read_text())
        files = [shard["file"] for shard in manifest["shards"]]
        assert {f[: len("latents-00000")] for f in files} == {"latents-00000", "latents-00001"}  # one set per rank
        # 6 photographs: 2 held out, 4 × 2 crops, one batch of 4 per rank
        assert manifest["latents"]["count"] == 8 and manifest["latents"]["shape"] == [4, 4, 4]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    for name in ("dictionary", "vq"):
        assert rank0[name].keys() == rank1[name].keys()
        for key, value in rank0[name].items():
            assert torch.equal(value, rank1[name][key]), f"{name}.{key} differs between ranks"
    assert float(rank0["vq"]["ema_cluster_size"].sum()) > 0  # the EMA statistics were updated
    saved = bottleneck_states(out)
    assert all(torch.equal(value, rank0["dictionary"][key]) for key, value in saved["dictionary"].items())


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


def bottleneck_states(out):
    return {name: load_file(out / name / "diffusion_pytorch_model.safetensors") for name in ("dictionary", "vq")}


def assert_same_states(a, b):
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), f"{name}.{key} differs"


@pytest.mark.parametrize("cache", [False, True], ids=["encoded-every-step", "cached-latents"])
def test_a_resumed_fit_ends_bit_identical_to_an_uninterrupted_one(image_folder, tmp_path, cache, capsys):
    """Random crops and flips, 2 batches per epoch: the resumed run (from step 3, mid-epoch) restores
    the data position, the optimizer, the EMA codebook and the RNG, and ends with the same bytes."""
    script = load_script()
    argv = ["--train_data_dir", str(image_folder), "--no-center_crop", "--random_flip", *map(str, TINY)]
    argv += ["--train_batch_size", "2", "--max_eval_images", "2", "--checkpointing_steps", "2"]
    if cache:
        argv += ["--cache_latents", str(tmp_path / "cache")]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    script.main([*argv, "--output_dir", str(whole), "--max_train_steps", "5"])
    assert sorted(p.name for p in whole.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]
    script.main([*argv, "--output_dir", str(parts), "--max_train_steps", "3", "--checkpoints_total_limit", "1"])
    assert [p.name for p in parts.glob("checkpoint-*")] == ["checkpoint-3"]
    script.main([*argv, "--output_dir", str(parts), "--max_train_steps", "5", "--resume_from_checkpoint", "latest"])
    assert_same_states(bottleneck_states(whole), bottleneck_states(parts))
    if cache:  # the second and third runs reused the cache of the first: the same latents, the same fit
        assert json.loads((parts / "metrics.json").read_text())["latents"].startswith("cache ")
        uncached = [a for a in argv if a not in ("--cache_latents", str(tmp_path / "cache"))]
        argv = [*uncached, "--output_dir", str(parts), "--max_train_steps", "6", "--resume_from_checkpoint", "latest"]
        line = user_error(capsys, lambda: script.main(argv))
        assert "the checkpoint was fitted on cache " in line and "resume with the same --cache_latents" in line


def test_latent_cache_is_reused_refused_or_rebuilt(image_folder, tmp_path, capsys):
    script = load_script()
    cache = tmp_path / "cache"
    argv = ["--train_data_dir", str(image_folder), *map(str, TINY), "--max_train_steps", "2", "--no_vq"]
    argv += ["--cache_latents", str(cache), "--cache_shard_size", "3", "--max_eval_images", "1"]
    script.main([*argv, "--output_dir", str(tmp_path / "a")])
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["latents"] == {"count": 4, "shape": [4, 4, 4], "dtype": "float32"}  # 6 images, 2 held out
    assert [s["rows"] for s in manifest["shards"]] == [3, 1]
    setup = manifest["setup"]
    assert setup["transform"]["resolution"] == 32 and setup["transform"]["center_crop"] is True
    assert setup["data"]["train_images"] == 4 and setup["vae"]["dtype"] == "float32"
    stamp = (cache / "manifest.json").stat().st_mtime_ns
    script.main([*argv, "--output_dir", str(tmp_path / "b")])  # the same setup: reused, not rewritten
    assert (cache / "manifest.json").stat().st_mtime_ns == stamp
    first, second = (load_file(tmp_path / o / "dictionary" / "diffusion_pytorch_model.safetensors") for o in "ab")
    assert_same_states({"dictionary": first}, {"dictionary": second})  # built or reused: the same fit

    line = user_error(capsys, lambda: script.main([*argv, "--output_dir", str(tmp_path / "c"), "--random_flip"]))
    assert "holds latents of another setup (transform.random_flip: False != True)" in line
    assert "--rebuild_cache" in line and not (tmp_path / "c").exists()
    (cache / "latents-00000-00007.safetensors").write_bytes(b"stale")  # e.g. from an interrupted build
    script.main([*argv, "--output_dir", str(tmp_path / "c"), "--random_flip", "--rebuild_cache"])
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["setup"]["transform"]["random_flip"] is True
    assert sorted(p.name for p in cache.iterdir()) == [
        "latents-00000-00000.safetensors",
        "latents-00000-00001.safetensors",
        "manifest.json",
    ]
    (cache / "manifest.json").unlink()  # an interrupted build: no manifest, rebuilt without asking
    script.main([*argv, "--output_dir", str(tmp_path / "d")])
    assert json.loads((cache / "manifest.json").read_text())["setup"]["transform"]["random_flip"] is False


def test_latent_cache_reads_rows_across_shards(tmp_path):
    from sd_sparse.training.latent_cache import LatentCache, prepare_latent_cache

    rows = torch.randn(7, 4, 2, 3)

    def write(writer):
        for start in range(0, 7, 2):
            writer.add(rows[start : start + 2])

    cache = prepare_latent_cache(str(tmp_path), {"what": 1}, write, shard_size=3)
    assert len(cache) == 7 and len(list(tmp_path.glob("*.safetensors"))) == 3
    assert torch.equal(cache.batch([6, 0, 3, 3, 5]), rows[[6, 0, 3, 3, 5]]) and torch.equal(cache[4], rows[4])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(cache.sample(5, g1), rows[torch.randint(0, 7, (5,), generator=g2)])
    with pytest.raises(IndexError):
        cache.batch([7])
    half = prepare_latent_cache(str(tmp_path / "half"), {}, write, shard_size=4, dtype="bfloat16")
    assert torch.equal(half.batch(range(7)), rows.bfloat16().float())
    assert len(LatentCache(str(tmp_path))) == 7
    with pytest.raises(ValueError, match=r"another setup \(what: 1 != 2\)"):
        prepare_latent_cache(str(tmp_path), {"what": 2}, write)


def test_held_out_evaluation_streams_and_matches_evaluate():
    """`evaluate_on_vae` (a dataset of images, batch by batch, shared plain decode) gives the metrics of
    `evaluate` on all the latents at once."""
    from diffusers import AutoencoderKL

    from sd_sparse.evaluation import evaluate
    from sd_sparse.testing import tiny_stable_diffusion_path
    from sd_sparse.training.fitting import collect_latents, evaluate_on_vae

    vae = AutoencoderKL.from_pretrained(tiny_stable_diffusion_path(), subfolder="vae")
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = collect_latents(vae, images)
    bottleneck = VectorQuantizer(8, 4, init_from_data=False).eval()
    expected = evaluate(bottleneck, latents, vae=vae, batch_size=5)
    dataset = [*images[:2], None, *images[2:]]  # a bad image left out by the loader
    streamed = evaluate_on_vae({"vq": bottleneck}, vae, dataset, batch_size=2)["vq"]
    assert streamed.keys() == expected.keys() and streamed["images"] == 5
    for key, value in expected.items():
        assert streamed[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
    capped = evaluate_on_vae({"vq": bottleneck}, vae, dataset, batch_size=2, with_flip=False, max_images=4)
    assert capped["vq"]["images"] == 3 and capped["vq"]["flip"] is None  # the first 4, one of them bad
