"""The codes container: `Codes` ⇄ the bytes of a codes file, entropy-coded against an `EntropyModel`, bit-exact.

A byte layer. The file's layout (header, flags, checksum) is in `file_format.py`; the entropy coders in
`entropy.py`; what the container reads from the model that made the codes (usage prior, value levels,
identity) is the `EntropyModel` interface (`entropy_model.py`), which every bottleneck implements; the VAE
it records is a `VAEIdentity` (`vae_identity.py`). It imports nothing above the codec: `codes_to_bytes`
reads the fields of any `Codes`-like object, and `read_codes` returns the fields `Codes.from_bytes`
(`codes.py`) builds `Codes` from.

The stream holds, in order: the number of used slots of each support (only without flag FULL), the
indices (flag SETS: each support as a set, `entropy.encode_sets`; otherwise every slot as a symbol),
then the quantized levels (adaptive histogram, or fixed width with flag FIXED). Indices use the
model's usage prior unless flag UNIFORM; the writer keeps whichever choice is shorter, so the
payload never exceeds the fixed-length count (`bits_per_position`) by more than the coder's flush.

Models with fitted tables (the optional `EntropyModel` members) add choices, recorded as extension flags
(`file_format.EXT_*`, a version-2 file): indices slot by slot against `index_tables()` (EXT_INDEX_TABLES,
kept when shorter), levels atom by atom against `level_tables()` (EXT_LEVEL_TABLES, kept when shorter than
adaptive and fixed), and `Codes.residual` dimension by dimension against `residual_tables()` after
everything else (EXT_RESIDUAL); supports of varied sizes may have their sizes coded with the adaptive
histogram instead of uniformly (EXT_ADAPTIVE_COUNTS, kept when shorter). Without them the bytes are exactly
those of version 1.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch

from ..errors import UserError
from . import entropy
from .entropy_model import EntropyModel, check_codes_prior, check_entropy_model, model_tables
from .file_format import (
    EXT_ADAPTIVE_COUNTS,
    EXT_INDEX_TABLES,
    EXT_LEVEL_TABLES,
    EXT_PRIOR,
    EXT_RESIDUAL,
    FLAG_FIXED,
    FLAG_FRAMES,
    FLAG_FULL,
    FLAG_LEVELS,
    FLAG_RAW,
    FLAG_SETS,
    FLAG_UNIFORM,
    FLAG_VAE,
    MAGIC,
    RAW_CODES,
    VERSION,
    CodesFileInfo,
    codes_file_info,
    pack_codes_file,
    parse_codes_file,
)
from .quantization import LEVEL_DTYPE, level_range
from .vae_identity import as_vae_identity, vae_downsampling, vae_fingerprint

__all__ = [
    "EXT_ADAPTIVE_COUNTS",
    "EXT_INDEX_TABLES",
    "EXT_LEVEL_TABLES",
    "EXT_PRIOR",
    "EXT_RESIDUAL",
    "FLAG_FIXED",
    "FLAG_FRAMES",
    "FLAG_FULL",
    "FLAG_LEVELS",
    "FLAG_RAW",
    "FLAG_SETS",
    "FLAG_UNIFORM",
    "FLAG_VAE",
    "MAGIC",
    "VERSION",
    "CodesFileInfo",
    "codes_file_info",
    "codes_to_bytes",
    "measured_bits_per_position",
    "read_codes",
    "vae_downsampling",  # deprecated: sd_sparse.autoencoders.identity.downsampling_factor
    "vae_fingerprint",  # deprecated: sd_sparse.autoencoders.identity.vae_fingerprint
]


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
def codes_to_bytes(codes, bottleneck: EntropyModel, vae=None, prior=None) -> bytes:
    """`Codes` → the bytes of a codes file (`file_format.py`); `Codes.to_bytes` calls this.

    Args:
        codes (`Codes`): made by `bottleneck` (`encode`, `forward`, a coded VAE's `compress`).
        bottleneck (`EntropyModel`): the bottleneck that made them; its usage prior and value levels are the
            entropy model, its identity goes in the header.
        vae (`VAEIdentity` or a diffusers VAE, *optional*): the VAE the latents came from; its fingerprint and
            downsampling factor are recorded so decoding with another VAE is an error and the file's bits
            per pixel are known. A VAE object is identified through `vae_identity.as_vae_identity`.
        prior (`CodesPrior`, *optional*): a learned prior over the codes (`sd_sparse.priors.CodePrior`) trained
            on `bottleneck`'s codes: it codes the indices and levels (extension flag PRIOR, its state digest
            in the header) instead of the usage prior and tables; decoding then needs the same prior.
    """
    check_entropy_model(bottleneck)
    bottleneck.check_codes(codes)
    if prior is not None:
        check_codes_prior(prior)
        prior.check_bottleneck(bottleneck)
        prior.check_codes(codes)
    vae = as_vae_identity(vae)
    K, S = codes.num_atoms, codes.sparsity
    N = codes.indices.shape[0]
    indices = codes.indices.detach().to("cpu", torch.int64).numpy()
    if N and (indices.min() < 0 or indices.max() >= K):
        raise UserError(f"`codes.indices` must lie in [0, {K}), got values in [{indices.min()}, {indices.max()}].")
    value_bits = bottleneck.value_bits
    flags = 0
    levels = None
    raw = None
    if value_bits is not None:
        if codes.levels is None:
            raise UserError(
                f"{bottleneck.coding_class_name} quantizes coefficients (value_bits={value_bits}) but `codes` "
                "have no `levels`: make them with this bottleneck's `encode` or `forward`."
            )
        low, high = level_range(value_bits)
        level_tensor = codes.levels.detach().to("cpu")
        if N and (int(level_tensor.min()) < low or int(level_tensor.max()) > high):
            raise UserError(f"`codes.levels` must lie in [{low}, {high}] for value_bits={value_bits}.")
        expected = bottleneck.dequantize_values(codes.indices.to("cpu"), level_tensor)
        if not torch.equal(expected.to(codes.coefficients.dtype), codes.coefficients.detach().to("cpu")):
            raise UserError(
                "`codes.coefficients` are not the dequantized `codes.levels` of this bottleneck: the file would "
                "not decode to the same latents."
            )
        levels = level_tensor.to(torch.int64).numpy()
        flags |= FLAG_LEVELS
    elif codes.coefficients is not None:
        raw = codes.coefficients.detach().to("cpu").contiguous()
        if raw.dtype not in RAW_CODES:
            raise UserError(f"`codes.coefficients` must be a float tensor, got {raw.dtype}.")
        flags |= FLAG_RAW

    if prior is not None:
        return _prior_codes_to_bytes(codes, bottleneck, prior, vae, flags, value_bits, levels, raw)
    counts = _support_counts(indices) if N else np.zeros(0, dtype=np.int64)
    sets = N > 0 and entropy.set_bits_fit(K, S) and _is_canonical(indices, levels, counts)
    extension = 0
    if sets:
        flags |= FLAG_SETS
        if (counts == S).all():
            flags |= FLAG_FULL
        elif _stream_bits(lambda e: entropy.encode_adaptive(e, counts, S + 1)) < _stream_bits(
            lambda e: entropy.encode_symbols(e, counts, S + 1)
        ):
            extension |= EXT_ADAPTIVE_COUNTS  # supports of varied sizes (rate pursuit, tol): sizes adaptively
    prior = _usage_prior(bottleneck)

    def write_indices(encoder, weights):
        if extension & EXT_INDEX_TABLES:
            entropy.encode_columns(encoder, indices, table_weights)
        elif sets:
            if extension & EXT_ADAPTIVE_COUNTS:
                entropy.encode_adaptive(encoder, counts, S + 1)
            elif not flags & FLAG_FULL:
                entropy.encode_symbols(encoder, counts, S + 1)
            entropy.encode_sets(encoder, indices, counts, np.ones(K) if weights is None else weights)
        else:
            entropy.encode_symbols(encoder, indices.reshape(-1), K, weights)

    index_weights = table_weights = None
    if prior is not None and N:
        weights = entropy.prior_weights(prior, K)
        if _stream_bits(lambda e: write_indices(e, weights)) < _stream_bits(lambda e: write_indices(e, None)):
            index_weights = weights
    if index_weights is None:
        flags |= FLAG_UNIFORM
    index_tables = model_tables(bottleneck, "index_tables")
    if index_tables is not None and N:
        table_weights = entropy.table_weights(index_tables, S, K, "index_tables")
        current = _stream_bits(lambda e: write_indices(e, index_weights))
        if _stream_bits(lambda e: entropy.encode_columns(e, indices, table_weights)) < current:
            extension = (extension | EXT_INDEX_TABLES) & ~EXT_ADAPTIVE_COUNTS  # every slot against its table
            sets = False
            flags &= ~(FLAG_SETS | FLAG_FULL | FLAG_UNIFORM)

    level_symbols = level_groups = level_weights = None
    if levels is not None:
        low, _ = level_range(value_bits)
        used = np.arange(S)[None, :] < counts[:, None] if sets else np.ones_like(levels, dtype=bool)
        level_symbols = (levels[used] - low).astype(np.int64)
        level_groups = indices[used]
        alphabet = 1 << value_bits
        fixed = _stream_bits(lambda e: entropy.encode_symbols(e, level_symbols, alphabet))
        adaptive = math.inf
        if level_symbols.size:
            adaptive = _stream_bits(lambda e: entropy.encode_adaptive(e, level_symbols, alphabet))
        if adaptive >= fixed:
            flags |= FLAG_FIXED
        level_weights = _level_weights(bottleneck, K, alphabet)
        if level_weights is not None and level_symbols.size:
            fitted = _stream_bits(lambda e: entropy.encode_grouped(e, level_symbols, level_groups, level_weights))
            if fitted < min(fixed, adaptive):
                extension |= EXT_LEVEL_TABLES
                flags &= ~FLAG_FIXED

    encoder = entropy.constriction().stream.queue.RangeEncoder()
    if N:
        write_indices(encoder, index_weights)
    if level_symbols is not None and level_symbols.size:
        if extension & EXT_LEVEL_TABLES:
            entropy.encode_grouped(encoder, level_symbols, level_groups, level_weights)
        elif flags & FLAG_FIXED:
            entropy.encode_symbols(encoder, level_symbols, 1 << value_bits)
        else:
            entropy.encode_adaptive(encoder, level_symbols, 1 << value_bits)
    residual, residual_weights = _residual_levels(codes, bottleneck, N)
    if residual is not None:
        extension |= EXT_RESIDUAL
        entropy.encode_columns(encoder, residual, residual_weights)
    return _pack(codes, bottleneck, flags, value_bits, raw, vae, encoder, extension)


def _residual_levels(codes, bottleneck: EntropyModel, N: int):
    """`codes.residual` as symbols `[N, D]` of the model's residual tables, with those tables; None without one."""
    residual = getattr(codes, "residual", None)
    if residual is None:
        return None, None
    weights, half = _residual_weights(bottleneck)
    residual = residual.detach().to("cpu", torch.int64).numpy()
    if residual.shape != (N, weights.shape[0]) or (N and int(np.abs(residual).max()) > half):
        raise UserError(
            f"`codes.residual` must be [{N}, {weights.shape[0]}] levels in [-{half}, {half}], got shape "
            f"{residual.shape}."
        )
    return residual + half, weights


