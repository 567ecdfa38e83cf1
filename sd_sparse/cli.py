"""The `sd-sparse` command line: `demo`, `demo-patches`, `compress`, `decompress`, `evaluate`, `push`, `pull`,
`figures`."""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from .errors import exit_on_user_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sd-sparse", description="Sparse dictionary bottlenecks for latents.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fit a dictionary and a VQ on a VAE's latents, run the pipeline")
    demo.add_argument("--model", default=None, help="Stable Diffusion folder or Hub id (default: offline tiny SD)")
    demo.add_argument("--prompt", default="blue sunflower")
    demo.add_argument("--steps", type=int, default=300, help="fitting steps for each bottleneck")
    demo.add_argument("--vq-atoms", type=int, default=4096, help="K of the VQ codebook (log2 K bits per position)")
    demo.add_argument("--atoms", type=int, default=256, help="K, the dictionary's atoms")
    demo.add_argument("--sparsity", type=int, default=4, help="S, atoms per coded patch")
    demo.add_argument("--patch-size", type=int, default=2, help="latent patch coded by the dictionary")
    demo.add_argument(
        "--value-bits", type=int, default=6, help="bits per quantized coefficient (0: unquantized float32)"
    )
    demo.add_argument(
        "--test-images", nargs="+", default=None, help="held-out photographs (default: the reference VAE's)"
    )
    demo.add_argument("--crop-size", type=int, default=256, help="side of the held-out centre crops")
    demo.add_argument("--resolution", type=int, default=None, help="prompt image size (default 64 tiny, 512 real)")
    demo.add_argument("--inference-steps", type=int, default=None)
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--seed", type=int, default=0)

    patches = commands.add_parser("demo-patches", help="dictionary vs VQ on 8x8 photo patches (no VAE)")
    patches.add_argument("--steps", type=int, default=600, help="training steps for each bottleneck")
    patches.add_argument("--atoms", type=int, default=512)
    patches.add_argument("--sparsity", type=int, default=5)
    patches.add_argument("--batch-size", type=int, default=1024)
    patches.add_argument("--test-image", default="astronaut", help="the held-out photograph")
    patches.add_argument("--output-dir", default="outputs/demo-patches")
    patches.add_argument("--seed", type=int, default=0)

    vae_help = (
        "a diffusers AutoencoderKL / AutoencoderTiny folder or Hub id, plain or coded, or a pipeline with a vae/ "
        "(default: the offline tiny Stable Diffusion VAE, random weights: for tests and examples)"
    )
    bottleneck_help = "a bottleneck folder or Hub id (save_pretrained); optional with a coded --vae"
    compress = commands.add_parser("compress", help="code images with a VAE and a bottleneck into one codes file")
    compress.add_argument("images", nargs="+", help="image files, one size after cropping (or pass --resolution)")
    compress.add_argument("--vae", default=None, help=vae_help)
    compress.add_argument("--bottleneck", default=None, help=bottleneck_help)
    compress.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="scale each image's centre square to this size (default: centre-crop to a multiple of the VAE's "
        "factor times the patch size)",
    )
    compress.add_argument("-o", "--output", required=True, help="the codes file to write")

    decompress = commands.add_parser("decompress", help="decode a codes file to PNG images")
    decompress.add_argument("file", help="a codes file written by `sd-sparse compress`")
    decompress.add_argument("--vae", default=None, help=vae_help + "; the one the file was compressed with")
    decompress.add_argument("--bottleneck", default=None, help=bottleneck_help + "; the one it was compressed with")
    decompress.add_argument("-o", "--output-dir", required=True, help="folder for FILE_STEM_000.png, ...")

    evaluate = commands.add_parser(
        "evaluate", help="PSNR, SSIM, LPIPS, FLIP and rFID of a saved autoencoder's reconstructions of held-out images"
    )
    evaluate.add_argument(
        "model", metavar="MODEL", help="a folder: a SparseAutoencoder (what the trainers save) or a diffusers VAE"
    )
    evaluate.add_argument("--data", required=True, metavar="DIR", help="a folder of held-out images")
    evaluate.add_argument(
        "--resolution", type=int, default=None, help="side of the centre crops (default: the VAE's sample size or 256)"
    )
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--max-images", type=int, default=None, help="score only the first N images")
    evaluate.add_argument("--bottleneck", default=None, help="a bottleneck folder to put in a diffusers VAE")
    evaluate.add_argument("--perceptual-weights", default=None, metavar="DIR", help="local LPIPS weights")
    evaluate.add_argument(
        "--inception-weights",
        default=None,
        metavar="FILE",
        help="local FID Inception weights (torch-fidelity's; default: $SD_SPARSE_INCEPTION_WEIGHTS)",
    )
    evaluate.add_argument("--num-workers", type=int, default=0, help="image-decoding processes")
    evaluate.add_argument(
        "--output-dir", default=None, help="for metrics.json and metrics.md (default: MODEL/evaluation)"
    )

    push = commands.add_parser("push", help="upload a saved bottleneck or pipeline folder to the Hub")
    push.add_argument("folder", help="a folder written by save_pretrained")
    push.add_argument("repo_id")
    push.add_argument("--base-model", default=None, help="the SD model whose VAE the bottleneck was fitted on")
    push.add_argument("--metrics", default=None, help="a metrics.json from fit_sd_bottleneck.py")
    push.add_argument("--token", default=None)
    push.add_argument("--private", action="store_true")

    pull = commands.add_parser("pull", help="download a bottleneck or pipeline repo from the Hub")
    pull.add_argument("repo_id")
    pull.add_argument("--local-dir", default=None, help="where to put it (default: the Hub cache)")
    pull.add_argument("--revision", default=None)
    pull.add_argument("--token", default=None)

    from .figures.cli import add_figures_arguments

    add_figures_arguments(
        commands.add_parser("figures", help="atoms, UMAP, singular components, training curves, FLIP maps (PNG)")
    )
    return parser


