"""Accelerate training of the standalone autoencoders (the train/*.py scripts call `main`)."""

from .data import load_training_images, random_crops
from .trainer import build_parser, main, save_checkpoint, train

__all__ = ["build_parser", "load_training_images", "main", "random_crops", "save_checkpoint", "train"]
