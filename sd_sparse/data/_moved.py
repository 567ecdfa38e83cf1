"""Deprecated module paths of names that moved within `sd_sparse.data`: each still works, with a warning."""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Dict, Tuple


def moved_attribute(module: str, name: str, moves: Dict[str, Tuple[ModuleType, str]]) -> object:
    """`module.name` for a name that moved to `moves[name]` (its new module and name), with a
    `FutureWarning` naming the new path; `AttributeError` for any other name (a module `__getattr__`)."""
    if name not in moves:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    home, new_name = moves[name]
    warnings.warn(f"{module}.{name} is deprecated: use {home.__name__}.{new_name}", FutureWarning, stacklevel=3)
    return getattr(home, new_name)
