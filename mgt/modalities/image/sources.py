"""Random-access image sources for grain.

A source is any object with `__len__` and `__getitem__(i) -> {"image": uint8 [H, W, 3],
"label": int32}`; `grain.MapDataset.source(src)` reads it. Configs pick one by name through
`make_source(config.data.source, **config.data.source_kwargs)`; `register_source` adds a user's own.

  digits   scikit-learn's 1,797 handwritten digits upsampled to 16 or 32 px — no download
  folder   an ImageFolder-style directory of PNG / JPEG / WebP files, captioned or not
  captioned_shapes   one or two coloured shapes with an English caption (mgt.modalities.image.shapes)
  arrays   numpy arrays already in memory
"""

from __future__ import annotations

import functools
import json
import logging
import os

import numpy as np
from PIL import Image

from mgt.modalities.image import preprocess
from mgt.modalities.image.io import to_rgb
from mgt.registry import Registry

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")

# The captioned shapes register themselves on import; the registry imports them at its first look-up.
_SOURCES = Registry("image source", builtin_modules=("mgt.modalities.image.shapes",))


# `register_source(name)` (a decorator), `registered_sources()`, `make_source(name, **kwargs)`
register_source = _SOURCES.register
registered_sources = _SOURCES.names
make_source = _SOURCES.build


def _record(image: np.ndarray, label: int, text: str | None = None) -> dict:
    record = {"image": image, "label": np.int32(label)}
    if text is not None:
        record["text"] = text
    return record


# ---- image folders -------------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: str) -> list[str]:
    """All image files below `folder` (recursively, following links), in sorted order, each real file
    once; hidden entries skipped. A folder reached again through a link (a loop) is skipped with
    one warning."""
    found, seen_dirs, seen_files, loops = [], set(), set(), []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            loops.append(root)
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            path = os.path.join(root, f)
            if _is_image(f) and os.path.realpath(path) not in seen_files:
                seen_files.add(os.path.realpath(path))
                found.append(path)
    if loops:
        log.warning("ImageFolderSource: %d linked folder(s) under %s lead back to folders already read (e.g. %s); "
                    "each file is read once", len(loops), folder, loops[0])
    return found


CAPTIONS_FILE = "captions.jsonl"


def _read_captions(folder: str, files: list[str]) -> tuple[dict, int] | None:
    """Captions of `files` under `folder`: `({normalised file path: text}, unreadable)`, or None when
    the folder has none (no captions.jsonl and no sidecar).

    A line of `folder/captions.jsonl` is `{"file": path relative to folder, "text": caption}`
    ("file_name", as in Hugging Face's image folders, works too); a sidecar is `<stem>.txt` next to
    the image. The jsonl entry wins over a sidecar. `unreadable` counts jsonl lines that are not such
    an object and sidecars that cannot be read as UTF-8; an empty caption is no caption."""
    texts, unreadable, found = {}, 0, False
    jsonl = os.path.join(folder, CAPTIONS_FILE)
    if os.path.isfile(jsonl):
        found = True
        with open(jsonl, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line.decode("utf-8"))
                    file = entry.get("file", entry.get("file_name"))
                    text = entry["text"]
                    if not isinstance(file, str) or not isinstance(text, str):
                        raise TypeError("'file' and 'text' must be strings")
                except (ValueError, KeyError, TypeError, AttributeError):  # UnicodeDecodeError is a ValueError
                    unreadable += 1
                    continue
                texts.setdefault(os.path.normpath(os.path.join(folder, file)), text.strip())
    for file in files:
        sidecar = os.path.splitext(file)[0] + ".txt"
        if not os.path.isfile(sidecar):
            continue
        found = True
        try:
            with open(sidecar, encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError):
            unreadable += 1
            continue
        texts.setdefault(os.path.normpath(file), text)
    return (texts, unreadable) if found else None


