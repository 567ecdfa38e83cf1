"""Loading a saved config with the class that saved it, or a clear error."""

from __future__ import annotations

import logging

from .errors import UserError

logger = logging.getLogger(__name__)

#: config keys renamed in sd_sparse 0.2 (one name for one thing across the package): old -> new
RENAMED_CONFIG_KEYS = {
    "embedding_dim": "latent_channels",
    "num_embeddings": "num_atoms",
    "dead_atom_threshold": "restart_threshold",
}
#: old keys whose meaning changed: dropped (the default applies) with a warning
DROPPED_CONFIG_KEYS = {
    "dead_code_threshold": "VQ restarts now use `restart_threshold` (a share of 1/K, as the dictionary's)",
}


def upgrade_config(config: dict) -> dict:
    """A config saved by sd_sparse 0.1 with today's key names (a new dict; others are returned as they are)."""
    if not any(k in config for k in (*RENAMED_CONFIG_KEYS, *DROPPED_CONFIG_KEYS)):
        return config
    upgraded = dict(config)
    for old, new in RENAMED_CONFIG_KEYS.items():
        if old in upgraded:
            value = upgraded.pop(old)
            upgraded.setdefault(new, value)
    for old, why in DROPPED_CONFIG_KEYS.items():
        if old in upgraded:
            logger.warning("ignoring `%s=%r` of an sd_sparse 0.1 config: %s.", old, upgraded.pop(old), why)
    return upgraded


class SavedClassCheckMixin:
    """Put before `ModelMixin`/`ConfigMixin`: `from_config` (and so `from_pretrained`) of a config saved by
    another class raises a `ValueError` naming both, instead of building this class with random weights;
    configs saved by sd_sparse 0.1 load with today's key names (`upgrade_config`)."""

    @classmethod
    def _other_class_hint(cls, saved: str) -> str:
        """What to do instead, said after the error (subclasses may say more)."""
        return f"load it with {saved}.from_pretrained."

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
        saved = config.get("_class_name") if hasattr(config, "get") else None
        if saved is not None and saved != cls.__name__:
            raise UserError(f"this config was saved by {saved}, not {cls.__name__}: {cls._other_class_hint(saved)}")
        if isinstance(config, dict):
            config = upgrade_config(config)
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
