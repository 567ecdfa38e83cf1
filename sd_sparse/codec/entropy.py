"""Entropy models for codes, coded with `constriction`'s range coder (no hand-written coder).

- **Sets.** The S atoms of a sparse code form a set. It is coded as its sorted indices under the
  *conditional Poisson* model `P(set) ∝ Π_{k∈set} w_k` over all sets of its size: with weights
  `w_k` from the bottleneck's usage statistics it costs `−log2 P(set)` bits, with equal weights exactly
  `log2 C(K, S)`. Sorted index `j` is drawn from `P(next = m | previous p, r left) = w_m·e_{r−1}(w_{m+1:}) /
  e_r(w_{p+1:})` (`e_r` the elementary symmetric polynomials of the weights after m), computed with
  +, × only (identical on every machine that runs IEEE float64).
- **Symbols.** VQ / per-slot indices: i.i.d. categorical with the usage weights, or uniform.
- **Levels.** Quantized coefficients: an adaptive histogram (counts updated after each block of
  symbols, so nothing is stored), or fixed width (exactly `value_bits` bits each).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import UserError

#: share of the uniform distribution mixed into usage weights: a code the prior thinks unused costs
#: at most log2(16 K) bits instead of an unbounded amount
PRIOR_MIX = 1.0 / 16
#: largest probability table passed to constriction at once (rows × K)
_TABLE_ENTRIES = 1 << 22
#: the set model needs e_S(w) < 2^1000 (float64); larger supports fall back to per-slot coding
MAX_SET_BITS = 900.0


def constriction():
    """The `constriction` module, or an `ImportError` saying how to install it."""
    from ..extras import require

    return require("constriction", "the codes container")


def prior_weights(prior: Optional[np.ndarray], num_atoms: int) -> np.ndarray:
    """Weights `[K]` (float64, mean 1) from a usage prior (any positive scale) mixed with the uniform one;
    all ones without a prior."""
    if prior is None:
        return np.ones(num_atoms, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (num_atoms,) or not np.isfinite(prior).all():
        raise UserError(f"the usage prior must be {num_atoms} finite numbers, got shape {prior.shape}.")
    prior = np.maximum(prior, 0.0)
    total = math.fsum(prior.tolist())  # exact, so encoder and decoder agree bit for bit
    if total <= 0:
        return np.ones(num_atoms, dtype=np.float64)
    return (1 - PRIOR_MIX) * (prior * (num_atoms / total)) + PRIOR_MIX


def set_table(weights: np.ndarray, size: int) -> np.ndarray:
    """`E [K + 1, size + 1]` with `E[a, r] = e_r(w_a, …, w_{K−1})` (elementary symmetric polynomials)."""
    K = weights.shape[0]
    table = np.zeros((K + 1, size + 1), dtype=np.float64)
    table[K, 0] = 1.0
    for a in range(K - 1, -1, -1):
        table[a] = table[a + 1]
        table[a, 1:] += weights[a] * table[a + 1, :-1]
    return table


def set_bits_fit(num_atoms: int, size: int) -> bool:
    """Whether sets of `size` atoms out of `num_atoms` can use the set model (`log2 C(K, S)` small enough)."""
    return 1 <= size <= num_atoms and math.log2(math.comb(num_atoms, size)) < MAX_SET_BITS


def _set_probabilities(weights, table, previous, remaining) -> np.ndarray:
    """Rows `[n, K]`: the distribution of the next sorted index after `previous` with `remaining` to go."""
    K = weights.shape[0]
    rows = weights[None, :] * table[1:, remaining - 1].T  # w_m · e_{r−1}(w_{m+1:})
    rows[np.arange(K)[None, :] <= previous[:, None]] = 0.0
    return rows


def _chunks(num_rows: int, num_atoms: int):
    step = max(1, _TABLE_ENTRIES // max(num_atoms, 1))
    for start in range(0, num_rows, step):
        yield slice(start, min(num_rows, start + step))


def _walk_sets(rows: np.ndarray, counts: np.ndarray, weights: np.ndarray, code_slot, write: bool) -> None:
    """The set model's order, shared by coder and decoder: slot j of every row with more than j entries,
    row chunk by row chunk, each against the distribution of the next sorted index. `code_slot(symbols,
    probabilities)` codes those symbols (or decodes them from `symbols` = the current contents) and returns
    them; with `write` they are stored in `rows`."""
    size = rows.shape[1]
    table = set_table(weights, size)
    for part in _chunks(rows.shape[0], weights.shape[0]):
        block, left = rows[part], counts[part]
        previous = np.full(block.shape[0], -1, dtype=np.int64)
        for j in range(size):
            take = left > j
            if not take.any():
                break
            probabilities = _set_probabilities(weights, table, previous[take], left[take] - j)
            symbols = code_slot(block[take, j], probabilities)
            if write:
                block[take, j] = symbols
            previous[take] = symbols


def encode_sets(encoder, rows: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> None:
    """Encodes the first `counts[n]` (strictly increasing) entries of each row of `rows` `[N, S]` as sets."""
    model = constriction().stream.model.Categorical(perfect=False)

    def encode(symbols, probabilities):
        encoder.encode(symbols.astype(np.int32), model, probabilities)
        return symbols

    _walk_sets(rows, counts, weights, encode, write=False)


def decode_sets(decoder, counts: np.ndarray, size: int, weights: np.ndarray) -> np.ndarray:
    """Inverse of `encode_sets`: rows `[N, size]` (int64), unused slots 0."""
    model = constriction().stream.model.Categorical(perfect=False)
    rows = np.zeros((counts.shape[0], size), dtype=np.int64)
    _walk_sets(
        rows, counts, weights, lambda _, probabilities: decoder.decode(model, probabilities).astype(np.int64), True
    )
    return rows


def _symbol_model(weights: Optional[np.ndarray], alphabet: int):
    models = constriction().stream.model
    return models.Uniform(alphabet) if weights is None else models.Categorical(weights, perfect=False)


def encode_symbols(encoder, symbols: np.ndarray, alphabet: int, weights: Optional[np.ndarray] = None) -> None:
    """I.i.d. symbols in `[0, alphabet)`: categorical with `weights` `[alphabet]`, or uniform."""
    if symbols.size:
        encoder.encode(symbols.astype(np.int32), _symbol_model(weights, alphabet))


def decode_symbols(decoder, count: int, alphabet: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    return decoder.decode(_symbol_model(weights, alphabet), count).astype(np.int64)


def _adaptive_blocks(count: int):
    start, size = 0, 64
    while start < count:
        yield slice(start, min(count, start + size))
        start += size
        size = min(size * 2, 4096)


def encode_adaptive(encoder, symbols: np.ndarray, alphabet: int) -> None:
    """Symbols in `[0, alphabet)` with a histogram that starts at ½ per symbol and counts every block
    (64, 128, … up to 4096 symbols) once it is coded; the decoder rebuilds the same histograms."""
    models = constriction().stream.model
    counts = np.full(alphabet, 0.5, dtype=np.float64)
    for part in _adaptive_blocks(symbols.shape[0]):
        block = symbols[part]
        encoder.encode(block.astype(np.int32), models.Categorical(counts, perfect=False))
        counts += np.bincount(block, minlength=alphabet)


def decode_adaptive(decoder, count: int, alphabet: int) -> np.ndarray:
    models = constriction().stream.model
    counts = np.full(alphabet, 0.5, dtype=np.float64)
    out = np.zeros(count, dtype=np.int64)
    for part in _adaptive_blocks(count):
        block = decoder.decode(models.Categorical(counts, perfect=False), part.stop - part.start).astype(np.int64)
        out[part] = block
        counts += np.bincount(block, minlength=alphabet)
    return out


# -- fitted tables: one fixed distribution per group of symbols ----------------------------------------
#: share of the uniform distribution mixed into every row of a model's fitted tables: no symbol has
#: probability 0, and one the table never saw costs at most log2(A / TABLE_MIX) bits
TABLE_MIX = 1.0 / 256


def table_weights(
    tables, rows: Optional[int] = None, alphabet: Optional[int] = None, name: str = "tables"
) -> np.ndarray:
    """Probabilities `[G, A]` (float64) from a model's tables `[G, A]` (any non-negative scale per row): each
    row normalised (`math.fsum`, exact, so encoder and decoder agree bit for bit) and mixed with the uniform
    share `TABLE_MIX`; a row with no mass is uniform. `rows` / `alphabet`: the shape the tables must have."""
    tables = np.asarray(tables, dtype=np.float64)
    if (
        tables.ndim != 2
        or (rows is not None and tables.shape[0] != rows)
        or (alphabet is not None and tables.shape[1] != alphabet)
        or not np.isfinite(tables).all()
    ):
        expected = f"[{rows if rows is not None else 'G'}, {alphabet if alphabet is not None else 'A'}]"
        raise UserError(f"the model's {name} must be finite float tables {expected}, got shape {tables.shape}.")
    tables = np.maximum(tables, 0.0)
    size = tables.shape[1]
    out = np.full(tables.shape, 1.0 / size, dtype=np.float64)
    for g in range(tables.shape[0]):
        total = math.fsum(tables[g].tolist())
        if total > 0:
            out[g] = (1 - TABLE_MIX) * (tables[g] / total) + TABLE_MIX / size
    return out


def table_bits(weights: np.ndarray) -> np.ndarray:
    """Entropy in bits `[G]` of each row of probabilities `[G, A]` (what a symbol drawn from it costs)."""
    return -(weights * np.log2(weights)).sum(1)


def encode_columns(encoder, symbols: np.ndarray, weights: np.ndarray) -> None:
    """Symbols `[N, G]`: column g against row g of `weights` `[G, A]` (one model per column, columns in order)."""
    models = constriction().stream.model
    for g in range(symbols.shape[1]):
        if symbols.shape[0]:
            encoder.encode(
                np.ascontiguousarray(symbols[:, g], dtype=np.int32), models.Categorical(weights[g], perfect=False)
            )


def decode_columns(decoder, count: int, weights: np.ndarray) -> np.ndarray:
    """Inverse of `encode_columns`: symbols `[count, G]` (int64)."""
    models = constriction().stream.model
    out = np.zeros((count, weights.shape[0]), dtype=np.int64)
    for g in range(weights.shape[0]):
        if count:
            out[:, g] = decoder.decode(models.Categorical(weights[g], perfect=False), count)
    return out


def _group_order(groups: np.ndarray, num_groups: int):
    """Positions of the symbols sorted by group (stable) and the bounds `[G + 1]` of each group's run."""
    order = np.argsort(groups, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=num_groups))])
    return order, bounds


