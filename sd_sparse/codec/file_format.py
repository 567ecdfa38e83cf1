"""The codes file format: its layout, flags and checksum; read without any model (`codes_file_info`).

Layout (little-endian; `varint` = unsigned LEB128):

    magic "SDSC" | version u8 | flags u8 | [extension flags u8]          (version 2 only)
    bottleneck class name (u8 length + UTF-8) | config fingerprint (8 bytes) | state digest (8 bytes)
    B, C, H, W, P_H, P_W, K, S (8 varints) | value_bits u8 (0: none) | raw value dtype u8 (0: none)
    [VAE fingerprint (8 bytes) | VAE downsampling factor u8]            (flag VAE)
    [frames per video T (varint)]                                        (flag FRAMES: B counts frames)
    [prior state digest (8 bytes)]                                       (extension flag PRIOR)
    stream length in 32-bit words (varint)
    range-coder stream (constriction, 32-bit words)
    raw coefficients (N·S values of the raw dtype)                      (flag RAW)
    CRC-32 of everything before (u32)

What the stream holds is the container's business (`container.py`). Decoding needs the same entropy
model (the bottleneck; class, config and state are checked): its usage prior and coefficient scales are
not repeated in the file. The models are built with float64 `+`, `×` and `math.fsum` only and handed to
constriction's `Categorical(perfect=False)`, so a file decodes on any machine with a constriction that
quantizes those models the same way (0.4 and 0.5 do). `tests/data/codes_v1/` holds files of version 1
that must keep decoding bit for bit.

Version 2 only adds the extension flags byte (`EXT_*`: fitted tables of the model, a residual, a learned
prior over the codes, whose digest the header then records); a file that needs none of them is written as
version 1, byte for byte what earlier versions wrote.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..errors import UserError
from .vae_identity import VAEIdentity

__all__ = [
    "EXT_ADAPTIVE_COUNTS",
    "EXT_INDEX_TABLES",
    "EXT_LEVEL_TABLES",
    "EXT_PRIOR",
    "EXT_RESIDUAL",
    "CodesFileInfo",
    "ParsedCodesFile",
    "codes_file_info",
    "pack_codes_file",
    "parse_codes_file",
]

MAGIC = b"SDSC"
VERSION = 1
#: the version of files with extension flags (written only when one is set)
VERSION_EXTENDED = 2

FLAG_SETS = 1 << 0  # indices coded as sets (sorted supports, unused slots last)
FLAG_UNIFORM = 1 << 1  # indices coded against the uniform distribution, not the usage prior
FLAG_LEVELS = 1 << 2  # quantized coefficients: integer levels in the stream
FLAG_RAW = 1 << 3  # unquantized coefficients: raw floats after the stream
FLAG_FIXED = 1 << 4  # levels at fixed width (value_bits each), not adaptive
FLAG_VAE = 1 << 5  # the VAE's fingerprint and downsampling factor are recorded
FLAG_FULL = 1 << 6  # every support uses all S slots (no per-vector counts in the stream)
FLAG_FRAMES = 1 << 7  # video codes: B counts frames, T frames per video follow the VAE fields

# extension flags (version 2): members of the model that older files never used
EXT_INDEX_TABLES = 1 << 0  # indices coded slot by slot against the model's `index_tables()`
EXT_LEVEL_TABLES = 1 << 1  # levels coded against the model's fitted `level_tables()`
EXT_RESIDUAL = 1 << 2  # residual levels after everything, against the model's `residual_tables()`
EXT_ADAPTIVE_COUNTS = 1 << 3  # the supports' sizes (no FULL) with an adaptive histogram, not uniform
EXT_PRIOR = 1 << 4  # indices and levels coded with a learned prior (`CodePrior`), its digest in the header

RAW_DTYPES = {1: torch.float16, 2: torch.bfloat16, 3: torch.float32, 4: torch.float64}
RAW_CODES = {dtype: code for code, dtype in RAW_DTYPES.items()}
_CHECKSUM_BYTES = 4


@dataclass
class CodesFileInfo:
    """What a codes file holds and what it costs (read from its header, no bottleneck needed).

    Args:
        bottleneck_class (`str`), fingerprint (`str`): the bottleneck's class and config fingerprint.
        state (`str`): the digest of the bottleneck's state (weights, scales, usage statistics).
        latent_shape (`Tuple[int, int, int, int]`): `(B, C, H, W)` of the coded latents.
        patch_size (`Tuple[int, int]`), num_atoms (`int`), sparsity (`int`): the codes' layout (S slots).
        value_bits (`int`, *optional*): bits of the quantized coefficients; None when there are none or
            they are raw floats.
        vae_fingerprint (`str`, *optional*), vae_factor (`int`, *optional*): the VAE recorded at writing.
        num_bytes (`int`): the file's length, header and checksum included: what tables report.
        header_bytes (`int`): bytes before the payload, plus the checksum.
        index_model (`str`): `"sets, prior"`, `"sets, uniform"`, `"slots, prior"`, `"slots, uniform"` or
            `"slots, tables"`.
        value_model (`str`): `"none"`, `"raw <dtype>"`, `"levels, adaptive"`, `"levels, fixed"` or
            `"levels, fitted"`.
        num_frames (`int`, *optional*): frames per video for video codes (B then counts frames); None for images.
        residual_model (`str`): `"none"` or `"levels, fitted"` (residual levels after the codes).
        prior_digest (`str`, *optional*): the state digest of the learned prior the indices and levels were
            coded with (`index_model` is then `"prior"`); None without one.
    """

    bottleneck_class: str
    fingerprint: str
    state: str
    latent_shape: Tuple[int, int, int, int]
    patch_size: Tuple[int, int]
    num_atoms: int
    sparsity: int
    value_bits: Optional[int]
    vae_fingerprint: Optional[str]
    vae_factor: Optional[int]
    num_bytes: int
    header_bytes: int
    index_model: str
    value_model: str
    num_frames: Optional[int] = None
    residual_model: str = "none"
    prior_digest: Optional[str] = None

    @property
    def positions(self) -> int:
        """Latent positions coded: `B·H·W` (B counting every latent frame of video codes)."""
        b, _, h, w = self.latent_shape
        return b * h * w

    @property
    def bytes_per_position(self) -> float:
        """Measured bytes of the whole file per latent position."""
        return self.num_bytes / self.positions

    @property
    def bits_per_position(self) -> float:
        """Measured bits of the whole file per latent position (compare with `bottleneck.bits_per_position`)."""
        return 8 * self.num_bytes / self.positions

    @property
    def payload_bits_per_position(self) -> float:
        """Bits per latent position without the header and checksum."""
        return 8 * (self.num_bytes - self.header_bytes) / self.positions

    @property
    def pixels(self) -> Optional[int]:
        """Image pixels the codes stand for (`B·H·W·f²`), when the file records the VAE's factor f."""
        return None if self.vae_factor is None else self.positions * self.vae_factor**2

    @property
    def bytes_per_pixel(self) -> Optional[float]:
        return None if self.pixels is None else self.num_bytes / self.pixels

    @property
    def bits_per_pixel(self) -> Optional[float]:
        return None if self.pixels is None else 8 * self.num_bytes / self.pixels


