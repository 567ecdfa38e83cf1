"""Rate–distortion pursuit of `DictionaryBottleneck` (`rate_lambda`): prefixes of the OMP path chosen by cost."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from sd_sparse import DictionaryBottleneck, batch_omp
from sd_sparse.bottlenecks import patchify
from sd_sparse.bottlenecks.rate_pursuit import elementary_symmetric, set_bits_model
from sd_sparse.codec import codes_file_info
from sd_sparse.codec.codes import Codes
from sd_sparse.codec.entropy import prior_weights, set_table
from sd_sparse.errors import UserError

K, C, S = 64, 4, 6


def latents(seed=0, shape=(4, C, 16, 16)):
    # low-rank structure plus noise, so that later atoms matter less than the first
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape[0], 2, *shape[2:], generator=g)
    mix = torch.randn(C, 2, generator=torch.Generator().manual_seed(99))
    return torch.einsum("cj,bjhw->bchw", mix, base) + 0.3 * torch.randn(*shape, generator=g)


def make(rate_lambda=None, value_bits=4, **kwargs):
    torch.manual_seed(0)
    options = dict(patch_size=2, value_bits=value_bits, value_refit=True, init_from_data=True)
    options.update(kwargs)
    model = DictionaryBottleneck(K, C, S, rate_lambda=rate_lambda, **options)
    for step in range(3):
        model(latents(10 + step))
    return model.eval()


def with_lambda(model, rate_lambda):
    """The same fitted dictionary (and scales) with another `rate_lambda`."""
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    other = DictionaryBottleneck(**{**config, "rate_lambda": rate_lambda})
    other.load_state_dict(model.state_dict())
    return other.eval()


def support_sizes(indices):
    """Used slots per vector as the container counts them: the strictly increasing prefix (at least 1)."""
    increasing = (indices[:, 1:] > indices[:, :-1]).long()
    return 1 + increasing.cumprod(1).sum(1)


def distortion(model, z, codes):
    return (model.decode(codes) - z).square().sum().item()


@pytest.mark.parametrize("value_bits", [4, None])
def test_lambda_zero_gives_the_plain_codes_bit_for_bit(value_bits):
    plain = make(value_bits=value_bits)
    zero = with_lambda(plain, 0.0)
    z = latents(1)
    a, b = plain.encode(z), zero.encode(z)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.coefficients, b.coefficients)
    assert (a.levels is None and b.levels is None) or torch.equal(a.levels, b.levels)
    # a tiny lambda: distortion decides; a vector drops atoms only where its quantized codes get no worse
    # (quantized, a shorter prefix can be strictly better), so no vector is coded worse than plainly
    tiny_model = with_lambda(plain, 1e-12)
    tiny = tiny_model.encode(z)
    errors = [patchify(m.decode(c).detach() - z, (2, 2)).square().sum(1) for m, c in ((plain, a), (tiny_model, tiny))]
    assert (errors[1] <= errors[0] + 1e-6).all()
    if value_bits is None:  # float codes: fewer atoms never help, and counts would cost more than they save
        assert (support_sizes(tiny.indices) == S).all()
        torch.testing.assert_close(tiny_model.decode(tiny), plain.decode(a))


@pytest.mark.parametrize("value_bits", [4, None])
def test_huge_lambda_keeps_one_atom_per_vector(value_bits):
    model = with_lambda(make(value_bits=value_bits), 1e9)
    codes = model.encode(latents(1))
    assert (support_sizes(codes.indices) == 1).all()
    # that atom is the first of the OMP path, with its least-squares coefficient
    vectors = patchify(latents(1), (2, 2))
    omp = batch_omp(vectors, model.atoms, S)
    assert torch.equal(codes.indices[:, 0], omp.indices[:, 0])
    assert (codes.indices[:, 1:] == 0).all()


def test_intermediate_lambda_varies_counts_and_saves_bytes_at_a_small_distortion_cost():
    plain = make()
    z = latents(1, shape=(8, C, 16, 16))
    full = plain.encode(z)
    full_bytes, full_error = len(full.to_bytes(plain)), distortion(plain, z, full)
    model = with_lambda(plain, 0.05)
    codes = model.encode(z)
    counts = support_sizes(codes.indices)
    assert counts.min() >= 1 and counts.max() <= S and len(counts.unique()) >= 3
    data = codes.to_bytes(model)
    assert "sets" in codes_file_info(data).index_model
    assert len(data) < 0.9 * full_bytes
    assert full_error <= distortion(model, z, codes) < 1.5 * full_error
    # the support is a prefix of the OMP path (as a set), sorted by atom, unused slots index 0
    omp = batch_omp(patchify(z, (2, 2)), model.atoms, S)
    for row, count, path in zip(codes.indices, counts, omp.indices):
        assert torch.equal(row[:count], path[:count].sort().values)
        assert (row[count:] == 0).all()


def test_each_vector_takes_the_cheapest_prefix():
    model = with_lambda(make(), 0.05)
    vectors = patchify(latents(2), (2, 2))[:64]
    omp = batch_omp(vectors, model.atoms, S)
    chosen, levels = model._truncate_by_rate(vectors, omp, model.atoms, observe=False)
    costs, level_bits = {}, None
    for s in range(S, 0, -1):  # every prefix, least squares one vector at a time
        keep = omp.values.clone()
        keep[:, s:] = 0
        if s < S:
            for n in range(vectors.shape[0]):
                atoms = model.atoms[omp.indices[n, :s]]
                keep[n, :s] = torch.linalg.lstsq(atoms.t(), vectors[n : n + 1].t()).solution[:, 0]
        indices, values, q = model._quantize_codes(omp.indices, keep, model.atoms)
        error = (vectors - torch.einsum("ns,nsl->nl", values, model.atoms[indices])).square().sum(1)
        used = torch.arange(S)[None, :] < (keep != 0).sum(1, keepdim=True)
        if s == S:  # levels are priced by the plain codes' level histogram
            level_bits = model.level_bits_estimate(q, used)
            assert level_bits.shape == (16,) and level_bits.min() < 4 < level_bits.max()
        costs[s] = error.double() + 0.05 * model.estimated_code_bits(indices, q, used, level_bits)
    lowest = torch.stack(list(costs.values())).min(0).values
    chosen_error = (vectors - torch.einsum("ns,nsl->nl", chosen.values, model.atoms[chosen.indices])).square().sum(1)
    used = torch.arange(S)[None, :] < support_sizes(chosen.indices)[:, None]
    chosen_cost = chosen_error.double() + 0.05 * model.estimated_code_bits(chosen.indices, levels, used, level_bits)
    torch.testing.assert_close(chosen_cost, lowest, rtol=1e-4, atol=1e-4)


def test_codes_file_round_trip_is_bit_exact():
    for model in (with_lambda(make(), 0.05), with_lambda(make(value_bits=None), 0.5)):
        codes = model.encode(latents(3))
        assert len(support_sizes(codes.indices).unique()) > 1
        back = Codes.from_bytes(codes.to_bytes(model), model)
        assert torch.equal(back.indices, codes.indices)
        assert torch.equal(back.coefficients, codes.coefficients)
        assert codes.levels is None or torch.equal(back.levels, codes.levels)
        assert torch.equal(model.decode(back), model.decode(codes))


@pytest.mark.parametrize("update", ["gradient", "bcd"])
def test_training_forward_with_rate_lambda(update):
    torch.manual_seed(0)
    model = DictionaryBottleneck(
        K, C, S, patch_size=2, value_bits=4, value_refit=True, dictionary_update=update, rate_lambda=0.5
    )
    z = latents(4).requires_grad_(True)
    out = model(z)
    counts = support_sizes(out.codes.indices)
    assert counts.max() <= S and counts.min() >= 1 and len(counts.unique()) > 1
    upstream = torch.randn_like(z)
    (out.latents * upstream).sum().backward(retain_graph=True)
    torch.testing.assert_close(z.grad, upstream)  # straight through
    if update == "gradient":
        out.loss.backward()
        assert model.dictionary.grad.abs().sum() > 0
    # usage counts the used slots only (those with a non-zero value), and the scales were observed
    assert out.usage.sum() == (out.codes.coefficients != 0).sum() < S * counts.shape[0]
    assert model.coefficient_scale_seen.any()
    model.eval()
    assert torch.equal(model(latents(5)).latents, model.decode(model.encode(latents(5))))


def test_fingerprint_without_rate_lambda_is_unchanged():
    model = DictionaryBottleneck(K, C, S, patch_size=2, value_bits=4)
    public = {k: v for k, v in model.config.items() if not k.startswith("_") and k not in model._optional_config_keys}
    text = json.dumps({"class": "DictionaryBottleneck", "config": public}, sort_keys=True, default=str)
    assert model.config_fingerprint == hashlib.sha256(text.encode()).hexdigest()[:16]
    # the fingerprints these configs had before `rate_lambda` existed (codes files written then keep decoding)
    assert DictionaryBottleneck(64, 4, 3, patch_size=2).config_fingerprint == "beb177f51cf4ee20"
    before = DictionaryBottleneck(256, 4, 8, patch_size=2, value_bits=8, value_refit=True)
    assert before.config_fingerprint == "04f57f54aee6c56d"
    other = DictionaryBottleneck(K, C, S, patch_size=2, value_bits=4, rate_lambda=0.1)
    assert other.config_fingerprint != model.config_fingerprint
    assert "rate_lambda" not in model.state_dict() and set(other.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_rate_lambda_is_a_user_error(bad):
    with pytest.raises(UserError, match="rate_lambda"):
        DictionaryBottleneck(K, C, S, rate_lambda=bad)


def test_set_bits_match_the_containers_set_model():
    size = 5
    uniform_atoms, uniform_base = set_bits_model(None, K, size)
    assert torch.all(uniform_atoms == 0)
    expected = [math.log2(math.comb(K, m)) for m in range(size + 1)]
    np.testing.assert_allclose(uniform_base.numpy(), expected, rtol=1e-12, atol=1e-9)
    prior = torch.rand(K, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) ** 3
    weights = prior_weights(prior.numpy(), K)
    table = set_table(weights, size)
    np.testing.assert_allclose(elementary_symmetric(torch.from_numpy(weights), size).numpy(), table[0], rtol=1e-10)
    atom_bits, base_bits = set_bits_model(prior, K, size)
    support = [3, 10, 40]  # −log2 P(set) under the conditional Poisson model
    expected = -sum(math.log2(weights[k]) for k in support) + math.log2(table[0, len(support)])
    assert float(atom_bits[support].sum() + base_bits[len(support)]) == pytest.approx(expected, rel=1e-10)


def test_counts_are_paid_for_only_when_the_batch_saves_more():
    """Shorter supports make the file code every vector's count (log2(S + 1) bits): a batch of one vector
    drops atoms only when that saves more than its count costs."""
    plain = make(value_bits=None)
    vector = latents(6)[:1, :, :2, :2]
    v = patchify(vector, (2, 2))
    path = batch_omp(v, plain.atoms, S)
    assert (path.values != 0).all()  # a full path: the plain codes need no counts
    errors, bits = [], []
    for s in range(1, S + 1):
        atoms = plain.atoms[path.indices[0, :s]]
        coefficients = torch.linalg.lstsq(atoms.t(), v.t()).solution[:, 0]
        errors.append(float((v[0] - coefficients @ atoms).detach().square().sum()))
        indices = torch.zeros(1, S, dtype=torch.long)
        indices[0, :s] = path.indices[0, :s].sort().values
        bits.append(float(plain.estimated_code_bits(indices, None, torch.arange(S)[None, :] < s)))
    outcomes = set()
    for rate_lambda in np.geomspace(1e-4, 10, 41):
        costs = [e + rate_lambda * b for e, b in zip(errors, bits)]
        best = int(np.argmin(costs)) + 1
        saving = costs[-1] - min(costs) - rate_lambda * math.log2(S + 1)
        codes = with_lambda(plain, float(rate_lambda)).encode(vector)
        size = int(support_sizes(codes.indices)[0])
        if best < S and saving > 1e-4:
            assert size == best
            outcomes.add("shorter")
        elif best < S and saving < -1e-4:
            assert size == S
            outcomes.add("kept: counts cost more")
    assert outcomes == {"shorter", "kept: counts cost more"}


def test_save_load_and_early_stopping_paths(tmp_path):
    model = with_lambda(make(tol=1.0), 0.05)  # `tol`: some OMP paths stop before S atoms
    z = latents(7)
    path = batch_omp(patchify(z, (2, 2)), model.atoms, S, tol=1.0)
    assert ((path.values != 0).sum(1) < S).any()
    codes = model.encode(z)
    used = support_sizes(codes.indices)
    assert (used <= torch.clamp((path.values != 0).sum(1), min=1)).all()  # never more than the path has
    model.save_pretrained(tmp_path)
    loaded = DictionaryBottleneck.from_pretrained(tmp_path).eval()
    assert loaded.config.rate_lambda == 0.05 and loaded.config_fingerprint == model.config_fingerprint
    again = loaded.encode(z)
    assert torch.equal(again.indices, codes.indices) and torch.equal(again.levels, codes.levels)
    back = Codes.from_bytes(codes.to_bytes(model), loaded)
    assert torch.equal(loaded.decode(back), model.decode(codes))
