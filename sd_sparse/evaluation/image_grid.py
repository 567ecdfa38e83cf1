"""Image grids whose every panel carries a caption, so a figure reads without the terminal output."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..errors import UserError

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
BORDER = (200, 200, 200)

# matplotlib's "magma" colour map, 256 RGB entries: the one flip-evaluator colours its error maps with
# (`applyMagma=True` is `MAGMA[round(255 * error)]` to float precision), kept here so that a map and its
# colour bar come from one table without matplotlib.
_MAGMA_HEX = (
    "00000401000501010601010802010902020b02020d03030f03031204041405041606051806051a07061c08071e090720"
    "0a08220b09240c09260d0a290e0b2b100b2d110c2f120d31130d34140e36150e38160f3b180f3d19103f1a10421c1044"
    "1d11471e114920114b21114e22115024125325125527125829115a2a115c2c115f2d11612f1163311165331067341069"
    "36106b38106c390f6e3b0f703d0f713f0f72400f74420f75440f764510774710784910784a10794c117a4e117b4f127b"
    "51127c52137c54137d56147d57157e59157e5a167e5c167f5d177f5f187f601880621980641a80651a80671b80681c81"
    "6a1c816b1d816d1d816e1e81701f81721f817320817521817621817822817922827b23827c23827e2482802582812581"
    "8326818426818627818827818928818b29818c29818e2a81902a81912b81932b80942c80962c80982d80992d809b2e7f"
    "9c2e7f9e2f7fa02f7fa1307ea3307ea5317ea6317da8327daa337dab337cad347cae347bb0357bb2357bb3367ab5367a"
    "b73779b83779ba3878bc3978bd3977bf3a77c03a76c23b75c43c75c53c74c73d73c83e73ca3e72cc3f71cd4071cf4070"
    "d0416fd2426fd3436ed5446dd6456cd8456cd9466bdb476adc4869de4968df4a68e04c67e24d66e34e65e44f64e55064"
    "e75263e85362e95462ea5661eb5760ec5860ed5a5fee5b5eef5d5ef05f5ef1605df2625df2645cf3655cf4675cf4695c"
    "f56b5cf66c5cf66e5cf7705cf7725cf8745cf8765cf9785df9795df97b5dfa7d5efa7f5efa815ffb835ffb8560fb8761"
    "fc8961fc8a62fc8c63fc8e64fc9065fd9266fd9467fd9668fd9869fd9a6afd9b6bfe9d6cfe9f6dfea16efea36ffea571"
    "fea772fea973feaa74feac76feae77feb078feb27afeb47bfeb67cfeb77efeb97ffebb81febd82febf84fec185fec287"
    "fec488fec68afec88cfeca8dfecc8ffecd90fecf92fed194fed395fed597fed799fed89afdda9cfddc9efddea0fde0a1"
    "fde2a3fde3a5fde5a7fde7a9fde9aafdebacfcecaefceeb0fcf0b2fcf2b4fcf4b6fcf6b8fcf7b9fcf9bbfcfbbdfcfdbf"
)
MAGMA = np.frombuffer(bytes.fromhex(_MAGMA_HEX), dtype=np.uint8).reshape(256, 3)


def colorize(values, colormap: np.ndarray = MAGMA) -> np.ndarray:
    """Values in [0, 1] (any shape, e.g. FLIP errors `[H, W]` or `[H, W, 1]`) → uint8 RGB `[..., 3]`
    through `colormap` (`[256, 3]` uint8), entry `round(255 * value)`; values outside [0, 1] are clipped."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return colormap[np.clip(np.round(array * 255), 0, 255).astype(np.int64)]


