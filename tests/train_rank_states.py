"""Run by tests under `accelerate launch`: trains, then saves this rank's weights and buffers."""

import os
import sys

import torch

from sd_sparse.training import build_parser, train

if __name__ == "__main__":
    args = build_parser().parse_args(sys.argv[1:])
    model, discriminator = train(args)
    rank = int(os.environ.get("RANK", "0"))
    state = {"model": model.state_dict(), "discriminator": discriminator.state_dict() if discriminator else None}
    torch.save(state, os.path.join(args.output_dir, f"rank{rank}.pt"))
