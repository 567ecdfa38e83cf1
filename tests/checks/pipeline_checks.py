"""Conformance checks for text-to-image diffusers pipelines (Stable Diffusion and its subclasses).

Each check is a function ``check_<name>(spec, tmp_path)`` over a `PipelineSpec`: a factory for fresh
components, a factory for seeded call arguments and the pipeline class. They mirror, in our own
words, the checks diffusers runs on every pipeline (``PipelineTesterMixin``,
``PipelineLatentTesterMixin``, ``PipelineKarrasSchedulerTesterMixin``,
``PipelineFromPipeTesterMixin``, ``SDFunctionTesterMixin`` and the Stable Diffusion fast tests),
restricted to what runs offline on a CPU. `PIPELINE_CHECKS` maps a short name to each check; the
docstring of every check names the diffusers test it mirrors and what is different.

Deliberate differences from diffusers:
- Behavioural checks never skip because a parameter is missing from ``__call__``'s signature (diffusers
  skips the guidance, ``num_images_per_prompt`` and callback tests then); `check_call_signature` is the
  one place that demands explicit parameters, so hidden parameters fail loudly once, not silently.
- Pipelines are saved with safetensors (the project ships nothing else).
- Half precision runs on the CPU with float16 (diffusers gates it behind an accelerator).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

# ----------------------------------------------------------------------------------------------
# Parameter sets (the text-to-image sets of diffusers' tests/pipelines/pipeline_params.py)
# ----------------------------------------------------------------------------------------------

#: Arguments every text-to-image `__call__` must name explicitly.
TEXT_TO_IMAGE_CALL_PARAMS = frozenset(
    {
        "prompt",
        "height",
        "width",
        "guidance_scale",
        "negative_prompt",
        "prompt_embeds",
        "negative_prompt_embeds",
        "cross_attention_kwargs",
    }
)
#: Arguments that take one value per image of a batch.
TEXT_TO_IMAGE_BATCH_PARAMS = frozenset({"prompt", "negative_prompt"})
#: Arguments every pipeline `__call__` must accept with a default.
ALWAYS_OPTIONAL_CALL_PARAMS = frozenset(
    {"num_inference_steps", "num_images_per_prompt", "generator", "latents", "output_type", "return_dict"}
)


def _default_reference_class():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline


@dataclass
class PipelineSpec:
    """What the checks need to know about a pipeline under test.

    Args:
        pipeline_class: the pipeline class.
        make_components: returns FRESH components (new modules every call), keyed as `__init__` names them.
        make_inputs: `make_inputs(seed)` returns call arguments with a freshly seeded CPU generator,
            `output_type="pt"` and few inference steps.
        init_kwargs: extra non-component `__init__` arguments (e.g. `requires_safety_checker=False`).
        reference_class: the pipeline whose `__call__` parameters must all be explicit in ours
            (defaults to `StableDiffusionPipeline`).
        output_shape: shape of one image of `pipe(**make_inputs(0))[0]`.
        latent_output: `latent_output(pipe, latents)` → what `output_type="latent"` returns when the
            denoising loop ends on `latents` (identity for Stable Diffusion; a bottleneck pipeline
            returns the coded latents).
    """

    pipeline_class: type
    make_components: Callable[[], Dict[str, Any]]
    make_inputs: Callable[[int], Dict[str, Any]]
    init_kwargs: Dict[str, Any] = field(default_factory=dict)
    reference_class: Optional[type] = None
    call_params: frozenset = TEXT_TO_IMAGE_CALL_PARAMS
    batch_params: frozenset = TEXT_TO_IMAGE_BATCH_PARAMS
    always_optional_params: frozenset = ALWAYS_OPTIONAL_CALL_PARAMS
    output_shape: Tuple[int, ...] = (3, 64, 64)
    latent_output: Optional[Callable[[Any, torch.Tensor], torch.Tensor]] = None

    @property
    def reference(self) -> type:
        return self.reference_class or _default_reference_class()

    def build(self, components: Optional[Dict[str, Any]] = None):
        """A pipeline from `components` (fresh ones by default), modules in eval mode, no progress bar."""
        components = self.make_components() if components is None else components
        pipe = self.pipeline_class(**components, **self.init_kwargs)
        return prepare(pipe)

    def inputs(self, seed: int = 0, **overrides) -> Dict[str, Any]:
        inputs = self.make_inputs(seed)
        inputs.update(overrides)
        return inputs

    def run(self, pipe, seed: int = 0, **overrides):
        """The first output (the images) of `pipe` on the standard inputs."""
        torch.manual_seed(0)
        return pipe(**self.inputs(seed, **overrides))[0]

    def expected_latent_output(self, pipe, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.latent_output is None else self.latent_output(pipe, latents)


def prepare(pipe):
    """Eval mode for every module component and a silent progress bar."""
    for component in pipe.components.values():
        if isinstance(component, nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------------------------
# Comparison helpers
# ----------------------------------------------------------------------------------------------


def as_tensor(images) -> torch.Tensor:
    """Pipeline images of any `output_type` (tensor, array, list of PIL images) as a float CPU tensor."""
    if isinstance(images, torch.Tensor):
        return images.detach().cpu().float()
    if isinstance(images, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(images)).float()
    if isinstance(images, PIL.Image.Image):
        return torch.from_numpy(np.asarray(images).copy()).float()
    if isinstance(images, (list, tuple)) and images:
        return torch.stack([as_tensor(image) for image in images])
    raise TypeError(f"cannot compare pipeline output of type {type(images).__name__}")


def max_abs_diff(a, b) -> float:
    a, b = as_tensor(a), as_tensor(b)
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return float((a - b).abs().max()) if a.numel() else 0.0


def assert_close(actual, expected, atol: float, what: str) -> None:
    diff = max_abs_diff(actual, expected)
    assert diff <= atol, f"{what}: max |difference| {diff:.3g} > {atol:g}"


def module_components(pipe) -> Dict[str, nn.Module]:
    return {name: c for name, c in pipe.components.items() if isinstance(c, nn.Module)}


def assert_same_weights(a: nn.Module, b: nn.Module, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), f"{what}: state dict keys differ: {sorted(set(sa) ^ set(sb))[:5]}"
    for key in sa:
        assert sa[key].shape == sb[key].shape, f"{what}.{key}: shape {sa[key].shape} vs {sb[key].shape}"
        assert torch.equal(sa[key].cpu(), sb[key].to(sa[key].dtype).cpu()), f"{what}.{key}: values differ"


def batch_inputs(spec: PipelineSpec, inputs: Dict[str, Any], batch_size: int) -> Dict[str, Any]:
    """Batched call arguments as diffusers builds them: prompts of unequal lengths, the last one far
    longer than the tokenizer's limit, one seeded generator per image."""
    batched = dict(inputs)
    for name in spec.batch_params:
        if name not in inputs:
            continue
        value = inputs[name]
        if name == "prompt":
            prompts = [value[: max(len(value) // (i + 1), 1)] for i in range(batch_size)]
            prompts[-1] = "very long " * 100
            batched[name] = prompts
        else:
            batched[name] = [value] * batch_size
    if "generator" in inputs:
        batched["generator"] = [torch.Generator("cpu").manual_seed(i) for i in range(batch_size)]
    return batched


# ----------------------------------------------------------------------------------------------
# Signature and construction
# ----------------------------------------------------------------------------------------------


def _named_parameters(function) -> Dict[str, inspect.Parameter]:
    params = inspect.signature(function).parameters
    return {
        name: p
        for name, p in params.items()
        if name != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def check_call_signature(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_pipeline_call_signature` (and IPAdapterTesterMixin's
    `test_pipeline_signature`), stricter: the text-to-image parameters are present, the always-optional
    ones have defaults, no `*args` swallows positional arguments, and every parameter of the reference
    pipeline's `__call__` (Stable Diffusion's) is explicit, with the same default and positional order,
    so `inspect`, IDEs, `from_pipe` users and the skip-if-absent tests of diffusers see them."""
    call = spec.pipeline_class.__call__
    params = inspect.signature(call).parameters
    star_args = [n for n, p in params.items() if p.kind is inspect.Parameter.VAR_POSITIONAL]
    assert not star_args, f"`{spec.pipeline_class.__name__}.__call__` hides positional arguments behind *{star_args[0]}"
    named = _named_parameters(call)
    missing = sorted(spec.call_params - set(named))
    assert not missing, f"`__call__` lacks the text-to-image parameters {missing}"
    without_default = sorted(
        n for n in spec.always_optional_params if n not in named or named[n].default is inspect._empty
    )
    assert not without_default, f"`__call__` lacks (or has no default for) {without_default}"

    reference = _named_parameters(spec.reference.__call__)
    hidden = [n for n in reference if n not in named]
    assert not hidden, (
        f"`{spec.pipeline_class.__name__}.__call__` hides {len(hidden)} of `{spec.reference.__name__}.__call__`'s "
        f"parameters behind **kwargs: {hidden}"
    )
    changed = {n: (named[n].default, p.default) for n, p in reference.items() if named[n].default != p.default}
    assert not changed, f"defaults differ from `{spec.reference.__name__}.__call__` (ours, theirs): {changed}"
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    ours = [n for n, p in named.items() if p.kind is positional]
    theirs = [n for n, p in reference.items() if p.kind is positional]
    assert ours[: len(theirs)] == theirs, "positional parameters are not in Stable Diffusion's order"


def check_call_docstring(spec: PipelineSpec, tmp_path: Path) -> None:
    """No diffusers tester equivalent (diffusers' docs build checks it): every explicit `__call__`
    parameter is described in the pipeline's own `__call__` docstring."""
    doc = spec.pipeline_class.__call__.__doc__ or ""
    undocumented = [n for n in _named_parameters(spec.pipeline_class.__call__) if not re.search(rf"\b{n}\b", doc)]
    assert not undocumented, f"`__call__` docstring does not describe {undocumented}"


def check_components_round_trip(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_components_function`, plus the round trip users rely on:
    `pipe.components` names exactly the `__init__` components, and `Pipeline(**pipe.components)`
    shares the same objects and gives the same images."""
    components = spec.make_components()
    pipe = spec.build(components)
    assert set(pipe.components) == set(components), (
        f"`components` keys {sorted(pipe.components)} differ from the __init__ components {sorted(components)}"
    )
    rebuilt = spec.build(dict(pipe.components))
    for name, component in pipe.components.items():
        assert rebuilt.components[name] is component, f"`{name}` was not passed through"
    assert_close(spec.run(rebuilt), spec.run(pipe), 0.0, "Pipeline(**pipe.components) output")


def check_stable_diffusion_components(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_StableDiffusionMixin_component`: a `StableDiffusionMixin`
    pipeline has a diffusers VAE and UNet."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from diffusers.pipelines.pipeline_utils import StableDiffusionMixin

    if not issubclass(spec.pipeline_class, StableDiffusionMixin):
        pytest.skip("not a StableDiffusionMixin pipeline")
    pipe = spec.build()
    assert isinstance(pipe.vae, (AutoencoderKL, AutoencoderTiny)), f"vae is a {type(pipe.vae).__name__}"
    assert isinstance(pipe.unet, UNet2DConditionModel), f"unet is a {type(pipe.unet).__name__}"


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------


def check_output_shape(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_output`: one image of the standard call has `output_shape`."""
    images = spec.run(spec.build())
    assert tuple(images.shape) == (1, *spec.output_shape), f"output shape {tuple(images.shape)}"
    assert torch.isfinite(images).all(), "output has NaN/inf"


def check_dict_tuple_outputs_equivalent(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_dict_tuple_outputs_equivalent` (atol 1e-4)."""
    pipe = spec.build()
    as_dict = spec.run(pipe)
    as_tuple = spec.run(pipe, return_dict=False)
    assert_close(as_tuple, as_dict, 1e-4, "return_dict=False vs True")


def check_output_types_equivalent(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineLatentTesterMixin.test_pt_np_pil_outputs_equivalent`: "pt" and "np" agree to
    1e-4, "pil" agrees with the rounded "np" within 2 levels."""
    pipe = spec.build()
    pt = spec.run(pipe, output_type="pt")
    np_images = spec.run(pipe, output_type="np")
    pil = spec.run(pipe, output_type="pil")
    assert isinstance(np_images, np.ndarray) and isinstance(pil[0], PIL.Image.Image)
    assert_close(pt.permute(0, 2, 3, 1), np_images, 1e-4, 'output_type="pt" vs "np"')
    assert_close(np.asarray(pil[0]).astype(np.float32), (np_images[0] * 255).round(), 2.0, '"pil" vs "np"')


def check_latent_output_decodes(spec: PipelineSpec, tmp_path: Path) -> None:
    """No single diffusers test (`output_type="latent"` appears in its callback tests): the latent
    output has the VAE's latent shape, and decoding it by hand gives the "pt" images."""
    pipe = spec.build()
    images = spec.run(pipe)
    latents = spec.run(pipe, output_type="latent")
    vae, factor = pipe.vae, pipe.vae_scale_factor
    expected = (1, vae.config.latent_channels, images.shape[2] // factor, images.shape[3] // factor)
    assert tuple(latents.shape) == expected, f"latent output shape {tuple(latents.shape)}, expected {expected}"
    with torch.no_grad():
        decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    decoded = pipe.image_processor.postprocess(decoded, output_type="pt")
    assert_close(decoded, images, 1e-4, "decode(output_type='latent') vs output_type='pt'")


def check_guidance_changes_output(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_cfg` (which only compares shapes), stricter: guidance 7.5
    gives images of the same shape as 1.0 (no guidance) but different ones."""
    pipe = spec.build()
    unguided = spec.run(pipe, guidance_scale=1.0)
    guided = spec.run(pipe, guidance_scale=7.5)
    assert guided.shape == unguided.shape
    assert max_abs_diff(guided, unguided) > 1e-3, "guidance_scale had no effect"


def check_negative_prompt(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `test_stable_diffusion_negative_prompt` behaviourally (diffusers compares a stored
    slice): a negative prompt changes the guided images."""
    pipe = spec.build()
    plain = spec.run(pipe)
    negative = spec.run(pipe, negative_prompt="french fries")
    assert max_abs_diff(plain, negative) > 1e-3, "negative_prompt had no effect"


def check_prompt_embeds(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `test_stable_diffusion_prompt_embeds` and `test_stable_diffusion_negative_prompt_embeds`:
    embeddings computed by hand give the same images as the prompts (atol 1e-4)."""
    pipe = spec.build()
    prompts = 3 * [spec.inputs()["prompt"]]
    negatives = 3 * ["this is a negative prompt"]
    from_text = spec.run(pipe, prompt=prompts, negative_prompt=negatives)

    def embed(texts):
        ids = pipe.tokenizer(
            texts,
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        with torch.no_grad():
            return pipe.text_encoder(ids)[0]

    inputs = spec.inputs()
    inputs.pop("prompt")
    torch.manual_seed(0)
    from_embeds = pipe(**inputs, prompt_embeds=embed(prompts), negative_prompt_embeds=embed(negatives))[0]
    assert_close(from_embeds, from_text, 1e-4, "prompt_embeds vs prompt")


def check_height_width(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `test_stable_diffusion_height_width_opt` and `test_stable_diffusion_ddim_factor_8`:
    the default size follows the UNet's sample size, and any multiple of 8 is honoured (96, 136)."""
    pipe = spec.build()
    default = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert tuple(spec.run(pipe, num_inference_steps=1).shape[2:]) == (default, default)
    for size in (96, 136):
        images = spec.run(pipe, num_inference_steps=1, height=size, width=size)
        assert tuple(images.shape[2:]) == (size, size), f"asked for {size}x{size}, got {tuple(images.shape[2:])}"


# ----------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------


def check_inference_batch_consistent(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_inference_batch_consistent`: prompts of unequal lengths
    (one over the tokenizer's limit) with one generator each give one image each."""
    pipe = spec.build()
    for batch_size in (2,):
        images = pipe(**batch_inputs(spec, spec.inputs(), batch_size))[0]
        assert len(images) == batch_size, f"{batch_size} prompts gave {len(images)} images"


def check_inference_batch_single_identical(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_inference_batch_single_identical` with Stable Diffusion's
    tolerance (3e-3): the first image of a batch of 3 equals the single-prompt image."""
    pipe = spec.build()
    single = spec.run(pipe)
    torch.manual_seed(0)
    batch = pipe(**batch_inputs(spec, spec.inputs(), 3))[0]
    assert batch.shape[0] == 3
    assert_close(batch[:1], single, 3e-3, "first image of a batch vs the single image")


def check_num_images_per_prompt(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_num_images_per_prompt` (without skipping when the argument
    is not in the signature): batch size × images per prompt images come back."""
    pipe = spec.build()
    for batch_size in (1, 2):
        for per_prompt in (1, 2):
            inputs = spec.inputs()
            for key in spec.batch_params & set(inputs):
                inputs[key] = batch_size * [inputs[key]]
            images = pipe(**inputs, num_images_per_prompt=per_prompt)[0]
            assert images.shape[0] == batch_size * per_prompt, (
                f"{batch_size} prompts × {per_prompt} images per prompt gave {images.shape[0]} images"
            )


# ----------------------------------------------------------------------------------------------
# Callbacks
# ----------------------------------------------------------------------------------------------


def check_callback_on_step_end(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_callback_inputs` (without the signature skip): the callback
    gets exactly the requested tensors from `_callback_tensor_inputs`, once per step, and tensors it
    returns replace the pipeline's (zeroed latents at the last step reach the latent output)."""
    pipe = spec.build()
    allowed = getattr(pipe, "_callback_tensor_inputs", None)
    assert allowed, "the pipeline has no `_callback_tensor_inputs`"
    seen = []

    def only(requested):
        def callback(p, i, t, kwargs):
            assert set(kwargs) == set(requested), f"callback got {sorted(kwargs)}, asked for {sorted(requested)}"
            seen.append(i)
            return kwargs

        return callback

    for requested in (["latents"], list(allowed)):
        seen.clear()
        spec.run(pipe, callback_on_step_end=only(requested), callback_on_step_end_tensor_inputs=requested)
        assert seen == list(range(pipe.num_timesteps)), f"callback ran at steps {seen}"

    def zero_last(p, i, t, kwargs):
        if i == p.num_timesteps - 1:
            kwargs["latents"] = torch.zeros_like(kwargs["latents"])
        return kwargs

    out = spec.run(
        pipe, output_type="latent", callback_on_step_end=zero_last, callback_on_step_end_tensor_inputs=allowed
    )
    expected = spec.expected_latent_output(pipe, torch.zeros_like(out))
    assert_close(out, expected, 1e-6, "latent output after the callback zeroed the latents")


def check_callback_cfg(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_callback_cfg`: a callback may change `_guidance_scale`
    during the loop, and the pipeline keeps it."""
    pipe = spec.build()

    def raise_guidance(p, i, t, kwargs):
        p._guidance_scale += 1.0
        return kwargs

    spec.run(
        pipe,
        guidance_scale=2.0,
        callback_on_step_end=raise_guidance,
        callback_on_step_end_tensor_inputs=list(pipe._callback_tensor_inputs),
    )
    assert pipe.guidance_scale == 2.0 + pipe.num_timesteps, f"guidance_scale ended at {pipe.guidance_scale}"


def check_interrupt(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `test_pipeline_interrupt` of the Stable Diffusion tests: setting `_interrupt` in a
    callback stops denoising, and the latent output is the (coded) latents of that step."""
    pipe = spec.build()
    states = []

    def record(p, i, t, kwargs):
        states.append(kwargs["latents"].clone())
        return kwargs

    spec.run(pipe, num_inference_steps=3, output_type="latent", callback_on_step_end=record)
    stop_at = 1

    def interrupt(p, i, t, kwargs):
        if i == stop_at:
            p._interrupt = True
        return kwargs

    out = spec.run(pipe, num_inference_steps=3, output_type="latent", callback_on_step_end=interrupt)
    assert_close(out, spec.expected_latent_output(pipe, states[stop_at]), 1e-4, "interrupted latent output")


def check_progress_bar(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineFastTests.test_progress_bar` (diffusers tests/pipelines/test_pipelines.py):
    the bar reports every step, and `set_progress_bar_config(disable=True)` silences it."""
    pipe = spec.build()
    steps = spec.inputs()["num_inference_steps"]
    pipe.set_progress_bar_config(disable=False)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        spec.run(pipe)
    assert f"{steps}/{steps}" in err.getvalue(), f"progress bar output: {err.getvalue()[-200:]!r}"
    pipe.set_progress_bar_config(disable=True)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        spec.run(pipe)
    assert err.getvalue() == "", f"disabled progress bar still wrote {err.getvalue()[-200:]!r}"


# ----------------------------------------------------------------------------------------------
# Saving, loading, from_pipe
# ----------------------------------------------------------------------------------------------


def _assert_loaded_like(pipe, loaded, what: str) -> None:
    assert set(loaded.components) == set(pipe.components), f"{what}: components {sorted(loaded.components)}"
    for name, component in pipe.components.items():
        other = loaded.components[name]
        if component is None:
            assert other is None, f"{what}: `{name}` came back as {type(other).__name__}, not None"
            continue
        assert type(other) is type(component), f"{what}: `{name}` is a {type(other).__name__}"
        if isinstance(component, nn.Module):
            assert_same_weights(component, other, f"{what}: {name}")


def check_save_load_local(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_save_load_local` (atol 5e-4), with safetensors: the
    pipeline class loads its own folder, every component comes back with the same class and
    weights, no pickle file is written, and the images are unchanged."""
    pipe = spec.build()
    images = spec.run(pipe)
    pipe.save_pretrained(tmp_path)
    pickles = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.bin")]
    assert not pickles, f"save_pretrained wrote pickle files {pickles}"
    loaded = prepare(spec.pipeline_class.from_pretrained(tmp_path))
    assert type(loaded) is spec.pipeline_class
    _assert_loaded_like(pipe, loaded, "from_pretrained")
    assert_close(spec.run(loaded), images, 5e-4, "output after save/load")


def check_save_load_optional_components(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_save_load_optional_components` (atol 1e-4): with every
    optional component set to None, the pipeline runs, saves, and loads them back as None."""
    optional = list(getattr(spec.pipeline_class, "_optional_components", []) or [])
    if not optional:
        pytest.skip("no optional components")
    pipe = spec.build()
    for name in optional:
        setattr(pipe, name, None)
    images = spec.run(pipe)
    pipe.save_pretrained(tmp_path)
    loaded = prepare(spec.pipeline_class.from_pretrained(tmp_path))
    for name in optional:
        assert getattr(loaded, name) is None, f"`{name}` did not stay None after loading"
    assert_close(spec.run(loaded), images, 1e-4, "output after save/load without optional components")


def check_save_load_dtype(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_dtype_alias`, `test_torch_dtype_dict` and the loading half
    of `test_save_load_float16`: `from_pretrained(torch_dtype=...)` (or `dtype=`, a dict per
    component with a "default") gives every module component the asked dtype."""
    pipe = spec.build()
    pipe.save_pretrained(tmp_path)
    modules = module_components(pipe)
    first = next(iter(modules))
    for kwargs in (
        {"torch_dtype": torch.float16},
        {"dtype": torch.float16},
        {"torch_dtype": {first: torch.bfloat16, "default": torch.float16}},
    ):
        with warnings.catch_warnings():  # diffusers 0.42 deprecates `torch_dtype` for `dtype`; both must work
            warnings.filterwarnings("ignore", "`torch_dtype` is deprecated", FutureWarning)
            loaded = spec.pipeline_class.from_pretrained(tmp_path, **kwargs)
        asked = next(iter(kwargs.values()))
        for name, component in module_components(loaded).items():
            expected = asked.get(name, asked["default"]) if isinstance(asked, dict) else asked
            assert component.dtype == expected, f"{kwargs}: `{name}` loaded as {component.dtype}, not {expected}"


def check_variants(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_serialization_with_variants`, `test_loading_with_variants`
    and `test_loading_with_incorrect_variants_raises_error`: a variant save names every module
    file with the variant and loads back to the same weights; asking for a variant that was not
    saved raises a `ValueError` saying so."""
    pipe = spec.build()
    variant_dir, plain_dir = tmp_path / "variant", tmp_path / "plain"
    pipe.save_pretrained(variant_dir, variant="fp16")
    index = json.loads((variant_dir / "model_index.json").read_text())
    for name in module_components(pipe):
        assert name in index, f"model_index.json does not list `{name}`"
        files = os.listdir(variant_dir / name)
        assert any(".fp16." in f for f in files), f"`{name}` saved without the variant: {files}"
    loaded = spec.pipeline_class.from_pretrained(variant_dir, variant="fp16")
    for name, component in module_components(pipe).items():
        assert_same_weights(component, loaded.components[name], f"variant load: {name}")
    pipe.save_pretrained(plain_dir)
    with pytest.raises(ValueError, match="variant=fp16"):
        spec.pipeline_class.from_pretrained(plain_dir, variant="fp16")


def _split_for(reference: type, components: Dict[str, Any]):
    """(components the reference pipeline takes, filled with None where optional; the rest)."""
    expected, _ = reference._get_signature_keys(reference)
    shared = {k: v for k, v in components.items() if k in expected}
    for name in expected:
        if name not in shared:
            assert name in reference._optional_components, f"{reference.__name__} needs `{name}`"
            shared[name] = None
    extra = {k: v for k, v in components.items() if k not in expected}
    return shared, extra


def _attention_processor_types(pipe):
    return {
        name: sorted({type(p).__name__ for p in c.attn_processors.values()})
        for name, c in pipe.components.items()
        if hasattr(c, "attn_processors")
    }


def check_from_pipe(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineFromPipeTesterMixin.test_from_pipe_consistent_config` and
    `test_from_pipe_consistent_forward_pass` (atol 1e-3): reference → ours → reference keeps the
    reference's config; `from_pipe` gives the same images as building ours directly; the original
    pipeline's images and attention processors are untouched."""
    reference = spec.reference
    components = spec.make_components()
    shared, extra = _split_for(reference, components)
    original = prepare(reference(**shared, **spec.init_kwargs))
    original_images = spec.run(original)
    processors = _attention_processor_types(original)

    derived = prepare(spec.pipeline_class.from_pipe(original, **extra))
    assert type(derived) is spec.pipeline_class
    # hand back what the derived pipeline lacks or holds as another class (e.g. a coded VAE)
    back_extra = {
        n: c
        for n, c in original.components.items()
        if n not in derived.components or not isinstance(c, type(derived.components[n]))
    }
    back = reference.from_pipe(derived, **back_extra)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(back.config) == public(original.config), "config changed on the round trip through from_pipe"

    direct = spec.build(dict(components))
    assert_close(spec.run(derived), spec.run(direct), 1e-3, "from_pipe vs __init__ output")
    assert_close(spec.run(original), original_images, 1e-3, "original pipeline output after from_pipe")
    assert _attention_processor_types(original) == processors, "from_pipe changed the original's processors"


# ----------------------------------------------------------------------------------------------
# dtype
# ----------------------------------------------------------------------------------------------


def check_to_dtype(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_to_dtype`, plus the way back: `pipe.to(dtype=float16)`
    casts every module component, and float32 → float64 → float32 is lossless, so the images
    are exactly those before the round trip."""
    pipe = spec.build()
    images = spec.run(pipe)
    dtypes = {name: m.dtype for name, m in module_components(pipe).items()}
    assert set(dtypes.values()) == {torch.float32}, f"components start as {dtypes}"
    pipe.to(torch.float64)
    pipe.to(torch.float32)
    assert_close(spec.run(pipe), images, 0.0, "output after a float64 round trip")
    pipe.to(dtype=torch.float16)
    dtypes = {name: m.dtype for name, m in module_components(pipe).items()}
    assert set(dtypes.values()) == {torch.float16}, f"after to(float16): {dtypes}"


def check_half_precision_inference(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_half_precision_inference_no_nan` (accelerator-only in
    diffusers; float16 runs on this CPU): a float16 pipeline returns finite images close to the
    float32 ones."""
    pipe = spec.build()
    reference = spec.run(pipe)
    pipe.to(torch.float16)
    half = spec.run(pipe)
    assert half.dtype == torch.float16, f"float16 pipeline returned {half.dtype}"
    assert torch.isfinite(half).all(), "float16 inference produced NaN/inf"
    assert_close(half, reference, 0.1, "float16 vs float32 images")


# ----------------------------------------------------------------------------------------------
# Stable Diffusion functions (SDFunctionTesterMixin and the SD fast tests)
# ----------------------------------------------------------------------------------------------


def check_attention_slicing(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_attention_slicing_forward_pass` with Stable Diffusion's
    tolerance (3e-3): slice sizes 1 and 2 do not change the images."""
    pipe = spec.build()
    plain = spec.run(pipe)
    for slice_size in (1, 2):
        pipe.enable_attention_slicing(slice_size=slice_size)
        assert_close(spec.run(pipe), plain, 3e-3, f"attention slicing {slice_size}")


def check_vae_slicing(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `SDFunctionTesterMixin.test_vae_slicing`: decoding a batch of 4 one image at a time
    gives the same images (1e-2)."""
    pipe = spec.build()
    prompts = 4 * [spec.inputs()["prompt"]]
    whole = spec.run(pipe, prompt=prompts)
    pipe.vae.enable_slicing()
    sliced = spec.run(pipe, prompt=prompts, return_dict=False)
    assert_close(sliced, whole, 1e-2, "sliced VAE decode")


def check_vae_tiling(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `SDFunctionTesterMixin.test_vae_tiling`: tiled decoding stays within diffusers'
    tolerance (0.5) and decodes latents of awkward sizes (larger than a tile, odd)."""
    pipe = spec.build()
    plain = spec.run(pipe)
    pipe.vae.enable_tiling()
    assert_close(spec.run(pipe), plain, 0.5, "tiled VAE decode")
    with torch.no_grad():
        for shape in ((1, 4, 19, 13), (1, 4, 11, 17)):
            image = pipe.vae.decode(torch.zeros(shape), return_dict=False)[0]
            assert tuple(image.shape[2:]) == (shape[2] * pipe.vae_scale_factor, shape[3] * pipe.vae_scale_factor)


def check_freeu(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `SDFunctionTesterMixin.test_freeu` (and the SD tests' freeu enabled/disabled):
    FreeU changes the images, disabling it clears its factors and restores them (1e-2)."""
    pipe = spec.build()
    plain = spec.run(pipe)
    pipe.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    assert max_abs_diff(spec.run(pipe), plain) > 1e-3, "FreeU had no effect"
    pipe.disable_freeu()
    for block in pipe.unet.up_blocks:
        for key in ("s1", "s2", "b1", "b2"):
            assert getattr(block, key, None) is None, f"disable_freeu left {key} set"
    assert_close(spec.run(pipe), plain, 1e-2, "after disable_freeu")


def check_fused_qkv_projections(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `SDFunctionTesterMixin.test_fused_qkv_projections` (atol 1e-2): fusing and unfusing
    the attention projections leaves the images unchanged."""
    pipe = spec.build()
    plain = spec.run(pipe)
    pipe.fuse_qkv_projections()
    for name, component in module_components(pipe).items():
        if getattr(component, "original_attn_processors", None) is not None:
            kinds = {type(p).__name__ for p in component.attn_processors.values()}
            assert all("Fused" in k for k in kinds), f"{name} kept unfused processors {kinds}"
    assert_close(spec.run(pipe), plain, 1e-2, "fused QKV")
    pipe.unfuse_qkv_projections()
    assert_close(spec.run(pipe), plain, 1e-2, "unfused QKV")


def check_custom_timesteps(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `test_stable_diffusion_ays` of the Stable Diffusion tests: the "Align Your Steps"
    schedule given as `timesteps` or as `sigmas` gives the same images (1e-3), different from the
    scheduler's own 10 steps."""
    from diffusers import EulerDiscreteScheduler
    from diffusers.schedulers import AysSchedules

    pipe = spec.build()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    own = spec.run(pipe, num_inference_steps=10)
    by_timesteps = spec.run(pipe, num_inference_steps=None, timesteps=AysSchedules["StableDiffusionTimesteps"])
    by_sigmas = spec.run(pipe, num_inference_steps=None, sigmas=AysSchedules["StableDiffusionSigmas"])
    assert_close(by_sigmas, by_timesteps, 1e-3, "AYS sigmas vs AYS timesteps")
    assert max_abs_diff(own, by_timesteps) > 1e-3, "custom timesteps were ignored"
    assert max_abs_diff(own, by_sigmas) > 1e-3, "custom sigmas were ignored"


def check_karras_schedulers(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineKarrasSchedulerTesterMixin.test_karras_schedulers_shape`: every Karras
    scheduler gives images of the same shape (KDPM2 with 5 steps, the others with 2)."""
    import diffusers
    from diffusers.schedulers import KarrasDiffusionSchedulers

    pipe = spec.build()
    pipe.scheduler.register_to_config(skip_prk_steps=True)  # PNDM without warm-up
    shapes, unavailable = {}, []
    for scheduler in KarrasDiffusionSchedulers:
        cls = getattr(diffusers, scheduler.name)
        try:
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
        except ImportError:  # a diffusers placeholder: its backend (e.g. torchsde) is not installed
            unavailable.append(scheduler.name)
            continue
        steps = 5 if "KDPM2" in scheduler.name else 2
        shapes[scheduler.name] = tuple(spec.run(pipe, num_inference_steps=steps).shape)
    assert len(shapes) >= len(KarrasDiffusionSchedulers) - 2, f"too many schedulers unavailable: {unavailable}"
    assert len(set(shapes.values())) == 1, f"output shapes differ across schedulers: {shapes}"


def _vae_variants(block_out_channels: Iterable[int], norm_num_groups: int):
    """Small configs of the four diffusers VAE classes diffusers' `test_multi_vae` swaps in."""
    from diffusers import AsymmetricAutoencoderKL, AutoencoderKL, AutoencoderTiny, ConsistencyDecoderVAE

    blocks = list(block_out_channels)
    n = len(blocks)
    tiny = [32] * n
    return [
        (
            AutoencoderKL,
            dict(
                block_out_channels=blocks,
                down_block_types=["DownEncoderBlock2D"] * n,
                up_block_types=["UpDecoderBlock2D"] * n,
                latent_channels=4,
                norm_num_groups=norm_num_groups,
            ),
        ),
        (
            AsymmetricAutoencoderKL,
            dict(
                down_block_types=["DownEncoderBlock2D"] * n,
                down_block_out_channels=blocks,
                layers_per_down_block=1,
                up_block_types=["UpDecoderBlock2D"] * n,
                up_block_out_channels=blocks,
                layers_per_up_block=1,
                latent_channels=4,
                norm_num_groups=norm_num_groups,
                sample_size=32,
                scaling_factor=0.18215,
            ),
        ),
        (
            ConsistencyDecoderVAE,
            dict(
                encoder_block_out_channels=blocks,
                encoder_out_channels=4,
                encoder_down_block_types=["DownEncoderBlock2D"] * n,
                encoder_norm_num_groups=norm_num_groups,
                decoder_add_attention=False,
                decoder_block_out_channels=blocks,
                decoder_down_block_types=["ResnetDownsampleBlock2D"] * n,
                decoder_up_block_types=["ResnetUpsampleBlock2D"] * n,
                decoder_in_channels=7,
                decoder_out_channels=6,
                decoder_layers_per_block=1,
                decoder_norm_num_groups=norm_num_groups,
                decoder_num_train_timesteps=1024,
                decoder_resnet_time_scale_shift="scale_shift",
                decoder_time_embedding_type="learned",
                scaling_factor=1,
                latent_channels=4,
            ),
        ),
        (
            AutoencoderTiny,
            dict(
                encoder_block_out_channels=tiny,
                decoder_block_out_channels=tiny,
                num_encoder_blocks=[1] * n,
                num_decoder_blocks=[1] * n,
            ),
        ),
    ]


def check_multi_vae(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineLatentTesterMixin.test_multi_vae`: the pipeline runs with each diffusers VAE
    class (KL, asymmetric KL, consistency decoder, tiny) and returns images of the same shape."""
    components = spec.make_components()
    pipe = spec.build(dict(components))
    shape = tuple(spec.run(pipe, output_type="np").shape)
    vae = components["vae"]
    for cls, config in _vae_variants(vae.config.block_out_channels, vae.config.norm_num_groups):
        torch.manual_seed(0)
        swapped = spec.build({**components, "vae": cls(**config).eval()})
        got = tuple(spec.run(swapped, output_type="np").shape)
        assert got == shape, f"with a {cls.__name__}: output shape {got}, expected {shape}"


def check_encode_prompt_in_isolation(spec: PipelineSpec, tmp_path: Path) -> None:
    """Mirrors `PipelineTesterMixin.test_encode_prompt_works_in_isolation` (atol 1e-4): a pipeline
    holding only the text encoder computes embeddings with `encode_prompt`, and a pipeline without
    text encoder given those embeddings reproduces the full pipeline's images."""
    components = spec.make_components()
    text_only = {k: (v if "text" in k or "tokenizer" in k else None) for k, v in components.items()}
    encoder_pipe = spec.build(text_only)
    inputs = spec.inputs()
    guidance = inputs.get("guidance_scale", 1.0)
    with torch.no_grad():
        prompt_embeds, negative_embeds = encoder_pipe.encode_prompt(
            inputs.pop("prompt"),
            device=torch.device("cpu"),
            num_images_per_prompt=1,
            do_classifier_free_guidance=guidance > 1.0,
            negative_prompt=inputs.pop("negative_prompt", None),
        )
    no_text = {k: (None if "text" in k or "tokenizer" in k else v) for k, v in components.items()}
    denoise_pipe = spec.build(no_text)
    torch.manual_seed(0)
    from_embeds = denoise_pipe(**inputs, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds)[0]
    full = spec.run(spec.build(components))
    assert_close(from_embeds, full, 1e-4, "encode_prompt in isolation vs the full pipeline")


#: name → check; each check takes `(spec, tmp_path)`.
PIPELINE_CHECKS: Dict[str, Callable[[PipelineSpec, Path], None]] = {
    "call_signature": check_call_signature,
    "call_docstring": check_call_docstring,
    "components_round_trip": check_components_round_trip,
    "stable_diffusion_components": check_stable_diffusion_components,
    "output_shape": check_output_shape,
    "dict_tuple_outputs_equivalent": check_dict_tuple_outputs_equivalent,
    "output_types_equivalent": check_output_types_equivalent,
    "latent_output_decodes": check_latent_output_decodes,
    "guidance_changes_output": check_guidance_changes_output,
    "negative_prompt": check_negative_prompt,
    "prompt_embeds": check_prompt_embeds,
    "height_width": check_height_width,
    "inference_batch_consistent": check_inference_batch_consistent,
    "inference_batch_single_identical": check_inference_batch_single_identical,
    "num_images_per_prompt": check_num_images_per_prompt,
    "callback_on_step_end": check_callback_on_step_end,
    "callback_cfg": check_callback_cfg,
    "interrupt": check_interrupt,
    "progress_bar": check_progress_bar,
    "save_load_local": check_save_load_local,
    "save_load_optional_components": check_save_load_optional_components,
    "save_load_dtype": check_save_load_dtype,
    "variants": check_variants,
    "from_pipe": check_from_pipe,
    "to_dtype": check_to_dtype,
    "half_precision_inference": check_half_precision_inference,
    "attention_slicing": check_attention_slicing,
    "vae_slicing": check_vae_slicing,
    "vae_tiling": check_vae_tiling,
    "freeu": check_freeu,
    "fused_qkv_projections": check_fused_qkv_projections,
    "custom_timesteps": check_custom_timesteps,
    "karras_schedulers": check_karras_schedulers,
    "multi_vae": check_multi_vae,
    "encode_prompt_in_isolation": check_encode_prompt_in_isolation,
}
