"""A coded VAE is `vae=` of the pipelines its class serves: FLUX.1, FLUX.2, Sana, Qwen-Image, Wan, SVD.

Each tiny pipeline (`tiny_pipelines.py`, offline) runs twice: with the plain VAE, whose `decode` is
replaced by "code the latents by hand, then decode" (the bottleneck applied frame by frame in the latent
space the pipeline's denoiser works in, written out here independently of `sd_sparse.autoencoders`), and
with `with_bottleneck(vae, bottleneck)`. The images must agree (atol 1e-5) and differ from the plain run.
"""

import json

import diffusers
import pytest
import torch
from tiny_pipelines import TINY_PIPELINES, tiny_call_kwargs, tiny_pipeline

from sd_sparse import DictionaryBottleneck, with_bottleneck
from sd_sparse.autoencoders import latent_channels


def _denoiser_space(vae, z, inverse=False):
    """The pipelines' own conversions, written out per family (what each pipeline undoes before `decode`)."""
    config = vae.config
    if isinstance(vae, diffusers.AutoencoderKLFlux2):
        patches = diffusers.Flux2Pipeline._patchify_latents(z)
        mean = vae.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + config.batch_norm_eps)
        out = patches * std + mean if inverse else (patches - mean) / std
        return diffusers.Flux2Pipeline._unpatchify_latents(out)
    if config.get("latents_mean") is not None:  # Wan, Qwen-Image: z = x * std + mean
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1, 1)
        return z * std + mean if inverse else (z - mean) / std
    scale, shift = config.scaling_factor, config.get("shift_factor") or 0.0
    return z / scale + shift if inverse else (z - shift) * scale


def _code_by_hand(bottleneck, latents):
    if latents.dim() == 5:
        return torch.stack([bottleneck(latents[:, :, t]).latents for t in range(latents.shape[2])], dim=2)
    return bottleneck(latents).latents


def _images(out):
    return out[0]


@pytest.mark.parametrize("name", TINY_PIPELINES)
def test_pipelines_decode_the_plain_latents_coded(name):
    pipe = tiny_pipeline(name)
    vae = pipe.vae
    torch.manual_seed(1)
    bottleneck = DictionaryBottleneck(
        num_atoms=16, latent_channels=latent_channels(vae), sparsity=2, patch_size=1
    ).eval()

    plain = _images(pipe(**tiny_call_kwargs(name)))

    plain_decode = vae.decode

    def decode_coded_by_hand(z, *args, **kwargs):
        with torch.no_grad():
            coded = _denoiser_space(vae, _code_by_hand(bottleneck, _denoiser_space(vae, z)), inverse=True)
        return plain_decode(coded, *args, **kwargs)

    vae.decode = decode_coded_by_hand
    try:
        expected = _images(pipe(**tiny_call_kwargs(name)))
    finally:
        del vae.decode

    coded_pipe = type(pipe)(**{**pipe.components, "vae": with_bottleneck(vae, bottleneck)})
    coded_pipe.set_progress_bar_config(disable=True)
    assert type(coded_pipe.vae).__name__ == f"{type(vae).__name__}WithBottleneck"
    images = _images(coded_pipe(**tiny_call_kwargs(name)))

    assert images.shape == plain.shape
    torch.testing.assert_close(torch.as_tensor(images), torch.as_tensor(expected), atol=1e-5, rtol=0)
    assert not torch.allclose(torch.as_tensor(images), torch.as_tensor(plain), atol=1e-3)


@pytest.mark.parametrize("name", ["Flux2Pipeline", "WanPipeline"])
def test_pipelines_with_a_coded_vae_save_load_and_switch(name, tmp_path):
    """`save_pretrained` names the coded class (`["sd_sparse", "<Class>WithBottleneck"]`), every loader
    reads it back without `trust_remote_code`, and `from_pipe` carries it over."""
    pipe = tiny_pipeline(name)
    vae = pipe.vae
    torch.manual_seed(1)
    bottleneck = DictionaryBottleneck(num_atoms=16, latent_channels=latent_channels(vae), sparsity=2, patch_size=1)
    coded_pipe = type(pipe)(**{**pipe.components, "vae": with_bottleneck(vae, bottleneck.eval())})
    coded_pipe.set_progress_bar_config(disable=True)
    expected = _images(coded_pipe(**tiny_call_kwargs(name)))
    coded_pipe.save_pretrained(tmp_path)
    coded_class = f"{type(vae).__name__}WithBottleneck"
    assert json.load(open(tmp_path / "model_index.json"))["vae"] == ["sd_sparse", coded_class]

    for loaded in (type(pipe).from_pretrained(tmp_path), diffusers.DiffusionPipeline.from_pretrained(tmp_path)):
        assert type(loaded.vae).__name__ == coded_class
        loaded.set_progress_bar_config(disable=True)
        torch.testing.assert_close(
            torch.as_tensor(_images(loaded(**tiny_call_kwargs(name)))), torch.as_tensor(expected), atol=1e-6, rtol=0
        )
    switched = type(pipe).from_pipe(coded_pipe)
    assert switched.vae is coded_pipe.vae
