"""Any diffusers pipeline uses the bottleneck when given `vae=with_bottleneck(pipe.vae, b)`.

For SD txt2img, SDXL, SD3 (16 channels, shift factor), SD img2img, SD inpainting and SD ControlNet,
built offline from tiny configs (32 px, 2 steps), four properties:
1. the images differ from the plain pipeline's;
2. they equal decoding the bottleneck-coded latents of the plain pipeline's `output_type="latent"`;
3. save → `DiffusionPipeline.from_pretrained` restores the coded VAE and gives identical images;
4. with VAE tiling (tiny tiles, so tiling really happens) the codes equal untiled decoding's.
"""

import dataclasses
from typing import Callable, Dict

import numpy as np
import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from sd_sparse import AutoencoderKLWithBottleneck, AutoencoderTinyWithBottleneck, DictionaryBottleneck, with_bottleneck
from sd_sparse.autoencoders import to_vae_space
from sd_sparse.testing import (
    tiny_autoencoder_tiny,
    tiny_controlnet,
    tiny_stable_diffusion_3_components,
    tiny_stable_diffusion_components,
    tiny_stable_diffusion_xl_components,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")

SIZE = 32  # 4x4 latents: the pipelines' smallest useful size keeps the tests fast


def image(seed: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(1, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def mask() -> torch.Tensor:
    m = torch.zeros(1, 1, SIZE, SIZE)
    m[..., SIZE // 4 : 3 * SIZE // 4, SIZE // 4 : 3 * SIZE // 4] = 1
    return m


@dataclasses.dataclass
class Case:
    pipeline_class: type
    make_components: Callable[[], Dict]
    inputs: Callable[[], Dict] = dict
    load_kwargs: Dict = dataclasses.field(default_factory=dict)
    init_kwargs: Dict = dataclasses.field(default_factory=dict)


def sd_components():
    return tiny_stable_diffusion_components()


CASES = {
    "sd": Case(StableDiffusionPipeline, sd_components, init_kwargs={"requires_safety_checker": False}),
    "sdxl": Case(StableDiffusionXLPipeline, tiny_stable_diffusion_xl_components),
    "sd3": Case(
        StableDiffusion3Pipeline,
        tiny_stable_diffusion_3_components,
        load_kwargs={"text_encoder_3": None, "tokenizer_3": None},  # no T5 in the tiny SD3
    ),
    "img2img": Case(
        StableDiffusionImg2ImgPipeline,
        sd_components,
        inputs=lambda: {"image": image(1), "strength": 0.8},
        init_kwargs={"requires_safety_checker": False},
    ),
    "inpaint": Case(
        StableDiffusionInpaintPipeline,
        sd_components,
        inputs=lambda: {"image": image(1), "mask_image": mask(), "strength": 0.8},
        init_kwargs={"requires_safety_checker": False},
    ),
    "controlnet": Case(
        StableDiffusionControlNetPipeline,
        lambda: {**sd_components(), "controlnet": tiny_controlnet()},
        inputs=lambda: {"image": image(2)},
        init_kwargs={"requires_safety_checker": False},
    ),
}


def run(pipe, case: Case, **overrides):
    call = dict(
        prompt="blue sunflower",
        num_inference_steps=2,
        height=SIZE,
        width=SIZE,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    return pipe(**{**call, **case.inputs(), **overrides}).images


class CodesRecorder:
    """Records the codes (and inputs) of every bottleneck call."""

    def __init__(self, bottleneck):
        self.codes, self.inputs = [], []
        self.handle = bottleneck.register_forward_hook(self.hook)

    def hook(self, module, args, output):
        self.inputs.append(args[0].detach().clone())
        self.codes.append(output.codes)

    def remove(self):
        self.handle.remove()


@pytest.fixture(scope="module", params=sorted(CASES))
def setup(request):
    """(case, plain pipeline, coded pipeline, coded images, codes of the coded run)."""
    case = CASES[request.param]
    components = case.make_components()
    plain = case.pipeline_class(**components, **case.init_kwargs)
    plain.set_progress_bar_config(disable=True)
    channels = components["vae"].config.latent_channels
    torch.manual_seed(0)
    bottleneck = DictionaryBottleneck(num_atoms=64, latent_channels=channels, sparsity=4, patch_size=2).eval()
    coded = case.pipeline_class(
        **{**components, "vae": with_bottleneck(components["vae"], bottleneck)}, **case.init_kwargs
    )
    coded.set_progress_bar_config(disable=True)
    recorder = CodesRecorder(coded.vae.bottleneck)
    images = run(coded, case)
    recorder.remove()
    assert len(recorder.codes) == 1
    return request.param, case, plain, coded, images, recorder


def test_images_differ_from_the_plain_pipeline(setup):
    name, case, plain, coded, images, _ = setup
    reference = run(plain, case)
    assert images.shape == reference.shape == (1, SIZE, SIZE, 3)
    assert np.abs(images - reference).max() > 1e-2, name


def test_images_are_the_decoded_coded_latents_of_the_plain_pipeline(setup):
    name, case, plain, coded, images, _ = setup
    latents = run(plain, case, output_type="latent")
    bottleneck = coded.vae.bottleneck
    with torch.no_grad():
        coded_latents = bottleneck(latents).latents
        decoded = plain.vae.decode(to_vae_space(plain.vae, coded_latents), return_dict=False)[0]
    expected = plain.image_processor.postprocess(decoded, output_type="np")
    np.testing.assert_allclose(images, expected, atol=1e-4, err_msg=name)


def test_save_and_load_restore_the_coded_vae(setup, tmp_path):
    name, case, plain, coded, images, _ = setup
    coded.save_pretrained(tmp_path)
    index = (tmp_path / "model_index.json").read_text()
    assert '"AutoencoderKLWithBottleneck"' in index and '"sd_sparse"' in index
    loaded = DiffusionPipeline.from_pretrained(tmp_path, **case.load_kwargs)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is case.pipeline_class and type(loaded.vae) is AutoencoderKLWithBottleneck
    assert torch.equal(loaded.vae.bottleneck.dictionary, coded.vae.bottleneck.dictionary)
    # the coded VAE round-trips bit for bit: the same latents decode to the same images
    latents = torch.randn(1, coded.vae.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.vae.decode(latents).sample, coded.vae.decode(latents).sample), name
    # whole images: transformers' CLIPTextModelWithProjection (SDXL, SD3) projects its pooled output with
    # a GEMM whose result depends on the weights' memory (mmapped after loading): 2.4e-7 in the pooled
    # embedding with transformers 5.23, as for the plain diffusers pipelines, so these match to 1e-5
    tolerance = 1e-5 if hasattr(coded, "text_encoder_2") else 0.0
    np.testing.assert_allclose(run(loaded, case), images, rtol=0, atol=tolerance, err_msg=name)


def test_tiled_decoding_gives_the_codes_of_untiled_decoding(setup):
    """diffusers' tiling needs latents several tiles wide: 64 px images (8x8 latents), 32 px tiles."""
    name, case, plain, coded, images, _ = setup
    vae = coded.vae
    vae.enable_tiling()
    vae.tile_sample_min_size, vae.tile_latent_min_size = 32, 4  # 3x3 overlapping tiles of 4x4 latents
    size = 2 * SIZE
    overrides = {"height": size, "width": size}
    if "image" in case.inputs():
        overrides.update(
            {k: torch.nn.functional.interpolate(v, size=size) for k, v in case.inputs().items() if k.endswith("image")}
        )
    recorder = CodesRecorder(vae.bottleneck)
    decoder_calls = []
    handle = vae.decoder.register_forward_hook(lambda *args: decoder_calls.append(1))
    try:
        tiled_images = run(coded, case, **overrides)
    finally:
        handle.remove()
        recorder.remove()
        vae.disable_tiling()
    assert len(decoder_calls) > 1, "tiling did not happen"
    assert len(recorder.codes) == 1 and recorder.codes[0].latent_shape[2:] == (size // 8, size // 8)  # whole latent
    check = CodesRecorder(vae.bottleneck)
    with torch.no_grad():  # the same latents, decoded without tiling
        untiled = vae.decode(to_vae_space(vae, recorder.inputs[0])).sample
    check.remove()
    torch.testing.assert_close(recorder.codes[0].indices, check.codes[0].indices, atol=0, rtol=0)
    torch.testing.assert_close(recorder.codes[0].coefficients, check.codes[0].coefficients, atol=1e-5, rtol=0)
    untiled_images = coded.image_processor.postprocess(untiled, output_type="np")
    assert tiled_images.shape == untiled_images.shape == (1, size, size, 3)
    assert not np.array_equal(tiled_images, untiled_images)  # tiles are blended: the decoder really tiled


@pytest.mark.filterwarnings("ignore:`upcast_vae` is deprecated:FutureWarning")
def test_sdxl_upcasts_a_half_precision_coded_vae_as_diffusers_does():
    """`force_upcast`: SDXL decodes a float16 VAE in float32 and casts it back; the bottleneck stays
    float32 throughout (and is never rounded through float16)."""
    components = tiny_stable_diffusion_xl_components()
    torch.manual_seed(0)
    bottleneck = DictionaryBottleneck(num_atoms=64, latent_channels=4, sparsity=4, patch_size=2).eval()
    weights = bottleneck.dictionary.detach().clone()
    components["vae"] = with_bottleneck(components["vae"], bottleneck)
    assert components["vae"].config.force_upcast
    pipe = StableDiffusionXLPipeline(**components).to(torch.float16)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    handle = pipe.vae.decoder.register_forward_pre_hook(
        lambda module, args: seen.append((args[0].dtype, next(module.parameters()).dtype, bottleneck.dtype))
    )
    try:
        images = run(pipe, CASES["sdxl"])
    finally:
        handle.remove()
    assert seen == [(torch.float32, torch.float32, torch.float32)]  # decoded upcast, bottleneck in float32
    assert pipe.vae.dtype == torch.float16 and bottleneck.dtype == torch.float32
    assert torch.equal(bottleneck.dictionary, weights) and np.isfinite(images).all()


def test_a_coded_tiny_autoencoder_in_stable_diffusion(tmp_path):
    """TAESD in place of SD's VAE: the pipeline decodes the coded latents, and a save/load keeps it coded."""
    case = CASES["sd"]
    components = {**tiny_stable_diffusion_components(), "vae": tiny_autoencoder_tiny()}
    plain = StableDiffusionPipeline(**components, **case.init_kwargs)
    plain.set_progress_bar_config(disable=True)
    torch.manual_seed(0)
    bottleneck = DictionaryBottleneck(num_atoms=64, latent_channels=4, sparsity=4, patch_size=2).eval()
    coded = StableDiffusionPipeline(**{**components, "vae": with_bottleneck(components["vae"], bottleneck)})
    coded.set_progress_bar_config(disable=True)
    images = run(coded, case)
    latents = run(plain, case, output_type="latent")
    with torch.no_grad():
        decoded = plain.vae.decode(to_vae_space(plain.vae, bottleneck(latents).latents), return_dict=False)[0]
    np.testing.assert_allclose(images, plain.image_processor.postprocess(decoded, output_type="np"), atol=1e-4)
    assert np.abs(images - run(plain, case)).max() > 1e-2
    coded.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.vae) is AutoencoderTinyWithBottleneck
    np.testing.assert_array_equal(run(loaded, case), images)
