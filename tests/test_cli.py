"""`sd-sparse compress`: the trained reference VAE by default, folders, transparency, huge images, and
one flag style (snake_case, the dashed spelling a deprecated alias) for every subcommand."""

import argparse
import time

import numpy as np
import pytest
import torch
from PIL import Image

from sd_sparse import DictionaryBottleneck
from sd_sparse.cli import build_parser, main


@pytest.fixture(scope="module")
def bottleneck_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bottleneck")
    DictionaryBottleneck(64, 4, 4, patch_size=2, value_bits=5).eval().save_pretrained(folder)
    return str(folder)


def write_photos(folder, names=("coffee", "astronaut")):
    from sd_sparse.data import sample_photographs

    folder.mkdir(parents=True, exist_ok=True)
    photos = sample_photographs()
    for name in names:
        Image.fromarray(photos[name][:64, :64]).save(folder / f"{name}.png")
    return [str(folder / f"{name}.png") for name in sorted(names)]


def test_default_vae_is_the_trained_reference_vae():
    from sd_sparse.autoencoders import reference_vae_path
    from sd_sparse.autoencoders.loading import load_vae
    from sd_sparse.testing import tiny_stable_diffusion_components

    reference = load_vae(None)
    assert type(reference).__name__ == "AutoencoderKL"
    from safetensors.torch import load_file

    shipped = load_file(f"{reference_vae_path()}/diffusion_pytorch_model.safetensors")
    for key, value in reference.state_dict().items():
        assert torch.equal(value, shipped[key]), key
    shortcut = load_vae("reference")
    assert all(torch.equal(v, shortcut.state_dict()[k]) for k, v in reference.state_dict().items())
    tiny = tiny_stable_diffusion_components()["vae"]  # the random-weight test VAE is not what users get
    assert not torch.equal(tiny.encoder.conv_in.weight, reference.encoder.conv_in.weight)
    for command in ("compress", "decompress"):
        help_text = " ".join(build_parser()._subparsers._group_actions[0].choices[command].format_help().split())
        assert "'reference' (the default)" in help_text and "random weights" not in help_text


def test_compress_takes_folders_sorted_and_shows_progress(bottleneck_dir, tmp_path, capsys):
    paths = write_photos(tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    from_folder, from_files = str(tmp_path / "folder.sdc"), str(tmp_path / "files.sdc")
    assert main(["compress", str(tmp_path / "photos"), "--bottleneck", bottleneck_dir, "-o", from_folder]) == 0
    captured = capsys.readouterr()
    assert "2 image(s) 64x64" in captured.out
    assert "encoding" in captured.err and "2/2" in captured.err  # the progress bar over the images
    assert main(["compress", *paths, "--vae", "reference", "--bottleneck", bottleneck_dir, "-o", from_files]) == 0
    with open(from_folder, "rb") as a, open(from_files, "rb") as b:
        assert a.read() == b.read()  # the folder's images, sorted: astronaut then coffee
    with pytest.raises(SystemExit) as stop:
        main(["compress", str(tmp_path / "empty_dir_missing"), "--bottleneck", bottleneck_dir, "-o", from_folder])
    assert stop.value.code == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stop:
        main(["compress", str(tmp_path / "empty"), "--bottleneck", bottleneck_dir, "-o", from_folder])
    assert stop.value.code == 2 and "holds no images" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_dropped_with_a_one_line_warning_naming_the_file(mode, bottleneck_dir, tmp_path, capsys):
    rgb = write_photos(tmp_path, names=("coffee",))[0]
    image = Image.open(rgb)
    if mode == "P":
        image = image.convert("P")
        image.info["transparency"] = 0
        path = tmp_path / "transparent.png"
        image.save(path, transparency=0)
    else:
        image = image.convert(mode)
        image.putalpha(128)
        path = tmp_path / "transparent.png"
        image.save(path)
    out = str(tmp_path / "out.sdc")
    assert main(["compress", str(path), "--bottleneck", bottleneck_dir, "-o", out]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "transparen" in line]
    assert len(lines) == 1 and str(path) in lines[0] and "alpha" in lines[0], lines
    assert lines[0].startswith("sd-sparse compress: warning:")
    # an opaque RGB image: no warning
    assert main(["compress", rgb, "--bottleneck", bottleneck_dir, "-o", out]) == 0
    assert "warning" not in capsys.readouterr().err


def test_huge_image_is_refused_before_encoding_with_memory_and_flags(bottleneck_dir, tmp_path, capsys, monkeypatch):
    from diffusers import AutoencoderKL

    def never(*args, **kwargs):
        raise AssertionError("the VAE must not run on a refused image")

    monkeypatch.setattr(AutoencoderKL, "encode", never)
    Image.new("RGB", (5000, 5000), (120, 30, 200)).save(tmp_path / "huge.png")  # a few KB on disk
    out = tmp_path / "huge.sdc"
    start = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        main(["compress", str(tmp_path / "huge.png"), "--bottleneck", bottleneck_dir, "-o", str(out)])
    assert time.perf_counter() - start < 60
    assert stop.value.code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("sd-sparse compress: ") and "huge.png is 4992x4992" in err
    assert "--max_pixels 4194304" in err and "--resolution" in err
    gib = float(err.split("need about ")[1].split(" GiB")[0].replace(",", ""))
    assert gib > 100  # the reference VAE's mid-block attention over 624x624 latent positions
    with pytest.raises(SystemExit) as stop:  # --resolution larger than the limit is refused the same way
        main(["compress", str(tmp_path / "huge.png"), "--bottleneck", bottleneck_dir, "--resolution", "4096"] + [
            "-o", str(out)])  # fmt: skip
    assert stop.value.code == 2 and "--max_pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["compress", str(tmp_path / "huge.png"), "--bottleneck", bottleneck_dir, "--max_pixels", "0", "-o", "x"])
    assert stop.value.code == 2 and "--max_pixels must be >= 1, got 0" in capsys.readouterr().err


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_flag_is_snake_case_in_help():
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            for option in action.option_strings:
                assert not (option.startswith("--") and "-" in option[2:]), f"sd-sparse {name} {option}"
        text = sub.format_help()
        assert "-dir" not in text and "-size" not in text and "-images" not in text, (name, text)
    helps = {name: sub.format_help() for name, sub in _subparsers(parser).items()}
    assert "--vq_atoms" in helps["demo"] and "--output_dir" in helps["demo"]
    assert "--batch_size" in helps["demo-patches"] and "--max_pixels" in helps["compress"]
    assert "--max_images" in helps["figures"] and "--num_atoms" in helps["figures"]
    assert "-o OUTPUT_DIR, --output_dir OUTPUT_DIR" in helps["decompress"]  # -o stays


@pytest.mark.parametrize(
    "argv,dest,value",
    [
        (["demo", "--vq-atoms", "8"], "vq_atoms", 8),
        (["demo-patches", "--batch-size", "4"], "batch_size", 4),
        (["evaluate", "m", "--data", "d", "--max-images", "3"], "max_images", 3),
        (["figures", "m", "--num-atoms", "5"], "num_atoms", 5),
        (["decompress", "f", "--output-dir", "o"], "output_dir", "o"),
        (["pull", "r", "--local-dir=l"], "local_dir", "l"),
    ],
)
def test_dashed_flags_still_work_with_a_deprecation_warning(argv, dest, value, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    dashed = next(a for a in argv if a.startswith("--") and "-" in a[2:]).split("=")[0]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sd-sparse {argv[0]}: warning: {dashed} is deprecated"), err
    assert f"use --{dest}" in err
    snake = [a.replace(dashed, "--" + dest) for a in argv]
    assert getattr(build_parser().parse_args(snake), dest) == value
    assert capsys.readouterr().err == ""  # the snake_case spelling: no warning


def test_required_dashed_flag_and_abbreviations_are_not_ambiguous(capsys):
    parser = build_parser()
    assert parser.parse_args(["decompress", "f", "--output", "o"]).output_dir == "o"  # abbreviation of both
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        parser.parse_args(["decompress", "f"])
    assert "-o/--output_dir" in capsys.readouterr().err


def test_image_paths_expands_folders(tmp_path):
    from sd_sparse.cli import image_paths

    paths = write_photos(tmp_path / "a" / "b", names=("coffee", "astronaut"))
    single = str(tmp_path / "single.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(single)
    assert image_paths([single, str(tmp_path / "a")]) == [single, *paths]


def test_the_jobs_moved_to_sd_sparse_commands_still_import_from_the_cli():
    from sd_sparse import cli
    from sd_sparse.commands import compress, flags

    for name in ("SnakeCaseArgumentParser", "snake_case_flags"):
        assert getattr(cli, name) is getattr(flags, name)
    for name in ("DEFAULT_MAX_PIXELS", "image_paths", "encode_memory_bytes", "check_image_size"):
        assert getattr(cli, name) is getattr(compress, name)
    assert set(cli.COMMANDS) == set(build_parser()._subparsers._group_actions[0].choices)
