"""Lazy exports, the one mechanism of every sd_sparse package `__init__` (the top level, `autoencoders`, `codec`,
`figures`): importing the package only records names, and a name loads its submodule on first access (PEP 562
`__getattr__`), as diffusers' and transformers' own `_LazyModule`s do. How diffusers' loaders learn about
sd_sparse without importing anything heavy is in `diffusers_patches.py`.

    _import_structure = {"submodule": ["Name", ...], ...}
    __getattr__ = lazy_getattr(__name__, _import_structure)
    __dir__ = lazy_dir(__name__, _import_structure)
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, List, Optional


def lazy_getattr(
    module_name: str, import_structure: Dict[str, List[str]], fallback: Optional[Callable[[str], object]] = None
) -> Callable[[str], object]:
    """A module `__getattr__` that imports `module_name.<submodule>` on the first access to one of its names.

    Args:
        module_name (`str`): the package (`__name__`).
        import_structure (`Dict[str, List[str]]`): submodule (relative, dotted) -> the names it exports.
        fallback (`Callable[[str], object]`, *optional*): called with any other name (names made on demand,
            such as `<DiffusersVAEClass>WithBottleneck`); it raises `AttributeError` for names it does not make.
    """
    owner = {name: submodule for submodule, names in import_structure.items() for name in names}

    def __getattr__(name: str):
        submodule = owner.get(name)
        if submodule is None:
            if fallback is not None:
                return fallback(name)
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{module_name}.{submodule}"), name)
        setattr(sys.modules[module_name], name, value)  # later lookups skip __getattr__
        return value

    return __getattr__


def lazy_dir(module_name: str, import_structure: Dict[str, List[str]]) -> Callable[[], List[str]]:
    """A module `__dir__`: what the module holds now and every lazy name."""
    names = {name for exported in import_structure.values() for name in exported}

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[module_name])) | names)

    return __dir__


def suffix_fallback(module_name: str, suffix: str, submodule: str) -> Callable[[str], object]:
    """A `lazy_getattr` fallback for names made on demand: a name ending in `suffix` is looked up in
    `module_name.<submodule>` (whose own module `__getattr__` may make it), as
    `<DiffusersVAEClass>WithBottleneck` in `sd_sparse.autoencoders.coded_classes`."""

    def fallback(name: str):
        if name.endswith(suffix):
            return getattr(importlib.import_module(f"{module_name}.{submodule}"), name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return fallback
