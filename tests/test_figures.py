"""`sd_sparse.figures` and `sd-sparse figures`: what each figure computes, the PNGs written, bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")

from sd_sparse import DictionaryBottleneck, SparseAutoencoder, VectorQuantizer, with_bottleneck  # noqa: E402
from sd_sparse.autoencoders.scaling import decode_latents  # noqa: E402
from sd_sparse.cli import main  # noqa: E402
from sd_sparse.figures import (  # noqa: E402
    atoms_grid,
    curves_figure,
    decode_atoms,
    dictionary_atoms,
    flip_error_map,
    flip_figure,
    latent_svd,
    plot_atoms,
    plot_singular_components,
    project,
    read_metrics,
    savgol_window,
    smooth,
)
from sd_sparse.training import build_parser, train  # noqa: E402

TINY = ["--num_atoms", "32", "--sparsity", "3", "--hidden_channels", "32", "--latent_channels", "8"]
TINY += ["--train_batch_size", "4", "--resolution", "16", "--max_images", "4"]
WHITE = 255


def tiny_model(**kwargs) -> SparseAutoencoder:
    torch.manual_seed(0)
    config = dict(hidden_channels=32, latent_channels=8, num_atoms=32, sparsity=3, restart_threshold=0.0)
    return SparseAutoencoder(**{**config, **kwargs}).eval()


def panels_per_row(path_or_image, panel_size: int) -> list:
    """The number of panels in each row of a `labelled_grid`: runs of exactly `panel_size` non-white
    pixels across a pixel row (captions are shorter runs), counted once per band of panel rows."""
    array = np.asarray(Image.open(path_or_image) if isinstance(path_or_image, str) else path_or_image)
    mask = (array != WHITE).any(axis=2)
    counts = []
    for row in mask:
        padded = np.concatenate([[False], row, [False]])
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        runs = edges[1::2] - edges[::2]
        counts.append(int((runs == panel_size).sum()))
    bands, previous = [], 0
    for count in counts:
        if count and not previous:
            bands.append(count)
        previous = count
    return bands


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny DL-VAE trained 8 steps by the trainer: its saved model and `logs/metrics.jsonl`."""
    out = tmp_path_factory.mktemp("figures") / "run"
    argv = [*TINY, "--max_train_steps", "8", "--validation_steps", "4", "--checkpointing_steps", "100"]
    train(build_parser().parse_args([*argv, "--output_dir", str(out)]))
    return out


def test_atom_decode_is_the_decoder_on_the_atom_latent_most_used_first(tmp_path):
    model = tiny_model(patch_size=2)
    latents = torch.randn(2, 8, 4, 6)
    decoded = decode_atoms(model, num_atoms=5, latents=latents)
    counts = torch.bincount(model.bottleneck.encode(latents).indices.flatten(), minlength=32).double()
    assert torch.equal(decoded.indices, torch.sort(-counts, stable=True).indices[:5])
    assert torch.allclose(decoded.usage.double(), (counts / counts.sum())[decoded.indices], atol=1e-6)
    leading = model.bottleneck.encode(latents).coefficients.abs().amax(dim=1)
    assert decoded.scale == pytest.approx(float(leading.median()))
    # atom i as a [C, 2, 2] patch in the middle of a 6x6 latent of the mean, decoded by the model's decoder
    i = int(decoded.indices[1])
    latent = latents.mean(dim=(0, 2, 3)).reshape(1, 8, 1, 1).expand(1, 8, 6, 6).clone()
    latent[0, :, 2:4, 2:4] = decoded.scale * model.bottleneck.atoms[i].reshape(8, 2, 2)
    with torch.no_grad():
        expected = model.decode(latent).clamp(-1, 1)[0]
    assert torch.allclose(decoded.latents[1], latent[0], atol=1e-6)
    assert torch.allclose(decoded.images[1], expected, atol=1e-5)
    assert decoded.images.shape == (5, 3, 24, 24)
    # the grid: 5 panels, 4 per row, each captioned
    grid = atoms_grid(decoded, columns=4, panel_size=48)
    assert grid.size[0] == 4 * (48 + 4) + 4
    assert panels_per_row(grid, 48) == [4, 1]
    path = plot_atoms(model, str(tmp_path / "a" / "atoms.png"), num_atoms=6, columns=3, panel_size=40)
    assert Image.open(path).format == "PNG" and panels_per_row(path, 40) == [3, 3]


