"""Training: the Accelerate trainer of the standalone autoencoders (train/*.py call `main`) and the one
fitting loop for bottlenecks on a frozen VAE's latents (`fit`, `collect_latents`).

Modules: `trainer` (the loop), `arguments` (flags and checks), `checkpoints` (atomic save, exact resume),
`validation`, `metrics_log`, `fit_sd_bottleneck` (the fit program) and `train_prior` (a learned prior over a
frozen bottleneck's codes), both on a frozen VAE (`frozen_vae`) with `fit_latents` and `latent_cache`.
"""

from .arguments import build_parser
from .checkpoints import resume_point, save_checkpoint
from .fitting import collect_latents, fit
from .trainer import main, train

__all__ = ["build_parser", "collect_latents", "fit", "main", "resume_point", "save_checkpoint", "train"]
