"""The codes file: `Codes` as bytes, entropy-coded against the bottleneck that made them, bit-exact.

Layout (little-endian; `varint` = unsigned LEB128):

    magic "SDSC" | version u8 | flags u8
    bottleneck class name (u8 length + UTF-8) | config fingerprint (8 bytes) | state digest (8 bytes)
    B, C, H, W, P_H, P_W, K, S (8 varints) | value_bits u8 (0: none) | raw value dtype u8 (0: none)
    [VAE fingerprint (8 bytes) | VAE downsampling factor u8]            (flag VAE)
    [frames per video T (varint)]                                        (flag FRAMES: B counts frames)
    stream length in 32-bit words (varint)
    range-coder stream (constriction, 32-bit words)
    raw coefficients (N·S values of the raw dtype)                      (flag RAW)
    CRC-32 of everything before (u32)

The stream holds, in order: the number of used slots of each support (only without flag FULL), the
indices (flag SETS: each support as a set, `entropy.encode_sets`; otherwise every slot as a symbol),
then the quantized levels (adaptive histogram, or fixed width with flag FIXED). Indices use the
bottleneck's usage prior unless flag UNIFORM; the writer keeps whichever choice is shorter, so the
payload never exceeds the fixed-length count (`bits_per_position`) by more than the coder's flush.
Decoding needs the same bottleneck (class, config and state are checked): its usage prior and
coefficient scales are the entropy model, and are not repeated in the file. The models are built
with float64 `+`, `×` and `math.fsum` only and handed to constriction's `Categorical(perfect=False)`,
so a file decodes on any machine with a constriction that quantizes those models the same way
(0.4 and 0.5 do).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from . import entropy
from .quantization import LEVEL_DTYPE, level_range

MAGIC = b"SDSC"
VERSION = 1

FLAG_SETS = 1 << 0  # indices coded as sets (sorted supports, unused slots last)
FLAG_UNIFORM = 1 << 1  # indices coded against the uniform distribution, not the usage prior
FLAG_LEVELS = 1 << 2  # quantized coefficients: integer levels in the stream
FLAG_RAW = 1 << 3  # unquantized coefficients: raw floats after the stream
FLAG_FIXED = 1 << 4  # levels at fixed width (value_bits each), not adaptive
FLAG_VAE = 1 << 5  # the VAE's fingerprint and downsampling factor are recorded
FLAG_FULL = 1 << 6  # every support uses all S slots (no per-vector counts in the stream)
FLAG_FRAMES = 1 << 7  # video codes: B counts frames, T frames per video follow the VAE fields

_RAW_DTYPES = {1: torch.float16, 2: torch.bfloat16, 3: torch.float32, 4: torch.float64}
_RAW_CODES = {dtype: code for code, dtype in _RAW_DTYPES.items()}
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
        index_model (`str`): `"sets, prior"`, `"sets, uniform"`, `"slots, prior"` or `"slots, uniform"`.
        value_model (`str`): `"none"`, `"raw <dtype>"`, `"levels, adaptive"` or `"levels, fixed"`.
        num_frames (`int`, *optional*): frames per video for video codes (B then counts frames); None for images.
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


# -- fingerprints ------------------------------------------------------------------------------------
def vae_fingerprint(vae) -> str:
    """16 hex digits identifying a diffusers VAE: class, config and the first 4096 values of every weight,
    rounded to float16 (so float32 and float16 copies of one checkpoint agree; a bfloat16 copy, which
    rounds differently, counts as another VAE). A coded VAE and its plain VAE share a fingerprint: the
    bottleneck is left out (the file names it separately)."""
    base = getattr(vae, "_vae_class", None) or type(vae)
    config = {
        k: v
        for k, v in dict(vae.config).items()
        if not k.startswith("_") and k not in ("bottleneck_class", "bottleneck_config")
    }
    # JSON: a config built in code (tuples) and the same config read from a file (lists) agree
    digest = hashlib.sha256(
        json.dumps({"class": base.__name__, "config": config}, sort_keys=True, default=str).encode()
    )
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith("bottleneck.") or not tensor.is_floating_point() or tensor.is_meta:
            continue
        sample = tensor.detach().reshape(-1)[:4096].to("cpu", torch.float16)
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def vae_downsampling(vae) -> Optional[int]:
    """The VAE's spatial factor (8 for Stable Diffusion's), from the VAE or its config; None when unknown."""
    ratio = vars(vae).get("spatial_compression_ratio") or vae.config.get("spatial_compression_ratio", None)
    if isinstance(ratio, int) and ratio > 0:
        return ratio
    config = vae.config
    for key in ("block_out_channels", "encoder_block_out_channels"):
        channels = config.get(key) if hasattr(config, "get") else None
        if channels:
            return 2 ** (len(channels) - 1)
    return None


# -- small binary helpers ----------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"cannot store a negative size {value} in a codes file.")
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
                raise ValueError("corrupted codes file: a size field is too long.")


def _hex_bytes(text: str) -> bytes:
    return bytes.fromhex(text)[:8].ljust(8, b"\0")


# -- the codes' structure ----------------------------------------------------------------------------
def _support_counts(indices: np.ndarray) -> np.ndarray:
    """Length of the strictly increasing prefix of each row (at least 1)."""
    if indices.shape[1] == 1:
        return np.ones(indices.shape[0], dtype=np.int64)
    increasing = indices[:, 1:] > indices[:, :-1]
    return 1 + np.cumprod(increasing, axis=1).sum(1)


def _is_canonical(indices: np.ndarray, levels: Optional[np.ndarray], counts: np.ndarray) -> bool:
    """Rows sorted by atom, unused slots (after the sorted prefix) with index 0 and level 0."""
    unused = np.arange(indices.shape[1])[None, :] >= counts[:, None]
    if (indices[unused] != 0).any():
        return False
    return levels is None or not (levels[unused] != 0).any()


def _stream_bits(write) -> int:
    encoder = entropy.constriction().stream.queue.RangeEncoder()
    write(encoder)
    return encoder.num_bits()


# -- writing -----------------------------------------------------------------------------------------
def codes_to_bytes(codes, bottleneck, vae=None) -> bytes:
    """`Codes` → the bytes of a codes file (see the module docstring); `Codes.to_bytes` calls this.

    Args:
        codes (`Codes`): made by `bottleneck` (`encode`, `forward`, a coded VAE's `compress`).
        bottleneck (`Bottleneck`): the bottleneck that made them; its usage prior and coefficient scales
            are the entropy model.
        vae (*optional*): the diffusers VAE (plain or coded) the latents came from; its fingerprint and
            downsampling factor are recorded so decoding with another VAE is an error and the file's
            bits per pixel are known.
    """
    from ..bottlenecks.codes import Codes

    if not isinstance(codes, Codes):
        raise ValueError(f"`codes` must be `Codes` from a bottleneck's `encode`, got {type(codes).__name__}.")
    bottleneck.check_codes(codes)
    K, S = codes.num_atoms, codes.sparsity
    N = codes.indices.shape[0]
    indices = codes.indices.detach().to("cpu", torch.int64).numpy()
    if N and (indices.min() < 0 or indices.max() >= K):
        raise ValueError(f"`codes.indices` must lie in [0, {K}), got values in [{indices.min()}, {indices.max()}].")
    value_bits = bottleneck.value_bits if hasattr(bottleneck, "value_bits") else None
    flags = 0
    levels = None
    raw = None
    if value_bits is not None:
        if codes.levels is None:
            raise ValueError(
                f"{type(bottleneck).__name__} quantizes coefficients (value_bits={value_bits}) but `codes` "
                "have no `levels`: make them with this bottleneck's `encode` or `forward`."
            )
        low, high = level_range(value_bits)
        level_tensor = codes.levels.detach().to("cpu")
        if N and (int(level_tensor.min()) < low or int(level_tensor.max()) > high):
            raise ValueError(f"`codes.levels` must lie in [{low}, {high}] for value_bits={value_bits}.")
        expected = bottleneck.dequantize_values(codes.indices.to("cpu"), level_tensor)
        if not torch.equal(expected.to(codes.coefficients.dtype), codes.coefficients.detach().to("cpu")):
            raise ValueError(
                "`codes.coefficients` are not the dequantized `codes.levels` of this bottleneck: the file would "
                "not decode to the same latents."
            )
        levels = level_tensor.to(torch.int64).numpy()
        flags |= FLAG_LEVELS
    elif codes.coefficients is not None:
        raw = codes.coefficients.detach().to("cpu").contiguous()
        if raw.dtype not in _RAW_CODES:
            raise ValueError(f"`codes.coefficients` must be a float tensor, got {raw.dtype}.")
        flags |= FLAG_RAW

    counts = _support_counts(indices) if N else np.zeros(0, dtype=np.int64)
    sets = N > 0 and entropy.set_bits_fit(K, S) and _is_canonical(indices, levels, counts)
    if sets:
        flags |= FLAG_SETS
        if (counts == S).all():
            flags |= FLAG_FULL
    prior = bottleneck.usage_prior() if hasattr(bottleneck, "usage_prior") else None
    prior = None if prior is None else prior.detach().to("cpu", torch.float64).numpy()

    def write_indices(encoder, weights):
        if sets:
            if not flags & FLAG_FULL:
                entropy.encode_symbols(encoder, counts, S + 1)
            entropy.encode_sets(encoder, indices, counts, np.ones(K) if weights is None else weights)
        else:
            entropy.encode_symbols(encoder, indices.reshape(-1), K, weights)

    index_weights = None
    if prior is not None and N:
        weights = entropy.prior_weights(prior, K)
        if _stream_bits(lambda e: write_indices(e, weights)) < _stream_bits(lambda e: write_indices(e, None)):
            index_weights = weights
    if index_weights is None:
        flags |= FLAG_UNIFORM

    level_symbols = None
    if levels is not None:
        low, _ = level_range(value_bits)
        used = np.arange(S)[None, :] < counts[:, None] if sets else np.ones_like(levels, dtype=bool)
        level_symbols = (levels[used] - low).astype(np.int64)
        alphabet = 1 << value_bits
        fixed = _stream_bits(lambda e: entropy.encode_symbols(e, level_symbols, alphabet))
        if (
            level_symbols.size == 0
            or _stream_bits(lambda e: entropy.encode_adaptive(e, level_symbols, alphabet)) >= fixed
        ):
            flags |= FLAG_FIXED

    encoder = entropy.constriction().stream.queue.RangeEncoder()
    if N:
        write_indices(encoder, index_weights)
    if level_symbols is not None and level_symbols.size:
        if flags & FLAG_FIXED:
            entropy.encode_symbols(encoder, level_symbols, 1 << value_bits)
        else:
            entropy.encode_adaptive(encoder, level_symbols, 1 << value_bits)
    stream = encoder.get_compressed().astype("<u4").tobytes()

    vae_bytes = b""
    if vae is not None:
        flags |= FLAG_VAE
        factor = vae_downsampling(vae) or 0
        vae_bytes = _hex_bytes(vae_fingerprint(vae)) + bytes([min(factor, 255)])
    frames_bytes = b""
    if codes.num_frames is not None:
        flags |= FLAG_FRAMES
        frames_bytes = _varint(codes.num_frames)
    name = codes.bottleneck_class.encode()
    b, c, h, w = codes.latent_shape
    ph, pw = codes.patch_size
    header = b"".join(
        [
            MAGIC,
            bytes([VERSION, flags, len(name)]),
            name,
            _hex_bytes(codes.fingerprint),
            _hex_bytes(bottleneck.coding_state_digest()),
            b"".join(_varint(v) for v in (b, c, h, w, ph, pw, K, S)),
            bytes([value_bits or 0, _RAW_CODES[raw.dtype] if raw is not None else 0]),
            vae_bytes,
            frames_bytes,
            _varint(len(stream) // 4),
        ]
    )
    raw_bytes = b"" if raw is None else raw.reshape(-1).view(torch.uint8).numpy().tobytes()
    body = header + stream + raw_bytes
    return body + struct.pack("<I", zlib.crc32(body))


# -- reading -----------------------------------------------------------------------------------------
@dataclass
class _Header:
    info: CodesFileInfo
    flags: int
    raw_dtype: Optional[torch.dtype]
    stream: bytes
    raw: bytes


def _parse(data) -> _Header:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"`data` must be the bytes of a codes file, got {type(data).__name__}.")
    data = bytes(data)
    if data[:4] != MAGIC:
        what = "empty" if not data else f"starts with {data[:4]!r}"
        raise ValueError(f"not an sd_sparse codes file: it {what}, not {MAGIC!r}.")
    reader = _Reader(data)
    where = "header"
    try:
        reader.take(4)
        version = reader.u8()
        if version != VERSION:
            raise ValueError(f"codes file version {version} is not supported (this sd_sparse reads version {VERSION}).")
        flags = reader.u8()
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
        stream_bytes = 4 * reader.varint()
        header_bytes = reader.pos
        where = "payload"
        stream = reader.take(stream_bytes)
        raw_dtype = _RAW_DTYPES.get(raw_code) if flags & FLAG_RAW else None
        if flags & FLAG_RAW and raw_dtype is None:
            raise ValueError(f"corrupted codes file: unknown coefficient dtype code {raw_code}.")
        if (
            min(b, c, h, w, ph, pw, K, S) < 1
            or h % ph
            or w % pw
            or (num_frames is not None and (num_frames < 1 or b % num_frames))
        ):
            raise ValueError(f"corrupted codes file: impossible layout {(b, c, h, w)} / {(ph, pw)}, K={K}, S={S}.")
        N = b * (h // ph) * (w // pw)
        raw_size = N * S * raw_dtype.itemsize if raw_dtype is not None else 0
        raw = reader.take(raw_size)
        reader.take(_CHECKSUM_BYTES)
    except _Truncated:
        raise ValueError(f"truncated codes file: its {len(data)} bytes end inside the {where}.") from None
    if reader.pos != len(data):
        raise ValueError(f"corrupted codes file: {len(data) - reader.pos} unexpected bytes after the checksum.")
    (checksum,) = struct.unpack("<I", data[-_CHECKSUM_BYTES:])
    if zlib.crc32(data[:-_CHECKSUM_BYTES]) != checksum:
        raise ValueError("corrupted codes file: the checksum does not match its contents.")
    levels_model = "none"
    if flags & FLAG_LEVELS:
        levels_model = "levels, fixed" if flags & FLAG_FIXED else "levels, adaptive"
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
        index_model=("sets" if flags & FLAG_SETS else "slots") + (", uniform" if flags & FLAG_UNIFORM else ", prior"),
        value_model=levels_model,
    )
    return _Header(info=info, flags=flags, raw_dtype=raw_dtype, stream=stream, raw=raw)


def codes_file_info(data) -> CodesFileInfo:
    """The header of a codes file and its measured rate (`bits_per_position`, `bits_per_pixel`), checked
    (truncation, checksum) but not decoded: no bottleneck needed."""
    return _parse(data).info


def measured_bits_per_position(codes, bottleneck, vae=None) -> float:
    """Bits per latent position of `codes` as a codes file (`codes.to_bytes(bottleneck)`), header included."""
    return codes_file_info(codes_to_bytes(codes, bottleneck, vae=vae)).bits_per_position


def _check_identity(info: CodesFileInfo, bottleneck, vae) -> None:
    mine = (type(bottleneck).__name__, bottleneck.config_fingerprint[:16])
    theirs = (info.bottleneck_class, info.fingerprint)
    if theirs != mine:
        raise ValueError(
            f"the codes file was made by {theirs[0]} (config {theirs[1]}), but this is {mine[0]} (config {mine[1]}): "
            "decode it with the bottleneck that encoded it."
        )
    state = bottleneck.coding_state_digest()
    if state != info.state:
        raise ValueError(
            f"the codes file was made by a {mine[0]} with the same config but other weights or statistics "
            f"(state {info.state}; this one has state {state}): decode it with the bottleneck that encoded it."
        )
    if vae is not None and info.vae_fingerprint is not None:
        fingerprint = vae_fingerprint(vae)
        if fingerprint != info.vae_fingerprint:
            raise ValueError(
                f"the codes file was made with another VAE (fingerprint {info.vae_fingerprint}) than this "
                f"{getattr(vae, '_vae_class', None).__name__ if hasattr(vae, '_vae_class') else type(vae).__name__} "
                f"(fingerprint {fingerprint}): decode it with the VAE it was compressed with."
            )
    if info.latent_shape[1] != bottleneck.config.latent_channels:
        raise ValueError(
            f"the codes file holds {info.latent_shape[1]}-channel latents; the bottleneck codes "
            f"{bottleneck.config.latent_channels}."
        )


def codes_from_bytes(data, bottleneck, vae=None):
    """The `Codes` a codes file holds, bit for bit (on the CPU). `Codes.from_bytes` calls this.

    `ValueError` for a file that is not a codes file, truncated or corrupted (checksum), made by
    another bottleneck (class, config or state; naming both) or, when `vae` is given and the file
    records one, with another VAE."""
    from ..bottlenecks.codes import Codes, encode_signature

    parsed = _parse(data)
    info, flags = parsed.info, parsed.flags
    _check_identity(info, bottleneck, vae)
    b, c, h, w = info.latent_shape
    ph, pw = info.patch_size
    K, S = info.num_atoms, info.sparsity
    N = b * (h // ph) * (w // pw)
    value_bits = info.value_bits
    if bool(flags & FLAG_LEVELS) != (getattr(bottleneck, "value_bits", None) is not None):
        raise ValueError("corrupted codes file: its coefficients do not match the bottleneck's `value_bits`.")
    decoder = entropy.constriction().stream.queue.RangeDecoder(
        np.frombuffer(parsed.stream, dtype="<u4").astype(np.uint32)
    )
    prior = None
    if not flags & FLAG_UNIFORM:
        prior = bottleneck.usage_prior()
        if prior is None:
            raise ValueError("corrupted codes file: it was coded with a usage prior this bottleneck does not have.")
        prior = entropy.prior_weights(prior.detach().to("cpu", torch.float64).numpy(), K)
    if flags & FLAG_SETS:
        if flags & FLAG_FULL:
            counts = np.full(N, S, dtype=np.int64)
        else:
            counts = entropy.decode_symbols(decoder, N, S + 1)
            if (counts < 1).any():
                raise ValueError("corrupted codes file: a support with no slots.")
        indices = entropy.decode_sets(decoder, counts, S, np.ones(K) if prior is None else prior)
    else:
        counts = np.full(N, S, dtype=np.int64)
        indices = entropy.decode_symbols(decoder, N * S, K, prior).reshape(N, S)
    indices_t = torch.from_numpy(indices)
    coefficients = levels_t = None
    if flags & FLAG_LEVELS:
        low, _ = level_range(value_bits)
        alphabet = 1 << value_bits
        used = np.arange(S)[None, :] < counts[:, None]
        count = int(used.sum())
        if flags & FLAG_FIXED:
            symbols = entropy.decode_symbols(decoder, count, alphabet)
        else:
            symbols = entropy.decode_adaptive(decoder, count, alphabet)
        levels = np.zeros((N, S), dtype=np.int64)
        levels[used] = symbols + low
        levels_t = torch.from_numpy(levels).to(LEVEL_DTYPE)
        coefficients = bottleneck.dequantize_values(indices_t, levels_t).to("cpu")
    elif parsed.raw_dtype is not None:
        coefficients = torch.frombuffer(bytearray(parsed.raw), dtype=torch.uint8).view(parsed.raw_dtype).reshape(N, S)
    layout = torch.tensor([b, c, h, w, ph, pw, K], dtype=torch.long)
    frames = None if info.num_frames is None else torch.tensor([info.num_frames], dtype=torch.long)
    return Codes(
        frames=frames,
        indices=indices_t,
        coefficients=coefficients,
        layout=layout,
        signature=encode_signature(info.bottleneck_class, bottleneck.config_fingerprint),
        levels=levels_t,
    )
