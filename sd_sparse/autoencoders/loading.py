"""Loading a saved VAE (plain or coded) or a bottleneck by the class its config names: the one loader of
`sd-sparse compress | decompress | evaluate | figures`."""

from __future__ import annotations

import os

#: the diffusers VAE classes (and their coded forms) a bottleneck works with
VAE_CLASS_NAMES = ("AutoencoderKL", "AutoencoderTiny", "AutoencoderKLWithBottleneck", "AutoencoderTinyWithBottleneck")


def load_bottleneck(path: str, flag: str = "--bottleneck"):
    """A bottleneck saved with `save_pretrained` (a folder or Hub id), its class read from its config, in
    eval mode. `ValueError` naming `flag` when there is no bottleneck config."""
    from ..bottlenecks import Bottleneck
    from .coded import bottleneck_class

    try:
        config = Bottleneck.load_config(path)
    except OSError as err:
        raise ValueError(f"{flag} {path}: no bottleneck config found ({str(err).splitlines()[0]}).") from None
    return bottleneck_class(config.get("_class_name")).from_pretrained(path).eval()


def load_vae(vae_path: str | None, flag: str = "--vae"):
    """A diffusers VAE, plain or coded, by its config's class: a VAE folder, a pipeline's `vae/`, or a Hub id;
    None or "reference": the trained reference VAE shipped with sd_sparse (`reference_vae_path()`), never
    random weights. `ValueError` naming `flag` for anything else."""
    import diffusers

    import sd_sparse

    from .reference import REFERENCE_VAE_NAME, reference_vae_path

    if vae_path is None or (vae_path == REFERENCE_VAE_NAME and not os.path.exists(vae_path)):
        return diffusers.AutoencoderKL.from_pretrained(reference_vae_path())
    for subfolder in ("vae", None):
        try:
            config = diffusers.AutoencoderKL.load_config(vae_path, subfolder=subfolder)
            break
        except OSError:
            continue
    else:
        raise ValueError(f"{flag} {vae_path}: no VAE config found (config.json, or vae/config.json of a pipeline).")
    name = config.get("_class_name")
    if name not in VAE_CLASS_NAMES:
        raise ValueError(f"{flag} {vae_path} holds a {name}, not one of {', '.join(VAE_CLASS_NAMES)}.")
    cls = getattr(sd_sparse, name, None) or getattr(diffusers, name)
    return cls.from_pretrained(vae_path, subfolder=subfolder)
