"""The codes container with a model's fitted tables (index, level and residual tables): bit-exact, shorter
when the tables fit, and exactly the old bytes for models without them."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from sd_sparse import Codes, DictionaryBottleneck, VectorQuantizer
from sd_sparse.codec import codes_file_info, entropy
from sd_sparse.codec.file_format import VERSION, VERSION_EXTENDED

pytest.importorskip("constriction")


def latents(seed=0, shape=(4, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class TabledVQ(VectorQuantizer):
    """A VQ whose indices follow fixed tables (one row per slot)."""

    tables = None

    def index_tables(self):
        return self.tables


class TabledDictionary(DictionaryBottleneck):
    """A quantized dictionary with fixed level tables and, optionally, a residual."""

    levels_table = None
    residual_table = None

    def level_tables(self):
        return self.levels_table

    def residual_tables(self):
        return self.residual_table

    @property
    def codes_residual(self):
        return self.residual_table is not None


def test_index_tables_code_each_slot_and_round_trip():
    torch.manual_seed(0)
    model = TabledVQ(64, 4, restart_threshold=0.0).eval()
    frequent = torch.tensor([3, 17, 40, 41])
    picks = frequent[torch.randint(0, 4, (4 * 8 * 8,), generator=torch.Generator().manual_seed(1))]
    z = model.codebook.detach()[picks].reshape(4, 8, 8, 4).permute(0, 3, 1, 2).contiguous()
    codes = model.encode(z)
    plain = codes.to_bytes(model)
    assert plain[4] == VERSION  # no tables: a version-1 file
    tables = np.zeros((1, 64))
    tables[0, frequent.numpy()] = 1.0
    model.tables = tables
    data = codes.to_bytes(model)
    info = codes_file_info(data)
    assert data[4] == VERSION_EXTENDED and info.index_model == "slots, tables"
    payload = info.num_bytes - info.header_bytes
    assert payload < 0.4 * (codes_file_info(plain).num_bytes - codes_file_info(plain).header_bytes)
    # 2 bits per index (and the uniform share mixed in) up to the coder's flush
    assert payload * 8 <= picks.numel() * (2 + 0.02) + 64
    back = Codes.from_bytes(data, model)
    assert torch.equal(back.indices, codes.indices)
    # tables that fit worse than the uniform model are not used
    model.tables = np.ones((1, 64))
    model.tables[0, frequent.numpy()] = 1e-9
    assert codes_file_info(codes.to_bytes(model)).index_model != "slots, tables"
    model.tables = np.ones((2, 64))
    with pytest.raises(ValueError, match=r"index_tables must be finite float tables \[1, 64\]"):
        codes.to_bytes(model)


def trained_dictionary(cls=TabledDictionary, **kwargs):
    torch.manual_seed(0)
    model = cls(32, 4, 3, value_bits=5, **kwargs)
    for step in range(3):
        model(latents(step))
    return model.eval()


@pytest.mark.parametrize("rows", [1, 32])
def test_level_tables_are_kept_when_shorter_and_round_trip(rows):
    model = trained_dictionary()
    codes = model.encode(latents(10, shape=(8, 4, 16, 16)))
    before = codes_file_info(codes.to_bytes(model))
    low = -16
    counts = np.full((rows, 32), 0.0)
    levels = codes.levels.reshape(-1).long().numpy() - low  # every slot is used (full supports)
    atoms = codes.indices.reshape(-1).numpy()
    np.add.at(counts, (atoms if rows > 1 else np.zeros_like(atoms), levels), 1.0)
    model.levels_table = counts
    data = codes.to_bytes(model)
    info = codes_file_info(data)
    assert info.value_model == "levels, fitted" and info.num_bytes < before.num_bytes
    back = Codes.from_bytes(data, model)
    for field in ("indices", "coefficients", "levels"):
        assert torch.equal(getattr(back, field), getattr(codes, field)), field
    assert torch.equal(model.decode(back), model.decode(codes))
    # a uniform table never beats the fixed width: the writer keeps the old choice
    model.levels_table = np.ones((rows, 32))
    assert codes_file_info(codes.to_bytes(model)).value_model == before.value_model


def test_level_tables_of_another_shape_are_refused():
    model = trained_dictionary()
    codes = model.encode(latents(10))
    model.levels_table = np.ones((5, 32))
    with pytest.raises(ValueError, match=r"level_tables must be finite float tables \[32, 32\]"):
        codes.to_bytes(model)


def test_residual_levels_round_trip_and_cost_their_entropy():
    model = trained_dictionary()
    codes = model.encode(latents(11, shape=(8, 4, 16, 16)))
    g = torch.Generator().manual_seed(0)
    residual = torch.randint(-1, 2, (codes.indices.shape[0], 4), generator=g).to(torch.int16)
    residual[:, 0] = 0  # dimension 0 is always 0: costs (almost) nothing against its table
    model.residual_table = np.tile(np.array([[0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]]), (4, 1))
    model.residual_table[0] = [0, 0, 0, 1, 0, 0, 0]
    with_residual = dataclasses.replace(codes, residual=residual)
    data = with_residual.to_bytes(model)
    info = codes_file_info(data)
    assert info.residual_model == "levels, fitted"
    model.residual_table = None
    extra_bits = 8 * (info.num_bytes - codes_file_info(codes.to_bytes(model)).num_bytes)
    ideal = residual.shape[0] * 3 * math.log2(3)
    assert ideal * 0.98 <= extra_bits <= ideal * 1.03 + 64
    model.residual_table = np.tile(np.array([[0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]]), (4, 1))
    model.residual_table[0] = [0, 0, 0, 1, 0, 0, 0]
    back = Codes.from_bytes(data, model)
    assert torch.equal(back.residual, residual) and torch.equal(back.indices, codes.indices)
    # a level outside the tables' alphabet is refused
    bad = residual.clone()
    bad[0, 1] = 4
    with pytest.raises(ValueError, match=r"`codes.residual` must be \[\d+, 4\] levels in \[-3, 3\]"):
        dataclasses.replace(codes, residual=bad).to_bytes(model)


def test_codes_with_a_residual_save_load_and_slice(tmp_path):
    model = trained_dictionary()
    codes = model.encode(latents(12))
    residual = torch.arange(codes.indices.shape[0] * 4, dtype=torch.int16).reshape(-1, 4) % 5 - 2
    codes = dataclasses.replace(codes, residual=residual)
    codes.save(tmp_path / "c.safetensors")
    loaded = Codes.load(tmp_path / "c.safetensors")
    assert torch.equal(loaded.residual, residual) and loaded.residual.dtype == torch.int16
    per_image = codes.indices.shape[0] // 4
    assert torch.equal(codes[1].residual, residual[per_image : 2 * per_image])
    with pytest.raises(ValueError, match="`residual` must be integer levels"):
        dataclasses.replace(codes, residual=residual.float())


def test_table_weights_are_normalised_mixed_and_never_zero():
    weights = entropy.table_weights(np.array([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]]))
    assert np.allclose(weights.sum(1), 1.0) and (weights > 0).all()
    assert np.allclose(weights[1], 1 / 3)
    assert weights[0, 1] == pytest.approx((1 - entropy.TABLE_MIX) * 0.75 + entropy.TABLE_MIX / 3)
