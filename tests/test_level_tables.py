"""Fitted level tables of quantized sparse codes (`ValueQuantizationMixin.level_tables`)."""

import pytest
import torch

from sd_sparse import Codes, DictionaryBottleneck, LISTABottleneck
from sd_sparse.codec import codes_file_info

pytest.importorskip("constriction")


def latents(seed, shape=(8, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_training_forwards_count_the_levels_and_eval_does_not():
    model = DictionaryBottleneck(32, 4, 3, value_bits=5)
    assert model.level_tables() is None  # nothing fitted yet
    out = model(latents(0))
    counts, shared = model.level_counts, model.level_counts_shared
    assert counts.shape == (32, 32) and shared.shape == (32,)
    assert float(counts.sum()) == out.codes.indices.numel()  # every slot of a full support, once
    torch.testing.assert_close(counts.sum(0), shared)
    per_atom = torch.bincount(out.codes.indices.reshape(-1), minlength=32).float()
    torch.testing.assert_close(counts.sum(1), per_atom)
    tables = model.level_tables()
    assert tables.shape == (32, 32) and tables.dtype == torch.float64
    torch.testing.assert_close(tables.sum(1), per_atom.double() + model.LEVEL_PRIOR_COUNTS)
    # an unused atom's row is the shared histogram
    unused = int((per_atom == 0).nonzero()[0]) if (per_atom == 0).any() else None
    if unused is not None:
        torch.testing.assert_close(tables[unused] / tables[unused].sum(), shared.double() / shared.sum())
    before = counts.clone()
    model.eval()(latents(1))
    model.encode(latents(2))
    assert torch.equal(model.level_counts, before)
    out = model.train()(latents(3))
    batch = torch.zeros(32, 32)
    batch.index_put_(
        (out.codes.indices.reshape(-1), out.codes.levels.reshape(-1).long() + 16), torch.tensor(1.0), accumulate=True
    )
    torch.testing.assert_close(model.level_counts, model.LEVEL_COUNT_DECAY * before + batch)


def sparse_latents(atoms, seed, batch=8, size=8):
    """Latents made of 3 of the model's own atoms per position, atom k's coefficients with spread 0.2 · 1.15^k:
    atoms whose levels follow distributions of their own."""
    g = torch.Generator().manual_seed(seed)
    n, (k, dim) = batch * size * size, atoms.shape
    support = torch.rand(n, k, generator=g).argsort(1)[:, :3]
    spread = 0.2 * 1.15 ** torch.arange(k, dtype=torch.float32)
    values = torch.randn(n, 3, generator=g) * spread[support]
    vectors = (values[:, :, None] * atoms[support]).sum(1)
    return vectors.reshape(batch, size, size, dim).permute(0, 3, 1, 2).contiguous()


def test_per_atom_tables_code_shorter_than_adaptive_and_round_trip():
    torch.manual_seed(0)
    # without an optimizer (and restarts) the atoms stay fixed; one clipping scale for all atoms
    model = DictionaryBottleneck(32, 16, 3, value_bits=6, value_scale="dictionary", restart_threshold=0.0)
    atoms = model.atoms.detach()
    for step in range(20):
        model(sparse_latents(atoms, step))
    model.eval()
    codes = model.encode(sparse_latents(atoms, 100, batch=16))
    data = codes.to_bytes(model)
    info = codes_file_info(data)
    assert info.value_model == "levels, fitted"
    back = Codes.from_bytes(data, model)
    assert torch.equal(back.levels, codes.levels) and torch.equal(back.indices, codes.indices)
    assert torch.equal(model.decode(back), model.decode(codes))
    # the same codes without the tables (what the container wrote before): adaptive, and longer
    model.level_counts_shared.zero_()
    model.level_counts.zero_()
    without = codes_file_info(codes.to_bytes(model))
    assert without.value_model == "levels, adaptive"
    saved = 8 * (without.num_bytes - info.num_bytes) / codes.indices.numel()
    assert saved > 0.2  # bits per level


def test_lista_fits_level_tables_and_files_round_trip():
    torch.manual_seed(0)
    model = LISTABottleneck(32, 4, num_blocks=2, sparsity=3, value_bits=6)
    for step in range(10):
        model(latents(step))
    model.eval()
    assert model.level_tables().shape == (32, 64)
    codes = model.encode(latents(100, shape=(16, 4, 16, 16)))
    data = codes.to_bytes(model)
    back = Codes.from_bytes(data, model)
    assert torch.equal(back.levels, codes.levels) and torch.equal(model.decode(back), model.decode(codes))
    assert codes_file_info(data).value_model in ("levels, fitted", "levels, adaptive")


def test_restarted_atoms_forget_their_level_counts():
    model = DictionaryBottleneck(32, 4, 3, value_bits=5, restart_threshold=1.0)
    model(latents(0))
    assert model.restart_pending.any() and model.level_counts[model.restart_pending].sum() > 0
    pending = model.restart_pending.clone()
    model._apply_restarts()
    assert model.level_counts[pending].sum() == 0 and model.level_counts[~pending].sum() > 0


def test_large_value_bits_keep_no_tables():
    model = DictionaryBottleneck(32, 4, 3, value_bits=12)
    model(latents(0))
    assert not hasattr(model, "level_counts") and model.level_tables() is None
    codes = model.eval().encode(latents(1))
    assert torch.equal(Codes.from_bytes(codes.to_bytes(model), model).levels, codes.levels)


def test_empty_level_counts_leave_the_state_digest_unchanged():
    """A checkpoint saved before the level counts existed loads with them empty: same digest, same files."""
    model = DictionaryBottleneck(32, 4, 3, value_bits=5).eval()
    digest = model.coding_state_digest()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("level_counts")}
    old = DictionaryBottleneck(32, 4, 3, value_bits=5).eval()
    old.load_state_dict(state, strict=False)
    assert old.coding_state_digest() == digest
    model.train()(latents(0))
    assert model.coding_state_digest() != digest