def _grid(latent_shape, patch_size):
    b, _, h, w = latent_shape
    return b, h // patch_size[0], w // patch_size[1]


def _pack(codes, bottleneck, flags, value_bits, raw, vae, encoder, extension, prior=None) -> bytes:
    """The codes file of `codes`: the header of `bottleneck` (and `prior`), the coder's stream, raw values."""
    return pack_codes_file(
        flags=flags,
        class_name=codes.bottleneck_class,
        fingerprint=codes.fingerprint,
        state=bottleneck.coding_state_digest(),
        layout=(*codes.latent_shape, *codes.patch_size, codes.num_atoms, codes.sparsity),
        value_bits=value_bits,
        raw_dtype=None if raw is None else raw.dtype,
        vae=vae,
        num_frames=codes.num_frames,
        stream=encoder.get_compressed().astype("<u4").tobytes(),
        raw=b"" if raw is None else raw.reshape(-1).view(torch.uint8).numpy().tobytes(),
        extension_flags=extension,
        prior_digest=None if prior is None else prior.coding_state_digest(),
    )


def _prior_codes_to_bytes(codes, bottleneck, prior, vae, flags, value_bits, levels, raw) -> bytes:
    """The codes file of `codes` with the indices and levels coded by `prior` (extension flag PRIOR)."""
    N = codes.indices.shape[0]
    residual, residual_weights = _residual_levels(codes, bottleneck, N)
    encoder = entropy.constriction().stream.queue.RangeEncoder()
    if N:
        level_tensor = None if levels is None else torch.from_numpy(levels)
        prior.encode_events(
            encoder, codes.indices.detach().cpu(), level_tensor, _grid(codes.latent_shape, codes.patch_size)
        )
    extension = 0
    if residual is not None:
        extension |= EXT_RESIDUAL
        entropy.encode_columns(encoder, residual, residual_weights)
    return _pack(codes, bottleneck, flags | FLAG_UNIFORM, value_bits, raw, vae, encoder, extension, prior)


