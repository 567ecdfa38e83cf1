"""The demos on tiny settings: `sd-sparse demo` (the reference VAE's latents, the grid, the text, user images,
threads, quiet logs) and `sd-sparse demo-patches`, and the command line's user errors."""

import numpy as np
import pytest
from PIL import Image

from sd_sparse.cli import main
from sd_sparse.demo import REFERENCE_HELD_OUT, choose_num_threads, run_demo, run_stable_diffusion_demo
from sd_sparse.evaluation.image_grid import MAGMA

PANEL, GAP, COLUMNS = 256, 6, 6  # the demo grid's layout: original, VAE decode, VQ, dictionary, 2 FLIP maps
TINY = ["--steps", "20", "--vq_atoms", "64", "--atoms", "32", "--sparsity", "2", "--value_bits", "4"]
TINY += ["--train_crops", "8", "--crop_size", "128"]
TQDM_MARKS = ("it/s]", "s/it]", "%|", "Loading pipeline components", "Loading weights")


def demo_grid_rows(path):
    """The grid as an int array and the top of each row's panels, found from the colour bar drawn right of every
    row; checks that each bar is the FLIP colour map from 1 (top) to 0 (bottom) and carries its "1" and "0"."""
    grid = np.asarray(Image.open(path).convert("RGB")).astype(int)
    bar_x = COLUMNS * (PANEL + GAP) + GAP
    assert grid.shape[1] > bar_x + 20, "no room right of the panels for the colour bar"
    column = grid[:, bar_x + 8]
    magma = {tuple(c) for c in MAGMA.tolist()}
    in_bar = np.array([tuple(p) in magma for p in column.tolist()])
    starts = [
        y for y in range(len(in_bar) - PANEL + 1) if in_bar[y : y + PANEL].all() and (y == 0 or not in_bar[y - 1])
    ]
    assert starts, "no colour bar"
    for y in starts:
        assert tuple(column[y]) == tuple(MAGMA[255]) and tuple(column[y + PANEL - 1]) == tuple(MAGMA[0])
        labels = grid[:, bar_x + 16 + GAP : bar_x + 16 + GAP + 12].min(axis=(1, 2))
        assert labels[y : y + 16].min() < 100 and labels[y + PANEL - 18 : y + PANEL].min() < 100, "no 1 / 0 labels"
    return grid, starts


def assert_no_empty_cell(grid, rows):
    for r, y in enumerate(rows):
        for c in range(COLUMNS):
            x = GAP + c * (PANEL + GAP)
            cell = grid[y : y + PANEL, x : x + PANEL]
            assert cell.std() > 2, f"the cell in row {r}, column {c} is empty"


def test_demo_codes_the_held_out_photographs_and_says_what_the_vae_is(tmp_path, capfd):
    assert main(["demo", *TINY, "--output_dir", str(tmp_path)]) == 0
    out, err = capfd.readouterr()
    assert not any(mark in err for mark in TQDM_MARKS), err[-2000:]  # quiet: no progress bars, no loader notices
    assert "the reference VAE (trained here)" in out and "held out: chelsea, flower" in out
    assert "threads: 1 thread" in out or "threads: 2 threads" in out
    assert "Demo time:" in out.splitlines()[-1]
    results = (tmp_path / "results.md").read_text()
    # what the VAE is, plainly: small, trained here, 4 channels, f8, weak
    for fact in ["AutoencoderKL", "4 latent channels", "downsampling f8", "trained in this repository", "weak"]:
        assert fact in results
    assert "VAE's own decode against the original" in results and "Demo time:" in results
    # the random-weight U-Net's picture is a wiring check in text, not in the grid
    assert "Wiring check, not a result" in results and "blue sunflower" in results
    grid, rows = demo_grid_rows(tmp_path / "grid.png")
    assert len(rows) == len(REFERENCE_HELD_OUT)  # one row per held-out photograph, no prompt row
    assert_no_empty_cell(grid, rows)
    assert (tmp_path / "vq" / "config.json").is_file() and (tmp_path / "dictionary" / "config.json").is_file()


