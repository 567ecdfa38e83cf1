"""Quantized coefficients (`value_bits`): levels, straight-through gradients, scales, bits, DDP, save/load."""

import hashlib
import json
import math
import os

import pytest
import torch
from launch import run_two_ranks

from sd_sparse import DictionaryBottleneck, LISTABottleneck, batch_omp
from sd_sparse.bottlenecks import patchify, unpatchify
from sd_sparse.codec import quantize_with_feedback

FACTORIES = {
    "dl_atom": lambda: DictionaryBottleneck(64, 4, 3, patch_size=2, value_bits=3),
    "dl_dictionary": lambda: DictionaryBottleneck(64, 4, 3, patch_size=2, value_bits=4, value_scale="dictionary"),
    "dl_refit": lambda: DictionaryBottleneck(64, 4, 4, value_bits=3, value_refit=True, dictionary_update="bcd"),
    "lista": lambda: LISTABottleneck(64, 4, num_blocks=2, sparsity=4, patch_size=2, value_bits=3),
}


def latents(seed=0, shape=(2, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def trained(name, steps=3):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    for step in range(steps):
        model(latents(step))
    return model.eval()


@pytest.mark.parametrize("name", FACTORIES)
def test_coefficients_take_at_most_2_to_the_b_levels_per_scale(name):
    model = trained(name)
    out = model(latents(10, shape=(8, 4, 8, 8)))
    codes = out.codes
    bits = model.value_bits
    assert codes.levels is not None and codes.levels.dtype == torch.int16
    assert int(codes.levels.min()) >= -(2 ** (bits - 1)) and int(codes.levels.max()) <= 2 ** (bits - 1) - 1
    # the coefficients are exactly the dequantized levels, and the latents are made of them
    assert torch.equal(model.dequantize_values(codes.indices, codes.levels), codes.coefficients)
    assert torch.equal(model.decode(codes), out.latents)
    groups = codes.indices if model.config.value_scale == "atom" else torch.zeros_like(codes.indices)
    for group in groups.unique():
        distinct = codes.coefficients[groups == group].unique()
        assert distinct.numel() <= 2**bits
    # supports are sorted by atom (unused slots last, index 0): what the container stores as sets
    used = codes.coefficients != 0
    for row, mask in zip(codes.indices, used):
        support = row[mask]
        assert torch.equal(support, support.sort().values)


@pytest.mark.parametrize("name", ["dl_atom", "dl_refit", "lista"])
def test_straight_through_gradients_with_quantized_values(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    z = latents().requires_grad_(True)
    upstream = torch.randn_like(z)
    out = model(z)
    (out.latents * upstream).sum().backward(retain_graph=True)
    if isinstance(model, DictionaryBottleneck):
        torch.testing.assert_close(z.grad, upstream)  # the quantizer is transparent to the latents' gradient
    else:  # LISTA: through the rounding to the unrolled blocks and the latents
        assert z.grad.abs().sum() > 0
        assert model.filter.grad.abs().sum() > 0 and model.thresholds.grad.abs().sum() > 0
    model.zero_grad()
    out.loss.backward()
    if model.dictionary.requires_grad:
        assert model.dictionary.grad.abs().sum() > 0  # the dictionary learns from the quantized codes


def test_value_bits_none_keeps_the_old_model():
    """No new buffers, the fingerprint of configs before `value_bits` (so older codes files decode), and
    the forward is Batch-OMP's reconstruction with float coefficients."""
    torch.manual_seed(0)
    model = DictionaryBottleneck(64, 4, 3, patch_size=2).eval()
    assert not any(k.startswith("coefficient_scale") for k in model.state_dict())
    public = {k: v for k, v in model.config.items() if not k.startswith("_") and not k.startswith("value_")}
    # options added later (`_optional_config_keys`, e.g. `rate_lambda`, `residual_step`) are left out while None
    public = {k: v for k, v in public.items() if not (k in model._optional_config_keys and v is None)}
    assert "residual_step" not in public and "rate_lambda" not in public and "num_atoms" in public
    text = json.dumps({"class": "DictionaryBottleneck", "config": public}, sort_keys=True, default=str)
    assert model.config_fingerprint == hashlib.sha256(text.encode()).hexdigest()[:16]
    z = latents()
    codes = batch_omp(patchify(z, (2, 2)), model.atoms, 3)
    expected = unpatchify(codes.reconstruct(model.atoms), z.shape, (2, 2))
    out = model(z)
    assert torch.equal(out.latents, expected) and torch.equal(out.codes.coefficients, codes.values)
    assert out.codes.levels is None
    quantized = DictionaryBottleneck(64, 4, 3, patch_size=2, value_bits=6)
    assert quantized.config_fingerprint != model.config_fingerprint


def test_bits_per_position_counts_sets_and_levels():
    assert DictionaryBottleneck(512, 4, 8, patch_size=4, value_bits=6).bits_per_position == pytest.approx(
        (math.log2(math.comb(512, 8)) + 8 * 6) / 16
    )
    assert DictionaryBottleneck(64, 4, 3, value_bits=4).bits_per_position == pytest.approx(
        math.log2(math.comb(64, 3)) + 12
    )
    assert LISTABottleneck(64, 4, sparsity=4, value_bits=5).bits_per_position == pytest.approx(
        math.log2(math.comb(64, 4)) + 20
    )
    # without value_bits: S indices of log2 K bits and S float16 values, as before
    assert DictionaryBottleneck(512, 4, 8, patch_size=4).bits_per_position == 8 * (9 + 16) / 16


def test_scales_follow_the_training_peaks_and_freeze_in_eval():
    torch.manual_seed(0)
    model = DictionaryBottleneck(16, 4, 2, value_bits=4, value_scale="dictionary", value_scale_decay=0.5)
    initial = model.coefficient_scale.clone()
    model.encode(latents())  # encode never changes state, even in training mode
    assert torch.equal(model.coefficient_scale, initial)
    model(latents(0))
    model(latents(0))  # the same peak again: the hold keeps it
    codes = batch_omp(patchify(latents(0)), model.atoms.detach(), 2)
    assert model.coefficient_scale.item() == pytest.approx(codes.values.abs().max().item(), rel=1e-5)
    model(latents(1) * 10)  # a larger peak: taken at once
    big = batch_omp(patchify(latents(1) * 10), model.atoms.detach(), 2).values.abs().max().item()
    assert model.coefficient_scale.item() == pytest.approx(big, rel=1e-5)
    model(latents(2) * 0.1)  # a smaller one: decays towards it by value_scale_decay
    assert big * 0.5 < model.coefficient_scale.item() < big
    model.eval()
    frozen = model.coefficient_scale.clone()
    model(latents(3) * 100)
    assert torch.equal(model.coefficient_scale, frozen)


def test_per_atom_scales_restart_with_their_atoms():
    """A restarted atom is a new atom: its scale is taken afresh from the next batch that uses it."""
    model = DictionaryBottleneck(32, 4, 2, value_bits=4, restart_threshold=0.5)
    model.coefficient_scale_seen.fill_(True)
    model.restart_pending[:3] = True
    model._apply_restarts()
    assert not model.coefficient_scale_seen[:3].any() and model.coefficient_scale_seen[3:].all()


def test_save_load_is_exact(tmp_path):
    model = trained("dl_atom")
    model.save_pretrained(tmp_path)
    loaded = DictionaryBottleneck.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    z = latents(5)
    assert torch.equal(loaded(z).latents, model(z).latents)
    codes = model.encode(z)
    codes.save(tmp_path / "codes.safetensors")
    from sd_sparse import Codes

    back = Codes.load(tmp_path / "codes.safetensors")
    assert torch.equal(back.levels, codes.levels) and torch.equal(loaded.decode(back), model.decode(codes))
    assert torch.equal(codes[1].levels, codes.levels[codes.indices.shape[0] // 2 :])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(value_bits=1), "`value_bits` must be None .* or an int in \\[2, 16\\], got 1"),
        (dict(value_bits=17), "got 17"),
        (dict(value_bits="6"), "got '6'"),
        (dict(value_bits=4, value_scale="row"), "`value_scale` must be one of"),
        (dict(value_bits=4, value_scale_decay=1.0), "`value_scale_decay` must be in"),
    ],
)
def test_bad_quantization_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DictionaryBottleneck(16, 4, 2, **kwargs)


def test_lista_value_bits_needs_sparsity():
    with pytest.raises(ValueError, match="`value_bits` \\(4\\) needs `sparsity`"):
        LISTABottleneck(16, 4, value_bits=4)


def test_feedback_equals_sequential_least_squares():
    """Each level is the rounding of the least-squares coefficient given the levels chosen before it."""
    g = torch.Generator().manual_seed(0)
    n, s, k, d = 40, 4, 24, 12
    atoms = torch.randn(k, d, generator=g, dtype=torch.float64)
    atoms /= atoms.norm(dim=1, keepdim=True)
    indices = torch.stack([torch.randperm(k, generator=g)[:s] for _ in range(n)])
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    active = torch.ones(n, s, dtype=torch.bool)
    active[:5, 2:] = False
    step = torch.full((n, s), 0.3, dtype=torch.float64)
    values = torch.zeros(n, s, dtype=torch.float64)
    expected = torch.zeros(n, s, dtype=torch.long)
    for i in range(n):
        support = [j for j in range(s) if active[i, j]]
        chosen = []
        for position, j in enumerate(support):
            rest = support[position:]
            a_rest = atoms[indices[i, rest]]
            residual = x[i] - sum((q * atoms[indices[i, c]] for c, q in chosen), torch.zeros(d, dtype=torch.float64))
            fit = torch.linalg.solve(a_rest @ a_rest.T, a_rest @ residual)
            if position == 0:
                values[i, support] = fit
            level = int(torch.round(fit[0] / 0.3).clamp(-32, 31))
            expected[i, j] = level
            chosen.append((j, level * 0.3))
    levels = quantize_with_feedback(values, indices, atoms @ atoms.T, step, 6, active, damping=0.0)
    assert torch.equal(levels.long(), expected)


def test_feedback_lowers_the_error_of_coarse_levels():
    torch.manual_seed(0)
    plain = DictionaryBottleneck(64, 4, 4, patch_size=2, value_bits=3)
    for step in range(3):
        plain(latents(step))
    refit = DictionaryBottleneck(64, 4, 4, patch_size=2, value_bits=3, value_refit=True)
    refit.load_state_dict(plain.state_dict())
    z = latents(7, shape=(16, 4, 8, 8))
    errors = [(m.eval()(z).latents - z).square().mean() for m in (plain, refit)]
    assert errors[1] < errors[0]


# ------------------------------------------------------------------------------------------------
# 2 ranks (gloo): the coefficient scales stay identical
# ------------------------------------------------------------------------------------------------


def _rank_models(rank):
    torch.manual_seed(0)  # same initial weights: DDP broadcasts them; the scales must stay in step by themselves
    return {
        "dl": DictionaryBottleneck(32, 4, 3, patch_size=2, value_bits=4, dictionary_update="bcd"),
        "dl_dictionary": DictionaryBottleneck(32, 4, 3, value_bits=5, value_scale="dictionary", restart_threshold=0),
        "lista": LISTABottleneck(32, 4, num_blocks=2, sparsity=3, value_bits=4),
    }


def _worker(rank, out_dir):
    models = _rank_models(rank)
    g = torch.Generator().manual_seed(rank)  # every rank sees different data
    for _ in range(3):
        z = torch.randn(2, 4, 8, 8, generator=g) * (1 + 3 * rank)
        for model in models.values():
            model(z)
    torch.save({n: m.state_dict() for n, m in models.items()}, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_ranks_keep_identical_coefficient_scales(tmp_path):
    run_two_ranks(_worker, str(tmp_path))
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    fresh = _rank_models(0)
    for name in states[0]:
        scale = states[0][name]["coefficient_scale"]
        assert torch.equal(scale, states[1][name]["coefficient_scale"]), name
        assert torch.equal(states[0][name]["coefficient_scale_seen"], states[1][name]["coefficient_scale_seen"])
        assert not torch.equal(scale, fresh[name].state_dict()["coefficient_scale"]), name  # it did train
    for key, value in states[0]["dl"].items():  # the whole BCD-updated state, scales included
        assert torch.equal(value, states[1]["dl"][key]), key
