"""`sd-sparse demo`: a dictionary bottleneck and a VQ codebook learned on real photographs.

Every 8×8 colour patch is one coded vector (192 values in [-1, 1]). Both bottlenecks learn on the
patches of all shipped photographs but the held-out one, then code the held-out photograph; the
table compares reconstruction PSNR, code usage and storage.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from .bottlenecks import DictionaryBottleneck, VectorQuantizer
from .data import photo_patches, sample_photographs, split_by_image, to_image, to_tensor
from .evaluation import evaluate
from .metrics import bits_per_vector
from .training.fitting import fit


@dataclass
class DemoResult:
    method: str
    psnr: float
    perplexity: float
    num_codes: int
    bits_per_vector: float
    train_seconds: float
    code_seconds: float


def run_demo(
    steps: int = 600,
    num_atoms: int = 512,
    sparsity: int = 5,
    batch_size: int = 1024,
    patch_size: int = 8,
    test_image: str = "astronaut",
    output_dir: str | None = "outputs/demo",
    seed: int = 0,
) -> List[DemoResult]:
    """Learns both bottlenecks, codes the held-out photograph and writes a PNG and a table."""
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    torch.manual_seed(seed)
    photos = sample_photographs()
    train, test = split_by_image(photos, [test_image])
    train_patches = photo_patches(train.values(), patch_size)
    image = test[test_image]
    height, width = (image.shape[0] // patch_size) * patch_size, (image.shape[1] // patch_size) * patch_size
    original = to_tensor(image)[:, :height, :width]  # the bottlenecks code its patch grid themselves
    print(
        f"{train_patches.shape[0]} training patches of {patch_size}x{patch_size}x3 from {len(train)} photographs "
        f"({', '.join(train)}); held out: {test_image} ({height // patch_size * (width // patch_size)} patches)."
    )

    models = {
        # Adam on the dictionary (the paper's implicit update); dictionary_update="bcd" reaches
        # ~0.5 dB less here at twice the time per step.
        f"dictionary (Batch-OMP, S={sparsity})": (
            DictionaryBottleneck(num_atoms, 3, sparsity, patch_size=patch_size, init_from_data=True),
            3e-3,
        ),
        "vector quantization (EMA)": (
            VectorQuantizer(num_atoms, 3, patch_size=patch_size, restart_threshold=0.5),
            0.0,
        ),
    }
    results, reconstructions = [], []
    for i, (name, (model, lr)) in enumerate(models.items()):
        start = time.perf_counter()
        fit(model, train_patches, steps, batch_size, lr, seed=seed + i, progress=True, desc=name)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            model(original[None])
        code_seconds = time.perf_counter() - start
        scores, recon = evaluate(model, original[None], with_flip=False, with_ssim=False, return_reconstructions=True)
        sparse = isinstance(model, DictionaryBottleneck)
        results.append(
            DemoResult(
                method=name,
                psnr=scores["image_psnr"],
                perplexity=scores["perplexity"],
                num_codes=num_atoms,
                bits_per_vector=bits_per_vector(num_atoms, sparsity if sparse else None),
                train_seconds=train_seconds,
                code_seconds=code_seconds,
            )
        )
        reconstructions.append(recon[0])

    table = format_table(results, test_image, steps, batch_size)
    print(table)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        from PIL import Image

        panels = [to_image(t) for t in [original, *reconstructions[::-1]]]
        gap = np.full((height, 8, 3), 255, dtype=np.uint8)
        row = np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)
        Image.fromarray(row).save(os.path.join(output_dir, "reconstructions.png"))
        with open(os.path.join(output_dir, "results.md"), "w") as f:
            f.write(table + "\n\nreconstructions.png: original | vector quantization | dictionary\n")
        print(f"Wrote {os.path.abspath(output_dir)}/ (reconstructions.png: original | VQ | dictionary, results.md)")
    return results


def format_table(results: List[DemoResult], test_image: str, steps: int, batch_size: int) -> str:
    lines = [
        f"Held-out photograph: {test_image}; {steps} steps of {batch_size} patches each.",
        "",
        "| method | PSNR (dB) | usage perplexity | bits per 8x8 patch | train (s) | code (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.method} | {r.psnr:.2f} | {r.perplexity:.0f} / {r.num_codes} | {r.bits_per_vector:.0f} | "
            f"{r.train_seconds:.1f} | {r.code_seconds:.3f} |"
        )
    lines.append("")
    lines.append("Bits: VQ stores one index (log2 K); the dictionary stores S indices and S float16 values.")
    return "\n".join(lines)


def _check_demo_arguments(steps, vq_atoms, num_atoms, sparsity, patch_size, value_bits, crop_size) -> None:
    from .codec.quantization import check_value_bits

    for name, value, low in [
        ("steps", steps, 1),
        ("vq_atoms", vq_atoms, 2),
        ("num_atoms", num_atoms, 2),
        ("sparsity", sparsity, 1),
        ("patch_size", patch_size, 1),
    ]:
        if value < low:
            raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    if sparsity > num_atoms:
        raise ValueError(f"`sparsity` ({sparsity}) must be at most `num_atoms` ({num_atoms}).")
    if crop_size < 8 or crop_size % 8:
        raise ValueError(f"`crop_size` must be a multiple of 8 (the VAE's downsampling), got {crop_size}.")
    check_value_bits(value_bits)


def run_stable_diffusion_demo(
    model: str | None = None,
    prompt: str = "blue sunflower",
    steps: int = 300,
    vq_atoms: int = 4096,
    num_atoms: int = 256,
    sparsity: int = 4,
    patch_size: int = 2,
    value_bits: int | None = 6,
    resolution: int | None = None,
    num_inference_steps: int | None = None,
    test_images: Sequence[str] | None = None,
    crop_size: int = 256,
    output_dir: str | None = "outputs/demo",
    seed: int = 0,
) -> dict:
    """The main job: fit a VQ codebook and a dictionary on a VAE's latents of the training photographs,
    code the held-out photographs with each at about the same measured bits, and generate `prompt`
    through `DictionaryLatentPipeline` with each.

    By default the VAE is the reference `AutoencoderKL` trained here (`sd_sparse.testing.reference_vae_path`)
    inside the offline tiny Stable Diffusion pipeline (its text encoder and U-Net have random weights,
    so the prompt's picture shows the machinery, not a real generation); the held-out photographs are
    the ones that VAE never saw. `model` is a Stable Diffusion folder or Hub id: its own VAE then codes.

    The dictionary codes `patch_size`² latent patches with S = `sparsity` of K = `num_atoms` atoms and
    `value_bits`-bit coefficients; VQ codes each position with one of `vq_atoms` vectors. The defaults
    cost about 12 measured bits per latent position each. Writes `grid.png` (every panel labelled),
    `results.md` and both fitted bottlenecks to `output_dir`. Returns `{bottleneck name: metrics}`.
    """
    _check_demo_arguments(steps, vq_atoms, num_atoms, sparsity, patch_size, value_bits, crop_size)
    from diffusers import AutoencoderKL

    from .autoencoders import decode_latents, stable_diffusion_dictionary, stable_diffusion_vector_quantizer
    from .data import photo_crops, reference_split
    from .metrics import flip
    from .pipelines import DictionaryLatentPipeline
    from .testing import reference_vae_path, tiny_stable_diffusion_path
    from .training.fitting import collect_latents

    if test_images is None:
        train, held = reference_split()
    else:
        train, held = split_by_image(sample_photographs(), list(test_images))
    if model is None:
        vae_name = "the reference VAE (trained here)"
        pipe = DictionaryLatentPipeline.from_pretrained(
            tiny_stable_diffusion_path(), vae=AutoencoderKL.from_pretrained(reference_vae_path())
        )
    else:
        vae_name = f"the VAE of {model}"
        pipe = DictionaryLatentPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    vae = pipe.vae
    resolution = resolution or (64 if model is None else 512)
    num_inference_steps = num_inference_steps or (10 if model is None else 30)
    train_latents = collect_latents(vae, photo_crops(train.values(), 128, 256, seed=1), progress=True)
    held_images = torch.stack([photo_crops([image], crop_size, 1, center_crop=True)[0] for image in held.values()])
    held_latents = collect_latents(vae, held_images)
    channels = held_latents.shape[1]
    print(
        f"{vae_name}: {train_latents.shape[0]} training crops of 128px from {len(train)} photographs "
        f"({', '.join(train)}); held out: {', '.join(held)} (centre {crop_size}px crops); "
        f"latents {tuple(held_latents.shape[1:])}."
    )

    dictionary_name = f"dictionary {patch_size}x{patch_size} K={num_atoms} S={sparsity}" + (
        f" {value_bits}-bit" if value_bits is not None else ""
    )
    bottlenecks = {
        f"VQ K={vq_atoms}": stable_diffusion_vector_quantizer(channels, vq_atoms),
        dictionary_name: stable_diffusion_dictionary(
            channels,
            num_atoms,
            sparsity,
            patch_size,
            init_from_data=True,
            value_bits=value_bits,
            value_refit=value_bits is not None,
        ),
    }
    torch.manual_seed(seed)  # here, so a first run (which builds the cached tiny pipeline) draws the same numbers
    with torch.no_grad():
        plain = decode_latents(vae, held_latents).clamp(-1, 1)
    positions = held_latents.shape[0] * held_latents.shape[2] * held_latents.shape[3]
    metrics, coded, prompt_images = {}, {}, {}
    reference = None
    for i, (name, bottleneck) in enumerate(bottlenecks.items()):
        fit(bottleneck, train_latents, steps, 16, 3e-3, seed=seed + i, progress=True, desc=f"fitting {name}")
        scores, reconstructions = evaluate(bottleneck, held_latents, vae=vae, return_reconstructions=True)
        with torch.no_grad():
            data = bottleneck.encode(held_latents).to_bytes(bottleneck, vae=vae)
        scores["measured_bits_per_position"] = 8 * len(data) / positions
        metrics[name], coded[name] = scores, reconstructions.clamp(-1, 1)
        pipe.register_modules(bottleneck=bottleneck)  # swap the component in place
        out = pipe(
            prompt,
            num_inference_steps=num_inference_steps,
            height=resolution,
            width=resolution,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
            return_reference=True,
        )
        reference = out.reference_images[0] * 2 - 1
        prompt_images[name] = out.images[0] * 2 - 1
        scores["prompt_latent_psnr"] = float(out.latent_psnr[0])
        scores["prompt_flip"], _ = flip(reference, prompt_images[name])

    from .hub import metrics_table

    table = metrics_table(metrics)
    prompt_lines = [f"| {n} | {m['prompt_latent_psnr']:.2f} | {m['prompt_flip']:.4f} |" for n, m in metrics.items()]
    generator_note = "random-weight tiny U-Net: the picture is not meaningful" if model is None else model
    text = "\n".join(
        [
            f"{vae_name}; held-out photographs {', '.join(held)}; {steps} fitting steps each. "
            "Image metrics: the coded decode against the plain decode.",
            "",
            table,
            "",
            f'Prompt "{prompt}" ({num_inference_steps} steps, seed {seed}, {generator_note}), '
            "against the decode without bottleneck:",
            "",
            "| bottleneck | latent PSNR (dB) | FLIP |",
            "|---|---:|---:|",
            *prompt_lines,
        ]
    )
    print(text)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        grid = demo_grid(held, held_images, plain, coded, metrics, prompt, reference, prompt_images, generator_note)
        grid.save(os.path.join(output_dir, "grid.png"))
        with open(os.path.join(output_dir, "results.md"), "w") as f:
            f.write(
                text
                + "\n\ngrid.png: one row per held-out photograph and one for the prompt; every panel is labelled.\n"
            )
        for name, bottleneck in bottlenecks.items():
            bottleneck.save_pretrained(os.path.join(output_dir, "vq" if name.startswith("VQ") else "dictionary"))
        print(f"Wrote {os.path.abspath(output_dir)}/ (grid.png, results.md; fitted bottlenecks in dictionary/ and vq/)")
    return metrics


def demo_grid(held, held_images, plain, coded, metrics, prompt, reference, prompt_images, generator_note):
    """The demo's labelled grid: per held-out photograph, the original, the plain decode, each coded
    decode and each FLIP heatmap against the plain decode; then the same for the prompt's image."""
    from .evaluation.image_grid import labelled_grid
    from .metrics import flip, psnr

    def heatmap(array) -> np.ndarray:
        return (np.asarray(array) * 255).clip(0, 255).astype(np.uint8)

    panels, captions = [], []
    for row, name in enumerate(held):
        vae_psnr = float(psnr(held_images[row], plain[row], data_range=2.0))
        cells = [to_image(held_images[row]), to_image(plain[row])]
        texts = [f"original: {name} (held out)", f"plain decode: {vae_psnr:.1f} dB vs original"]
        flips = []
        for method, images in coded.items():
            mean, flip_map = flip(plain[row], images[row])
            image_psnr = float(psnr(plain[row], images[row], data_range=2.0))
            bits = metrics[method]["measured_bits_per_position"]
            cells.append(to_image(images[row]))
            texts.append(f"{method}: {bits:.1f} bits/position, {image_psnr:.1f} dB vs plain decode")
            flips.append((heatmap(flip_map), f"FLIP of {method} vs plain decode (mean {mean:.3f}; black = none)"))
        panels.append(cells + [f[0] for f in flips])
        captions.append(texts + [f[1] for f in flips])
    cells, texts = [None, to_image(reference)], [f'"{prompt}": generated ({generator_note})', "plain decode"]
    flips = []
    for method, image in prompt_images.items():
        mean, flip_map = flip(reference, image)
        cells.append(to_image(image))
        texts.append(f'"{prompt}" decoded through {method}')
        flips.append((heatmap(flip_map), f"FLIP of {method} vs plain decode (mean {mean:.3f})"))
    panels.append(cells + [f[0] for f in flips])
    captions.append(texts + [f[1] for f in flips])
    return labelled_grid(panels, captions, panel_size=max(256, held_images.shape[-1]))
