"""The baselines (RVQ, FSQ, per-channel scalar quantization) honour the bottleneck contract."""

import math
import os
import sys

import pytest
import torch
from launch import run_two_ranks

from sd_sparse import (
    Codes,
    EntropyCodedScalarQuantizer,
    FiniteScalarQuantizer,
    ResidualVectorQuantizer,
    ScalarQuantizer,
    VectorQuantizer,
    with_bottleneck,
)
from sd_sparse.bottlenecks import patchify

FACTORIES = {
    "rvq": lambda: ResidualVectorQuantizer(num_atoms=16, latent_channels=4, num_stages=3, patch_size=2, kmeans_iters=2),
    "rvq_grad": lambda: ResidualVectorQuantizer(
        num_atoms=16, latent_channels=4, num_stages=2, use_ema=False, init_from_data=False
    ),
    "fsq": lambda: FiniteScalarQuantizer(levels=5, latent_channels=4),
    "fsq_patch": lambda: FiniteScalarQuantizer(levels=[8, 5, 5, 5] * 4, latent_channels=4, patch_size=2),
    "fsq_symmetric": lambda: FiniteScalarQuantizer(levels=2, latent_channels=4, preserve_symmetry=True),
    "sq": lambda: ScalarQuantizer(latent_channels=4, bits=3),
    "sq_quantile": lambda: ScalarQuantizer(latent_channels=4, bits=2, patch_size=2, range_quantile=0.05),
    "ecsq": lambda: EntropyCodedScalarQuantizer(latent_channels=4, step=0.3, max_level=15, patch_size=2),
}


