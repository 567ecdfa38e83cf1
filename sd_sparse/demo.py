"""The demos: `sd-sparse demo` (`run_stable_diffusion_demo`, the main job) and `sd-sparse demo-patches` (`run_demo`).

`sd-sparse demo` fits a VQ codebook and a dictionary bottleneck on a trained VAE's latents of photographs and
codes held-out images with each at about the same bits per latent position; `grid.png` shows the original, the
VAE's own decode, both coded decodes and their FLIP error maps. `sd-sparse demo-patches` needs no VAE: every
8×8 colour patch is one coded vector (192 values in [-1, 1]); both bottlenecks learn on the patches of all
shipped photographs but the held-out one, then code the held-out photograph.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from .bottlenecks import DictionaryBottleneck, VectorQuantizer
from .data import photo_crops, photo_patches, sample_photographs, split_by_image, to_image, to_tensor
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


#: the shipped photographs the reference VAE never saw: the held-out side of its training run's split by image
#: (`--validation_split 0.2`, seed 0, over the 10 shipped photographs; `sd_sparse.data.reference_split`), named
#: here so that the demo holds out the same two even where scikit-learn's photographs are not installed
REFERENCE_HELD_OUT = ("chelsea", "flower")

#: the side of the random training crops whose latents the bottlenecks are fitted on
TRAIN_CROP = 128


def _check_demo_arguments(steps, vq_atoms, num_atoms, sparsity, patch_size, value_bits, crop_size, train_crops=1):
    from .codec.quantization import check_value_bits

    for name, value, low in [
        ("steps", steps, 1),
        ("vq_atoms", vq_atoms, 2),
        ("num_atoms", num_atoms, 2),
        ("sparsity", sparsity, 1),
        ("patch_size", patch_size, 1),
        ("train_crops", train_crops, 1),
    ]:
        if value < low:
            raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    if sparsity > num_atoms:
        raise ValueError(f"`sparsity` ({sparsity}) must be at most `num_atoms` ({num_atoms}).")
    if crop_size < 8 or crop_size % 8:
        raise ValueError(f"`crop_size` must be a multiple of 8 (the VAE's downsampling), got {crop_size}.")
    check_value_bits(value_bits)


def physical_cores() -> int:
    """Physical CPU cores (distinct `(physical id, core id)` pairs of /proc/cpuinfo; `os.cpu_count()` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            cores, physical = set(), "0"
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    cores.add((physical, value.strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def choose_num_threads(num_threads: int | None = None) -> tuple:
    """`(threads, reason)`: how many threads torch should use for the demo, and why.

    `num_threads` wins; then `OMP_NUM_THREADS` (torch already reads it); otherwise the cores this process
    may use (physical cores, at most `os.sched_getaffinity`) less those other processes keep busy (the
    1-minute load average), at least 1. Measured on 2 shared cores with other jobs running: 2 threads made
    the VAE encode up to 3x, the bottleneck fitting 3-20x and the whole demo 2.6x slower than 1 thread
    (OpenMP threads wait on each other whenever one is descheduled)."""
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"`num_threads` must be >= 1, got {num_threads}.")
        return num_threads, "--num_threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    cores = physical_cores()
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores, f"{cores} cores"
    threads = max(1, min(cores, int(cores - load + 0.5)))
    return threads, f"{cores} cores, load average {load:.1f}; set OMP_NUM_THREADS to choose"


def _process_age() -> float | None:
    """Seconds since this process started (Linux; None elsewhere): the demo's time including Python's imports."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - started / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@contextlib.contextmanager
def quiet_libraries():
    """diffusers' and transformers' logging at `error` and their progress bars off for the block (restored
    after): no "Loading pipeline components" bars or backend notices between the demo's own lines."""
    from diffusers.utils import logging as diffusers_logging

    saved = [(diffusers_logging, diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled())]
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # pragma: no cover - transformers is a core dependency
        pass
    else:
        saved.append(
            (transformers_logging, transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled())
        )
    for module, _, _ in saved:
        module.set_verbosity_error()
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, verbosity, bars in saved:
            module.set_verbosity(verbosity)
            if bars:
                module.enable_progress_bar()


class _Clock:
    """Prints the demo's lines with the seconds since it started, so a slow step shows where it is."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():5.1f} s] {message}", flush=True)


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
    from .data import load_images

    photos = sample_photographs()
    if test_images is None:
        test_images = [name for name in REFERENCE_HELD_OUT if name in photos]
    if not test_images:
        raise ValueError("`test_images` is empty: give image files or names of the shipped photographs.")
    unknown = [t for t in test_images if t not in photos and not os.path.isfile(t)]
    if unknown:
        raise ValueError(
            f"unknown test images {unknown}: neither image files nor shipped photographs ({', '.join(photos)})."
        )
    names = [t for t in test_images if t in photos]
    train = {k: v for k, v in photos.items() if k not in names and k not in REFERENCE_HELD_OUT}
    if not train:
        raise ValueError("holding out these photographs leaves none to fit the bottlenecks on.")
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

    By default the VAE is the reference `AutoencoderKL` trained here (`sd_sparse.testing.reference_vae_path`;
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
    clock = _Clock()
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
    age = _process_age()
    if age is not None:
        timing += f"; {age:.1f} s since the process started (Python's imports included)"
    if output_dir:
        with open(os.path.join(output_dir, "results.md"), "w") as f:
            f.write(text + "\n\n" + timing + ".\n")
        clock(f"wrote {os.path.abspath(output_dir)}/: grid.png, results.md, the fitted bottlenecks in vq/, dictionary/")
    print(timing + ".")
    return metrics


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
    from diffusers import AutoencoderKL

    from .autoencoders import decode_latents, stable_diffusion_dictionary, stable_diffusion_vector_quantizer
    from .evaluation.reconstruction import ReconstructionMetrics
    from .hub import metrics_table
    from .metrics import flip, psnr
    from .pipelines import DictionaryLatentPipeline
    from .testing import reference_vae_path, tiny_stable_diffusion_path
    from .training.fitting import collect_latents

    train, held = _held_out_images(test_images, crop_size, reference_vae=model is None)
    if model is None:
        vae = AutoencoderKL.from_pretrained(reference_vae_path()).eval()
        pipe = None
    else:
        pipe = DictionaryLatentPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        vae = pipe.vae
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
    channels, positions = held_latents.shape[1], held_latents[:, 0].numel()
    clock(
        f"encoded {train_crops} random {TRAIN_CROP} px crops of {len(train)} photographs ({', '.join(train)}) "
        f"to fit on; held out: {', '.join(names)}; latents {tuple(held_latents.shape[1:])}. "
        "The VAE's own decode vs the original: " + ", ".join(f"{n} {p:.1f} dB" for n, p in zip(names, vae_psnr)) + "."
    )

    dictionary_name = f"dictionary {patch_size}x{patch_size} K={num_atoms} S={sparsity}" + (
        f" {value_bits}-bit" if value_bits is not None else ""
    )
    # (bottleneck, latent crops per step, Adam's learning rate): VQ's step costs positions x K (its nearest
    # codes), so it takes 2 crops (512 positions) to the dictionary's 16; 4 gained 0.4 dB at 1.6x the time
    bottlenecks = {
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
    measure_file = importlib.util.find_spec("constriction") is not None
    metrics, coded, flips = {}, {}, {}
    for i, (name, (bottleneck, batch_size, learning_rate)) in enumerate(bottlenecks.items()):
        torch.manual_seed(seed + i)  # the data-driven initialisation's draws, one stream per bottleneck
        fit(bottleneck, train_latents, steps, batch_size, learning_rate, seed=seed + i)
        scores = ReconstructionMetrics(bottleneck, vae=vae, with_flip=False)
        coded[name] = scores.update(held_latents, reference=plain, return_reconstructions=True)
        scores = scores.compute()
        flips[name] = [flip(plain[j], coded[name][j], colored=False) for j in range(len(held))]
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
    bottlenecks = {name: value[0] for name, value in bottlenecks.items()}

    # DictionaryLatentPipeline: the U-Net's latents through each bottleneck, then the VAE's decoder
    real = model is not None
    if pipe is None:
        pipe = DictionaryLatentPipeline.from_pretrained(tiny_stable_diffusion_path(), vae=vae)
        pipe.set_progress_bar_config(disable=True)
    resolution = resolution or (512 if real else 64)
    num_inference_steps = num_inference_steps or (30 if real else 2)
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

    # the grid: every cell labelled, none empty
    from .evaluation.image_grid import colorize, labelled_grid, text_panel

    panel_size = max(256, crop_size)
    panels, captions = [], []
    for row, (name, description, image) in enumerate(held):
        cells = [to_image(image), to_image(plain[row])]
        texts = [f"original: {name} ({description})", f"VAE decode, no bottleneck: {vae_psnr[row]:.1f} dB vs original"]
        maps, map_texts = [], []
        for method, images in coded.items():
            bits = metrics[method].get("measured_bits_per_position", metrics[method]["bits_per_position"])
            versus = float(psnr(plain[row], images[row], data_range=2.0))
            original = float(psnr(images[row], image, data_range=2.0))
            cells.append(to_image(images[row]))
            texts.append(
                f"{method}: {bits:.1f} bits/position; {versus:.1f} dB vs VAE decode, {original:.1f} dB vs original"
            )
            mean, errors = flips[method][row]
            maps.append(colorize(errors))
            map_texts.append(f"FLIP error, {method.split(' ')[0]} vs VAE decode: mean {mean:.3f}")
        panels.append(cells + maps)
        captions.append(texts + map_texts)
    if real:
        cells = [
            text_panel(f'prompt: "{prompt}"\n\n{model}, {num_inference_steps} steps, seed {seed}', panel_size),
            to_image(reference),
        ]
        texts = ["generated by the U-Net", "VAE decode, no bottleneck"]
        maps, map_texts = [], []
        for name, image in prompt_images.items():
            mean, errors = metrics[name]["prompt_flip"]
            cells.append(to_image(image))
            texts.append(f"{name}: latent PSNR {metrics[name]['prompt_latent_psnr']:.1f} dB")
            maps.append(colorize(errors))
            map_texts.append(f"FLIP error, {name.split(' ')[0]} vs VAE decode: mean {mean:.3f}")
        panels.append(cells + maps)
        captions.append(texts + map_texts)
    for m in metrics.values():
        m["prompt_flip"] = m["prompt_flip"][0]
    if real:
        title = (
            "sd-sparse demo: VQ vs dictionary at about the same bits per latent position, on the latents of "
            f"{model}'s VAE. Each bottleneck's loss is measured against the VAE's own decode (2nd column); FLIP: "
            "0 = no visible difference, 1 = the largest."
        )
    else:
        low, high = min(vae_psnr), max(vae_psnr)
        title = (
            "sd-sparse demo: VQ vs dictionary at about the same bits per latent position, on the latents of the "
            "reference VAE, a small AutoencoderKL (4 channels, f8) trained here on 8 photographs. The VAE is weak: "
            f"its own decode (2nd column, {low:.1f}{'' if low == high else f'-{high:.1f}'} dB vs the original) is "
            "blurry and colour-shifted, with or without a bottleneck. Each bottleneck's loss is measured against "
            "that decode; FLIP: 0 = no visible difference, 1 = the largest."
        )
    grid = labelled_grid(panels, captions, panel_size=panel_size, title=title, colorbar="FLIP error")
    return metrics, text, grid, bottlenecks
