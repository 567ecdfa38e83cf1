"""Teaches diffusers' loaders about sd_sparse, once, at `import sd_sparse`.

- `model_index.json` files name our components as `["sd_sparse", "DictionaryBottleneck"]`;
  diffusers only accepts component libraries it knows (`LOADABLE_CLASSES`), above all when the
  pipeline comes from the Hub, so sd_sparse is added there.
- `DiffusionPipeline.from_pretrained(saved_dir)` looks the pipeline class up by name in the
  `diffusers` namespace; our pipelines are added to it, so no `trust_remote_code` is needed.
"""

from __future__ import annotations

import diffusers
from diffusers.pipelines import pipeline_loading_utils

_LOAD_METHODS = ["save_pretrained", "from_pretrained"]


def register_with_diffusers(*pipeline_classes) -> None:
    """Idempotent: makes `sd_sparse` a component library and our pipelines resolvable by name."""
    # diffusers looks each key up as an attribute of the component's library: `sd_sparse.Bottleneck`
    pipeline_loading_utils.LOADABLE_CLASSES.setdefault("sd_sparse", {"Bottleneck": _LOAD_METHODS})
    pipeline_loading_utils.ALL_IMPORTABLE_CLASSES.setdefault("Bottleneck", _LOAD_METHODS)
    for cls in pipeline_classes:
        if getattr(diffusers, cls.__name__, None) is not cls:
            setattr(diffusers, cls.__name__, cls)
