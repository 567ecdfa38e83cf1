"""diffusers' tester-mixin checks (our versions, in tests/checks) on our pipeline and models.

The pipeline checks run on plain `StableDiffusionPipeline` and on `DictionaryLatentPipeline` built
from the same tiny offline components: the dictionary pipeline must pass everything Stable Diffusion
passes. `CodePriorPipeline` (unconditional, no denoising loop) runs the checks that are not about
prompts, U-Nets or schedulers (`CODE_PRIOR_PIPELINE_CHECKS`). The model checks run on every
bottleneck, on `SparseAutoencoder` (one per bottleneck) and on `CodePrior` (sets and slots codes).

Known failures are strict xfails attached to the failing parametrisation only (see `KNOWN_FAILURES`),
so a fix shows up as an XPASS that fails the run until the mark is removed.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from checks.model_checks import MODEL_CHECKS, ModelSpec
from checks.pipeline_checks import PIPELINE_CHECKS, PipelineSpec
from diffusers import StableDiffusionPipeline

from sd_sparse import (
    AutoencoderKLWithBottleneck,
    AutoencoderTinyWithBottleneck,
    CodePrior,
    CodePriorPipeline,
    DictionaryBottleneck,
    DictionaryLatentPipeline,
    EntropyCodedScalarQuantizer,
    FiniteScalarQuantizer,
    LISTABottleneck,
    ResidualVectorQuantizer,
    ScalarQuantizer,
    SparseAutoencoder,
    VectorQuantizer,
)
from sd_sparse.autoencoders import stable_diffusion_dictionary
from sd_sparse.testing import tiny_code_prior_components, tiny_stable_diffusion_components

PROMPT = "A painting of a squirrel eating a burger"

# diffusers' schedulers hand torch tensors to NumPy 2, which warns thousands of times per run
pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    threads that wait on each other made this module 5x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------


def pipeline_inputs(seed: int = 0) -> dict:
    return {
        "prompt": PROMPT,
        "generator": torch.Generator("cpu").manual_seed(seed),
        "num_inference_steps": 2,
        "guidance_scale": 6.0,
        "output_type": "pt",
    }


def dictionary_pipeline_components() -> dict:
    """The tiny SD components with a small eval-mode dictionary bottleneck (K = 64, S = 4, 2x2 patches)
    inside a coded VAE, as `pipe.components` holds it (or, before coded VAEs, as a `bottleneck` component)."""
    import sd_sparse

    components = tiny_stable_diffusion_components()
    torch.manual_seed(0)
    bottleneck = stable_diffusion_dictionary(num_atoms=64, sparsity=4, patch_size=2).eval()
    if hasattr(sd_sparse, "with_bottleneck"):
        components["vae"] = sd_sparse.with_bottleneck(components["vae"], bottleneck)
    else:
        components["bottleneck"] = bottleneck
    return components


PIPELINES = {
    "StableDiffusionPipeline": PipelineSpec(
        pipeline_class=StableDiffusionPipeline,
        make_components=tiny_stable_diffusion_components,
        make_inputs=pipeline_inputs,
        init_kwargs={"requires_safety_checker": False},
    ),
    "DictionaryLatentPipeline": PipelineSpec(
        pipeline_class=DictionaryLatentPipeline,
        make_components=dictionary_pipeline_components,
        make_inputs=pipeline_inputs,
        init_kwargs={"requires_safety_checker": False},
    ),
}

#: (pipeline or model id, check name) -> reason, for checks that fail today. Fixed since the suite was
#: written: the hidden `__call__(*args, **kwargs)` signature and its docstring, 136 px images with 2x2
#: patches (the coded VAE pads), `SparseCodes` outputs without `.device` (now `Codes`), and
#: `output_type="latent"` returning coded latents that `vae.decode` coded a second time.
_PRIOR_BITS_IN_FLOAT32 = (
    "CodePrior computes its bits (log-softmax) in float32 whatever the model's dtype: a float16 or float64 prior "
    "returns float32 loss and bits (float64 loses precision there)"
)
KNOWN_FAILURES = {
    **{
        (f"CodePrior-{kind}", check): _PRIOR_BITS_IN_FLOAT32
        for kind in ("sets", "slots")
        for check in ("save_load_dtype", "dtype_round_trip")
    },
    ("AutoencoderTinyWithBottleneck", "gradient_checkpointing"): (
        "diffusers 0.42.1's EncoderTiny skips its [-1, 1] -> [0, 1] input rescaling when gradient checkpointing "
        "is on, so plain AutoencoderTiny fails this check too (see test_autoencoder_tiny_checkpointing_is_diffusers)"
    ),
}


def _params(ids, checks):
    params = []
    for spec_id in ids:
        for name in checks:
            reason = KNOWN_FAILURES.get((spec_id, name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(spec_id, name, marks=marks, id=f"{spec_id}-{name}"))
    return params


@pytest.mark.parametrize("pipeline_id,check", _params(PIPELINES, PIPELINE_CHECKS))
def test_pipeline_check(pipeline_id, check, tmp_path):
    PIPELINE_CHECKS[check](PIPELINES[pipeline_id], tmp_path)


def code_prior_inputs(seed: int = 0) -> dict:
    return {"generator": torch.Generator("cpu").manual_seed(seed), "output_type": "pt"}


#: `CodePriorPipeline` is unconditional and has no denoising loop: the text-to-image parameter sets are
#: empty and it is its own reference for `call_signature` (which then checks for `*args` and defaults).
CODE_PRIOR_PIPELINES = {
    f"CodePriorPipeline-{kind}": PipelineSpec(
        pipeline_class=CodePriorPipeline,
        make_components=lambda kind=kind: tiny_code_prior_components(kind),
        make_inputs=code_prior_inputs,
        reference_class=CodePriorPipeline,
        call_params=frozenset(),
        batch_params=frozenset(),
        always_optional_params=frozenset({"num_images_per_prompt", "generator", "output_type", "return_dict"}),
        output_shape=(3, 64, 64),
    )
    for kind in ("dictionary", "vq")
}
#: the checks that apply to it; the others need prompts (guidance, negative prompts, prompt embeddings,
#: batches of prompts, `encode_prompt`), a U-Net or scheduler (height_width, callbacks, interrupt, the progress
#: bar's steps, freeu, attention slicing, fused QKV, custom timesteps, Karras schedulers, from_pipe with Stable
#: Diffusion) or swap the VAE (multi_vae: the prior models one bottleneck); tests/pipelines/
#: test_code_prior_pipeline.py covers sizes, batches, the progress bar and slicing in its own terms.
CODE_PRIOR_PIPELINE_CHECKS = (
    "call_signature",
    "call_docstring",
    "components_round_trip",
    "output_shape",
    "dict_tuple_outputs_equivalent",
    "output_types_equivalent",
    "latent_output_decodes",
    "save_load_local",
    "save_load_dtype",
    "variants",
    "to_dtype",
    "half_precision_inference",
)


@pytest.mark.parametrize("pipeline_id,check", _params(CODE_PRIOR_PIPELINES, CODE_PRIOR_PIPELINE_CHECKS))
def test_code_prior_pipeline_check(pipeline_id, check, tmp_path):
    PIPELINE_CHECKS[check](CODE_PRIOR_PIPELINES[pipeline_id], tmp_path)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def bottleneck_kwargs(cls, num_atoms: int, channels: int, **kwargs) -> dict:
    """Constructor arguments that survive the config-key rename (num_embeddings → num_atoms,
    embedding_dim → latent_channels)."""
    names = inspect.signature(cls.__init__).parameters
    atoms_key = "num_atoms" if "num_atoms" in names else "num_embeddings"
    channels_key = "latent_channels" if "latent_channels" in names else "embedding_dim"
    return {atoms_key: num_atoms, channels_key: channels, **kwargs}


def latent_inputs() -> dict:
    return {"latents": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))}


def image_inputs() -> dict:
    return {"sample": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1}


def _sparse_autoencoder(bottleneck_type: str, **extra) -> ModelSpec:
    config = dict(
        hidden_channels=32,
        residual_channels=8,
        num_residual_blocks=1,
        latent_channels=4,
        bottleneck_type=bottleneck_type,
        num_atoms=32,
        sparsity=3,
        **extra,
    )
    return ModelSpec(SparseAutoencoder, lambda: dict(config), image_inputs, output_shape=(2, 3, 32, 32))


def _coded_vae_config(vae_class_name: str, bottleneck_class: type, **bottleneck) -> dict:
    """Init arguments of a tiny coded VAE: the VAE's config plus the bottleneck's class and config."""
    if vae_class_name == "AutoencoderKLWithBottleneck":
        vae = dict(
            block_out_channels=(32, 32),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=32,
            latent_channels=4,
            scaling_factor=0.18215,
        )
    else:
        vae = dict(
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            num_encoder_blocks=(1, 1),
            num_decoder_blocks=(1, 1),
            latent_channels=4,
        )
    config = bottleneck_kwargs(bottleneck_class, 16, 4, **bottleneck)
    return {**vae, "bottleneck_class": bottleneck_class.__name__, "bottleneck_config": config}


def _prior_bottleneck(kind: str):
    """The bottleneck a `CodePrior` spec models (seeded: every call builds the same one)."""
    torch.manual_seed(0)
    if kind == "sets":  # sparse codes with quantized coefficients: (atom, level) pairs, then END
        return DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=3, patch_size=2, value_bits=4).eval()
    return ResidualVectorQuantizer(num_atoms=16, latent_channels=4, num_stages=2, use_ema=False).eval()  # slots


def _code_prior_spec(kind: str) -> ModelSpec:
    """`CodePrior` over the codes of a tiny bottleneck; its forward input is `codes` (`sd_sparse.Codes`), the
    bottleneck's codes of seeded latents, and its first output the mean bits per latent position (a scalar)."""

    def init_kwargs() -> dict:
        prior = CodePrior.from_bottleneck(_prior_bottleneck(kind), embedding_dim=8, hidden_dim=16, context_size=3)
        return {k: v for k, v in prior.config.items() if not k.startswith("_")}

    def inputs() -> dict:
        return {"codes": _prior_bottleneck(kind).encode(latent_inputs()["latents"])}

    return ModelSpec(CodePrior, init_kwargs, inputs, output_shape=())


MODELS = {
    "CodePrior-sets": _code_prior_spec("sets"),
    "CodePrior-slots": _code_prior_spec("slots"),
    "AutoencoderKLWithBottleneck": ModelSpec(
        AutoencoderKLWithBottleneck,
        lambda: _coded_vae_config("AutoencoderKLWithBottleneck", DictionaryBottleneck, sparsity=2, patch_size=2),
        image_inputs,
        output_shape=(2, 3, 32, 32),
    ),
    "AutoencoderKLWithBottleneck-vq": ModelSpec(
        AutoencoderKLWithBottleneck,
        lambda: _coded_vae_config("AutoencoderKLWithBottleneck", VectorQuantizer, use_ema=False),
        image_inputs,
        output_shape=(2, 3, 32, 32),
    ),
    "AutoencoderTinyWithBottleneck": ModelSpec(
        AutoencoderTinyWithBottleneck,
        lambda: _coded_vae_config("AutoencoderTinyWithBottleneck", DictionaryBottleneck, sparsity=2),
        image_inputs,
        output_shape=(2, 3, 32, 32),
    ),
    "VectorQuantizer": ModelSpec(
        VectorQuantizer,
        lambda: bottleneck_kwargs(VectorQuantizer, 32, 4, use_ema=False),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "VectorQuantizer-ema": ModelSpec(
        VectorQuantizer, lambda: bottleneck_kwargs(VectorQuantizer, 32, 4), latent_inputs, output_shape=(2, 4, 8, 8)
    ),
    "DictionaryBottleneck": ModelSpec(
        DictionaryBottleneck,
        lambda: bottleneck_kwargs(DictionaryBottleneck, 32, 4, sparsity=3, patch_size=2),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "LISTABottleneck": ModelSpec(
        LISTABottleneck,
        lambda: bottleneck_kwargs(LISTABottleneck, 32, 4, num_blocks=2, patch_size=2),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "DictionaryBottleneck-value_bits": ModelSpec(
        DictionaryBottleneck,
        lambda: bottleneck_kwargs(DictionaryBottleneck, 32, 4, sparsity=3, patch_size=2, value_bits=5),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "DictionaryBottleneck-residual": ModelSpec(
        DictionaryBottleneck,
        lambda: bottleneck_kwargs(
            DictionaryBottleneck, 32, 4, sparsity=3, patch_size=2, value_bits=5, residual_step=0.2
        ),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "LISTABottleneck-value_bits": ModelSpec(
        LISTABottleneck,
        lambda: bottleneck_kwargs(LISTABottleneck, 32, 4, num_blocks=2, patch_size=2, sparsity=3, value_bits=4),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "ResidualVectorQuantizer": ModelSpec(
        ResidualVectorQuantizer,
        lambda: bottleneck_kwargs(ResidualVectorQuantizer, 32, 4, num_stages=2, use_ema=False),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "ResidualVectorQuantizer-ema": ModelSpec(
        ResidualVectorQuantizer,
        lambda: bottleneck_kwargs(ResidualVectorQuantizer, 32, 4, num_stages=2, patch_size=2),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "FiniteScalarQuantizer": ModelSpec(
        FiniteScalarQuantizer,
        lambda: dict(levels=[8, 5, 5, 5], latent_channels=4),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "EntropyCodedScalarQuantizer": ModelSpec(
        EntropyCodedScalarQuantizer,
        lambda: dict(latent_channels=4, step=0.3, max_level=15, patch_size=2),
        latent_inputs,
        output_shape=(2, 4, 8, 8),
    ),
    "ScalarQuantizer": ModelSpec(
        ScalarQuantizer, lambda: dict(latent_channels=4, bits=3, patch_size=2), latent_inputs, output_shape=(2, 4, 8, 8)
    ),
    "AutoencoderKLWithBottleneck-rvq": ModelSpec(
        AutoencoderKLWithBottleneck,
        lambda: _coded_vae_config("AutoencoderKLWithBottleneck", ResidualVectorQuantizer, num_stages=2, use_ema=False),
        image_inputs,
        output_shape=(2, 3, 32, 32),
    ),
    "SparseAutoencoder-dictionary": _sparse_autoencoder("dictionary"),
    "SparseAutoencoder-vq": _sparse_autoencoder("vq"),
    "SparseAutoencoder-lista": _sparse_autoencoder("lista", num_lista_blocks=2, latent_attention=True),
}


@pytest.mark.parametrize("model_id,check", _params(MODELS, MODEL_CHECKS))
def test_model_check(model_id, check, tmp_path):
    MODEL_CHECKS[check](MODELS[model_id], tmp_path)


def test_checks_catch_a_broken_pipeline(tmp_path):
    """The checks can fail: a pipeline whose `__call__` hides arguments and ignores `return_dict`
    is caught by the signature and dict/tuple checks."""
    from checks.pipeline_checks import check_call_signature, check_dict_tuple_outputs_equivalent

    class Hiding(StableDiffusionPipeline):
        def __call__(self, *args, **kwargs):
            out = super().__call__(*args, **kwargs)
            if kwargs.get("return_dict", True) is False:
                return (out[0] * 0,)
            return out

    spec = PipelineSpec(Hiding, tiny_stable_diffusion_components, pipeline_inputs, {"requires_safety_checker": False})
    with pytest.raises(AssertionError, match="hides positional arguments"):
        check_call_signature(spec, tmp_path)
    with pytest.raises(AssertionError, match="return_dict=False vs True"):
        check_dict_tuple_outputs_equivalent(spec, tmp_path)


def test_checks_catch_a_broken_model(tmp_path):
    """The checks can fail: a model whose tuple output drops an entry, or whose forward is random."""
    from checks.model_checks import check_determinism, check_output_leaves_device_aware, check_outputs_equivalence

    @dataclasses.dataclass
    class DeviceLessCodes:  # what the bottlenecks once returned: codes without `.device`
        indices: torch.Tensor
        values: torch.Tensor

    class Dropping(DictionaryBottleneck):
        def forward(self, latents, return_dict=True):
            out = super().forward(latents, return_dict)
            return out if return_dict else out[:-1]

    class Noisy(DictionaryBottleneck):
        def forward(self, latents, return_dict=True):
            return super().forward(latents + 1e-2 * torch.randn_like(latents), return_dict)

    class LegacyCodes(DictionaryBottleneck):
        """Returns codes without `.device`, as the bottlenecks once did (`SparseCodes` before it had one)."""

        def forward(self, latents, return_dict=True):
            out = super().forward(latents, return_dict=True)
            out.codes = DeviceLessCodes(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
            return out if return_dict else out.to_tuple()

    kwargs = lambda cls: bottleneck_kwargs(cls, 32, 4, sparsity=3, patch_size=2)  # noqa: E731
    with pytest.raises(AssertionError, match="tuple entries"):
        check_outputs_equivalence(ModelSpec(Dropping, lambda: kwargs(Dropping), latent_inputs), tmp_path)
    with pytest.raises(AssertionError, match="second forward"):
        check_determinism(ModelSpec(Noisy, lambda: kwargs(Noisy), latent_inputs), tmp_path)
    legacy = ModelSpec(LegacyCodes, lambda: kwargs(LegacyCodes), latent_inputs)
    with pytest.raises(AssertionError, match=r"DeviceLessCodes\) has no `.device`"):
        check_output_leaves_device_aware(legacy, tmp_path)
    check_outputs_equivalence(legacy, tmp_path)  # codes objects are compared field by field


def test_autoencoder_tiny_checkpointing_is_diffusers(tmp_path):
    """The AutoencoderTiny checkpointing failure above is diffusers' own: the plain model fails alike."""
    from checks.model_checks import check_gradient_checkpointing
    from diffusers import AutoencoderTiny

    config = _coded_vae_config("AutoencoderTinyWithBottleneck", DictionaryBottleneck, sparsity=2)
    plain = {k: v for k, v in config.items() if not k.startswith("bottleneck_")}
    spec = ModelSpec(AutoencoderTiny, lambda: dict(plain), image_inputs, output_shape=(2, 3, 32, 32))
    with pytest.raises(AssertionError, match="losses differ"):
        check_gradient_checkpointing(spec, tmp_path)
