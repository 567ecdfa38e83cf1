"""`DictionaryBottleneck(residual_step=...)`: the sparse code plus an entropy-coded residual."""

import math

import pytest
import torch

from sd_sparse import Codes, DictionaryBottleneck
from sd_sparse.codec import codes_file_info
from sd_sparse.errors import UserError

pytest.importorskip("constriction")


def latents(seed, shape=(8, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def trained(steps=10, **kwargs):
    torch.manual_seed(0)
    model = DictionaryBottleneck(**{"num_atoms": 32, "latent_channels": 4, "sparsity": 2, "value_bits": 5, **kwargs})
    for step in range(steps):
        model(latents(step))
    return model.eval()


def psnr(a, b):
    a, b = a.detach(), b.detach()
    return 10 * math.log10(float(b.square().mean()) / float((a - b).square().mean()))


@pytest.mark.parametrize(
    "kwargs", [dict(residual_step=0.1), dict(residual_step=0.2, patch_size=2), dict(residual_step=0.1, value_bits=None)]
)
def test_files_round_trip_bit_for_bit(kwargs):
    model = trained(**kwargs)
    z = latents(100)
    out = model(z)
    assert out.codes.residual.shape == (out.codes.indices.shape[0], model.vector_dim)
    assert out.codes.residual.dtype == torch.int16
    data = out.codes.to_bytes(model)
    info = codes_file_info(data)
    assert info.residual_model == "levels, fitted"
    back = Codes.from_bytes(data, model)
    for field in ("indices", "coefficients", "levels", "residual"):
        ours, theirs = getattr(back, field), getattr(out.codes, field)
        assert (ours is None) == (theirs is None) and (ours is None or torch.equal(ours, theirs)), field
    assert torch.equal(model.decode(back), out.latents)
    assert torch.equal(model.decode(model.encode(z)), out.latents)


def test_the_residual_raises_psnr_at_the_cost_of_bytes():
    z = latents(200)
    plain = trained()
    with_residual = trained(residual_step=0.1)
    # the same sparse code (the residual changes nothing before it), plus the residual
    a, b = plain.encode(z), with_residual.encode(z)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.levels, b.levels)
    error = (z - with_residual.decode(b)).detach()
    assert float(error.abs().max()) <= 0.05 + 1e-6  # half a step, nothing clamped
    assert psnr(with_residual.decode(b), z) > psnr(plain.decode(a), z) + 10
    plain_bytes, residual_bytes = len(a.to_bytes(plain)), len(b.to_bytes(with_residual))
    assert residual_bytes > plain_bytes
    # the residual costs about its fitted entropy
    info = codes_file_info(b.to_bytes(with_residual))
    extra_bits = 8 * (residual_bytes - plain_bytes)
    predicted = (with_residual.bits_per_position - plain.bits_per_position) * info.positions
    assert extra_bits == pytest.approx(predicted, rel=0.05)


def test_straight_through_output_is_the_full_reconstruction():
    model = trained(residual_step=0.1).train()
    z = latents(300).requires_grad_(True)
    out = model(z)
    upstream = torch.randn_like(z)
    (out.latents * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)
    # up to the rounding of z + (ẑ − z): the full reconstruction, residual included
    torch.testing.assert_close(out.latents.detach(), model.eval().decode(out.codes), rtol=0, atol=1e-6)


def test_training_fits_the_residual_histograms_and_clamps():
    model = DictionaryBottleneck(32, 4, 2, residual_step=0.01, residual_max_level=3)
    assert model.residual_tables().shape == (4, 7) and not model.residual_tables().any()
    out = model(latents(0))
    assert int(out.codes.residual.abs().max()) == 3  # clamped
    tables = model.residual_tables()
    assert float(tables.sum()) == out.codes.residual.numel()
    model.eval()(latents(1))
    assert torch.equal(model.residual_tables(), tables)  # frozen in eval


def test_configs_without_a_residual_keep_their_fingerprint():
    plain = DictionaryBottleneck(32, 4, 2, value_bits=5)
    explicit = DictionaryBottleneck(32, 4, 2, value_bits=5, residual_step=None, residual_max_level=None)
    assert plain.config_fingerprint == explicit.config_fingerprint
    assert (
        DictionaryBottleneck(32, 4, 2, value_bits=5, residual_step=0.1).config_fingerprint != plain.config_fingerprint
    )
    assert plain.residual_tables() is None and not plain.codes_residual
    assert "residual_histograms.counts" not in plain.state_dict()


def test_codes_with_and_without_a_residual_are_not_mixed():
    plain, with_residual = trained(), trained(residual_step=0.1)
    with pytest.raises(ValueError, match="made by DictionaryBottleneck"):
        plain.decode(with_residual.encode(latents(5)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(residual_step=0.0), r"`residual_step` must be None \(no residual\) or in \(0, None\)|`residual_step`"),
        (dict(residual_step=-1.0), "`residual_step`"),
        (dict(residual_step=0.1, residual_max_level=0), "`residual_max_level`"),
        (dict(residual_step=0.1, residual_max_level=40000), "`residual_max_level`"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(UserError, match=match):
        DictionaryBottleneck(32, 4, 2, **kwargs)


def test_save_and_load_keep_the_residual_model(tmp_path):
    model = trained(residual_step=0.1)
    model.save_pretrained(tmp_path)
    loaded = DictionaryBottleneck.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.residual_tables(), model.residual_tables())
    codes = model.encode(latents(7))
    assert torch.equal(loaded.decode(Codes.from_bytes(codes.to_bytes(model), loaded)), model.decode(codes))
    codes.save(tmp_path / "codes.safetensors")
    assert torch.equal(Codes.load(tmp_path / "codes.safetensors").residual, codes.residual)
