"""Reading image files as the user meant them: any bit depth, transparency, orientation, size limits.

`read_rgb(path)` → uint8 `[H, W, 3]`:
  - 16-bit and 32-bit greyscale / float images are scaled from their own range (Pillow's `convert`
    would clip a 16-bit PNG to almost all white);
  - transparency (RGBA, LA, palette with a transparent colour) is composited onto white, and the
    caller is told so once per file through `notes`;
  - the EXIF orientation is applied;
  - an image larger than Pillow's decompression-bomb limit raises `ValueError` naming its size and
    the limit (rather than Pillow's traceback).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)  # transparent pixels become white


def _scaled_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """A high-bit-depth single-channel array → uint8, scaled from the range of its type."""
    array = np.asarray(array)
    if mode.startswith("I;16") or array.dtype == np.uint16:
        return np.round(array.astype(np.float64) / 65535.0 * 255.0).clip(0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):  # mode "F": assume [0, 1] when it fits, else min-max
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = array if lo >= 0.0 and hi <= 1.0 else (array - lo) / max(hi - lo, 1e-12)
        return np.round(np.nan_to_num(scaled) * 255.0).clip(0, 255).astype(np.uint8)
    # mode "I" (int32): 16-bit data stored as 32-bit when it fits, else the full int32 range
    top = 65535.0 if array.min() >= 0 and array.max() <= 65535 else float(np.iinfo(np.int32).max)
    return np.round(array.astype(np.float64).clip(0, None) / top * 255.0).clip(0, 255).astype(np.uint8)


def to_rgb(pil: Image.Image, notes: list | None = None, name: str = "image") -> np.ndarray:
    """A Pillow image → uint8 `[H, W, 3]` (see the module docstring)."""
    pil = ImageOps.exif_transpose(pil)
    if pil.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = _scaled_to_uint8(np.asarray(pil), pil.mode)
        return np.repeat(grey[..., None], 3, axis=-1)
    if pil.mode == "P" and "transparency" in pil.info:
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = pil.convert("RGBA")
        if notes is not None and np.asarray(rgba)[..., 3].min() < 255:
            notes.append(f"{name} has transparent pixels: composited onto white")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(pil.convert("RGB"), dtype=np.uint8)


def read_rgb(path: str, *, notes: list | None = None, argument: str | None = None) -> np.ndarray:
    """An image file → uint8 `[H, W, 3]`. Raises ValueError (naming `argument` and `path`) when the file
    is missing, not an image, or beyond Pillow's decompression-bomb limit."""
    what = f"{argument} {path!r}" if argument else repr(path)
    if not os.path.isfile(path):
        raise ValueError(f"{what} does not exist")
    try:
        with Image.open(path) as pil:
            return to_rgb(pil, notes, what)
    except Image.DecompressionBombError as e:  # Pillow's message names the size and the limit
        raise ValueError(f"{what}: {e}; refusing to decode it (raise PIL.Image.MAX_IMAGE_PIXELS if you trust "
                         "the file)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{what} is not a readable image ({e})") from None
