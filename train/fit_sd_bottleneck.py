#!/usr/bin/env python
"""Fit a dictionary bottleneck (and, for comparison, a VQ codebook) on a frozen Stable Diffusion VAE's latents.

    accelerate launch train/fit_sd_bottleneck.py \
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --train_data_dir ./photos --resolution 512 --output_dir sd15-dictionary [--cache_latents ./sd15-latents]

The program lives in the package (`sd_sparse/training/fit_sd_bottleneck.py`, also run by
`accelerate launch -m sd_sparse.training fit_sd_bottleneck`). All flags: `python train/fit_sd_bottleneck.py --help`.
"""

from sd_sparse.training.programs import run_program

if __name__ == "__main__":
    run_program("fit_sd_bottleneck")
