"""The video modality: sources (moving digits, video folders, arrays), file I/O, the `video` task.

Clips are uint8 `[T, H, W, C]` in sources and float32 `[B, T, H, W, C]` in [0, 1] from the pipeline
on. This package imports the engine (`mgt`); the engine never imports it.
"""

from mgt.modalities.video.io import read_frames, read_video, write_video
from mgt.modalities.video.sources import (
    MovingDigitsSource,
    VideoArraySource,
    VideoFolderSource,
    make_source,
    register_source,
    registered_sources,
)

__all__ = ["MovingDigitsSource", "VideoArraySource", "VideoFolderSource", "make_source", "read_frames",
           "read_video", "register_source", "registered_sources", "write_video"]
