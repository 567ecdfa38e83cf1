"""The published TAESD-family weight files ⇄ `TAESDAutoencoder`'s state dict: the explicit key mapping both ways.

The published `*_encoder.pth` / `*_decoder.pth` are state dicts of `nn.Sequential` modules, keyed by layer
index (`"11.conv.2.weight"`, `"11.pool.1.bias"`); `TAESDAutoencoder` names its modules (`"encoder.stages.2.
blocks.0.conv2.weight"`, `"...group_norm_branch.norm.bias"`). `ENCODER_LAYOUT` and `DECODER_LAYOUT` say which
index is which module (the layers without weights: the decoder's clamp, ReLU and upsampling, have none),
`BLOCK_LAYOUT` the names inside a block.
"""

from __future__ import annotations

import glob
import os
from typing import Callable, Dict, Optional, Tuple

import torch

from ..errors import UserError

#: the f8 TAESD layout (`taesd.py` builds its modules from these): downsampling stages, blocks per stage
NUM_STAGES = 3
BLOCKS_PER_STAGE = 3

__all__ = [
    "BLOCK_LAYOUT",
    "DECODER_LAYOUT",
    "ENCODER_LAYOUT",
    "find_taesd_weights",
    "read_taesd_weights",
    "to_taesd_state_dicts",
]


def _encoder_layout() -> Dict[int, str]:
    # conv, block, then per stage: stride-2 conv and blocks, then the conv to the latents
    layout, index = {0: "conv_in", 1: "block_in"}, 2
    for stage in range(NUM_STAGES):
        layout[index] = f"stages.{stage}.downsample"
        index += 1
        for block in range(BLOCKS_PER_STAGE):
            layout[index] = f"stages.{stage}.blocks.{block}"
            index += 1
    layout[index] = "conv_out"
    return layout


def _decoder_layout() -> Dict[int, str]:
    # clamp (0), conv (1), ReLU (2), then per stage: blocks, upsampling (no weights), conv; then block, conv
    layout, index = {1: "conv_in"}, 3
    for stage in range(NUM_STAGES):
        for block in range(BLOCKS_PER_STAGE):
            layout[index] = f"stages.{stage}.blocks.{block}"
            index += 1
        layout[index + 1] = f"stages.{stage}.upsample_conv"
        index += 2
    layout[index], layout[index + 1] = "block_out", "conv_out"
    return layout


#: `nn.Sequential` index of the published encoder → module name under `TAESDAutoencoder.encoder`
ENCODER_LAYOUT: Dict[int, str] = _encoder_layout()
#: `nn.Sequential` index of the published decoder → module name under `TAESDAutoencoder.decoder`
DECODER_LAYOUT: Dict[int, str] = _decoder_layout()
#: names inside a published block → names inside `TAESDBlock`
BLOCK_LAYOUT: Dict[str, str] = {
    "conv.0": "conv1",
    "conv.2": "conv2",
    "conv.4": "conv3",
    "pool.0": "group_norm_branch.expand",
    "pool.1": "group_norm_branch.norm",
    "pool.3": "group_norm_branch.project",
}
_PARTS = {"encoder": ENCODER_LAYOUT, "decoder": DECODER_LAYOUT}


def _to_ours(key: str, layout: Dict[int, str]) -> Optional[str]:
    """`"11.pool.1.bias"` → `"stages.2.blocks.0.group_norm_branch.norm.bias"`; None for an index not in `layout`."""
    index, _, rest = key.partition(".")
    if not index.isdigit() or int(index) not in layout:
        return None
    for theirs, ours in BLOCK_LAYOUT.items():
        if rest.startswith(theirs + "."):
            rest = ours + rest[len(theirs) :]
            break
    return f"{layout[int(index)]}.{rest}"


def _to_theirs(key: str, layout: Dict[int, str]) -> str:
    """The inverse of `_to_ours` (the longest module name of `layout` that `key` starts with)."""
    index, module = max(((i, m) for i, m in layout.items() if key.startswith(m + ".")), key=lambda im: len(im[1]))
    rest = key[len(module) + 1 :]
    for theirs, ours in BLOCK_LAYOUT.items():
        if rest.startswith(ours + "."):
            rest = theirs + rest[len(ours) :]
            break
    return f"{index}.{rest}"


def to_taesd_state_dicts(state: Dict[str, torch.Tensor]) -> Tuple[dict, dict]:
    """A `TAESDAutoencoder` state dict → (encoder, decoder) state dicts in the published layout."""
    out = {"encoder": {}, "decoder": {}}
    for key, tensor in state.items():
        part, _, name = key.partition(".")
        out[part][_to_theirs(name, _PARTS[part])] = tensor
    return out["encoder"], out["decoder"]


