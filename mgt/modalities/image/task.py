"""The image task: the `Task` protocol for images, built from a config.

Model inputs are float32 `[S, S, 3]` in [0, 1] (`config.data.image_size` = S); sources are registered
by name (`mgt.modalities.image.sources`); samples are written as a labelled PNG grid or an .npz of
uint8 images; the edits are inpainting, outpainting and the official class-conditional edit.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from mgt.condition import Condition
from mgt.modalities import register_task
from mgt.modalities.base import BaseTask, ensure_parent
from mgt.modalities.image.preprocess import make_image_pipeline, resize_and_crop, to_float
from mgt.modalities.image.sources import make_source
from mgt.modalities.image.writer import save_image_grid

EDIT_STEPS = 12  # `mgt edit`'s default decoding steps for images: the official editing mode (12, from step 2)

EDIT_MODES = ("inpaint", "outpaint", "class")


@register_task("image")
class ImageTask(BaseTask):
    name = "image"
    input_key = "image"
    identity_keys = ("data.image_size", "data.num_classes")
    output_extensions = (".png", ".npz")

    def __init__(self, config):
        super().__init__(config)
        self.image_size = int(config.data.image_size)
        self.input_shape = (self.image_size, self.image_size, 3)

    # ---- data -----------------------------------------------------------------------------------
    def source(self, split: str = "train"):
        """The configured source; `split` applies to sources that have one (digits, captioned shapes)."""
        data = self.config.data
        if data.source == "digits":
            return make_source("digits", image_size=self.image_size, split=split)
        if data.source == "folder":
            if not data.path:
                raise ValueError("config.data.source='folder' needs config.data.path (a folder of images)")
            if not os.path.isdir(data.path):
                raise ValueError(f"config.data.path={data.path!r} is not a folder")
            return make_source("folder", path=data.path)
        if data.source == "captioned_shapes":  # "train", "val" (in distribution) or "test" (held-out pairs)
            return make_source("captioned_shapes", split=split, **(dict(data.get("source_kwargs", {}) or {})))
        return make_source(data.source, **(dict(data.get("source_kwargs", {}) or {})))

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

    def examples(self, split: str, num: int) -> np.ndarray:
        source = self.source(split)
        return np.stack([to_float(resize_and_crop(np.asarray(source[i]["image"]), self.image_size))
                         for i in range(min(num, len(source)))])

    # ---- files ----------------------------------------------------------------------------------
    def read_input(self, path: str, argument: str = "--image") -> np.ndarray:
        """An image file → float32 `[S, S, 3]` in [0, 1] (resized and centre-cropped). Any bit depth is
        scaled from its own range; transparency is composited onto white; an image smaller than S is
        upscaled with a warning (all on stderr)."""
        import sys

        from mgt.modalities.image.io import read_rgb

        notes = []
        image = read_rgb(path, notes=notes, argument=argument)
        if min(image.shape[:2]) < self.image_size:
            notes.append(f"{argument} {path!r} is {image.shape[1]}x{image.shape[0]} pixels, smaller than the model's "
                         f"{self.image_size}x{self.image_size}: upscaled")
        for note in notes:
            print(f"mgt: warning: {note}", file=sys.stderr)
        return to_float(resize_and_crop(image, self.image_size))

    def read_inputs(self, path: str, argument: str = "--input"):
        """An `.npz` as `mgt sample` writes it (`images` uint8 `[N, S, S, 3]`, optional `labels` and
        `prompts`) or one image file → (float32 `[N, S, S, 3]`, its labels and prompts as a `Condition`)."""
        if not str(path).lower().endswith(".npz"):
            return self.read_input(path, argument)[None], Condition()
        if not os.path.isfile(path):
            raise ValueError(f"{argument} {path!r}: no such file")
        try:
            with np.load(path) as f:
                images = np.asarray(f["images"])
                labels = np.asarray(f["labels"]) if "labels" in f.files else None
                prompts = np.asarray(f["prompts"]) if "prompts" in f.files else None
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{argument} {path!r}: expected an .npz with 'images' uint8 [N, S, S, 3] ({e})") from None
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"{argument} {path!r}: 'images' must be [N, {s}, {s}, 3], got {images.shape}")
        condition = Condition() if labels is None or labels.shape != (len(images),) else Condition(
            labels=labels.astype(np.int32))
        if prompts is not None and prompts.shape == (len(images),):  # a text workdir's samples keep their prompts
            condition = condition.replace(text=prompts.astype(str))
        return images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0), condition

    def write_samples(self, path: str, outputs, condition: Condition | None = None, *, grid: bool = True) -> None:
        """Images float32 `[N, S, S, 3]` → a PNG (a grid labelled with the classes, whole classes per row;
        with `grid=False` the first image at its own size) or an .npz of uint8 `images` and `labels`."""
        self.check_output(path)
        outputs = np.clip(np.asarray(outputs, np.float32), 0.0, 1.0)
        labels = None if condition is None or condition.labels is None else np.asarray(condition.labels, np.int32)
        prompts = None if condition is None or condition.text is None else np.asarray(condition.text, str)
        ensure_parent(path)
        if path.lower().endswith(".npz"):
            images = np.round(outputs * 255.0).astype(np.uint8)
            extra = {} if prompts is None else {"prompts": prompts}
            np.savez(path, images=images, labels=np.zeros(len(images), np.int32) if labels is None else labels,
                     **extra)
            return
        if not grid:
            from PIL import Image

            Image.fromarray(np.round(outputs[0] * 255.0).astype(np.uint8)).save(path)
            return
        upscale = max(1, 64 // self.image_size)
        if prompts is not None:  # one row per prompt, titled with it
            order, titles, per = _prompt_rows(prompts)
            save_image_grid(path, outputs[order], ncols=per, upscale=upscale, row_titles=titles)
            return
        names = None if labels is None else [str(int(x)) for x in labels]
        save_image_grid(path, outputs, labels=names, ncols=_class_columns(labels), upscale=upscale)

    def sample_writer(self, path: str, total: int):
        """`.npz`: streamed batch by batch (uint8 `images`, `labels`); `.png`: collected for the grid."""
        if not path.lower().endswith(".npz"):
            return super().sample_writer(path, total)
        self.check_output(path)
        from mgt.modalities.writers import LabelledUint8Npz

        return LabelledUint8Npz(path, total, "images", self.input_shape, prompts=self.text is not None)

    def write_reconstructions(self, path: str, inputs, reconstructions) -> None:
        """Originals in the first row, reconstructions below."""
        grid = np.concatenate([np.asarray(inputs, np.float32), np.clip(np.asarray(reconstructions), 0, 1)], 0)
        ensure_parent(path)
        save_image_grid(path, grid, ncols=len(inputs), upscale=max(1, 64 // self.image_size))

    # ---- edits ----------------------------------------------------------------------------------
    def add_edit_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--image", required=True, help="the image to edit (resized and centre-cropped)")
        parser.add_argument("--box", required=True, help="TOP,LEFT,HEIGHT,WIDTH in pixels of the (resized) image")
        if self.model_condition == "labels":
            parser.add_argument("--label", type=int, default=None, help="class of the regenerated region")
        parser.add_argument("--mode", choices=EDIT_MODES, default="inpaint",
                            help="inpaint: regenerate the box; outpaint: keep the box, regenerate the rest; "
                                 "class: the official class-conditional edit (box grown by one token, from step 2)")

    def edit(self, args, pipeline, rng, *, num_steps: int | None):
        """`--mode` on `--image` within `--box` → (float32 `[1, S, S, 3]`, condition); `num_steps` None: 12,
        the official editing mode's."""
        from mgt.modalities.image import editing
        from mgt.sampling import model_logits_fn

        try:
            box = tuple(int(x) for x in args.box.split(","))
        except ValueError:
            box = ()
        if len(box) != 4:
            raise ValueError(f"--box {args.box!r}: expected TOP,LEFT,HEIGHT,WIDTH (four integers)")
        condition = Condition()
        if self.model_condition == "labels":
            if args.label is None:
                raise ValueError(f"--label is required: the model is class-conditional "
                                 f"(classes 0..{self.num_classes - 1})")
            if not 0 <= args.label < self.num_classes:
                raise ValueError(f"--label {args.label}: expected a class id in [0, {self.num_classes})")
            condition = Condition(labels=np.asarray([args.label], np.int32))
        image = self.read_input(args.image)[None]
        num_steps = EDIT_STEPS if num_steps is None else num_steps
        tokenizer, transformer = pipeline.tokenizer, pipeline.transformer
        fn = model_logits_fn(transformer, condition=condition)
        mask_id = transformer.spec.mask_id
        if args.mode == "class":
            result = editing.class_edit(tokenizer, fn, image, box, rng, mask_id=mask_id, num_steps=num_steps)
        else:
            grid = transformer.config.grid
            token_mask = editing.box_to_token_mask(box, image.shape[1:3], grid, grow=0)
            if args.mode == "outpaint":
                token_mask = ~token_mask
            result = editing.inpaint(tokenizer, fn, image, token_mask, rng, mask_id=mask_id, num_steps=num_steps)
        return np.asarray(result.image), condition

    # ---- metrics --------------------------------------------------------------------------------
    def sample_metrics(self, outputs, condition: Condition) -> dict[str, float]:
        """For class-conditional digits: the share of samples a real-digit classifier labels with their class;
        for captioned shapes: the share the shapes detector finds to match their caption (one / two shapes)."""
        if self.config.data.source == "captioned_shapes" and condition is not None and condition.text is not None:
            from mgt.modalities.image.shapes_detector import score

            result = score(np.asarray(outputs), [str(t) for t in condition.text])
            return {f"caption_{k}": v for k, v in result.items() if k.startswith("accuracy") and v == v}
        if self.config.data.source != "digits" or condition is None or condition.labels is None:
            return {}
        from mgt.modalities.image.metrics import digit_class_accuracy

        return {"digit_class_accuracy": digit_class_accuracy(outputs, condition.labels)}


def _prompt_rows(prompts) -> tuple[np.ndarray, list[str], int]:
    """(order, row titles, columns): samples grouped by prompt (first appearance order), one row each;
    rows are as wide as the most frequent prompt (a shorter group leaves blank cells)."""
    titles = list(dict.fromkeys(prompts.tolist()))
    groups = [np.flatnonzero(prompts == t) for t in titles]
    per = max(len(g) for g in groups)
    if any(len(g) != per for g in groups):  # uneven: plain order, one title per row of `per`
        rows = -(-len(prompts) // per)
        return np.arange(len(prompts)), [" | ".join(dict.fromkeys(prompts[r * per:(r + 1) * per].tolist()))
                                         for r in range(rows)], per
    return np.concatenate(groups), titles, per


def _class_columns(labels) -> int | None:
    """Columns that keep whole classes per row when `labels` are sorted groups of one size (two
    classes per row when each has fewer than 5 samples); None (a square grid) otherwise."""
    if labels is None or len(labels) == 0:
        return None
    values, counts = np.unique(labels, return_counts=True)
    per = int(counts[0])
    if len(set(counts.tolist())) != 1 or not np.array_equal(labels, np.repeat(values, per)):
        return None
    return per * (2 if per < 5 and len(values) > 1 else 1)
