"""Deprecated: `Codes` moved to `sd_sparse.codec.codes` (import it from there, or `from sd_sparse import Codes`).

This module re-exports the same objects, so old imports (and pickles naming `sd_sparse.bottlenecks.codes.Codes`)
keep working, with a `DeprecationWarning`.
"""

import warnings

from ..codec.codes import Codes, encode_signature, smallest_index_dtype

__all__ = ["Codes", "encode_signature", "smallest_index_dtype"]

warnings.warn(
    "sd_sparse.bottlenecks.codes is deprecated: import Codes from sd_sparse.codec.codes (or sd_sparse).",
    DeprecationWarning,
    stacklevel=2,
)
