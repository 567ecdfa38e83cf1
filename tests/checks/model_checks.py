"""Conformance checks for diffusers models (`ModelMixin, ConfigMixin` classes).

Each check is a function ``check_<name>(spec, tmp_path)`` over a `ModelSpec`: the model class, a
factory for its `__init__` arguments and a factory for deterministic forward inputs. They mirror, in
our own words, diffusers' ``ModelTesterMixin`` (tests/models/testing_utils/common.py, formerly
tests/models/test_modeling_common.py) and ``TrainingTesterMixin`` (testing_utils/training.py),
restricted to what runs on a CPU. `MODEL_CHECKS` maps a short name to each check.

Outputs are compared as trees: tuples, lists, dicts and `BaseOutput`s are walked positionally (a
`return_dict=False` tuple lines up with the dataclass's non-None fields), and other dataclasses (our
`SparseCodes`) are compared field by field, so a codes object is held to the same tolerance as a tensor.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import torch
from torch import nn

SAFETENSORS_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"


@dataclass
class ModelSpec:
    """What the checks need to know about a model under test.

    Args:
        model_class: the `ModelMixin` class.
        make_init_kwargs: returns the `__init__` arguments (small sizes).
        make_inputs: returns the forward arguments (without `return_dict`); every call must return
            identical inputs (seed them).
        output_shape: shape of the first output, when known.
        seed: `torch.manual_seed` before each construction, so two builds have the same weights.
    """

    model_class: type
    make_init_kwargs: Callable[[], Dict[str, Any]]
    make_inputs: Callable[[], Dict[str, Any]]
    output_shape: Optional[Tuple[int, ...]] = None
    seed: int = 0

    def build(self) -> nn.Module:
        torch.manual_seed(self.seed)
        return self.model_class(**self.make_init_kwargs()).eval()

    def forward(self, model: nn.Module, return_dict: bool = False, dtype: Optional[torch.dtype] = None):
        inputs = self.make_inputs()
        if dtype is not None:
            inputs = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
        with torch.no_grad():
            return model(**inputs, return_dict=return_dict)


# ----------------------------------------------------------------------------------------------
# Output trees
# ----------------------------------------------------------------------------------------------


def _is_plain_dataclass(obj) -> bool:
    """A dataclass instance that is not a diffusers `BaseOutput` (those are walked as mappings)."""
    from diffusers.utils import BaseOutput

    return dataclasses.is_dataclass(obj) and not isinstance(obj, type) and not isinstance(obj, BaseOutput)


def output_leaves(output, path: str = "output", into_objects: bool = True) -> Iterator[Tuple[str, Any]]:
    """(path, leaf) pairs of an output tree in positional order; None entries are dropped, as
    `BaseOutput.to_tuple()` drops them. With `into_objects=False`, dataclass objects (codes) are
    leaves themselves."""
    if output is None:
        return
    if isinstance(output, dict):  # BaseOutput is an OrderedDict of its non-None fields
        for i, (key, value) in enumerate(output.items()):
            yield from output_leaves(value, f"{path}[{i}:{key}]", into_objects)
    elif isinstance(output, (list, tuple)):
        for i, value in enumerate(output):
            yield from output_leaves(value, f"{path}[{i}]", into_objects)
    elif into_objects and _is_plain_dataclass(output):
        for f in dataclasses.fields(output):
            yield from output_leaves(getattr(output, f.name), f"{path}.{f.name}", into_objects)
    else:
        yield path, output


def assert_outputs_close(actual, expected, atol: float, what: str, rtol: float = 0.0) -> None:
    """Leaf-by-leaf comparison of two output trees (NaNs compare equal to NaNs)."""
    a, b = list(output_leaves(actual)), list(output_leaves(expected))
    assert len(a) == len(b), f"{what}: {len(a)} output entries vs {len(b)}: {[p for p, _ in a]} / {[p for p, _ in b]}"
    for (path, x), (_, y) in zip(a, b):
        if torch.is_tensor(x) or torch.is_tensor(y):
            assert torch.is_tensor(x) and torch.is_tensor(y), (
                f"{what}: {path} is {type(x).__name__} vs {type(y).__name__}"
            )
            assert x.shape == y.shape, f"{what}: {path} shape {tuple(x.shape)} vs {tuple(y.shape)}"
            assert x.dtype == y.dtype, f"{what}: {path} dtype {x.dtype} vs {y.dtype}"
            x64, y64 = x.detach().cpu().double(), y.detach().cpu().double()
            both_nan = torch.isnan(x64) & torch.isnan(y64)
            x64, y64 = torch.where(both_nan, 0.0, x64), torch.where(both_nan, 0.0, y64)
            diff = (x64 - y64).abs()
            limit = atol + rtol * y64.abs()
            assert bool((diff <= limit).all()), f"{what}: {path} differs by up to {float(diff.max()):.3g}"
        else:
            assert type(x) is type(y) and x == y, f"{what}: {path} is {x!r} vs {y!r}"


def first_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else next(iter(output.values()))


def floating_tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {k: v for k, v in tensors.items() if v.is_floating_point()}


def kept_in_fp32(model: nn.Module, name: str) -> bool:
    """Whether tensor `name` belongs to one of the model's `_keep_in_fp32_modules` (diffusers keeps those
    in float32 whatever dtype the model is loaded or cast in; its dtype tests exempt them likewise)."""
    keep = getattr(type(model), "_keep_in_fp32_modules", None) or []
    return any(name == m or name.startswith(f"{m}.") or f".{m}." in f".{name}" for m in keep)


def wrong_dtypes(model: nn.Module, dtype: torch.dtype) -> Dict[str, torch.dtype]:
    """Floating tensors not in `dtype`; those of `_keep_in_fp32_modules` must be float32 (or wider)."""
    wrong = {}
    for key, value in floating_tensors(model).items():
        if kept_in_fp32(model, key):
            if value.dtype not in (torch.float32, torch.float64):
                wrong[key] = value.dtype
        elif value.dtype != dtype:
            wrong[key] = value.dtype
    return wrong


def assert_same_state(a: nn.Module, b: nn.Module, what: str, exact_dtype: bool = True) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), f"{what}: state dict keys differ: {sorted(set(sa) ^ set(sb))[:5]}"
    for key in sa:
        x, y = sa[key], sb[key]
        assert x.shape == y.shape, f"{what}: {key} shape {tuple(x.shape)} vs {tuple(y.shape)}"
        if exact_dtype:
            assert x.dtype == y.dtype, f"{what}: {key} dtype {x.dtype} vs {y.dtype}"
        assert torch.equal(x.cpu(), y.to(x.dtype).cpu()), f"{what}: {key} values differ"


def public_config(model) -> Dict[str, Any]:
    """The config without diffusers' private keys, as JSON stores it (tuples become lists)."""
    return json.loads(json.dumps({k: v for k, v in dict(model.config).items() if not k.startswith("_")}))


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------


