"""Training: the Accelerate trainer of the standalone autoencoders (train/*.py call `main`) and the one
fitting loop for bottlenecks on a frozen VAE's latents (`fit`, `collect_latents`)."""

from .fitting import collect_latents, fit
from .trainer import build_parser, main, resume_point, save_checkpoint, train

__all__ = ["build_parser", "collect_latents", "fit", "main", "resume_point", "save_checkpoint", "train"]