def _write_photo(path, seed):
    """A 200 x 160 PNG with smooth colour, edges and texture, as a photograph has."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:160, 0:200] / 160.0
    image = np.stack([np.sin(3 * x + seed), np.cos(2 * y), np.sin(5 * x * y)], axis=-1) * 0.35 + 0.5
    image[(x - 0.6) ** 2 + (y - 0.5) ** 2 < 0.08] = [0.9, 0.2, 0.1]
    image += rng.normal(0, 0.03, image.shape)
    Image.fromarray((image.clip(0, 1) * 255).astype(np.uint8)).save(path)
    return str(path)


def test_demo_codes_the_users_own_images(tmp_path, capfd):
    files = [_write_photo(tmp_path / "mine_a.png", 0), _write_photo(tmp_path / "mine_b.png", 1)]
    output = tmp_path / "out"
    assert main(["demo", *TINY, "--test_images", *files, "--output_dir", str(output)]) == 0
    out, err = capfd.readouterr()
    assert "held out: mine_a.png, mine_b.png" in out and not any(mark in err for mark in TQDM_MARKS)
    results = (output / "results.md").read_text()
    assert "mine_a.png (your image, centre square scaled to 128 px)" in results
    grid, rows = demo_grid_rows(output / "grid.png")
    assert len(rows) == 2
    assert_no_empty_cell(grid, rows)
    # the original cell is the user's picture: its red disc survives the centre crop and scaling
    original = grid[rows[0] : rows[0] + PANEL, GAP : GAP + PANEL]
    assert ((original[..., 0] > 200) & (original[..., 1] < 80)).mean() > 0.05


def test_demo_with_a_model_shows_the_prompt_row(tmp_path, capfd):
    from sd_sparse.testing import tiny_stable_diffusion_path

    model = tiny_stable_diffusion_path()  # stands in for real weights: the code path of --model
    metrics = run_stable_diffusion_demo(
        model=model,
        steps=5,
        vq_atoms=16,
        num_atoms=16,
        sparsity=2,
        value_bits=4,
        crop_size=128,
        train_crops=8,
        resolution=64,
        num_inference_steps=2,
        output_dir=str(tmp_path),
    )
    for m in metrics.values():
        assert np.isfinite(m["prompt_latent_psnr"]) and 0 <= m["prompt_flip"] <= 1
    out, _ = capfd.readouterr()
    assert f"VAE: the VAE of {model}" in out
    results = (tmp_path / "results.md").read_text()
    assert f"generated by {model}" in results and "Wiring check" not in results
    grid, rows = demo_grid_rows(tmp_path / "grid.png")
    assert len(rows) == len(REFERENCE_HELD_OUT) + 1  # the photographs, then the prompt
    assert_no_empty_cell(grid, rows)


def test_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("sd_sparse.demo.environment.physical_cores", lambda: 2)  # moved from sd_sparse.demo
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (6.0, 5.0, 4.0))
    assert choose_num_threads()[0] == 1  # busy cores: one thread (measured several times faster there)
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    assert choose_num_threads()[0] == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert choose_num_threads()[0] == 1
    assert choose_num_threads(3) == (3, "--num_threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_num_threads()[1] == "OMP_NUM_THREADS"
    with pytest.raises(ValueError, match="`num_threads` must be >= 1"):
        choose_num_threads(0)


def test_demo_dictionary_beats_vq_and_writes_outputs(tmp_path, capsys):
    results = run_demo(steps=40, num_atoms=64, sparsity=4, batch_size=256, output_dir=str(tmp_path))
    dictionary, vq = results
    assert dictionary.psnr > vq.psnr + 3
    assert 1 < vq.perplexity <= 64 and 1 < dictionary.perplexity <= 64
    assert vq.bits_per_vector == 6 and dictionary.bits_per_vector == 4 * (6 + 16)
    assert (tmp_path / "reconstructions.png").stat().st_size > 10_000
    table = (tmp_path / "results.md").read_text()
    assert "| dictionary (Batch-OMP, S=4) |" in table and "| vector quantization (EMA) |" in table
    assert "PSNR (dB)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["demo-patches", "--steps", "0"], "sd-sparse demo-patches: `steps` must be >= 1, got 0."),
        (["demo-patches", "--steps", "1", "--test_image", "nope"], "sd-sparse demo-patches: unknown test images"),
        (["demo", "--test_images", "nope.png"], "sd-sparse demo: unknown test images ['nope.png']"),
        (["demo", "--train_crops", "0"], "sd-sparse demo: `train_crops` must be >= 1, got 0."),
        (["demo", "--num_threads", "0"], "sd-sparse demo: `num_threads` must be >= 1, got 0."),
        (["push", "/no/such/folder", "user/x"], "sd-sparse push: folder /no/such/folder does not exist."),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
