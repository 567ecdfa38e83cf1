"""Everything sd_sparse changes in diffusers at run time, in one place, and why (tested against 0.42.1).

`teach_diffusers`, called once from `sd_sparse/__init__.py`, imports nothing: each change is installed
the moment diffusers itself executes the module it concerns (an import hook, `after_import`), so
`import sd_sparse` stays cheap and importing our pipelines earlier (they subclass diffusers') is never
needed.

1. The component library. `model_index.json` names our components `["sd_sparse", "<Class>"]`;
   diffusers loads only component libraries listed in `pipeline_loading_utils.LOADABLE_CLASSES`
   (above all for Hub repos), so `sd_sparse` is added there with its loadable base classes. diffusers
   then resolves the class as an attribute of the `sd_sparse` module (our lazy `__getattr__`).
2. Pipeline names. `DiffusionPipeline.from_pretrained(saved_dir)` looks `model_index.json`'s
   `_class_name` up in the `diffusers` namespace (and diffusers' own tester mixins, e.g.
   `test_encode_prompt_works_in_isolation`, in `diffusers.pipelines`); our pipeline names are added to both as lazy
   attributes (the `diffusers` module object gets a subclass of its module class that resolves them
   on first lookup), so no `trust_remote_code` is needed and nothing is imported early.
3. `from_pipe` keeps coded VAEs. `DiffusionPipeline.from_pipe(pipe)` carries a model component over
   only when its type is *exactly* one of the new pipeline's `__init__` annotations. A coded VAE is a
   subclass of its diffusers VAE class (`AutoencoderKL`, `AutoencoderKLFlux2`, ...), so `StableDiffusionImg2ImgPipeline.from_pipe`
   would leave it behind and then fail because `vae` is missing. There is no public hook, so
   `DiffusionPipeline.from_pipe` is wrapped once: when the source pipeline holds a coded VAE that the
   caller did not pass and the new pipeline's annotation accepts its class (`isinstance`), it is
   passed on explicitly, exactly as `from_pipe(pipe, vae=pipe.vae)` would do by hand. Every other
   call runs diffusers' own `from_pipe` unchanged.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import sys
import threading
from types import ModuleType
from typing import Callable, Dict, List

LOADING_UTILS = "diffusers.pipelines.pipeline_loading_utils"
_lock = threading.Lock()


class _RunAfterExec(importlib.abc.Loader):
    """Wraps a module's loader so that `callback(module)` runs right after the module has executed."""

    def __init__(self, loader, callback):
        self._loader, self._callback = loader, callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._callback(module)

    def __getattr__(self, name):  # get_source, get_resource_reader, ... of the wrapped loader
        return getattr(self._loader, name)


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Finds `name` with the other finders, then wraps its loader with `_RunAfterExec` (once)."""

    def __init__(self, name: str, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        with _lock:
            if self in sys.meta_path:
                sys.meta_path.remove(self)  # one shot, and the search below must not find us again
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RunAfterExec(spec.loader, self.callback)
        return spec


def after_import(module_name: str, callback: Callable[[ModuleType], None]) -> None:
    """`callback(module)` once `module_name` has executed: now if it already has, else right after it does."""
    module = sys.modules.get(module_name)
    if module is not None:
        callback(module)
        return
    with _lock:
        sys.meta_path.insert(0, _AfterImportFinder(module_name, callback))


def _lazy_namespace_class(base: type, names: Dict[str, str]) -> type:
    """A subclass of the `diffusers` module's class that resolves `names` ({class name: module}) on first lookup."""

    class _WithSdSparsePipelines(base):
        def __getattr__(self, name):
            module = names.get(name)
            if module is not None:
                value = getattr(importlib.import_module(module), name)
                setattr(self, name, value)
                return value
            parent = getattr(base, "__getattr__", None)
            if parent is None:
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
            return parent(self, name)

        def __dir__(self):
            return sorted(set(super().__dir__()) | set(names))

    _WithSdSparsePipelines.__name__ = base.__name__
    _WithSdSparsePipelines.__qualname__ = base.__qualname__
    _WithSdSparsePipelines._sd_sparse_names = names
    return _WithSdSparsePipelines


def teach_diffusers(library: str, library_classes: Dict[str, List[str]], pipelines: Dict[str, str]) -> None:
    """Registers `library` (its loadable base classes, `library_classes`) and the pipeline classes
    `pipelines` ({class name: module}) with diffusers' loaders once diffusers loads them; imports nothing."""

    def register(loading_utils: ModuleType) -> None:
        entry = loading_utils.LOADABLE_CLASSES.setdefault(library, {})
        for name, methods in library_classes.items():
            entry.setdefault(name, methods)
            loading_utils.ALL_IMPORTABLE_CLASSES.setdefault(name, methods)
        for namespace in ("diffusers", "diffusers.pipelines"):  # loaders look in the first, diffusers' tests in both
            module = sys.modules.get(namespace)
            if module is None:
                continue
            pending = {name: source for name, source in pipelines.items() if name not in vars(module)}
            known = getattr(type(module), "_sd_sparse_names", None)
            if known is not None:
                known.update(pending)
            elif pending:
                module.__class__ = _lazy_namespace_class(type(module), dict(pending))

    after_import(LOADING_UTILS, register)
    after_import(PIPELINE_UTILS, _patch_from_pipe)


PIPELINE_UTILS = "diffusers.pipelines.pipeline_utils"
_CODED_MODULE = "sd_sparse.autoencoders.coded"


def _coded_vae_classes() -> tuple:
    """The base class of every coded VAE, once imported (a pipeline can only hold coded VAEs after that)."""
    module = sys.modules.get(_CODED_MODULE)
    return () if module is None else (module.CodedAutoencoderMixin,)


def carry_coded_vaes(from_pipe):
    """Wraps the function of the `DiffusionPipeline.from_pipe` classmethod (see the module docstring)."""

    @functools.wraps(from_pipe)
    def wrapper(cls, pipeline, **kwargs):
        coded = _coded_vae_classes()
        if coded and kwargs.get("custom_pipeline") is None:
            try:
                components, hints = pipeline.components, cls._get_signature_types()
            except Exception:  # a pipeline diffusers cannot introspect: leave it to diffusers
                components, hints = {}, {}
            for name, component in components.items():
                if name in kwargs or not isinstance(component, coded):
                    continue
                accepted = [hint for hint in hints.get(name, ()) if isinstance(hint, type)]
                if any(isinstance(component, hint) for hint in accepted):
                    kwargs[name] = component
        return from_pipe(cls, pipeline, **kwargs)

    wrapper.sd_sparse_carries_coded_vaes = True
    return wrapper


def _patch_from_pipe(pipeline_utils) -> None:
    pipeline_class = pipeline_utils.DiffusionPipeline
    current = pipeline_class.__dict__["from_pipe"].__func__
    if not getattr(current, "sd_sparse_carries_coded_vaes", False):
        pipeline_class.from_pipe = classmethod(carry_coded_vaes(current))
