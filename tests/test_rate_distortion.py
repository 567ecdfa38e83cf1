"""benchmarks/rate_distortion.py runs on the reference VAE and reports measured bytes (a smoke run)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from rate_distortion import main  # noqa: E402


def test_quick_run_writes_json_markdown_and_plot_with_measured_rates(tmp_path):
    header = main(["--quick", "--only", "VQ", "scalar", "--output_dir", str(tmp_path), "--tag", "_smoke"])
    saved = json.loads((tmp_path / "rate_distortion_smoke.json").read_text())
    assert saved["rows"] == header["rows"] and [r["family"] for r in saved["rows"]] == ["VQ", "VQ", "scalar"]
    assert saved["held_out_photographs"] == ["chelsea", "flower"]  # the reference VAE's own held-out split
    for row in saved["rows"]:
        # the file costs at most what the bottleneck claims plus its header and checksum (entropy coding
        # against the usage prior may make it cheaper)
        assert 0 < row["bits_per_position"] < row["claimed_bits_per_position"] + 1
        assert row["bits_per_pixel"] == row["bits_per_position"] / 64 and row["image_psnr"] > 0
    assert (tmp_path / "rate_distortion_smoke.png").stat().st_size > 10_000
    assert "| VQ | K=16 |" in (tmp_path / "rate_distortion_smoke.md").read_text()
