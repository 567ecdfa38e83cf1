"""`Codes`: what a bottleneck compresses latents to, self-describing, saved with safetensors or as a codes file.

`Codes` lives in the codec (below the bottlenecks, which make and read them); `sd_sparse.bottlenecks.codes`
is a deprecated alias of this module. `Codes.to_bytes` / `Codes.from_bytes` go through the container
(`container.py`), which only knows the fields of `Codes`, so nothing here imports back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from diffusers.utils import BaseOutput

from ..errors import UserError
from ..sparse_coding.codes import SparseCodes, smallest_index_dtype
from .container import codes_to_bytes, read_codes
from .entropy_model import EntropyModel

__all__ = ["Codes", "codes_from_bytes", "encode_signature", "smallest_index_dtype"]

# layout tensor: (B, C, H, W, P_H, P_W, K)
_LAYOUT_SIZE = 7


def encode_signature(class_name: str, fingerprint: str) -> torch.Tensor:
    """`"ClassName:fingerprint"` as a uint8 tensor (kept as a tensor so every field of `Codes` is one)."""
    return torch.tensor(list(f"{class_name}:{fingerprint}".encode()), dtype=torch.uint8)


@dataclass
class Codes(BaseOutput):
    """The codes of a batch of latents, as every bottleneck's `encode` returns and `decode` takes.

    Every field is a tensor, so the object moves, compares and flattens like diffusers' outputs; the
    metadata is read through properties.

    Args:
        indices (`torch.LongTensor` `[N, S]`): code / atom index of each slot (VQ: S = 1). N runs over
            (image, patch row, patch column): `N = B · H/P_H · W/P_W`.
        coefficients (`torch.Tensor` `[N, S]`, *optional*): coefficient of each slot (sparse codes;
            `SparseCodes.values`); `None` for VQ, whose code is the codebook vector itself. Unused slots
            hold 0. (Not named `values`: that would hide the mapping's `.values()`.)
        layout (`torch.LongTensor` `[7]`, on the CPU): `(B, C, H, W, P_H, P_W, K)`: the latent shape, the
            patch size and the number of atoms / codebook vectors.
        signature (`torch.ByteTensor` `[M]`, on the CPU): UTF-8 of `"BottleneckClass:config_fingerprint"`.
        levels (`torch.ShortTensor` `[N, S]`, *optional*): with quantized coefficients (`value_bits`), the
            integer level of each slot; `coefficients` are then exactly
            `bottleneck.dequantize_values(indices, levels)`. What the codes container stores.
        frames (`torch.LongTensor` `[1]`, *optional*, on the CPU): for video latents `[B, C, T, h, w]`
            (coded frame by frame), the number of frames T of each video; the layout's B then counts
            frames (videos · T). None for images.
        residual (`torch.ShortTensor` `[N, D]`, *optional*): integer levels of what the sparse code leaves
            of each coded vector (D its dimension), for bottlenecks that code a residual
            (`DictionaryBottleneck(residual_step=...)`); the codes container codes them against the
            bottleneck's `residual_tables()`.

    `codes[i]` (an int or a slice) gives the codes of image (or video) `i`; `codes["indices"]` the field.
    `codes.to_bytes(bottleneck)` / `Codes.from_bytes(data, bottleneck)`: the compact, bit-exact file format.
    """

    indices: torch.Tensor
    coefficients: Optional[torch.Tensor] = None
    layout: Optional[torch.Tensor] = None
    signature: Optional[torch.Tensor] = None
    levels: Optional[torch.Tensor] = None
    frames: Optional[torch.Tensor] = None
    residual: Optional[torch.Tensor] = None

    def __post_init__(self):
        super().__post_init__()  # also accepts one dict of the fields (how accelerate and pytree rebuild it)
        if self.layout is None or self.signature is None:
            raise UserError("`Codes` needs `layout` and `signature`: make codes with a bottleneck's `encode`.")
        if self.indices.dim() != 2:
            raise UserError(f"`indices` must be [N, S], got shape {tuple(self.indices.shape)}.")
        if self.coefficients is not None and self.coefficients.shape != self.indices.shape:
            raise UserError(
                f"`coefficients` must have the shape of `indices` {tuple(self.indices.shape)}, got {tuple(self.coefficients.shape)}."
            )
        if self.levels is not None and (self.coefficients is None or self.levels.shape != self.indices.shape):
            raise UserError(
                f"`levels` must come with `coefficients` and have the shape of `indices` {tuple(self.indices.shape)}, "
                f"got {tuple(self.levels.shape)}."
            )
        if self.residual is not None and (
            self.residual.dim() != 2
            or self.residual.shape[0] != self.indices.shape[0]
            or self.residual.is_floating_point()
        ):
            raise UserError(
                f"`residual` must be integer levels [N, D] with N = {self.indices.shape[0]} rows, got "
                f"{self.residual.dtype} {tuple(self.residual.shape)}."
            )
        if self.layout.shape != (_LAYOUT_SIZE,):
            raise UserError(
                f"`layout` must be [{_LAYOUT_SIZE}] (B, C, H, W, P_H, P_W, K), got {tuple(self.layout.shape)}."
            )
        b, _, h, w, ph, pw, _ = (int(v) for v in self.layout.tolist())
        if self.frames is not None:
            if self.frames.shape != (1,) or int(self.frames[0]) < 1 or b % int(self.frames[0]):
                raise UserError(
                    f"`frames` must be [1] holding the frames per video, a divisor of the {b} coded frames, "
                    f"got {self.frames.tolist()}."
                )
        expected = b * (h // ph) * (w // pw)
        if self.indices.shape[0] != expected:
            raise UserError(
                f"`indices` has {self.indices.shape[0]} rows but latents {list(self.latent_shape)} in "
                f"{ph}x{pw} patches have {expected} coded vectors."
            )

    # -- metadata -------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> Tuple[int, int, int, int]:
        """`(B, C, H, W)` of the coded latents."""
        return tuple(int(v) for v in self.layout[:4].tolist())

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(int(v) for v in self.layout[4:6].tolist())

    @property
    def num_atoms(self) -> int:
        """K, the number of atoms / codebook vectors the indices refer to."""
        return int(self.layout[6])

    @property
    def num_images(self) -> int:
        """B of the layout: images, or frames of all videos for video codes."""
        return int(self.layout[0])

    @property
    def num_frames(self) -> Optional[int]:
        """Frames per video (T) for codes of video latents; None for images."""
        return None if self.frames is None else int(self.frames[0])

    @property
    def num_items(self) -> int:
        """How many images (or videos) the codes hold: what `codes[i]` indexes."""
        return self.num_images // (self.num_frames or 1)

    @property
    def sparsity(self) -> int:
        """S, slots per coded vector."""
        return self.indices.shape[1]

    @property
    def bottleneck_class(self) -> str:
        return bytes(self.signature.tolist()).decode().split(":", 1)[0]

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the bottleneck's config these codes were made with."""
        return bytes(self.signature.tolist()).decode().split(":", 1)[1]

    @property
    def device(self) -> torch.device:
        return self.indices.device

    # -- views ----------------------------------------------------------------------------------
    def __getitem__(self, key):
        """`codes[i]` / `codes[a:b]`: the codes of those images (videos: of those videos, all their frames);
        `codes["indices"]`: a field."""
        if isinstance(key, str):
            return super().__getitem__(key)
        if isinstance(key, bool) or not isinstance(key, (int, slice)):
            raise TypeError(f"index codes by an image int or slice (or a field name), got {type(key).__name__}.")
        b = self.num_items
        per_image = self.indices.shape[0] // max(b, 1)
        if isinstance(key, int):
            if not -b <= key < b:
                raise IndexError(f"image index {key} out of range for {b} images.")
            key = slice(key % b, key % b + 1)
        images = range(b)[key]
        if images.step != 1:
            raise UserError("codes[...] takes contiguous slices only (step 1).")
        rows = slice(images.start * per_image, images.stop * per_image)
        layout = self.layout.clone()
        layout[0] = len(images) * (self.num_frames or 1)
        return Codes(
            indices=self.indices[rows],
            coefficients=None if self.coefficients is None else self.coefficients[rows],
            layout=layout,
            signature=self.signature,
            levels=None if self.levels is None else self.levels[rows],
            frames=self.frames,
            residual=None if self.residual is None else self.residual[rows],
        )

    def to(self, device: Union[str, torch.device, None] = None, dtype: torch.dtype | None = None) -> Codes:
        """Moves `indices` and `coefficients` to `device` (`dtype` applies to `coefficients` only); the
        small metadata tensors `layout` and `signature` stay on the CPU, so reading them never syncs."""
        coefficients = self.coefficients
        if coefficients is not None:
            coefficients = coefficients.to(device=device, dtype=dtype)
        return Codes(
            indices=self.indices.to(device),
            coefficients=coefficients,
            layout=self.layout.cpu(),
            signature=self.signature.cpu(),
            levels=None if self.levels is None else self.levels.to(device),
            frames=self.frames,
            residual=None if self.residual is None else self.residual.to(device),
        )

    def to_sparse(self) -> SparseCodes:
        """The slots as `SparseCodes` (VQ codes become 1-sparse codes with value 1)."""
        values = (
            self.coefficients if self.coefficients is not None else torch.ones(self.indices.shape, device=self.device)
        )
        return SparseCodes(self.indices, values, self.num_atoms)

    def usage(self) -> torch.Tensor:
        """How many coded vectors use each atom / code (non-zero slots), `[K]`."""
        return self.to_sparse().usage()

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes a safetensors file (atomically): indices in the smallest integer type that holds K,
        coefficients in their own dtype (so `decode(Codes.load(path))` equals `decode(codes)` bit for bit)."""
        from safetensors.torch import save_file

        path = os.fspath(path)
        tensors = {
            "indices": self.indices.to(smallest_index_dtype(self.num_atoms)),
            "layout": self.layout.to(torch.int64),
            "signature": self.signature.to(torch.uint8),
        }
        if self.coefficients is not None:
            tensors["coefficients"] = self.coefficients
        if self.levels is not None:
            tensors["levels"] = self.levels
        if self.frames is not None:
            tensors["frames"] = self.frames.to(torch.int64)
        if self.residual is not None:
            tensors["residual"] = self.residual
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tmp = f"{path}.tmp{os.getpid()}"
        save_file(tensors, tmp, metadata={"format": "sd_sparse.Codes", "bottleneck": self.bottleneck_class})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> Codes:
        """Reads a file written by `Codes.save`; a clear error for anything else."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = os.fspath(path)
        try:
            tensors = load_file(path, device=str(device))
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path} is not a readable codes file: {err}") from None
        missing = {"indices", "layout", "signature"} - set(tensors)
        if missing:
            raise UserError(f"{path} is not an sd_sparse codes file: it lacks {sorted(missing)}.")
        return cls(
            indices=tensors["indices"].long(),
            coefficients=tensors.get("coefficients"),
            layout=tensors["layout"],
            signature=tensors["signature"],
            levels=tensors.get("levels"),
            frames=tensors.get("frames"),
            residual=tensors.get("residual"),
        )

    def to_bytes(self, bottleneck: EntropyModel, vae=None, prior=None) -> bytes:
        """The codes as a compact, self-checking file (`sd_sparse.codec.container`): indices entropy-coded
        against `bottleneck`'s usage prior (sparse supports as sets), quantized coefficients as entropy-coded
        levels (unquantized ones as raw floats), a header naming the bottleneck (and `vae`, if given) and a
        checksum. `Codes.from_bytes(data, bottleneck)` gives these codes back exactly.

        `bottleneck` must be the one that made the codes (its entropy model is not stored in the file).
        `vae`: the diffusers VAE (plain or coded) the latents came from, or its `VAEIdentity`
        (`sd_sparse.autoencoders.identity.vae_identity`); see `sd_sparse.codec.vae_identity` for how a VAE
        object is identified without the codec importing the autoencoders.

        `prior`: a learned prior over these codes (`sd_sparse.priors.CodePrior`, trained on `bottleneck`'s
        codes) that codes the indices and levels instead; `from_bytes` then needs the same prior."""
        return codes_to_bytes(self, bottleneck, vae=vae, prior=prior)

    @classmethod
    def from_bytes(
        cls, data: Union[bytes, bytearray, memoryview], bottleneck: EntropyModel, vae=None, prior=None
    ) -> Codes:
        """Codes from `to_bytes`'s output, bit for bit; `ValueError` for a truncated or corrupted file, a
        file of another bottleneck (naming both), of another VAE (when both `vae` and the file name one) or
        coded with a learned prior that `prior` is not."""
        fields = read_codes(data, bottleneck, vae=vae, prior=prior)
        codes = cls(signature=encode_signature(bottleneck.coding_class_name, bottleneck.config_fingerprint), **fields)
        bottleneck.check_codes(codes)
        return codes


def codes_from_bytes(
    data: Union[bytes, bytearray, memoryview], bottleneck: EntropyModel, vae=None, prior=None
) -> Codes:
    """The `Codes` a codes file holds, bit for bit (on the CPU): `Codes.from_bytes`."""
    return Codes.from_bytes(data, bottleneck, vae=vae, prior=prior)
