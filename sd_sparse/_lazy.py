"""Lazy exports for `sd_sparse/__init__.py`: `import sd_sparse` only records names, and a name loads its
submodule on first access (PEP 562 `__getattr__`), as diffusers' and transformers' own `_LazyModule`s do.
How diffusers' loaders learn about sd_sparse without importing anything heavy is in `diffusers_patches.py`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, List


def lazy_getattr(module_name: str, import_structure: Dict[str, List[str]]) -> Callable[[str], object]:
    """A module `__getattr__` that imports `module_name.<submodule>` on the first access to one of its names."""
    owner = {name: submodule for submodule, names in import_structure.items() for name in names}

    def __getattr__(name: str):
        submodule = owner.get(name)
        if submodule is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{module_name}.{submodule}"), name)
        setattr(sys.modules[module_name], name, value)  # later lookups skip __getattr__
        return value

    return __getattr__
