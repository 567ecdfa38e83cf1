"""The `sd-sparse` command line: `demo`, `demo-patches`, `compress`, `decompress`, `evaluate`, `push`, `pull`,
`figures`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .errors import exit_on_user_error

#: `compress` refuses larger images (after cropping or --resolution) unless --max_pixels is raised
DEFAULT_MAX_PIXELS = 2048 * 2048


class SnakeCaseArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose long flags are spelled `--snake_case`, the dashed spelling a deprecated alias
    (`snake_case_flags`, applied before parsing): an abbreviation that matches both spellings of one flag is
    not ambiguous. The `sd-sparse` command line and the benchmark scripts use it."""

    def parse_known_args(self, args=None, namespace=None):
        snake_case_flags(self)
        return super().parse_known_args(args, namespace)

    def _get_option_tuples(self, option_string):
        tuples, seen = [], set()
        # the canonical spelling first, so an abbreviation resolves to it
        for option in sorted(super()._get_option_tuples(option_string), key=lambda t: t[1] not in t[0].option_strings):
            if id(option[0]) not in seen:
                seen.add(id(option[0]))
                tuples.append(option)
        return tuples


def _snake_case(option: str) -> str:
    return "--" + option[2:].replace("-", "_")


def _warn_dashed(action_class: type) -> type:
    """`action_class` whose call prints a one-line deprecation warning when a dashed alias was used."""

    class DashedAliasAction(action_class):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in self.dashed_aliases:
                canonical = self.dashed_aliases[option_string]
                print(f"{parser.prog}: warning: {option_string} is deprecated, use {canonical}", file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    DashedAliasAction.__name__ = DashedAliasAction.__qualname__ = f"DashedAlias{action_class.__name__}"
    return DashedAliasAction


def snake_case_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Makes `--snake_case` the one spelling of every long flag of `parser` and its subcommands (what
    `--help` and the errors show, as in the train/*.py scripts); the dashed spelling (`--output-dir`) still
    works as a deprecated alias that prints a one-line warning on stderr. Short flags (`-o`) stay. Applying it
    twice changes nothing."""
    if getattr(parser, "_snake_case_flags", False):
        return parser
    parser._snake_case_flags = True
    classes = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):
                snake_case_flags(subparser)
            continue
        aliases = {}
        for option in action.option_strings:
            if not option.startswith("--") or ("-" not in option[2:] and "_" not in option[2:]):
                continue
            canonical = _snake_case(option)
            dashed = "--" + option[2:].replace("_", "-")
            if parser._option_string_actions.get(canonical, action) is not action:
                continue  # both spellings name different flags: leave them alone
            if parser._option_string_actions.get(dashed, action) is not action:
                continue
            parser._option_string_actions[canonical] = parser._option_string_actions[dashed] = action
            aliases[dashed] = canonical
        if not aliases:
            continue
        action.option_strings = list(
            dict.fromkeys(_snake_case(o) if o in aliases else o for o in action.option_strings)
        )
        if type(action) not in classes:
            classes[type(action)] = _warn_dashed(type(action))
        action.__class__ = classes[type(action)]
        action.dashed_aliases = aliases
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = SnakeCaseArgumentParser(prog="sd-sparse", description="Sparse dictionary bottlenecks for latents.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fit a dictionary and a VQ on a VAE's latents, run the pipeline")
    demo.add_argument("--model", default=None, help="Stable Diffusion folder or Hub id (default: offline tiny SD)")
    demo.add_argument("--prompt", default="blue sunflower")
    demo.add_argument("--steps", type=int, default=150, help="fitting steps for each bottleneck")
    demo.add_argument("--vq_atoms", type=int, default=4096, help="K of the VQ codebook (log2 K bits per position)")
    demo.add_argument("--atoms", type=int, default=256, help="K, the dictionary's atoms")
    demo.add_argument("--sparsity", type=int, default=4, help="S, atoms per coded patch")
    demo.add_argument("--patch_size", type=int, default=2, help="latent patch coded by the dictionary")
    demo.add_argument(
        "--value_bits", type=int, default=6, help="bits per quantized coefficient (0: unquantized float32)"
    )
    demo.add_argument(
        "--test_images",
        nargs="+",
        default=None,
        metavar="IMAGE",
        help="held-out images to code: image files (centre square scaled to --crop_size) or names of the shipped "
        "photographs (default: the two the reference VAE never saw)",
    )
    demo.add_argument("--crop_size", type=int, default=256, help="side of the held-out centre crops")
    demo.add_argument(
        "--train_crops", type=int, default=48, help="random 128 px training crops whose latents the bottlenecks fit"
    )
    demo.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="torch threads (default: OMP_NUM_THREADS if set, else the cores other processes leave free, at least 1)",
    )
    demo.add_argument("--resolution", type=int, default=None, help="prompt image size (default 64 tiny, 512 real)")
    demo.add_argument("--inference_steps", type=int, default=None)
    demo.add_argument("--output_dir", default="outputs/demo")
    demo.add_argument("--seed", type=int, default=0)

    patches = commands.add_parser("demo-patches", help="dictionary vs VQ on 8x8 photo patches (no VAE)")
    patches.add_argument("--steps", type=int, default=600, help="training steps for each bottleneck")
    patches.add_argument("--atoms", type=int, default=512)
    patches.add_argument("--sparsity", type=int, default=5)
    patches.add_argument("--batch_size", type=int, default=1024)
    patches.add_argument("--test_image", default="astronaut", help="the held-out photograph")
    patches.add_argument("--output_dir", default="outputs/demo-patches")
    patches.add_argument("--seed", type=int, default=0)

    vae_help = (
        "a diffusers VAE folder or Hub id of any image or video VAE class (AutoencoderKL, AutoencoderKLFlux2, "
        "AutoencoderDC, AutoencoderKLWan, ...), plain or coded, or a pipeline with a vae/; "
        "'reference' (the default): the reference AutoencoderKL shipped with sd_sparse, trained on photographs"
    )
    bottleneck_help = "a bottleneck folder or Hub id (save_pretrained); optional with a coded --vae"
    compress = commands.add_parser("compress", help="code images with a VAE and a bottleneck into one codes file")
    compress.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help="image files or folders (every image inside, sorted), one size after cropping (or pass --resolution)",
    )
    compress.add_argument("--vae", default="reference", help=vae_help)
    compress.add_argument("--bottleneck", default=None, help=bottleneck_help)
    compress.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="scale each image's centre square to this size (default: centre-crop to a multiple of the VAE's "
        "factor times the patch size)",
    )
    compress.add_argument(
        "--max_pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images larger than this after cropping (the VAE's attention grows with the square of the "
        f"pixels); pass --resolution to scale them down (default: {DEFAULT_MAX_PIXELS} = 2048x2048)",
    )
    compress.add_argument(
        "--video",
        action="store_true",
        help="IMAGES are the frames of one video, in order (a video VAE: Wan, HunyuanVideo, LTX, ...); "
        "decompress then writes FILE_STEM_000_0000.png, ... (video, frame)",
    )
    compress.add_argument("-o", "--output", required=True, help="the codes file to write")

    decompress = commands.add_parser("decompress", help="decode a codes file to PNG images")
    decompress.add_argument("file", help="a codes file written by `sd-sparse compress`")
    decompress.add_argument("--vae", default="reference", help=vae_help + "; the one the file was compressed with")
    decompress.add_argument("--bottleneck", default=None, help=bottleneck_help + "; the one it was compressed with")
    decompress.add_argument(
        "-o",
        "--output_dir",
        required=True,
        help="folder for FILE_STEM_000.png, ... (videos: FILE_STEM_000_0000.png, ...)",
    )

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
    evaluate.add_argument("--batch_size", type=int, default=8)
    evaluate.add_argument("--max_images", type=int, default=None, help="score only the first N images")
    evaluate.add_argument("--bottleneck", default=None, help="a bottleneck folder to put in a diffusers VAE")
    evaluate.add_argument("--perceptual_weights", default=None, metavar="DIR", help="local LPIPS weights")
    evaluate.add_argument(
        "--inception_weights",
        default=None,
        metavar="FILE",
        help="local FID Inception weights (torch-fidelity's; default: $SD_SPARSE_INCEPTION_WEIGHTS)",
    )
    evaluate.add_argument("--num_workers", type=int, default=0, help="image-decoding processes")
    evaluate.add_argument(
        "--output_dir", default=None, help="for metrics.json and metrics.md (default: MODEL/evaluation)"
    )

    push = commands.add_parser("push", help="upload a saved bottleneck or pipeline folder to the Hub")
    push.add_argument("folder", help="a folder written by save_pretrained")
    push.add_argument("repo_id")
    push.add_argument("--base_model", default=None, help="the SD model whose VAE the bottleneck was fitted on")
    push.add_argument("--metrics", default=None, help="a metrics.json from fit_sd_bottleneck.py")
    push.add_argument("--hub_token", "--token", dest="token", default=None, help="a Hugging Face token")
    push.add_argument("--private", action="store_true")

    pull = commands.add_parser("pull", help="download a bottleneck or pipeline repo from the Hub")
    pull.add_argument("repo_id")
    pull.add_argument("--local_dir", default=None, help="where to put it (default: the Hub cache)")
    pull.add_argument("--revision", default=None)
    pull.add_argument("--hub_token", "--token", dest="token", default=None, help="a Hugging Face token")

    from .figures.cli import add_figures_arguments

    add_figures_arguments(
        commands.add_parser("figures", help="atoms, UMAP, singular components, training curves, FLIP maps (PNG)")
    )
    return snake_case_flags(parser)  # one flag style: --snake_case, the dashed spelling a deprecated alias


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
    """The coded VAE `compress`/`decompress` use: `--vae` (default: the trained reference VAE) with `--bottleneck`."""
    import sd_sparse

    from .autoencoders.loading import load_bottleneck, load_vae

    vae = load_vae(vae_path)
    bottleneck = load_bottleneck(bottleneck_path) if bottleneck_path else getattr(vae, "bottleneck", None)
    if bottleneck is None:
        raise ValueError(f"--bottleneck is required: the VAE ({type(vae).__name__}) has no bottleneck of its own.")
    return sd_sparse.with_bottleneck(vae.eval(), bottleneck.eval())


def image_paths(paths: Sequence[str]) -> list:
    """IMAGES of `compress`: files as given, folders replaced by the image files inside them (sorted)."""
    from .data import image_files

    found = []
    for path in paths:
        found.extend(image_files(path, flag="IMAGES") if os.path.isdir(path) else [path])
    return found


def encode_memory_bytes(vae, height: int, width: int) -> int:
    """A rough lower bound on the memory (bytes, float32) a VAE's encoder needs for one `height` × `width`
    image: its widest full-resolution activation, or the self-attention matrix of its mid-block over the
    latent positions when it has one (`AutoencoderKL`; quadratic in the pixels)."""
    from .autoencoders.identity import downsampling_factor

    config = vae.config
    widths = config.get("block_out_channels") or config.get("encoder_block_out_channels") or (128,)
    activations = 3 * height * width * int(widths[0]) * 4  # input of a resnet block, its output, its norm
    attention = 0
    if "down_block_types" in config and config.get("mid_block_add_attention", True):
        factor = downsampling_factor(vae)
        positions = (height // factor) * (width // factor)
        attention = positions * positions * 4
    return max(activations, attention)


def check_image_size(path: str, width: int, height: int, vae, max_pixels: int) -> None:
    """`ValueError` (before any encoding) when an image of `width` × `height` is over `max_pixels`, with the
    memory its encoding would need and the flags that help."""
    if width * height <= max_pixels:
        return
    gib = encode_memory_bytes(vae, height, width) / 2**30
    raise ValueError(
        f"{path} is {width}x{height} ({width * height / 1e6:.1f} MP), over --max_pixels {max_pixels}: encoding it "
        f"would need about {gib:,.0f} GiB and could run for hours. Pass --resolution (e.g. --resolution 1024) to "
        "scale it down, or raise --max_pixels."
    )


def _read_images(paths, coded, resolution: int | None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Image files → `[B, 3, H, W]` in [-1, 1]: centre squares scaled to `resolution`, or centre crops to
    a multiple of the VAE factor × the bottleneck's patch size; all the same size. An image over
    `max_pixels` (after that) is a `ValueError` before anything is encoded."""
    import numpy as np
    import torch

    from .autoencoders.identity import downsampling_factor
    from .data import prepare_image, read_image, to_tensor

    if max_pixels < 1:
        raise ValueError(f"--max_pixels must be >= 1, got {max_pixels}.")
    factor = downsampling_factor(coded)
    ph, pw = (factor * p for p in coded.bottleneck.patch_size)
    if resolution is not None:
        if resolution < 1 or resolution % ph or resolution % pw:
            raise ValueError(f"--resolution {resolution} must be a multiple of {ph}x{pw} (VAE factor x patch size).")
        check_image_size("--resolution", resolution, resolution, coded, max_pixels)
    tensors = []
    for path in paths:
        image = read_image(path)
        if resolution is not None:
            tensors.append(prepare_image(image, resolution, name=path))
            continue
        w, h = image.size[0] // pw * pw, image.size[1] // ph * ph
        if not h or not w:
            raise ValueError(f"{path} is {image.size[0]}x{image.size[1]}: smaller than one {pw}x{ph} block.")
        check_image_size(path, w, h, coded, max_pixels)
        tensor = to_tensor(np.asarray(image))
        top, left = (tensor.shape[1] - h) // 2, (tensor.shape[2] - w) // 2
        tensors.append(tensor[:, top : top + h, left : left + w])
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        listed = ", ".join(f"{p} {t.shape[2]}x{t.shape[1]}" for p, t in zip(paths, tensors))
        raise ValueError(f"IMAGES must have one size after cropping ({listed}): pass --resolution to scale them.")
    return torch.stack(tensors)


def _compress(args) -> str:
    from .codec.container import codes_file_info
    from .extras import require

    require("constriction", "the codes container")  # before any image is read or encoded
    paths = image_paths(args.images)
    coded = _load_coded_vae(args.vae, args.bottleneck)
    from .autoencoders.families import family_of

    video = family_of(coded).kind == "video"
    if args.video and not video:
        raise ValueError(
            f"--video needs a video VAE (AutoencoderKLWan, ...); --vae {args.vae} is a {type(coded).__name__}."
        )
    images = _read_images(paths, coded, args.resolution, args.max_pixels)
    if args.video:  # the frames of one video: [1, 3, T, H, W], encoded at once
        images = images.transpose(0, 1).unsqueeze(0)
        codes = coded.compress(images)
    else:  # one image per VAE call, with a progress bar over several
        codes = coded.compress(images, batch_size=1, progress=len(paths) > 1)
    data = codes.to_bytes(coded.bottleneck, vae=coded)
    tmp = f"{args.output}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.output)
    info = codes_file_info(data)
    claim = coded.bottleneck.bits_per_position
    claimed = f"; the bottleneck claims {claim:.2f}" if claim is not None else ""
    what = f"a video of {len(paths)} frames" if args.video else f"{len(paths)} image(s)"
    return (
        f"wrote {args.output}: {what} {images.shape[-1]}x{images.shape[-2]}, {info.num_bytes} bytes = "
        f"{info.bits_per_position:.2f} bits per latent position ({info.bits_per_pixel:.4f} bits per pixel){claimed}"
    )


def _decompress(args) -> str:
    from .data import to_image
    from .extras import require

    require("constriction", "the codes container")
    with open(args.file, "rb") as f:
        data = f.read()
    coded = _load_coded_vae(args.vae, args.bottleneck)
    images = coded.decompress(data)
    from PIL import Image

    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.file))[0]
    paths = []
    if images.dim() == 5:  # videos [B, 3, T, H, W]: one PNG per frame
        for i, video in enumerate(images):
            for t in range(video.shape[1]):
                path = os.path.join(args.output_dir, f"{stem}_{i:03d}_{t:04d}.png")
                Image.fromarray(to_image(video[:, t])).save(path)
                paths.append(path)
        what = f"{images.shape[0]} video(s) of {images.shape[2]} frames"
    else:
        for i, image in enumerate(images):
            path = os.path.join(args.output_dir, f"{stem}_{i:03d}.png")
            Image.fromarray(to_image(image)).save(path)
            paths.append(path)
        what = f"{len(paths)} image(s)"
    shown = ", ".join(os.path.basename(p) for p in paths[:8]) + (", ..." if len(paths) > 8 else "")
    return f"wrote {what} to {args.output_dir}: {shown}"


def _pull(args) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(args.repo_id, revision=args.revision, local_dir=args.local_dir, token=args.token)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. A user error (a bad value, a missing folder, no Hub token, an unreachable Hub,
    a repo that does not exist) prints `sd-sparse COMMAND: message` and exits with status 2."""
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}"
    with warnings.catch_warnings(), exit_on_user_error(prog):
        # a warning is one line `sd-sparse COMMAND: warning: message` (no source line)
        warnings.showwarning = lambda message, category, *_, **__: print(
            f"{prog}: warning: {message}", file=sys.stderr, flush=True
        )
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
                train_crops=args.train_crops,
                output_dir=args.output_dir,
                seed=args.seed,
                num_threads=args.num_threads,
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
