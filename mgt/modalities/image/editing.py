"""Image editing with a masked generative transformer: inpainting, outpainting, class-conditional
editing (MaskGIT §4.3), as masks over the token grid handed to `mgt.decoding.decode`.

Every driver follows the official recipe: encode the image, set the edited token cells to the mask
id, decode (the known tokens stay fixed), decode the tokens to pixels, clip to [0, 1], and blend the
result into the input with the token mask upsampled to pixels and Gaussian-blurred.

Conventions: images are float32 `[B, H, W, 3]` in [0, 1] (uint8 is accepted and scaled); token
grids are `[B, h, w]` (or `[B, h, w, K]` with K code levels; a masked cell masks all its levels);
token masks are bool `[h, w]` (the same for every example) or `[B, h, w]`, True = regenerate.
The conditioning (the target class of a class edit, a text prompt, guidance) lives in `logits_fn`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from mgt import decoding


class EditResult(NamedTuple):
    """What an edit driver returns.

    image: float32 `[B, H, W, 3]` in [0, 1] — the generated image blended into the input.
    generated: float32 `[B, H, W, 3]` in [0, 1] — the tokenizer's decoding of `tokens`, unblended.
    tokens: int32 `[B, h, w(, K)]` — the decoded tokens, nothing masked.
    token_mask: bool `[B, h, w]` — the cells that were regenerated.
    history: `[T, B, h, w(, K)]` when `return_history=True` was passed, else None.
    """

    image: Any
    generated: Any
    tokens: Any
    token_mask: Any
    history: Any = None


# ---- masks --------------------------------------------------------------------------------------


def box_to_token_mask(box, image_shape, grid, *, grow: int = 1) -> np.ndarray:
    """The token cells covering a pixel box, grown by `grow` cells on each side, clipped to the grid.

    Args:
      box: `(top, left, height, width)` in pixels; must be non-empty and lie inside the image.
      image_shape: `(H, W)` of the image in pixels.
      grid: `(h, w)` of its token grid; cell (i, j) covers rows [i·H/h, (i+1)·H/h) and columns
        [j·W/w, (j+1)·W/w).
      grow: cells added on every side (the official editing grows by 1).

    Returns:
      bool `[h, w]`, True on the cells to regenerate.

    Raises:
      ValueError: naming the box and the image size, for an empty box or one outside the image.
    """
    try:
        top, left, height, width = (Fraction(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be (top, left, height, width) numbers, got {box!r}") from None
    img_h, img_w = (int(s) for s in image_shape)
    grid_h, grid_w = (int(g) for g in grid)
    if height <= 0 or width <= 0:
        raise ValueError(f"box (top, left, height, width)={tuple(box)} is empty; image size is {img_h}x{img_w}")
    if top < 0 or left < 0 or top + height > img_h or left + width > img_w:
        raise ValueError(
            f"box (top, left, height, width)={tuple(box)} does not lie inside the image of size "
            f"{img_h}x{img_w} (H x W)"
        )
    if grow < 0:
        raise ValueError(f"grow must be >= 0, got {grow}")
    r0 = math.floor(top * grid_h / img_h) - grow
    r1 = math.ceil((top + height) * grid_h / img_h) + grow
    c0 = math.floor(left * grid_w / img_w) - grow
    c1 = math.ceil((left + width) * grid_w / img_w) + grow
    mask = np.zeros((grid_h, grid_w), bool)
    mask[max(r0, 0) : min(r1, grid_h), max(c0, 0) : min(c1, grid_w)] = True
    return mask


def outpaint_canvas(tokens, pad, mask_id: int):
    """Extend a token grid on any side; the new cells hold `mask_id`.

    Args:
      tokens: int `[B, h, w]` or `[B, h, w, K]`.
      pad: `(top, bottom, left, right)` in token cells, each >= 0.
      mask_id: the id written into the new cells.

    Returns:
      `(canvas int32 [B, h+top+bottom, w+left+right(, K)], mask bool [B, h', w'])`, mask True on the
      new cells.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim not in (3, 4):
        raise ValueError(f"tokens must be [B, h, w] or [B, h, w, K], got shape {tokens.shape}")
    top, bottom, left, right = _check_pad(pad)
    widths = [(0, 0), (top, bottom), (left, right)] + [(0, 0)] * (tokens.ndim - 3)
    canvas = jnp.pad(tokens.astype(jnp.int32), widths, constant_values=mask_id)
    b, h, w = tokens.shape[:3]
    mask = np.ones((b, h + top + bottom, w + left + right), bool)
    mask[:, top : top + h, left : left + w] = False
    return canvas, jnp.asarray(mask)


def _check_pad(pad) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(p) for p in pad)
    except TypeError:
        raise ValueError(f"pad must be (top, bottom, left, right) token counts, got {pad!r}") from None
    if len(values) != 4 or any(p < 0 for p in values):
        raise ValueError(f"pad must be four non-negative ints (top, bottom, left, right), got {pad!r}")
    return values