def latents(seed=0, shape=(2, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def trained(name, steps=2):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    for step in range(steps):
        model(latents(10 + step))
    return model.eval()


@pytest.mark.parametrize("name", FACTORIES)
def test_output_contract(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    z = latents()
    out = model(z)
    n = 2 * 8 * 8 // (model.patch_size[0] * model.patch_size[1])
    slots = model.config.num_stages if isinstance(model, ResidualVectorQuantizer) else model.vector_dim
    assert out.latents.shape == z.shape and out.latents.dtype == z.dtype
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert isinstance(out.codes, Codes) and out.codes.latent_shape == tuple(z.shape) and out.codes.coefficients is None
    assert out.codes.indices.shape == (n, slots) and out.codes.indices.dtype == torch.long
    assert int(out.codes.indices.min()) >= 0 and int(out.codes.indices.max()) < model.num_atoms
    assert out.codes.num_atoms == model.num_atoms and out.usage.shape == (model.num_atoms,)
    assert out.usage.sum() == n * slots and torch.equal(out.usage, out.codes.usage())
    assert 1 <= float(out.perplexity) <= model.num_atoms and int(out.dead_codes) == int((out.usage == 0).sum())
    as_tuple = model(z, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == z.shape and isinstance(as_tuple[2], Codes)


@pytest.mark.parametrize("name", FACTORIES)
def test_decode_of_encode_equals_forward_bit_for_bit(name):
    model = trained(name)
    z = latents(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    codes = model.encode(z)
    assert codes.bottleneck_class == type(model).__name__ and codes.fingerprint == model.config_fingerprint
    with torch.no_grad():
        assert torch.equal(model.decode(codes), model(z).latents)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # encode and eval change nothing
    torch.testing.assert_close(model.decode(codes[1]), model.decode(codes)[1:])


@pytest.mark.parametrize("name", FACTORIES)
def test_straight_through_gradient_is_identity_to_the_input(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    z = latents().requires_grad_(True)
    upstream = torch.randn_like(z)
    (model(z).latents * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)


def test_bits_per_position():
    assert ResidualVectorQuantizer(512, 4, num_stages=4).bits_per_position == 36
    assert ResidualVectorQuantizer(256, 4, num_stages=3, patch_size=2).bits_per_position == 3 * 8 / 4
    assert FiniteScalarQuantizer(levels=[8, 5, 5, 5], latent_channels=4).bits_per_position == pytest.approx(
        3 + 3 * math.log2(5)
    )
    assert FiniteScalarQuantizer(levels=4, latent_channels=4, patch_size=2).bits_per_position == 2 * 16 / 4
    assert ScalarQuantizer(latent_channels=4, bits=3).bits_per_position == 12
    assert ScalarQuantizer(latent_channels=32, bits=2, patch_size=2).bits_per_position == 64  # patches only group
    # the index columns carry exactly those bits: log2 of the number of distinct codes per position
    for model in (FACTORIES["rvq"](), FACTORIES["fsq_patch"](), FACTORIES["sq_quantile"]()):
        per_vector = model.bits_per_position * model.patch_size[0] * model.patch_size[1]
        if isinstance(model, FiniteScalarQuantizer):
            distinct = math.prod(model.config.levels)
        else:
            distinct = model.num_atoms ** (
                model.config.num_stages if hasattr(model.config, "num_stages") else model.vector_dim
            )
        assert per_vector == pytest.approx(math.log2(distinct))


# ------------------------------------------------------------------------------------------------
# Residual VQ
# ------------------------------------------------------------------------------------------------


def test_one_stage_rvq_is_vector_quantization():
    """Stage for stage, RVQ is VectorQuantizer on the residual: with one stage, the same weights, outputs and state."""
    options = dict(num_atoms=16, latent_channels=4, patch_size=2, kmeans_iters=2)
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(num_stages=1, **options)
    torch.manual_seed(0)
    vq = VectorQuantizer(**options)
    for seed in range(3):
        torch.manual_seed(seed)  # (the k-means initialisation draws from the global generator)
        a = rvq(latents(seed))
        torch.manual_seed(seed)
        b = vq(latents(seed))
        assert torch.equal(a.latents, b.latents) and torch.equal(a.loss, b.loss)
        assert torch.equal(a.codes.indices, b.codes.indices)
    for key, value in vq.state_dict().items():
        assert torch.equal(rvq.state_dict()[f"stages.0.{key}"], value), key


def test_rvq_stages_code_the_residual():
    model = trained("rvq", steps=4)
    z = latents(3)
    codes = model.encode(z)
    vectors = patchify(z, model.patch_size)
    residual, errors = vectors, []
    for s, stage in enumerate(model.stages):
        chosen = stage.codebook.detach()[codes.indices[:, s]]
        nearest = torch.cdist(residual, stage.codebook.detach()).argmin(1)
        assert torch.equal(codes.indices[:, s], nearest)  # each stage: the nearest code to what is left
        residual = residual - chosen
        errors.append(float(residual.square().mean()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0]
    torch.testing.assert_close(patchify(model.decode(codes), model.patch_size), vectors - residual)


def test_rvq_gradient_codebooks_learn_from_the_loss():
    torch.manual_seed(0)
    model = FACTORIES["rvq_grad"]()
    z = latents().requires_grad_(True)
    model(z).loss.backward()
    for stage in model.stages:
        assert stage.codebook.grad is not None and stage.codebook.grad.abs().sum() > 0
    assert z.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# FSQ
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preserve_symmetry", [False, True])
def test_fsq_codes_are_vector_quantize_pytorch_codes(preserve_symmetry):
    """Our level indices are FSQ's: in mixed radix they are its product indices, and decode to its codes."""
    from vector_quantize_pytorch import FSQ

    levels = [8, 5, 5, 3] if not preserve_symmetry else [2, 4, 5, 3]
    torch.manual_seed(0)
    model = FiniteScalarQuantizer(levels=levels, latent_channels=4, preserve_symmetry=preserve_symmetry)
    model(latents(1) * 3)
    model.eval()
    reference = FSQ(levels=levels, **({"preserve_symmetry": True} if preserve_symmetry else {}))
    z = latents(2) * 3
    vectors = patchify(z)
    u = (vectors - model.shift.detach()) * model.input_scale.detach()
    q = reference.quantize(u)
    codes = model.encode(z)
    basis = torch.tensor([math.prod(levels[:d]) for d in range(len(levels))])
    assert torch.equal((codes.indices * basis).sum(1), reference.codes_to_indices(q).long())
    torch.testing.assert_close(model._grid_values(codes.indices, torch.float32), q, rtol=0, atol=1e-6)
    expected = model.shift.detach() + model.output_scale.detach() * reference.indices_to_codes(
        (codes.indices * basis).sum(1)
    )
    torch.testing.assert_close(patchify(model.decode(codes)), expected)
    assert len(codes.indices.unique(dim=0)) > 10  # the data spreads over many codes


def test_fsq_initialises_from_data_and_learns_its_scales():
    torch.manual_seed(0)
    model = FiniteScalarQuantizer(levels=5, latent_channels=4)
    z = latents(shape=(8, 4, 16, 16)) * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1, 1) + 1
    first = model(z)
    vectors = patchify(z)
    torch.testing.assert_close(model.shift.detach(), vectors.mean(0))  # odd levels: centred on the mean
    torch.testing.assert_close(model.output_scale.detach(), vectors.std(0, unbiased=False) * math.sqrt(2 * math.log(5)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        out = model(z)
        optimizer.zero_grad()
        out.loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        optimizer.step()
    assert float(model(z).loss.detach()) < 0.9 * float(first.loss.detach())


def test_fsq_without_the_extra_names_it(monkeypatch):
    import importlib.metadata

    monkeypatch.setitem(sys.modules, "vector_quantize_pytorch", None)
    with pytest.raises(ImportError, match=r"not installed: pip install 'sd_sparse\[baselines\]'"):
        FiniteScalarQuantizer(latent_channels=4)
    monkeypatch.undo()
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.22.0")  # FSQ.quantize added noise in training
    with pytest.raises(ImportError, match=r"needs vector-quantize-pytorch>=1.25, found 1.22.0"):
        FiniteScalarQuantizer(latent_channels=4)


# ------------------------------------------------------------------------------------------------
# Scalar quantization
# ------------------------------------------------------------------------------------------------


def test_scalar_quantizer_fits_the_min_max_range_then_freezes():
    model = ScalarQuantizer(latent_channels=4, bits=3)
    a, b = latents(1), latents(2) * 2
    model(a)
    torch.testing.assert_close(model.lower.detach(), a.amin((0, 2, 3)))
    torch.testing.assert_close(model.upper.detach(), a.amax((0, 2, 3)))
    model(b)  # the running range over both batches
    torch.testing.assert_close(model.lower.detach(), torch.minimum(a.amin((0, 2, 3)), b.amin((0, 2, 3))))
    torch.testing.assert_close(model.upper.detach(), torch.maximum(a.amax((0, 2, 3)), b.amax((0, 2, 3))))
    model.eval()
    frozen = (model.lower.detach().clone(), model.upper.detach().clone())
    out = model(latents(3) * 10)
    assert torch.equal(model.lower.detach(), frozen[0]) and torch.equal(model.upper.detach(), frozen[1])
    # uniform levels: values in range are within half a step, everything maps to one of 8 levels per channel
    z = latents(4)
    step = (model.upper - model.lower).detach() / 7
    inside = (z >= model.lower.view(1, 4, 1, 1)) & (z <= model.upper.view(1, 4, 1, 1))
    error = (model(z).latents - z).abs()
    assert bool((error <= step.view(1, 4, 1, 1) / 2 + 1e-6)[inside].all())
    assert out.codes.indices.max() == 7 and out.codes.indices.min() == 0  # large values clamp to the end levels


def test_scalar_quantizer_quantile_range_is_the_mean_of_batch_quantiles():
    model = ScalarQuantizer(latent_channels=4, bits=2, range_quantile=0.1)
    batches = [latents(1), latents(2) * 3]
    for z in batches:
        model(z)
    values = [z.permute(1, 0, 2, 3).reshape(4, -1) for z in batches]
    k = int(0.1 * (values[0].shape[1] - 1)) + 1
    low = torch.stack([v.kthvalue(k, 1).values for v in values]).mean(0)
    high = torch.stack([v.kthvalue(v.shape[1] - k + 1, 1).values for v in values]).mean(0)
    torch.testing.assert_close(model.lower.detach(), low)
    torch.testing.assert_close(model.upper.detach(), high)
    assert int(model.fitted_batches) == 2


# ------------------------------------------------------------------------------------------------
# Saving, codes files, dtypes, errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FACTORIES)
def test_save_and_load_give_bit_identical_outputs(name, tmp_path):
    model = trained(name)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config) and loaded.config_fingerprint == model.config_fingerprint
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    z = latents(5)
    a, b = model(z), loaded(z)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.loss, b.loss)
    codes = model.encode(z)
    codes.save(tmp_path / "codes.safetensors")
    assert torch.equal(loaded.decode(Codes.load(tmp_path / "codes.safetensors")), model.decode(codes))


def test_decode_refuses_codes_of_another_baseline():
    z = latents()
    with pytest.raises(ValueError, match="made by ScalarQuantizer.*this is FiniteScalarQuantizer"):
        FACTORIES["fsq"]().decode(FACTORIES["sq"]().encode(z))
    with pytest.raises(ValueError, match=r"made by ResidualVectorQuantizer \(config [0-9a-f]{16}\)"):
        ResidualVectorQuantizer(num_atoms=16, latent_channels=4, num_stages=2, patch_size=2).decode(
            FACTORIES["rvq"]().encode(z)
        )


@pytest.mark.parametrize("name", ["rvq", "fsq_patch", "sq", "ecsq"])
def test_bfloat16_inputs_and_models_code_in_float32(name):
    model = trained(name)
    z = latents(6).to(torch.bfloat16)
    out = model(z)
    assert out.latents.dtype == torch.bfloat16 and torch.isfinite(out.latents.float()).all()
    reference = model(z.float())  # bfloat16 → float32 is exact: the same codes
    assert torch.equal(out.codes.indices, reference.codes.indices)
    assert torch.equal(out.latents, reference.latents.to(torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model(z.float())
    assert autocast.latents.dtype == torch.float32 and torch.equal(autocast.latents, reference.latents)
    half = trained(name).to(torch.bfloat16)
    assert half.compute_dtype == torch.float32
    out = half.train()(z)
    assert (
        out.latents.dtype == torch.bfloat16 and torch.isfinite(out.latents.float()).all() and torch.isfinite(out.loss)
    )
    assert torch.equal(half.eval().decode(half.encode(z)).to(torch.bfloat16), half(z).latents)


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: ResidualVectorQuantizer(num_stages=0), "num_stages"),
        (lambda: ResidualVectorQuantizer(num_atoms=0), "num_atoms"),
        (lambda: ResidualVectorQuantizer(decay=1.0), "decay"),
        (lambda: ResidualVectorQuantizer(patch_size=(2, 0)), "patch_size"),
        (lambda: FiniteScalarQuantizer(levels=[5, 5], latent_channels=4), r"`levels` must be an int or 4 ints"),
        (lambda: FiniteScalarQuantizer(levels=2, latent_channels=4), r"2 levels need `preserve_symmetry=True`"),
        (lambda: FiniteScalarQuantizer(levels=1, latent_channels=4, preserve_symmetry=True), r"levels.*\[2, 65536\]"),
        (lambda: FiniteScalarQuantizer(beta=-1.0), "beta"),
        (lambda: ScalarQuantizer(bits=0), r"bits.*\[1, 16\]"),
        (lambda: ScalarQuantizer(bits=17), r"bits.*\[1, 16\]"),
        (lambda: ScalarQuantizer(range_quantile=0.5), r"range_quantile.*\[0, 0.5\)"),
        (lambda: ScalarQuantizer(latent_channels=0), "latent_channels"),
    ],
)
def test_invalid_configuration_raises(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize("name", FACTORIES)
def test_bad_latents_raise_before_any_state_changes(name):
    model = trained(name).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    z = latents(7)
    z[1, 2, 3, 4] = float("nan")
    for call in (model, model.encode):
        with pytest.raises(ValueError, match="`latents` contains NaN or infinite"):
            call(z)
    with pytest.raises(ValueError, match=r"4 channels \(\[B, 4, H, W\]\)"):
        model(torch.randn(2, 3, 8, 8))
    if model.patch_size != (1, 1):
        with pytest.raises(ValueError, match="divisible by `patch_size`"):
            model(torch.randn(2, 4, 7, 8))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# ------------------------------------------------------------------------------------------------
# In a coded VAE, and on two ranks
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rvq", "fsq", "sq", "ecsq"])
def test_coded_vae_compresses_exactly_and_round_trips(name, tmp_path):
    from sd_sparse import AutoencoderKLWithBottleneck
    from sd_sparse.testing import tiny_stable_diffusion_components

    vae = tiny_stable_diffusion_components()["vae"]
    coded = with_bottleneck(vae, trained(name))
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        restored = coded.decompress(coded.compress(images))
        assert torch.equal(restored, coded.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1))
    coded.save_pretrained(tmp_path)
    loaded = AutoencoderKLWithBottleneck.from_pretrained(tmp_path).eval()
    assert type(loaded.bottleneck) is type(coded.bottleneck)
    assert loaded.bits_per_position == coded.bits_per_position
    with torch.no_grad():
        assert torch.equal(loaded.decompress(coded.compress(images)), restored)


def _rank_models(rank):
    torch.manual_seed(100 + rank)  # different initial weights per rank: data init and range fits must sync
    return {
        "rvq": ResidualVectorQuantizer(num_atoms=16, latent_channels=4, num_stages=2, kmeans_iters=2, usage_decay=0.5),
        "sq": ScalarQuantizer(latent_channels=4, bits=3),
        "sq_quantile": ScalarQuantizer(latent_channels=4, bits=3, range_quantile=0.1, patch_size=2),
        "ecsq": EntropyCodedScalarQuantizer(latent_channels=4, step=0.3, max_level=15),
        # trained by gradient: DistributedDataParallel averages the gradients
        "fsq": FiniteScalarQuantizer(levels=[8, 5, 5, 5], latent_channels=4),
        "rvq_grad": ResidualVectorQuantizer(num_atoms=16, latent_channels=4, num_stages=2, use_ema=False),
    }


def _rank_worker(rank, out_dir):
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    models = _rank_models(rank)
    wrapped = {}
    for name, model in models.items():
        if any(p.requires_grad for p in model.parameters()):
            # no buffer broadcasts: the bottleneck itself must keep its state in sync
            ddp = DistributedDataParallel(model, broadcast_buffers=False)
            wrapped[name] = (ddp, torch.optim.SGD(model.parameters(), lr=0.1))
        else:
            wrapped[name] = (model, None)
    g = torch.Generator().manual_seed(rank)  # every rank sees different data
    for _ in range(4):
        z = (torch.randn(2, 4, 8, 8, generator=g) * (1 + rank)).to(torch.bfloat16)
        for module, optimizer in wrapped.values():
            out = module(z)
            if optimizer is not None:
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
    torch.save({name: m.state_dict() for name, m in models.items()}, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_ranks_keep_identical_state(tmp_path):
    run_two_ranks(_rank_worker, str(tmp_path))
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    fresh = {name: model.state_dict() for name, model in _rank_models(0).items()}
    for name, state in states[0].items():
        for key, value in state.items():
            assert torch.equal(value, states[1][name][key]), f"{name}.{key} differs between ranks"
        changed = [k for k, v in state.items() if v.is_floating_point() and not torch.equal(v, fresh[name][k])]
        assert changed, f"{name} was not trained"
    assert int(states[0]["sq"]["fitted_batches"]) == 4
