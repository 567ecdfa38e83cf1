"""The bottleneck contract: shapes, straight-through gradients, state updates, save/load, errors."""

import pytest
import torch

from sd_sparse import Codes, DictionaryBottleneck, LISTABottleneck, VectorQuantizer, batch_omp
from sd_sparse.bottlenecks import patchify, unpatchify
from sd_sparse.metrics import bits_per_vector, perplexity
from sd_sparse.sparse_coding.dictionary_update import OnlineDictionaryUpdate
from sd_sparse.sparse_coding.ista import ista

FACTORIES = {
    "vq": lambda: VectorQuantizer(num_atoms=64, latent_channels=4, patch_size=2),
    "vq_grad": lambda: VectorQuantizer(num_atoms=64, latent_channels=4, use_ema=False, init_from_data=False),
    "dl": lambda: DictionaryBottleneck(num_atoms=64, latent_channels=4, sparsity=3, patch_size=2),
    "dl_bcd": lambda: DictionaryBottleneck(num_atoms=64, latent_channels=4, sparsity=3, dictionary_update="bcd"),
    "lista": lambda: LISTABottleneck(num_atoms=64, latent_channels=4, num_blocks=3, sparsity=4),
    "lista_untied": lambda: LISTABottleneck(num_atoms=64, latent_channels=4, num_blocks=3, tied_weights=False),
}


