"""`DictionaryBottleneck`: the LASERS dictionary-learning bottleneck (Batch-OMP sparse codes)."""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from ..sparse_coding.batch_omp import batch_omp, normalize_atoms
from ..sparse_coding.codes import SparseCodes
from ..sparse_coding.dictionary_update import block_coordinate_descent, forgetting_factor
from .base import Bottleneck, BottleneckOutput, check_nonnegative, check_positive_int
from .distributed import all_reduce_sum_, broadcast_
from .patches import unpatchify

_UPDATES = ("gradient", "bcd")


class DictionaryBottleneck(Bottleneck):
    r"""Sparse dictionary-learning bottleneck (LASERS, DL-VAE / DL-GAN).

    Each coded vector z is replaced by `ẑ = γD`, where `D` `[K, C·P_H·P_W]` holds unit-norm atoms as
    rows and γ has at most `sparsity` non-zeros, found by Batch-OMP with the dictionary fixed.
    Gradients pass straight through to z. With `dictionary_update="gradient"` the dictionary learns
    from the loss `‖sg[z] − γD‖² + β‖z − sg[γD]‖²` (the paper's implicit online update); with
    `"bcd"` it is updated learning-rate free by Mairal's block-coordinate descent in every training
    forward, and the loss is the commitment term only.

    Parameters:
        num_atoms (`int`, defaults to 512): K, the number of atoms.
        embedding_dim (`int`, defaults to 16): channels C of the latents.
        sparsity (`int`, defaults to 5): S, atoms per coded vector (`1 <= S <= K`).
        patch_size (`int` or `(int, int)`, defaults to 1): code non-overlapping P_H × P_W patches.
        beta (`float`, defaults to 0.25): commitment weight β.
        tol (`float`, *optional*): also stop a vector's pursuit once its squared residual is `<= tol`.
        dictionary_update (`str`, defaults to `"gradient"`): `"gradient"` or `"bcd"`.
        init_from_data (`bool`, defaults to `False`): on the first training batch, set the atoms to
            normalised random vectors of the batch (broadcast from rank 0 under distributed).

    Under `torch.distributed`, the BCD statistics are summed over ranks before the update, so every
    rank keeps the same dictionary.
    """

    @register_to_config
    def __init__(
        self,
        num_atoms: int = 512,
        embedding_dim: int = 16,
        sparsity: int = 5,
        patch_size: Union[int, Sequence[int]] = 1,
        beta: float = 0.25,
        tol: float | None = None,
        dictionary_update: str = "gradient",
        init_from_data: bool = False,
    ):
        super().__init__()
        check_positive_int("num_atoms", num_atoms)
        check_positive_int("sparsity", sparsity, maximum=num_atoms)
        check_nonnegative("beta", beta)
        if tol is not None:
            check_nonnegative("tol", tol)
        if dictionary_update not in _UPDATES:
            raise ValueError(f"`dictionary_update` must be one of {_UPDATES}, got {dictionary_update!r}.")
        self._setup_patches(embedding_dim, patch_size)
        atoms, _ = normalize_atoms(torch.randn(num_atoms, self.vector_dim))
        self.dictionary = torch.nn.Parameter(atoms, requires_grad=dictionary_update == "gradient")
        if dictionary_update == "bcd":
            self.register_buffer("bcd_A", torch.zeros(num_atoms, num_atoms))
            self.register_buffer("bcd_B", torch.zeros(num_atoms, self.vector_dim))
            self.register_buffer("bcd_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(not init_from_data))
        self._initialized = not init_from_data

    @property
    def atoms(self) -> torch.Tensor:
        """The unit-norm atoms `[K, C·P_H·P_W]` used for coding and reconstruction."""
        return normalize_atoms(self.dictionary.to(self.compute_dtype))[0]

    def _maybe_initialize(self, vectors: torch.Tensor) -> None:
        if self._initialized:
            return
        if bool(self.initialized):  # loaded from a checkpoint: one host sync, once
            self._initialized = True
            return
        picks = torch.randperm(vectors.shape[0], device=vectors.device)[: self.config.num_atoms]
        chosen = vectors[picks]
        if chosen.shape[0] < self.config.num_atoms:  # small batch: top up with random directions
            extra = torch.randn(self.config.num_atoms - chosen.shape[0], vectors.shape[1], device=vectors.device)
            chosen = torch.cat([chosen, extra])
        # a zero vector would make a zero atom: replace it by a random direction
        zero = chosen.norm(dim=1, keepdim=True) == 0
        chosen = torch.where(zero, torch.randn_like(chosen), chosen)
        atoms = broadcast_(normalize_atoms(chosen)[0].contiguous())
        self.dictionary.data.copy_(atoms)
        self.initialized.fill_(True)
        self._initialized = True

    def encode_codes(self, latents: torch.Tensor) -> SparseCodes:
        """Sparse codes of latents `[B, C, H, W]` (N = B·H/P_H·W/P_W vectors, no gradients)."""
        with torch.no_grad(), self.full_precision(latents):
            return self._code(self.to_vectors(latents), self.atoms)

    def decode_codes(self, codes: SparseCodes, shape: Sequence[int]) -> torch.Tensor:
        """Latents of `shape` `[B, C, H, W]` from sparse codes."""
        return unpatchify(codes.reconstruct(self.atoms), shape, self.patch_size)

    def _code(self, vectors: torch.Tensor, atoms: torch.Tensor) -> SparseCodes:
        return batch_omp(
            vectors.detach(),
            atoms.detach(),
            self.config.sparsity,
            self.config.tol,
            check_finite=vectors.device.type == "cpu",
        )

    @torch.no_grad()
    def _bcd_update(self, vectors: torch.Tensor, codes: SparseCodes) -> None:
        dense = codes.to_dense(self.config.num_atoms)
        count = torch.tensor([float(vectors.shape[0])], device=vectors.device)
        A = dense.t() @ dense
        B = dense.t() @ vectors
        stats = all_reduce_sum_(torch.cat([A, B, count.expand(A.shape[0], 1)], dim=1))
        A, B, count = stats[:, : A.shape[1]], stats[:, A.shape[1] : -1], stats[0, -1]
        self.bcd_steps += 1
        # the forgetting factor is a host scalar (BCD is the slow, optional mode; this syncs)
        beta = forgetting_factor(int(self.bcd_steps), int(count))
        self.bcd_A.mul_(beta).add_(A)
        self.bcd_B.mul_(beta).add_(B)
        self.dictionary.data.copy_(
            block_coordinate_descent(self.dictionary.to(self.bcd_A.dtype), self.bcd_A, self.bcd_B)
        )

    def forward(self, latents: torch.Tensor, return_dict: bool = True) -> Union[BottleneckOutput, tuple]:
        """Codes latents `[B, C, H, W]`; see `BottleneckOutput` (`codes` is a `SparseCodes`)."""
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            if self.training:
                self._maybe_initialize(vectors.detach())
            atoms = self.atoms
            codes = self._code(vectors, atoms)
            reconstruction = codes.reconstruct(atoms)  # gradients reach the dictionary, not γ
            commitment = F.mse_loss(vectors, reconstruction.detach())
            if self.config.dictionary_update == "gradient":
                loss = F.mse_loss(reconstruction, vectors.detach()) + self.config.beta * commitment
            else:
                loss = self.config.beta * commitment
                if self.training:
                    self._bcd_update(vectors.detach(), codes)
            straight_through = vectors + (reconstruction - vectors).detach()
            usage = codes.usage(self.config.num_atoms)
        return self.make_output(self.to_latents(straight_through, latents), loss, codes, usage, return_dict)
