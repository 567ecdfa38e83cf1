#!/usr/bin/env python
"""Train a diffusers AutoencoderKL with Stable Diffusion's recipe: reconstruction (L2 + LPIPS when local
weights exist), a KL term of weight 1e-6, and with --gan a PatchGAN that starts late.

    accelerate launch train/train_vae.py --train_data_dir ./images --resolution 256 --output_dir my-vae

The output folder is a plain `AutoencoderKL` (`AutoencoderKL.from_pretrained(output_dir)`), its
`scaling_factor` fitted to give unit-variance latents. All flags: `python train/train_vae.py --help`
(shared with the train_*.py scripts; the VAE's own: --latent_channels, --block_out_channels,
--layers_per_block, --kl_weight).
"""

from sd_sparse.training.programs import run_program

if __name__ == "__main__":
    run_program("train_vae")