def test_codebook_atoms_and_coded_diffusers_vae_decode_through_decode_latents():
    from sd_sparse.testing import sd_vae_architecture

    vq = tiny_model(bottleneck_type="vq")
    assert torch.equal(dictionary_atoms(vq.bottleneck), vq.bottleneck.codebook)
    decoded = decode_atoms(vq, num_atoms=3)  # no latents: usage average (uniform: by index), scale 1, zeros
    assert decoded.indices.tolist() == [0, 1, 2] and decoded.scale == 1.0
    assert torch.equal(decoded.latents[2, :, 1, 1], vq.bottleneck.codebook[2])
    outside = decoded.latents[2].clone()
    outside[:, 1, 1] = 0
    assert not outside.any()  # zeros elsewhere
    # a coded diffusers VAE: the atom latent is decoded by decode_latents, without the bottleneck
    vae = sd_vae_architecture(block_out_channels=(32, 32), layers_per_block=1, sample_size=16, seed=0)
    coded = with_bottleneck(vae, DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=2).eval())
    decoded = decode_atoms(coded, num_atoms=2, scale=2.0)
    expected = decode_latents(coded, decoded.latents[:1], apply_bottleneck=False).clamp(-1, 1)
    assert torch.allclose(decoded.images[:1], expected, atol=1e-5)
    assert decoded.images.shape == (2, 3, 6, 6)
    with pytest.raises(ValueError, match="dictionary or a VQ codebook"):
        dictionary_atoms(None)


def test_singular_components_match_torch_svd_and_their_shares(tmp_path):
    torch.manual_seed(0)
    latents = torch.randn(3, 4, 5, 6) * torch.tensor([3.0, 1.0, 0.5, 0.1]).reshape(1, 4, 1, 1) + 2
    result = latent_svd(latents, k=3)
    rows = latents.permute(0, 2, 3, 1).reshape(-1, 4).double()
    _, values, vh = torch.linalg.svd(rows - rows.mean(0), full_matrices=False)
    assert torch.allclose(result.shares, values[:3] ** 2 / (values**2).sum())
    assert torch.all(result.shares[:-1] >= result.shares[1:]) and float(result.shares.sum()) <= 1
    assert torch.allclose(result.components.abs(), vh[:3].abs())
    assert torch.allclose(result.components @ result.components.T, torch.eye(3, dtype=torch.float64))
    # all C components: the projections give the centred latents back
    full = latent_svd(latents)
    assert float(full.shares.sum()) == pytest.approx(1.0)
    back = torch.einsum("nkhw,kc->nchw", project(latents, full), full.components) + full.mean.reshape(1, 4, 1, 1)
    assert torch.allclose(back, latents.double(), atol=1e-10)
    with pytest.raises(ValueError, match="`k` must be in"):
        latent_svd(latents, k=5)
    # the figure: per latent a projection row and a decoded row, 1 + k panels each
    model = tiny_model(latent_channels=4)
    path = plot_singular_components(latents, str(tmp_path / "c.png"), k=3, model=model, num_rows=2, panel_size=40)
    assert Image.open(path).format == "PNG"
    assert panels_per_row(path, 40) == [3, 4, 3, 4]  # no image given: the projection rows' first cell is empty


