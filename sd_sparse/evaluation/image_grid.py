"""Image grids whose every panel carries a caption, so a figure reads without the terminal output."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


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
):
    """A PIL image of `panels` in rows, each panel under its caption.

    Args:
        panels: rows of uint8 images `[H, W, 3]` (or `[H, W]`), `None` for an empty cell. Each is
            resized to `panel_size` × `panel_size` (nearest-neighbour, so small images stay sharp).
        captions: the same shape as `panels`: one caption per cell (wrapped to the panel's width).
        row_titles: an optional title per row, printed left of it.
        title: an optional line across the top.
    """
    from PIL import Image, ImageDraw

    if len(captions) != len(panels) or any(len(c) != len(p) for c, p in zip(captions, panels)):
        raise ValueError("`captions` must have one caption per panel (the same rows and lengths as `panels`).")
    if row_titles is not None and len(row_titles) != len(panels):
        raise ValueError(f"`row_titles` must have one title per row ({len(panels)}), got {len(row_titles)}.")
    if not panels or not any(len(row) for row in panels):
        raise ValueError("`panels` is empty.")
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = font_size + 4
    caption_lines = max(len(_wrap(c, font, panel_size, measure)) for row in captions for c in row)
    caption_height = caption_lines * line_height + 4
    side = 0
    if row_titles is not None:
        side = max(int(measure.textlength(t, font=font)) for t in row_titles) + 2 * gap
    top = (line_height + gap) if title else 0
    columns = max(len(row) for row in panels)
    width = side + columns * (panel_size + gap) + gap
    height = top + len(panels) * (caption_height + panel_size + gap) + gap
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((gap, gap // 2), title, fill=TEXT, font=font)
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
                raise ValueError(f"panels must be uint8 images, got {array.dtype} in row {r}, column {c}.")
            image = Image.fromarray(array).convert("RGB")
            if image.size != (panel_size, panel_size):
                image = image.resize((panel_size, panel_size), Image.NEAREST)
            grid.paste(image, (x, y + caption_height))
    return grid
