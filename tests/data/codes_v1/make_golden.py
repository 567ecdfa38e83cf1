"""Writes the golden codes files of `tests/test_codes_file_golden.py`.

They were written once, by the container of commit 3efac8a (before `Codes` and the container moved apart);
the test checks that today's code still reads and writes them bit for bit, so do not regenerate them
unless the format's VERSION changes (then write new files in a new folder and keep these).

Each case: a small trained bottleneck saved with `save_pretrained` (so decoding needs no retraining), its codes
file `<case>.sdc` written by `Codes.to_bytes`, and the codes themselves (`Codes.save`) to compare bit for bit.
The VAE is a tiny `AutoencoderKL` whose weights are filled deterministically (no random init), so its
fingerprint can be recomputed anywhere; `expected.json` records it and the header fields.

    PYTHONPATH=. python tests/data/codes_v1/make_golden.py
"""

import json
from pathlib import Path

import torch

from sd_sparse import DictionaryBottleneck, LISTABottleneck, VectorQuantizer

HERE = Path(__file__).resolve().parent


def deterministic_vae():
    """A tiny AutoencoderKL (f = 4) whose every floating tensor is a fixed ramp: the same on any machine."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
    )
    with torch.no_grad():
        for i, (_, tensor) in enumerate(sorted(vae.state_dict().items())):
            if tensor.is_floating_point():
                ramp = torch.arange(tensor.numel(), dtype=torch.float64) % 97 / 97 - 0.5 + i / 1000
                tensor.copy_(ramp.reshape(tensor.shape).to(tensor.dtype))
    return vae.eval()


def latents(seed, shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    # sets + prior + adaptive levels + the VAE fields
    "dl_b4_vae": (lambda: DictionaryBottleneck(16, 4, 3, patch_size=2, value_bits=4), (2, 4, 16, 16), True, None),
    # raw float coefficients (flag RAW), slots
    "lista": (lambda: LISTABottleneck(16, 4, num_blocks=2, sparsity=3), (1, 4, 4, 4), False, None),
    # a VQ coded against its EMA cluster sizes (slots, prior), video codes (flag FRAMES)
    "vq_ema_frames": (lambda: VectorQuantizer(16, 4, restart_threshold=0), (4, 4, 4, 4), False, 2),
}


def main():
    from sd_sparse.autoencoders.identity import downsampling_factor, vae_fingerprint
    from sd_sparse.codec import codes_file_info

    vae = deterministic_vae()
    expected = {"vae": {"fingerprint": vae_fingerprint(vae), "factor": downsampling_factor(vae)}, "cases": {}}
    for name, (factory, shape, with_vae, frames) in CASES.items():
        torch.manual_seed(0)
        model = factory()
        for step in range(12):
            model(latents(step, (4, *shape[1:])))
        model.eval()
        codes = model.encode(latents(10, shape))
        if frames is not None:
            codes.frames = torch.tensor([frames], dtype=torch.long)
        data = codes.to_bytes(model, vae=vae if with_vae else None)
        model.save_pretrained(HERE / name)
        codes.save(HERE / f"{name}.codes.safetensors")
        (HERE / f"{name}.sdc").write_bytes(data)
        info = codes_file_info(data)
        expected["cases"][name] = {
            "num_bytes": len(data),
            "index_model": info.index_model,
            "value_model": info.value_model,
            "state": info.state,
            "vae_fingerprint": info.vae_fingerprint,
            "vae_factor": info.vae_factor,
            "num_frames": info.num_frames,
        }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))


if __name__ == "__main__":
    main()
