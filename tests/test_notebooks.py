"""Every notebook in notebooks/ runs top to bottom offline, on tiny settings injected after its
`parameters` cell (as papermill does), and prints what it claims."""

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra: pip install 'sd_sparse[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra: pip install 'sd_sparse[notebooks]'")

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")

# the tiny settings of each notebook (every notebook must be listed: see the last test)
TINY = {
    "01_quickstart.ipynb": {"fit_steps": 20, "training_crops": 32, "num_atoms": 32},
    "02_dlvae_vs_vqvae.ipynb": {"max_train_steps": 6, "validation_steps": 3, "num_atoms": 32},
    "03_hub.ipynb": {},
    "04_rate_distortion.ipynb": {"quick": True, "families": ["VQ"]},
    "05_downstream.ipynb": {"max_train_steps": 3, "resolution": 32, "num_clusters": 3},
    "06_code_prior.ipynb": {
        "fit_steps": 20,
        "training_crops": 32,
        "num_atoms": 32,
        "prior_steps": 30,
        "batch_size": 8,
        "sample_size": 8,
    },
}


def execute(name: str, overrides: dict):
    """The notebook executed with `overrides` assigned right after its parameters cell."""
    book = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    tagged = [i for i, cell in enumerate(book.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged `parameters`"
    assignments = "\n".join(f"{key} = {value!r}" for key, value in overrides.items())
    book.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell("# injected by the tests\n" + assignments))
    client = nbclient.NotebookClient(
        book, timeout=240, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    )
    client.execute()
    return book


def printed(book) -> str:
    return "\n".join(
        output.get("text", "") for cell in book.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
    )


def test_quickstart_fits_codes_and_generates():
    text = printed(execute("01_quickstart.ipynb", TINY["01_quickstart.ipynb"]))
    assert "held out: ['chelsea', 'flower']" in text
    measured, claimed = map(
        float, re.search(r"([\d.]+) bits per latent position measured, ([\d.]+) claimed", text).groups()
    )
    assert 0 < measured <= claimed + 0.5
    assert "latent PSNR of the prompt's latents" in text


def test_dlvae_and_vqvae_train_and_are_compared():
    text = printed(execute("02_dlvae_vs_vqvae.ipynb", TINY["02_dlvae_vs_vqvae.ipynb"]))
    assert "DL-VAE trained" in text and "VQ-VAE trained" in text
    assert re.search(r"DL-VAE: final held-out PSNR [\d.]+ dB", text) and re.search(r"VQ-VAE: PSNR [\d.]+ dB", text)


def test_hub_round_trips_through_the_local_server():
    text = printed(execute("03_hub.ipynb", TINY["03_hub.ipynb"]))
    assert "bottleneck round trip exact" in text and "local folder round trip exact: True" in text
    assert "largest pixel difference: 0.0" in text
    assert "library_name: sd_sparse" in text  # the model card was pushed and pulled


def test_rate_distortion_notebook_runs_the_benchmark():
    text = printed(execute("04_rate_distortion.ipynb", TINY["04_rate_distortion.ipynb"]))
    assert "| VQ | K=16 |" in text and "| VQ | K=64 |" in text
    assert "LISTA" not in text and "| RVQ |" not in text  # only the requested family ran


def test_downstream_tasks_and_patch_clustering():
    text = printed(execute("05_downstream.ipynb", TINY["05_downstream.ipynb"]))
    for task in ["super_resolution", "inpainting"]:
        assert re.search(task + r": the degraded input itself scores [\d.]+ dB", text)
    assert len(re.findall(r"(dictionary|vq) +PSNR [\d.]+ dB +SSIM [\d.]+", text)) == 4
    assert "segmentation maps (2, 32, 32)" in text


def test_code_prior_notebook_trains_codes_exactly_and_samples():
    text = printed(execute("06_code_prior.ipynb", TINY["06_code_prior.ipynb"]))
    first, last = map(float, re.search(r"30 steps in [\d.]+ s: ([\d.]+) -> ([\d.]+) bits", text).groups())
    assert last < first  # the prior learns
    found = re.search(
        r"prior ([\d.]+), codes file with the prior ([\d.]+), with the usage prior ([\d.]+) \(-?[\d.]+% smaller\)", text
    )
    prior_bits, file_bits, usage_bits = map(float, found.groups())
    assert 0 < prior_bits < file_bits and usage_bits > 0
    assert "round trip with the prior exact: True" in text
    assert "sampled codes of latents (4, 4, 8, 8) -> images (4, 3, 64, 64)" in text


def test_every_notebook_is_tested_and_stored_without_outputs():
    names = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
    assert names == sorted(TINY)
    for name in names:
        book = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        assert all(
            not cell.get("outputs") and cell.get("execution_count") is None
            for cell in book.cells
            if cell.cell_type == "code"
        ), f"{name} is stored with outputs"
