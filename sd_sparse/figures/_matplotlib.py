"""matplotlib, imported on first use with the Agg backend (no display needed), and figure saving."""

from __future__ import annotations

import os
import sys


def pyplot():
    """`matplotlib.pyplot` on the Agg backend; `ImportError` naming the extra when matplotlib is missing."""
    from ..extras import require

    matplotlib = require("matplotlib", "figures")
    if "matplotlib.pyplot" not in sys.modules:  # leave a notebook's backend alone: figures are saved to files
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colormap(name: str):
    """A matplotlib colormap by name (`"magma"`, `"RdBu_r"`, ...)."""
    pyplot()
    import matplotlib

    return matplotlib.colormaps[name]


def save_figure(figure, path: str, dpi: int = 100) -> str:
    """Writes a matplotlib `figure` to the PNG `path` (folders created), closes it, returns `path`."""
    plt = pyplot()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    plt.close(figure)
    return path


def save_image(image, path: str) -> str:
    """Writes a PIL image to the PNG `path` (folders created), returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path, format="PNG")
    return path
