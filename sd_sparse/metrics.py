"""Reconstruction and code-usage metrics. Images enter in [-1, 1] and are compared in [0, 1]."""

from __future__ import annotations

import math

import torch

from .errors import UserError


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1], clamped."""
    return ((images + 1) / 2).clamp(0, 1)


def psnr(reference: torch.Tensor, estimate: torch.Tensor, data_range: float = 1.0, dim=None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, `10·log10(range² / MSE)`.

    With `dim=None` one value over all elements; otherwise the MSE is averaged over `dim`
    (e.g. `dim=(1, 2, 3)` for one value per image). An exact match gives `inf`.
    """
    if reference.shape != estimate.shape:
        raise UserError(f"`reference` {tuple(reference.shape)} and `estimate` {tuple(estimate.shape)} differ in shape.")
    err = (reference.double() - estimate.double()).square()
    mse = err.mean() if dim is None else err.mean(dim=dim)
    return 10 * torch.log10(data_range**2 / mse)


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """`exp(−Σ p_k log p_k)` of the normalised usage histogram `counts` `[K]` (max K; 0 if unused).

    Computed from how often each code/atom is used, never from softmaxed coefficients.
    """
    counts = counts.double()
    total = counts.sum()
    p = counts / total.clamp_min(1e-30)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return torch.where(total > 0, entropy.exp(), torch.zeros_like(entropy)).float()


def bits_per_vector(num_atoms: int, sparsity: int | None = None, value_bits: int = 16) -> float:
    """Storage of one coded vector: VQ (`sparsity=None`) stores one index, `log2 K` bits; a sparse
    code stores S indices and S values, `S·(log2 K + value_bits)` bits."""
    index_bits = math.log2(num_atoms)
    if sparsity is None:
        return index_bits
    return sparsity * (index_bits + value_bits)


def bits_per_position(bottleneck) -> float | None:
    """Storage per latent position (one spatial site of the latent) of a bottleneck's codes: its
    `bits_per_position` (None for variable-length codes, e.g. `LISTABottleneck` without `sparsity`)."""
    return bottleneck.bits_per_position


def latent_psnr(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR `[B]` of latents `[B, C, H, W]`, the peak being each reference's range (max − min)."""
    if reference.shape != estimate.shape or reference.dim() < 2:
        raise UserError(f"`reference` {tuple(reference.shape)} and `estimate` {tuple(estimate.shape)} must match.")
    ref = reference.double().flatten(1)
    mse = (ref - estimate.double().flatten(1)).square().mean(1)
    peak = ref.max(1).values - ref.min(1).values
    return 10 * torch.log10(peak.square() / mse)


def flip(reference: torch.Tensor, estimate: torch.Tensor, colored: bool = True):
    """NVIDIA's FLIP difference (LDR) of two images `[3, H, W]` in [-1, 1]: `(mean, heatmap [H, W, 3])`,
    the map coloured with magma; with `colored=False` the per-pixel errors `[H, W]` in [0, 1] instead.

    Uses `flip-evaluator` (a core dependency).
    """
    try:
        import flip_evaluator
    except ImportError as err:
        raise ImportError("FLIP needs the flip-evaluator package: pip install flip-evaluator") from err
    if reference.shape != estimate.shape or reference.dim() != 3 or reference.shape[0] != 3:
        raise UserError(
            f"FLIP compares two images [3, H, W]; got {tuple(reference.shape)} and {tuple(estimate.shape)}."
        )

    def hwc(x):
        return to_unit_range(x.detach().float()).permute(1, 2, 0).cpu().numpy().copy()

    heatmap, mean, _ = flip_evaluator.evaluate(hwc(reference), hwc(estimate), "LDR", applyMagma=colored)
    return float(mean), heatmap


def ssim(
    reference: torch.Tensor, estimate: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
):
    """Mean structural similarity per image `[B]` of `[B, C, H, W]` images (Gaussian window, Wang et al. 2004).

    The mean runs over the windows inside the image, as in Wang et al.'s code and scikit-image (equal to
    ~3e-8); torchmetrics >= 1.5 also averages reflect-padded border windows (differs by up to 1e-2).
    """
    import torch.nn.functional as F

    if reference.shape != estimate.shape or reference.dim() != 4:
        raise UserError(
            f"SSIM compares two [B, C, H, W] batches; got {tuple(reference.shape)}, {tuple(estimate.shape)}."
        )
    x, y = reference.double(), estimate.double()
    channels = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    coords = torch.arange(size, dtype=torch.float64, device=x.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()

    def blur(t):
        return F.conv2d(t, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return score.mean(dim=(1, 2, 3)).float()
