"""The coded VAE classes: `coded_vae_class(DiffusersVAEClass)` → `<Class>WithBottleneck`, one mechanism for all.

For any diffusers VAE class (`families.py` says which take a bottleneck), the coded class is made once
and cached, and is found by name (`coded_vae_class_by_name`, `sd_sparse.<Class>WithBottleneck`, this
module's attributes: what diffusers' loaders and pickle look up). It is
`class <Class>WithBottleneck(CodedAutoencoderMixin, <Class>)` with:

- `__init__`: the VAE class's own parameters (same names, defaults, order) plus `bottleneck_class` and
  `bottleneck_config`, all in the config (`@register_to_config`);
- `decode`: the VAE class's own signature plus `apply_bottleneck: bool = True`: codes the latents first;
- `forward`: the VAE class's own signature (pipelines read it: SVD passes `num_frames` when `forward`
  takes it): the coded reconstruction with the bottleneck's loss (`CodedAutoencoderMixin.coded_forward`);
- `save_pretrained`/`from_pretrained`, `from_vae`, `without_bottleneck`, `code`, `compress`,
  `decompress` from `CodedAutoencoderMixin`.

The two classes named in the public API, `AutoencoderKLWithBottleneck` and
`AutoencoderTinyWithBottleneck`, are made here the same way.
"""

from __future__ import annotations

import inspect
import threading
from typing import Dict

from diffusers.configuration_utils import register_to_config

from ..errors import UserError
from .coded import _BOTTLENECK_CONFIG_ARGS, CodedAutoencoderMixin
from .families import check_supported, family_of, known_vae_class, latent_channels

SUFFIX = "WithBottleneck"
_CLASSES: Dict[type, type] = {}
_lock = threading.RLock()


