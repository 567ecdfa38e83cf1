#!/usr/bin/env python
"""Train a DL-VAE (LASERS): a dictionary bottleneck with Batch-OMP codes, no discriminator.

    accelerate launch train/train_dlvae.py --train_data_dir ./images --resolution 32 --output_dir dlvae

All flags: `python train/train_dlvae.py --help` (shared by the train_*.py scripts; the model's own
hyperparameters included: --num_atoms, --sparsity, --latent_channels, --patch_size, --beta, ...).
"""

from sd_sparse.training.programs import run_program

if __name__ == "__main__":
    run_program("train_dlvae")
