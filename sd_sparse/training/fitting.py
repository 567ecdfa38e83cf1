"""The one fitting loop: minibatches, Adam on what has gradients, optional Accelerate, optional timing.

`fit` fits a bottleneck on a frozen VAE's latents held in memory (the demo, the benchmarks) and, with a
`loss`, any model that returns an output (the reconstruction benchmark trains `SparseAutoencoder`s
with it). Its step is `Fitter.step`, which `train/fit_sd_bottleneck.py` also runs on latents streamed
from the data pipeline or a `LatentCache`, with checkpoints; `evaluate_on_vae` scores bottlenecks on a
held-out image dataset streamed through the VAE. The Accelerate trainer of `train/*.py` adds
checkpoints, validation and GANs on top of the same idea in `sd_sparse.training.trainer`.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Union

import torch
from tqdm.auto import tqdm

from ..errors import UserError


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
        raise UserError("`images` is empty: no latents to fit on.")
    chunks = []
    for start in tqdm(range(0, images.shape[0], batch_size), desc="encoding", disable=not progress, leave=False):
        chunks.append(encode_latents(vae, images[start : start + batch_size]).float())
    return torch.cat(chunks)


class Fitter:
    """One model being fitted: Adam (`weight_decay` decoupled, as AdamW's) on its parameters that require grad,
    prepared by Accelerate.

    A model without such parameters (an EMA codebook, a BCD dictionary) learns in its training forward
    alone: it has no optimizer and is not wrapped (register it for checkpointing yourself). `model`
    stays the unwrapped module; `wrapped` is what the forward runs through (DDP under Accelerate).
    """

    def __init__(
        self, model: torch.nn.Module, learning_rate: float = 1e-3, accelerator=None, weight_decay: float = 0.0
    ):
        self.model = model
        self.accelerator = accelerator
        trainable = [p for p in model.parameters() if p.requires_grad]
        adam = dict(lr=learning_rate, weight_decay=weight_decay, decoupled_weight_decay=True)
        self.optimizer = torch.optim.Adam(trainable, **adam) if trainable else None
        self.wrapped = model
        if accelerator is not None and self.optimizer is not None:
            self.wrapped, self.optimizer = accelerator.prepare(model, self.optimizer)

    def train(self) -> Fitter:
        self.wrapped.train()
        return self

    def step(self, batch: torch.Tensor, loss: Optional[Callable] = None):
        """One training forward on `batch` (already on the device) and, with an optimizer, one update of
        `output.loss` (or `loss(batch, output)`); returns the output."""
        out = self.wrapped(batch)
        if self.optimizer is not None:
            value = out.loss if loss is None else loss(batch, out)
            self.optimizer.zero_grad(set_to_none=True)
            if self.accelerator is not None:
                self.accelerator.backward(value)
            else:
                value.backward()
            self.optimizer.step()
        return out


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
        raise UserError(f"`steps` must be >= 1, got {steps}.")
    if isinstance(data, torch.Tensor) and data.shape[0] == 0:
        raise UserError("`data` is empty: nothing to fit on.")
    fitter = Fitter(model, learning_rate, accelerator)
    device = accelerator.device if accelerator is not None else module_device(model)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(seed)
    fitter.train()
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
        fitter.step(batch, loss)
        if step_times is not None:
            sync()
            step_times.append(time.perf_counter() - start)
        if callback is not None:
            callback(step, model)
    model.eval()
    return model


@torch.no_grad()
def evaluate_on_vae(
    bottlenecks: Dict[str, torch.nn.Module],
    vae,
    dataset,
    batch_size: int = 8,
    accelerator=None,
    num_workers: int = 0,
    with_flip: bool = True,
    max_images: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, Dict]:
    """{name: metrics} of each bottleneck on the VAE latents of `dataset`'s images, streamed batch by batch.

    `dataset` yields images `[3, R, R]` in [-1, 1] (None for a skipped bad image), map-style or
    iterable (e.g. `TrainingData.validation_dataset`). Each batch of `batch_size` images is encoded
    once and decoded once without a bottleneck; each bottleneck's coded decode is scored against that
    plain decode (`ReconstructionMetrics`, the metrics of `evaluate(bottleneck, latents, vae=vae)`).
    Nothing is kept but sums. Under Accelerate each rank scores a share (every `world_size`-th image
    of a map-style dataset, every `world_size`-th batch of an iterable one) and the sums are added
    up: a collective call, every rank returns the metrics of all images. `max_images`: score only the
    first ones.
    """
    from torch.utils.data import DataLoader, IterableDataset, Subset

    from ..autoencoders import decode_latents
    from ..data import collate_images
    from ..evaluation.reconstruction import ReconstructionMetrics

    rank = accelerator.process_index if accelerator is not None else 0
    world_size = accelerator.num_processes if accelerator is not None else 1
    iterable = isinstance(dataset, IterableDataset)
    if not iterable:
        count = len(dataset) if max_images is None else min(len(dataset), max_images)
        dataset = Subset(dataset, range(rank, count, world_size))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images, num_workers=num_workers)
    scores = {name: ReconstructionMetrics(model, vae=vae, with_flip=with_flip) for name, model in bottlenecks.items()}
    seen = 0  # images of an iterable dataset so far, counted alike on every rank (each reads every batch)
    for index, batch in enumerate(tqdm(loader, desc="evaluating", disable=not progress, leave=False)):
        images = batch["pixel_values"]
        if iterable and max_images is not None:
            if seen >= max_images:
                break
            if images is not None:
                images = images[: max_images - seen]
                seen += len(images)
        if (iterable and index % world_size != rank) or images is None:
            continue
        latents = collect_latents(vae, images, batch_size)
        reference = decode_latents(vae, latents).clamp(-1, 1)
        for score in scores.values():
            score.update(latents, reference=reference)
    device = accelerator.device if accelerator is not None else None
    for score in scores.values():
        score.all_reduce(device)
    return {name: score.compute() for name, score in scores.items()}
