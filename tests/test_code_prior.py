"""`CodePrior`: its loss, sampling, and the codes files it codes, bit for bit, on any thread count."""

import pytest
import torch

from sd_sparse import (
    Codes,
    DictionaryBottleneck,
    EntropyCodedScalarQuantizer,
    LISTABottleneck,
    ResidualVectorQuantizer,
    VectorQuantizer,
)
from sd_sparse.codec.file_format import codes_file_info
from sd_sparse.errors import UserError
from sd_sparse.priors import CodePrior, fixed_point
from sd_sparse.priors.code_prior import _IntegerArithmetic, code_events

C = 4

BOTTLENECKS = {
    "dictionary": lambda: DictionaryBottleneck(32, C, 3, value_bits=6, init_from_data=True),
    "dictionary 2x2": lambda: DictionaryBottleneck(32, C, 4, patch_size=2, value_bits=5, init_from_data=True),
    "dictionary rd pursuit": lambda: DictionaryBottleneck(32, C, 4, value_bits=6, rate_lambda=0.5, init_from_data=True),
    "dictionary residual": lambda: DictionaryBottleneck(32, C, 2, value_bits=6, residual_step=0.5, init_from_data=True),
    "dictionary raw": lambda: DictionaryBottleneck(32, C, 3, init_from_data=True),
    "lista": lambda: LISTABottleneck(32, C, sparsity=3, value_bits=6),
    "vq": lambda: VectorQuantizer(16, C),
    "rvq": lambda: ResidualVectorQuantizer(16, C, 3),
    "entropy-coded scalar": lambda: EntropyCodedScalarQuantizer(C, step=0.5, max_level=7),
}


def fitted(name: str, seed: int = 0):
    torch.manual_seed(seed)
    bottleneck = BOTTLENECKS[name]()
    latents = torch.randn(8, C, 8, 8)
    bottleneck.train()
    for _ in range(3):
        bottleneck(latents)
    return bottleneck.eval()


def tiny_prior(bottleneck, seed: int = 0) -> CodePrior:
    torch.manual_seed(seed)
    return CodePrior.from_bottleneck(bottleneck, embedding_dim=8, hidden_dim=16, context_size=3)


def latents(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, C, 8, 8, generator=torch.Generator().manual_seed(seed))


