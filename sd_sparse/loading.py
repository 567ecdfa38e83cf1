"""`load_by_class_name`: a folder written by `save_pretrained`, loaded with the class its config's `_class_name`
names, the one loader of `sd-sparse evaluate | figures | push`. The classes are resolved in one place each:
VAEs by `autoencoders.loading.vae_class` (and loaded by `load_vae`), bottlenecks by
`bottleneck_classes.bottleneck_class`."""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence

from .autoencoders.loading import VAE_CLASSES_DESCRIPTION, load_vae, taesd_weights_in, vae_class
from .bottleneck_classes import bottleneck_class
from .errors import UserError

#: what each kind of saved model is called in errors
KIND_DESCRIPTIONS = {
    "sparse_autoencoder": "a SparseAutoencoder",
    "vae": VAE_CLASSES_DESCRIPTION,
    "bottleneck": "an sd_sparse bottleneck",
}
ALL_KINDS = tuple(KIND_DESCRIPTIONS)


def saved_class_name(folder: str, flag: str = "MODEL") -> Optional[str]:
    """The `_class_name` of `folder/config.json`, None without that file; `ValueError` naming `flag` for a file
    that is not a config."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise UserError(f"{flag} {folder}: {path} is not a model config ({err}).") from None


def kind_of(class_name) -> Optional[str]:
    """`"sparse_autoencoder"`, `"vae"` (plain or coded) or `"bottleneck"` for a saved `_class_name`; else None."""
    if class_name == "SparseAutoencoder":
        return "sparse_autoencoder"
    if vae_class(class_name) is not None:
        return "vae"
    try:
        bottleneck_class(class_name)
    except ValueError:
        return None
    return "bottleneck"


def describe_kinds(kinds: Sequence[str]) -> str:
    """`"a SparseAutoencoder or a diffusers ... VAE"`: the kinds as errors name them."""
    names = [KIND_DESCRIPTIONS[k] for k in kinds]
    if len(names) <= 2:
        return " or ".join(names)
    return ", ".join(names[:-1]) + ", or " + names[-1]


def load_by_class_name(
    path: str, flag: str = "MODEL", kinds: Sequence[str] = ALL_KINDS, hints: Optional[Dict[str, str]] = None
):
    """The model saved in the folder `path` (or, for VAEs, in a pipeline's `path/vae/`), built by the class its
    `config.json` names. Folders only: nothing is looked up on the Hub.

    Args:
        path (`str`): a folder written by `save_pretrained` (VAEs: also a folder of published TAESD-family
            weights, `<name>_encoder.pth` and `<name>_decoder.pth`, loaded as a `TAESDAutoencoder`).
        flag (`str`, defaults to `"MODEL"`): how errors name `path`.
        kinds (`Sequence[str]`, defaults to every kind): what may be loaded, of `"sparse_autoencoder"`, `"vae"`,
            `"bottleneck"`.
        hints (`Dict[str, str]`, *optional*): what an error says instead of "not ..." for a kind not in `kinds`.

    Raises `ValueError` naming `flag`: no folder, no config, a config of another class.
    """
    if not os.path.isdir(path):
        raise UserError(f"{flag} {path} is not a folder.")
    if "vae" in kinds and taesd_weights_in(path) is not None:  # published TAESD-family weights, no config
        return load_vae(path, flag=flag)
    folder, name = path, saved_class_name(path, flag)
    if name is None and "vae" in kinds and saved_class_name(os.path.join(path, "vae"), flag) is not None:
        folder = os.path.join(path, "vae")
        name = saved_class_name(folder, flag)
    if name is None:
        pipeline = " (or vae/config.json of a pipeline)" if "vae" in kinds else ""
        raise UserError(
            f"{flag} {path} holds no model: expected the config.json of {describe_kinds(kinds)}{pipeline}, "
            "a folder written by save_pretrained."
        )
    kind = kind_of(name)
    if kind not in kinds:
        hint = (hints or {}).get(kind) or f"not {describe_kinds(kinds)}."
        raise UserError(f"{flag} {path} holds a {name}, {hint}")
    if kind == "sparse_autoencoder":
        from .models import SparseAutoencoder

        return SparseAutoencoder.from_pretrained(folder)
    if kind == "vae":
        return load_vae(folder, flag=flag)
    return bottleneck_class(name).from_pretrained(folder)
