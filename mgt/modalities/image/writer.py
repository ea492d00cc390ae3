"""Image grids: many images tiled into one uint8 array / PNG, optionally labelled."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _to_uint8(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:  # grey [N, H, W]
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape [N, H, W, 3], got {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.bool_):
        return np.round(np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"images must be float in [0, 1] or uint8, got dtype {images.dtype}")


def _label_strip_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag0")
    return bottom + 4


def make_image_grid(
    images,
    *,
    ncols: int | None = None,
    labels: Sequence[str | int] | None = None,
    upscale: int = 1,
    padding: int = 2,
    pad_value: int = 255,
    row_titles: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile images into one picture.

    Args:
      images: `[N, H, W, 3]` float in [0, 1] (clipped) or uint8; grey `[N, H, W]` is accepted.
      ncols: images per row; default ceil(sqrt(N)).
      labels: N strings / ints drawn in black below each cell with Pillow's default font.
      upscale: integer nearest-neighbour magnification of each cell (crisp pixels for small images).
      padding: pixels of `pad_value` around and between cells.
      row_titles: one string per row, written above it (e.g. the prompt of a row of samples); the
        picture is widened to the longest title.

    Returns:
      uint8 `[rows·(h + t) + (rows+1)·padding, cols·w + (cols+1)·padding, 3]` (wider with long row
      titles) where h, w are the upscaled cell size and t is the label (and title) strip height (0
      without labels and titles).
    """
    images = _to_uint8(images)
    n, h, w, _ = images.shape
    if n == 0:
        raise ValueError("make_image_grid: images is empty (N = 0)")
    if upscale < 1 or padding < 0:
        raise ValueError(f"make_image_grid: upscale must be >= 1 and padding >= 0, got {upscale}, {padding}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"make_image_grid: got {len(labels)} labels for {n} images")
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
        h, w = h * upscale, w * upscale
    ncols = min(n, ncols or math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    if row_titles is not None and len(row_titles) != math.ceil(n / ncols):
        raise ValueError(f"make_image_grid: got {len(row_titles)} row titles for {math.ceil(n / ncols)} rows")
    font = ImageFont.load_default() if labels is not None or row_titles is not None else None
    strip = _label_strip_height(font) if labels is not None else 0
    title = _label_strip_height(font) if row_titles is not None else 0
    cell_h = h + strip + title
    grid = np.full(
        (nrows * cell_h + (nrows + 1) * padding, ncols * w + (ncols + 1) * padding, 3), pad_value, np.uint8
    )
    for i in range(n):
        r, c = divmod(i, ncols)
        top, left = padding + r * (cell_h + padding) + title, padding + c * (w + padding)
        grid[top : top + h, left : left + w] = images[i]
    if row_titles:  # widen the canvas (blank on the right) so that every title is read whole
        need = padding + 2 + int(max(font.getlength(str(t)) for t in row_titles))
        if need > grid.shape[1]:
            grid = np.concatenate([grid, np.full((grid.shape[0], need - grid.shape[1], 3), pad_value, np.uint8)], 1)
    if font is not None:
        pil = Image.fromarray(grid)
        draw = ImageDraw.Draw(pil)
        for r, text in enumerate(row_titles or ()):
            draw.text((padding + 1, padding + r * (cell_h + padding) + 1), str(text), fill=(0, 0, 0), font=font)
        for i, label in enumerate(labels or ()):
            r, c = divmod(i, ncols)
            top, left = padding + r * (cell_h + padding) + title + h, padding + c * (w + padding)
            draw.rectangle([left, top, left + w - 1, top + strip - 1], fill=(255, 255, 255))
            draw.text((left + 1, top + 1), str(label), fill=(0, 0, 0), font=font)
        grid = np.asarray(pil)
    return grid


def save_image_grid(
    path: str | os.PathLike,
    images,
    *,
    ncols: int | None = None,
    labels: Sequence[str | int] | None = None,
    upscale: int = 1,
    padding: int = 2,
    pad_value: int = 255,
    row_titles: Sequence[str] | None = None,
) -> str:
    """Write `make_image_grid(images, ...)` as a PNG at `path` (parent folders are created).

    `images`: `[N, H, W, 3]` float in [0, 1] or uint8. Returns the path written.
    """
    path = os.fspath(path)
    grid = make_image_grid(
        images, ncols=ncols, labels=labels, upscale=upscale, padding=padding, pad_value=pad_value,
        row_titles=row_titles,
    )
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    Image.fromarray(grid).save(path, format="PNG")
    return path
