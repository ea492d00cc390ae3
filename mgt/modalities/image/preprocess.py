"""Image preprocessing: pure numpy functions and the grain input pipeline.

Every function here takes and returns numpy arrays and is defined at module level, so grain can
pickle it into worker processes. Images are `uint8 [H, W, 3]` until `to_float`, which gives
`float32 [H, W, 3]` in [0, 1] — the range the tokenizers expect.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image


def _check_image(image, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [H, W, 3], got {image.shape}")
    return image


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the shorter side is `size`, keeping the aspect ratio.

    Pillow's bicubic filter, which widens its support when shrinking (antialiased).
    `image`: uint8 `[H, W, 3]` → uint8 `[H', W', 3]` with min(H', W') == size. Unchanged if already so.
    """
    image = _check_image(image)
    if size < 1:
        raise ValueError(f"resize: size must be a positive int, got {size}")
    h, w = image.shape[:2]
    if min(h, w) == size:
        return image
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    pil = Image.fromarray(np.ascontiguousarray(image.astype(np.uint8)))
    return np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Central `size × size` window of a uint8 `[H, W, 3]` image with H, W >= size."""
    image = _check_image(image)
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"center_crop: image of size {h}x{w} is smaller than the crop size {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def resize_and_crop(image: np.ndarray, size: int) -> np.ndarray:
    """`resize` then `center_crop`: any uint8 `[H, W, 3]` → uint8 `[size, size, 3]`."""
    return center_crop(resize(image, size), size)


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror left–right with probability 1/2. `[H, W, C]` → same shape and dtype."""
    image = _check_image(image)
    return image[:, ::-1] if rng.random() < 0.5 else image


def shift(image: np.ndarray, dy: int, dx: int, max_shift: int) -> np.ndarray:
    """The `[H, W]` window at offset (dy, dx), 0 <= dy, dx <= 2·max_shift, of the image padded by
    `max_shift` pixels with reflection on every side; (max_shift, max_shift) returns the image."""
    image = _check_image(image)
    if max_shift == 0:
        return image
    h, w = image.shape[:2]
    if max_shift >= min(h, w):
        raise ValueError(f"max_shift must be smaller than the image side, got {max_shift} for {h}x{w}")
    padded = np.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="reflect")
    return padded[dy : dy + h, dx : dx + w]


def random_shift(image: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Translate by up to `max_shift` pixels in each direction (reflect-pad, then a random crop
    back to `[H, W]`). Same shape and dtype as `image`."""
    if max_shift < 0:
        raise ValueError(f"random_shift: max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return _check_image(image)
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=2)
    return shift(image, int(dy), int(dx), max_shift)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 `[H, W, 3]` in [0, 255] → float32 in [0, 1]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"to_float expects a uint8 image, got dtype {image.dtype}")
    return image.astype(np.float32) / 255.0


# ---- grain transforms (top-level classes so that worker processes can unpickle them) -----------


@dataclasses.dataclass(frozen=True)
class ResizeCrop:
    """grain `map`: record["image"] → `resize_and_crop(image, size)`."""

    size: int

    def __call__(self, record: dict) -> dict:
        return {**record, "image": resize_and_crop(record["image"], self.size)}


@dataclasses.dataclass(frozen=True)
class Augment:
    """grain `random_map`: random left–right flip and reflect-pad shift of record["image"]."""

    flip: bool = True
    max_shift: int = 0

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        image = record["image"]
        if self.flip:
            image = random_flip(image, rng)
        if self.max_shift:
            image = random_shift(image, rng, self.max_shift)
        return {**record, "image": image}


@dataclasses.dataclass(frozen=True)
class ToFloat:
    """grain `map`: → `{"image": float32 [H, W, 3] in [0, 1], "label": int32 scalar}` (and the record's
    caption `"text"` when it has one)."""

    def __call__(self, record: dict) -> dict:
        from mgt.modalities.base import keep_caption

        return keep_caption({"image": to_float(record["image"]), "label": np.int32(record.get("label", 0))}, record)


def make_image_pipeline(
    source,
    *,
    batch_size: int,
    image_size: int,
    train: bool,
    seed: int = 0,
    flip: bool = True,
    shift: int = 0,
    num_workers: int = 0,
    shard_by_process: bool = True,
    drop_remainder: bool | None = None,
    read_threads: int = 4,
    prefetch_buffer_size: int = 64,
):
    """A grain iterator of image batches.

    Args:
      source: a random-access source whose records are `{"image": uint8 [H, W, 3], "label": int}`
        (see `sources.py`); images of any size are resized (shorter side) and centre-cropped.
      batch_size: examples per batch on this process.
      image_size: the side of the square output images.
      train: shuffle, repeat forever and augment (flip / shift); otherwise one pass in order.
      seed: seeds the shuffle and the augmentation (deterministic per example index).
      flip, shift: training augmentation — random left–right flip, random reflect-pad translation
        by up to `shift` pixels.
      num_workers: > 0 decodes in that many worker processes (`mp_prefetch`); they take tens of
        seconds to start, so tests use 0.
      shard_by_process: each JAX process reads every `process_count`-th record.
      drop_remainder: drop a last partial batch; default True for training, False for evaluation
        (evaluation sees every example, the last batch may be smaller).

    Returns:
      A `grain.IterDataset`; `iter(...)` yields `{"image": float32 [B, S, S, 3] in [0, 1],
      "label": int32 [B]}` and supports `get_state()` / `set_state()` (and orbax checkpointing via
      `grain.checkpoint.CheckpointSave`).
    """
    import grain
    import jax

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    if len(source) == 0:
        raise ValueError(f"source {source!r} is empty")
    ds = grain.MapDataset.source(source)
    if shard_by_process and jax.process_count() > 1:
        ds = ds[jax.process_index() :: jax.process_count()]
    if train:
        ds = ds.seed(seed).shuffle().repeat(None)
    ds = ds.map(ResizeCrop(image_size))
    if train and (flip or shift):
        ds = ds.random_map(Augment(flip=flip, max_shift=shift))  # seeded by .seed(seed)
    ds = ds.map(ToFloat())
    ds = ds.batch(batch_size, drop_remainder=train if drop_remainder is None else drop_remainder)
    iter_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size)
    )
    if num_workers > 0:
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter_ds
