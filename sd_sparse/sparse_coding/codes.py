"""`SparseCodes`: S (index, value) pairs per coded vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError


def smallest_index_dtype(num_atoms: int) -> torch.dtype:
    """The smallest signed/unsigned integer dtype that can hold indices in ``[0, num_atoms)``."""
    if num_atoms <= 2**8:
        return torch.uint8
    if num_atoms <= 2**15:
        return torch.int16
    if num_atoms <= 2**31:
        return torch.int32
    return torch.int64


@dataclass
class SparseCodes:
    """Sparse codes of N vectors over a dictionary of K atoms, S slots per vector.

    Attributes:
        indices (`torch.LongTensor` of shape `[N, S]`): atom index of each slot.
        values (`torch.Tensor` of shape `[N, S]`): coefficient of each slot. Unused slots (a vector
            that needed fewer than S atoms) hold value 0 and a valid index.
        num_atoms (`int`, *optional*): K, the dictionary size the indices refer to.
    """

    indices: torch.Tensor
    values: torch.Tensor
    num_atoms: int | None = None

    def __post_init__(self):
        if self.indices.shape != self.values.shape or self.indices.dim() != 2:
            raise UserError(
                "SparseCodes expects `indices` and `values` of the same shape [N, S], got "
                f"{tuple(self.indices.shape)} and {tuple(self.values.shape)}."
            )

    @property
    def device(self) -> torch.device:
        return self.indices.device

    @property
    def sparsity(self) -> int:
        return self.indices.shape[1]

    def __len__(self) -> int:
        return self.indices.shape[0]

    def _resolve_num_atoms(self, num_atoms: int | None) -> int:
        num_atoms = num_atoms if num_atoms is not None else self.num_atoms
        if num_atoms is None:
            raise UserError("`num_atoms` is required: these codes do not record their dictionary size.")
        return int(num_atoms)

    def to_dense(self, num_atoms: int | None = None) -> torch.Tensor:
        """Dense coefficients `[N, K]` (zeros off the support)."""
        num_atoms = self._resolve_num_atoms(num_atoms)
        dense = self.values.new_zeros(self.indices.shape[0], num_atoms)
        # scatter_add so that zero-valued padding slots sharing an index add nothing.
        return dense.scatter_add_(1, self.indices, self.values)

    def reconstruct(self, dictionary: torch.Tensor) -> torch.Tensor:
        """`Σ_s values[:, s] · dictionary[indices[:, s]]`, shape `[N, L]` for a dictionary `[K, L]`."""
        if dictionary.dim() != 2:
            raise UserError(f"`dictionary` must be [K, L], got shape {tuple(dictionary.shape)}.")
        atoms = torch.nn.functional.embedding(self.indices, dictionary)  # [N, S, L]; deterministic backward
        return torch.einsum("ns,nsl->nl", self.values.to(atoms.dtype), atoms)

    def usage(self, num_atoms: int | None = None) -> torch.Tensor:
        """How many vectors use each atom (slots with a non-zero value), shape `[K]`."""
        num_atoms = self._resolve_num_atoms(num_atoms)
        used = (self.values != 0).to(torch.float32)
        counts = torch.zeros(num_atoms, dtype=torch.float32, device=self.indices.device)
        return counts.scatter_add_(0, self.indices.reshape(-1), used.reshape(-1))

    def to(self, *args, **kwargs) -> SparseCodes:
        """Moves both tensors; a dtype argument applies to `values` only."""
        values = self.values.to(*args, **kwargs)
        device = values.device
        return SparseCodes(self.indices.to(device), values, self.num_atoms)

    @classmethod
    def from_dense(cls, dense: torch.Tensor, sparsity: int | None = None) -> SparseCodes:
        """Keeps the `sparsity` largest-magnitude coefficients of each row of `dense` `[N, K]`.

        Without `sparsity`, keeps as many slots as the densest row has non-zeros (one host sync).
        """
        if dense.dim() != 2:
            raise UserError(f"`dense` must be [N, K], got shape {tuple(dense.shape)}.")
        num_atoms = dense.shape[1]
        if sparsity is None:
            sparsity = max(int((dense != 0).sum(1).max().item()) if dense.numel() else 0, 1)
        sparsity = min(sparsity, num_atoms)
        _, indices = dense.abs().topk(sparsity, dim=1)
        return cls(indices, dense.gather(1, indices), num_atoms)