def measured_bits_per_position(codes, bottleneck: EntropyModel, vae=None, prior=None) -> float:
    """Bits per latent position of `codes` as a codes file (`codes.to_bytes(bottleneck)`), header included."""
    return codes_file_info(codes_to_bytes(codes, bottleneck, vae=vae, prior=prior)).bits_per_position


# -- reading -----------------------------------------------------------------------------------------
def _level_weights(model: EntropyModel, num_atoms: int, alphabet: int) -> Optional[np.ndarray]:
    """The model's fitted level tables as probabilities `[K or 1, A]`, or None when it has none."""
    tables = model_tables(model, "level_tables")
    if tables is None:
        return None
    rows = tables.shape[0] if tables.ndim == 2 and tables.shape[0] in (1, num_atoms) else num_atoms
    return entropy.table_weights(tables, rows, alphabet, "level_tables")


def _residual_weights(model: EntropyModel):
    """The model's residual tables as probabilities `[D, A_r]` and the largest residual level `(A_r − 1)/2`."""
    tables = model_tables(model, "residual_tables")
    if tables is None:
        raise UserError(
            f"the codes carry a residual but {model.coding_class_name} has no `residual_tables()`: code them "
            "with the bottleneck that made them."
        )
    weights = entropy.table_weights(tables, name="residual_tables")
    if weights.shape[1] % 2 == 0:
        raise UserError(f"the model's residual_tables must have an odd alphabet, got {weights.shape[1]}.")
    return weights, weights.shape[1] // 2


