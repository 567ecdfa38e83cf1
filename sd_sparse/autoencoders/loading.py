"""Loading a saved VAE (plain or coded) or a bottleneck by the class its config names: the one loader of
`sd-sparse compress | decompress | evaluate | figures`."""

from __future__ import annotations

import os

from ..errors import UserError

#: how errors name the VAE classes the loaders take
VAE_CLASSES_DESCRIPTION = (
    "a diffusers image or video VAE (AutoencoderKL, AutoencoderKLFlux2, AutoencoderKLWan, ...) or an sd_sparse "
    "TAESDAutoencoder, plain or coded"
)


def vae_class(name) -> type | None:
    """The class a saved config's `_class_name` names when it is a diffusers image or video VAE class that
    takes a bottleneck (`families.py`), an sd_sparse one (`families.SD_SPARSE_VAE_CLASSES`), or the coded class
    of one (`<Class>WithBottleneck`); else None."""
    import diffusers

    from .families import SD_SPARSE_VAE_CLASSES, family_of, known_vae_class

    if not isinstance(name, str):
        return None
    if name.endswith("WithBottleneck"):
        from .coded_classes import coded_vae_class_by_name

        try:
            return coded_vae_class_by_name(name)
        except AttributeError:
            return None
    if name in SD_SPARSE_VAE_CLASSES:
        return known_vae_class(name)
    cls = (
        getattr(diffusers, name, None)
        if ("utoencoder" in name or name in ("VQModel", "ConsistencyDecoderVAE"))
        else None
    )
    if isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin) and family_of(cls).supported:
        return cls
    return None


def load_bottleneck(path: str, flag: str = "--bottleneck"):
    """A bottleneck saved with `save_pretrained` (a folder or Hub id), its class read from its config, in
    eval mode. `ValueError` naming `flag` when there is no bottleneck config."""
    from ..bottleneck_classes import bottleneck_class
    from ..bottlenecks import Bottleneck

    try:
        config = Bottleneck.load_config(path)
    except OSError as err:
        raise UserError(f"{flag} {path}: no bottleneck config found ({str(err).splitlines()[0]}).") from None
    return bottleneck_class(config.get("_class_name")).from_pretrained(path).eval()


def taesd_weights_in(folder) -> tuple | None:
    """`(encoder, decoder)` paths when `folder` is a folder without a config (its own or a pipeline's `vae/`)
    holding one `<name>_encoder.pth` / `<name>_decoder.pth` pair of TAESD-family weights; else None."""
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        return None
    folder = os.fspath(folder)
    if any(os.path.isfile(os.path.join(folder, *sub, "config.json")) for sub in ((), ("vae",))):
        return None
    from .taesd_weights import find_taesd_weights

    return find_taesd_weights(folder)


def load_vae(vae_path: str | None, flag: str = "--vae"):
    """A diffusers image or video VAE, plain or coded, by its config's class: a VAE folder, a pipeline's `vae/`, or a Hub id;
    a folder of published TAESD-family weights (`taef2_encoder.pth`, `taef2_decoder.pth`: a `TAESDAutoencoder`);
    None or "reference": the trained reference VAE shipped with sd_sparse (`reference_vae_path()`), never
    random weights. `ValueError` naming `flag` for anything else."""
    import diffusers

    from .reference import REFERENCE_VAE_NAME, reference_vae_path

    if vae_path is None or (vae_path == REFERENCE_VAE_NAME and not os.path.exists(vae_path)):
        return diffusers.AutoencoderKL.from_pretrained(reference_vae_path())
    taesd = taesd_weights_in(vae_path)
    if taesd is not None:
        from .taesd import TAESDAutoencoder

        return TAESDAutoencoder.from_taesd_weights(*taesd)
    for subfolder in ("vae", None):
        try:
            config = diffusers.AutoencoderKL.load_config(vae_path, subfolder=subfolder)
            break
        except OSError:
            continue
    else:
        raise UserError(
            f"{flag} {vae_path}: no VAE config found (config.json, or vae/config.json of a pipeline) and no "
            "TAESD-family weights (<name>_encoder.pth and <name>_decoder.pth)."
        )
    name = config.get("_class_name")
    cls = vae_class(name)
    if cls is None:
        raise UserError(f"{flag} {vae_path} holds a {name}, not {VAE_CLASSES_DESCRIPTION}.")
    return cls.from_pretrained(vae_path, subfolder=subfolder)
