"""Batch Orthogonal Matching Pursuit (Rubinstein, Zibulevsky & Elad, 2008)."""

from __future__ import annotations

import importlib
import math
import threading
from collections import OrderedDict
from typing import Tuple

import torch

from ..errors import UserError
from . import _native
from .codes import SparseCodes

_BACKENDS = ("auto", "native", "triton", "torch")
# The Triton kernel keeps [block, K] correlations and [block, S, S] factors in registers.
_TRITON_MAX_ATOMS = 4096
_TRITON_MAX_SPARSITY = 32


def _check_arguments(signals, dictionary, sparsity, tol, backend) -> Tuple[int, int, int]:
    if not isinstance(signals, torch.Tensor) or signals.dim() != 2:
        shape = tuple(signals.shape) if isinstance(signals, torch.Tensor) else type(signals).__name__
        raise UserError(f"`signals` must be a tensor of shape [N, L], got {shape}.")
    if not isinstance(dictionary, torch.Tensor) or dictionary.dim() != 2:
        shape = tuple(dictionary.shape) if isinstance(dictionary, torch.Tensor) else type(dictionary).__name__
        raise UserError(f"`dictionary` must be a tensor of shape [K, L] (atoms as rows), got {shape}.")
    num_signals, dim = signals.shape
    num_atoms = dictionary.shape[0]
    if dictionary.shape[1] != dim:
        raise UserError(
            f"`dictionary` atoms have dimension {dictionary.shape[1]} but `signals` have dimension {dim}: "
            f"expected dictionary [K, {dim}] for signals {tuple(signals.shape)}, got {tuple(dictionary.shape)}."
        )
    if num_atoms < 1 or dim < 1:
        raise UserError(f"`dictionary` must have at least one atom of dimension >= 1, got {tuple(dictionary.shape)}.")
    if isinstance(sparsity, bool) or not isinstance(sparsity, int):
        raise UserError(f"`sparsity` must be an int, got {sparsity!r}.")
    if not 1 <= sparsity <= num_atoms:
        raise UserError(f"`sparsity` must be in [1, K={num_atoms}], got {sparsity}.")
    if tol is not None and not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise UserError(f"`tol` (squared residual norm) must be a finite number >= 0 or None, got {tol!r}.")
    if backend not in _BACKENDS:
        raise UserError(f"`backend` must be one of {_BACKENDS}, got {backend!r}.")
    if signals.device != dictionary.device:
        raise UserError(f"`signals` is on {signals.device} but `dictionary` is on {dictionary.device}.")
    for name, t in (("signals", signals), ("dictionary", dictionary)):
        if not (t.is_floating_point()):
            raise UserError(f"`{name}` must be a floating-point tensor, got {t.dtype}.")
    return num_signals, num_atoms, dim


