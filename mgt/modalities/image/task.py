"""The image task: what the trainer and the CLI need from the image modality, built from a config.

`ImageTask(config)` knows the input shape, the class names, the training / evaluation data, how to
write samples, and how to read an image from a file. The trainer never touches pixels itself.
"""

from __future__ import annotations

import os

import numpy as np

from mgt.modalities.image.preprocess import make_image_pipeline, resize_and_crop, to_float
from mgt.modalities.image.sources import make_source
from mgt.modalities.image.writer import save_image_grid


class ImageTask:
    name = "image"

    def __init__(self, config):
        self.config = config
        data = config.data
        self.image_size = int(data.image_size)
        self.input_shape = (self.image_size, self.image_size, 3)
        self.num_classes = int(data.num_classes)

    # ---- data -----------------------------------------------------------------------------------
    def source(self, split: str = "train"):
        """The configured source; `split` applies to sources that have one (digits)."""
        data = self.config.data
        if data.source == "digits":
            return make_source("digits", image_size=self.image_size, split=split)
        if data.source == "folder":
            if not data.path:
                raise ValueError("config.data.source='folder' needs config.data.path (a folder of images)")
            if not os.path.isdir(data.path):
                raise ValueError(f"config.data.path={data.path!r} is not a folder")
            return make_source("folder", path=data.path)
        return make_source(data.source, **(dict(data.get("source_kwargs", {}) or {})))

    def check_source(self, source) -> None:
        labels = getattr(source, "labels", None)
        if labels is not None and len(labels) and int(np.max(labels)) >= self.num_classes:
            raise ValueError(f"the data has labels up to {int(np.max(labels))} but config.data.num_classes="
                             f"{self.num_classes}; set --config.data.num_classes={int(np.max(labels)) + 1}")

    def pipeline(self, source, *, batch_size: int, train: bool, seed: int, augment: bool = True):
        """grain iterator of `{"image": float32 [B, S, S, 3], "label": int32 [B]}`.

        `train=True`: shuffled, repeated, augmented (flip / shift per config). `train=False`: one
        ordered pass, augmented only when `augment` (used to tokenize augmented copies).
        """
        data = self.config.data
        if not train and augment and (data.flip or data.shift):
            import grain

            from mgt.modalities.image.preprocess import Augment, ResizeCrop, ToFloat

            ds = grain.MapDataset.source(source).map(ResizeCrop(self.image_size)).seed(seed)
            ds = ds.random_map(Augment(flip=bool(data.flip), max_shift=int(data.shift))).map(ToFloat())
            return ds.batch(batch_size, drop_remainder=False).to_iter_dataset()
        return make_image_pipeline(source, batch_size=batch_size, image_size=self.image_size, train=train, seed=seed,
                                   flip=bool(data.flip) and augment, shift=int(data.shift) if augment else 0,
                                   num_workers=int(data.num_workers))

    # ---- files ----------------------------------------------------------------------------------
    def read_input(self, path: str) -> np.ndarray:
        """An image file → float32 `[S, S, 3]` in [0, 1] (resized and centre-cropped)."""
        from PIL import Image, UnidentifiedImageError

        if not os.path.isfile(path):
            raise ValueError(f"--image {path!r} does not exist")
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"--image {path!r} is not a readable image ({e})") from None
        return to_float(resize_and_crop(image, self.image_size))

    def write_samples(self, path: str, outputs, labels=None, *, ncols=None) -> None:
        """Samples float32 `[N, S, S, 3]` → a labelled PNG grid, or an .npz of uint8 images + labels."""
        outputs = np.clip(np.asarray(outputs, np.float32), 0.0, 1.0)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if path.endswith(".npz"):
            images = np.round(outputs * 255.0).astype(np.uint8)
            lab = np.zeros(len(images), np.int32) if labels is None else np.asarray(labels, np.int32)
            np.savez(path, images=images, labels=lab)
            return
        upscale = max(1, 64 // self.image_size)
        names = None if labels is None else [str(int(x)) for x in labels]
        save_image_grid(path, outputs, labels=names, ncols=ncols, upscale=upscale)