def token_mask_to_pixels(token_mask, image_shape):
    """Nearest-neighbour upsampling: bool/float `[B, h, w]` → float32 `[B, H, W]` in {0, 1}."""
    token_mask = jnp.asarray(token_mask, jnp.float32)
    img_h, img_w = (int(s) for s in image_shape)
    grid_h, grid_w = token_mask.shape[-2:]
    rows = (np.arange(img_h) * grid_h) // img_h
    cols = (np.arange(img_w) * grid_w) // img_w
    return token_mask[..., rows, :][..., cols]


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """`[n, n]` matrix applying a 1-D Gaussian (σ = sigma, truncated at ⌈3σ⌉) with edge replication."""
    half = int(math.ceil(3.0 * sigma))
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    taps /= taps.sum()
    matrix = np.zeros((n, n), np.float64)
    rows = np.arange(n)
    for offset, tap in zip(range(-half, half + 1), taps):
        np.add.at(matrix, (rows, np.clip(rows + offset, 0, n - 1)), tap)
    return matrix.astype(np.float32)


def gaussian_blur_mask(mask, radius: float):
    """Blur float `[B, H, W]` masks with Pillow's `ImageFilter.GaussianBlur(radius)` semantics.

    As in Pillow, `radius` is the standard deviation σ and the image edges are extended; Pillow
    approximates the Gaussian with three box blurs, here it is an exact separable Gaussian truncated
    at ⌈3σ⌉ pixels (about the support of Pillow's boxes), so values farther than that from the mask
    stay exactly 0 (or 1). `radius <= 0` returns the mask unchanged.
    """
    mask = jnp.asarray(mask, jnp.float32)
    if radius <= 0:
        return mask
    blur_h = jnp.asarray(_blur_matrix(mask.shape[-2], float(radius)))
    blur_w = jnp.asarray(_blur_matrix(mask.shape[-1], float(radius)))
    return jnp.einsum("hH,...HW,wW->...hw", blur_h, mask, blur_w)


def composite(original, generated, token_mask, *, blur_radius: float | None = None):
    """Blend `generated` into `original` where `token_mask` is set: `m·generated + (1 − m)·original`.

    Args:
      original, generated: `[B, H, W, 3]` float in [0, 1] (or uint8, scaled to [0, 1]).
      token_mask: bool `[B, h, w]` or `[h, w]`; upsampled to pixels (nearest) and blurred.
      blur_radius: Gaussian σ in pixels, with Pillow's GaussianBlur semantics (see
        `gaussian_blur_mask`); default the official `max(H, W) / 16 − 1` (15 at 256 px, 1 at 32 px,
        none at 16 px). 0 blends with the hard mask.

    Returns:
      float32 `[B, H, W, 3]`; pixels farther than ⌈3·blur_radius⌉ from every masked cell equal
      `original` exactly.
    """
    original, generated = _as_images(original, "original"), _as_images(generated, "generated")
    if original.shape != generated.shape:
        raise ValueError(f"original {original.shape} and generated {generated.shape} must have the same shape")
    b, img_h, img_w, _ = original.shape
    token_mask = _batch_token_mask(token_mask, b, None)
    if blur_radius is None:
        blur_radius = max(img_h, img_w) / 16 - 1
    mask = gaussian_blur_mask(token_mask_to_pixels(token_mask, (img_h, img_w)), blur_radius)[..., None]
    return mask * generated + (1.0 - mask) * original


def _as_images(images, name: str):
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must be [B, H, W, 3], got shape {images.shape}")
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def _batch_token_mask(token_mask, batch: int, grid):
    """bool `[h, w]` or `[B, h, w]` → bool `[B, h, w]`, checked against `grid` (if given)."""
    token_mask = jnp.asarray(token_mask).astype(bool)
    if token_mask.ndim == 2:
        token_mask = jnp.broadcast_to(token_mask, (batch,) + token_mask.shape)
    if token_mask.ndim != 3 or token_mask.shape[0] != batch or (
        grid is not None and tuple(token_mask.shape[1:]) != tuple(grid)
    ):
        expected = "[h, w] or [B, h, w]" if grid is None else f"{tuple(grid)} or {(batch,) + tuple(grid)}"
        raise ValueError(f"token_mask has shape {token_mask.shape}; expected {expected}")
    return token_mask


# ---- drivers -------------------------------------------------------------------------------------


def _encode(tokenizer, image):
    return jnp.asarray(tokenizer.encode(image)).astype(jnp.int32)


def _generate(tokenizer, logits_fn, masked, rng, *, mask_id, num_steps, start_step, **decode_kwargs):
    """Decode masked tokens → `(tokens, history or None, images float32 [B, H, W, 3] in [0, 1])`."""
    out = decoding.decode(
        logits_fn, masked, rng, mask_id=mask_id, num_steps=num_steps, start_step=start_step, **decode_kwargs
    )
    tokens, history = out if decode_kwargs.get("return_history") else (out, None)
    images = jnp.clip(jnp.asarray(tokenizer.decode(tokens), jnp.float32), 0.0, 1.0)
    return tokens, history, images


def _check_decoded(generated, expected_shape):
    if tuple(generated.shape) != tuple(expected_shape):
        raise ValueError(
            f"tokenizer.decode returned images of shape {generated.shape}; expected {tuple(expected_shape)}"
        )


