"""`bottleneck_class`: an sd_sparse bottleneck class by name, as configs name them (`bottleneck_class` of the coded
VAEs and of `SparseAutoencoder`, `_class_name` of a saved bottleneck), never by import path."""

from __future__ import annotations

from . import bottlenecks
from .bottlenecks import Bottleneck
from .errors import UserError


def bottleneck_class(name: str) -> type:
    """The sd_sparse bottleneck class called `name` (configs name classes, never import paths)."""
    cls = getattr(bottlenecks, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, Bottleneck) and cls is not Bottleneck):
        known = sorted(
            n
            for n in dir(bottlenecks)
            if isinstance(getattr(bottlenecks, n), type)
            and issubclass(getattr(bottlenecks, n), Bottleneck)
            and n != "Bottleneck"
        )
        raise UserError(f"`bottleneck_class` must name an sd_sparse bottleneck ({', '.join(known)}), got {name!r}.")
    return cls
