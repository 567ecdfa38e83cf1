"""`EntropyModel`: what the codes container reads from the model that made the codes.

The container (`container.py`) is a byte layer: it turns `Codes` into a codes file and back, and everything
it needs to know about the model that made them goes through this small interface. Every `Bottleneck`
implements it (`sd_sparse.bottlenecks.base`); a stronger entropy model (a learned prior, a hyperprior
wrapping a bottleneck) plugs into the container by implementing the same members.

The members fall in three groups:

- **identity** (`coding_class_name`, `config_fingerprint`, `coding_state_digest`): written in the file's
  header and checked on reading, so a file only decodes with the model that wrote it;
- **index model** (`usage_prior`): how often each of the K atoms / codes is used, the distribution indices
  are entropy-coded against (the container keeps the uniform one when it is shorter or absent);
- **value model** (`value_bits`, `dequantize_values`): quantized coefficients are stored as integer levels
  in `[-(2^(b-1) - 1), 2^(b-1) - 1]` (`quantization.level_range`); the model turns them back into the
  coefficients bit for bit. Models without `value_bits` store no levels (VQ) or raw float coefficients.

`check_codes` lets the model refuse codes it did not make, before anything is written or returned.

Optional members (a model may lack them, or return None: the container then codes as before, and files
it wrote before keep decoding): fitted distributions, float64 `[G, A]` (any non-negative scale per row;
the container normalises each row and mixes in a small uniform share, `entropy.table_weights`), each row
coding one group of symbols with one fixed model:

- `index_tables()` `[S, K]`: the distribution of each slot's index (slot = column of `Codes.indices`; a
  scalar quantizer: one per coded dimension), offered next to the usage prior and the uniform model;
- `level_tables()` `[K or 1, 2^value_bits]`: the distribution of the levels of each atom (or one shared
  row), offered next to the adaptive and fixed-width models (the writer keeps the shortest);
- `residual_tables()` `[D, A_r]` (A_r odd): the distribution of each dimension of `Codes.residual` (levels
  in `[-(A_r - 1)/2, (A_r - 1)/2]`), required when the codes carry a residual.

The tables must be computed deterministically from the model's saved state (elementwise float64 ops), so
that a file decodes on any machine.

Nothing here is stored in the file: the model is the other half of the format, and decoding needs the same
model (same class, config and state) that encoded.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch

from ..errors import UserError

__all__ = ["EntropyModel", "check_entropy_model", "model_tables"]

#: the optional members of an `EntropyModel` (see the module docstring)
OPTIONAL_TABLES = ("index_tables", "level_tables", "residual_tables")


@runtime_checkable
class EntropyModel(Protocol):
    """The interface the codes container codes `Codes` against (see the module docstring)."""

    @property
    def coding_class_name(self) -> str:
        """The name codes and codes files record for the model (a bottleneck: its class name; at most 255
        UTF-8 bytes)."""
        ...

    @property
    def config_fingerprint(self) -> str:
        """16 hex digits identifying the model's class and configuration (not its weights)."""
        ...

    @property
    def value_bits(self) -> Optional[int]:
        """Bits per quantized coefficient (levels in `level_range(value_bits)`), or None when the codes carry
        no quantized coefficients."""
        ...

    def coding_state_digest(self) -> str:
        """16 hex digits identifying the model's state (weights, scales, usage statistics): everything the
        decoded codes depend on."""
        ...

    def usage_prior(self) -> Optional[torch.Tensor]:
        """How often each atom / code is used, `[K]` (any positive scale, float64 on the CPU), or None when
        the model keeps no usage statistics (indices are then coded uniformly)."""
        ...

    def dequantize_values(self, indices: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Coefficients `[N, S]` that integer `levels` `[N, S]` of atoms `indices` `[N, S]` stand for, bit for
        bit the `Codes.coefficients` the model made (only called when `value_bits` is not None)."""
        ...

    def check_codes(self, codes) -> None:
        """`ValueError` unless `codes` (`Codes`) were made by this model (class, config, layout)."""
        ...


def check_entropy_model(model, name: str = "bottleneck") -> None:
    """`ValueError` naming `name` unless `model` implements `EntropyModel`."""
    if not isinstance(model, EntropyModel):
        missing = [m for m in _MEMBERS if not hasattr(model, m)]
        raise UserError(
            f"`{name}` must be the bottleneck (an `sd_sparse.codec.EntropyModel`) that made the codes, got "
            f"{type(model).__name__} (it lacks {', '.join(missing)})."
        )


_MEMBERS = (
    "coding_class_name",
    "config_fingerprint",
    "value_bits",
    "coding_state_digest",
    "usage_prior",
    "dequantize_values",
    "check_codes",
)


def model_tables(model, name: str):
    """The optional tables `name` (one of `OPTIONAL_TABLES`) of `model` as a float64 numpy array, or None when
    the model lacks the member or returns None."""
    if name not in OPTIONAL_TABLES:
        raise UserError(f"`name` must be one of {OPTIONAL_TABLES}, got {name!r}.")
    member = getattr(model, name, None)
    tables = None if member is None else member()
    if tables is None:
        return None
    if isinstance(tables, torch.Tensor):
        tables = tables.detach().to("cpu", torch.float64).numpy()
    import numpy as np

    return np.asarray(tables, dtype=np.float64)


#: what the codes container calls on a learned prior over codes (`sd_sparse.priors.CodePrior`)
PRIOR_MEMBERS = ("coding_state_digest", "check_bottleneck", "check_codes", "encode_events", "decode_events")


def check_codes_prior(prior, name: str = "prior") -> None:
    """`ValueError` naming `name` unless `prior` has the members the container codes with (`PRIOR_MEMBERS`):
    `coding_state_digest()` (recorded in the header), `check_bottleneck(bottleneck)`, `check_codes(codes)`,
    `encode_events(encoder, indices, levels, grid)` and `decode_events(decoder, grid) -> (indices, levels)`,
    which range-code the indices `[N, S]` and levels of a `(B, H_c, W_c)` grid of coded vectors with
    probabilities that are the same on every machine."""
    missing = [m for m in PRIOR_MEMBERS if not hasattr(prior, m)]
    if missing:
        raise UserError(
            f"`{name}` must be a learned prior over codes (`sd_sparse.priors.CodePrior`), got "
            f"{type(prior).__name__} (it lacks {', '.join(missing)})."
        )
