"""ISTA/FISTA against closed forms, and the online BCD dictionary update against its formulas."""

import numpy as np
import pytest
import torch

from sd_sparse.sparse_coding.dictionary_update import (
    OnlineDictionaryUpdate,
    block_coordinate_descent,
    forgetting_factor,
)
from sd_sparse.sparse_coding.ista import fista, ista, soft_threshold


def lasso_objective(x, d, codes, lam):
    return 0.5 * (x - codes @ d).square().sum(1) + lam * codes.abs().sum(1)


def test_orthonormal_dictionary_has_closed_form_solution():
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    x = torch.randn(40, 12, dtype=torch.float64)
    expected = soft_threshold(x @ q.t(), 0.3)  # lasso with orthonormal atoms
    torch.testing.assert_close(ista(x, q, 0.3, num_iters=3), expected)
    torch.testing.assert_close(fista(x, q, 0.3, num_iters=3), expected)


def test_fista_reaches_lower_objective_than_ista_for_same_iterations():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(128, 16, generator=g, dtype=torch.float64)
    d /= d.norm(dim=1, keepdim=True)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    lam = 0.05
    zero = lasso_objective(x, d, torch.zeros(64, 128, dtype=torch.float64), lam).mean()
    fi = lasso_objective(x, d, fista(x, d, lam, 30), lam).mean()
    is_ = lasso_objective(x, d, ista(x, d, lam, 30), lam).mean()
    converged = lasso_objective(x, d, fista(x, d, lam, 3000), lam).mean()
    assert converged < fi < is_ < zero
    assert fi - converged < 0.5 * (is_ - converged)


def test_ista_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sparsity_weight"):
        ista(torch.randn(2, 4), torch.randn(8, 4), -1.0)
    with pytest.raises(ValueError, match="num_iters"):
        fista(torch.randn(2, 4), torch.randn(8, 4), 0.1, num_iters=0)
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        ista(torch.randn(2, 5), torch.randn(8, 4), 0.1)


def test_forgetting_factor_follows_eq_25_26():
    xi = 10
    for t in (1, 5, 9, 10, 11, 50):
        theta = t * xi if t < xi else xi**2 + t - xi
        assert forgetting_factor(t, xi) == pytest.approx((theta + 1 - xi) / (theta + 1))
    assert forgetting_factor(1, 4096) == pytest.approx(1 / 4097)  # the first step forgets the zero init
    with pytest.raises(ValueError, match="step"):
        forgetting_factor(0, 10)


def reference_bcd(D, A, B):
    """The paper's column-wise formula, on numpy with atoms as columns, one atom after another."""
    D = D.T.copy()  # [L, K]
    A, B = A.copy(), B.T.copy()  # B: [L, K]
    for j in range(D.shape[1]):
        if A[j, j] <= 1e-10:
            continue
        col = (B[:, j] - D @ A[:, j] + D[:, j] * A[j, j]) / A[j, j]
        D[:, j] = col / np.linalg.norm(col)
    return D.T


def test_online_update_single_step_equals_the_formulas():
    g = torch.Generator().manual_seed(3)
    K, L, N = 24, 6, 200
    D = torch.randn(K, L, generator=g, dtype=torch.float64)
    D /= D.norm(dim=1, keepdim=True)
    codes = torch.randn(N, K, generator=g, dtype=torch.float64) * (torch.rand(N, K, generator=g) < 0.2)
    codes[:, 0] = 0  # an unused atom must stay as it is
    signals = torch.randn(N, L, generator=g, dtype=torch.float64)
    update = OnlineDictionaryUpdate(K, L, dtype=torch.float64)
    update.A.copy_(torch.eye(K, dtype=torch.float64))  # pretend an earlier step happened
    update.B.copy_(D)
    update.num_steps = 3
    beta = forgetting_factor(4, N)
    A = beta * np.eye(K) + codes.numpy().T @ codes.numpy()
    B = beta * D.numpy() + codes.numpy().T @ signals.numpy()
    expected = reference_bcd(D.numpy(), A, B)
    new = update.step(D, codes, signals)
    np.testing.assert_allclose(update.A.numpy(), A, rtol=1e-12)
    np.testing.assert_allclose(update.B.numpy(), B, rtol=1e-12)
    np.testing.assert_allclose(new.numpy(), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(block_coordinate_descent(D, update.A, update.B), new)


def test_online_update_reduces_reconstruction_error():
    from sd_sparse import batch_omp

    g = torch.Generator().manual_seed(4)
    true = torch.randn(32, 8, generator=g)
    true /= true.norm(dim=1, keepdim=True)
    data = (torch.randn(4000, 32, generator=g) * (torch.rand(4000, 32, generator=g) < 0.08)) @ true
    D = torch.randn(32, 8, generator=g)
    D /= D.norm(dim=1, keepdim=True)

    def error(dictionary):
        return (data - batch_omp(data, dictionary, 3).reconstruct(dictionary)).square().mean()

    before = error(D)
    update = OnlineDictionaryUpdate(32, 8)
    for batch in data.split(500):
        for _ in range(3):
            D = update.step(D, batch_omp(batch, D, 3).to_dense(32), batch)
    assert error(D) < 0.7 * before
