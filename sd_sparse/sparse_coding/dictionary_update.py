"""Online dictionary update by block-coordinate descent (Mairal et al. 2009; LASERS suppl. §8)."""

from __future__ import annotations

import torch

from ..errors import UserError


def forgetting_factor(step: int, batch_size: int) -> float:
    """β_t of LASERS eq. 25/26 for update `step` (1-based) with ξ = `batch_size` vectors per step.

    θ = tξ if t < ξ else ξ² + t − ξ, and β_t = (θ + 1 − ξ) / (θ + 1).
    """
    if step < 1 or batch_size < 1:
        raise UserError(f"`step` and `batch_size` must be >= 1, got {step} and {batch_size}.")
    xi = float(batch_size)
    theta = step * xi if step < xi else xi * xi + step - xi
    return (theta + 1 - xi) / (theta + 1)


def accumulate_statistics(A: torch.Tensor, B: torch.Tensor, codes: torch.Tensor, signals: torch.Tensor, beta: float):
    """In place: `A ← βA + γᵀγ` (`[K, K]`) and `B ← βB + γᵀZ` (`[K, L]`).

    `codes` is dense `[N, K]` and `signals` `[N, L]`; rows are vectors (B is the transpose of the
    paper's `L × K` matrix, matching our atoms-as-rows dictionary).
    """
    A.mul_(beta).add_(codes.t() @ codes)
    B.mul_(beta).add_(codes.t() @ signals)


def block_coordinate_descent(
    dictionary: torch.Tensor, A: torch.Tensor, B: torch.Tensor, eps: float = 1e-10
) -> torch.Tensor:
    """One sweep over the atoms: `d_j ← (B_j − A_jᵀD + A_jj d_j) / A_jj`, then `d_j ← d_j / ‖d_j‖`.

    `dictionary` `[K, L]` (rows are atoms) is not modified; the updated copy is returned. Atoms that
    no code has used yet (`A_jj ≈ 0`) are left unchanged.
    """
    D = dictionary.clone()
    for j in range(D.shape[0]):  # sequential by definition: each atom sees the ones updated before it
        a_jj = A[j, j]
        d = (B[j] - A[j] @ D + a_jj * D[j]) / a_jj.clamp_min(eps)
        norm = d.norm()
        # branch-free (no host sync): unused atoms and degenerate updates keep the old atom
        D[j] = torch.where((a_jj > eps) & (norm > eps), d / norm.clamp_min(eps), D[j])
    return D


class OnlineDictionaryUpdate:
    """Stateful helper holding Mairal's `A`, `B` accumulators and the step count.

    Example:
        >>> update = OnlineDictionaryUpdate(num_atoms=512, atom_dim=16)
        >>> dictionary = update.step(dictionary, dense_codes, signals)
    """

    def __init__(self, num_atoms: int, atom_dim: int, device=None, dtype=torch.float32):
        self.A = torch.zeros(num_atoms, num_atoms, device=device, dtype=dtype)
        self.B = torch.zeros(num_atoms, atom_dim, device=device, dtype=dtype)
        self.num_steps = 0

    def step(
        self, dictionary: torch.Tensor, codes: torch.Tensor, signals: torch.Tensor, batch_size=None
    ) -> torch.Tensor:
        """Accumulates this batch's statistics and returns the updated dictionary `[K, L]`."""
        if (
            codes.shape[0] != signals.shape[0]
            or codes.shape[1] != self.A.shape[0]
            or signals.shape[1] != self.B.shape[1]
        ):
            raise UserError(
                f"expected codes [N, {self.A.shape[0]}] and signals [N, {self.B.shape[1]}], got "
                f"{tuple(codes.shape)} and {tuple(signals.shape)}."
            )
        self.num_steps += 1
        beta = forgetting_factor(self.num_steps, batch_size or signals.shape[0])
        accumulate_statistics(self.A, self.B, codes.to(self.A.dtype), signals.to(self.B.dtype), beta)
        return block_coordinate_descent(dictionary.to(self.A.dtype), self.A, self.B).to(dictionary.dtype)