def _push(args) -> str:
    """Loads the folder (a bottleneck or a pipeline) and the metrics first, so a bad folder fails
    before the Hub is touched; then checks the token and creates the repo; then uploads."""
    from .hub import create_hub_repo

    if not os.path.isdir(args.folder):
        raise ValueError(f"folder {args.folder} does not exist.")
    private = args.private or None
    if os.path.isfile(os.path.join(args.folder, "model_index.json")):
        from .pipelines import DictionaryLatentPipeline

        pipe = DictionaryLatentPipeline.from_pretrained(args.folder)
        create_hub_repo(args.repo_id, token=args.token, private=private)
        return pipe.push_to_hub(args.repo_id, token=args.token, private=private)
    config_path = os.path.join(args.folder, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{args.folder} holds neither a bottleneck (config.json) nor a pipeline (model_index.json).")
    import sd_sparse

    with open(config_path) as f:
        class_name = json.load(f).get("_class_name")
    cls = getattr(sd_sparse, str(class_name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, sd_sparse.Bottleneck):
        raise ValueError(f"{config_path} names {class_name!r}, which is not an sd_sparse bottleneck.")
    metrics = None
    if args.metrics:
        with open(args.metrics) as f:
            metrics = json.load(f)
        metrics = metrics.get("metrics", {}).get(os.path.basename(os.path.normpath(args.folder)), metrics)
    bottleneck = cls.from_pretrained(args.folder)
    create_hub_repo(args.repo_id, token=args.token, private=private)
    return bottleneck.push_to_hub(
        args.repo_id, token=args.token, private=private, base_model=args.base_model, metrics=metrics
    )


def _load_coded_vae(vae_path: str | None, bottleneck_path: str | None):
    """The coded VAE `compress`/`decompress` use: `--vae` (default: the offline tiny SD VAE) with `--bottleneck`."""
    import sd_sparse

    from .autoencoders.loading import load_bottleneck, load_vae

    vae = load_vae(vae_path)
    bottleneck = load_bottleneck(bottleneck_path) if bottleneck_path else getattr(vae, "bottleneck", None)
    if bottleneck is None:
        raise ValueError(f"--bottleneck is required: the VAE ({type(vae).__name__}) has no bottleneck of its own.")
    return sd_sparse.with_bottleneck(vae.eval(), bottleneck.eval())


def _read_images(paths, coded, resolution: int | None):
    """Image files → `[B, 3, H, W]` in [-1, 1]: centre squares scaled to `resolution`, or centre crops to
    a multiple of the VAE factor × the bottleneck's patch size; all the same size."""
    import numpy as np
    import torch

    from .codec.container import vae_downsampling
    from .data import prepare_image, read_image, to_tensor

    factor = vae_downsampling(coded) or 8
    ph, pw = (factor * p for p in coded.bottleneck.patch_size)
    tensors = []
    for path in paths:
        image = read_image(path)
        if resolution is not None:
            if resolution % ph or resolution % pw:
                raise ValueError(
                    f"--resolution {resolution} must be a multiple of {ph}x{pw} (VAE factor x patch size)."
                )
            tensors.append(prepare_image(image, resolution, name=path))
            continue
        tensor = to_tensor(np.asarray(image))
        h, w = tensor.shape[1] // ph * ph, tensor.shape[2] // pw * pw
        if not h or not w:
            raise ValueError(f"{path} is {tensor.shape[2]}x{tensor.shape[1]}: smaller than one {pw}x{ph} block.")
        top, left = (tensor.shape[1] - h) // 2, (tensor.shape[2] - w) // 2
        tensors.append(tensor[:, top : top + h, left : left + w])
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        listed = ", ".join(f"{p} {t.shape[2]}x{t.shape[1]}" for p, t in zip(paths, tensors))
        raise ValueError(f"IMAGES must have one size after cropping ({listed}): pass --resolution to scale them.")
    return torch.stack(tensors)


def _compress(args) -> str:
    from .codec.container import codes_file_info

    coded = _load_coded_vae(args.vae, args.bottleneck)
    images = _read_images(args.images, coded, args.resolution)
    data = coded.compress(images).to_bytes(coded.bottleneck, vae=coded)
    tmp = f"{args.output}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.output)
    info = codes_file_info(data)
    claim = coded.bottleneck.bits_per_position
    claimed = f"; the bottleneck claims {claim:.2f}" if claim is not None else ""
    return (
        f"wrote {args.output}: {len(args.images)} image(s) {images.shape[3]}x{images.shape[2]}, {info.num_bytes} bytes = "
        f"{info.bits_per_position:.2f} bits per latent position ({info.bits_per_pixel:.4f} bits per pixel){claimed}"
    )


def _decompress(args) -> str:
    from .data import to_image

    with open(args.file, "rb") as f:
        data = f.read()
    coded = _load_coded_vae(args.vae, args.bottleneck)
    images = coded.decompress(data)
    from PIL import Image

    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.file))[0]
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(args.output_dir, f"{stem}_{i:03d}.png")
        Image.fromarray(to_image(image)).save(path)
        paths.append(path)
    return f"wrote {len(paths)} image(s) to {args.output_dir}: {', '.join(os.path.basename(p) for p in paths)}"


