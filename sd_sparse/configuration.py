"""Loading a saved config with the class that saved it, or a clear error."""

from __future__ import annotations


class SavedClassCheckMixin:
    """Put before `ModelMixin`/`ConfigMixin`: `from_config` (and so `from_pretrained`) of a config saved by
    another class raises a `ValueError` naming both, instead of building this class with random weights."""

    @classmethod
    def _other_class_hint(cls, saved: str) -> str:
        """What to do instead, said after the error (subclasses may say more)."""
        return f"load it with {saved}.from_pretrained."

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
        saved = config.get("_class_name") if hasattr(config, "get") else None
        if saved is not None and saved != cls.__name__:
            raise ValueError(f"this config was saved by {saved}, not {cls.__name__}: {cls._other_class_hint(saved)}")
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