def assert_same_codes(a: Codes, b: Codes) -> None:
    assert torch.equal(a.indices, b.indices)
    for field in ("coefficients", "levels", "residual"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert torch.equal(x.cpu(), y.cpu()), field


@pytest.mark.parametrize("name", sorted(BOTTLENECKS))
def test_codes_file_with_the_prior_round_trips_bit_for_bit(name):
    bottleneck = fitted(name)
    prior = tiny_prior(bottleneck)
    codes = bottleneck.encode(latents())
    data = codes.to_bytes(bottleneck, prior=prior)
    info = codes_file_info(data)
    assert info.index_model == "prior" and info.prior_digest == prior.coding_state_digest()
    back = Codes.from_bytes(data, bottleneck, prior=prior)
    assert_same_codes(back, codes)
    assert torch.equal(bottleneck.decode(back), bottleneck.decode(codes))


def test_the_event_kind_follows_the_bottleneck():
    assert tiny_prior(fitted("dictionary")).config.sets is True
    assert tiny_prior(fitted("lista")).config.sets is True
    assert tiny_prior(fitted("dictionary raw")).config.sets is False
    rvq = tiny_prior(fitted("rvq"))
    assert (rvq.config.sets, rvq.config.sparsity, rvq.config.value_bits) == (False, 3, None)


def test_the_file_costs_what_the_prior_says():
    """The float network's bits and the fixed-point coder's bytes agree: a few bytes of header, the flush,
    and the fixed-point rounding."""
    bottleneck = fitted("dictionary")
    prior = tiny_prior(bottleneck)
    codes = bottleneck.encode(latents(6))
    bits = float(prior(codes).bits.sum().detach())
    data = codes.to_bytes(bottleneck, prior=prior)
    payload = 8 * (len(data) - codes_file_info(data).header_bytes)
    assert abs(payload - bits) < 0.01 * bits + 64


def test_supports_of_varied_sizes_code_their_end():
    bottleneck = fitted("dictionary rd pursuit")
    codes = bottleneck.encode(latents())
    counts = code_events(codes, sets=True).counts
    assert counts.min() < 4, "the test needs supports of varied sizes"
    back = Codes.from_bytes(
        codes.to_bytes(bottleneck, prior=tiny_prior(bottleneck)), bottleneck, prior=tiny_prior(bottleneck)
    )
    assert_same_codes(back, codes)


def test_training_lowers_the_bits():
    bottleneck = fitted("dictionary")
    prior = tiny_prior(bottleneck)
    codes = bottleneck.encode(latents(4))
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    first = float(prior(codes).loss.detach())
    for _ in range(30):
        loss = prior(codes).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(prior(codes).loss.detach()) < 0.9 * first
    trained = len(codes.to_bytes(bottleneck, prior=prior))
    assert trained < len(codes.to_bytes(bottleneck, prior=tiny_prior(bottleneck)))


def test_the_coder_is_the_same_on_one_and_two_threads():
    bottleneck = fitted("dictionary 2x2")
    prior = tiny_prior(bottleneck)
    codes = bottleneck.encode(latents(4))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = codes.to_bytes(bottleneck, prior=prior)
        torch.set_num_threads(2)
        two = codes.to_bytes(bottleneck, prior=prior)
        assert one == two
        torch.set_num_threads(1)
        assert_same_codes(Codes.from_bytes(two, bottleneck, prior=prior), codes)
    finally:
        torch.set_num_threads(threads)


def test_fixed_point_layers_are_exact_integer_arithmetic():
    """The float64 evaluation equals the same computation in int64 (so no order of the sums can change it)."""
    g = torch.Generator().manual_seed(0)
    weight = fixed_point.quantize_weight(torch.randn(64, 300, generator=g) * 3)
    bias = torch.round(torch.randn(64, generator=g, dtype=torch.float64) * 4096)
    inputs = torch.floor(torch.randn(50, 300, generator=g, dtype=torch.float64) * 2.0**21)
    out = fixed_point.fixed_linear(inputs, weight, bias)
    exact = (inputs.long() @ weight.long().T).div(1 << fixed_point.FRACTION_BITS, rounding_mode="floor") + bias.long()
    exact = exact.clamp(-int(fixed_point.ACTIVATION_LIMIT), int(fixed_point.ACTIVATION_LIMIT))
    assert torch.equal(out.long(), exact)
    assert torch.equal(fixed_point.fixed_linear(inputs.flip(0), weight, bias), out.flip(0))


def test_probabilities_of_one_cell_equal_those_of_the_whole_batch():
    """The coder evaluates all cells at once, the decoder one at a time: the integer logits must agree."""
    bottleneck = fitted("dictionary")
    prior = tiny_prior(bottleneck)
    events = code_events(bottleneck.encode(latents(2)), sets=True)
    arithmetic = _IntegerArithmetic(prior)
    atom_logits, level_logits = prior._all_logits(arithmetic, events)
    single = code_events(bottleneck.encode(latents(2)[:1]), sets=True)
    one_atom, one_level = prior._all_logits(arithmetic, single)
    assert torch.equal(one_atom, atom_logits[:1]) and torch.equal(one_level, level_logits[:1])


def test_exp_table_is_fixed():
    table = fixed_point.exp_table()
    assert table[0] == 2**30 and table.shape == (fixed_point.TABLE_NATS << fixed_point.TABLE_BITS,)
    assert (table[1:] <= table[:-1]).all() and table.min() >= 1
    assert int(table[64]) == 395007542  # round(2^30 / e), the same on every machine


def test_samples_are_valid_codes_and_follow_the_generator():
    bottleneck = fitted("dictionary rd pursuit")
    prior = tiny_prior(bottleneck)
    draw = lambda seed: prior.sample(bottleneck, 8, 8, num_images=3, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = draw(0), draw(0), draw(1)
    assert_same_codes(a, b)
    assert not torch.equal(a.indices, c.indices)
    assert a.latent_shape == (3, C, 8, 8)
    events = code_events(a, sets=True)  # raises unless canonical: atoms increasing, unused slots 0
    assert (events.counts >= 1).all()
    low, high = -32, 31
    assert a.levels.min() >= low and a.levels.max() <= high
    assert torch.isfinite(bottleneck.decode(a)).all()
    back = Codes.from_bytes(a.to_bytes(bottleneck, prior=prior), bottleneck, prior=prior)
    assert_same_codes(back, a)


def test_samples_of_slot_codes():
    bottleneck = fitted("rvq")
    codes = tiny_prior(bottleneck).sample(bottleneck, 4, 8, num_images=2, generator=torch.Generator().manual_seed(0))
    assert codes.indices.shape == (2 * 4 * 8, 3) and codes.indices.max() < 16
    assert bottleneck.decode(codes).shape == (2, C, 4, 8)


def test_save_and_load_code_the_same_bytes(tmp_path):
    bottleneck = fitted("vq")
    prior = tiny_prior(bottleneck)
    prior.save_pretrained(tmp_path)
    loaded = CodePrior.from_pretrained(tmp_path)
    codes = bottleneck.encode(latents())
    assert loaded.coding_state_digest() == prior.coding_state_digest()
    assert codes.to_bytes(bottleneck, prior=loaded) == codes.to_bytes(bottleneck, prior=prior)


def test_a_prior_coded_file_needs_that_prior():
    bottleneck = fitted("dictionary")
    prior = tiny_prior(bottleneck)
    data = bottleneck.encode(latents()).to_bytes(bottleneck, prior=prior)
    with pytest.raises(UserError, match="coded with a learned prior"):
        Codes.from_bytes(data, bottleneck)
    with pytest.raises(UserError, match="another prior"):
        Codes.from_bytes(data, bottleneck, prior=tiny_prior(bottleneck, seed=1))


def test_a_prior_of_another_bottleneck_is_refused():
    prior = tiny_prior(fitted("dictionary"))
    other = fitted("dictionary 2x2")
    with pytest.raises(UserError, match="models the codes of"):
        other.encode(torch.randn(1, C, 8, 8)).to_bytes(other, prior=prior)
    with pytest.raises(UserError, match="models the codes of"):
        prior.sample(other, 8, 8)
    with pytest.raises(UserError, match="K=32, S=3"):
        prior(other.encode(torch.randn(1, C, 8, 8)))


def test_bad_arguments_name_themselves():
    with pytest.raises(UserError, match="context_size"):
        CodePrior(16, 1, context_size=4)
    with pytest.raises(UserError, match="num_atoms"):
        CodePrior(0, 1)
    with pytest.raises(UserError, match="value_bits"):
        CodePrior(16, 1, value_bits=1)
    bottleneck = fitted("vq")
    prior = tiny_prior(bottleneck)
    with pytest.raises(UserError, match="height"):
        prior.sample(bottleneck, 0, 8)
    with pytest.raises(UserError, match="temperature"):
        prior.sample(bottleneck, 8, 8, temperature=0)
    with pytest.raises(UserError, match="prior"):
        bottleneck.encode(latents()).to_bytes(bottleneck, prior=object())