@register_source("folder")
class ImageFolderSource:
    """Images in class subfolders: `path/<class>/**/*.{png,jpg,jpeg,webp}` (any letter case).

    Classes are the sorted subfolder names (`class_names`; label c is `class_names[c]`); image files
    lying directly in `path` are then ignored. A folder holding images but no subfolders is one
    class, label 0. Files are decoded with Pillow (EXIF orientation applied) and converted to RGB.

    A file that cannot be decoded is skipped: the record of the next readable file (in index order,
    wrapping around) is returned instead, one warning names the file, and `stats` counts it —
    `{"skipped": number of distinct files, "skipped_files": [paths]}`. With `num_workers > 0`
    each worker process keeps its own `stats`.

    Captions (`has_captions`): when the folder holds a `captions.jsonl` (lines of `{"file": path
    relative to the folder, "text": caption}`) or any `<stem>.txt` sidecar next to an image,
    records also carry `"text": str`, and images without a caption (none given, an empty one, an
    unreadable sidecar or jsonl line) are left out when the source is built, with one warning that
    counts them; `caption_stats` holds `{"uncaptioned": count, "uncaptioned_files": [paths],
    "unreadable_captions": unreadable sidecars and jsonl lines}`. Without captions records are
    `{"image", "label"}` as before.

    Args:
      path: the root folder.
      image_size: if given, every image is resized (shorter side, bicubic) and centre-cropped to
        `image_size × image_size`; otherwise records keep the file's size.

    Raises:
      ValueError: `path` does not exist, is not a folder, holds no image file, or has captions but
        none for any image.
    """

    def __init__(self, path: str | os.PathLike, *, image_size: int | None = None):
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise ValueError(f"ImageFolderSource: path {path!r} does not exist or is not a folder")
        subfolders = sorted(
            e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")
        )
        if subfolders:
            self.class_names = subfolders
            self.files, labels = [], []
            for label, name in enumerate(subfolders):
                files = _images_under(os.path.join(path, name))
                self.files.extend(files)
                labels.extend([label] * len(files))
        else:
            self.class_names = [os.path.basename(os.path.normpath(path))]
            self.files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if _is_image(f)]
            labels = [0] * len(self.files)
        if not self.files:
            raise ValueError(
                f"ImageFolderSource: no image files ({', '.join(IMAGE_EXTENSIONS)}) found in folder {path!r}"
            )
        self.path = path
        self.captions, labels = self._keep_captioned(labels)
        self.has_captions = self.captions is not None
        self.labels = np.asarray(labels, np.int32)
        self.image_size = image_size
        self.stats = {"skipped": 0, "skipped_files": []}
        self._noted = set()

    def _keep_captioned(self, labels: list[int]) -> tuple[list[str] | None, list[int]]:
        """Reads the captions and keeps only the captioned files: (captions, their labels), or
        (None, labels) when the folder has no captions."""
        self.caption_stats = {"uncaptioned": 0, "uncaptioned_files": [], "unreadable_captions": 0}
        read = _read_captions(self.path, self.files)
        if read is None:
            return None, labels
        texts, unreadable = read
        captions = [texts.get(os.path.normpath(f)) or None for f in self.files]
        missing = [f for f, t in zip(self.files, captions) if t is None]
        self.caption_stats = {"uncaptioned": len(missing), "uncaptioned_files": missing,
                              "unreadable_captions": unreadable}
        if missing or unreadable:
            log.warning("ImageFolderSource: %d of %d images in %s have no caption and are skipped%s (%d unreadable "
                        ".txt captions or %s lines)", len(missing), len(self.files), self.path,
                        f", e.g. {missing[0]}" if missing else "", unreadable, CAPTIONS_FILE)
        if len(missing) == len(self.files):
            raise ValueError(f"ImageFolderSource: folder {self.path!r} has captions ({CAPTIONS_FILE} or .txt "
                             f"sidecars) but none for any of its {len(self.files)} images")
        keep = [i for i, t in enumerate(captions) if t is not None]
        self.files = [self.files[i] for i in keep]
        return [captions[i] for i in keep], [labels[i] for i in keep]

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        captioned = ", captioned" if self.has_captions else ""
        return f"ImageFolderSource({self.path!r}, {len(self)} images, {len(self.class_names)} classes{captioned})"

    def _load(self, index: int) -> np.ndarray:
        notes = []
        with Image.open(self.files[index]) as pil:
            image = to_rgb(pil, notes, self.files[index])  # any bit depth; transparency onto white
        for note in notes:
            if note not in self._noted:
                self._noted.add(note)
                log.warning("%s", note)
        if self.image_size is not None:
            image = preprocess.resize_and_crop(image, self.image_size)
        return image

    def _skip(self, index: int, error: Exception) -> None:
        file = self.files[index]
        if file not in self.stats["skipped_files"]:
            self.stats["skipped_files"].append(file)
            self.stats["skipped"] = len(self.stats["skipped_files"])
            log.warning("skipping unreadable image %s (%s: %s)", file, type(error).__name__, error)

    def __getitem__(self, index: int) -> dict:
        n = len(self.files)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for offset in range(n):
            i = (index + offset) % n
            try:
                return _record(self._load(i), self.labels[i], self.captions[i] if self.has_captions else None)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                self._skip(i, e)
        raise ValueError(f"ImageFolderSource: none of the {n} files in {self.path!r} could be decoded")


