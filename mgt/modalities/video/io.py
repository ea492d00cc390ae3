"""Video files in and out: GIF with Pillow, MP4 / WebM / AVI / MOV with PyAV (`pip install "mgt[video]"`),
`.npz` with numpy. Clips are uint8 `[T, H, W, C]` (C = 1 or 3) unless a docstring says float.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageSequence

VIDEO_EXTENSIONS = (".gif", ".mp4", ".webm", ".avi", ".mov", ".mkv")
_PYAV_EXTENSIONS = VIDEO_EXTENSIONS[1:]


def to_uint8(videos, name: str = "videos") -> np.ndarray:
    """uint8 as is; float in [0, 1] scaled and rounded (ValueError naming `name` otherwise)."""
    videos = np.asarray(videos)
    if videos.dtype == np.uint8:
        return videos
    if np.issubdtype(videos.dtype, np.floating):
        lo, hi = float(videos.min(initial=0.0)), float(videos.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name}: float values must lie in [0, 1], got [{lo}, {hi}]")
        return np.round(videos * 255.0).astype(np.uint8)
    raise ValueError(f"{name}: expected uint8 or float in [0, 1], got dtype {videos.dtype}")


def convert_channels(videos: np.ndarray, channels: int) -> np.ndarray:
    """`[..., C]` with C = 1 or 3 → `[..., channels]` (grey repeated, or RGB averaged to grey)."""
    c = videos.shape[-1]
    if c == channels:
        return videos
    if c == 1 and channels == 3:
        return np.repeat(videos, 3, axis=-1)
    if c == 3 and channels == 1:
        mean = videos.astype(np.float32).mean(axis=-1, keepdims=True)
        return np.round(mean).astype(videos.dtype) if videos.dtype == np.uint8 else mean.astype(videos.dtype)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def _resize_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[H, W, 3]` → `[size, size, 3]`: shorter side resized to `size` (bicubic), centre crop."""
    h, w = frame.shape[:2]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        frame = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.Resampling.BICUBIC))
        top, left = (nh - size) // 2, (nw - size) // 2
        frame = frame[top:top + size, left:left + size]
    return frame


def read_frames(path: str) -> np.ndarray:
    """Every frame of a video file → uint8 `[T, H, W, 3]` (ValueError naming `path` if unreadable)."""
    lower = str(path).lower()
    try:
        if lower.endswith(".gif"):
            with Image.open(path) as im:
                frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
        elif lower.endswith(_PYAV_EXTENSIONS):
            av = _pyav()
            with av.open(path) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        else:
            raise ValueError(f"expected one of {list(VIDEO_EXTENSIONS)}")
    except ValueError as e:
        raise ValueError(f"{path!r}: {e}") from None
    except (OSError, RuntimeError) as e:  # PIL and PyAV errors (PyAV's derive from both)
        raise ValueError(f"{path!r} is not a readable video: {e}") from None
    if not frames:
        raise ValueError(f"{path!r} has no frames")
    return np.stack(frames)


def read_video(path: str, *, size: int, channels: int) -> np.ndarray:
    """A video file → uint8 `[T, size, size, channels]` (resized, centre-cropped, channels converted)."""
    frames = np.stack([_resize_crop(f, size) for f in read_frames(path)])
    return convert_channels(frames, channels)


def write_video(path: str, frames, *, fps: float = 4.0) -> None:
    """uint8 (or float in [0, 1]) `[T, H, W, C]` → a GIF (looping) or an MP4 / WebM (PyAV)."""
    frames = convert_channels(to_uint8(frames, "frames"), 3)
    lower = str(path).lower()
    if lower.endswith(".gif"):
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
        return
    av = _pyav()
    codec = "libvpx-vp9" if lower.endswith(".webm") else "libx264"
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _pyav():
    try:
        import av
    except ImportError:
        raise ValueError("MP4 / WebM / AVI / MOV files need PyAV: pip install \"mgt[video]\" (or pip install av); "
                         "GIF and .npz work without it") from None
    return av
