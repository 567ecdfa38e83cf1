"""`SparseAutoencoder`'s flat bottleneck options (`bottleneck_type="dictionary" | "vq" | "lista"` and the
bottleneck's keys beside the model's), as configs saved before `bottleneck_class`/`bottleneck_config` and the
trainer's flags name them, translated to a bottleneck class name and its config."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from ..errors import UserError

#: `bottleneck_type` -> the bottleneck class it builds
BOTTLENECK_TYPES = {"dictionary": "DictionaryBottleneck", "vq": "VectorQuantizer", "lista": "LISTABottleneck"}

#: the flat options and their defaults (the `SparseAutoencoder` signature before `bottleneck_config`)
FLAT_BOTTLENECK_OPTIONS: Dict[str, Any] = {
    "bottleneck_type": "dictionary",
    "num_atoms": 512,
    "sparsity": 5,
    "patch_size": 1,
    "beta": 0.25,
    "dictionary_update": "gradient",
    "use_ema": True,
    "decay": 0.99,
    "restart_threshold": 0.5,
    "num_lista_blocks": 5,
    "sparsity_weight": 0.1,
    "value_bits": None,
    "value_refit": False,
}


def flat_bottleneck_config(latent_attention: bool = False, **options) -> Tuple[str, Dict[str, Any]]:
    """`(bottleneck_class, bottleneck_config)` of the flat options (`FLAT_BOTTLENECK_OPTIONS`, defaults for the
    missing ones); `ValueError` for combinations the flat form never allowed."""
    unknown = sorted(set(options) - set(FLAT_BOTTLENECK_OPTIONS))
    if unknown:
        raise TypeError(
            f"unexpected bottleneck options {unknown}: the flat options are {list(FLAT_BOTTLENECK_OPTIONS)}."
        )
    o = {**FLAT_BOTTLENECK_OPTIONS, **options}
    kind = o["bottleneck_type"]
    if kind not in BOTTLENECK_TYPES:
        raise UserError(f"`bottleneck_type` must be one of {tuple(BOTTLENECK_TYPES)}, got {kind!r}.")
    if latent_attention and kind != "lista":
        raise UserError("`latent_attention` weights LISTA's per-latent loss: use it with bottleneck_type='lista'.")
    if o["value_bits"] is not None and kind == "vq":
        raise UserError(
            "`value_bits` quantizes sparse coefficients: use it with bottleneck_type 'dictionary' or 'lista'."
        )
    if o["value_refit"] and kind != "dictionary":
        raise UserError("`value_refit` is a dictionary option: use it with bottleneck_type='dictionary'.")
    shared = {"num_atoms": o["num_atoms"], "patch_size": o["patch_size"]}
    if kind == "dictionary":
        config = dict(
            shared,
            sparsity=o["sparsity"] or 5,
            beta=o["beta"],
            dictionary_update=o["dictionary_update"],
            restart_threshold=o["restart_threshold"],
            value_bits=o["value_bits"],
            value_refit=o["value_refit"],
        )
    elif kind == "vq":
        config = dict(
            shared, beta=o["beta"], use_ema=o["use_ema"], decay=o["decay"], restart_threshold=o["restart_threshold"]
        )
    else:
        config = dict(
            shared,
            num_blocks=o["num_lista_blocks"],
            sparsity_weight=o["sparsity_weight"],
            sparsity=o["sparsity"],
            value_bits=o["value_bits"],
        )
    return BOTTLENECK_TYPES[kind], config


def upgrade_flat_config(config: dict) -> dict:
    """A saved `SparseAutoencoder` config with flat bottleneck options, as `bottleneck_class` + `bottleneck_config`
    (a new dict; a config without flat options is returned as it is)."""
    if not any(key in config for key in FLAT_BOTTLENECK_OPTIONS):
        return config
    upgraded = {k: v for k, v in config.items() if k not in FLAT_BOTTLENECK_OPTIONS}
    flat = {k: v for k, v in config.items() if k in FLAT_BOTTLENECK_OPTIONS}
    name, bottleneck_config = flat_bottleneck_config(latent_attention=config.get("latent_attention", False), **flat)
    upgraded.setdefault("bottleneck_class", name)
    upgraded.setdefault("bottleneck_config", bottleneck_config)
    return upgraded