def encode_grouped(encoder, symbols: np.ndarray, groups: np.ndarray, weights: np.ndarray) -> None:
    """Symbols `[M]`, symbol m against row `groups[m]` of `weights` `[G, A]` (a single row: all of them):
    group by group, each group's symbols in their given order, one model per group."""
    if weights.shape[0] == 1:
        groups = np.zeros_like(groups)
    order, bounds = _group_order(groups, weights.shape[0])
    models = constriction().stream.model
    for g in range(weights.shape[0]):
        if bounds[g + 1] > bounds[g]:
            part = symbols[order[bounds[g] : bounds[g + 1]]].astype(np.int32)
            encoder.encode(part, models.Categorical(weights[g], perfect=False))


def decode_grouped(decoder, groups: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Inverse of `encode_grouped` (the decoder knows each symbol's group): symbols `[M]` (int64)."""
    if weights.shape[0] == 1:
        groups = np.zeros_like(groups)
    order, bounds = _group_order(groups, weights.shape[0])
    models = constriction().stream.model
    out = np.zeros(groups.shape[0], dtype=np.int64)
    for g in range(weights.shape[0]):
        count = int(bounds[g + 1] - bounds[g])
        if count:
            out[order[bounds[g] : bounds[g + 1]]] = decoder.decode(models.Categorical(weights[g], perfect=False), count)
    return out