def _fill(tokenizer, logits_fn, image, tokens, token_mask, rng, *, blur_radius, **decode_args) -> EditResult:
    """Mask the `token_mask` cells of `tokens`, decode, and blend into `image`."""
    token_mask = _batch_token_mask(token_mask, tokens.shape[0], tokens.shape[1:3])
    cell_mask = token_mask.reshape(token_mask.shape + (1,) * (tokens.ndim - 3))
    masked = jnp.where(cell_mask, decode_args["mask_id"], tokens)
    out_tokens, history, generated = _generate(tokenizer, logits_fn, masked, rng, **decode_args)
    _check_decoded(generated, image.shape)
    blended = composite(image, generated, token_mask, blur_radius=blur_radius)
    return EditResult(blended, generated, out_tokens, token_mask, history)


def inpaint(tokenizer, logits_fn, image, token_mask, rng, *, mask_id: int, num_steps: int = 12,
            start_step: int = 0, blur_radius: float | None = None, **decode_kwargs) -> EditResult:
    """Regenerate the cells of `token_mask` and keep every other token of `image`.

    Args:
      tokenizer: encodes float32 `[B, H, W, 3]` in [0, 1] to int32 `[B, h, w(, K)]` and back.
      logits_fn: `tokens [B, h, w(, K)] -> logits [..., V]`, conditioning baked in.
      image: float32 `[B, H, W, 3]` in [0, 1] (or uint8).
      token_mask: bool `[h, w]` or `[B, h, w]`, True = regenerate.
      rng: a PRNG key (or B keys).
      mask_id, num_steps, start_step, **decode_kwargs: passed to `mgt.decoding.decode`.
      blur_radius: of the blend mask (see `composite`).
    """
    image = _as_images(image, "image")
    tokens = _encode(tokenizer, image)
    return _fill(tokenizer, logits_fn, image, tokens, token_mask, rng, mask_id=mask_id,
                 num_steps=num_steps, start_step=start_step, blur_radius=blur_radius, **decode_kwargs)


def outpaint(tokenizer, logits_fn, image, pad, rng, *, mask_id: int, num_steps: int = 12,
             start_step: int = 0, blur_radius: float | None = None, **decode_kwargs) -> EditResult:
    """Extend `image` by `pad = (top, bottom, left, right)` token cells on each side.

    The tokenizer must accept the larger canvas (a convolutional one does), and `logits_fn` must
    accept the larger grid. The new region is fully generated; the blurred seam blends into the
    original's border cells only. Returns images of `[B, H + (top+bottom)·H/h, W + (left+right)·W/w, 3]`.
    """
    image = _as_images(image, "image")
    tokens = _encode(tokenizer, image)
    b, img_h, img_w, _ = image.shape
    grid_h, grid_w = tokens.shape[1:3]
    if img_h % grid_h or img_w % grid_w:
        raise ValueError(f"image size {img_h}x{img_w} is not a multiple of the token grid {grid_h}x{grid_w}")
    cell_h, cell_w = img_h // grid_h, img_w // grid_w
    top, bottom, left, right = _check_pad(pad)
    canvas, token_mask = outpaint_canvas(tokens, (top, bottom, left, right), mask_id)
    # The original canvas holds the input where it was and zeros elsewhere; those zeros are replaced by
    # the generated pixels before blending, so the blur never darkens the new region.
    big_h, big_w = img_h + (top + bottom) * cell_h, img_w + (left + right) * cell_w
    placed = jnp.zeros((b, big_h, big_w, 3), jnp.float32)
    placed = placed.at[:, top * cell_h : top * cell_h + img_h, left * cell_w : left * cell_w + img_w].set(image)
    inside = token_mask_to_pixels(~token_mask, (big_h, big_w))[..., None]

    out_tokens, history, generated = _generate(
        tokenizer, logits_fn, canvas, rng, mask_id=mask_id, num_steps=num_steps, start_step=start_step,
        **decode_kwargs,
    )
    _check_decoded(generated, placed.shape)
    original = inside * placed + (1.0 - inside) * generated
    blended = composite(original, generated, token_mask, blur_radius=blur_radius)
    return EditResult(blended, generated, out_tokens, token_mask, history)


def class_edit(tokenizer, logits_fn, image, box, rng, *, mask_id: int, num_steps: int = 12,
               start_step: int = 2, grow: int = 1, blur_radius: float | None = None,
               **decode_kwargs) -> EditResult:
    """The official class-conditional edit: regenerate the token cells covering the pixel `box`
    `(top, left, height, width)`, grown by `grow` cells, decoding T = 12 steps from step 2.

    The target class is the caller's: build `logits_fn` with it (e.g. the class token first).
    Other arguments as in `inpaint`.
    """
    image = _as_images(image, "image")
    tokens = _encode(tokenizer, image)
    token_mask = box_to_token_mask(box, image.shape[1:3], tokens.shape[1:3], grow=grow)
    return _fill(tokenizer, logits_fn, image, tokens, token_mask, rng, mask_id=mask_id,
                 num_steps=num_steps, start_step=start_step, blur_radius=blur_radius, **decode_kwargs)