# ---- scikit-learn digits -----------------------------------------------------------------------


@register_source("digits")
class DigitsSource:
    """scikit-learn's handwritten digits (1,797 images, 8×8, 10 classes) as RGB images.

    The 8×8 grey levels (0..16, ink bright) are scaled to 0..255 and upsampled to `image_size` with
    Pillow's bicubic filter, which gives smooth strokes; grey is repeated into 3 channels. Bundled
    with scikit-learn: nothing is downloaded.

    Args:
      image_size: output side, 16 or 32 (any multiple of 8 works).
      split: "train", "test" or "all". The split is a seeded permutation: the first
        round(test_fraction·1797) indices are the test set, the rest the training set.
      test_fraction: share of examples held out, in (0, 1).
      seed: seeds the split permutation.

    Records: `{"image": uint8 [image_size, image_size, 3], "label": int32 in [0, 10)}`;
    `indices` holds each record's index in `load_digits()`.
    """

    class_names = [str(d) for d in range(10)]

    def __init__(self, image_size: int = 32, split: str = "train", test_fraction: float = 0.1, seed: int = 0):
        if split not in ("train", "test", "all"):
            raise ValueError(f"DigitsSource: split must be 'train', 'test' or 'all', got {split!r}")
        if image_size < 8 or image_size % 8:
            raise ValueError(f"DigitsSource: image_size must be a multiple of 8 (16 or 32), got {image_size}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"DigitsSource: test_fraction must be in (0, 1), got {test_fraction}")
        images, targets = _upsampled_digits(int(image_size))
        n = len(targets)
        order = np.random.default_rng(seed).permutation(n)
        n_test = int(round(test_fraction * n))
        indices = {"test": order[:n_test], "train": order[n_test:], "all": np.arange(n)}[split]
        self.indices = np.sort(indices)
        self.split, self.image_size = split, image_size
        self.labels = targets[self.indices].astype(np.int32)
        self.images = images[self.indices]  # uint8 [N, S, S, 3], a copy

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"DigitsSource(image_size={self.image_size}, split={self.split!r}, {len(self)} images)"

    def __getitem__(self, index: int) -> dict:
        return _record(self.images[index], self.labels[index])


@functools.lru_cache(maxsize=4)
def _upsampled_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 `[N, S, S, 3]` and their labels, built once per size and process
    (reading and upsampling them takes about a second; the trainer, the token cache and the metrics
    each open the source)."""
    pixels, labels = _digits_table()
    grey = np.clip(pixels.reshape(-1, 8, 8) * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(g).resize((image_size, image_size), Image.Resampling.BICUBIC))
                    for g in grey])
    images = np.repeat(big[..., None], 3, axis=-1)
    images.setflags(write=False)  # shared by every DigitsSource of this size
    return images, labels


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: float `[1797, 64]` pixels in 0..16 and int `[1797]` labels.

    Read from the CSV file scikit-learn ships, without importing scikit-learn (1.5 s a process: the
    training subprocesses read digits but never fit anything); `load_digits` if the file moved."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz") if spec else ""
    if os.path.isfile(path):
        table = np.loadtxt(path, delimiter=",")
        if table.shape == (1797, 65):
            return table[:, :64], table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, np.asarray(digits.target)


# ---- in-memory arrays --------------------------------------------------------------------------


@register_source("arrays")
class ArraySource:
    """Images already in memory.

    Args:
      images: uint8 `[N, H, W, 3]` in [0, 255], or float `[N, H, W, 3]` in [0, 1] (rounded to uint8).
        Grey `[N, H, W]` / `[N, H, W, 1]` is repeated into 3 channels.
      labels: int `[N]`, or None for label 0 everywhere.
    """

    def __init__(self, images, labels=None):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"ArraySource: images must have shape [N, H, W, 3], got {images.shape}")
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        if np.issubdtype(images.dtype, np.floating):
            lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"ArraySource: float images must lie in [0, 1], got values in [{lo}, {hi}]")
            images = np.round(images * 255.0).astype(np.uint8)
        elif images.dtype != np.uint8:
            raise ValueError(f"ArraySource: images must be uint8 or float in [0, 1], got dtype {images.dtype}")
        if labels is None:
            labels = np.zeros(len(images), np.int32)
        labels = np.asarray(labels).astype(np.int32)
        if labels.shape != (len(images),):
            raise ValueError(f"ArraySource: labels must have shape [{len(images)}], got {labels.shape}")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"ArraySource({self.images.shape})"

    def __getitem__(self, index: int) -> dict:
        return _record(self.images[index], self.labels[index])
