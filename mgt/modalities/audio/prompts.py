"""Prompts as masks (VampNet): which tokens of a codec's `(frames, levels)` grid are given.

A prompt is a bool array `keep [F, K]` (or `[N, F, K]`): True where the input's token is given to
the model, False where the model generates. The kinds below are VampNet's; they combine with numpy's
`|` (give what either gives — VampNet's `mask_and` of its generate-masks) and `&` (give what both give):

    continuation(F, K, frames)        the first `frames` frames              ("continue")
    inpaint(F, K, start, end)         everything but frames [start, end)     ("inpaint")
    periodic(F, K, period, width)     every `period`-th frame (`width` wide)  ("periodic")
    lowest_levels(F, K, levels)       the lowest `levels` code levels         ("variation", compression)
    onsets(audio, ..., width)         frames around the audio's onsets (`librosa.onset`)

e.g. `periodic(F, K, 8) | lowest_levels(F, K, 1)`: keep every 8th frame and the coarsest level.

`fill_in_windows` generates a token grid of any length with a model trained on windows of F frames:
windows overlap by `overlap` frames, and the frames a window shares with the one before it are
given (already generated), so consecutive windows stitch.
"""

from __future__ import annotations

import numpy as np


def continuation(num_frames: int, num_levels: int, frames: int) -> np.ndarray:
    """bool `[F, K]`: the first `frames` frames given (0 <= frames <= F)."""
    _check_frames("frames", frames, num_frames)
    keep = np.zeros((num_frames, num_levels), bool)
    keep[:frames] = True
    return keep


def inpaint(num_frames: int, num_levels: int, start: int, end: int) -> np.ndarray:
    """bool `[F, K]`: every frame given except those in [start, end) (0 <= start < end <= F)."""
    if not 0 <= start < end <= num_frames:
        raise ValueError(f"span [{start}, {end}) frames: expected 0 <= start < end <= {num_frames}")
    keep = np.ones((num_frames, num_levels), bool)
    keep[start:end] = False
    return keep


def periodic(num_frames: int, num_levels: int, period: int, width: int = 1) -> np.ndarray:
    """bool `[F, K]`: frames t with t mod period < width given (VampNet's periodic prompt)."""
    if period < 1 or not 1 <= width <= period:
        raise ValueError(f"period={period}, width={width}: expected period >= 1 and 1 <= width <= period")
    keep = (np.arange(num_frames) % period) < width
    return np.repeat(keep[:, None], num_levels, axis=1)


def lowest_levels(num_frames: int, num_levels: int, levels: int) -> np.ndarray:
    """bool `[F, K]`: the lowest `levels` code levels given at every frame (0 <= levels <= K); the model
    regenerates the finer levels — a variation that keeps the coarse content (VampNet's codebook mask)."""
    if not 0 <= levels <= num_levels:
        raise ValueError(f"levels={levels}: expected 0 <= levels <= {num_levels} (the codec's code levels)")
    keep = np.zeros((num_frames, num_levels), bool)
    keep[:, :levels] = True
    return keep


def onsets(audio, sample_rate: int, hop_length: int, num_frames: int, num_levels: int, width: int = 1) -> np.ndarray:
    """bool `[F, K]`: `width` frames from each onset `librosa.onset.onset_detect` finds in `audio`
    (float32 `[S]`), on the codec's frames (`hop_length` samples each)."""
    import librosa

    audio = np.asarray(audio, np.float32)
    times = librosa.onset.onset_detect(y=audio, sr=sample_rate, hop_length=min(512, hop_length), units="samples")
    keep = np.zeros((num_frames,), bool)
    for start in np.asarray(times, np.int64) // hop_length:
        keep[int(start):int(start) + width] = True
    return np.repeat(keep[:, None], num_levels, axis=1)


def apply_prompt(tokens, keep, mask_id: int) -> np.ndarray:
    """int32 tokens `[N, F, K]` with `mask_id` where `keep` (`[F, K]` or `[N, F, K]`) is False."""
    tokens = np.asarray(tokens, np.int32)
    keep = np.broadcast_to(np.asarray(keep, bool), tokens.shape)
    return np.where(keep, tokens, np.int32(mask_id)).astype(np.int32)


def window_starts(total: int, window: int, overlap: int) -> list[int]:
    """Start frames of windows of `window` frames covering `total` frames, consecutive windows sharing at
    least `overlap` frames (the last window ends at `total`; one window when total <= window)."""
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"overlap={overlap} frames: expected 0 <= overlap < the window's {window} frames")
    if total <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, total - window, stride))
    return starts + [total - window]


def fill_in_windows(generate_window, tokens, mask_id: int, window: int, overlap: int) -> np.ndarray:
    """Generate every `mask_id` token of `tokens` int32 `[N, F_total, K]`, window by window.

    `generate_window(tokens [N, window, K]) -> tokens [N, window, K]` fills one window's masked tokens
    (a compiled decode: every call has the same shape). Windows overlap by `overlap` frames; a window's
    frames that an earlier window generated are given to it, so the result stitches. A grid shorter than
    the window is padded with `mask_id` (generated, then dropped). Returns int32 `[N, F_total, K]`.
    """
    tokens = np.array(tokens, np.int32)
    n, total = tokens.shape[:2]
    if total < window:
        pad = np.full((n, window - total) + tokens.shape[2:], mask_id, np.int32)
        return fill_in_windows(generate_window, np.concatenate([tokens, pad], 1), mask_id, window, overlap)[:, :total]
    for start in window_starts(total, window, overlap):
        part = tokens[:, start:start + window]
        if (part == mask_id).any():
            tokens[:, start:start + window] = np.asarray(generate_window(part))
    return tokens


def _check_frames(name: str, value: int, num_frames: int) -> None:
    if not 0 <= value <= num_frames:
        raise ValueError(f"{name}={value}: expected 0 <= {name} <= {num_frames} (the token frames)")
