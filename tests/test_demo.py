"""`sd-sparse demo-patches` on tiny settings, and the command line's user errors."""

import pytest

from sd_sparse.cli import main
from sd_sparse.demo import run_demo


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
        (["demo-patches", "--steps", "1", "--test-image", "nope"], "sd-sparse demo-patches: unknown test images"),
        (["push", "/no/such/folder", "user/x"], "sd-sparse push: folder /no/such/folder does not exist."),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
