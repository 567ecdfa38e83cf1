#!/usr/bin/env python
"""Train an SC-VAE: learned ISTA (5 unrolled blocks) with an attention-weighted latent loss.

    accelerate launch train/train_scvae.py --train_data_dir ./images --resolution 32 --output_dir scvae

All flags: `python train/train_scvae.py --help` (shared by the train_*.py scripts; the model's own
hyperparameters included: --num_atoms, --sparsity, --latent_channels, --patch_size, --beta, ...).
"""

from sd_sparse.training.programs import run_program

if __name__ == "__main__":
    run_program("train_scvae")
