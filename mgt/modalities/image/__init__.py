"""The image modality: data sources, preprocessing and the grain pipeline, grid writer, editing.

Images are uint8 `[H, W, 3]` in sources and float32 `[B, H, W, 3]` in [0, 1] from the pipeline on.
This package imports the engine (`mgt`); the engine never imports it.
"""

from mgt.modalities.image.editing import (
    EditResult,
    box_to_token_mask,
    class_edit,
    composite,
    gaussian_blur_mask,
    inpaint,
    outpaint,
    outpaint_canvas,
    token_mask_to_pixels,
)
from mgt.modalities.image.preprocess import (
    center_crop,
    make_image_pipeline,
    random_flip,
    random_shift,
    resize,
    resize_and_crop,
    to_float,
)
from mgt.modalities.image.sources import (
    ArraySource,
    DigitsSource,
    ImageFolderSource,
    make_source,
    register_source,
    registered_sources,
)
from mgt.modalities.image.writer import make_image_grid, save_image_grid

__all__ = [
    "ArraySource", "DigitsSource", "EditResult", "ImageFolderSource", "box_to_token_mask",
    "center_crop", "class_edit", "composite", "gaussian_blur_mask", "inpaint", "make_image_grid",
    "make_image_pipeline", "make_source", "outpaint", "outpaint_canvas", "random_flip",
    "random_shift", "register_source", "registered_sources", "resize", "resize_and_crop",
    "save_image_grid", "to_float", "token_mask_to_pixels",
]
