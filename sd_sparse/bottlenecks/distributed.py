"""Keeping statistics that change parameters outside autograd identical on every rank."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sums `tensor` over ranks in place (no-op without an initialised process group)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrites `tensor` with rank `src`'s copy in place (no-op without a process group)."""
    if world_size() > 1:
        dist.broadcast(tensor, src=src)
    return tensor


def all_reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum over ranks in place (no-op without an initialised process group)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor
