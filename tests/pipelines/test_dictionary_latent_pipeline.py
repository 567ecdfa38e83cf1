"""`DictionaryLatentPipeline`: Stable Diffusion with a coded VAE, its extras and every loading path."""

import copy
import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)

from sd_sparse import (
    AutoencoderKLWithBottleneck,
    DictionaryBottleneck,
    DictionaryLatentPipeline,
    VectorQuantizer,
    with_bottleneck,
)
from sd_sparse.autoencoders import stable_diffusion_dictionary
from sd_sparse.metrics import latent_psnr
from sd_sparse.testing import tiny_stable_diffusion_components, tiny_stable_diffusion_path

CUSTOM_PIPELINE = str(Path(__file__).resolve().parents[2] / "pipelines" / "dictionary_latent")
CALL = dict(num_inference_steps=2, height=32, width=32, output_type="np")  # 4x4 latents

pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def sd_path():
    return tiny_stable_diffusion_path()


@pytest.fixture(scope="module")
def bottleneck():
    torch.manual_seed(0)
    return stable_diffusion_dictionary(num_atoms=64, sparsity=4, patch_size=2).eval()


@pytest.fixture(scope="module")
def pipe(sd_path, bottleneck):
    pipe = DictionaryLatentPipeline.from_pretrained(sd_path, bottleneck=bottleneck)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def plain(sd_path):
    plain = StableDiffusionPipeline.from_pretrained(sd_path)
    plain.set_progress_bar_config(disable=True)
    return plain


@pytest.fixture(scope="module")
def reference_output(pipe):
    return pipe("blue sunflower", generator=generator(), return_reference=True, return_codes=True, **CALL)


def test_the_bottleneck_lives_in_the_vae(pipe, bottleneck):
    assert type(pipe.vae) is AutoencoderKLWithBottleneck
    assert pipe.bottleneck is pipe.vae.bottleneck is bottleneck
    assert "bottleneck" not in pipe.config and "bottleneck" not in pipe.components
    assert pipe.config["vae"] == ("sd_sparse", "AutoencoderKLWithBottleneck")


