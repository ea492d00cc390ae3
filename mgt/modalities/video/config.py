"""The video configs' base: `mgt.config.base_config()` with the video task's data fields and the 3D VQGAN."""

from __future__ import annotations

from mgt.config import base_config


def video_config():
    """Defaults of a video experiment; `configs/video/*.py` set only what differs."""
    c = base_config()
    c.modality = "video"
    c.data.source = "folder"  # "moving_digits", "folder" (with data.path), "arrays" or another registered source
    c.data.num_frames = 16
    c.data.image_size = 128  # frames are resized (shorter side) and centre-cropped to this
    c.data.channels = 3
    c.data.flip = True  # random left-right flips of whole clips in training
    c.data.fps = 4.0  # frame rate of written .gif / .mp4 files
    c.data.condition_frames = 2  # frames given by frame_prediction (at the start) / interpolation (each end)
    # MAGVIT's COMMIT tasks the transformer learns (mgt.modalities.video.commit_tasks.VIDEO_TASKS);
    # () trains plain (class-)conditional generation only
    c.model.tasks = ()
    c.tokenizer.name = "vqgan3d"
    c.tokenizer_train.discriminator = "3d"  # or "frames": the 2D discriminator on every frame
    return c