def check_save_load(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_from_save_pretrained` (atol 5e-5), stricter: safetensors only,
    the same class, config and state dict (keys, dtypes, values), and the same outputs, all of them."""
    model = spec.build()
    expected = spec.forward(model)
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert SAFETENSORS_FILE in files and "config.json" in files, f"saved {files}"
    assert not [f for f in files if f.endswith(".bin")], f"pickle weights written: {files}"
    loaded = spec.model_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is spec.model_class
    assert public_config(loaded) == public_config(model), "config changed on save/load"
    assert_same_state(model, loaded, "from_pretrained")
    assert_outputs_close(spec.forward(loaded), expected, 5e-5, "output after save/load")


def check_save_load_variant(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_from_save_pretrained_variant`: a variant save writes only the
    variant file, loads back with `variant=` to the same outputs, and without it fails naming the
    missing file."""
    model = spec.build()
    model.save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "diffusion_pytorch_model.fp16.safetensors").exists(), sorted(p.name for p in tmp_path.iterdir())
    loaded = spec.model_class.from_pretrained(tmp_path, variant="fp16").eval()
    assert_outputs_close(spec.forward(loaded), spec.forward(model), 5e-5, "output after variant save/load")
    with pytest.raises(OSError, match="no file named"):
        spec.model_class.from_pretrained(tmp_path)


def check_save_load_dtype(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_from_save_pretrained_dtype` and `test_from_pretrained_dtype_alias`
    (float32, float16, bfloat16), plus `test_from_save_pretrained_dtype_inference` on the CPU: a model
    saved in a dtype loads in it (`torch_dtype=` and `dtype=`, with and without low_cpu_mem_usage),
    every floating tensor included, and its forward stays finite in that dtype."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        folder = tmp_path / str(dtype).split(".")[-1]
        model = spec.build().to(dtype)
        model.save_pretrained(folder)
        variants = [{"torch_dtype": dtype}, {"dtype": dtype}]
        if not getattr(spec.model_class, "_keep_in_fp32_modules", None):  # diffusers refuses the combination
            variants.append({"torch_dtype": dtype, "low_cpu_mem_usage": False})
        for kwargs in variants:
            loaded = spec.model_class.from_pretrained(folder, **kwargs).eval()
            assert loaded.dtype == dtype, f"{kwargs}: loaded as {loaded.dtype}"
            wrong = wrong_dtypes(loaded, dtype)
            assert not wrong, f"{kwargs}: tensors not in {dtype}: {wrong}"
        out = first_output(spec.forward(loaded, dtype=dtype))
        assert out.dtype == dtype, f"a {dtype} model returned {out.dtype}"
        assert torch.isfinite(out).all(), f"{dtype} forward produced NaN/inf"


def check_sharded_checkpoints(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_sharded_checkpoints` (accelerator-gated in diffusers, runs on a
    CPU): a shard limit below the model's size writes an index and the shards it names, which load
    back to the same state and outputs."""
    model = spec.build()
    sizes = [t.numel() * t.element_size() for t in model.state_dict().values()]
    if len(sizes) < 2:
        pytest.skip("a single tensor cannot be sharded")
    model.save_pretrained(tmp_path, max_shard_size=max(sizes))
    assert (tmp_path / INDEX_FILE).exists(), f"no shard index: {sorted(p.name for p in tmp_path.iterdir())}"
    shards = set(json.loads((tmp_path / INDEX_FILE).read_text())["weight_map"].values())
    written = {p.name for p in tmp_path.glob("*.safetensors")}
    assert len(shards) >= 2 and shards == written, f"index names {sorted(shards)}, folder has {sorted(written)}"
    loaded = spec.model_class.from_pretrained(tmp_path).eval()
    assert_same_state(model, loaded, "sharded load")
    assert_outputs_close(spec.forward(loaded), spec.forward(model), 1e-5, "output after sharded save/load")

    # test_sharded_checkpoints_with_variant: the variant names the index and every shard
    variant_dir = tmp_path / "variant"
    model.save_pretrained(variant_dir, max_shard_size=max(sizes), variant="fp16")
    index = variant_dir / "diffusion_pytorch_model.safetensors.index.fp16.json"
    assert index.exists(), f"no variant shard index: {sorted(p.name for p in variant_dir.iterdir())}"
    shards = set(json.loads(index.read_text())["weight_map"].values())
    assert all(".fp16" in name or "fp16." in name for name in shards), f"shards without the variant: {shards}"
    loaded = spec.model_class.from_pretrained(variant_dir, variant="fp16").eval()
    assert_same_state(model, loaded, "sharded variant load")


def check_from_config(spec: ModelSpec, tmp_path: Path) -> None:
    """`from_config(model.config)` (used by diffusers' tests to build twins, e.g. in the gradient
    checkpointing test) builds the same architecture: equal config, same state-dict layout, and
    with the weights copied, the same outputs."""
    model = spec.build()
    twin = spec.model_class.from_config(model.config).eval()
    assert public_config(twin) == public_config(model), "from_config changed the config"
    a, b = model.state_dict(), twin.state_dict()
    assert a.keys() == b.keys(), f"state dict keys differ: {sorted(set(a) ^ set(b))[:5]}"
    layout = {k: (tuple(v.shape), v.dtype) for k, v in a.items()}
    assert layout == {k: (tuple(v.shape), v.dtype) for k, v in b.items()}, "state dict shapes/dtypes differ"
    twin.load_state_dict(a)
    assert_outputs_close(spec.forward(twin), spec.forward(model), 0.0, "from_config twin output")


# ----------------------------------------------------------------------------------------------
# Forward passes
# ----------------------------------------------------------------------------------------------


def check_determinism(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_determinism` (atol 1e-5) over every output, not just the first:
    two eval forwards on the same inputs agree."""
    model = spec.build()
    assert_outputs_close(spec.forward(model), spec.forward(model), 1e-5, "second forward")


def check_output_shape(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_output`: the first output has `output_shape`."""
    out = first_output(spec.forward(spec.build()))
    assert out is not None
    if spec.output_shape is not None:
        assert tuple(out.shape) == tuple(spec.output_shape), f"output shape {tuple(out.shape)}"


def check_outputs_equivalence(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_outputs_equivalence` (atol 1e-5): `return_dict=False` gives the
    tuple of the dataclass's non-None fields, entry by entry (codes objects field by field)."""
    model = spec.build()
    as_dict = spec.forward(model, return_dict=True)
    as_tuple = spec.forward(model, return_dict=False)
    assert isinstance(as_tuple, tuple), f"return_dict=False returned a {type(as_tuple).__name__}"
    assert not isinstance(as_dict, tuple), "return_dict=True returned a tuple"
    assert len(as_tuple) == len(as_dict), f"{len(as_tuple)} tuple entries vs {len(as_dict)} fields"
    assert_outputs_close(as_tuple, as_dict, 1e-5, "return_dict=False vs True")


def check_output_leaves_device_aware(spec: ModelSpec, tmp_path: Path) -> None:
    """What diffusers' `test_outputs_equivalence` needs of every output entry: each one is a tensor
    or behaves like one where generic code touches it, exposing `.device` (the model's) and `.to()`
    (moving it keeps its type). A codes object without them breaks diffusers' helper with
    "object has no attribute 'device'"."""
    model = spec.build()
    for path, leaf in output_leaves(spec.forward(model), into_objects=False):
        if isinstance(leaf, (bool, int, float, str)):
            continue
        assert hasattr(leaf, "device"), f"{path} ({type(leaf).__name__}) has no `.device`"
        assert torch.device(leaf.device) == model.device, f"{path} is on {leaf.device}, the model on {model.device}"
        assert callable(getattr(leaf, "to", None)), f"{path} ({type(leaf).__name__}) has no `.to()`"
        moved = leaf.to("cpu")
        assert type(moved) is type(leaf), f"{path}.to('cpu') returned a {type(moved).__name__}"


def check_dtype_round_trip(spec: ModelSpec, tmp_path: Path) -> None:
    """The `.to(dtype)` behaviour diffusers' dtype tests rely on: float64 and float16 models run
    (first output in the model's dtype, finite); non-floating buffers keep their dtype; and
    float32 → float64 → float32 is lossless (same state, same outputs), float16 → float32 within
    float16 rounding."""
    model = spec.build()
    state = copy.deepcopy(model.state_dict())
    expected = spec.forward(model)
    fixed = {k: v.dtype for k, v in state.items() if not v.is_floating_point()}
    for dtype in (torch.float64, torch.float16):
        model.to(dtype)
        assert model.dtype == dtype
        wrong = wrong_dtypes(model, dtype)
        assert not wrong, f"after .to({dtype}) still {wrong}"
        kept = {k: v.dtype for k, v in model.state_dict().items() if k in fixed}
        assert kept == fixed, f".to({dtype}) changed non-floating buffers: {kept} vs {fixed}"
        out = first_output(spec.forward(model, dtype=dtype))
        assert out.dtype == dtype and torch.isfinite(out).all(), (
            f"{dtype} forward: {out.dtype}, finite={bool(torch.isfinite(out).all())}"
        )
        model.to(torch.float32)
        if dtype == torch.float64:
            assert_same_state(model, _with_state(spec, state), "float32 → float64 → float32")
            assert_outputs_close(spec.forward(model), expected, 0.0, "output after a float64 round trip")
        else:
            for key, value in model.state_dict().items():
                if value.is_floating_point():
                    torch.testing.assert_close(value, state[key], atol=1e-3, rtol=1e-3, msg=f"{key} after float16")


def _with_state(spec: ModelSpec, state) -> nn.Module:
    model = spec.build()
    model.load_state_dict(state)
    return model


def check_getattr(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_getattr_is_correct`: plain attributes and methods read without
    warnings (Python or diffusers' logger), a config entry read as an attribute warns
    (FutureWarning), and a missing attribute raises the standard `AttributeError`."""
    import warnings

    model = spec.model_class(**spec.make_init_kwargs())
    model.dummy_attribute = 5
    model.register_to_config(test_attribute=5)
    logger = logging.getLogger("diffusers.models.modeling_utils")
    records: List[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert hasattr(model, "dummy_attribute") and model.dummy_attribute == 5
            assert hasattr(model, "save_pretrained") and callable(model.save_pretrained)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not records, [r.getMessage() for r in records]
    with pytest.warns(FutureWarning):
        assert model.test_attribute == 5
    with pytest.raises(AttributeError) as error:
        model.does_not_exist  # noqa: B018
    assert str(error.value) == f"'{spec.model_class.__name__}' object has no attribute 'does_not_exist'"


def check_deprecated_kwargs(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `ModelTesterMixin.test_deprecated_kwargs` (older diffusers): `**kwargs` in `__init__`
    exactly when the class lists `_deprecated_kwargs`."""
    import inspect

    has_kwargs = any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        for p in inspect.signature(spec.model_class.__init__).parameters.values()
    )
    deprecated = list(getattr(spec.model_class, "_deprecated_kwargs", []) or [])
    assert has_kwargs == bool(deprecated), (
        f"`__init__` {'takes' if has_kwargs else 'does not take'} **kwargs but `_deprecated_kwargs` is {deprecated}"
    )


def _cast_layer_dtypes(
    model: nn.Module, storage: torch.dtype, compute: torch.dtype
) -> Dict[str, Tuple[torch.dtype, torch.dtype]]:
    """{layer weight name: (actual, expected)} under layerwise casting, as diffusers decides it."""
    import re

    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    # the layers diffusers' layerwise-casting docs name (written here, not read from its private `hooks._common`)
    cast_layers = (
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
        nn.Linear,
    )

    patterns = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(
        getattr(model, "_skip_layerwise_casting_patterns", None) or ()
    )
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, cast_layers) and getattr(module, "weight", None) is not None:
            expected = compute if any(re.search(p, name) for p in patterns) else storage
            found[f"{name}.weight"] = (module.weight.dtype, expected)
    return found


def check_layerwise_casting(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `test_layerwise_casting_inference` (older `ModelTesterMixin`; float32 compute, which
    runs on a CPU): with weights stored in float16 or float8, every supported layer outside the skip
    patterns holds the storage dtype and the forward stays finite and close in direction to the
    uncast one. (Its training twin is left out: on a CPU the backward through float16-stored
    weights fails inside PyTorch even for diffusers' own AutoencoderKL.)"""
    reference = first_output(spec.forward(spec.build())).double().flatten()
    for storage in (torch.float16, torch.float8_e4m3fn):
        model = spec.build()
        model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=torch.float32)
        layers = _cast_layer_dtypes(model, storage, torch.float32)
        wrong = {n: d for n, d in layers.items() if d[0] != d[1]}
        assert not wrong, f"storage {storage}: layers in the wrong dtype (actual, expected): {wrong}"
        out = first_output(spec.forward(model))
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), f"storage {storage}: output {out.dtype}"
        if not layers:  # nothing castable (parameters outside Linear/Conv/Embedding): the output is unchanged
            assert torch.equal(out.double().flatten(), reference), f"storage {storage}: output changed"
        else:
            cosine = torch.nn.functional.cosine_similarity(out.double().flatten(), reference, dim=0)
            assert cosine > 0, f"storage {storage}: output unrelated to the uncast one (cosine {float(cosine):.3f})"


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def training_loss(output) -> torch.Tensor:
    """MSE of the first output against noise (as diffusers' training tests), plus every scalar
    output that carries gradients (a bottleneck's own loss: its codebook/dictionary is trained by
    that term, the straight-through latents carry none to it)."""
    entries = list(output)
    first = entries[0]
    loss = nn.functional.mse_loss(first, torch.randn(first.shape, generator=torch.Generator().manual_seed(0)).to(first))
    for entry in entries[1:]:
        if torch.is_tensor(entry) and entry.dim() == 0 and entry.is_floating_point() and entry.requires_grad:
            loss = loss + entry
    return loss


def _train_step(spec: ModelSpec, model: nn.Module) -> torch.Tensor:
    model.train()
    loss = training_loss(model(**spec.make_inputs(), return_dict=False))
    if loss.requires_grad:
        loss.backward()
    return loss


def check_training(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `TrainingTesterMixin.test_training`, stricter: a train-mode forward and backward give
    every parameter that requires grad a finite gradient, and not all of them zero. A model trained
    only outside autograd (an EMA codebook) must instead change its state in the train-mode forward."""
    model = spec.build()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = copy.deepcopy(model.state_dict())
    loss = _train_step(spec, model)
    assert torch.isfinite(loss), f"training loss {loss}"
    if not trainable:
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert changed, "no parameter requires grad and the train-mode forward changed nothing"
        return
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"
    assert any(p.grad.abs().sum() > 0 for p in trainable.values()), "every gradient is zero"


def check_training_with_ema(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `TrainingTesterMixin.test_training_with_ema`: diffusers' `EMAModel` tracks the model
    through an optimizer step (its shadow weights move, stay finite, and copy back)."""
    from diffusers.training_utils import EMAModel

    model = spec.build()
    ema = EMAModel(model.parameters())
    before = [p.detach().clone() for p in ema.shadow_params]
    _train_step(spec, model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if trainable:  # (an EMA codebook moves in the forward itself)
        torch.optim.SGD(trainable, lr=0.1).step()
    ema.step(model.parameters())
    after = ema.shadow_params
    assert all(torch.isfinite(p).all() for p in after), "EMA weights are not finite"
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "EMA weights did not move"
    twin = spec.build()
    ema.copy_to(twin.parameters())
    for p, s in zip(twin.parameters(), after):
        assert torch.equal(p.detach(), s.to(p.dtype)), "EMAModel.copy_to did not copy the shadow weights"


def check_mixed_precision_training(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `TrainingTesterMixin.test_mixed_precision_training`, which diffusers skips on a CPU;
    here with the CPU's bfloat16 autocast: forward and backward run and the gradients are finite."""
    model = spec.build()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()
        loss = training_loss(model(**spec.make_inputs(), return_dict=False))
    assert torch.isfinite(loss), f"autocast training loss {loss}"
    if loss.requires_grad:
        loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients under autocast in {bad}"


def check_gradient_checkpointing(spec: ModelSpec, tmp_path: Path) -> None:
    """Mirrors `TrainingTesterMixin.test_gradient_checkpointing` and
    `test_gradient_checkpointing_equivalence` (loss 1e-5, gradients 5e-5). A model that does not
    declare `_supports_gradient_checkpointing` must refuse to enable it, with a ValueError."""
    model = spec.build()
    assert not model.is_gradient_checkpointing, "gradient checkpointing on at construction"
    if not spec.model_class._supports_gradient_checkpointing:
        with pytest.raises(ValueError, match="does not support gradient checkpointing"):
            model.enable_gradient_checkpointing()
        assert not model.is_gradient_checkpointing
        return
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing

    plain = spec.build()
    state = copy.deepcopy(plain.state_dict())
    loss = _train_step(spec, plain)
    checkpointed = _with_state(spec, state)
    checkpointed.enable_gradient_checkpointing()
    loss_2 = _train_step(spec, checkpointed)
    assert (loss - loss_2).abs() < 1e-5, f"losses differ: {float(loss.detach())} vs {float(loss_2.detach())}"
    grads = dict(checkpointed.named_parameters())
    for name, p in plain.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name].grad, atol=5e-5, rtol=0, msg=f"gradient of {name}")


#: name → check; each check takes `(spec, tmp_path)`.
MODEL_CHECKS: Dict[str, Callable[[ModelSpec, Path], None]] = {
    "save_load": check_save_load,
    "save_load_variant": check_save_load_variant,
    "save_load_dtype": check_save_load_dtype,
    "sharded_checkpoints": check_sharded_checkpoints,
    "from_config": check_from_config,
    "determinism": check_determinism,
    "output_shape": check_output_shape,
    "outputs_equivalence": check_outputs_equivalence,
    "output_leaves_device_aware": check_output_leaves_device_aware,
    "dtype_round_trip": check_dtype_round_trip,
    "getattr": check_getattr,
    "deprecated_kwargs": check_deprecated_kwargs,
    "layerwise_casting": check_layerwise_casting,
    "training": check_training,
    "training_with_ema": check_training_with_ema,
    "mixed_precision_training": check_mixed_precision_training,
    "gradient_checkpointing": check_gradient_checkpointing,
}