def normalize_atoms(dictionary: torch.Tensor, eps: float = 1e-12) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm rows of `dictionary` `[K, L]` and their original norms `[K]` (zero atoms stay zero)."""
    norms = dictionary.norm(dim=1)
    return dictionary / norms.clamp_min(eps).unsqueeze(1), norms


def batch_omp(
    signals: torch.Tensor,
    dictionary: torch.Tensor,
    sparsity: int,
    tol: float | None = None,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
    check_finite: bool = True,
    cuda_graph: bool | None = None,
) -> SparseCodes:
    """Codes every row of `signals` with at most `sparsity` atoms of `dictionary` by Batch-OMP.

    Args:
        signals (`torch.Tensor` of shape `[N, L]`): the vectors to code.
        dictionary (`torch.Tensor` of shape `[K, L]`): atoms as rows. Atoms need not be unit-norm:
            atom selection uses the normalised atoms (as OMP requires) and the returned values are
            rescaled so that `codes.reconstruct(dictionary)` uses the dictionary as given. Zero
            atoms are never selected.
        sparsity (`int`): S, the number of atoms per signal, `1 <= S <= K`.
        tol (`float`, *optional*): a signal stops growing its support once its squared residual
            norm is `<= tol` (checked before each selection); its remaining slots hold value 0.
        backend (`str`): `"native"` (fused C kernel, CPU float32/float64), `"triton"` (fused
            Triton kernel: CUDA, float32 compute, K <= 4096, S <= 32; on CPU tensors only under
            `TRITON_INTERPRET=1`), `"torch"` (vectorised PyTorch, any device) or `"auto"` (native
            on the CPU, Triton on CUDA where triton is installed and the sizes fit, else torch).
        chunk_size (`int`, *optional*): signals processed together on the torch path (bounds
            memory to one `[chunk, K]` correlation buffer).
        check_finite (`bool`): raise on NaN/inf input (one reduction; on CUDA a host sync).
        cuda_graph (`bool`, *optional*): on CUDA, capture the torch path in a CUDA graph per input
            shape and replay it (the S rounds are ~20 small kernels each, so launches dominate for
            the few thousand vectors of an SD latent). Default: on for CUDA tensors. The Triton
            kernel is one launch and needs no graph.

    Returns:
        `SparseCodes` with `indices [N, S]` (long) and `values [N, S]` in the computation dtype
        (float32 for float16/bfloat16 inputs).

    A signal also stops early when its residual is orthogonal to every atom or the next atom is
    linearly dependent on its support; this keeps degenerate inputs (zero signals, duplicate atoms,
    rank-deficient dictionaries, S >= L) free of NaN/inf.
    """
    num_signals, num_atoms, dim = _check_arguments(signals, dictionary, sparsity, tol, backend)
    dtype = _compute_dtype(signals, dictionary)
    chosen, kernel = _resolve_backend(signals.device, dtype, num_atoms, sparsity, backend)
    signals = signals.detach().to(dtype)
    dictionary = dictionary.detach().to(dtype)
    if check_finite:
        for name, t in (("signals", signals), ("dictionary", dictionary)):
            if not bool(torch.isfinite(t).all()):
                raise UserError(f"`{name}` contains NaN or infinite values.")

    atoms, norms = normalize_atoms(dictionary)
    eps = torch.finfo(dtype).eps
    if num_signals == 0:
        empty = torch.zeros(0, sparsity, device=signals.device)
        return SparseCodes(empty.long(), empty.to(dtype), num_atoms)

    if chosen == "native":
        indices, values = _batch_omp_native(kernel, signals, atoms, sparsity, tol, eps)
    elif chosen == "triton":
        indices, values = kernel.batch_omp_triton(signals, atoms, sparsity, tol, eps)
    elif signals.is_cuda and cuda_graph is not False and not torch.cuda.is_current_stream_capturing():
        indices, values = _batch_omp_cuda_graph(signals, atoms, sparsity, tol, eps, chunk_size)
    else:
        indices, values = _batch_omp_torch(signals, atoms, sparsity, tol, eps, chunk_size)
    # Values refer to the normalised atoms; rescale them for the dictionary as given.
    values = values / norms.clamp_min(1e-12)[indices]
    return SparseCodes(indices, values, num_atoms)


def _compute_dtype(signals: torch.Tensor, dictionary: torch.Tensor) -> torch.dtype:
    return torch.promote_types(torch.promote_types(signals.dtype, dictionary.dtype), torch.float32)


def batch_omp_backend(signals: torch.Tensor, dictionary: torch.Tensor, sparsity: int, backend: str = "auto") -> str:
    """The backend `batch_omp(signals, dictionary, sparsity, backend=backend)` runs: "native",
    "triton" or "torch" (raises as `batch_omp` would when the requested one cannot run)."""
    _, num_atoms, _ = _check_arguments(signals, dictionary, sparsity, None, backend)
    return _resolve_backend(signals.device, _compute_dtype(signals, dictionary), num_atoms, sparsity, backend)[0]


def _resolve_backend(device: torch.device, dtype: torch.dtype, num_atoms: int, sparsity: int, backend: str):
    """`(name, kernel)`: the C library for "native", the Triton module for "triton", None for "torch"."""
    if backend in ("auto", "native") and device.type == "cpu" and dtype in (torch.float32, torch.float64):
        kernel = _native.load_kernel()
        if kernel is not None:
            return "native", kernel
        if backend == "native":
            raise RuntimeError("backend='native' was requested but the C kernel could not be built or loaded.")
    elif backend == "native":
        raise UserError(f"backend='native' supports CPU float32/float64 only, got {device} {dtype}.")
    if backend == "triton" or (backend == "auto" and device.type == "cuda"):
        module = _triton_kernel_for(device, dtype, num_atoms, sparsity, required=backend == "triton")
        if module is not None:
            return "triton", module
    return "torch", None


def _triton_kernel_for(device: torch.device, dtype: torch.dtype, num_atoms: int, sparsity: int, required: bool):
    """The Triton kernel module if it can code this problem; None (`"auto"`) or a clear error (`"triton"`)."""

    def unusable(reason: str):
        if required:
            raise UserError(f"backend='triton' {reason}")
        return None

    if dtype != torch.float32:
        return unusable(f"solves in float32 (float16/bfloat16 inputs are promoted), got {dtype}.")
    if num_atoms > _TRITON_MAX_ATOMS:
        return unusable(f"supports K <= {_TRITON_MAX_ATOMS} atoms (kept in registers), got K={num_atoms}.")
    if sparsity > _TRITON_MAX_SPARSITY:
        return unusable(f"supports sparsity <= {_TRITON_MAX_SPARSITY}, got {sparsity}.")
    if device.type not in ("cpu", "cuda"):
        return unusable(f"runs on CUDA tensors, got {device}.")
    try:
        module = importlib.import_module("sd_sparse.sparse_coding._triton_kernel")
    except ImportError as error:
        if required:
            raise ImportError(
                f"backend='triton' needs the triton package ({error}): `pip install 'sd_sparse[triton]'`."
            ) from error
        return None
    if device.type == "cpu" and not module.INTERPRETED:
        return unusable("runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1; got CPU tensors.")
    if device.type == "cuda" and module.INTERPRETED and not required:
        return None  # the interpreter would copy every block through numpy: use the torch path
    return module


def _batch_omp_native(kernel, signals, atoms, sparsity, tol, eps):
    signals = signals.contiguous()
    atoms_t = atoms.t().contiguous()
    gram = (atoms @ atoms.t()).contiguous()
    n, dim = signals.shape
    indices = torch.empty(n, sparsity, dtype=torch.int64)
    values = torch.empty(n, sparsity, dtype=signals.dtype)
    fn = kernel.batch_omp_f32 if signals.dtype == torch.float32 else kernel.batch_omp_f64
    status = fn(
        signals.data_ptr(),
        atoms_t.data_ptr(),
        gram.data_ptr(),
        n,
        atoms.shape[0],
        dim,
        sparsity,
        -1.0 if tol is None else float(tol),
        eps,
        indices.data_ptr(),
        values.data_ptr(),
        torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError("the Batch-OMP kernel could not allocate its scratch memory.")
    return indices, values


_GRAPHS: OrderedDict[tuple, tuple] = OrderedDict()
_GRAPH_CACHE_SIZE = 8
_GRAPH_LOCK = threading.Lock()


def _batch_omp_cuda_graph(signals, atoms, sparsity, tol, eps, chunk_size):
    """`_batch_omp_torch` captured once per (shapes, dtype, device, S, tol) and replayed."""
    key = (tuple(signals.shape), tuple(atoms.shape), signals.dtype, signals.device, sparsity, tol, chunk_size)
    with _GRAPH_LOCK:
        entry = _GRAPHS.get(key)
        if entry is None:
            static_signals, static_atoms = signals.clone(), atoms.clone()
            side = torch.cuda.Stream(signals.device)
            side.wait_stream(torch.cuda.current_stream(signals.device))
            with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
                _batch_omp_torch(static_signals, static_atoms, sparsity, tol, eps, chunk_size)
            torch.cuda.current_stream(signals.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = _batch_omp_torch(static_signals, static_atoms, sparsity, tol, eps, chunk_size)
            entry = (graph, static_signals, static_atoms, outputs)
            _GRAPHS[key] = entry
            if len(_GRAPHS) > _GRAPH_CACHE_SIZE:
                _GRAPHS.popitem(last=False)
        else:
            _GRAPHS.move_to_end(key)
        graph, static_signals, static_atoms, (indices, values) = entry
        static_signals.copy_(signals)
        static_atoms.copy_(atoms)
        graph.replay()
        return indices.clone(), values.clone()


def _batch_omp_torch(signals, atoms, sparsity, tol, eps, chunk_size):
    n = signals.shape[0]
    if chunk_size is None:
        chunk_size = 2048 if signals.device.type == "cpu" else 65536
    if chunk_size < 1:
        raise UserError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    indices = torch.empty(n, sparsity, dtype=torch.long, device=signals.device)
    values = torch.empty(n, sparsity, dtype=signals.dtype, device=signals.device)
    gram = atoms @ atoms.t()
    corr = None
    for start in range(0, n, chunk_size):
        x = signals[start : start + chunk_size]
        if corr is None or corr.shape[0] != x.shape[0]:
            corr = torch.empty(x.shape[0], atoms.shape[0], dtype=x.dtype, device=x.device)
        idx, val = _omp_chunk(x, atoms, gram, sparsity, tol, eps, corr)
        indices[start : start + x.shape[0]] = idx
        values[start : start + x.shape[0]] = val
    return indices, values


def _omp_chunk(x, atoms, gram, sparsity, tol, eps, corr):
    """Batch-OMP on one chunk `x` `[n, L]` in lockstep; the only loop is over the S rounds."""
    n, dim = x.shape
    S = sparsity
    linv = x.new_zeros(n, S, S)  # inverse Cholesky factor of G[t, t], grown one row per round
    y = x.new_zeros(n, S)  # coordinates of x on the orthonormalised support
    idx = torch.zeros(n, S, dtype=torch.long, device=x.device)
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    xn2 = (x * x).sum(1)
    residual = x.clone()
    torch.matmul(x, atoms.t(), out=corr)
    rows = torch.arange(n, device=x.device)
    for s in range(S):
        if tol is not None:
            active &= (residual * residual).sum(1) > tol
        if s > 0:
            corr.scatter_(1, idx[:, :s], 0.0)  # the support is orthogonal to the residual
        j = corr.abs().argmax(1)
        aj = corr[rows, j]
        w = (linv[:, :s, :s] @ gram[idx[:, :s], j.unsqueeze(1)].unsqueeze(2)).squeeze(2)  # [n, s]
        dd = 1 - (w * w).sum(1)
        active &= (aj * aj > eps * xn2) & (dd > eps)
        keep = active.to(x.dtype)
        d = dd.clamp_min(eps).sqrt()
        inv_d = keep / d
        row = -(w.unsqueeze(1) @ linv[:, :s, :s]).squeeze(1) * inv_d.unsqueeze(1)  # [n, s]
        linv[:, s, :s] = row
        linv[:, s, s] = inv_d
        y_s = aj * inv_d
        y[:, s] = y_s
        idx[:, s] = torch.where(active, j, torch.zeros_like(j))
        if s + 1 < S:
            # residual -= y_s q_s, with q_s = sum_t linv[s, t] d_t the new orthonormal direction
            q = (linv[:, s : s + 1, : s + 1] @ atoms[idx[:, : s + 1]]).squeeze(1)  # [n, L]
            residual -= q * y_s.unsqueeze(1)
            torch.matmul(residual, atoms.t(), out=corr)
    values = (y.unsqueeze(1) @ linv).squeeze(1)  # gamma = L^{-T} y
    return idx, values
