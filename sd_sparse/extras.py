"""Optional dependencies: the extra that installs each, and the one error that names it.

A base install (`pip install sd_sparse`) runs the demo, the trainers and the fit script. The rest needs an
extra: `require("constriction", "the codes container")` returns the module or raises `MissingExtraError`,
which the command line and the scripts print as one line naming the extra (exit status 2).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: top-level module → (extra, the PyPI package that provides it)
EXTRA_OF_MODULE = {
    "constriction": ("compression", "constriction"),
    "vector_quantize_pytorch": ("baselines", "vector-quantize-pytorch"),
    "matplotlib": ("plots", "matplotlib"),
    "umap": ("plots", "umap-learn"),
    "torchmetrics": ("metrics", "torchmetrics"),
    "triton": ("triton", "triton"),
    "nbclient": ("notebooks", "nbclient"),
    "nbformat": ("notebooks", "nbformat"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "bjontegaard": ("benchmarks", "bjontegaard"),
}


class MissingExtraError(ImportError):
    """An optional package is missing; the message names the extra that installs it."""

    def __init__(self, what: str, module: str):
        extra, package = EXTRA_OF_MODULE[module]
        super().__init__(
            f"{what} needs {package}, which is not installed: pip install 'sd_sparse[{extra}]'", name=module
        )
        self.extra = extra


def install_hint(err: BaseException) -> str | None:
    """The one-line message for a missing optional package (`MissingExtraError`, or a `ModuleNotFoundError` of a
    module an extra provides), else None."""
    if isinstance(err, MissingExtraError):
        return str(err)
    if isinstance(err, ModuleNotFoundError) and err.name and err.name.split(".")[0] in EXTRA_OF_MODULE:
        module = err.name.split(".")[0]
        extra, package = EXTRA_OF_MODULE[module]
        return f"{package} is not installed: pip install 'sd_sparse[{extra}]'"
    return None


def is_installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
        return False


def require(module: str, what: str) -> ModuleType:
    """The module `module` (a key of `EXTRA_OF_MODULE`), or `MissingExtraError` saying `what` needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name is not None and err.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of its own dependencies is broken: keep the real error
        raise MissingExtraError(what, module.split(".")[0]) from err
