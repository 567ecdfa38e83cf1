"""`sd-sparse demo` (`run_stable_diffusion_demo`): VQ vs dictionary on a trained VAE's latents.

It fits a VQ codebook and a dictionary bottleneck on a trained VAE's latents of photographs and codes held-out
images with each at about the same bits per latent position; `grid.png` (`sd_sparse.demo.grid`) shows the
original, the VAE's own decode, both coded decodes and their FLIP error maps. Then `DictionaryLatentPipeline`
runs a prompt through each bottleneck.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Sequence

import numpy as np
import torch

from ..data import photo_crops, sample_photographs
from ..errors import UserError
from ..training.fitting import fit
from .environment import DemoClock, choose_num_threads, process_age, quiet_libraries

#: the shipped photographs the reference VAE never saw: the held-out side of its training run's split by image
#: (`--validation_split 0.2`, seed 0, over the 10 shipped photographs; `sd_sparse.data.reference_split`), named
#: here so that the demo holds out the same two even where scikit-learn's photographs are not installed
REFERENCE_HELD_OUT = ("chelsea", "flower")

#: the side of the random training crops whose latents the bottlenecks are fitted on
TRAIN_CROP = 128


def _check_demo_arguments(steps, vq_atoms, num_atoms, sparsity, patch_size, value_bits, crop_size, train_crops=1):
    from ..codec.quantization import check_value_bits

    for name, value, low in [
        ("steps", steps, 1),
        ("vq_atoms", vq_atoms, 2),
        ("num_atoms", num_atoms, 2),
        ("sparsity", sparsity, 1),
        ("patch_size", patch_size, 1),
        ("train_crops", train_crops, 1),
    ]:
        if value < low:
            raise UserError(f"`{name}` must be >= {low}, got {value}.")
    if sparsity > num_atoms:
        raise UserError(f"`sparsity` ({sparsity}) must be at most `num_atoms` ({num_atoms}).")
    if crop_size < 8 or crop_size % 8:
        raise UserError(f"`crop_size` must be a multiple of 8 (the VAE's downsampling), got {crop_size}.")
    check_value_bits(value_bits)


def describe_vae(vae, model: str | None) -> str:
    """One paragraph saying what the VAE is, its numbers read from the loaded model."""
    config = vae.config
    factor = 2 ** (len(config.block_out_channels) - 1) if "block_out_channels" in config else None
    parameters = sum(p.numel() for p in vae.parameters()) / 1e6
    shape = (
        f"{type(vae).__name__}, {config.latent_channels} latent channels, downsampling f{factor}, "
        f"{parameters:.2f} M parameters, scaling_factor {config.get('scaling_factor') or 1:.4g}"
    )
    if model is not None:
        return f"the VAE of {model} ({shape})."
    return (
        f"the reference VAE (trained here): a small diffusers {shape}, trained in this repository by "
        "train/train_vae.py for 52 minutes on 2 CPU cores (1500 steps of 64 px crops of 8 shipped photographs; "
        "sd_sparse/assets/reference_vae/README.md). It is a stand-in for Stable Diffusion's VAE so that the "
        "bottlenecks code a trained VAE's latents, and it is weak: its own decode is blurry and colour-shifted "
        "(about 16-20 dB PSNR on held-out photographs)."
    )


def _held_out_images(test_images: Sequence[str] | None, crop_size: int, reference_vae: bool = True):
    """(training photographs `{name: array}`, held-out images `[(name, description, image [3, R, R])]`).

    `test_images`: image files (the centre square of each, scaled to `crop_size`) or names of the shipped
    photographs (a centre `crop_size` crop at native scale); default: the ones the reference VAE never saw.
    The bottlenecks are fitted on the shipped photographs the reference VAE was trained on, less any named."""
    from ..data import load_images

    photos = sample_photographs()
    if test_images is None:
        test_images = [name for name in REFERENCE_HELD_OUT if name in photos]
    if not test_images:
        raise UserError("`test_images` is empty: give image files or names of the shipped photographs.")
    unknown = [t for t in test_images if t not in photos and not os.path.isfile(t)]
    if unknown:
        raise UserError(
            f"unknown test images {unknown}: neither image files nor shipped photographs ({', '.join(photos)})."
        )
    names = [t for t in test_images if t in photos]
    train = {k: v for k, v in photos.items() if k not in names and k not in REFERENCE_HELD_OUT}
    if not train:
        raise UserError("holding out these photographs leaves none to fit the bottlenecks on.")
    held = []
    for item in test_images:
        if item in photos:
            crop = photo_crops([photos[item]], crop_size, 1, center_crop=True)[0]
            seen = ", seen by the reference VAE in training" if reference_vae and item not in REFERENCE_HELD_OUT else ""
            held.append((item, f"shipped photograph, centre {crop_size} px crop{seen}", crop))
        else:
            held.append((os.path.basename(item), f"your image, centre square scaled to {crop_size} px", None))
    files = [t for t in test_images if t not in photos]
    if files:
        loaded = iter(load_images(files, crop_size))
        held = [(name, text, next(loaded) if image is None else image) for name, text, image in held]
    return train, held


def run_stable_diffusion_demo(
    model: str | None = None,
    prompt: str = "blue sunflower",
    steps: int = 150,
    vq_atoms: int = 4096,
    num_atoms: int = 256,
    sparsity: int = 4,
    patch_size: int = 2,
    value_bits: int | None = 6,
    resolution: int | None = None,
    num_inference_steps: int | None = None,
    test_images: Sequence[str] | None = None,
    crop_size: int = 256,
    train_crops: int = 48,
    output_dir: str | None = "outputs/demo",
    seed: int = 0,
    num_threads: int | None = None,
) -> dict:
    """The main job: fit a VQ codebook and a dictionary on a VAE's latents of photographs, code held-out
    images with each at about the same bits per latent position, and show what the codes cost.

    By default the VAE is the reference `AutoencoderKL` trained here (`sd_sparse.autoencoders.reference_vae_path`;
    small and weak, see `describe_vae`); the held-out photographs are the two it never saw, and the
    bottlenecks are fitted on `train_crops` random 128 px crops of the 8 it was trained on. `test_images`
    takes image files (or shipped photographs' names) to hold out instead. `model` is a Stable Diffusion
    folder or Hub id: its own VAE then codes, and its U-Net generates `prompt` through
    `DictionaryLatentPipeline` with each bottleneck (a row of the grid). Without `model` the pipeline runs
    once per bottleneck in the offline tiny Stable Diffusion (random-weight U-Net and text encoder) as a
    wiring check, reported in text only: its pictures mean nothing.

    The dictionary codes `patch_size`² latent patches with S = `sparsity` of K = `num_atoms` atoms and
    `value_bits`-bit coefficients; VQ codes each position with one of `vq_atoms` vectors. The defaults
    cost about 12 bits per latent position each. `steps` fitting steps each (Adam for the dictionary, EMA
    for VQ). Threads: see `choose_num_threads`. Writes `grid.png` (per held-out image: the original, the
    VAE's own decode, both coded decodes and their FLIP error maps against the VAE's decode, with a colour
    bar), `results.md` and both fitted bottlenecks to `output_dir`. Returns `{bottleneck name: metrics}`.
    """
    _check_demo_arguments(steps, vq_atoms, num_atoms, sparsity, patch_size, value_bits, crop_size, train_crops)
    clock = DemoClock()
    threads, why = choose_num_threads(num_threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    with quiet_libraries(), contextlib.ExitStack() as restore:
        restore.callback(torch.set_num_threads, previous_threads)
        metrics, text, grid, bottlenecks = _run(
            clock,
            model,
            prompt,
            steps,
            vq_atoms,
            num_atoms,
            sparsity,
            patch_size,
            value_bits,
            resolution,
            num_inference_steps,
            test_images,
            crop_size,
            train_crops,
            seed,
            f"{threads} thread{'s' if threads > 1 else ''} ({why})",
        )
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        grid.save(os.path.join(output_dir, "grid.png"))
        for name, bottleneck in bottlenecks.items():
            bottleneck.save_pretrained(os.path.join(output_dir, "vq" if name.startswith("VQ") else "dictionary"))
    plural = "s" if threads > 1 else ""
    timing = f"Demo time: {clock.elapsed():.1f} s with {threads} thread{plural} ({why})"
    age = process_age()
    if age is not None:
        timing += f"; {age:.1f} s since the process started (Python's imports included)"
    if output_dir:
        with open(os.path.join(output_dir, "results.md"), "w") as f:
            f.write(text + "\n\n" + timing + ".\n")
        clock(f"wrote {os.path.abspath(output_dir)}/: grid.png, results.md, the fitted bottlenecks in vq/, dictionary/")
    print(timing + ".")
    return metrics


def _load_vae(model: str | None):
    """`(vae, pipe)`: the reference VAE and no pipeline, or `model`'s `DictionaryLatentPipeline` and its VAE."""
    from diffusers import AutoencoderKL

    from ..autoencoders.reference import reference_vae_path
    from ..pipelines import DictionaryLatentPipeline

    if model is None:
        return AutoencoderKL.from_pretrained(reference_vae_path()).eval(), None
    pipe = DictionaryLatentPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe.vae, pipe


def _demo_bottlenecks(channels, vq_atoms, num_atoms, sparsity, patch_size, value_bits) -> dict:
    """`{name: (bottleneck, latent crops per step, Adam's learning rate)}`: the VQ and the dictionary."""
    from ..autoencoders import stable_diffusion_dictionary, stable_diffusion_vector_quantizer

    dictionary_name = f"dictionary {patch_size}x{patch_size} K={num_atoms} S={sparsity}" + (
        f" {value_bits}-bit" if value_bits is not None else ""
    )
    # VQ's step costs positions x K (its nearest codes), so it takes 2 crops (512 positions) to the dictionary's
    # 16; 4 gained 0.4 dB at 1.6x the time
    return {
        f"VQ K={vq_atoms}": (stable_diffusion_vector_quantizer(channels, vq_atoms), 2, 3e-3),
        dictionary_name: (
            stable_diffusion_dictionary(
                channels,
                num_atoms,
                sparsity,
                patch_size,
                init_from_data=True,
                value_bits=value_bits,
                value_refit=value_bits is not None,
            ),
            16,
            3e-3,
        ),
    }


def _fit_and_code(clock, bottlenecks, vae, train_latents, held_latents, plain, steps, seed, measure_file):
    """Fits each bottleneck and codes the held-out latents with it: `(metrics, coded decodes, FLIP maps)`, each
    `{name: ...}`; the metrics are against the VAE's own decode `plain`."""
    from ..evaluation.reconstruction import ReconstructionMetrics
    from ..metrics import flip

    positions = held_latents[:, 0].numel()
    metrics, coded, flips = {}, {}, {}
    for i, (name, (bottleneck, batch_size, learning_rate)) in enumerate(bottlenecks.items()):
        torch.manual_seed(seed + i)  # the data-driven initialisation's draws, one stream per bottleneck
        fit(bottleneck, train_latents, steps, batch_size, learning_rate, seed=seed + i)
        scores = ReconstructionMetrics(bottleneck, vae=vae, with_flip=False)
        coded[name] = scores.update(held_latents, reference=plain, return_reconstructions=True)
        scores = scores.compute()
        flips[name] = [flip(plain[j], coded[name][j], colored=False) for j in range(len(plain))]
        scores["flip"] = float(np.mean([mean for mean, _ in flips[name]]))
        if measure_file:  # the codes file's real size (its entropy coder needs the optional constriction)
            with torch.no_grad():
                data = bottleneck.encode(held_latents).to_bytes(bottleneck, vae=vae)
            scores["measured_bits_per_position"] = 8 * len(data) / positions
        metrics[name] = scores
        clock(
            f"fitted {name} ({steps} steps of {batch_size} latent crops): {scores['image_psnr']:.1f} dB and FLIP "
            f"{scores['flip']:.3f} against the VAE's decode, {scores['bits_per_position']:.2f} bits per position"
        )
    return metrics, coded, flips


def _run_prompt(pipe, bottlenecks, metrics, prompt, resolution, num_inference_steps, seed):
    """Runs `DictionaryLatentPipeline` on `prompt` with each bottleneck (the U-Net's latents through it, then the
    VAE's decoder); adds `prompt_latent_psnr` and `prompt_flip` to `metrics`. Returns `(reference image, {name:
    image})`, images `[3, H, W]` in [-1, 1]."""
    from ..metrics import flip

    reference, prompt_images = None, {}
    for name, bottleneck in bottlenecks.items():
        pipe.bottleneck = bottleneck  # re-wraps the VAE (shared weights) with this bottleneck
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
        metrics[name]["prompt_latent_psnr"] = float(out.latent_psnr[0])
        metrics[name]["prompt_flip"] = flip(reference, prompt_images[name], colored=False)
    return reference, prompt_images


def _run(
    clock,
    model,
    prompt,
    steps,
    vq_atoms,
    num_atoms,
    sparsity,
    patch_size,
    value_bits,
    resolution,
    num_inference_steps,
    test_images,
    crop_size,
    train_crops,
    seed,
    threads,
):
    from ..autoencoders import decode_latents
    from ..hub import metrics_table
    from ..metrics import psnr
    from ..offline import tiny_stable_diffusion_path
    from ..pipelines import DictionaryLatentPipeline
    from ..training.fitting import collect_latents
    from .grid import demo_grid

    train, held = _held_out_images(test_images, crop_size, reference_vae=model is None)
    vae, pipe = _load_vae(model)
    vae_text = describe_vae(vae, model)
    clock(f"VAE: {vae_text}")
    clock(f"threads: {threads}")

    images = torch.stack([image for _, _, image in held])
    names = [name for name, _, _ in held]
    crops = photo_crops(train.values(), TRAIN_CROP, train_crops, seed=1)
    train_latents = collect_latents(vae, crops, batch_size=16)
    held_latents = collect_latents(vae, images)
    with torch.no_grad():
        plain = decode_latents(vae, held_latents).clamp(-1, 1)
    vae_psnr = [float(psnr(images[i], plain[i], data_range=2.0)) for i in range(len(held))]
    clock(
        f"encoded {train_crops} random {TRAIN_CROP} px crops of {len(train)} photographs ({', '.join(train)}) "
        f"to fit on; held out: {', '.join(names)}; latents {tuple(held_latents.shape[1:])}. "
        "The VAE's own decode vs the original: " + ", ".join(f"{n} {p:.1f} dB" for n, p in zip(names, vae_psnr)) + "."
    )

    bottlenecks = _demo_bottlenecks(held_latents.shape[1], vq_atoms, num_atoms, sparsity, patch_size, value_bits)
    measure_file = importlib.util.find_spec("constriction") is not None
    metrics, coded, flips = _fit_and_code(
        clock, bottlenecks, vae, train_latents, held_latents, plain, steps, seed, measure_file
    )
    bottlenecks = {name: value[0] for name, value in bottlenecks.items()}

    # DictionaryLatentPipeline: the U-Net's latents through each bottleneck, then the VAE's decoder
    real = model is not None
    if pipe is None:
        pipe = DictionaryLatentPipeline.from_pretrained(tiny_stable_diffusion_path(), vae=vae)
        pipe.set_progress_bar_config(disable=True)
    resolution = resolution or (512 if real else 64)
    num_inference_steps = num_inference_steps or (30 if real else 2)
    reference, prompt_images = _run_prompt(pipe, bottlenecks, metrics, prompt, resolution, num_inference_steps, seed)
    what = f"{model}'s U-Net" if real else "wiring check: the offline tiny Stable Diffusion's random-weight U-Net"
    clock(
        f'ran DictionaryLatentPipeline on "{prompt}" with each bottleneck ({what}, {num_inference_steps} steps, '
        f"{resolution} px)"
    )

    held_text = ", ".join(f"{name} ({text})" for name, text, _ in held)
    lines = [
        "# sd-sparse demo",
        "",
        f"VAE: {vae_text}",
        "",
        f"Held-out images: {held_text}. The bottlenecks were fitted on the latents of {train_crops} random "
        f"{TRAIN_CROP} px crops of {', '.join(train)} ({steps} steps each; {threads}).",
        "",
        "The VAE's own decode against the original (what the VAE loses, before any bottleneck): "
        + ", ".join(f"{n} {p:.1f} dB" for n, p in zip(names, vae_psnr))
        + " PSNR.",
        "",
        "Each bottleneck codes the held-out latents; its decode is compared with the VAE's own decode (what the "
        "bottleneck adds to the VAE's loss):",
        "",
        metrics_table(
            {name: {k: v for k, v in m.items() if not k.startswith("prompt_")} for name, m in metrics.items()}
        ),
        "",
        "Bits per latent position: VQ stores one index (log2 K); the dictionary stores, per "
        f"{patch_size}x{patch_size} patch, which {sparsity} of {num_atoms} atoms it uses and their quantized "
        "values."
        + (
            " The measured column is the size of the entropy-coded codes file (`Codes.to_bytes`)."
            if measure_file
            else " (Install constriction, `pip install 'sd_sparse[compression]'`, to also measure the codes file.)"
        ),
        "",
    ]
    if real:
        lines.append(
            f'Prompt "{prompt}" ({num_inference_steps} steps, seed {seed}, {resolution} px) generated by {model}; '
            "each bottleneck's decode against the decode without bottleneck:"
        )
    else:
        lines.append(
            f'Wiring check, not a result: DictionaryLatentPipeline ran "{prompt}" ({num_inference_steps} steps, '
            f"{resolution} px) in the offline tiny Stable Diffusion, whose U-Net and text encoder have random "
            "weights, so its pictures mean nothing and are not shown. It checks that each fitted bottleneck runs "
            "between the U-Net and the VAE decoder; pass --model with real Stable Diffusion weights for a real "
            "picture. Each coded decode against the decode without bottleneck:"
        )
    lines += ["", "| bottleneck | latent PSNR (dB) | FLIP |", "|---|---:|---:|"]
    lines += [f"| {n} | {m['prompt_latent_psnr']:.2f} | {m['prompt_flip'][0]:.4f} |" for n, m in metrics.items()]
    lines += [
        "",
        "grid.png: one row per held-out image: the original, the VAE's own decode, the VQ and dictionary decodes "
        "and their FLIP error maps against the VAE's decode (0 = no visible difference, 1 = the largest)"
        + (", then a row for the prompt." if real else "."),
    ]
    text = "\n".join(lines)
    print("\n".join(lines[4:]))  # the VAE's paragraph came first

    prompt_row = (prompt, model, num_inference_steps, seed, reference, prompt_images) if real else None
    grid = demo_grid(held, plain, vae_psnr, coded, flips, metrics, crop_size, model=model, prompt_row=prompt_row)
    for m in metrics.values():
        m["prompt_flip"] = m["prompt_flip"][0]
    return metrics, text, grid, bottlenecks
