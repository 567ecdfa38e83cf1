"""`LPIPS`: the learned perceptual distance (VGG16 features + learned channel weights), from local files only.

Nothing here downloads. The weights come from files the user already has:

- a folder written by `LPIPS.save_pretrained` (one `diffusion_pytorch_model.safetensors` + config), or
- the two original files: torchvision's ImageNet VGG16 checkpoint (`vgg16-397923af.pth`, found in
  torch's hub cache when torchvision has fetched it once) and the LPIPS linear layers (`vgg.pth`,
  shipped inside the `lpips` pip package and used by taming-transformers).

`load_lpips` finds them (or says why not) and `ReconstructionLoss` switches the perceptual term off
with a warning when there are none.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import re

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import UserError

logger = logging.getLogger(__name__)

# VGG16's convolutional part: channels per conv, "M" for a 2×2 max-pool; module indices follow
# torchvision's `features` so its checkpoint loads by name.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# indices in `features` of the ReLUs whose outputs LPIPS compares (relu1_2 ... relu5_3)
VGG16_TAPS = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)
# the input standardisation LPIPS was trained with (images in [-1, 1])
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"
LPIPS_LINEAR_FILE = "vgg.pth"


def _vgg16_features() -> nn.Sequential:
    layers, channels = [], 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
            channels = item
    return nn.Sequential(*layers)


class LPIPS(ModelMixin, ConfigMixin):
    r"""LPIPS distance between image batches `[B, 3, H, W]` in [-1, 1]; returns `[B]`.

    Each VGG16 tap's features are unit-normalised over channels, their squared difference is
    weighted per channel by the (non-negative) learned weights, averaged over space and summed over
    the five taps. The module is frozen (`requires_grad=False`) but passes gradients to its inputs.
    Build it with `load_lpips` or `LPIPS.from_pretrained(local_folder)`; a bare `LPIPS()` has random
    weights and is only useful for tests.
    """

    @register_to_config
    def __init__(self, network: str = "vgg16"):
        super().__init__()
        if network != "vgg16":
            raise UserError(f"`network` must be 'vgg16', got {network!r}.")
        self.features = _vgg16_features()
        self.heads = nn.ParameterList([nn.Parameter(torch.rand(1, c, 1, 1)) for c in TAP_CHANNELS])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always an evaluation network
        return super().train(False)

    def _taps(self, images: torch.Tensor):
        h = (images - self.shift.to(images.dtype)) / self.scale.to(images.dtype)
        taps = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in VGG16_TAPS:
                taps.append(h)
                if index == VGG16_TAPS[-1]:
                    break
        return taps

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        if images.shape != reconstructions.shape or images.dim() != 4 or images.shape[1] != 3:
            raise UserError(
                f"`images` and `reconstructions` must both be [B, 3, H, W], got {tuple(images.shape)} and "
                f"{tuple(reconstructions.shape)}."
            )
        both = self._taps(torch.cat([images, reconstructions]))
        distance = images.new_zeros(images.shape[0])
        for feats, head in zip(both, self.heads):
            feats = feats / (feats.square().sum(1, keepdim=True).sqrt() + 1e-10)
            first, second = feats.chunk(2)
            weighted = ((first - second).square() * head.to(feats.dtype)).sum(1)
            distance = distance + weighted.mean((1, 2))
        return distance

    @classmethod
    def from_original_checkpoints(cls, vgg16_path: str, linear_path: str) -> LPIPS:
        """From torchvision's VGG16 checkpoint and the LPIPS linear-layer file (`vgg.pth`)."""
        model = cls()
        trunk = _load_tensors(vgg16_path, "vgg16_path")
        features = {}
        for key, value in trunk.items():
            match = re.search(r"(?:^|\.)(?:features|slice\d+)\.(\d+)\.(weight|bias)$", key)
            if match:
                features[f"{match.group(1)}.{match.group(2)}"] = value
        _load_checked(model.features, features, vgg16_path, "vgg16_path")
        linear = _load_tensors(linear_path, "linear_path")
        heads = {}
        for key, value in linear.items():
            match = re.search(r"(?:^|\.)lin(\d)\.(?:model\.\d+\.)?weight$", key)
            if match:
                heads[match.group(1)] = value
        _load_checked(model.heads, heads, linear_path, "linear_path")
        return model


def _load_tensors(path: str, name: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{name}`: no file at {path!r}.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else {}


def _load_checked(module: nn.Module, state: dict, path: str, name: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise UserError(
            f"`{name}` {path!r} lacks LPIPS/VGG16 tensors {missing[:4]}{'...' if len(missing) > 4 else ''}."
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(
                f"`{name}` {path!r}: tensor {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}."
            )
    module.load_state_dict({k: state[k].float() for k in expected})


def _default_locations():
    """Where the original files sit when torchvision / the lpips package have been used before."""
    vgg16 = os.path.join(torch.hub.get_dir(), "checkpoints", TORCHVISION_VGG16_FILE)
    linear = None
    spec = importlib.util.find_spec("lpips")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        linear = os.path.join(list(spec.submodule_search_locations)[0], "weights", "v0.1", LPIPS_LINEAR_FILE)
    return vgg16, linear


def load_lpips(path: str | None = None) -> LPIPS | None:
    """LPIPS from local files, never from the network.

    `path` is a folder written by `LPIPS.save_pretrained`, or a folder holding the two original
    files (`vgg16-*.pth` and `vgg.pth`). With `path=None` the environment variable
    `SD_SPARSE_LPIPS_WEIGHTS` is tried, then torch's hub cache and the installed `lpips` package;
    if those lack the files, returns None and logs a warning naming what was looked for. A `path`
    given explicitly that does not hold the weights raises an error instead.
    """
    explicit = path is not None
    path = path or os.environ.get("SD_SPARSE_LPIPS_WEIGHTS")
    if path:
        if os.path.isfile(os.path.join(path, LPIPS.config_name)):
            return LPIPS.from_pretrained(path, local_files_only=True)
        vgg16 = sorted(glob.glob(os.path.join(path, "vgg16*.pth")))
        linear = os.path.join(path, LPIPS_LINEAR_FILE)
        if vgg16 and os.path.isfile(linear):
            return LPIPS.from_original_checkpoints(vgg16[0], linear)
        message = (
            f"perceptual weights {path!r}: expected a folder saved by `LPIPS.save_pretrained` or one holding "
            f"torchvision's VGG16 checkpoint (vgg16-*.pth) and the LPIPS linear layers ({LPIPS_LINEAR_FILE})."
        )
        if explicit:
            raise FileNotFoundError(message)
        logger.warning("sd_sparse: SD_SPARSE_LPIPS_WEIGHTS: %s", message)
        return None
    vgg16, linear = _default_locations()
    if os.path.isfile(vgg16) and linear is not None and os.path.isfile(linear):
        return LPIPS.from_original_checkpoints(vgg16, linear)
    logger.warning(
        "sd_sparse: no local LPIPS weights (looked for %s and the `lpips` package's %s): the perceptual term "
        "is switched off and LPIPS scores are skipped. Point --perceptual_weights (or SD_SPARSE_LPIPS_WEIGHTS) at "
        "a folder holding them to use LPIPS; nothing is downloaded.",
        vgg16,
        f"weights/v0.1/{LPIPS_LINEAR_FILE}",
    )
    return None
