"""`sd-sparse compress` and `sd-sparse decompress`: images to one codes file through a coded VAE, and back."""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from ..errors import UserError

#: `compress` refuses larger images (after cropping or --resolution) unless --max_pixels is raised
DEFAULT_MAX_PIXELS = 2048 * 2048

VAE_HELP = (
    "a diffusers VAE folder or Hub id of any image or video VAE class (AutoencoderKL, AutoencoderKLFlux2, "
    "AutoencoderDC, AutoencoderKLWan, ...), plain or coded, or a pipeline with a vae/; "
    "'reference' (the default): the reference AutoencoderKL shipped with sd_sparse, trained on photographs"
)
BOTTLENECK_HELP = "a bottleneck folder or Hub id (save_pretrained); optional with a coded --vae"
PRIOR_HELP = (
    "a learned prior over the bottleneck's codes (a CodePrior folder or Hub id, save_pretrained) that codes the "
    "indices and levels instead of the bottleneck's usage prior: a smaller file that decompress reads with the same --prior"
)


def add_compress_parsers(commands) -> None:
    """Adds `compress` and `decompress` to `commands` (the `sd-sparse` subparsers)."""
    compress = commands.add_parser("compress", help="code images with a VAE and a bottleneck into one codes file")
    compress.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help="image files or folders (every image inside, sorted), one size after cropping (or pass --resolution)",
    )
    compress.add_argument("--vae", default="reference", help=VAE_HELP)
    compress.add_argument("--bottleneck", default=None, help=BOTTLENECK_HELP)
    compress.add_argument("--prior", default=None, metavar="DIR", help=PRIOR_HELP)
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
    decompress.add_argument("--vae", default="reference", help=VAE_HELP + "; the one the file was compressed with")
    decompress.add_argument("--bottleneck", default=None, help=BOTTLENECK_HELP + "; the one it was compressed with")
    decompress.add_argument(
        "--prior",
        default=None,
        metavar="DIR",
        help="the learned prior the file was compressed with (--prior of compress)",
    )
    decompress.add_argument(
        "-o",
        "--output_dir",
        required=True,
        help="folder for FILE_STEM_000.png, ... (videos: FILE_STEM_000_0000.png, ...)",
    )


def load_coded_vae(vae_path: str | None, bottleneck_path: str | None):
    """The coded VAE `compress`/`decompress` use: `--vae` (default: the trained reference VAE) with `--bottleneck`."""
    import sd_sparse

    from ..autoencoders.loading import load_bottleneck, load_vae

    vae = load_vae(vae_path)
    bottleneck = load_bottleneck(bottleneck_path) if bottleneck_path else getattr(vae, "bottleneck", None)
    if bottleneck is None:
        raise UserError(f"--bottleneck is required: the VAE ({type(vae).__name__}) has no bottleneck of its own.")
    return sd_sparse.with_bottleneck(vae.eval(), bottleneck.eval())


def load_code_prior(path: str, bottleneck, flag: str = "--prior"):
    """The `CodePrior` saved in `path` (a folder or Hub id, `save_pretrained`), in eval mode, checked to model the
    codes of `bottleneck`. `ValueError` naming `flag` when there is no config, it is not a CodePrior's, or the prior
    models another bottleneck's codes."""
    from ..priors import CodePrior

    try:
        config = CodePrior.load_config(path)
    except OSError as err:
        raise UserError(f"{flag} {path}: no CodePrior config found ({str(err).splitlines()[0]}).") from None
    name = config.get("_class_name")
    if name != CodePrior.__name__:
        raise UserError(f"{flag} {path} holds a {name}, not a CodePrior (sd_sparse.priors.CodePrior).")
    prior = CodePrior.from_pretrained(path).eval()
    try:
        prior.check_bottleneck(bottleneck)
    except UserError as err:
        raise UserError(f"{flag} {path}: {err}") from None
    return prior


def image_paths(paths: Sequence[str]) -> list:
    """IMAGES of `compress`: files as given, folders replaced by the image files inside them (sorted)."""
    from ..data import image_files

    found = []
    for path in paths:
        found.extend(image_files(path, flag="IMAGES") if os.path.isdir(path) else [path])
    return found


