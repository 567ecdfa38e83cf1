"""The one fitting loop: minibatches, Adam on what has gradients, optional Accelerate, optional timing.

It fits a bottleneck on a frozen VAE's latents (the fit script, the demo, the benchmarks) and, with a
`loss`, any model that returns an output (the reconstruction benchmark trains `SparseAutoencoder`s
with it). The Accelerate trainer of `train/*.py` adds checkpoints, validation and GANs on top of the
same idea in `sd_sparse.training.trainer`.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Union

import torch
from tqdm.auto import tqdm


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module without either)."""
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def collect_latents(vae, images: torch.Tensor, batch_size: int = 8, progress: bool = False) -> torch.Tensor:
    """Diffusion-space latents `[N, C, H/8, W/8]` (float32, on the VAE's device) of images `[N, 3, H, W]`
    in [-1, 1], scaled and shifted as the VAE's config says."""
    from ..autoencoders import encode_latents

    if images.shape[0] == 0:
        raise ValueError("`images` is empty: no latents to fit on.")
    chunks = []
    for start in tqdm(range(0, images.shape[0], batch_size), desc="encoding", disable=not progress, leave=False):
        chunks.append(encode_latents(vae, images[start : start + batch_size]).float())
    return torch.cat(chunks)


def fit(
    model: torch.nn.Module,
    data: Union[torch.Tensor, Callable[[torch.Generator], torch.Tensor]],
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    loss: Optional[Callable] = None,
    accelerator=None,
    progress: bool = False,
    desc: str = "fitting",
    callback: Optional[Callable[[int, torch.nn.Module], None]] = None,
    step_times: Optional[List[float]] = None,
):
    """Trains `model` for `steps` minibatches; returns it (unwrapped) in eval mode.

    Args:
        model: a bottleneck (its output's `loss` is minimised) or any module, with `loss`.
        data: a tensor `[N, ...]` (each step takes `batch_size` random rows, e.g. latents of a frozen
            VAE or image patches) or a function `generator -> batch` (e.g. random crops).
        steps: optimizer steps.
        learning_rate: Adam's, for the parameters that require grad. A model without any (an EMA
            codebook, a BCD dictionary) learns in its training forward alone.
        seed: seeds the minibatch draws (the only randomness here).
        loss: `loss(batch, output) -> scalar`; default `output.loss` (a bottleneck's own loss).
        accelerator: an `accelerate.Accelerator`; the model and optimizer are prepared for
            distributed training (each process passes its own shard of `data`).
        callback: called as `callback(step, model)` after every step (e.g. a training curve).
        step_times: a list that receives the seconds of every step's forward, backward and update
            (the device synchronised around them), for benchmarks.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    if isinstance(data, torch.Tensor) and data.shape[0] == 0:
        raise ValueError("`data` is empty: nothing to fit on.")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=learning_rate) if trainable else None
    unwrapped, wrapped = model, model
    if accelerator is not None and optimizer is not None:
        wrapped, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device if accelerator is not None else module_device(unwrapped)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(seed)
    wrapped.train()
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
        if isinstance(data, torch.Tensor):
            picks = torch.randint(0, data.shape[0], (min(batch_size, data.shape[0]),), generator=generator)
            batch = data[picks.to(data.device)]
        else:
            batch = data(generator)
        batch = batch.to(device)
        if step_times is not None:
            sync()
            start = time.perf_counter()
        out = wrapped(batch)
        if optimizer is not None:
            value = out.loss if loss is None else loss(batch, out)
            optimizer.zero_grad(set_to_none=True)
            if accelerator is not None:
                accelerator.backward(value)
            else:
                value.backward()
            optimizer.step()
        if step_times is not None:
            sync()
            step_times.append(time.perf_counter() - start)
        if callback is not None:
            callback(step, unwrapped)
    unwrapped.eval()
    return unwrapped
