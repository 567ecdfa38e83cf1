"""benchmarks/rate_distortion.py runs on the reference VAE and reports measured bytes (a smoke run), the
fronts of its families and the sparse front against the best baseline front."""

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from rate_distortion import GROUPS, compare, configs, main  # noqa: E402

from sd_sparse.errors import UserError  # noqa: E402

pytest.importorskip("bjontegaard")


def test_quick_run_writes_json_markdown_and_plot_with_measured_rates(tmp_path, capsys):
    header = main(
        [
            "--quick",
            "--only",
            "VQ",
            "scalar",
            "dictionary (2×2 patches)",
            "--output_dir",
            str(tmp_path),
            "--tag",
            "_smoke",
        ]
    )
    saved = json.loads((tmp_path / "rate_distortion_smoke.json").read_text())
    assert saved["rows"] == header["rows"]
    assert [r["family"] for r in saved["rows"]] == ["VQ", "VQ", "scalar", "dictionary (2×2 patches)"]
    assert [r["group"] for r in saved["rows"]] == ["baseline"] * 3 + ["sparse"]
    assert saved["held_out_photographs"] == ["chelsea", "flower"]  # the reference VAE's own held-out split
    for row in saved["rows"]:
        # the file costs at most what the bottleneck claims plus its header and checksum (entropy coding
        # against the usage prior may make it cheaper)
        assert 0 < row["bits_per_position"] < row["claimed_bits_per_position"] + 1
        assert row["bits_per_pixel"] == row["bits_per_position"] / 64 and row["image_psnr"] > 0
    comparison = saved["comparison"]
    baseline_points = {(r["bits_per_position"], r["image_psnr"]) for r in saved["rows"] if r["group"] == "baseline"}
    assert {tuple(p) for p in comparison["best_baseline_front"]} <= baseline_points
    assert len(comparison["sparse_front"]) == 1 and comparison["sparse_vs_best_baseline"]["bd_rate"] is None
    assert comparison["bd_range"] == [8.0, 128.0]
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == comparison["target"]
    assert comparison["target"].startswith("TARGET sparse-vs-best-baseline BD-rate=n/a worst-gap=")
    assert (tmp_path / "rate_distortion_smoke.png").stat().st_size > 10_000
    text = (tmp_path / "rate_distortion_smoke.md").read_text()
    assert "| VQ | K=16 |" in text and "| dictionary (2×2 patches) | sparse | 1 |" in text

    # --extend keeps the earlier rows and runs only the points they lack (here: FSQ's)
    extended = main(
        ["--quick", "--only", "VQ", "FSQ", "--extend", str(tmp_path / "rate_distortion_smoke.json")]
        + ["--output_dir", str(tmp_path), "--tag", "_extended"]
    )
    assert extended["rows"][:4] == saved["rows"] and [r["family"] for r in extended["rows"][4:]] == ["FSQ"]
    with pytest.raises(UserError, match="--extend .*another VAE or protocol"):
        main(["--quick", "--steps", "7", "--only", "FSQ", "--extend", str(tmp_path / "rate_distortion_smoke.json")])


def row(family, rate, psnr):
    return {"family": family, "group": GROUPS[family], "bits_per_position": rate, "image_psnr": psnr}


def test_compare_reads_the_sparse_front_against_the_upper_envelope_of_the_baselines():
    # baselines: PSNR = 20 + 6 log2(rate), VQ below 16 bits and RVQ above; the sparse families together
    # reach the same PSNR with 80% of the bits, except one point 2 dB behind at 32 bits
    curve = lambda r: 20 + 6 * math.log2(r)  # noqa: E731
    rows = [row("VQ", r, curve(r)) for r in (4, 8, 16)] + [row("RVQ", r, curve(r)) for r in (32, 64, 128)]
    rows += [row("VQ", 64, 40.0), row("scalar", 32, 30.0)]  # dominated: not on the envelope
    rows += [row("dictionary (per position)", 0.8 * r, curve(r)) for r in (4, 8, 16)]
    rows += [row("dictionary (2×2 patches)", 0.8 * r, curve(r)) for r in (64, 128)]
    rows += [row("LISTA (2×2 patches)", 32.0, curve(32) - 2.0)]
    comparison = compare(rows, (4, 128))
    assert comparison["best_baseline_front"] == [(r, curve(r)) for r in (4, 8, 16, 32, 64, 128)]
    assert (32.0, curve(32) - 2.0) in comparison["sparse_front"] and len(comparison["sparse_front"]) == 6
    family = comparison["families"]["dictionary (per position)"]
    assert family["points"] == 3 and family["rate_range"] == pytest.approx([3.2, 12.8])
    assert family["bd_rate"] == pytest.approx(-20, abs=1e-6)
    # the worst gap: at 32 bits, where the sparse front bends below the baselines
    gap = comparison["worst_gap"]
    assert gap["rate"] == 32.0 and gap["gap_db"] == pytest.approx(2.0)
    assert comparison["sparse_vs_best_baseline"]["bd_rate"] < 0
    target = comparison["target"]
    assert target.startswith("TARGET sparse-vs-best-baseline BD-rate=-") and " at 32.00 bits/position" in target
    # a window on the low rates only: the plain 20% saving, no point behind
    low = compare(rows, (4, 12.8))
    assert low["sparse_vs_best_baseline"]["bd_rate"] == pytest.approx(-20, abs=1e-6) and low["worst_gap"]["gap_db"] < 0


def test_the_grid_groups_every_family_and_scales_its_steps_with_the_latent_std():
    for quick in (True, False):
        points = configs(16, quick, latent_std=3.0)
        assert {p["group"] for p in points} == {"sparse", "baseline"}
        assert all(GROUPS[p["family"]] == p["group"] for p in points)
    full = {p["family"] for p in configs(4, False)}
    assert {"RVQ (k-means init)", "dictionary (4×4 patches)"} <= full
    labels = [p["label"] for p in configs(4, False) if p["family"] == "dictionary (2×2 patches)"]
    assert "K=4096 S=32 b=8" in labels
    kmeans = next(p for p in configs(4, True) if p["family"] == "RVQ (k-means init)")["build"]()
    assert kmeans.config.kmeans_iters == 10
    coded = [p for p in configs(4, True, latent_std=3.0) if p["family"] == "entropy-coded scalar"]
    assert coded and coded[0]["build"]().config.step == pytest.approx(1.5)  # a multiple of the latents' std
    # --max_atoms reads each point's K from its label: the built bottleneck has that many atoms / codes
    for point in configs(4, False):
        if point["atoms"] and point["family"] in ("VQ", "dictionary (2×2 patches)"):
            assert point["build"]().config.num_atoms == point["atoms"]
    assert {p["atoms"] for p in configs(4, False) if p["family"] in ("FSQ", "entropy-coded scalar")} == {0}


def test_unknown_families_and_bad_windows_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--bd_range"):
        main(["--quick", "--bd_range", "64", "8", "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match="--only VQQ: not a family"):
        main(["--quick", "--families", "VQQ", "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match="--max_atoms must be >= 1"):
        main(["--quick", "--max_atoms", "0", "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match="--extend .*missing.json: no such file"):
        main(["--quick", "--extend", str(tmp_path / "missing.json"), "--output_dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # nothing written
