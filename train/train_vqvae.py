#!/usr/bin/env python
"""Train a VQ-VAE: vector quantization with EMA codebook updates (decay 0.99).

    accelerate launch train/train_vqvae.py --train_data_dir ./images --resolution 32 --output_dir vqvae

All flags: `python train/train_vqvae.py --help` (shared by the train_*.py scripts; the model's own
hyperparameters included: --num_atoms, --sparsity, --latent_channels, --patch_size, --beta, ...).
"""

from sd_sparse.training.programs import run_program

if __name__ == "__main__":
    run_program("train_vqvae")