def encode_memory_bytes(vae, height: int, width: int) -> int:
    """A rough lower bound on the memory (bytes, float32) a VAE's encoder needs for one `height` × `width`
    image: its widest full-resolution activation, or the self-attention matrix of its mid-block over the
    latent positions when it has one (`AutoencoderKL`; quadratic in the pixels)."""
    from ..autoencoders.identity import downsampling_factor

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
    raise UserError(
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

    from ..autoencoders.identity import downsampling_factor
    from ..data import prepare_image, read_image, to_tensor

    if max_pixels < 1:
        raise UserError(f"--max_pixels must be >= 1, got {max_pixels}.")
    factor = downsampling_factor(coded)
    ph, pw = (factor * p for p in coded.bottleneck.patch_size)
    if resolution is not None:
        if resolution < 1 or resolution % ph or resolution % pw:
            raise UserError(f"--resolution {resolution} must be a multiple of {ph}x{pw} (VAE factor x patch size).")
        check_image_size("--resolution", resolution, resolution, coded, max_pixels)
    tensors = []
    for path in paths:
        image = read_image(path)
        if resolution is not None:
            tensors.append(prepare_image(image, resolution, name=path))
            continue
        w, h = image.size[0] // pw * pw, image.size[1] // ph * ph
        if not h or not w:
            raise UserError(f"{path} is {image.size[0]}x{image.size[1]}: smaller than one {pw}x{ph} block.")
        check_image_size(path, w, h, coded, max_pixels)
        tensor = to_tensor(np.asarray(image))
        top, left = (tensor.shape[1] - h) // 2, (tensor.shape[2] - w) // 2
        tensors.append(tensor[:, top : top + h, left : left + w])
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        listed = ", ".join(f"{p} {t.shape[2]}x{t.shape[1]}" for p, t in zip(paths, tensors))
        raise UserError(f"IMAGES must have one size after cropping ({listed}): pass --resolution to scale them.")
    return torch.stack(tensors)


def run_compress(args: argparse.Namespace) -> str:
    """`sd-sparse compress`: codes the images into one codes file; returns the line to print."""
    from ..codec.container import codes_file_info
    from ..extras import require

    require("constriction", "the codes container")  # before any image is read or encoded
    paths = image_paths(args.images)
    coded = load_coded_vae(args.vae, args.bottleneck)
    prior = load_code_prior(args.prior, coded.bottleneck) if args.prior else None
    from ..autoencoders.families import family_of

    video = family_of(coded).kind == "video"
    if args.video and not video:
        raise UserError(
            f"--video needs a video VAE (AutoencoderKLWan, ...); --vae {args.vae} is a {type(coded).__name__}."
        )
    images = _read_images(paths, coded, args.resolution, args.max_pixels)
    if args.video:  # the frames of one video: [1, 3, T, H, W], encoded at once
        images = images.transpose(0, 1).unsqueeze(0)
        codes = coded.compress(images)
    else:  # one image per VAE call, with a progress bar over several
        codes = coded.compress(images, batch_size=1, progress=len(paths) > 1)
    data = codes.to_bytes(coded.bottleneck, vae=coded, prior=prior)
    tmp = f"{args.output}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.output)
    info = codes_file_info(data)
    claim = coded.bottleneck.bits_per_position
    claimed = f"; the bottleneck claims {claim:.2f}" if claim is not None else ""
    if prior is not None:  # what the prior saved: the same codes against the bottleneck's usage prior
        usage = codes_file_info(codes.to_bytes(coded.bottleneck, vae=coded))
        claimed = (
            f"; coded with the prior {args.prior} (state {info.prior_digest}), without it {usage.num_bytes} bytes = "
            f"{usage.bits_per_position:.2f} bits per latent position{claimed}"
        )
    what = f"a video of {len(paths)} frames" if args.video else f"{len(paths)} image(s)"
    return (
        f"wrote {args.output}: {what} {images.shape[-1]}x{images.shape[-2]}, {info.num_bytes} bytes = "
        f"{info.bits_per_position:.2f} bits per latent position ({info.bits_per_pixel:.4f} bits per pixel){claimed}"
    )


def run_decompress(args: argparse.Namespace) -> str:
    """`sd-sparse decompress`: decodes a codes file to PNG images; returns the line to print."""
    from ..data import to_image
    from ..extras import require

    require("constriction", "the codes container")
    with open(args.file, "rb") as f:
        data = f.read()
    coded = load_coded_vae(args.vae, args.bottleneck)
    prior = load_code_prior(args.prior, coded.bottleneck) if args.prior else None
    from ..codec.codes import Codes

    images = coded.decompress(Codes.from_bytes(data, coded.bottleneck, vae=coded, prior=prior))
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