def _usage_prior(model: EntropyModel) -> Optional[np.ndarray]:
    prior = model.usage_prior()
    return None if prior is None else prior.detach().to("cpu", torch.float64).numpy()


def _check_identity(info: CodesFileInfo, model: EntropyModel, vae) -> None:
    mine = (model.coding_class_name, model.config_fingerprint[:16])
    theirs = (info.bottleneck_class, info.fingerprint)
    if theirs != mine:
        raise UserError(
            f"the codes file was made by {theirs[0]} (config {theirs[1]}), but this is {mine[0]} (config {mine[1]}): "
            "decode it with the bottleneck that encoded it."
        )
    state = model.coding_state_digest()
    if state != info.state:
        raise UserError(
            f"the codes file was made by a {mine[0]} with the same config but other weights or statistics "
            f"(state {info.state}; this one has state {state}): decode it with the bottleneck that encoded it."
        )
    vae = None if info.vae_fingerprint is None else as_vae_identity(vae)  # identified only when needed
    if vae is not None and vae.fingerprint != info.vae_fingerprint:
        raise UserError(
            f"the codes file was made with another VAE (fingerprint {info.vae_fingerprint}) than this "
            f"{vae.name} (fingerprint {vae.fingerprint}): decode it with the VAE it was compressed with."
        )


def _check_prior(info: CodesFileInfo, prior, bottleneck: EntropyModel) -> None:
    if info.prior_digest is None:
        return
    if prior is None:
        raise UserError(
            f"the codes file was coded with a learned prior (state {info.prior_digest}): pass that prior "
            "(`prior=`, or `--prior DIR`) to decode it."
        )
    check_codes_prior(prior)
    prior.check_bottleneck(bottleneck)
    digest = prior.coding_state_digest()
    if digest != info.prior_digest:
        raise UserError(
            f"the codes file was coded with another prior (state {info.prior_digest}) than this one (state "
            f"{digest}): decode it with the prior that encoded it."
        )


def _fields(parsed, indices, levels, coefficients, residual) -> Dict[str, Optional[torch.Tensor]]:
    b, c, h, w = parsed.info.latent_shape
    ph, pw = parsed.info.patch_size
    return {
        "indices": indices,
        "coefficients": coefficients,
        "layout": torch.tensor([b, c, h, w, ph, pw, parsed.info.num_atoms], dtype=torch.long),
        "levels": levels,
        "frames": None if parsed.info.num_frames is None else torch.tensor([parsed.info.num_frames], dtype=torch.long),
        "residual": residual,
    }


def _read_residual(parsed, bottleneck: EntropyModel, decoder, N: int) -> Optional[torch.Tensor]:
    if not parsed.extension_flags & EXT_RESIDUAL:
        return None
    weights, half = _residual_weights(bottleneck)
    return torch.from_numpy(entropy.decode_columns(decoder, N, weights) - half).to(LEVEL_DTYPE)


def _raw_coefficients(parsed, N: int, S: int) -> Optional[torch.Tensor]:
    if parsed.raw_dtype is None:
        return None
    return torch.frombuffer(bytearray(parsed.raw), dtype=torch.uint8).view(parsed.raw_dtype).reshape(N, S)


