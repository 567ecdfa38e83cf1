"""The components bottlenecks compose (restarts, value quantization, data initialisation) and the
declarative config checks (`_parameter_constraints`)."""

from numbers import Integral, Real

import pytest
import torch

from sd_sparse import DictionaryBottleneck, LISTABottleneck, VectorQuantizer
from sd_sparse.bottlenecks import (
    EntropyCodedScalarQuantizer,
    FiniteScalarQuantizer,
    ResidualVectorQuantizer,
    ScalarQuantizer,
)
from sd_sparse.bottlenecks.initialisation import DataInitialisationMixin
from sd_sparse.bottlenecks.restarts import RestartsMixin
from sd_sparse.bottlenecks.validation import (
    Interval,
    IsNone,
    Options,
    check_indices,
    collect_constraints,
    validate_parameters,
)
from sd_sparse.bottlenecks.value_quantization import ValueQuantizationMixin
from sd_sparse.codec.entropy_model import EntropyModel


@pytest.mark.parametrize(
    "cls,components",
    [
        (VectorQuantizer, {RestartsMixin, DataInitialisationMixin}),
        (DictionaryBottleneck, {RestartsMixin, DataInitialisationMixin, ValueQuantizationMixin}),
        (LISTABottleneck, {ValueQuantizationMixin}),
        (ResidualVectorQuantizer, set()),
        (ScalarQuantizer, set()),
        (EntropyCodedScalarQuantizer, set()),
        (FiniteScalarQuantizer, {DataInitialisationMixin}),
    ],
)
def test_each_bottleneck_composes_what_it_uses(cls, components):
    every = {RestartsMixin, DataInitialisationMixin, ValueQuantizationMixin}
    assert {c for c in every if issubclass(cls, c)} == components


def test_constraints_merge_over_the_class_hierarchy():
    constraints = collect_constraints(DictionaryBottleneck)
    # from the base, the components and the class itself, each written once
    for name in ("latent_channels", "beta", "restart_threshold", "usage_decay", "value_bits", "sparsity", "tol"):
        assert name in constraints
    assert "kmeans_iters" not in constraints and "restart_threshold" not in collect_constraints(LISTABottleneck)


def test_validate_parameters_names_the_value_and_what_it_may_be():
    table = {
        "k": [Interval(Integral, 1, None)],
        "s": [IsNone("dense"), Interval(Integral, 1, "k", closed="both")],
        "mode": [Options(("a", "b"))],
        "rate": [Interval(Real, 0, 1, closed="left")],
    }
    validate_parameters(table, {"k": 4, "s": None, "mode": "a", "rate": 0.5, "other": object()})
    validate_parameters(table, {"k": 4, "s": 4})
    cases = [
        ({"k": True}, "`k` must be an int >= 1, got True."),
        ({"k": 4, "s": 5}, "`s` must be None (dense) or an int in [1, 4], got 5."),
        ({"mode": "c"}, "`mode` must be one of ('a', 'b'), got 'c'."),
        ({"rate": 1}, "`rate` must be in [0, 1), got 1."),
        ({"rate": float("nan")}, "`rate` must be in [0, 1), got nan."),
    ]
    for params, message in cases:
        with pytest.raises(ValueError) as error:
            validate_parameters(table, params)
        assert str(error.value) == message
    with pytest.raises(ValueError, match=r"`indices` must be \[N, 3\] \(one per stage\), got \(2, 2\)"):
        check_indices(torch.zeros(2, 2, dtype=torch.long), 3, "one per stage")


@pytest.mark.parametrize(
    "model",
    [
        VectorQuantizer(8, 4),
        DictionaryBottleneck(8, 4, 2, value_bits=4),
        LISTABottleneck(8, 4, sparsity=2),
        ScalarQuantizer(4),
        ResidualVectorQuantizer(8, 4, num_stages=2),
    ],
    ids=lambda model: type(model).__name__,
)
def test_every_bottleneck_is_an_entropy_model(model):
    assert isinstance(model, EntropyModel)
    if model.value_bits is None:
        with pytest.raises(ValueError, match="no quantized coefficients"):
            model.dequantize_values(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.int16))


def test_usage_prior_comes_from_the_restarts():
    assert DictionaryBottleneck(8, 4, 2).usage_prior().shape == (8,)
    assert DictionaryBottleneck(8, 4, 2, restart_threshold=0.0).usage_prior() is None
    assert LISTABottleneck(8, 4).usage_prior() is None


def test_data_initialisation_happens_once_in_training():
    torch.manual_seed(0)
    model = DictionaryBottleneck(8, 4, 2, init_from_data=True, restart_threshold=0.0)
    before = model.dictionary.detach().clone()
    model.eval()(torch.randn(1, 4, 4, 4))
    assert torch.equal(model.dictionary, before) and not bool(model.initialized)
    model.train()(torch.randn(1, 4, 4, 4))
    assert bool(model.initialized) and not torch.equal(model.dictionary, before)