def _load(path, argument: str) -> Dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"`{argument}` {path}: no such file (a TAESD-family `*_{argument[:7]}.pth`).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike: not a weight file
        raise UserError(f"`{argument}` {path} is not a PyTorch weight file ({str(err).splitlines()[0]}).") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"`{argument}` {path} holds no state dict of tensors (a TAESD-family `*.pth` does).")
    return state


def _shape(state, key: str, path: str, argument: str) -> torch.Size:
    if key not in state:
        raise UserError(
            f"`{argument}` {path} is not a TAESD-family {argument[:7]} of downsampling 8: it has no `{key}` "
            f"(keys {sorted(state)[:4]}...)."
        )
    return state[key].shape


def _config_of(encoder: dict, decoder: dict, encoder_path: str, decoder_path: str) -> dict:
    """latent_channels, width and midblock_group_norm read from the two state dicts."""
    if "0.weight" not in encoder and "1.weight" in encoder and encoder["1.weight"].shape[1] != 3:
        raise UserError(f"`encoder_path` {encoder_path} holds a TAESD decoder, not an encoder (swapped files?).")
    if "0.weight" in decoder and decoder["0.weight"].dim() == 4 and decoder["0.weight"].shape[1] == 3:
        raise UserError(f"`decoder_path` {decoder_path} holds a TAESD encoder, not a decoder (swapped files?).")
    first = _shape(encoder, "0.weight", encoder_path, "encoder_path")
    last = _shape(encoder, f"{max(ENCODER_LAYOUT)}.weight", encoder_path, "encoder_path")
    decoder_in = _shape(decoder, f"{min(DECODER_LAYOUT)}.weight", decoder_path, "decoder_path")
    config = {
        "latent_channels": int(last[0]),
        "width": int(first[0]),
        "midblock_group_norm": any(".pool." in key for key in encoder),
    }
    if tuple(decoder_in[:2]) != (config["width"], config["latent_channels"]):
        raise UserError(
            f"`decoder_path` {decoder_path} does not match `encoder_path` {encoder_path}: the decoder takes "
            f"{decoder_in[1]}-channel latents to width {decoder_in[0]}, the encoder makes "
            f"{config['latent_channels']}-channel latents at width {config['width']}."
        )
    return config


def read_taesd_weights(
    encoder_path, decoder_path, expected_state: Callable[[dict], Dict[str, torch.Tensor]]
) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(config, state dict) of a `TAESDAutoencoder` from the published `*_encoder.pth` and `*_decoder.pth`.

    `ValueError` naming the file: missing, not a weight file, not the f8 TAESD layout (every key mapped
    and of the expected shape; TAESana's f32 layout is another), an encoder and a decoder that do not match.
    `expected_state(config)`: the state dict (names and shapes) of the model of that config
    (`TAESDAutoencoder._meta_state_dict`), so this module does not import the model.
    """

    paths = {"encoder": os.fspath(encoder_path), "decoder": os.fspath(decoder_path)}
    states = {part: _load(path, f"{part}_path") for part, path in paths.items()}
    config = _config_of(states["encoder"], states["decoder"], paths["encoder"], paths["decoder"])
    expected = expected_state(config)
    state = {}
    for part, theirs in states.items():
        argument, path = f"{part}_path", paths[part]
        unknown = []
        for key, tensor in theirs.items():
            ours = _to_ours(key, _PARTS[part])
            name = f"{part}.{ours}"
            if ours is None or name not in expected:
                unknown.append(key)
            elif expected[name].shape != tensor.shape:
                raise UserError(
                    f"`{argument}` {path}: `{key}` has shape {tuple(tensor.shape)}, the f8 TAESD layout of "
                    f"{config} expects {tuple(expected[name].shape)}."
                )
            else:
                state[name] = tensor
        missing = [
            _to_theirs(k.partition(".")[2], _PARTS[part])
            for k in expected
            if k.startswith(part + ".") and k not in state
        ]
        if unknown or missing:
            raise UserError(
                f"`{argument}` {path} is not a TAESD-family {part} of downsampling 8 (TAESD, TAESDXL, TAESD3, TAEF1, "
                f"TAEF2): unexpected keys {unknown[:4]}, missing keys {missing[:4]}."
            )
    return config, state


def find_taesd_weights(folder: str) -> Optional[Tuple[str, str]]:
    """`(encoder, decoder)` paths of the one `<name>_encoder.pth` / `<name>_decoder.pth` pair in `folder`; None
    when there is none, `ValueError` naming the folder when there are several."""
    pairs = []
    for encoder in sorted(glob.glob(os.path.join(glob.escape(folder), "*_encoder.pth"))):
        decoder = encoder[: -len("_encoder.pth")] + "_decoder.pth"
        if os.path.isfile(decoder):
            pairs.append((encoder, decoder))
    if len(pairs) > 1:
        names = ", ".join(os.path.basename(e)[: -len("_encoder.pth")] for e, _ in pairs)
        raise UserError(f"{folder} holds several TAESD-family weight pairs ({names}): keep one per folder.")
    return pairs[0] if pairs else None
