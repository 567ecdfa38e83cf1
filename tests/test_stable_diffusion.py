"""Bottlenecks in AutoencoderKL's latent path and DictionaryLatentPipeline, on the offline tiny SD."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline

from sd_sparse import DictionaryBottleneck, DictionaryLatentPipeline, VectorQuantizer
from sd_sparse.metrics import bits_per_position, latent_psnr
from sd_sparse.stable_diffusion import (
    AutoencoderKLWithBottleneck,
    decode_latents,
    encode_latents,
    stable_diffusion_dictionary,
)
from sd_sparse.testing import photo_patches, sample_photographs, tiny_stable_diffusion_path

CUSTOM_PIPELINE = str(Path(__file__).resolve().parents[1] / "pipelines" / "dictionary_latent")
CALL = dict(num_inference_steps=2, height=64, width=64, output_type="np")


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
    return DictionaryLatentPipeline.from_pretrained(sd_path, bottleneck=bottleneck)


@pytest.fixture(scope="module")
def reference_output(pipe):
    return pipe("blue sunflower", generator=generator(), return_reference=True, return_codes=True, **CALL)


def test_tiny_pipeline_is_cached(sd_path):
    assert tiny_stable_diffusion_path() == sd_path
    index = json.load(open(f"{sd_path}/model_index.json"))
    assert index["_class_name"] == "StableDiffusionPipeline"


def test_autoencoder_with_bottleneck_handles_scaling_and_returns_codes(pipe, bottleneck):
    images = photo_patches([sample_photographs()["astronaut"]], patch_size=64, max_patches=2)
    coded = AutoencoderKLWithBottleneck(pipe.vae, bottleneck)(images, return_reference=True)
    z = pipe.vae.encode(images).latent_dist.mode()
    torch.testing.assert_close(coded.reference_latents, z * pipe.vae.config.scaling_factor)
    torch.testing.assert_close(coded.reference_images, pipe.vae.decode(z).sample.clamp(-1, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(coded.latents, bottleneck(coded.reference_latents).latents)
    assert coded.codes.indices.shape == (2 * 4 * 4, 4)  # 8x8 latents in 2x2 patches, S = 4
    torch.testing.assert_close(coded.latent_psnr, latent_psnr(coded.reference_latents, coded.latents))
    assert coded.bits_per_position == 4 * (6 + 16) / 4
    decoded = decode_latents(pipe.vae, encode_latents(pipe.vae, images)).clamp(-1, 1)
    torch.testing.assert_close(decoded, coded.reference_images)


@pytest.mark.parametrize(
    "family,scale,shift",
    [("SD 1.x/2.x", 0.18215, None), ("SDXL", 0.13025, None), ("SD3", 1.5305, 0.0609)],
)
def test_vae_families_scaling_and_shift(family, scale, shift):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32,
        latent_channels=4,
        scaling_factor=scale,
        shift_factor=shift,
    ).eval()
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    z = vae.encode(images).latent_dist.mode()
    latents = encode_latents(vae, images)
    torch.testing.assert_close(latents, (z - (shift or 0.0)) * scale)
    torch.testing.assert_close(decode_latents(vae, latents), vae.decode(z).sample, atol=1e-4, rtol=0)
    coded = AutoencoderKLWithBottleneck(vae, stable_diffusion_dictionary(num_atoms=16, sparsity=2, patch_size=2))(
        images
    )
    assert coded.latents.shape == z.shape and torch.isfinite(coded.latent_psnr).all()


def test_bits_per_position():
    assert bits_per_position(stable_diffusion_dictionary()) == 8 * (9 + 16) / 16
    assert bits_per_position(VectorQuantizer(512, 4)) == 9
    assert bits_per_position(VectorQuantizer(512, 4, patch_size=2)) == 9 / 4


def test_channel_mismatch_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="4-channel"):
        AutoencoderKLWithBottleneck(pipe.vae, DictionaryBottleneck(embedding_dim=16))
    with pytest.raises(ValueError, match="4-channel"):
        DictionaryLatentPipeline.from_pipe(pipe, bottleneck=DictionaryBottleneck(embedding_dim=16))


def test_pipeline_output_has_reference_codes_and_psnr(pipe, sd_path, reference_output):
    out = reference_output
    assert out.images.shape == (1, 64, 64, 3) and out.reference_images.shape == (1, 64, 64, 3)
    assert out.latent_psnr.shape == (1,) and torch.isfinite(out.latent_psnr).all()
    assert out.bits_per_position == 22.0
    assert out.codes.indices.shape == (16, 4)
    assert not np.array_equal(out.images, out.reference_images)  # the bottleneck did something
    # the reference decode is exactly what plain Stable Diffusion generates
    plain = StableDiffusionPipeline.from_pretrained(sd_path)("blue sunflower", generator=generator(), **CALL)
    np.testing.assert_allclose(out.reference_images, plain.images, atol=1e-6)


def test_latent_output_is_the_coded_latents(pipe, bottleneck):
    out = pipe("blue sunflower", generator=generator(), return_reference=True, **{**CALL, "output_type": "latent"})
    assert out.images.shape == (1, 4, 8, 8)
    torch.testing.assert_close(out.images, bottleneck(out.reference_images).latents)


def test_every_loading_path_gives_the_same_images(pipe, sd_path, bottleneck, reference_output, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.load(open(tmp_path / "model_index.json"))
    assert index["_class_name"] == "DictionaryLatentPipeline"
    assert index["bottleneck"] == ["sd_sparse", "DictionaryBottleneck"]
    pipelines = {
        "saved": DictionaryLatentPipeline.from_pretrained(tmp_path),
        "diffusion_pipeline": DiffusionPipeline.from_pretrained(tmp_path),
        "from_pipe": DictionaryLatentPipeline.from_pipe(
            StableDiffusionPipeline.from_pretrained(sd_path), bottleneck=bottleneck
        ),
        "custom_pipeline": DiffusionPipeline.from_pretrained(
            sd_path, custom_pipeline=CUSTOM_PIPELINE, bottleneck=bottleneck, trust_remote_code=True
        ),
    }
    for name, loaded in pipelines.items():
        assert isinstance(loaded, DictionaryLatentPipeline), name
        images = loaded("blue sunflower", generator=generator(), **CALL).images
        np.testing.assert_array_equal(images, reference_output.images, err_msg=name)


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
    assert out.images.shape == (2, 64, 64, 3) and out.latent_psnr.shape == (2,)
    assert seen == [torch.Size([2, 4, 8, 8])] * 2
    pil = pipe("blue sunflower", generator=generator(), **{**CALL, "output_type": "pil"}).images
    assert pil[0].size == (64, 64)


def test_without_bottleneck_it_is_stable_diffusion(sd_path):
    plain = StableDiffusionPipeline.from_pretrained(sd_path)("blue sunflower", generator=generator(), **CALL)
    ours = DictionaryLatentPipeline.from_pretrained(sd_path)("blue sunflower", generator=generator(), **CALL)
    np.testing.assert_array_equal(ours.images, plain.images)
    assert ours.latent_psnr is None


def test_vq_bottleneck_in_the_same_pipeline(pipe):
    vq = VectorQuantizer(64, 4, init_from_data=False).eval()
    out = DictionaryLatentPipeline.from_pipe(pipe, bottleneck=vq)(
        "blue sunflower", generator=generator(), return_codes=True, **CALL
    )
    assert out.codes.shape == (64,) and out.bits_per_position == 6


def test_dtype_and_device_moves(pipe):
    moved = DictionaryLatentPipeline.from_pipe(pipe).to(torch.bfloat16)
    assert moved.bottleneck.dtype == torch.bfloat16
    out = moved("blue sunflower", generator=generator(), **CALL)
    assert np.isfinite(out.images).all()
    assert moved.to("cpu").device.type == "cpu"


def test_bad_call_arguments(pipe):
    with pytest.raises(ValueError, match="return_reference"):
        pipe("blue sunflower", return_reference="yes", **CALL)
    with pytest.raises(ValueError, match="sd_sparse Bottleneck"):
        DictionaryLatentPipeline.from_pipe(pipe, bottleneck=torch.nn.Identity())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipeline_on_cuda(sd_path, bottleneck):
    gpu = DictionaryLatentPipeline.from_pretrained(sd_path, bottleneck=copy.deepcopy(bottleneck)).to("cuda")
    assert gpu.bottleneck.device.type == "cuda"
    out = gpu("blue sunflower", generator=torch.Generator("cuda").manual_seed(0), return_reference=True, **CALL)
    assert np.isfinite(out.images).all() and torch.isfinite(out.latent_psnr).all()
    half = gpu.to(torch.float16)
    assert half.bottleneck.dtype == torch.float16
    assert np.isfinite(half("blue sunflower", generator=torch.Generator("cuda").manual_seed(0), **CALL).images).all()