def text_panel(text: str, size: int = 256, font_size: int = 13, margin: int = 10) -> np.ndarray:
    """A uint8 panel `[size, size, 3]` holding `text` (wrapped, dark on light grey, framed): a grid cell
    that says something where there is no picture to show, rather than an empty cell."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    for i, line in enumerate(_wrap(text, font, size - 2 * margin, draw)):
        draw.text((margin, margin + i * (font_size + 4)), line, fill=TEXT, font=font)
    draw.rectangle((0, 0, size - 1, size - 1), outline=BORDER)
    return np.asarray(image)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font, width: int, draw) -> list:
    """`text` broken at spaces into lines no wider than `width` pixels (a long word keeps its own line)."""
    lines: list = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def labelled_grid(
    panels: Sequence[Sequence[Optional[np.ndarray]]],
    captions: Sequence[Sequence[str]],
    panel_size: int = 256,
    row_titles: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    font_size: int = 13,
    gap: int = 6,
    colorbar: Optional[str] = None,
    colormap: np.ndarray = MAGMA,
):
    """A PIL image of `panels` in rows, each panel under its caption.

    Args:
        panels: rows of uint8 images `[H, W, 3]` (or `[H, W]`), `None` for an empty cell. Each is
            resized to `panel_size` × `panel_size` (nearest-neighbour, so small images stay sharp).
        captions: the same shape as `panels`: one caption per cell (wrapped to the panel's width).
        row_titles: an optional title per row, printed left of it.
        title: an optional text across the top (wrapped to the grid's width).
        colorbar: a label for a colour bar drawn right of every row: `colormap` as a vertical gradient
            the height of a panel, 1 at the top and 0 at the bottom, labelled "1" and "0", with this
            label above it (e.g. "FLIP error" for maps made with `colorize`).
        colormap: the colour bar's colours, `[256, 3]` uint8 (default: magma, as flip-evaluator's maps).
    """
    from PIL import Image, ImageDraw

    if len(captions) != len(panels) or any(len(c) != len(p) for c, p in zip(captions, panels)):
        raise UserError("`captions` must have one caption per panel (the same rows and lengths as `panels`).")
    if row_titles is not None and len(row_titles) != len(panels):
        raise UserError(f"`row_titles` must have one title per row ({len(panels)}), got {len(row_titles)}.")
    if not panels or not any(len(row) for row in panels):
        raise UserError("`panels` is empty.")
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = font_size + 4
    caption_lines = max(len(_wrap(c, font, panel_size, measure)) for row in captions for c in row)
    caption_height = caption_lines * line_height + 4
    side = 0
    if row_titles is not None:
        side = max(int(measure.textlength(t, font=font)) for t in row_titles) + 2 * gap
    columns = max(len(row) for row in panels)
    bar_width = max(12, panel_size // 16)
    bar_side = 0
    if colorbar is not None:
        label_width = max(int(measure.textlength(t, font=font)) for t in ("0", "1"))
        bar_side = max(bar_width + gap + label_width, min(int(measure.textlength(colorbar, font=font)), 96)) + 2 * gap
        caption_lines = max(caption_lines, len(_wrap(colorbar, font, bar_side - gap, measure)))
        caption_height = caption_lines * line_height + 4
    width = side + columns * (panel_size + gap) + gap + bar_side
    title_lines = _wrap(title, font, width - 2 * gap, measure) if title else []
    top = (len(title_lines) * line_height + gap) if title else 0
    height = top + len(panels) * (caption_height + panel_size + gap) + gap
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(title_lines):
        draw.text((gap, gap // 2 + i * line_height), line, fill=TEXT, font=font)
    if colorbar is not None:
        colormap = np.asarray(colormap, dtype=np.uint8)
        if colormap.ndim != 2 or colormap.shape[1] != 3:
            raise UserError(f"`colormap` must be uint8 colours [N, 3], got shape {colormap.shape}.")
        ramp = np.linspace(1, 0, panel_size)  # top = 1
        gradient = colormap[np.round(ramp * (len(colormap) - 1)).astype(np.int64)]
        bar = Image.fromarray(np.ascontiguousarray(np.repeat(gradient[:, None, :], bar_width, axis=1)))
        bar_x = side + columns * (panel_size + gap) + gap
        for r in range(len(panels)):
            y = top + gap + r * (caption_height + panel_size + gap)
            for i, line in enumerate(_wrap(colorbar, font, bar_side - gap, measure)):
                draw.text((bar_x, y + i * line_height), line, fill=TEXT, font=font)
            y += caption_height
            grid.paste(bar, (bar_x, y))
            draw.rectangle((bar_x - 1, y - 1, bar_x + bar_width, y + panel_size), outline=TEXT)
            draw.text((bar_x + bar_width + gap, y), "1", fill=TEXT, font=font)
            draw.text((bar_x + bar_width + gap, y + panel_size - font_size - 2), "0", fill=TEXT, font=font)
    for r, (row, row_captions) in enumerate(zip(panels, captions)):
        y = top + gap + r * (caption_height + panel_size + gap)
        if row_titles is not None:
            draw.text((gap, y + caption_height + panel_size // 2 - font_size // 2), row_titles[r], fill=TEXT, font=font)
        for c, (panel, caption) in enumerate(zip(row, row_captions)):
            x = side + gap + c * (panel_size + gap)
            for i, line in enumerate(_wrap(caption, font, panel_size, measure)):
                draw.text((x, y + i * line_height), line, fill=TEXT, font=font)
            if panel is None:
                continue
            array = np.asarray(panel)
            if array.dtype != np.uint8:
                raise UserError(f"panels must be uint8 images, got {array.dtype} in row {r}, column {c}.")
            image = Image.fromarray(array).convert("RGB")
            if image.size != (panel_size, panel_size):
                image = image.resize((panel_size, panel_size), Image.NEAREST)
            grid.paste(image, (x, y + caption_height))
    return grid
