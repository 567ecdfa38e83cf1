"""`DictionaryBottleneck`: the LASERS dictionary-learning bottleneck (Batch-OMP sparse codes)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from ..sparse_coding.batch_omp import batch_omp, normalize_atoms
from ..sparse_coding.codes import SparseCodes
from ..sparse_coding.dictionary_update import block_coordinate_descent, forgetting_factor
from .base import BottleneckOutput
from .distributed import all_reduce_sum_, broadcast_
from .factorized_levels import MAX_LEVEL, FactorizedLevels, uniform_levels
from .initialisation import DataInitialisationMixin
from .rate_pursuit import RatePursuitMixin
from .restarts import RestartsMixin
from .sparse_bottleneck import SparseCodeBottleneck
from .validation import Interval, IsNone, Options


class DictionaryBottleneck(RatePursuitMixin, RestartsMixin, DataInitialisationMixin, SparseCodeBottleneck):
    r"""Sparse dictionary-learning bottleneck (LASERS, DL-VAE / DL-GAN).

    Each coded vector z is replaced by `ẑ = γD`, where `D` `[K, C·P_H·P_W]` holds unit-norm atoms as
    rows and γ has at most `sparsity` non-zeros, found by Batch-OMP with the dictionary fixed.
    Gradients pass straight through to z. With `dictionary_update="gradient"` the dictionary learns
    from the loss `‖sg[z] − γD‖² + β‖z − sg[γD]‖²` (the paper's implicit online update); with
    `"bcd"` it is updated learning-rate free by Mairal's block-coordinate descent in every training
    forward, and the loss is the commitment term only.

    Parameters:
        num_atoms (`int`, defaults to 512): K, the number of atoms.
        latent_channels (`int`, defaults to 16): channels C of the latents.
        sparsity (`int`, defaults to 5): S, atoms per coded vector (`1 <= S <= K`).
        patch_size (`int` or `(int, int)`, defaults to 1): code non-overlapping P_H × P_W patches.
        beta (`float`, defaults to 0.25): commitment weight β.
        tol (`float`, *optional*): also stop a vector's pursuit once its squared residual is `<= tol`.
        dictionary_update (`str`, defaults to `"gradient"`): `"gradient"` or `"bcd"`.
        init_from_data (`bool`, defaults to `False`): on the first training batch, set the atoms to
            normalised random vectors of the batch (broadcast from rank 0 under distributed).
        restart_threshold (`float`, defaults to 0.5): restart rarely used atoms during training. Each
            atom's share of the selections is tracked as a moving average (`usage_decay`); an atom
            whose share falls below `restart_threshold` times the uniform share `1/K` is replaced by
            one of the batch's worst represented vectors (largest residual `‖z − γD‖`, the K-SVD
            replacement rule), normalised. In [0, 1]; 0 disables (the paper's plain DL-VAE). The same
            rule as `VectorQuantizer`'s.
        usage_decay (`float`, defaults to 0.99): decay of the usage average.
        value_bits (`int`, *optional*): quantize the coefficients to `value_bits`-bit integer levels (2 to 16)
            inside the forward, so training sees the quantization (reconstruction and losses use the
            dequantized values; gradients to the latents stay straight-through). Batch-OMP picks the support
            with float coefficients; they are then quantized (see `value_refit`) and the slots sorted by
            atom index. `Codes.levels` holds the integers. None (default): float coefficients.
        value_scale (`str`, defaults to `"atom"`): one clipping scale per atom (`"atom"`) or one for the
            whole dictionary (`"dictionary"`). A scale is a buffer that holds the peak |coefficient| of the
            training batches: it rises to a larger batch peak at once and decays towards smaller ones
            (`value_scale_decay` per batch); frozen in eval mode. The step is `scale / (2^(b−1) − ½)`.
        value_scale_decay (`float`, defaults to 0.99): decay of that peak hold.
        value_refit (`bool`, defaults to `False`): choose the levels one slot at a time in selection order,
            re-fitting the remaining coefficients by least squares to what the rounded ones leave (error
            feedback, as GPTQ does for weights). On held-out photo patches (K = 256, S = 5) this gained
            1.0 / 0.5 / 0.2 dB at 3 / 4 / 5 bits for the same measured rate, and made a CPU training step
            about 1.2× slower (rounding alone: 1.05×). `False` rounds each coefficient on its own.
        rate_lambda (`float`, *optional*): rate–distortion pursuit. Each vector keeps the first s ∈ {1, …, S}
            atoms of its Batch-OMP path with their least-squares coefficients (then quantized as above), the s
            minimising `‖z − γ_s D‖² + rate_lambda · bits(s)` (squared error in latent units summed over the
            vector; `bits(s)`: the support as a set under the usage prior plus its levels priced by the batch's
            level histogram, see `RatePursuitMixin`); a batch pays `log2(S + 1)` bits per vector for the counts
            only when that saves more. Codes are sorted by atom, unused slots last (index 0, level 0): the codes
            container stores them as sets of variable size. None (default): S atoms; 0: the same codes. On the
            reference VAE's held-out photographs (K = 256, 2×2 patches, 8 bits, `value_refit`), S = 12 or 16 with
            `rate_lambda` 1e-3 … 3e-3 gained 4–6 dB image PSNR over the plain S front at 18–31 bits per position;
            below ~8 bits per position it lost 0.5–0.9 dB (the counts' cost). Encoding is 2.5–6× slower on a CPU.
        residual_step (`float`, *optional*): also code what the sparse code leaves, `z − γD`, as uniform
            integer levels of step `residual_step` (latent units) per dimension (`Codes.residual` `[N, L]`),
            entropy-coded against a histogram of each dimension's levels fitted in training forwards (a
            decayed sum, `usage_decay`); `decode` gives `γD + residual · residual_step`, and so does the
            straight-through output. The dictionary's losses stay those of the sparse code. None (default):
            no residual.
        residual_max_level (`int`, *optional*): the largest |residual level| (in [1, 32767]); None: 127.

    Under `torch.distributed`, the BCD statistics and the usage averages are summed over ranks and the
    restart candidates are broadcast from rank 0, so every rank keeps the same dictionary; coefficient
    scales follow the maximum over ranks.
    """

    _parameter_constraints = {
        "residual_step": [IsNone("no residual"), Interval(Real, 0, None, closed="neither")],
        "residual_max_level": [IsNone("127"), Interval(Integral, 1, MAX_LEVEL, closed="both")],
        "sparsity": [Interval(Integral, 1, "num_atoms", closed="both")],
        "tol": [IsNone(), Interval(Real, 0, None)],
        "dictionary_update": [Options(("gradient", "bcd"))],
    }
    _optional_config_keys = ("rate_lambda", "residual_step", "residual_max_level")

    @register_to_config
    def __init__(
        self,
        num_atoms: int = 512,
        latent_channels: int = 16,
        sparsity: int = 5,
        patch_size: Union[int, Sequence[int]] = 1,
        beta: float = 0.25,
        tol: float | None = None,
        dictionary_update: str = "gradient",
        init_from_data: bool = False,
        restart_threshold: float = 0.5,
        usage_decay: float = 0.99,
        value_bits: int | None = None,
        value_scale: str = "atom",
        value_scale_decay: float = 0.99,
        value_refit: bool = False,
        rate_lambda: float | None = None,
        residual_step: Optional[float] = None,
        residual_max_level: Optional[int] = None,
    ):
        super().__init__()
        atoms, _ = normalize_atoms(torch.randn(num_atoms, self.vector_dim))
        self.dictionary = torch.nn.Parameter(atoms, requires_grad=dictionary_update == "gradient")
        if dictionary_update == "bcd":
            self.register_buffer("bcd_A", torch.zeros(num_atoms, num_atoms))
            self.register_buffer("bcd_B", torch.zeros(num_atoms, self.vector_dim))
            self.register_buffer("bcd_steps", torch.zeros((), dtype=torch.long))
        self._setup_data_initialisation(init_from_data)
        self._setup_restarts()
        self._setup_value_quantization()
        self._setup_residual()

    def _initialize_from_data(self, vectors: torch.Tensor) -> None:
        """Atoms: normalised random vectors of the batch (broadcast from rank 0)."""
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

    def _quantize(self, codes: SparseCodes, atoms: torch.Tensor, observe: bool) -> tuple:
        refit_atoms = atoms if self.config.value_refit else None
        indices, values, levels = self._quantize_codes(codes.indices, codes.values, refit_atoms, observe=observe)
        return SparseCodes(indices, values, self.config.num_atoms), levels

    def _encode_vectors(self, vectors: torch.Tensor):
        atoms = self.atoms
        codes = self._code(vectors, atoms)
        levels = None
        if self.rate_pursuit_active:  # the rate–distortion best prefix of each OMP path
            codes, levels = self._truncate_by_rate(vectors, codes, atoms, observe=False)
        elif self.value_bits is not None:
            codes, levels = self._quantize(codes, atoms, observe=False)
        if self.codes_residual:
            return codes.indices, codes.values, levels, self._residual_levels(vectors, codes.reconstruct(atoms))
        return (codes.indices, codes.values) if levels is None else (codes.indices, codes.values, levels)

    # -- the entropy-coded residual (`residual_step`) ---------------------------------------------------
    def _setup_residual(self) -> None:
        if self.codes_residual:
            max_level = self.config.residual_max_level or 127
            self.residual_histograms = FactorizedLevels(self.vector_dim, max_level, self.config.usage_decay)

    @property
    def codes_residual(self) -> bool:
        """Whether the codes carry the residual's levels (`residual_step` is set)."""
        return self.config.get("residual_step") is not None

    def _residual_levels(self, vectors: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Levels `[N, L]` (int16) of what the sparse reconstruction leaves of `vectors` `[N, L]`."""
        step = torch.tensor(self.config.residual_step, dtype=self.compute_dtype, device=vectors.device)
        levels = uniform_levels(vectors.detach() - reconstruction.detach(), step, self.residual_histograms.max_level)
        return levels

    def _add_residual(self, vectors: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Vectors `[N, L]` plus the residual levels `[N, L]` times `residual_step`."""
        step = torch.tensor(self.config.residual_step, dtype=vectors.dtype, device=vectors.device)
        return vectors + residual.to(vectors.dtype) * step

    def _with_residual(self, vectors: torch.Tensor, reconstruction: torch.Tensor):
        """`(output reconstruction, residual levels or None)` of a forward: with `residual_step`, the sparse
        reconstruction plus the quantized residual (the histograms count the levels in training)."""
        if not self.codes_residual:
            return reconstruction, None
        residual = self._residual_levels(vectors, reconstruction)
        if self.training:
            self.residual_histograms.observe(residual)
        return self._add_residual(reconstruction, residual), residual

    def residual_tables(self) -> Optional[torch.Tensor]:
        """The codec's residual model (`EntropyModel.residual_tables`): the residual level histograms
        `[L, 2·max_level + 1]` (float64, CPU), None without `residual_step`."""
        return self.residual_histograms.tables() if self.codes_residual else None

    @property
    def bits_per_position(self) -> float | None:
        """The sparse code's bits (see `SparseCodeBottleneck.bits_per_position`), plus, with `residual_step`,
        the fitted entropy of the residual histograms per position (an estimate: the codes file measures it)."""
        bits = super().bits_per_position
        if bits is None or not self.codes_residual:
            return bits
        return bits + self.residual_histograms.entropy_bits() / self.positions_per_vector

    def _code(self, vectors: torch.Tensor, atoms: torch.Tensor) -> SparseCodes:
        return batch_omp(
            vectors.detach(),
            atoms.detach(),
            self.config.sparsity,
            self.config.tol,
            check_finite=not self.check_latents and vectors.device.type == "cpu",  # else checked already
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

    @torch.no_grad()
    def _apply_restarts(self) -> None:
        pending = self.restart_pending
        self._forget_coefficient_scales(pending)  # new atoms: fresh scales
        scale = self.dictionary.data.norm(dim=1, keepdim=True)  # keep the stored atoms' scale
        # a zero vector would make a zero atom: use a fixed direction instead (no RNG draw)
        vectors = self.restart_vectors
        vectors = torch.where(vectors.square().sum(1, keepdim=True) > 0, vectors, torch.ones_like(vectors))
        atoms = normalize_atoms(vectors)[0]
        replacement = atoms * torch.where(scale > 0, scale, torch.ones_like(scale))
        self.dictionary.data.copy_(torch.where(pending[:, None], replacement, self.dictionary.data))
        if self.config.dictionary_update == "bcd":  # forget the replaced atoms' statistics
            keep = (~pending).to(self.bcd_A.dtype)
            self.bcd_A.mul_(keep[:, None] * keep[None, :])
            self.bcd_B.mul_(keep[:, None])
        pending.zero_()

    def forward(self, latents: torch.Tensor, return_dict: bool = True) -> Union[BottleneckOutput, tuple]:
        """Codes latents `[B, C, H, W]`; see `BottleneckOutput`."""
        with self.full_precision(latents):
            vectors = self.to_vectors(latents)
            self._maybe_initialize(vectors)
            if self.restarts_active:
                self._apply_restarts()
            atoms = self.atoms
            codes = self._code(vectors, atoms)
            levels = None
            if self.rate_pursuit_active:  # the rate–distortion best prefix of each OMP path
                codes, levels = self._truncate_by_rate(vectors, codes, atoms, observe=self.training)
            elif self.value_bits is not None:  # support from float values, then quantized values
                codes, levels = self._quantize(codes, atoms, observe=self.training)
            reconstruction = codes.reconstruct(atoms)  # gradients reach the dictionary, not γ
            commitment = F.mse_loss(vectors, reconstruction.detach())
            if self.config.dictionary_update == "gradient":
                loss = F.mse_loss(reconstruction, vectors.detach()) + self.config.beta * commitment
            else:
                loss = self.config.beta * commitment
                if self.training:
                    self._bcd_update(vectors.detach(), codes)
            usage = codes.usage(self.config.num_atoms)
            if self.restarts_active:
                self._plan_restarts(vectors.detach(), reconstruction.detach(), usage)
            output, residual = self._with_residual(vectors, reconstruction)
            coded = self.straight_through(vectors, output)
        out_codes = self.make_codes(codes.indices, codes.values, latents, levels, residual)
        return self.make_output(self.to_latents(coded, latents), loss, out_codes, usage, return_dict)
