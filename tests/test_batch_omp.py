"""Batch-OMP against scikit-learn's reference OMP, on good and degenerate problems."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import orthogonal_mp_gram

from sd_sparse import SparseCodes, batch_omp
from sd_sparse.sparse_coding import _native
from sd_sparse.sparse_coding.codes import smallest_index_dtype

BACKENDS = ["native", "torch"]


@pytest.fixture(autouse=True)
def _require_native(request):
    if "backend" in request.fixturenames and request.getfixturevalue("backend") == "native":
        if _native.load_kernel() is None:
            pytest.skip("no C compiler: the native kernel is unavailable")


def gaussian_problem(n, k, l, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(k, l, generator=g, dtype=torch.float64)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    signals = torch.randn(n, l, generator=g, dtype=torch.float64)
    return signals.to(dtype), dictionary.to(dtype)


def sklearn_codes(signals, dictionary, sparsity=None, tol=None):
    X = signals.double().numpy()
    D = dictionary.double().numpy()
    kwargs = {"n_nonzero_coefs": sparsity} if tol is None else {"tol": tol, "norms_squared": (X**2).sum(1)}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a pursuit stops early
        coef = orthogonal_mp_gram(D @ D.T, D @ X.T, **kwargs)
    return np.asarray(coef).reshape(D.shape[0], -1).T  # [N, K]


def support_agreement(dense, reference):
    return float(((dense != 0) == (reference != 0)).all(1).mean())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,k,l,s", [(3000, 512, 16, 5), (1000, 128, 64, 8), (2000, 16, 4, 2)])
def test_matches_sklearn_float64(backend, n, k, l, s):
    signals, dictionary = gaussian_problem(n, k, l, seed=k + l)
    reference = sklearn_codes(signals, dictionary, s)
    codes = batch_omp(signals, dictionary, s, backend=backend)
    dense = codes.to_dense(k).numpy()
    assert support_agreement(dense, reference) >= 0.999
    assert np.abs(dense - reference).max() < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_sklearn_float32(backend):
    signals, dictionary = gaussian_problem(3000, 512, 16, seed=3, dtype=torch.float32)
    reference = sklearn_codes(signals, dictionary, 5)
    codes = batch_omp(signals, dictionary, 5, backend=backend)
    assert codes.values.dtype == torch.float32
    dense = codes.to_dense(512).double().numpy()
    assert support_agreement(dense, reference) >= 0.999
    same = ((dense != 0) == (reference != 0)).all(1)
    rel = np.abs(dense - reference)[same].max() / np.abs(reference[same]).max()
    assert rel < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_tol_matches_sklearn(backend):
    signals, dictionary = gaussian_problem(2000, 256, 16, seed=5)
    tol = 0.3 * float(signals.square().sum(1).mean())
    assert bool((signals.square().sum(1) > tol).any())
    reference = sklearn_codes(signals, dictionary, tol=tol)
    # S = L bounds sklearn's support too (L independent atoms explain any signal exactly)
    codes = batch_omp(signals, dictionary, 16, tol=tol, backend=backend)
    dense = codes.to_dense(256).numpy()
    # sklearn always takes at least one atom; we stop before the first when ||x||^2 <= tol already
    above = (signals.square().sum(1) > tol).numpy()
    assert support_agreement(dense[above], reference[above]) >= 0.999
    assert np.abs(dense[above] - reference[above]).max() < 1e-6
    residual = (signals - codes.reconstruct(dictionary)).square().sum(1)
    assert bool((residual <= tol + 1e-9).all())
    assert bool((dense[~above] == 0).all())
    # supports are as small as the tolerance allows: fewer atoms than S for most signals
    assert (dense != 0).sum(1).mean() < 16


def test_backends_agree_exactly_in_float64():
    signals, dictionary = gaussian_problem(4000, 300, 24, seed=11)
    a = batch_omp(signals, dictionary, 6, backend="native")
    b = batch_omp(signals, dictionary, 6, backend="torch", chunk_size=333)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.values, b.values, rtol=1e-9, atol=1e-10)


def test_unnormalised_dictionary_codes_reconstruct_with_it():
    signals, dictionary = gaussian_problem(500, 64, 8, seed=2)
    scales = torch.rand(64, 1, dtype=torch.float64) * 5 + 0.1
    scaled = batch_omp(signals, dictionary * scales, 3)
    unit = batch_omp(signals, dictionary, 3)
    assert torch.equal(scaled.indices, unit.indices)
    torch.testing.assert_close(scaled.reconstruct(dictionary * scales), unit.reconstruct(dictionary))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_solved_in_float32(dtype):
    signals, dictionary = gaussian_problem(300, 64, 16, seed=4)
    codes = batch_omp(signals.to(dtype), dictionary.to(dtype), 4)
    assert codes.values.dtype == torch.float32
    reference = batch_omp(signals.to(dtype).float(), dictionary.to(dtype).float(), 4)
    assert torch.equal(codes.indices, reference.indices)


def test_empty_input():
    codes = batch_omp(torch.zeros(0, 8), torch.randn(16, 8), 3)
    assert codes.indices.shape == (0, 3) and codes.values.shape == (0, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_signals_give_zero_codes(backend):
    signals = torch.zeros(10, 16)
    codes = batch_omp(signals, torch.randn(64, 16), 5, backend=backend)
    assert bool((codes.values == 0).all())
    assert bool(((codes.indices >= 0) & (codes.indices < 64)).all())


def degenerate_dictionary(g, k, l):
    """A random dictionary with some of: duplicates, sign-flipped/scaled copies, zero atoms, low rank."""
    kind = int(torch.randint(0, 4, (), generator=g))
    if kind == 0:  # rank-deficient: every atom in an r-dimensional subspace
        r = int(torch.randint(1, l + 1, (), generator=g))
        D = torch.randn(k, r, generator=g, dtype=torch.float64) @ torch.randn(r, l, generator=g, dtype=torch.float64)
    else:
        D = torch.randn(k, l, generator=g, dtype=torch.float64)
    m = int(torch.randint(1, k // 2 + 1, (), generator=g))
    src = torch.randint(0, k, (m,), generator=g)
    dst = torch.randint(0, k, (m,), generator=g)
    if kind in (1, 3):  # duplicated and collinear atoms
        D[dst] = D[src] * (torch.rand(m, 1, generator=g, dtype=torch.float64) * 4 - 2)
    if kind in (2, 3):  # zero atoms
        D[dst[: max(1, m // 3)]] = 0
    return D


@pytest.mark.parametrize("backend", BACKENDS)
def test_property_degenerate_problems_never_nan_and_residual_never_grows(backend):
    g = torch.Generator().manual_seed(1234)
    problems = 0
    for _ in range(120):
        k = int(torch.randint(2, 40, (), generator=g))
        l = int(torch.randint(1, 12, (), generator=g))
        D = degenerate_dictionary(g, k, l)
        n = 25
        X = torch.randn(n, l, generator=g, dtype=torch.float64)
        X[: n // 5] = 0  # zero signals
        X[n // 5 : 2 * n // 5] = D[torch.randint(0, k, (n // 5,), generator=g)] * 3  # exact atoms
        max_s = min(k, l + 2)  # S >= L included
        previous = X.square().sum(1)
        for s in range(1, max_s + 1):
            for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
                codes = batch_omp(X.to(dtype), D.to(dtype), s, backend=backend)
                assert bool(torch.isfinite(codes.values).all())
                assert bool(((codes.indices >= 0) & (codes.indices < k)).all())
                if dtype == torch.float64:
                    residual = (X - codes.reconstruct(D)).square().sum(1)
                    assert bool((residual <= previous * (1 + rtol) + 1e-12).all()), (s, residual, previous)
                    # a support never holds the same atom twice
                    used = codes.values != 0
                    for row_idx, row_used in zip(codes.indices, used):
                        chosen = row_idx[row_used]
                        assert chosen.unique().numel() == chosen.numel()
                    previous = residual
            problems += n
    assert problems > 1000


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(signals=torch.randn(4, 8), dictionary=torch.randn(16, 8), sparsity=0), "sparsity"),
        (dict(signals=torch.randn(4, 8), dictionary=torch.randn(16, 8), sparsity=17), "sparsity"),
        (dict(signals=torch.randn(4, 8), dictionary=torch.randn(16, 8), sparsity=2.0), "sparsity"),
        (dict(signals=torch.randn(4, 8), dictionary=torch.randn(16, 7), sparsity=2), r"dictionary \[K, 8\]"),
        (dict(signals=torch.randn(4, 8, 1), dictionary=torch.randn(16, 8), sparsity=2), r"signals.*\[N, L\]"),
        (dict(signals=torch.randn(4, 8), dictionary=torch.randn(16), sparsity=2), r"dictionary.*\[K, L\]"),
        (dict(signals=torch.full((4, 8), float("nan")), dictionary=torch.randn(16, 8), sparsity=2), "signals.*NaN"),
        (dict(signals=torch.randn(4, 8), dictionary=torch.full((16, 8), float("inf")), sparsity=2), "dictionary.*NaN"),
        (dict(signals=torch.randn(4, 8), dictionary=torch.randn(16, 8), sparsity=2, tol=-1.0), "tol"),
        (dict(signals=torch.randn(4, 8), dictionary=torch.randn(16, 8), sparsity=2, backend="gpu"), "backend"),
        (dict(signals=torch.randint(0, 3, (4, 8)), dictionary=torch.randn(16, 8), sparsity=2), "floating"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        batch_omp(**kwargs)


def test_sparse_codes_dense_and_usage():
    signals, dictionary = gaussian_problem(50, 512, 16, seed=8, dtype=torch.float32)
    codes = batch_omp(signals, dictionary, 5)
    dense = codes.to_dense()
    assert dense.shape == (50, 512) and bool(((dense != 0).sum(1) == 5).all())
    torch.testing.assert_close(dense @ dictionary, codes.reconstruct(dictionary))
    assert codes.usage().sum() == 250
    assert smallest_index_dtype(512) == torch.int16 and smallest_index_dtype(200) == torch.uint8
    with pytest.raises(ValueError, match="num_atoms"):
        SparseCodes(codes.indices, codes.values).to_dense()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cuda_agrees_with_cpu(dtype):
    signals, dictionary = gaussian_problem(20000, 512, 16, seed=21, dtype=dtype)
    cpu = batch_omp(signals, dictionary, 5)
    gpu = batch_omp(signals.cuda(), dictionary.cuda(), 5)
    assert gpu.indices.is_cuda and gpu.values.is_cuda
    same = (cpu.indices == gpu.indices.cpu()).all(1).float().mean()
    assert same >= 0.999
    rows = (cpu.indices == gpu.indices.cpu()).all(1)
    torch.testing.assert_close(gpu.values.cpu()[rows], cpu.values[rows], rtol=1e-3, atol=1e-4)


def test_portable_build_without_simd_agrees(tmp_path, monkeypatch):
    """The kernel built for a generic CPU (scalar stand-ins for the SIMD macros) gives the same codes."""
    compiler = _native._compiler()
    if compiler is None:
        pytest.skip("no C compiler")
    path = _native.build(compiler, [["-O2", "-fPIC", "-shared", "-pthread", "-mno-avx2"]], directory=tmp_path)
    if path is None:
        path = _native.build(compiler, [["-O2", "-fPIC", "-shared", "-pthread"]], directory=tmp_path)
    lib = _native.load_library(path)
    signals, dictionary = gaussian_problem(2000, 100, 12, seed=9)
    reference = sklearn_codes(signals, dictionary, 4)
    monkeypatch.setattr(_native, "load_kernel", lambda: lib)
    for dtype in (torch.float64, torch.float32):
        codes = batch_omp(signals.to(dtype), dictionary.to(dtype), 4, backend="native")
        assert support_agreement(codes.to_dense().double().numpy(), reference) >= 0.999
