"""The video task's conditional tasks (MAGVIT's COMMIT tasks, `train_lib/cond_utils.py`).

Each task says which frames / pixels of a clip `[T, H, W]` are given and builds the condition clip in
pixel space, which is then tokenized (`mgt.commit`):

    frame_prediction     the first c frames given; the rest repeat frame c-1 (edge padding)
    interpolation        the first and last c frames given; the middle interpolates linearly between
                         frame c-1 and frame T-c
    outpaint_central     the central H/2 × W/2 region given in every frame; the rest edge-padded
    outpaint_horizontal  the central band of rows H/4 .. 3H/4 given; the rest edge-padded
    outpaint_vertical    the central band of columns W/4 .. 3W/4 given; the rest edge-padded
    inpaint_central      everything but the central H/2 × W/2 box given; the box filled with 0
    inpaint_moving       everything but an H/2 × W/2 box moving left → right over the clip; 0 inside

Clips are float32 `[B, T, H, W, C]` (numpy). A custom `box` (top, left, height, width in pixels,
every frame) replaces the region of the outpaint (the given box) or inpaint (the removed box) tasks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mgt.condition import GENERATION_TASK

VIDEO_TASKS = (GENERATION_TASK, "frame_prediction", "interpolation", "outpaint_central", "outpaint_horizontal",
               "outpaint_vertical", "inpaint_central", "inpaint_moving")


@dataclasses.dataclass(frozen=True)
class VideoCondition:
    """A `mgt.commit.ConditionalTask` on clips `[T, H, W, C]`.

    name: the task name. given: bool `[T, H, W]`. fill: how the rest is filled — "edge" (frames:
    repeat the last given frame; regions: replicate the given box's border), "interpolate" (frames
    between the given ends) or "zero".
    """

    name: str
    given: np.ndarray
    fill: str
    box: tuple[int, int, int, int] | None = None  # (top, left, height, width) of the given box ("edge" regions)
    frames: int = 0  # c, the given frames at the start (and end, for interpolation)

    def condition_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """float32 `[B, T, H, W, C]` → the condition clips, same shape and dtype."""
        x = np.asarray(inputs, np.float32)
        t = x.shape[1]
        c = self.frames
        if self.fill == "interpolate":
            start, end = x[:, c - 1:c], x[:, t - c:t - c + 1]
            w = (np.arange(1, t - 2 * c + 1, dtype=np.float32) / (t - 2 * c + 1)).reshape(1, -1, 1, 1, 1)
            out = x.copy()
            out[:, c:t - c] = start + (end - start) * w
            return out
        if self.fill == "edge" and self.box is None:  # frames
            return np.concatenate([x[:, :c], np.repeat(x[:, c - 1:c], t - c, axis=1)], axis=1)
        if self.fill == "edge":  # a region: replicate the given box's border outwards
            top, left, h, w = self.box
            crop = x[:, :, top:top + h, left:left + w]
            pad = ((0, 0), (0, 0), (top, x.shape[2] - top - h), (left, x.shape[3] - left - w), (0, 0))
            return np.pad(crop, pad, mode="edge")
        return np.where(self.given[None, :, :, :, None], x, 0.0).astype(np.float32)


def video_condition(name: str, frames: int, size: int, *, cond_frames: int = 2,
                    box: tuple[int, int, int, int] | None = None, argument: str = "task") -> VideoCondition:
    """The conditional task `name` on clips of `frames` × `size` × `size`.

    `cond_frames`: c for frame prediction and interpolation. `box`: (top, left, height, width) in
    pixels for the outpaint (given) and inpaint (removed) tasks instead of their fixed regions.
    Raises ValueError naming `argument` / `--cond-frames` / `--box` for a task or value that does not fit.
    """
    t, s = int(frames), int(size)
    given = np.zeros((t, s, s), bool)
    if name == "frame_prediction":
        if not 0 < cond_frames < t:
            raise ValueError(f"--cond-frames {cond_frames}: expected 1 <= c < {t} (the clip's frames)")
        given[:cond_frames] = True
        return VideoCondition(name, given, "edge", frames=cond_frames)
    if name == "interpolation":
        if not 0 < 2 * cond_frames < t:
            raise ValueError(f"--cond-frames {cond_frames}: interpolation gives c frames at each end; "
                             f"expected 1 <= c and 2c < {t}")
        given[:cond_frames] = given[t - cond_frames:] = True
        return VideoCondition(name, given, "interpolate", frames=cond_frames)
    q, half = s // 4, s // 2
    if name.startswith("outpaint_"):
        fixed = {"outpaint_central": (q, q, half, half), "outpaint_horizontal": (q, 0, half, s),
                 "outpaint_vertical": (0, q, s, half)}
        if box is None and name not in fixed:
            raise ValueError(f"{argument} {name!r}: expected one of {VIDEO_TASKS}")
        top, left, h, w = check_box(box, s) if box is not None else fixed[name]
        given[:, top:top + h, left:left + w] = True
        return VideoCondition(name, given, "edge", box=(top, left, h, w))
    if name == "inpaint_central" or (name.startswith("inpaint_") and box is not None):
        top, left, h, w = check_box(box, s) if box is not None else (q, q, half, half)
        given[:] = True
        given[:, top:top + h, left:left + w] = False
        return VideoCondition(name, given, "zero")
    if name == "inpaint_moving":
        given[:] = True
        starts = np.round(np.linspace(0, s // 2, t)).astype(int)
        for k, left in enumerate(starts):
            given[k, q:q + half, left:left + half] = False
        return VideoCondition(name, given, "zero")
    raise ValueError(f"{argument} {name!r}: expected one of {VIDEO_TASKS}")


def check_box(box, size: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) inside a `size` × `size` frame, non-empty (ValueError naming --box)."""
    try:
        top, left, h, w = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"--box {box!r}: expected TOP,LEFT,HEIGHT,WIDTH (four integers)") from None
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > size or left + w > size:
        raise ValueError(f"--box {top},{left},{h},{w}: expected a non-empty box inside the {size}x{size} frame")
    return top, left, h, w