def _init_for(vae_class: type):
    """`__init__(self, <vae_class's parameters>, bottleneck_class=..., bottleneck_config=None)`."""
    base_signature = inspect.signature(vae_class.__init__)
    params = list(base_signature.parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise UserError(
            f"{vae_class.__name__}.__init__ takes *args or **kwargs: its config cannot be extended with a bottleneck."
        )
    params += [
        inspect.Parameter(
            "bottleneck_class", inspect.Parameter.KEYWORD_ONLY, default="DictionaryBottleneck", annotation=str
        ),
        inspect.Parameter("bottleneck_config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict | None),
    ]
    signature = base_signature.replace(parameters=params, return_annotation=inspect.Signature.empty)

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        bottleneck_name, bottleneck_config = (values.pop(name) for name in _BOTTLENECK_CONFIG_ARGS)
        vae_class.__init__(self, **values)
        self._build_bottleneck(bottleneck_name, bottleneck_config, latent_channels(self))

    __init__.__signature__ = signature
    __init__.__doc__ = f"The parameters of `{_qualified(vae_class)}`, plus `bottleneck_class` and `bottleneck_config`."
    return register_to_config(__init__)


def _decode_for(vae_class: type):
    """`decode(self, <vae_class.decode's parameters>, apply_bottleneck=True)`: codes the latents, then decodes."""
    base_decode = vae_class.decode
    base_signature = inspect.signature(base_decode)
    params = list(base_signature.parameters.values())
    latents_name = params[1].name
    params.append(inspect.Parameter("apply_bottleneck", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=bool))
    signature = base_signature.replace(parameters=params)

    def decode(self, *args, apply_bottleneck: bool = True, **kwargs):
        hook = getattr(self, "_hf_hook", None)  # offloading: weights onto the device before the bottleneck runs
        if hook is not None and hasattr(hook, "pre_forward"):
            hook.pre_forward(self)
        if apply_bottleneck:
            if args:
                args = (self.code_vae_latents(args[0])[0], *args[1:])
            elif latents_name in kwargs:
                kwargs[latents_name] = self.code_vae_latents(kwargs[latents_name])[0]
        return base_decode(self, *args, **kwargs)

    decode.__signature__ = signature
    decode.__doc__ = (
        f"`{vae_class.__name__}.decode`, coding the latents `{latents_name}` (the VAE's own space, as pipelines "
        "pass them) with the bottleneck first unless `apply_bottleneck=False`; same return value."
    )
    return decode


def _forward_for(vae_class: type):
    """`forward(self, <vae_class.forward's parameters>)`: the coded reconstruction (`coded_forward`); the
    parameters `decode` also takes (SVD's `num_frames`) go to `decode`."""
    signature = inspect.signature(vae_class.forward)
    names = list(signature.parameters)
    decode_names = set(inspect.signature(vae_class.decode).parameters) - {"self", "return_dict", "generator"}
    own = ("sample_posterior", "return_dict", "generator")

    def forward(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        sample = values[names[1]]
        decode_kwargs = {k: v for k, v in values.items() if k in decode_names and k != names[1]}
        return self.coded_forward(
            sample,
            sample_posterior=values.get("sample_posterior", False),
            return_dict=values.get("return_dict", True),
            generator=values.get("generator"),
            decode_kwargs=decode_kwargs,
        )

    forward.__signature__ = signature
    forward.__doc__ = (
        f"`{vae_class.__name__}.forward`'s signature: images → the coded reconstruction `DecoderOutput(sample, "
        f"commit_loss)` (`(sample, commit_loss)` with `return_dict=False`); {', '.join(own)} as the VAE's own."
    )
    return forward


def _qualified(vae_class: type) -> str:
    """`diffusers.AutoencoderKL`, `sd_sparse.TAESDAutoencoder`: the class as its package exports it."""
    return f"{vae_class.__module__.split('.')[0]}.{vae_class.__name__}"


def _class_doc(vae_class: type) -> str:
    family = family_of(vae_class)
    name = vae_class.__name__
    pipelines = ", ".join(family.pipelines) or f"the diffusers pipelines using {name}"
    shape = "[B, C, T, h, w] (coded frame by frame)" if family.kind == "video" else "[B, C, h, w]"
    return f"""A `{_qualified(vae_class)}` with a latent bottleneck in front of its decoder: a drop-in `vae=` of
    {pipelines}.

    `decode(z)` codes the latents `z` {shape} before decoding, in the space the bottleneck was fitted
    in: the latents the denoiser sees (`sd_sparse.autoencoders.scaling`), converted back before the
    decoder. The bottleneck computes in float32 whatever the VAE's dtype. Build one from a VAE with
    `{name}{SUFFIX}.from_vae(vae, bottleneck)` (or `sd_sparse.with_bottleneck`); `save_pretrained` /
    `from_pretrained` round-trip the VAE's weights and config plus the bottleneck's class, config and
    weights (safetensors).

    Parameters:
        (those of `{_qualified(vae_class)}`, same defaults)
        bottleneck_class (`str`, defaults to `"DictionaryBottleneck"`): the sd_sparse bottleneck class.
        bottleneck_config (`dict`, *optional*): its config; `latent_channels` defaults to the VAE's and
            must equal it.
    """


def _merged(vae_class: type, attribute: str) -> list:
    return [*(getattr(vae_class, attribute, None) or []), "bottleneck"]


def coded_vae_class(vae_class: type) -> type:
    """The coded class of the diffusers VAE class `vae_class` (a coded class maps to itself), made once.

    `ValueError` naming the class and the reason for classes that cannot take a bottleneck (audio VAEs,
    non-VAE models)."""
    if isinstance(vae_class, type) and issubclass(vae_class, CodedAutoencoderMixin):
        return vae_class
    with _lock:
        cls = _CLASSES.get(vae_class)
        if cls is not None:
            return cls
        check_supported(vae_class)
        name = f"{vae_class.__name__}{SUFFIX}"
        namespace = {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": _class_doc(vae_class),
            "_vae_class": vae_class,
            "_keep_in_fp32_modules": _merged(vae_class, "_keep_in_fp32_modules"),
            "_skip_layerwise_casting_patterns": _merged(vae_class, "_skip_layerwise_casting_patterns"),
            "__init__": _init_for(vae_class),
            "decode": _decode_for(vae_class),
            "forward": _forward_for(vae_class),
        }
        cls = type(name, (CodedAutoencoderMixin, vae_class), namespace)
        _CLASSES[vae_class] = cls
        if known_vae_class(vae_class.__name__) is vae_class:
            globals()[name] = cls  # importable by name: pickle, diffusers' loaders
        return cls


def coded_vae_class_by_name(name: str) -> type:
    """`"<Class>WithBottleneck"` → the coded class of `diffusers.<Class>` (or of the sd_sparse VAE class `<Class>`,
    `families.SD_SPARSE_VAE_CLASSES`); `AttributeError` for other names."""
    if not name.endswith(SUFFIX) or len(name) == len(SUFFIX):
        raise AttributeError(f"{name!r} does not name a coded VAE class (<DiffusersVAEClass>{SUFFIX}).")
    vae_class = known_vae_class(name[: -len(SUFFIX)])
    if vae_class is None:
        raise AttributeError(f"{name!r}: diffusers (and sd_sparse) has no VAE class {name[: -len(SUFFIX)]!r}.")
    try:
        return coded_vae_class(vae_class)
    except ValueError as err:
        raise AttributeError(str(err)) from None


def __getattr__(name: str):
    if name.endswith(SUFFIX):
        return coded_vae_class_by_name(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _public(vae_class_name: str) -> type:
    import diffusers

    return coded_vae_class(getattr(diffusers, vae_class_name))


AutoencoderKLWithBottleneck = _public("AutoencoderKL")
AutoencoderTinyWithBottleneck = _public("AutoencoderTiny")
