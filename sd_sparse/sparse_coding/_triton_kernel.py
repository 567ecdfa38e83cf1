"""The fused Batch-OMP kernel in Triton: one launch codes a block of signals through all S rounds.

Imported only when `batch_omp(..., backend="triton")` (or `"auto"` on CUDA) first needs it, so
`import sd_sparse` never imports triton. With ``TRITON_INTERPRET=1`` set before that first use,
Triton's interpreter runs the same kernel on CPU tensors (how the tests check it without a GPU).

One program takes `BLOCK_N` signals and keeps, in registers, their correlations with every atom
(`alpha [BLOCK_N, K]`), supports, inverse Cholesky factors (`linv [BLOCK_N, S, S]`) and
coordinates on the orthonormalised support (`y [BLOCK_N, S]`). Per round: argmax of |alpha| off
the support, `w = linv G[support, j]`, the new row of `linv`, and `alpha -= y_s D q_s` with
`D q_s = sum_t linv[s, t] G[idx_t]` (Gram rows gathered from global memory, where they stay in
L2). Only the S indices and values are written. The rules are the C kernel's (`_omp_kernel_impl.h`):
a signal stops when its squared residual is `<= tol`, when the best correlation is negligible
(`a_j^2 <= eps ||x||^2`) or when the next atom is linearly dependent on the support (`1 - |w|^2 <= eps`);
support atoms are never chosen again; ties go to the lowest atom index.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _batch_omp_kernel(
    x_ptr,  # [N, L] signals, float32, contiguous
    atoms_t_ptr,  # [L, K] unit-norm atoms as columns, float32, contiguous
    gram_ptr,  # [K, K] atoms @ atoms.T, float32, contiguous
    indices_ptr,  # [N, S] int64 out
    values_ptr,  # [N, S] float32 out
    N,
    K,
    L,
    tol,
    eps,
    S: tl.constexpr,
    USE_TOL: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    ks = tl.arange(0, BLOCK_K)
    k_ok = ks < K
    slots = tl.arange(0, BLOCK_S)

    # alpha = X D^T for the block, as the C kernel computes it: one FMA per l, in order (no TF32)
    alpha = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    xn2 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for l in range(L):
        x_l = tl.load(x_ptr + rows * L + l, mask=row_ok, other=0.0)
        atoms_l = tl.load(atoms_t_ptr + l * K + ks, mask=k_ok, other=0.0)
        alpha += x_l[:, None] * atoms_l[None, :]
        xn2 += x_l * x_l

    indices = tl.zeros((BLOCK_N, BLOCK_S), dtype=tl.int32)
    linv = tl.zeros((BLOCK_N, BLOCK_S, BLOCK_S), dtype=tl.float32)
    y = tl.zeros((BLOCK_N, BLOCK_S), dtype=tl.float32)
    excluded = (ks[None, :] >= K) | (rows[:, None] < 0)  # padding atoms, then the support too
    active = row_ok
    res2 = xn2
    for s in range(S):
        if USE_TOL:
            active = active & (res2 > tol)
        score = tl.where(excluded, -1.0, tl.abs(alpha))
        j = tl.argmax(score, axis=1, tie_break_left=True).to(tl.int32)
        chosen = ks[None, :] == j[:, None]
        aj = tl.sum(tl.where(chosen & ~excluded, alpha, 0.0), axis=1)
        # w = L^{-1} G[support, j]: the new atom's coordinates on the orthonormalised support
        g = tl.load(gram_ptr + indices * K + j[:, None], mask=(slots[None, :] < s) & row_ok[:, None], other=0.0)
        w = tl.sum(linv * g[:, None, :], axis=2)
        dd = 1.0 - tl.sum(w * w, axis=1)
        active = active & (aj * aj > eps * xn2) & (dd > eps)
        inv_d = tl.where(active, tl.div_rn(1.0, tl.sqrt_rn(tl.maximum(dd, eps))), 0.0)  # IEEE, as in C
        # new row of L^{-1}: [-w^T L^{-1} / d, 1 / d]
        row = tl.where(slots[None, :] == s, inv_d[:, None], -tl.sum(w[:, :, None] * linv, axis=1) * inv_d[:, None])
        at_s = slots[None, :] == s
        linv = tl.where(at_s[:, :, None], row[:, None, :], linv)
        y_s = aj * inv_d
        y = tl.where(at_s, y_s[:, None], y)
        indices = tl.where(at_s, tl.where(active, j, 0)[:, None], indices)
        excluded = excluded | (chosen & active[:, None])
        res2 = res2 - y_s * y_s
        if s + 1 < S:
            # alpha -= y_s D q_s, with D q_s = sum_t linv[s, t] G[idx_t]
            direction = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
            for t in range(s + 1):
                at_t = slots[None, :] == t
                atom_t = tl.sum(tl.where(at_t, indices, 0), axis=1)
                weight_t = tl.sum(tl.where(at_t, row, 0.0), axis=1)
                gram_row = tl.load(
                    gram_ptr + atom_t[:, None] * K + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
                )
                direction += weight_t[:, None] * gram_row
            alpha = alpha - y_s[:, None] * direction

    values = tl.sum(y[:, :, None] * linv, axis=1)  # gamma = L^{-T} y; zero past a signal's stop
    out = rows[:, None] * S + slots[None, :]
    out_ok = row_ok[:, None] & (slots[None, :] < S)
    tl.store(indices_ptr + out, indices.to(tl.int64), mask=out_ok)
    tl.store(values_ptr + out, values, mask=out_ok)


# True when TRITON_INTERPRET=1 was set at import: the kernel then runs on CPU tensors (numpy).
INTERPRETED = type(_batch_omp_kernel).__name__ == "InterpretedFunction"


def _launch_shape(num_atoms: int, sparsity: int, num_signals: int | None = None, num_sms: int | None = None) -> dict:
    """Block sizes: about 16 alpha values per thread, which compiles to 80 registers and no spills
    for sm_90 at K = 512 and K = 4096 (`benchmarks/triton_kernel_resources.py`), so several blocks
    share an SM. Small batches (one SD latent: a few hundred vectors) get smaller blocks, so that
    there are at least 4 programs per SM when the signals allow it."""
    block_k = max(16, triton.next_power_of_2(num_atoms))
    num_warps = 8 if block_k >= 4096 else 4
    block_n = max(1, min(32, 16 * 32 * num_warps // block_k))
    if num_signals is not None and num_sms is not None:
        while block_n > 1 and triton.cdiv(num_signals, block_n) < 4 * num_sms:
            block_n //= 2
    while num_warps > 1 and block_n * block_k < 32 * num_warps:  # no idle warps on tiny blocks
        num_warps //= 2
    return {
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
        "BLOCK_S": max(2, triton.next_power_of_2(sparsity)),
        "num_warps": num_warps,
    }


def _num_sms(device: torch.device) -> int | None:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else None


def batch_omp_triton(
    signals: torch.Tensor,
    atoms: torch.Tensor,
    sparsity: int,
    tol: float | None,
    eps: float,
    launch_shape: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-OMP of `signals [N, L]` on unit-norm `atoms [K, L]` (float32); `indices, values [N, S]`.

    `launch_shape` (`{"BLOCK_N": int, "num_warps": int}`) overrides `_launch_shape`'s choice; only
    `benchmarks/triton_launch_sweep.py` uses it, to measure the table the defaults are tuned from."""
    signals = signals.contiguous()
    gram = (atoms @ atoms.t()).contiguous()
    n, dim = signals.shape
    indices = torch.empty(n, sparsity, dtype=torch.int64, device=signals.device)
    values = torch.empty(n, sparsity, dtype=signals.dtype, device=signals.device)
    shape = _launch_shape(atoms.shape[0], sparsity, n, _num_sms(signals.device))
    if launch_shape is not None:
        shape.update(launch_shape)
    grid = (triton.cdiv(n, shape["BLOCK_N"]),)
    _batch_omp_kernel[grid](
        signals,
        atoms.t().contiguous(),
        gram,
        indices,
        values,
        n,
        atoms.shape[0],
        dim,
        0.0 if tol is None else float(tol),
        float(eps),
        S=sparsity,
        USE_TOL=tol is not None,
        enable_fp_fusion=True,  # a*b + c as one FMA, as the C kernel's SIMD loops (and triton < 3.10's default)
        **shape,
    )
    return indices, values