def _pull(args) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(args.repo_id, revision=args.revision, local_dir=args.local_dir, token=args.token)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. A user error (a bad value, a missing folder, no Hub token, an unreachable Hub,
    a repo that does not exist) prints `sd-sparse COMMAND: message` and exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with exit_on_user_error(f"{parser.prog} {args.command}"):
        if args.command == "demo":
            from .demo import run_stable_diffusion_demo

            run_stable_diffusion_demo(
                model=args.model,
                prompt=args.prompt,
                steps=args.steps,
                vq_atoms=args.vq_atoms,
                num_atoms=args.atoms,
                sparsity=args.sparsity,
                patch_size=args.patch_size,
                value_bits=args.value_bits or None,
                resolution=args.resolution,
                num_inference_steps=args.inference_steps,
                test_images=args.test_images,
                crop_size=args.crop_size,
                output_dir=args.output_dir,
                seed=args.seed,
            )
        elif args.command == "demo-patches":
            from .demo import run_demo

            run_demo(
                steps=args.steps,
                num_atoms=args.atoms,
                sparsity=args.sparsity,
                batch_size=args.batch_size,
                test_image=args.test_image,
                output_dir=args.output_dir,
                seed=args.seed,
            )
        elif args.command == "compress":
            print(_compress(args))
        elif args.command == "decompress":
            print(_decompress(args))
        elif args.command == "evaluate":
            from .evaluation.model_evaluation import METRICS_JSON, METRICS_MARKDOWN, evaluate_model, metrics_markdown

            metrics = evaluate_model(
                args.model,
                args.data,
                bottleneck=args.bottleneck,
                resolution=args.resolution,
                batch_size=args.batch_size,
                max_images=args.max_images,
                perceptual_weights=args.perceptual_weights,
                inception_weights=args.inception_weights,
                output_dir=args.output_dir,
                num_workers=args.num_workers,
            )
            print(metrics_markdown(metrics))
            print(f"wrote {os.path.join(metrics['output_dir'], METRICS_JSON)} and {METRICS_MARKDOWN}")
        elif args.command == "push":
            print(_push(args))
        elif args.command == "pull":
            print(_pull(args))
        elif args.command == "figures":
            from .figures.cli import run_figures

            paths = run_figures(args)
            print(f"wrote {len(paths)} figure(s) to {args.output_dir}: {', '.join(os.path.basename(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
