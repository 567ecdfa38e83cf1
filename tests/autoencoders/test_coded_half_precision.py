"""A coded VAE loaded in half precision (`torch_dtype=torch.bfloat16` / `float16`) codes like float32.

The VAE runs in the half dtype; its bottleneck stays in float32 and codes the half-precision latents
widened to float32, so the codes equal the float32 bottleneck's codes of the same latents (widening is
exact), and the images come from decoding exactly those coded latents. On a GPU (`-k cuda`) the coding
is the Triton kernel's; on the CPU, the C kernel's.
"""

import pytest
import torch

from sd_sparse import AutoencoderKLWithBottleneck, DictionaryBottleneck, with_bottleneck
from sd_sparse.testing import tiny_stable_diffusion_components

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


@pytest.fixture(scope="module")
def saved_coded_vae(tmp_path_factory):
    torch.manual_seed(0)
    vae = tiny_stable_diffusion_components()["vae"]
    bottleneck = DictionaryBottleneck(num_atoms=32, latent_channels=4, sparsity=3, patch_size=2).eval()
    folder = tmp_path_factory.mktemp("coded")
    with_bottleneck(vae, bottleneck).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_coded_vae_codes_like_float32(saved_coded_vae, device, dtype):
    half = AutoencoderKLWithBottleneck.from_pretrained(saved_coded_vae, torch_dtype=dtype).to(device)
    full = AutoencoderKLWithBottleneck.from_pretrained(saved_coded_vae).to(device)
    assert half.dtype == dtype and half.bottleneck.dtype == torch.float32
    generator = torch.Generator().manual_seed(1)
    z = (torch.randn(2, 4, 8, 8, generator=generator) / half.config.scaling_factor).to(device, dtype)

    with torch.no_grad():
        coded, out = half.code_vae_latents(z)
        coded_reference, reference = full.code_vae_latents(z.float())
        images = half.decode(z).sample
        images_of_reference = half.decode(coded_reference.to(dtype), apply_bottleneck=False).sample

    assert torch.equal(out.codes.indices, reference.codes.indices)
    assert torch.equal(out.codes.coefficients, reference.codes.coefficients)
    assert coded.dtype == dtype and torch.equal(coded, coded_reference.to(dtype))
    assert images.dtype == dtype and images.device.type == device
    assert torch.isfinite(images).all()
    assert torch.equal(images, images_of_reference)