# -- small binary helpers ----------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    if value < 0:
        raise UserError(f"cannot store a negative size {value} in a codes file.")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise _Truncated
        out = self.data[self.pos : self.pos + count]
        self.pos += count
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise UserError("corrupted codes file: a size field is too long.")


def _hex_bytes(text: str) -> bytes:
    return bytes.fromhex(text)[:8].ljust(8, b"\0")


# -- writing -----------------------------------------------------------------------------------------
def pack_codes_file(
    flags: int,
    class_name: str,
    fingerprint: str,
    state: str,
    layout: Tuple[int, ...],
    value_bits: Optional[int],
    raw_dtype: Optional[torch.dtype],
    vae: Optional[VAEIdentity],
    num_frames: Optional[int],
    stream: bytes,
    raw: bytes = b"",
    extension_flags: int = 0,
    prior_digest: Optional[str] = None,
) -> bytes:
    """Header, payload and checksum of a codes file (the layout of the module docstring).

    Args:
        flags (`int`): the `FLAG_*` bits of the payload; `FLAG_VAE` and `FLAG_FRAMES` are added here.
        class_name (`str`), fingerprint (`str`), state (`str`): the model's identity (hex digests).
        layout (`Tuple[int, ...]`): `(B, C, H, W, P_H, P_W, K, S)`.
        value_bits (`int`, *optional*): bits of the quantized levels in the stream.
        raw_dtype (`torch.dtype`, *optional*): dtype of the raw coefficients `raw` after the stream.
        vae (`VAEIdentity`, *optional*): the VAE to record.
        num_frames (`int`, *optional*): frames per video of video codes.
        stream (`bytes`): the range coder's stream (a whole number of 32-bit words).
        extension_flags (`int`): the `EXT_*` bits; with any set the file is version 2.
        prior_digest (`str`, *optional*): the learned prior's state digest (sets `EXT_PRIOR`).
    """
    prior_bytes = b""
    if prior_digest is not None:
        extension_flags |= EXT_PRIOR
        prior_bytes = _hex_bytes(prior_digest)
    vae_bytes = frames_bytes = b""
    if vae is not None:
        flags |= FLAG_VAE
        vae_bytes = _hex_bytes(vae.fingerprint) + bytes([min(vae.downsampling_factor or 0, 255)])
    if num_frames is not None:
        flags |= FLAG_FRAMES
        frames_bytes = _varint(num_frames)
    name = class_name.encode()
    header = b"".join(
        [
            MAGIC,
            bytes([VERSION, flags]) if not extension_flags else bytes([VERSION_EXTENDED, flags, extension_flags]),
            bytes([len(name)]),
            name,
            _hex_bytes(fingerprint),
            _hex_bytes(state),
            b"".join(_varint(v) for v in layout),
            bytes([value_bits or 0, RAW_CODES[raw_dtype] if raw_dtype is not None else 0]),
            vae_bytes,
            frames_bytes,
            prior_bytes,
            _varint(len(stream) // 4),
        ]
    )
    body = header + stream + raw
    return body + struct.pack("<I", zlib.crc32(body))


# -- reading -----------------------------------------------------------------------------------------
@dataclass
class ParsedCodesFile:
    """A checked codes file, split: its `info`, `flags`, the range coder's `stream` and the `raw`
    coefficient bytes (of `raw_dtype`, with flag RAW)."""

    info: CodesFileInfo
    flags: int
    raw_dtype: Optional[torch.dtype]
    stream: bytes
    raw: bytes
    extension_flags: int = 0


def parse_codes_file(data) -> ParsedCodesFile:
    """Splits a codes file (`bytes`) into its parts; `ValueError` for anything but a whole, intact codes file
    (magic, version, layout, length, checksum)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UserError(f"`data` must be the bytes of a codes file, got {type(data).__name__}.")
    data = bytes(data)
    if data[:4] != MAGIC:
        what = "empty" if not data else f"starts with {data[:4]!r}"
        raise UserError(f"not an sd_sparse codes file: it {what}, not {MAGIC!r}.")
    reader = _Reader(data)
    where = "header"
    try:
        reader.take(4)
        version = reader.u8()
        if version not in (VERSION, VERSION_EXTENDED):
            raise UserError(
                f"codes file version {version} is not supported (this sd_sparse reads versions {VERSION} and "
                f"{VERSION_EXTENDED})."
            )
        flags = reader.u8()
        extension_flags = reader.u8() if version == VERSION_EXTENDED else 0
        name = reader.take(reader.u8()).decode("utf-8", errors="replace")
        fingerprint = reader.take(8).hex()
        state = reader.take(8).hex()
        b, c, h, w, ph, pw, K, S = (reader.varint() for _ in range(8))
        value_bits, raw_code = reader.u8(), reader.u8()
        vae_fp = vae_factor = None
        if flags & FLAG_VAE:
            vae_fp = reader.take(8).hex()
            vae_factor = reader.u8() or None
        num_frames = reader.varint() if flags & FLAG_FRAMES else None
        prior_digest = reader.take(8).hex() if extension_flags & EXT_PRIOR else None
        stream_bytes = 4 * reader.varint()
        header_bytes = reader.pos
        where = "payload"
        stream = reader.take(stream_bytes)
        raw_dtype = RAW_DTYPES.get(raw_code) if flags & FLAG_RAW else None
        if flags & FLAG_RAW and raw_dtype is None:
            raise UserError(f"corrupted codes file: unknown coefficient dtype code {raw_code}.")
        if (
            min(b, c, h, w, ph, pw, K, S) < 1
            or h % ph
            or w % pw
            or (num_frames is not None and (num_frames < 1 or b % num_frames))
        ):
            raise UserError(f"corrupted codes file: impossible layout {(b, c, h, w)} / {(ph, pw)}, K={K}, S={S}.")
        N = b * (h // ph) * (w // pw)
        raw_size = N * S * raw_dtype.itemsize if raw_dtype is not None else 0
        raw = reader.take(raw_size)
        reader.take(_CHECKSUM_BYTES)
    except _Truncated:
        raise UserError(f"truncated codes file: its {len(data)} bytes end inside the {where}.") from None
    if reader.pos != len(data):
        raise UserError(f"corrupted codes file: {len(data) - reader.pos} unexpected bytes after the checksum.")
    (checksum,) = struct.unpack("<I", data[-_CHECKSUM_BYTES:])
    if zlib.crc32(data[:-_CHECKSUM_BYTES]) != checksum:
        raise UserError("corrupted codes file: the checksum does not match its contents.")
    levels_model = "none"
    if flags & FLAG_LEVELS:
        levels_model = "levels, fixed" if flags & FLAG_FIXED else "levels, adaptive"
        if extension_flags & EXT_LEVEL_TABLES:
            levels_model = "levels, fitted"
        if extension_flags & EXT_PRIOR:
            levels_model = "levels, prior"
    elif raw_dtype is not None:
        levels_model = f"raw {str(raw_dtype).replace('torch.', '')}"
    info = CodesFileInfo(
        bottleneck_class=name,
        fingerprint=fingerprint,
        state=state,
        latent_shape=(b, c, h, w),
        patch_size=(ph, pw),
        num_atoms=K,
        sparsity=S,
        value_bits=value_bits or None,
        vae_fingerprint=vae_fp,
        vae_factor=vae_factor,
        num_frames=num_frames,
        num_bytes=len(data),
        header_bytes=header_bytes + _CHECKSUM_BYTES,
        index_model="prior"
        if extension_flags & EXT_PRIOR
        else "slots, tables"
        if extension_flags & EXT_INDEX_TABLES
        else ("sets" if flags & FLAG_SETS else "slots") + (", uniform" if flags & FLAG_UNIFORM else ", prior"),
        value_model=levels_model,
        residual_model="levels, fitted" if extension_flags & EXT_RESIDUAL else "none",
        prior_digest=prior_digest,
    )
    return ParsedCodesFile(
        info=info, flags=flags, raw_dtype=raw_dtype, stream=stream, raw=raw, extension_flags=extension_flags
    )


def codes_file_info(data) -> CodesFileInfo:
    """The header of a codes file and its measured rate (`bits_per_position`, `bits_per_pixel`), checked
    (truncation, checksum) but not decoded: no bottleneck needed."""
    return parse_codes_file(data).info
