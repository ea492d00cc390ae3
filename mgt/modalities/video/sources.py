"""Random-access video sources for grain.

A source has `__len__` and `__getitem__(i) -> {"video": uint8 [T, H, W, C], "label": int32}`.
Configs pick one by name through `make_source(config.data.source, ...)`; `register_source` adds a
user's own.

  moving_digits  Moving-MNIST-style clips made from scikit-learn's digits — built in, seeded, no download
  folder         a folder of video files (GIF with Pillow; MP4 / WebM / AVI / MOV with PyAV)
  arrays         uint8 clips already in memory
"""

from __future__ import annotations

import logging
import os

import numpy as np

from mgt.modalities.video import io
from mgt.registry import Registry

log = logging.getLogger(__name__)

_SOURCES = Registry("video source")


# `register_source(name)` (a decorator), `registered_sources()`, `make_source(name, **kwargs)`
register_source = _SOURCES.register
registered_sources = _SOURCES.names
make_source = _SOURCES.build


def _record(video: np.ndarray, label: int) -> dict:
    return {"video": video, "label": np.int32(label)}


# ---- moving digits -------------------------------------------------------------------------------
_SPLIT_IDS = {"train": 0, "test": 1}


@register_source("moving_digits")
class MovingDigitsSource:
    """Moving-MNIST-style clips made from scikit-learn's handwritten digits.

    Each clip: `num_frames` grey frames of `size`², one digit of 16 × 16 (the 8 × 8 digit upsampled ×2,
    bicubic) starting at a random position and moving at a constant velocity of 1–3 pixels per frame
    in x and in y (either sign), bouncing off the edges; with `num_digits=2` two such digits, drawn
    with a per-pixel maximum. The label is the (first) digit's class. The digit images split into
    train / test exactly as the image digits do (`DigitsSource`, same seed), so a test clip never
    shows a training digit. Clip i of a split is a function of (seed, split, i) only: the same on
    every machine.

    Args:
      split: "train" or "test".
      num_clips: the split's length (clips are made on demand; default 10,000 train / 1,000 test).
      num_frames, size: T and H = W of a clip.
      num_digits: 1 or 2.
      seed: seeds positions and velocities (the digit split always uses `DigitsSource`'s seed 0).

    Records: `{"video": uint8 [T, size, size, 1], "label": int32}`.
    """

    digit_size = 16

    def __init__(self, split: str = "train", num_clips: int | None = None, num_frames: int = 8, size: int = 32,
                 num_digits: int = 1, seed: int = 0):
        from mgt.modalities.image.sources import DigitsSource

        if split not in _SPLIT_IDS:
            raise ValueError(f"MovingDigitsSource: split must be 'train' or 'test', got {split!r}")
        if size < self.digit_size + 3:  # room for the largest step, so one reflection keeps a digit inside
            raise ValueError(f"MovingDigitsSource: size must be >= {self.digit_size + 3}, got {size}")
        if num_frames < 1 or num_digits not in (1, 2):
            raise ValueError(f"MovingDigitsSource: num_frames must be >= 1 and num_digits 1 or 2, got "
                             f"{num_frames} and {num_digits}")
        digits = DigitsSource(image_size=self.digit_size, split=split)
        self.digits = np.ascontiguousarray(digits.images[..., 0])  # uint8 [N, 16, 16]
        self.digit_labels = digits.labels
        self.split, self.size, self.num_frames, self.num_digits, self.seed = split, size, num_frames, num_digits, seed
        self.num_clips = int(num_clips if num_clips is not None else (10_000 if split == "train" else 1_000))
        self._labels = None

    def __len__(self) -> int:
        return self.num_clips

    def __repr__(self) -> str:
        return (f"MovingDigitsSource(split={self.split!r}, {self.num_clips} clips of {self.num_frames}×"
                f"{self.size}², {self.num_digits} digit(s))")

    def _plan(self, index: int):
        """(digit indices, start positions [D, 2], velocities [D, 2]) of clip `index`."""
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], int(index)])
        which = rng.integers(0, len(self.digits), size=self.num_digits)
        room = self.size - self.digit_size
        start = rng.integers(0, room + 1, size=(self.num_digits, 2))
        speed = rng.integers(1, 4, size=(self.num_digits, 2))
        sign = rng.choice(np.array([-1, 1]), size=(self.num_digits, 2))
        return which, start, speed * sign

    @property
    def labels(self) -> np.ndarray:
        """int32 `[num_clips]`: every clip's label (computed once, without drawing the clips)."""
        if self._labels is None:
            self._labels = np.asarray([self.digit_labels[self._plan(i)[0][0]] for i in range(len(self))], np.int32)
        return self._labels

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} of {len(self)}")
        which, pos, vel = self._plan(index)
        room = self.size - self.digit_size
        video = np.zeros((self.num_frames, self.size, self.size), np.uint8)
        pos, vel = pos.copy(), vel.copy()
        for t in range(self.num_frames):
            for d in range(self.num_digits):
                y, x = pos[d]
                patch = video[t, y:y + self.digit_size, x:x + self.digit_size]
                np.maximum(patch, self.digits[which[d]], out=patch)
            nxt = pos + vel
            low, high = nxt < 0, nxt > room  # bounce: reflect the position and the velocity
            nxt = np.where(low, -nxt, np.where(high, 2 * room - nxt, nxt))
            vel = np.where(low | high, -vel, vel)
            pos = nxt
        return _record(video[..., None], self.digit_labels[which[0]])


