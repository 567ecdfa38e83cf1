"""benchmarks/prior_rate.py: a smoke run on the 4-channel reference VAE with tiny settings writes its
results, codes the held-out codes exactly with the trained prior, and prints one TARGET line."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from prior_rate import main, parse_options  # noqa: E402

from sd_sparse.errors import UserError  # noqa: E402

TINY = ["--reference_channels", "4", "--crop", "64", "--fit_crops", "16", "--fit_steps", "5", "--pool", "16"]
TINY += ["--held_crop", "64", "--held_crops", "2", "--steps", "8", "--batch_size", "4", "--embedding_dim", "8"]
TINY += ["--hidden_dim", "16", "--context_size", "3", "--timing_rounds", "2", "--only", "dictionary 2×2 K=256 S=8 b=8"]


def test_a_tiny_run_writes_results_and_one_target_line(tmp_path, capsys):
    report = main([*TINY, "--output_dir", str(tmp_path), "--tag", "_smoke"])
    saved = json.loads((tmp_path / "prior_rate_smoke.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(report["rows"]))
    (row,) = saved["rows"]
    assert row["bottleneck"].startswith("dictionary") and row["bit_exact"] and row["bit_exact_other_threads"]
    assert 0 < row["prior_bits_per_position"] and 0 < row["usage_prior_bits_per_position"]
    assert row["saving"] == pytest.approx(1 - row["prior_bits_per_position"] / row["usage_prior_bits_per_position"])
    assert row["training_step_seconds"] > 0 and row["sampling_seconds_per_image"] > 0
    assert (tmp_path / "prior_samples_smoke.png").stat().st_size > 0
    assert "| dictionary 2×2 K=256 S=8 b=8 |" in (tmp_path / "prior_rate_smoke.md").read_text()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == saved["target"] and last.startswith("TARGET prior-vs-usage-prior saving=")


@pytest.mark.parametrize("flag", ["--steps", "--pool", "--held_crops"])
def test_bad_sizes_are_user_errors(flag):
    with pytest.raises(UserError, match=flag):
        parse_options([flag, "0"])


def test_unknown_bottlenecks_are_user_errors():
    with pytest.raises(UserError, match="--only"):
        parse_options(["--only", "VQ K=3"])
