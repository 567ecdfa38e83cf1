#!/usr/bin/env python
"""Train a DL-GAN (LASERS): the DL-VAE plus a PatchGAN discriminator that starts late.

    accelerate launch train/train_dlgan.py --train_data_dir ./images --resolution 32 --output_dir dlgan

All flags: `python train/train_dlgan.py --help` (shared by the train_*.py scripts; the model's own
hyperparameters included: --num_atoms, --sparsity, --latent_channels, --patch_size, --beta, ...).
"""

from sd_sparse.training.programs import run_program

if __name__ == "__main__":
    run_program("train_dlgan")