def test_curves_read_the_latest_timeline_and_smooth_with_savgol(tmp_path):
    from scipy.signal import savgol_filter

    rng = np.random.default_rng(0)
    log = tmp_path / "logs" / "metrics.jsonl"
    log.parent.mkdir()
    lines = [{"step": s, "loss": 1.0 / s + 0.05 * rng.standard_normal(), "lr": 1e-4} for s in range(1, 31)]
    # a resumed run from step 20 logs steps 21... again: the later lines replace them
    lines += [{"step": s, "loss": 1.0 / s, "lr": 1e-4} for s in range(21, 41)]
    lines[9]["val/psnr"] = 20.0
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    curves = read_metrics(str(tmp_path))
    steps, loss = curves["loss"]
    assert steps.tolist() == list(range(1, 41))
    assert loss[25] == pytest.approx(1.0 / 26) and loss[5] == lines[5]["loss"]
    assert curves["val/psnr"][0].tolist() == [10]
    assert savgol_window(40) == 5 and savgol_window(40, window=8) == 9 and savgol_window(2) is None
    assert np.allclose(smooth(loss), savgol_filter(loss, 5, 2))
    figure = curves_figure(curves, window=7)
    assert [axis.get_title() for axis in figure.axes] == ["loss", "lr", "val/psnr"]
    raw, smoothed = figure.axes[0].get_lines()
    assert np.array_equal(raw.get_ydata(), loss)
    assert np.allclose(smoothed.get_ydata(), savgol_filter(loss, 7, 2))
    assert np.array_equal(figure.axes[2].get_lines()[1].get_ydata(), [20.0])  # one point: not smoothed


def test_flip_error_map_holds_the_values_behind_the_magma_heatmap():
    from matplotlib import colormaps

    from sd_sparse.metrics import flip

    torch.manual_seed(0)
    reference = torch.rand(3, 24, 32) * 2 - 1
    estimate = (reference + 0.2 * torch.randn_like(reference)).clamp(-1, 1)
    mean, errors = flip_error_map(reference, estimate)
    flip_mean, heatmap = flip(reference, estimate)
    assert errors.shape == (24, 32) and mean == pytest.approx(flip_mean)
    assert errors.mean() == pytest.approx(mean, rel=1e-4)
    assert np.abs(colormaps["magma"](errors)[..., :3] - heatmap).max() < 0.02  # magma's 256-entry lookup
    figure = flip_figure(torch.stack([reference, estimate]), torch.stack([estimate, reference]))
    images, colourbar = figure.axes[:6], figure.axes[6:]
    assert len(colourbar) == 1 and colourbar[0].get_ylabel() == "FLIP error"
    assert all(axis.get_title() for axis in images)
    assert images[2].get_title() == f"FLIP error (mean {mean:.3f})"
    assert images[2].get_images()[0].get_clim() == (0.0, 1.0)


def test_cli_writes_every_figure_of_a_trained_model(run_dir, tmp_path, capsys):
    from scipy.signal import savgol_filter

    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for n in range(3):  # no pure white pixel, so panels_per_row sees whole panels
        Image.fromarray(rng.integers(0, 200, (40, 48, 3), dtype=np.uint8)).save(data / f"{n}.png")
    out = tmp_path / "figures"
    argv = ["figures", str(run_dir), "--output_dir", str(out), "--resolution", "32"]
    assert main([*argv, "--data", str(data), "--num_atoms", "12", "--components", "4"]) == 0
    names = ["atoms.png", "umap.png", "components.png", "curves.png", "flip.png"]
    assert capsys.readouterr().out.strip() == f"wrote 5 figure(s) to {out}: {', '.join(names)}"
    for name in names:
        assert Image.open(out / name).format == "PNG"
    assert panels_per_row(str(out / "atoms.png"), 64) == [8, 4]
    assert panels_per_row(str(out / "components.png"), 96) == [5, 5, 5, 5]  # image / full decode + 4 components
    # the curves are the trainer's logged scalars, one line per step
    logged = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged] == list(range(1, 9))
    steps, loss = read_metrics(str(run_dir))["loss"]
    assert np.array_equal(loss, [line["loss"] for line in logged])
    assert np.allclose(smooth(loss), savgol_filter(loss, 3, 2))
    assert read_metrics(str(run_dir))["val/psnr"][0].tolist() == [4, 8]
    # --compare: a VQ's codebook in the UMAP; one kind asked for, one written
    vq = tmp_path / "vq"
    VectorQuantizer(num_atoms=16, latent_channels=8).save_pretrained(vq)
    assert main([*argv, "--max_images", "3", "--kinds", "umap", "--compare", str(vq)]) == 0  # the photographs
    assert capsys.readouterr().out.strip() == f"wrote 1 figure(s) to {out}: umap.png"