def latents(seed=0, shape=(2, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", FACTORIES)
def test_output_contract(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    z = latents()
    atoms = model.atoms.detach().clone() if hasattr(model, "atoms") else None  # BCD updates them in forward
    out = model(z)
    assert out.latents.shape == z.shape and out.latents.dtype == z.dtype
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.usage.shape == (64,)
    n_vectors = 2 * 8 * 8 // (model.patch_size[0] * model.patch_size[1])
    assert isinstance(out.codes, Codes) and out.codes.latent_shape == tuple(z.shape)
    assert out.codes.indices.shape[0] == n_vectors and out.codes.indices.dtype == torch.long
    if isinstance(model, VectorQuantizer):
        assert out.codes.indices.shape == (n_vectors, 1) and out.codes.coefficients is None
        assert out.usage.sum() == n_vectors
    else:
        # codes decode to exactly the latents the decoder sees (with the atoms they were coded with)
        vectors = out.codes.to_sparse().reconstruct(atoms)
        torch.testing.assert_close(unpatchify(vectors, z.shape, model.patch_size), out.latents)
    assert 1 <= float(out.perplexity) <= 64
    assert int(out.dead_codes) == int((out.usage == 0).sum())
    as_tuple = model(z, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == z.shape


@pytest.mark.parametrize("name", ["vq", "vq_grad", "dl", "dl_bcd"])
def test_straight_through_gradient_is_identity_to_the_input(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    z = latents().requires_grad_(True)
    upstream = torch.randn_like(z)
    (model(z).latents * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)


@pytest.mark.parametrize("name", ["vq_grad", "dl"])
def test_codebook_and_dictionary_learn_from_the_loss(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    z = latents().requires_grad_(True)
    model(z).loss.backward()
    param = model.codebook if isinstance(model, VectorQuantizer) else model.dictionary
    assert param.grad is not None and param.grad.abs().sum() > 0
    assert z.grad.abs().sum() > 0  # commitment reaches the encoder


def test_dictionary_loss_matches_the_paper():
    torch.manual_seed(0)
    model = DictionaryBottleneck(num_atoms=32, latent_channels=4, sparsity=2, beta=0.25)
    z = latents()
    out = model(z)
    vectors = patchify(z)
    recon = batch_omp(vectors, model.atoms.detach(), 2).reconstruct(model.atoms.detach())
    mse = (vectors - recon).square().mean()
    torch.testing.assert_close(out.loss, mse * 1.25)
    torch.testing.assert_close(out.latents, unpatchify(recon, z.shape))


def test_ema_single_step_equals_direct_computation():
    torch.manual_seed(0)
    vq = VectorQuantizer(
        num_atoms=16, latent_channels=4, decay=0.9, epsilon=1e-5, init_from_data=False, restart_threshold=0.0
    )
    codebook = vq.codebook.detach().clone()
    size0, sum0 = vq.ema_cluster_size.clone(), vq.ema_embed_sum.clone()
    z = latents(shape=(2, 4, 4, 4))
    out = vq(z)
    x = patchify(z)
    idx = torch.cdist(x, codebook).argmin(1)
    assert torch.equal(out.codes.indices[:, 0], idx)
    counts = torch.bincount(idx, minlength=16).float()
    sums = torch.stack([x[idx == k].sum(0) for k in range(16)])
    size = 0.9 * size0 + 0.1 * counts
    embed = 0.9 * sum0 + 0.1 * sums
    n = size.sum()
    smoothed = (size + 1e-5) / (n + 16 * 1e-5) * n
    torch.testing.assert_close(vq.ema_cluster_size, size)
    torch.testing.assert_close(vq.codebook.detach(), embed / smoothed[:, None])
    torch.testing.assert_close(out.latents, unpatchify(codebook[idx], z.shape))
    torch.testing.assert_close(out.loss, 0.25 * (x - codebook[idx]).square().mean())


@pytest.mark.parametrize("use_ema", [True, False])
def test_vq_data_init_and_restarts_by_usage_share(use_ema):
    """The VQ restart rule is the dictionary's: a code whose moving-average share of the selections
    falls below `restart_threshold / K` is replaced, at the next training forward, by a batch vector."""
    torch.manual_seed(0)
    vq = VectorQuantizer(num_atoms=8, latent_channels=4, restart_threshold=0.5, usage_decay=0.5, use_ema=use_ema)
    z = latents(shape=(1, 4, 4, 4))
    vq(z)
    assert bool(vq.initialized)
    vq.usage_average.zero_()  # pretend no code has been used for a long time
    out = vq(z)
    share = out.usage / out.usage.sum()
    expected_dead = 0.5 * share < 0.5 / 8  # the average after one step of decay 0.5
    assert torch.equal(vq.restart_pending, expected_dead) and bool(expected_dead.any())
    vq._apply_restarts()
    vectors = patchify(z)
    dist = torch.cdist(vq.codebook.detach()[expected_dead], vectors).min(1).values
    assert bool((dist < 1e-5).all())
    assert not bool(vq.restart_pending.any())


@pytest.mark.parametrize("update", ["gradient", "bcd"])
def test_dictionary_restarts_unused_atoms_from_badly_coded_vectors(update):
    """Atoms outside the data's subspace are never selected; they are replaced, in the next training
    forward, by normalised data vectors (the worst coded first), and used atoms stay as they were."""
    torch.manual_seed(0)
    K = 16
    model = DictionaryBottleneck(
        num_atoms=K, latent_channels=4, sparsity=1, restart_threshold=0.5, usage_decay=0.25, dictionary_update=update
    )
    # data in the plane of the first two channels; atoms 0-3 span it, atoms 4-15 point elsewhere
    angles = torch.arange(4) * torch.pi / 4
    outside = torch.nn.functional.normalize(torch.randn(K - 4, 2), dim=1)
    atoms = torch.cat(
        [
            torch.stack([angles.cos(), angles.sin(), 0 * angles, 0 * angles], 1),
            torch.cat([torch.zeros(K - 4, 2), outside], 1),
        ]
    )
    model.dictionary.data.copy_(atoms)
    z = torch.zeros(2, 4, 8, 8)
    z[:, :2] = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    vectors = patchify(z)
    out = model(z)
    assert out.usage[4:].sum() == 0
    assert bool(model.restart_pending[4:].all()) and not bool(model.restart_pending[:4].any())
    if update == "gradient":  # the first forward has not touched the dictionary yet
        torch.testing.assert_close(model.dictionary.detach(), atoms)
    before = model.atoms.detach().clone()
    model(z)
    after = model.atoms.detach()
    if update == "gradient":  # (BCD moves the used atoms in every forward)
        torch.testing.assert_close(after[:4], before[:4])
    # each restarted atom is one of the batch's vectors, normalised, and lies in the data plane
    cos = after[4:] @ torch.nn.functional.normalize(vectors, dim=1).t()
    assert bool((cos.max(1).values > 1 - (1e-5 if update == "gradient" else 1e-2)).all())
    assert after[4:, 2:].abs().max() < 1e-6
    residual = (vectors - model(z).latents.permute(0, 2, 3, 1).reshape(-1, 4)).square().sum()
    assert residual < (vectors - out.latents.permute(0, 2, 3, 1).reshape(-1, 4)).square().sum()


def test_eval_mode_changes_no_state():
    torch.manual_seed(0)
    restarting = DictionaryBottleneck(num_atoms=64, latent_channels=4, sparsity=3, restart_threshold=0.9)
    for model in (FACTORIES["vq"](), FACTORIES["dl_bcd"](), restarting):
        model.eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model(latents())
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k


def test_bcd_bottleneck_step_equals_online_update():
    torch.manual_seed(0)
    model = FACTORIES["dl_bcd"]()
    start = model.dictionary.detach().clone()
    z = latents()
    vectors = patchify(z)
    codes = batch_omp(vectors, start, 3)
    expected = OnlineDictionaryUpdate(64, 4).step(start, codes.to_dense(64), vectors)
    out = model(z)
    torch.testing.assert_close(model.dictionary.detach(), expected)
    assert int(model.bcd_steps) == 1
    torch.testing.assert_close(out.loss, 0.25 * (vectors - codes.reconstruct(start)).square().mean())


def test_lista_at_initialisation_is_ista():
    torch.manual_seed(0)
    model = LISTABottleneck(num_atoms=32, latent_channels=4, num_blocks=4, sparsity_weight=0.2)
    vectors = patchify(latents().double())
    model = model.double()
    expected = ista(vectors, model.atoms.double(), 0.2, num_iters=4)
    torch.testing.assert_close(model.coefficients(vectors), expected)


def test_lista_top_s_projection_and_gradients():
    torch.manual_seed(0)
    model = FACTORIES["lista"]()
    model.thresholds.data.zero_()  # make codes dense so that the projection matters
    z = latents().requires_grad_(True)
    out = model(z)
    assert int((model.coefficients(patchify(z.detach())) != 0).sum(1).max()) <= 4
    assert out.codes.sparsity == 4
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("name", FACTORIES)
def test_save_and_load_give_bit_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    model(latents(1))  # one training step of state (EMA, BCD, data init)
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = type(model).from_pretrained(tmp_path).eval()
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    z = latents(2)
    a, b = model(z), loaded(z)
    assert torch.equal(a.latents, b.latents)
    assert torch.equal(a.loss, b.loss)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", FACTORIES)
def test_half_precision_models_code_in_float32(name, dtype):
    torch.manual_seed(0)
    model = FACTORIES[name]().to(dtype)
    assert model.compute_dtype == torch.float32
    z = latents().to(dtype)
    out = model(z)
    assert out.latents.dtype == dtype and torch.isfinite(out.latents.float()).all()
    assert torch.isfinite(out.loss)


def test_autocast_is_disabled_inside():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = FACTORIES["vq"]()(latents())
    assert out.latents.dtype == torch.float32


def test_float64_models_code_in_float64():
    torch.manual_seed(0)
    model = FACTORIES["dl"]().double()
    z = latents().double()
    out = model(z)
    assert out.latents.dtype == torch.float64 and out.codes.coefficients.dtype == torch.float64


def test_patchify_rows_are_spatial_patches():
    z = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    rows = patchify(z, (2, 3))
    assert rows.shape == (2 * 2 * 2, 3 * 2 * 3)
    # row (b=1, i=1, j=0) is the patch z[1, :, 2:4, 0:3] flattened channel-first
    torch.testing.assert_close(rows[1 * 4 + 1 * 2 + 0], z[1, :, 2:4, 0:3].reshape(-1))
    torch.testing.assert_close(unpatchify(rows, z.shape, (2, 3)), z)


def test_perplexity_and_bits():
    assert float(perplexity(torch.ones(512))) == pytest.approx(512, rel=1e-5)
    assert float(perplexity(torch.tensor([0.0, 7.0, 0.0]))) == pytest.approx(1.0)
    assert float(perplexity(torch.zeros(4))) == 0.0
    assert bits_per_vector(512) == 9
    assert bits_per_vector(512, sparsity=5, value_bits=16) == 5 * 25


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: VectorQuantizer(num_atoms=0), "num_atoms"),
        (lambda: VectorQuantizer(decay=1.5), "decay"),
        (lambda: VectorQuantizer(beta=-1), "beta"),
        (lambda: VectorQuantizer(kmeans_iters=-1), "kmeans_iters"),
        (lambda: VectorQuantizer(patch_size=(2, 0)), "patch_size"),
        (lambda: DictionaryBottleneck(num_atoms=8, sparsity=9), r"sparsity.*\[1, 8\]"),
        (lambda: DictionaryBottleneck(sparsity=0), "sparsity"),
        (lambda: DictionaryBottleneck(dictionary_update="sgd"), "dictionary_update"),
        (lambda: DictionaryBottleneck(latent_channels=0), "latent_channels"),
        (lambda: DictionaryBottleneck(tol=-0.1), "tol"),
        (lambda: DictionaryBottleneck(restart_threshold=-1.0), "restart_threshold"),
        (lambda: DictionaryBottleneck(restart_threshold=1.5), r"restart_threshold.*\[0, 1\]"),
        (lambda: DictionaryBottleneck(restart_threshold=float("nan")), "restart_threshold"),
        (lambda: DictionaryBottleneck(usage_decay=1.0), "usage_decay"),
        (lambda: LISTABottleneck(num_blocks=0), "num_blocks"),
        (lambda: LISTABottleneck(sparsity_weight=-1.0), "sparsity_weight"),
        (lambda: LISTABottleneck(num_atoms=4, sparsity=5), "sparsity"),
    ],
)
def test_invalid_configuration_raises(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize("name", ["vq", "dl", "lista"])
def test_invalid_latents_raise(name):
    model = FACTORIES[name]()
    with pytest.raises(ValueError, match=r"4 channels \(\[B, 4, H, W\]\)"):
        model(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.randn(4, 8, 8))
    if model.patch_size != (1, 1):
        with pytest.raises(ValueError, match="divisible by `patch_size`"):
            model(torch.randn(2, 4, 7, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", FACTORIES)
def test_non_finite_latents_raise_before_any_state_changes(name, bad):
    """One bad batch in training mode must not touch the codebook, EMA, BCD or restart state."""
    torch.manual_seed(0)
    model = FACTORIES[name]()
    model(latents(1))  # initialised, with EMA/BCD/usage state
    model(latents(2))  # restarts planned
    before = {k: v.clone() for k, v in model.state_dict().items()}
    z = latents(3)
    z[1, 2, 3, 4] = bad
    for call in (model, model.encode):
        with pytest.raises(ValueError, match="`latents` contains NaN or infinite"):
            call(z)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_finiteness_check_can_be_switched_off():
    model = FACTORIES["vq"]().eval()
    model.check_latents = False
    z = latents()
    z[0, 0, 0, 0] = float("nan")
    assert model(z).latents.shape == z.shape  # documented opt-out: no error, the caller owns the check


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", FACTORIES)
def test_cuda_forward_backward(name):
    torch.manual_seed(0)
    model = FACTORIES[name]().cuda()
    z = latents().cuda().requires_grad_(True)
    out = model(z)
    (out.loss + out.latents.square().mean()).backward()
    assert out.latents.is_cuda and torch.isfinite(out.loss) and z.grad is not None
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model(z).latents.dtype == torch.float32


@pytest.mark.parametrize(
    "factory",
    [
        lambda: VectorQuantizer(num_atoms=512, latent_channels=3, patch_size=8, use_ema=False),
        lambda: DictionaryBottleneck(num_atoms=512, latent_channels=3, sparsity=5, patch_size=8),
        lambda: LISTABottleneck(num_atoms=64, latent_channels=3, num_blocks=2, patch_size=8),
    ],
)
def test_training_is_bit_reproducible(factory):
    """Same seed, same data: identical weights (no non-deterministic scatter in the backward).

    Sizes are large enough for a multi-threaded index backward to reorder its sums."""

    def train():
        torch.manual_seed(0)
        model = factory()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(8):
            out = model(torch.randn(1024, 3, 8, 8, generator=g))
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
        return {k: v.clone() for k, v in model.state_dict().items()}

    first, second = train(), train()
    for key in first:
        assert torch.equal(first[key], second[key]), key


# ------------------------------------------------------------------------------------------------
# The codes API: encode / decode / bits_per_position, self-describing codes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FACTORIES)
def test_decode_of_encode_equals_forward_bit_for_bit(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    model(latents(1))  # trained state
    model.eval()
    z = latents(2)
    codes = model.encode(z)
    assert isinstance(codes, Codes) and codes.bottleneck_class == type(model).__name__
    assert codes.fingerprint == model.config_fingerprint and codes.num_atoms == 64
    assert torch.equal(model.decode(codes), model(z).latents)
    assert torch.equal(model.decode(codes), model(z).latents)  # encode changed nothing


@pytest.mark.parametrize("name", FACTORIES)
def test_codes_index_per_image(name):
    torch.manual_seed(0)
    model = FACTORIES[name]().eval()
    z = latents(shape=(3, 4, 8, 8))
    codes = model.encode(z)
    assert codes.num_images == 3 and codes[1].latent_shape == (1, 4, 8, 8) and codes[-1].num_images == 1
    assert codes[0:2].latent_shape == (2, 4, 8, 8)
    for i in range(3):
        torch.testing.assert_close(model.decode(codes[i]), model(z[i : i + 1]).latents)
    with pytest.raises(IndexError, match="out of range"):
        codes[3]
    assert torch.equal(codes["indices"], codes.indices)


@pytest.mark.parametrize("name", FACTORIES)
def test_codes_save_load_round_trip_is_exact(name, tmp_path):
    torch.manual_seed(0)
    model = FACTORIES[name]().eval()
    z = latents()
    codes = model.encode(z)
    codes.save(tmp_path / "codes.safetensors")
    loaded = Codes.load(tmp_path / "codes.safetensors")
    assert torch.equal(loaded.indices, codes.indices) and loaded.latent_shape == codes.latent_shape
    assert torch.equal(model.decode(loaded), model.decode(codes))
    # indices are stored in the smallest integer type for K = 64
    from safetensors import safe_open

    with safe_open(str(tmp_path / "codes.safetensors"), "pt") as f:
        assert f.get_tensor("indices").dtype == torch.uint8


def test_codes_file_errors(tmp_path):
    (tmp_path / "junk").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable codes file"):
        Codes.load(tmp_path / "junk")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"lacks \['indices', 'layout', 'signature'\]"):
        Codes.load(tmp_path / "other.safetensors")


def test_decode_refuses_codes_of_another_bottleneck():
    torch.manual_seed(0)
    z = latents()
    dl_codes = FACTORIES["dl"]().encode(z)
    with pytest.raises(ValueError, match="made by DictionaryBottleneck.*this is VectorQuantizer"):
        FACTORIES["vq"]().decode(dl_codes)
    other_config = DictionaryBottleneck(num_atoms=64, latent_channels=4, sparsity=4, patch_size=2)
    with pytest.raises(ValueError, match=r"made by DictionaryBottleneck \(config [0-9a-f]{16}\)"):
        other_config.decode(dl_codes)
    with pytest.raises(ValueError, match="`codes` must be `Codes`"):
        FACTORIES["dl"]().decode(dl_codes.to_sparse())


def test_codes_behave_like_diffusers_outputs():
    """All fields are tensors: outputs compare, move and rebuild from a dict (as accelerate does)."""
    model = FACTORIES["dl"]().eval()
    codes = model.encode(latents())
    assert all(isinstance(v, torch.Tensor) for v in codes.values())
    assert codes.device == torch.device("cpu") and codes.to("cpu").device == torch.device("cpu")
    rebuilt = type(codes)(dict(codes.items()))
    assert torch.equal(model.decode(rebuilt), model.decode(codes))
    as_tuple = model(latents(), return_dict=False)
    assert isinstance(as_tuple[2], Codes)
    assert torch.equal(codes.to(dtype=torch.float64).coefficients, codes.coefficients.double())
    with pytest.raises(ValueError, match="layout"):
        Codes(indices=codes.indices)


def test_bits_per_position_of_every_bottleneck():
    assert VectorQuantizer(512, 4).bits_per_position == 9
    assert VectorQuantizer(512, 4, patch_size=2).bits_per_position == 9 / 4
    assert DictionaryBottleneck(512, 4, 8, patch_size=4).bits_per_position == 8 * (9 + 16) / 16
    assert LISTABottleneck(64, 4, sparsity=4).bits_per_position == 4 * (6 + 16)
    assert LISTABottleneck(64, 4).bits_per_position is None


@pytest.mark.parametrize("saved,loader", [(DictionaryBottleneck, VectorQuantizer), (VectorQuantizer, LISTABottleneck)])
def test_loading_another_class_folder_is_an_error_naming_both(saved, loader, tmp_path):
    saved(num_atoms=16, latent_channels=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"saved by {saved.__name__}, not {loader.__name__}"):
        loader.from_pretrained(tmp_path)


def test_configs_saved_with_the_old_key_names_still_load(tmp_path, caplog):
    """sd_sparse 0.1 saved `embedding_dim`, VQ `num_embeddings`, `dead_atom_threshold` / `dead_code_threshold`."""
    import json

    torch.manual_seed(0)
    model = DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=2, restart_threshold=0.25).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["embedding_dim"] = config.pop("latent_channels")
    config["dead_atom_threshold"] = config.pop("restart_threshold")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = DictionaryBottleneck.from_pretrained(tmp_path).eval()
    assert loaded.config.latent_channels == 4 and loaded.config.restart_threshold == 0.25
    z = latents()
    assert torch.equal(loaded(z).latents, model(z).latents)

    vq_dir = tmp_path / "vq"
    VectorQuantizer(num_atoms=8, latent_channels=4).save_pretrained(vq_dir)
    config = json.loads((vq_dir / "config.json").read_text())
    config["num_embeddings"] = config.pop("num_atoms")
    config["dead_code_threshold"] = 1.0
    (vq_dir / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        assert VectorQuantizer.from_pretrained(vq_dir).config.num_atoms == 8
    assert "dead_code_threshold" in caplog.text