def test_call_declares_every_stable_diffusion_argument():
    ours = inspect.signature(DictionaryLatentPipeline.__call__).parameters
    theirs = inspect.signature(StableDiffusionPipeline.__call__).parameters
    kinds = {p.kind for p in ours.values()}
    assert inspect.Parameter.VAR_POSITIONAL not in kinds and inspect.Parameter.VAR_KEYWORD not in kinds
    sd = [(n, p.default) for n, p in theirs.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert [(n, p.default) for n, p in ours.items()][: len(sd)] == sd  # same names, defaults and order
    assert list(ours)[len(sd) :] == ["return_reference", "return_codes"]
    doc = DictionaryLatentPipeline.__call__.__doc__
    for name in list(ours)[1:]:
        assert f"{name} (" in doc, f"`{name}` is not documented"


def test_pipeline_output_has_reference_codes_and_psnr(plain, reference_output):
    out = reference_output
    assert out.images.shape == (1, 32, 32, 3) and out.reference_images.shape == (1, 32, 32, 3)
    assert out.latent_psnr.shape == (1,) and torch.isfinite(out.latent_psnr).all()
    assert out.bits_per_position == 22.0
    assert out.codes.indices.shape == (4, 4) and out.codes.latent_shape == (1, 4, 4, 4)  # 2x2 patches, S = 4
    assert np.abs(out.images - out.reference_images).max() > 1e-2  # the bottleneck did something
    # the reference decode is exactly what plain Stable Diffusion generates
    expected = plain("blue sunflower", generator=generator(), **CALL).images
    np.testing.assert_allclose(out.reference_images, expected, atol=1e-6)


def test_images_are_stable_diffusion_with_the_coded_vae(pipe, reference_output):
    """The pipeline's images are what `StableDiffusionPipeline(vae=coded_vae)` makes."""
    generic = StableDiffusionPipeline(**pipe.components)
    generic.set_progress_bar_config(disable=True)
    images = generic("blue sunflower", generator=generator(), **CALL).images
    np.testing.assert_allclose(images, reference_output.images, atol=1e-5)


def test_latent_output_decodes_to_the_images_as_in_diffusers(pipe, bottleneck, reference_output):
    """`output_type="latent"` returns the generated latents; the coded VAE codes them when decoding, so
    diffusers' recipe `vae.decode(latents / scaling_factor)` gives the pipeline's images (coding once)."""
    out = pipe("blue sunflower", generator=generator(), return_codes=True, **{**CALL, "output_type": "latent"})
    assert out.images.shape == (1, 4, 4, 4)
    with torch.no_grad():
        decoded = pipe.vae.decode(out.images / pipe.vae.config.scaling_factor, return_dict=False)[0]
        coded = bottleneck.decode(out.codes)
    np.testing.assert_allclose(pipe.image_processor.postprocess(decoded, "np"), reference_output.images, atol=1e-5)
    torch.testing.assert_close(coded, bottleneck(out.images).latents)  # the codes give the coded latents
    torch.testing.assert_close(out.latent_psnr, latent_psnr(out.images, coded))
    torch.testing.assert_close(out.latent_psnr, reference_output.latent_psnr)


def test_decoding_uses_the_vae_shift_factor(bottleneck):
    """Latents are decoded as `latents / scaling_factor + shift_factor` (the VAE's own config)."""
    components = tiny_stable_diffusion_components()
    vae = components["vae"]
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    shifted = AutoencoderKL(**{**config, "shift_factor": 0.25})
    shifted.load_state_dict(vae.state_dict())
    assert shifted.config.shift_factor == 0.25
    pipe = DictionaryLatentPipeline(
        **{**components, "vae": with_bottleneck(shifted.eval(), bottleneck)}, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    latent = pipe("blue sunflower", generator=generator(), **{**CALL, "output_type": "latent"}).images
    out = pipe("blue sunflower", generator=generator(), return_reference=True, **{**CALL, "output_type": "pt"})
    with torch.no_grad():
        images = pipe.vae.decode(pipe.bottleneck(latent).latents / 0.18215 + 0.25, apply_bottleneck=False).sample
        reference = pipe.vae.decode(latent / 0.18215 + 0.25, apply_bottleneck=False).sample
    torch.testing.assert_close(out.reference_images, (reference / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.images, (images / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)


def test_every_loading_path_gives_the_same_images(pipe, sd_path, bottleneck, plain, reference_output, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.load(open(tmp_path / "model_index.json"))
    assert index["_class_name"] == "DictionaryLatentPipeline"
    assert index["vae"] == ["sd_sparse", "AutoencoderKLWithBottleneck"] and "bottleneck" not in index
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    pipelines = {
        "saved": DictionaryLatentPipeline.from_pretrained(tmp_path),
        "diffusion_pipeline": DiffusionPipeline.from_pretrained(tmp_path),
        "from_pipe": DictionaryLatentPipeline.from_pipe(plain, bottleneck=bottleneck),
        "custom_pipeline": DiffusionPipeline.from_pretrained(
            sd_path, custom_pipeline=CUSTOM_PIPELINE, bottleneck=bottleneck, trust_remote_code=True
        ),
    }
    for name, loaded in pipelines.items():
        assert isinstance(loaded, DictionaryLatentPipeline), name
        assert type(loaded.vae) is AutoencoderKLWithBottleneck, name
        loaded.set_progress_bar_config(disable=True)
        images = loaded("blue sunflower", generator=generator(), **CALL).images
        np.testing.assert_array_equal(images, reference_output.images, err_msg=name)
    assert type(plain.vae) is AutoencoderKL  # from_pipe left the plain pipeline alone


def test_folders_with_a_separate_bottleneck_component_still_load(pipe, sd_path, bottleneck, reference_output, tmp_path):
    """Folders saved before the bottleneck moved into the VAE: `bottleneck/` beside a plain `vae/`."""
    legacy = tmp_path / "legacy"
    shutil.copytree(sd_path, legacy)
    bottleneck.save_pretrained(legacy / "bottleneck")
    index = json.load(open(legacy / "model_index.json"))
    index.update(_class_name="DictionaryLatentPipeline", bottleneck=["sd_sparse", "DictionaryBottleneck"])
    (legacy / "model_index.json").write_text(json.dumps(index))

    loaded = DictionaryLatentPipeline.from_pretrained(legacy)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.vae) is AutoencoderKLWithBottleneck and type(loaded.bottleneck) is DictionaryBottleneck
    np.testing.assert_array_equal(
        loaded("blue sunflower", generator=generator(), **CALL).images, reference_output.images
    )
    with pytest.raises(ValueError, match=r"separate `bottleneck/` component.*DictionaryLatentPipeline.from_pretrained"):
        DiffusionPipeline.from_pretrained(legacy)
    # saving it again writes the new layout, which every loader reads
    loaded.save_pretrained(tmp_path / "updated")
    assert type(DiffusionPipeline.from_pretrained(tmp_path / "updated").vae) is AutoencoderKLWithBottleneck


def test_switching_pipelines_keeps_the_coded_vae(pipe, bottleneck):
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    inpaint = StableDiffusionInpaintPipeline.from_pipe(pipe)
    text2img = StableDiffusionPipeline.from_pipe(pipe)
    for switched in (img2img, inpaint, text2img, StableDiffusionImg2ImgPipeline(**pipe.components)):
        assert switched.vae is pipe.vae and switched.vae.bottleneck is bottleneck
    back = DictionaryLatentPipeline.from_pipe(img2img)
    assert back.bottleneck is bottleneck
    # passing a VAE explicitly still wins, as in diffusers
    plain_vae = pipe.vae.without_bottleneck()
    assert StableDiffusionImg2ImgPipeline.from_pipe(pipe, vae=plain_vae).vae is plain_vae
    # and a plain pipeline switches as before
    plain = StableDiffusionPipeline(**{**pipe.components, "vae": plain_vae})
    assert type(StableDiffusionImg2ImgPipeline.from_pipe(plain).vae) is AutoencoderKL

    img2img.set_progress_bar_config(disable=True)
    init = torch.rand(1, 3, 32, 32, generator=generator(3))
    seen = []
    handle = pipe.vae.bottleneck.register_forward_hook(lambda *args: seen.append(1))
    try:
        img2img("blue sunflower", image=init, generator=generator(), **CALL)
    finally:
        handle.remove()
    assert seen == [1]


def test_setting_the_bottleneck_rewraps_the_vae(sd_path, bottleneck):
    pipe = DictionaryLatentPipeline.from_pretrained(sd_path)
    assert pipe.bottleneck is None and type(pipe.vae) is AutoencoderKL
    pipe.bottleneck = bottleneck
    assert type(pipe.vae) is AutoencoderKLWithBottleneck and pipe.bottleneck is bottleneck
    assert pipe.config["vae"] == ("sd_sparse", "AutoencoderKLWithBottleneck")
    pipe.bottleneck = None
    assert type(pipe.vae) is AutoencoderKL and pipe.config["vae"] == ("diffusers", "AutoencoderKL")


def test_batched_and_single_prompts_agree(pipe):
    prompts = ["blue sunflower", "purple californian poppy"]
    batched = pipe(prompts, generator=[generator(1), generator(2)], **CALL)
    singles = [pipe(p, generator=generator(s), **CALL).images[0] for p, s in zip(prompts, (1, 2))]
    np.testing.assert_allclose(batched.images, np.stack(singles), atol=1e-5)
    assert batched.latent_psnr.shape == (2,)


def test_tuple_and_dict_outputs_agree(pipe, reference_output):
    images, nsfw = pipe("blue sunflower", generator=generator(), return_dict=False, **CALL)
    np.testing.assert_array_equal(images, reference_output.images)
    images, nsfw, reference = pipe(
        "blue sunflower", generator=generator(), return_dict=False, return_reference=True, **CALL
    )
    np.testing.assert_array_equal(reference, reference_output.reference_images)


def test_stable_diffusion_arguments_keep_working(pipe):
    seen = []

    def on_step_end(p, step, timestep, tensors):
        seen.append(tensors["latents"].shape)
        return tensors

    out = pipe(
        "blue sunflower",
        negative_prompt="blurry",
        guidance_scale=3.0,
        num_images_per_prompt=2,
        generator=generator(),
        callback_on_step_end=on_step_end,
        **CALL,
    )
    assert out.images.shape == (2, 32, 32, 3) and out.latent_psnr.shape == (2,)
    assert seen == [torch.Size([2, 4, 4, 4])] * 2
    pil = pipe("blue sunflower", generator=generator(), **{**CALL, "output_type": "pil"}).images
    assert pil[0].size == (32, 32)
    # a size whose latents the 2x2 patches do not tile (40 px: 5x5 latents) is padded for coding
    odd = pipe("blue sunflower", generator=generator(), **{**CALL, "height": 40, "width": 40})
    assert odd.images.shape == (1, 40, 40, 3) and torch.isfinite(odd.latent_psnr).all()


def test_without_bottleneck_it_is_stable_diffusion(sd_path, plain):
    expected = plain("blue sunflower", generator=generator(), **CALL).images
    ours = DictionaryLatentPipeline.from_pretrained(sd_path)
    ours.set_progress_bar_config(disable=True)
    out = ours("blue sunflower", generator=generator(), **CALL)
    np.testing.assert_array_equal(out.images, expected)
    assert out.latent_psnr is None and out.codes is None


def test_vq_bottleneck_in_the_same_pipeline(pipe):
    vq = VectorQuantizer(64, 4, init_from_data=False).eval()
    switched = DictionaryLatentPipeline.from_pipe(pipe, bottleneck=vq)
    switched.set_progress_bar_config(disable=True)
    out = switched("blue sunflower", generator=generator(), return_codes=True, **CALL)
    assert switched.bottleneck is vq and pipe.bottleneck is not vq  # the source pipeline keeps its own
    assert out.codes.indices.shape[0] == 16 and out.bits_per_position == 6  # 4x4 positions


def test_dtype_and_device_moves(sd_path, bottleneck):
    moved = DictionaryLatentPipeline.from_pretrained(sd_path, bottleneck=copy.deepcopy(bottleneck))
    moved.set_progress_bar_config(disable=True)
    moved.to(torch.bfloat16)
    assert moved.vae.dtype == torch.bfloat16 and moved.dtype == torch.bfloat16
    assert moved.bottleneck.dtype == torch.float32  # codes are computed in float32
    out = moved("blue sunflower", generator=generator(), **CALL)
    assert np.isfinite(out.images).all()
    assert moved.to("cpu").device.type == "cpu"


def test_bad_arguments(pipe):
    with pytest.raises(ValueError, match="return_reference"):
        pipe("blue sunflower", return_reference="yes", **CALL)
    with pytest.raises(ValueError, match="sd_sparse Bottleneck"):
        DictionaryLatentPipeline.from_pipe(pipe, bottleneck=torch.nn.Identity())
    with pytest.raises(ValueError, match=r"16-channel.*4-channel"):
        DictionaryLatentPipeline.from_pipe(pipe, bottleneck=DictionaryBottleneck(latent_channels=16))
    with pytest.raises(TypeError):
        pipe("blue sunflower", callback_steps=1, **CALL)  # no **kwargs: unknown arguments are errors


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipeline_on_cuda(sd_path, bottleneck):
    gpu = DictionaryLatentPipeline.from_pretrained(sd_path, bottleneck=copy.deepcopy(bottleneck)).to("cuda")
    assert gpu.bottleneck.device.type == "cuda"
    out = gpu("blue sunflower", generator=torch.Generator("cuda").manual_seed(0), return_reference=True, **CALL)
    assert np.isfinite(out.images).all() and torch.isfinite(out.latent_psnr).all()
    half = gpu.to(torch.float16)
    assert half.vae.dtype == torch.float16 and half.bottleneck.dtype == torch.float32
    assert np.isfinite(half("blue sunflower", generator=torch.Generator("cuda").manual_seed(0), **CALL).images).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_cpu_offload_on_cuda(sd_path, bottleneck, reference_output):
    offloaded = DictionaryLatentPipeline.from_pretrained(sd_path, bottleneck=copy.deepcopy(bottleneck))
    offloaded.enable_model_cpu_offload(device="cuda")
    out = offloaded("blue sunflower", generator=torch.Generator("cpu").manual_seed(0), return_codes=True, **CALL)
    assert np.isfinite(out.images).all() and out.codes.indices.device.type == "cuda"
    assert offloaded.vae.device.type == "cpu"  # moved back after the call


def test_saved_pipelines_load_after_a_plain_import_sd_sparse(pipe, tmp_path):
    """In a fresh interpreter, `import sd_sparse` alone lets diffusers load our saved pipelines and coded
    VAEs (the library and pipeline names are registered lazily), and `from_pipe` keeps the coded VAE."""
    import subprocess
    import sys
    import textwrap

    pipe.save_pretrained(tmp_path / "dictionary")
    StableDiffusionPipeline(**pipe.components).save_pretrained(tmp_path / "sd")
    script = textwrap.dedent(
        f"""
        import sys
        import sd_sparse
        from diffusers import DiffusionPipeline, StableDiffusionImg2ImgPipeline
        assert "sd_sparse.pipelines.dictionary_latent" not in sys.modules
        dictionary = DiffusionPipeline.from_pretrained({str(tmp_path / "dictionary")!r})
        sd = DiffusionPipeline.from_pretrained({str(tmp_path / "sd")!r})
        img2img = StableDiffusionImg2ImgPipeline.from_pipe(sd)
        print(type(dictionary).__name__, type(sd).__name__, type(sd.vae).__name__, type(img2img.vae).__name__)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [
        "DictionaryLatentPipeline",
        "StableDiffusionPipeline",
        "AutoencoderKLWithBottleneck",
        "AutoencoderKLWithBottleneck",
    ]


def test_every_module_argument_is_a_component_and_casts_with_the_pipeline(bottleneck):
    """What diffusers' `PipelineTesterMixin.test_components_function` and `test_to_dtype` check, with the
    dummy components a tester builds from `__init__`'s signature: the bottleneck lives in the coded VAE
    (no `__init__` argument of its own), so `pipe.components` are exactly those arguments and
    `pipe.to(float16)` casts every one of them, while the bottleneck inside the VAE stays float32."""
    parameters = inspect.signature(DictionaryLatentPipeline.__init__).parameters
    assert "bottleneck" not in parameters
    import diffusers.pipelines

    # diffusers' mixins find a pipeline by name in `diffusers.pipelines` (test_encode_prompt_works_in_isolation)
    assert diffusers.pipelines.DictionaryLatentPipeline is DictionaryLatentPipeline
    components = tiny_stable_diffusion_components()
    components["vae"] = with_bottleneck(components["vae"], copy.deepcopy(bottleneck))
    components = {name: components.get(name) for name in parameters if name not in ("self", "requires_safety_checker")}
    init_components = {k: v for k, v in components.items() if not isinstance(v, (str, int, float))}
    pipe = DictionaryLatentPipeline(**init_components)
    assert set(pipe.components) == set(init_components)

    modules = [c for c in init_components.values() if hasattr(c, "dtype")]
    assert len(modules) == 3 and all(m.dtype == torch.float32 for m in modules)
    pipe.to(dtype=torch.float16)
    assert all(m.dtype == torch.float16 for m in modules)
    assert pipe.vae.dtype == torch.float16 and pipe.vae.bottleneck.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in pipe.bottleneck.parameters())