def _read_prior_codes(parsed, bottleneck: EntropyModel, prior, decoder) -> Dict[str, Optional[torch.Tensor]]:
    """The fields of a codes file whose indices and levels were coded with `prior` (extension flag PRIOR)."""
    info = parsed.info
    grid = _grid(info.latent_shape, info.patch_size)
    N, S = grid[0] * grid[1] * grid[2], info.sparsity
    indices, levels = prior.decode_events(decoder, grid)
    if levels is not None:
        coefficients = bottleneck.dequantize_values(indices, levels).to("cpu")
    else:
        coefficients = _raw_coefficients(parsed, N, S)
    return _fields(parsed, indices, levels, coefficients, _read_residual(parsed, bottleneck, decoder, N))


def read_codes(data, bottleneck: EntropyModel, vae=None, prior=None) -> Dict[str, Optional[torch.Tensor]]:
    """The fields of the `Codes` a codes file holds, bit for bit (on the CPU): `indices`, `coefficients`,
    `levels`, `layout`, `frames` and `residual` (`Codes.from_bytes` adds the `signature` and checks the result).

    `ValueError` for a file that is not a codes file, truncated or corrupted (checksum), made by
    another bottleneck (class, config or state; naming both) or, when `vae` (a `VAEIdentity` or a VAE)
    is given and the file records one, with another VAE; for a file coded with a learned prior, unless
    `prior` is that prior (its state digest is checked)."""
    check_entropy_model(bottleneck)
    parsed = parse_codes_file(data)
    info, flags = parsed.info, parsed.flags
    _check_identity(info, bottleneck, vae)
    _check_prior(info, prior, bottleneck)
    b, c, h, w = info.latent_shape
    ph, pw = info.patch_size
    K, S = info.num_atoms, info.sparsity
    N = b * (h // ph) * (w // pw)
    value_bits = info.value_bits
    if bool(flags & FLAG_LEVELS) != (bottleneck.value_bits is not None):
        raise UserError("corrupted codes file: its coefficients do not match the bottleneck's `value_bits`.")
    decoder = entropy.constriction().stream.queue.RangeDecoder(
        np.frombuffer(parsed.stream, dtype="<u4").astype(np.uint32)
    )
    extension = parsed.extension_flags
    if extension & EXT_PRIOR:
        return _read_prior_codes(parsed, bottleneck, prior, decoder)
    prior = None
    if not flags & FLAG_UNIFORM and not extension & EXT_INDEX_TABLES:
        prior = _usage_prior(bottleneck)
        if prior is None:
            raise UserError("corrupted codes file: it was coded with a usage prior this bottleneck does not have.")
        prior = entropy.prior_weights(prior, K)
    if extension & EXT_INDEX_TABLES:
        tables = model_tables(bottleneck, "index_tables")
        if tables is None:
            raise UserError("corrupted codes file: it was coded with index tables this bottleneck does not have.")
        counts = np.full(N, S, dtype=np.int64)
        indices = entropy.decode_columns(decoder, N, entropy.table_weights(tables, S, K, "index_tables"))
    elif flags & FLAG_SETS:
        if flags & FLAG_FULL:
            counts = np.full(N, S, dtype=np.int64)
        else:
            if extension & EXT_ADAPTIVE_COUNTS:
                counts = entropy.decode_adaptive(decoder, N, S + 1)
            else:
                counts = entropy.decode_symbols(decoder, N, S + 1)
            if (counts < 1).any():
                raise UserError("corrupted codes file: a support with no slots.")
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
        if extension & EXT_LEVEL_TABLES:
            weights = _level_weights(bottleneck, K, alphabet)
            if weights is None:
                raise UserError("corrupted codes file: it was coded with level tables this bottleneck does not have.")
            symbols = entropy.decode_grouped(decoder, indices[used], weights)
        elif flags & FLAG_FIXED:
            symbols = entropy.decode_symbols(decoder, count, alphabet)
        else:
            symbols = entropy.decode_adaptive(decoder, count, alphabet)
        levels = np.zeros((N, S), dtype=np.int64)
        levels[used] = symbols + low
        levels_t = torch.from_numpy(levels).to(LEVEL_DTYPE)
        coefficients = bottleneck.dequantize_values(indices_t, levels_t).to("cpu")
    else:
        coefficients = _raw_coefficients(parsed, N, S)
    return _fields(parsed, indices_t, levels_t, coefficients, _read_residual(parsed, bottleneck, decoder, N))
