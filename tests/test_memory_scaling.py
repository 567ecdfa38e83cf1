"""Memory does not grow with the dataset: peak RSS of a short run on 50 and on 500 images (the benchmark
benchmarks/memory_scaling.py measures 300 against 3000)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from memory_scaling import growth, measure  # noqa: E402

SIZE = 128
FAST = {  # small models and few steps: the data pipeline is what is measured
    "train_dlvae": [
        "--hidden_channels",
        "32",
        "--num_atoms",
        "64",
        "--max_train_steps",
        "2",
        "--validation_steps",
        "2",
    ],
    "fit_sd_bottleneck": ["--max_train_steps", "2", "--no_flip", "--max_eval_images", "8"],
}


@pytest.mark.parametrize("script", ["train_dlvae", "fit_sd_bottleneck"])
def test_peak_rss_is_flat_in_dataset_size(tmp_path, script):
    rows = measure([50, 500], SIZE, 0, [script], str(tmp_path), extra_args=FAST[script])
    assert abs(growth(rows, script)) <= 0.10, rows
    # the check has power: holding the 450 extra images decoded (float32) would add more than 10%
    peak = min(r["peak_rss_mb"] for r in rows)
    assert 450 * 3 * SIZE**2 * 4 / 2**20 > 0.10 * peak
