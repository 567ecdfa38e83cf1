"""`LISTABottleneck`: the SC-VAE bottleneck (learned ISTA, Gregor & LeCun 2010)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Sequence, Union

import torch
from diffusers.configuration_utils import register_to_config

from ..errors import UserError
from ..sparse_coding.batch_omp import normalize_atoms
from ..sparse_coding.codes import SparseCodes
from ..sparse_coding.ista import lipschitz_constant, soft_threshold
from .base import BottleneckOutput
from .sparse_bottleneck import SparseCodeBottleneck
from .validation import Interval, IsNone


class LISTABottleneck(SparseCodeBottleneck):
    r"""Sparse coding by T unrolled, learnable ISTA blocks, trained end to end (SC-VAE).

    `Z¹ = h_θ₁(W_e x)`, `Zᵗ⁺¹ = h_θₜ₊₁(W_e x + S Zᵗ)`, `ẑ = Z D`, with `h_θ` the soft threshold.
    `W_e`, `S` and the per-atom thresholds θ are learnable, initialised from ISTA on the initial
    dictionary (`W_e = D/L_c`, `S = I − D Dᵀ/L_c`, `θ = λ/L_c`); the dictionary `D` `[K, C·P_H·P_W]`
    (unit-norm rows) is learnable too. Everything is differentiable, so `latents` carry ordinary
    gradients. The loss is SC-VAE's latent term, per coded vector and averaged:
    `(‖z − ZD‖² + λ‖Z‖₁) / (C·P_H·P_W)`.

    Parameters:
        num_atoms (`int`, defaults to 512): K.
        latent_channels (`int`, defaults to 16): channels C of the latents.
        num_blocks (`int`, defaults to 5): T, unrolled ISTA blocks.
        sparsity_weight (`float`, defaults to 0.1): λ of the L1 term (and of the initial thresholds).
        tied_weights (`bool`, defaults to `True`): share `W_e` and `S` across blocks (thresholds are
            always per block); `False` gives every block its own.
        sparsity (`int`, *optional*): keep only the S largest-magnitude coefficients of each code
            (a hard top-S projection after the last block).
        patch_size (`int` or `(int, int)`, defaults to 1): code non-overlapping P_H × P_W patches.
        value_bits (`int`, *optional*): quantize the S kept coefficients to `value_bits`-bit integer levels
            (2 to 16; needs `sparsity`, the fixed support size that sets and levels are counted for) inside
            the forward, with straight-through gradients to the unrolled blocks. The slots are sorted by
            atom index; `Codes.levels` holds the integers. No error feedback: LISTA learns values that
            quantize well.
        value_scale (`str`, defaults to `"atom"`): one clipping scale per atom or one (`"dictionary"`), a
            peak hold of the training batches' largest |coefficient| (see `DictionaryBottleneck`).
        value_scale_decay (`float`, defaults to 0.99): decay of that peak hold.
    """

    _parameter_constraints = {
        "num_blocks": [Interval(Integral, 1, None)],
        "sparsity_weight": [Interval(Real, 0, None)],
        "sparsity": [IsNone("variable-length codes"), Interval(Integral, 1, "num_atoms", closed="both")],
    }

    @register_to_config
    def __init__(
        self,
        num_atoms: int = 512,
        latent_channels: int = 16,
        num_blocks: int = 5,
        sparsity_weight: float = 0.1,
        tied_weights: bool = True,
        sparsity: int | None = None,
        patch_size: Union[int, Sequence[int]] = 1,
        value_bits: int | None = None,
        value_scale: str = "atom",
        value_scale_decay: float = 0.99,
    ):
        super().__init__()
        if value_bits is not None and sparsity is None:
            raise UserError(
                f"`value_bits` ({value_bits}) needs `sparsity`: quantized codes have a fixed number S of atoms."
            )
        atoms, _ = normalize_atoms(torch.randn(num_atoms, self.vector_dim))
        lc = float(lipschitz_constant(atoms))
        copies = 1 if tied_weights else num_blocks
        self.dictionary = torch.nn.Parameter(atoms)
        self.filter = torch.nn.Parameter((atoms / lc).expand(copies, -1, -1).clone())  # W_e: [T|1, K, Lv]
        inhibition = torch.eye(num_atoms) - atoms @ atoms.t() / lc
        self.inhibition = torch.nn.Parameter(inhibition.expand(copies, -1, -1).clone())  # S: [T|1, K, K]
        self.thresholds = torch.nn.Parameter(torch.full((num_blocks, num_atoms), sparsity_weight / lc))
        self._setup_value_quantization()

    def coefficients(self, vectors: torch.Tensor) -> torch.Tensor:
        """Dense codes `[N, K]` of vectors `[N, C·P_H·P_W]` after the T blocks (and top-S)."""
        T = self.config.num_blocks
        code = None
        for t in range(T):
            w = self.filter[t if self.filter.shape[0] > 1 else 0].to(vectors.dtype)
            pre = vectors @ w.t()
            if code is not None:
                s = self.inhibition[t if self.inhibition.shape[0] > 1 else 0].to(vectors.dtype)
                pre = pre + code @ s.t()
            code = soft_threshold(pre, self.thresholds[t].to(vectors.dtype))
        if self.config.sparsity is not None and self.config.sparsity < self.config.num_atoms:
            keep = code.abs().topk(self.config.sparsity, dim=1).indices
            mask = torch.zeros_like(code).scatter_(1, keep, 1.0)
            code = code * mask
        return code

    def _sparse(self, code: torch.Tensor) -> SparseCodes:
        # without `sparsity`, as many slots as the densest code needs (one host sync)
        return SparseCodes.from_dense(code, self.config.sparsity)

    def _encode_vectors(self, vectors: torch.Tensor):
        codes = self._sparse(self.coefficients(vectors))
        if self.value_bits is None:
            return codes.indices, codes.values
        return self._quantize_codes(codes.indices, codes.values)

    def forward(
        self, latents: torch.Tensor, return_dict: bool = True, vector_weights: torch.Tensor | None = None
    ) -> Union[BottleneckOutput, tuple]:
        """Codes latents `[B, C, H, W]`; see `BottleneckOutput`.

        `codes` has S = `sparsity` slots, or, without `sparsity`, as many slots as the densest code of
        the batch needs (one host sync). `vector_weights` `[N]` re-weights the
        per-vector loss (SC-VAE's attention weights).
        """
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            code = self.coefficients(vectors)
            sparse = self._sparse(code)  # values keep their gradients (a gather of `code`)
            levels = None
            if self.value_bits is not None:  # straight-through: gradients reach the unquantized values
                indices, values, levels = self._quantize_codes(sparse.indices, sparse.values, observe=self.training)
                sparse = SparseCodes(indices, values, self.config.num_atoms)
            reconstruction = sparse.reconstruct(self.atoms)  # = code @ atoms, summed as `decode` does
            per_vector = (reconstruction - vectors).square().sum(1) + self.config.sparsity_weight * code.abs().sum(1)
            if vector_weights is not None:
                if vector_weights.shape != per_vector.shape:
                    raise UserError(
                        f"`vector_weights` must have one weight per coded vector, shape {tuple(per_vector.shape)}, "
                        f"got {tuple(vector_weights.shape)}."
                    )
                per_vector = per_vector * vector_weights.to(per_vector.dtype)
            loss = per_vector.mean() / self.vector_dim
            usage = (code != 0).sum(0).float()
        codes = self.make_codes(sparse.indices, sparse.values, latents, levels)
        return self.make_output(self.to_latents(reconstruction, latents), loss, codes, usage, return_dict)
