"""Building a coded VAE around a plain one (and back) without copying weights, and the dtype and device
rules of its float32 bottleneck."""

from __future__ import annotations

import torch

from ..errors import UserError

#: types of the run-time settings a diffusers VAE keeps outside its config (slicing, tiling, tile sizes, ...)
_RUNTIME_TYPES = (bool, int, float, str, tuple, type(None))


def keep_floating_dtype(fn):
    """`fn` as `nn.Module._apply` uses it, but moving tensors without changing their dtype."""

    def apply(tensor: torch.Tensor) -> torch.Tensor:
        probe = fn(torch.empty(0, dtype=tensor.dtype, device=tensor.device))
        if probe.dtype == tensor.dtype:
            return fn(tensor)  # a pure move (or to_empty, share_memory, ...)
        return tensor.to(device=probe.device)

    return apply


def device_of(module: torch.nn.Module, default: torch.device) -> torch.device:
    """Where `module` computes: its parameters' device, or `default` when they are offloaded (meta)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return default if tensor.is_meta else tensor.device
    return default


def with_shared_weights(cls, config: dict, source: torch.nn.Module, skip_prefix: str):
    """`cls(**config)` built without initialising weights, holding `source`'s parameters and buffers
    (the same tensors: nothing is copied). Names under `skip_prefix` in either model are left alone."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(**config)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(skip_prefix)}
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.startswith(skip_prefix)]
    if missing or result.unexpected_keys:
        raise UserError(
            f"cannot rebuild {type(source).__name__} as {cls.__name__}: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]} (was it modified, e.g. with fused projections?)."
        )
    grads = dict(source.named_parameters())
    for name, param in model.named_parameters():
        if name in grads:
            param.requires_grad_(grads[name].requires_grad)
    buffers = dict(source.named_buffers())  # non-persistent buffers are not in the state dict
    for name, buffer in list(model.named_buffers()):
        if name in buffers and not name.startswith(skip_prefix) and buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner)._buffers[leaf] = buffers[name]
    # runtime settings a diffusers VAE keeps outside its config (slicing, tiling, tile sizes and strides, ...)
    for name, value in vars(source).items():
        if (
            not name.startswith("_")
            and isinstance(value, _RUNTIME_TYPES)
            and name in vars(model)
            and name != "training"
        ):
            setattr(model, name, value)
    if hasattr(source, "attn_processors") and hasattr(model, "set_attn_processor"):
        model.set_attn_processor(dict(source.attn_processors))
    return model
