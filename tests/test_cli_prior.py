"""`sd-sparse compress / decompress --prior DIR`: codes files coded with a learned prior over the codes
(`CodePrior`) decode to the same images as the usage-prior files, their header names the prior, and every
misuse is one line and exit status 2."""

import numpy as np
import pytest
import torch
from PIL import Image

from sd_sparse import DictionaryBottleneck
from sd_sparse.cli import main
from sd_sparse.codec.file_format import codes_file_info
from sd_sparse.priors import CodePrior


def write_photos(folder, names=("astronaut", "coffee")):
    from sd_sparse.data import sample_photographs

    folder.mkdir(parents=True, exist_ok=True)
    photos = sample_photographs()
    for name in names:
        Image.fromarray(photos[name][:64, :64]).save(folder / f"{name}.png")
    return [str(folder / f"{name}.png") for name in names]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Folders of a bottleneck, a tiny untrained prior over its codes, a second prior with other weights, a
    prior of another bottleneck; and two photographs."""
    root = tmp_path_factory.mktemp("prior_cli")
    torch.manual_seed(0)
    bottleneck = DictionaryBottleneck(64, 4, 4, patch_size=2, value_bits=5).eval()
    bottleneck.save_pretrained(root / "bottleneck")
    CodePrior.from_bottleneck(bottleneck, embedding_dim=8, hidden_dim=16).save_pretrained(root / "prior")
    CodePrior.from_bottleneck(bottleneck, embedding_dim=8, hidden_dim=16).save_pretrained(root / "other_weights")
    other = DictionaryBottleneck(32, 4, 4, patch_size=2, value_bits=5).eval()
    CodePrior.from_bottleneck(other, embedding_dim=8, hidden_dim=16).save_pretrained(root / "other_bottleneck")
    folders = {name: str(root / name) for name in ("bottleneck", "prior", "other_weights", "other_bottleneck")}
    return folders, write_photos(root / "photos")


def user_error(argv, capsys) -> str:
    """The one line a user error prints (exit status 2, no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_prior_coded_file_decodes_to_the_same_images_and_names_the_prior(saved, tmp_path, capsys):
    folders, paths = saved
    plain, with_prior = str(tmp_path / "plain.sdc"), str(tmp_path / "prior.sdc")
    assert main(["compress", *paths, "--bottleneck", folders["bottleneck"], "-o", plain]) == 0
    assert "coded with the prior" not in capsys.readouterr().out
    flags = ["--bottleneck", folders["bottleneck"], "--prior", folders["prior"]]
    assert main(["compress", *paths, *flags, "-o", with_prior]) == 0
    out = capsys.readouterr().out
    data = open(with_prior, "rb").read()
    info, usage = codes_file_info(data), codes_file_info(open(plain, "rb").read())
    prior = CodePrior.from_pretrained(folders["prior"])
    assert info.index_model == "prior" and info.prior_digest == prior.coding_state_digest()
    assert usage.index_model != "prior" and usage.prior_digest is None
    # the printed line says the prior was used and what the file costs without it
    assert f"{info.num_bytes} bytes = {info.bits_per_position:.2f} bits per latent position" in out
    assert f"coded with the prior {folders['prior']} (state {info.prior_digest})" in out
    assert f"without it {usage.num_bytes} bytes = {usage.bits_per_position:.2f} bits per latent position" in out

    assert main(["decompress", plain, "--bottleneck", folders["bottleneck"], "-o", str(tmp_path / "a")]) == 0
    assert main(["decompress", with_prior, *flags, "-o", str(tmp_path / "b")]) == 0
    for stem_a, stem_b in [("plain_000", "prior_000"), ("plain_001", "prior_001")]:
        a = np.asarray(Image.open(tmp_path / "a" / f"{stem_a}.png"))
        b = np.asarray(Image.open(tmp_path / "b" / f"{stem_b}.png"))
        assert a.shape == (64, 64, 3) and np.array_equal(a, b)  # bit-identical decode
    # a usage-prior file decodes with or without --prior
    assert main(["decompress", plain, *flags, "-o", str(tmp_path / "c")]) == 0
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "c" / "plain_000.png")),
        np.asarray(Image.open(tmp_path / "a" / "plain_000.png")),
    )


def test_prior_misuse_is_one_line_and_exit_2(saved, tmp_path, capsys):
    folders, paths = saved
    bottleneck = ["--bottleneck", folders["bottleneck"]]
    coded = str(tmp_path / "coded.sdc")
    assert main(["compress", paths[0], *bottleneck, "--prior", folders["prior"], "-o", coded]) == 0
    out_dir = str(tmp_path / "out")
    # a prior-coded file without --prior: the message says which flag decodes it
    err = user_error(["decompress", coded, *bottleneck, "-o", out_dir], capsys)
    assert err.startswith("sd-sparse decompress: ") and "learned prior" in err and "--prior DIR" in err
    # the same bottleneck, a prior with other weights
    err = user_error(["decompress", coded, *bottleneck, "--prior", folders["other_weights"], "-o", out_dir], capsys)
    assert "coded with another prior" in err
    # a prior of another bottleneck: refused before anything is encoded or written
    refused = str(tmp_path / "refused.sdc")
    for command, target in [("compress", paths[0]), ("decompress", coded)]:
        output = ["-o", refused] if command == "compress" else ["-o", out_dir]
        err = user_error([command, target, *bottleneck, "--prior", folders["other_bottleneck"], *output], capsys)
        assert f"--prior {folders['other_bottleneck']}: the prior models the codes of DictionaryBottleneck" in err
    # a folder that does not exist, and one that holds another model
    missing = str(tmp_path / "nowhere")
    err = user_error(["compress", paths[0], *bottleneck, "--prior", missing, "-o", refused], capsys)
    assert f"--prior {missing}: no CodePrior config found" in err
    err = user_error(["decompress", coded, *bottleneck, "--prior", folders["bottleneck"], "-o", out_dir], capsys)
    assert f"--prior {folders['bottleneck']} holds a DictionaryBottleneck, not a CodePrior" in err
    assert not (tmp_path / "refused.sdc").exists() and not (tmp_path / "out").exists()
