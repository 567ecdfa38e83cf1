"""`CodePriorPipeline`: codes sampled by a `CodePrior`, decoded by the coded VAE; saving, loading and the Hub.

The diffusers tester checks for the pipeline and for `CodePrior` as a model run in tests/test_tester_checks.py.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from hub_server import HubServer

from sd_sparse import AutoencoderKLWithBottleneck, CodePrior, CodePriorPipeline, CodePriorPipelineOutput, Codes
from sd_sparse.autoencoders import to_vae_space
from sd_sparse.testing import tiny_code_prior_components

ROOT = Path(__file__).resolve().parents[2]


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def make_pipe(kind="dictionary", shift_factor=0.1):
    pipe = CodePriorPipeline(**tiny_code_prior_components(kind, shift_factor=shift_factor))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


@pytest.fixture(scope="module")
def output(pipe):
    return pipe(num_images_per_prompt=4, generator=generator(0), output_type="pt")


def test_four_images_of_the_default_size_reproducible_by_seed(pipe):
    images = pipe(num_images_per_prompt=4, generator=generator(0)).images
    assert len(images) == 4 and all(isinstance(image, PIL.Image.Image) for image in images)
    assert {image.size for image in images} == {(64, 64)}  # the VAE's sample_size
    again = pipe(num_images_per_prompt=4, generator=generator(0)).images
    other = pipe(num_images_per_prompt=4, generator=generator(1)).images
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, other))
    first = [np.asarray(image) for image in images]
    assert any(not np.array_equal(first[0], image) for image in first[1:])  # the images of a batch differ


def test_images_are_the_priors_codes_decoded_by_the_coded_vae(pipe, output):
    codes = pipe.prior.sample(pipe.vae.bottleneck, 8, 8, num_images=4, generator=generator(0))
    for field in ("indices", "levels", "coefficients", "layout", "signature"):
        assert torch.equal(getattr(output.codes, field), getattr(codes, field)), field
    assert torch.equal(output.images, (pipe.vae.decompress(codes) / 2 + 0.5).clamp(0, 1))
    # by hand: the bottleneck's latents, the VAE's scaling and shift (0.18215, 0.1), the plain decoder
    latents = pipe.vae.bottleneck.decode(codes)
    with torch.no_grad():
        decoded = pipe.vae.decode(latents / 0.18215 + 0.1, apply_bottleneck=False).sample
    torch.testing.assert_close(output.images, (decoded.clamp(-1, 1) / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)


def test_output_types_and_tuple(pipe, output):
    def call(**kw):
        return pipe(num_images_per_prompt=4, generator=generator(0), **kw)

    as_np = call(output_type="np").images
    assert isinstance(as_np, np.ndarray) and as_np.shape == (4, 64, 64, 3)
    np.testing.assert_allclose(as_np, output.images.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    latents = call(output_type="latent").images
    assert torch.equal(latents, pipe.vae.bottleneck.decode(output.codes))  # coded diffusion-space latents
    with torch.no_grad():
        decoded = pipe.vae.decode(to_vae_space(pipe.vae, latents), apply_bottleneck=False).sample
    torch.testing.assert_close(pipe.image_processor.postprocess(decoded, "pt"), output.images, atol=1e-6, rtol=0)
    images, codes = call(output_type="pt", return_dict=False)
    assert torch.equal(images, output.images) and isinstance(codes, Codes)
    assert isinstance(output, CodePriorPipelineOutput) and codes.num_images == 4


def test_sizes_are_pixels(pipe):
    assert pipe.vae_scale_factor == 8 and pipe.size_multiple == (16, 16)  # 8x VAE, 2x2 patches
    images = pipe(height=32, width=48, generator=generator(), output_type="pt").images
    assert images.shape == (1, 3, 32, 48)
    out = pipe(height=32, width=48, generator=generator(), output_type="latent")
    assert out.images.shape == (1, 4, 4, 6) and out.codes.latent_shape == (1, 4, 4, 6)
    vq = make_pipe("vq")
    assert vq.size_multiple == (8, 8) and vq(height=24, width=8, output_type="pt").images.shape == (1, 3, 24, 8)


def test_default_size_rounds_the_vae_sample_size_down():
    pipe = make_pipe()
    pipe.vae.register_to_config(sample_size=72)
    assert pipe.default_size == (64, 64)
    pipe.vae.register_to_config(sample_size=[40, 8])
    assert pipe.default_size == (32, 16)  # at least one multiple
    assert pipe(output_type="pt").images.shape == (1, 3, 32, 16)


def test_temperature_sharpens_the_prior(pipe):
    kw = dict(num_images_per_prompt=4, generator=generator(0), output_type="latent")
    cold = pipe(temperature=0.05, **kw).codes
    warm = pipe(temperature=1.0, **kw).codes
    assert not torch.equal(cold.indices, warm.indices)
    # near-greedy draws concentrate on few atoms
    assert len(torch.unique(cold.indices)) < len(torch.unique(warm.indices))


def test_vq_codes_decode_too():
    pipe = make_pipe("vq", shift_factor=None)
    out = pipe(num_images_per_prompt=2, generator=generator(0), output_type="pt")
    assert out.images.shape == (2, 3, 64, 64) and out.codes.sparsity == 1 and out.codes.coefficients is None
    assert torch.equal(out.images, (pipe.vae.decompress(out.codes) / 2 + 0.5).clamp(0, 1))


def test_save_and_load_give_the_same_pipeline(pipe, output, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "CodePriorPipeline"
    assert index["prior"] == ["sd_sparse", "CodePrior"] and index["vae"] == ["sd_sparse", "AutoencoderKLWithBottleneck"]
    assert sorted(p.name for p in (tmp_path / "prior").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    loaded = {
        "CodePriorPipeline": CodePriorPipeline.from_pretrained(tmp_path),
        "DiffusionPipeline": DiffusionPipeline.from_pretrained(tmp_path),
    }
    for name, other in loaded.items():
        assert isinstance(other, CodePriorPipeline) and type(other.prior) is CodePrior, name
        assert type(other.vae) is AutoencoderKLWithBottleneck, name
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(other.prior.config) == public(pipe.prior.config), name
        state = other.prior.state_dict()
        assert state.keys() == pipe.prior.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in pipe.prior.state_dict().items()), name
        other.set_progress_bar_config(disable=True)
        again = other(num_images_per_prompt=4, generator=generator(0), output_type="pt")
        assert torch.equal(again.images, output.images), name
        assert torch.equal(again.codes.indices, output.codes.indices), name


def test_hub_push_and_pull(pipe, output, tmp_path):
    """Through the real huggingface_hub client against the offline Hub server (tests/hub_server.py)."""
    script = textwrap.dedent(
        """
        import json, sys, torch
        from diffusers import DiffusionPipeline
        from sd_sparse import CodePriorPipeline
        from sd_sparse.testing import tiny_code_prior_components
        torch.set_num_threads(1)
        pipe = CodePriorPipeline(**tiny_code_prior_components("dictionary", shift_factor=0.1))
        url = pipe.push_to_hub("user/tiny-code-prior")
        pulled = CodePriorPipeline.from_pretrained("user/tiny-code-prior")
        generic = DiffusionPipeline.from_pretrained("user/tiny-code-prior")
        out = {"url": url, "generic": type(generic).__name__}
        for name, p in (("pushed", pipe), ("pulled", pulled), ("generic", generic)):
            p.set_progress_bar_config(disable=True)
            images = p(num_images_per_prompt=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
            torch.save(images, sys.argv[1] + "/" + name + ".pt")
        out["same_prior"] = all(torch.equal(a, b) for a, b in zip(pipe.prior.state_dict().values(),
                                                                    pulled.prior.state_dict().values()))
        print(json.dumps(out))
        """
    )
    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HOME=str(tmp_path / "hf_home"),
            HF_HUB_OFFLINE="0",
            HF_TOKEN="hf_test_token",
            DIFFUSERS_VERBOSITY="error",
            TRANSFORMERS_VERBOSITY="error",
            OMP_NUM_THREADS="1",
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        commits = [c for c in hub.state.commits if c["repo"] == "user/tiny-code-prior"]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["generic"] == "CodePriorPipeline" and result["same_prior"]
    assert "/user/tiny-code-prior/commit/" in result["url"]
    assert commits and {"model_index.json", "prior/config.json", "prior/diffusion_pytorch_model.safetensors"} <= set(
        commits[-1]["paths"]
    )
    pushed = torch.load(tmp_path / "pushed.pt")
    assert torch.equal(pushed, output.images)  # the same tiny components in another process: the same images
    assert torch.equal(torch.load(tmp_path / "pulled.pt"), pushed)
    assert torch.equal(torch.load(tmp_path / "generic.pt"), pushed)


def test_bad_arguments_are_clear_errors(pipe):
    other = tiny_code_prior_components("vq")
    with pytest.raises(ValueError, match=r"`prior` does not model the codes of `vae.bottleneck`.*VectorQuantizer"):
        CodePriorPipeline(vae=pipe.vae, prior=other["prior"])
    with pytest.raises(ValueError, match="coded VAE"):
        CodePriorPipeline(vae=AutoencoderKL(), prior=pipe.prior)
    with pytest.raises(ValueError, match="`prior` must be a `CodePrior`"):
        CodePriorPipeline(vae=pipe.vae, prior=torch.nn.Linear(1, 1))
    swapped = make_pipe()
    swapped.prior = other["prior"]  # components can be replaced after construction: checked at the call
    with pytest.raises(ValueError, match="does not model the codes"):
        swapped(generator=generator())
    for bad in (dict(height=24), dict(width=8), dict(height=0), dict(height=32.0)):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=rf"`{name}` must be a positive multiple of 16 pixels.*8 × .*2x2"):
            pipe(**bad)
    for count in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="`num_images_per_prompt` must be an int >= 1"):
            pipe(num_images_per_prompt=count)
    with pytest.raises(ValueError, match="`temperature` must be a number > 0"):
        pipe(temperature=0)
    with pytest.raises(ValueError, match="`output_type` must be one of"):
        pipe(output_type="jpeg")
    with pytest.raises(ValueError, match="one torch.Generator"):
        pipe(num_images_per_prompt=2, generator=[generator(0), generator(1)])


def test_progress_bar_reports_sampling_and_decoding():
    pipe = make_pipe()
    pipe.set_progress_bar_config(disable=False)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        pipe(output_type="pt")
    assert "2/2" in err.getvalue()
    pipe.set_progress_bar_config(disable=True)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        pipe(output_type="pt")
    assert err.getvalue() == ""


def test_half_precision_and_dtype_moves():
    pipe = make_pipe()
    reference = pipe(num_images_per_prompt=2, generator=generator(0), output_type="pt").images
    pipe.to(torch.float16)
    assert pipe.prior.dtype == torch.float16 and pipe.vae.dtype == torch.float16
    assert pipe.vae.bottleneck.dtype == torch.float32  # the coded VAE keeps its bottleneck in float32
    half = pipe(num_images_per_prompt=2, generator=generator(0), output_type="pt").images
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    assert (half.float() - reference).abs().max() < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_and_with_model_cpu_offload(output):
    gpu = make_pipe().to("cuda")
    out = gpu(num_images_per_prompt=4, generator=torch.Generator("cuda").manual_seed(0), output_type="pt")
    assert out.images.device.type == "cuda" and torch.isfinite(out.images).all()
    with pytest.raises(ValueError, match=r"`generator` is on cpu but the prior samples on cuda"):
        gpu(generator=generator())
    offloaded = make_pipe()
    offloaded.enable_model_cpu_offload(device="cuda")
    again = offloaded(num_images_per_prompt=4, generator=torch.Generator("cuda").manual_seed(0), output_type="pt")
    assert torch.equal(again.images.cpu(), out.images.cpu())
    assert offloaded.vae.device.type == "cpu" and offloaded.prior.device.type == "cpu"  # moved back after the call
