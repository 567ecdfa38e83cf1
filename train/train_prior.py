#!/usr/bin/env python
r"""Train a learned prior (`CodePrior`) over the codes of a frozen bottleneck on a frozen VAE's latents.

    accelerate launch train/train_prior.py --bottleneck <dir> \
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --train_data_dir ./photos --resolution 512 --output_dir sd15-prior [--cache_latents ./sd15-latents]

The program lives in the package (`sd_sparse/training/train_prior.py`, also run by
`accelerate launch -m sd_sparse.training train_prior`). All flags: `python train/train_prior.py --help`.
"""

from sd_sparse.training.programs import run_program

if __name__ == "__main__":
    run_program("train_prior")