# ---- folders of video files ------------------------------------------------------------------------
@register_source("folder")
class VideoFolderSource:
    """Clips of `num_frames` frames from every video file below `path` (class = first sub-folder, as in
    an ImageFolder; files directly in `path` get label 0).

    Each file is read once when the source is built: its frames are resized (shorter side) and
    centre-cropped to `size`², converted to `channels`, and cut into clips of `num_frames` frames
    starting every `stride` frames (default: `num_frames`, no overlap). Files that cannot be read, or
    are shorter than one clip, are skipped with one warning that counts them. An empty folder, or
    one where no file gives a clip, is a ValueError naming `path`.
    """

    def __init__(self, path: str, num_frames: int = 16, size: int = 64, stride: int | None = None,
                 channels: int = 3):
        if not os.path.isdir(path):
            raise ValueError(f"config.data.path={path!r} is not a folder")
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path, followlinks=True)
                       for f in names if not f.startswith(".") and f.lower().endswith(io.VIDEO_EXTENSIONS))
        if not files:
            raise ValueError(f"config.data.path={path!r} holds no video files ({', '.join(io.VIDEO_EXTENSIONS)})")
        classes = sorted({os.path.relpath(f, path).split(os.sep)[0] for f in files
                          if os.sep in os.path.relpath(f, path)})
        self.class_names = classes
        stride = int(stride or num_frames)
        clips, labels, skipped = [], [], []
        for f in files:
            try:
                frames = io.read_video(f, size=size, channels=channels)
            except ValueError as e:
                skipped.append(f"{f} ({e})")
                continue
            if len(frames) < num_frames:
                skipped.append(f"{f} ({len(frames)} frames < {num_frames})")
                continue
            rel = os.path.relpath(f, path).split(os.sep)
            label = classes.index(rel[0]) if len(rel) > 1 else 0
            for start in range(0, len(frames) - num_frames + 1, stride):
                clips.append(frames[start:start + num_frames])
                labels.append(label)
        if skipped:
            log.warning("skipped %d of %d video files under %s, e.g. %s", len(skipped), len(files), path, skipped[0])
        if not clips:
            raise ValueError(f"config.data.path={path!r}: no file gave a clip of {num_frames} frames "
                             f"({len(skipped)} skipped, e.g. {skipped[0]})")
        self.videos = np.stack(clips)
        self.labels = np.asarray(labels, np.int32)
        self.skipped = len(skipped)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        return _record(self.videos[index], self.labels[index])


@register_source("arrays")
class VideoArraySource:
    """Clips in memory: uint8 `[N, T, H, W, C]` (C = 1 or 3), or float in [0, 1]; labels int `[N]` or None."""

    def __init__(self, videos, labels=None):
        videos = np.asarray(videos)
        if videos.ndim == 4:
            videos = videos[..., None]
        if videos.ndim != 5 or videos.shape[-1] not in (1, 3):
            raise ValueError(f"VideoArraySource: videos must have shape [N, T, H, W, C] with C = 1 or 3, "
                             f"got {videos.shape}")
        self.videos = io.to_uint8(videos, "VideoArraySource: videos")
        labels = np.zeros(len(videos), np.int32) if labels is None else np.asarray(labels).astype(np.int32)
        if labels.shape != (len(videos),):
            raise ValueError(f"VideoArraySource: labels must have shape [{len(videos)}], got {labels.shape}")
        self.labels = labels

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        return _record(self.videos[index], self.labels[index])