def test_cli_bad_input_is_one_line_naming_the_argument(run_dir, tmp_path, capsys):
    from sd_sparse.testing import sd_vae_architecture

    plain = tmp_path / "vae"
    sd_vae_architecture(block_out_channels=(32, 32), layers_per_block=1, sample_size=16, seed=0).save_pretrained(plain)
    no_logs = tmp_path / "no-logs"
    tiny_model().save_pretrained(no_logs)
    cases = [
        ([str(tmp_path / "missing")], f"MODEL {tmp_path / 'missing'} is not a folder."),
        ([str(run_dir), "--data", str(tmp_path / "nowhere")], f"--data {tmp_path / 'nowhere'} is not a folder."),
        ([str(run_dir), "--kinds", "atoms", "histogram"], "--kinds: unknown kind 'histogram' (choose from"),
        ([str(plain), "--kinds", "atoms"], f"--kinds atoms: MODEL {plain} has no dictionary or codebook"),
        ([str(no_logs), "--kinds", "curves"], f"--kinds curves: no training log in {no_logs}"),
        ([str(run_dir), "--resolution", "36"], "--resolution 36 must be a positive multiple of 8 and of 4"),
        ([str(run_dir), "--kinds", "umap", "--compare", str(plain)], f"--compare {plain}: atoms need a dictionary"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["figures", *args, "--output_dir", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"sd-sparse figures: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_cli_names_the_missing_package_of_a_kind(run_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else find_spec(name, *a))
    with pytest.raises(SystemExit):
        main(["figures", str(run_dir), "--kinds", "umap", "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert err == "sd-sparse figures: --kinds umap: needs umap: pip install 'sd_sparse[plots]'.\n"


def test_make_figures_is_the_library_call_that_the_cli_makes(run_dir, tmp_path, capsys, monkeypatch):
    from sd_sparse.figures import KINDS, make_figures
    from sd_sparse.figures import cli as figures_cli

    assert figures_cli.make_figures is make_figures and figures_cli.KINDS is KINDS  # the older import path
    python = make_figures(str(run_dir), output_dir=str(tmp_path / "python"), kinds=["atoms"], resolution=32)
    assert (
        main(["figures", str(run_dir), "--output_dir", str(tmp_path / "cli"), "--kinds", "atoms", "--resolution", "32"])
        == 0
    )
    assert python == [str(tmp_path / "python" / "atoms.png")]
    assert (tmp_path / "python" / "atoms.png").read_bytes() == (tmp_path / "cli" / "atoms.png").read_bytes()
    calls = []
    monkeypatch.setattr(figures_cli, "make_figures", lambda **kwargs: calls.append(kwargs) or [])
    assert main(["figures", str(run_dir), "--kinds", "curves", "--seed", "3"]) == 0
    assert calls == [
        dict(
            model=str(run_dir),
            data=None,
            output_dir="outputs/figures",
            kinds=["curves"],
            resolution=128,
            max_images=8,
            num_atoms=64,
            components=8,
            flip_images=2,
            compare=None,
            device=None,
            seed=3,
        )
    ]
