"""The image modality: sources, preprocessing, the grain pipeline, the grid writer and editing."""

import logging
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mgt.modalities import image as im
from mgt.modalities.image import preprocess, sources

V = 8  # stub codebook size
MASK_ID = V
FILL = 5  # the code the stub transformer always predicts


# ---- stubs for the editing drivers -----------------------------------------------------------


class PatchTokenizer:
    """4×4 pixel patches → mean intensity quantised to V levels; decoding paints flat grey patches."""

    codebook_size, num_levels, patch = V, 1, 4

    def encode(self, x):
        b, h, w, _ = x.shape
        p = self.patch
        means = jnp.asarray(x).reshape(b, h // p, p, w // p, p, 3).mean(axis=(2, 4, 5))
        return jnp.round(means * (V - 1)).astype(jnp.int32)

    def decode(self, tokens):
        p = self.patch
        grey = tokens.astype(jnp.float32) / (V - 1)
        grey = jnp.repeat(jnp.repeat(grey, p, axis=1), p, axis=2)
        return jnp.repeat(grey[..., None], 3, axis=-1)


def always_fill(tokens):
    """Stub transformer: logits [B, h, w, V] that put all the mass on code FILL."""
    logits = jnp.where(jnp.arange(V) == FILL, 0.0, -30.0)
    return jnp.broadcast_to(logits, tokens.shape + (V,))


def patch_images(levels):
    """int levels [B, h, w] → float32 images [B, 4h, 4w, 3] that PatchTokenizer encodes exactly."""
    return np.asarray(PatchTokenizer().decode(jnp.asarray(levels)))


# ---- sources ---------------------------------------------------------------------------------


def _write(path, size=(12, 10), color=(200, 10, 10), fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    _write(str(root / "cat" / "a.png"), color=(255, 0, 0))
    _write(str(root / "cat" / "b.JPG"), color=(0, 255, 0), fmt="JPEG")
    (root / "cat" / "c_bad.png").write_bytes(b"this is not a png")
    _write(str(root / "dog" / "d.webp"), color=(0, 0, 255), fmt="WEBP")
    _write(str(root / "dog" / "nested" / "e.jpeg"), color=(9, 9, 9), fmt="JPEG")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_folder_source_classes_extensions_and_corrupt_file(image_folder, caplog):
    src = im.make_source("folder", path=str(image_folder))
    assert src.class_names == ["cat", "dog"]
    assert len(src) == 5  # a.png, b.JPG, c_bad.png, d.webp, nested/e.jpeg; notes.txt is ignored
    assert list(src.labels) == [0, 0, 0, 1, 1]
    bad = src.files.index(str(image_folder / "cat" / "c_bad.png"))
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        records = [src[i] for i in range(len(src))] + [src[bad]]
    for r in records:
        assert r["image"].dtype == np.uint8 and r["image"].shape == (10, 12, 3)
        assert r["label"].dtype == np.int32
    # the corrupt file yields the next readable record, deterministically
    np.testing.assert_array_equal(records[bad]["image"], records[bad + 1]["image"])
    assert records[bad]["label"] == records[bad + 1]["label"] == 1
    assert src.stats == {"skipped": 1, "skipped_files": [str(image_folder / "cat" / "c_bad.png")]}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "c_bad.png" in warnings[0].getMessage()
    assert records[0]["image"][0, 0].tolist() == [255, 0, 0]

    sized = im.ImageFolderSource(image_folder, image_size=8)
    assert sized[0]["image"].shape == (8, 8, 3)


def test_folder_source_flat_empty_and_missing(tmp_path):
    flat = tmp_path / "flat"
    _write(str(flat / "x.PNG"))
    _write(str(flat / "y.png"))
    src = im.ImageFolderSource(flat)
    assert len(src) == 2 and src.class_names == ["flat"] and set(src.labels.tolist()) == {0}
    empty = tmp_path / "empty_folder"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty_folder"):
        im.ImageFolderSource(empty)
    with pytest.raises(ValueError, match="no_such_dir"):
        im.ImageFolderSource(tmp_path / "no_such_dir")


def test_digits_source_sizes_labels_and_split():
    train = im.make_source("digits", image_size=16, split="train")
    test = im.DigitsSource(image_size=16, split="test")
    assert len(train) + len(test) == 1797 and len(test) == 180
    assert not set(train.indices) & set(test.indices)
    r = train[0]
    assert r["image"].shape == (16, 16, 3) and r["image"].dtype == np.uint8
    assert r["label"].dtype == np.int32 and set(train.labels.tolist()) == set(range(10))
    assert r["image"].max() > 200 and r["image"].min() < 30  # bright ink on a dark ground
    np.testing.assert_array_equal(r["image"][..., 0], r["image"][..., 2])  # grey
    again = im.DigitsSource(image_size=32, split="test")
    assert again[0]["image"].shape == (32, 32, 3)
    np.testing.assert_array_equal(again.indices, test.indices)
    with pytest.raises(ValueError, match="split"):
        im.DigitsSource(split="valid")


def test_array_source_and_registry():
    floats = np.random.default_rng(0).random((3, 4, 4, 3)).astype(np.float32)
    src = im.make_source("arrays", images=floats, labels=[0, 1, 2])
    assert src[2]["label"] == 2 and src[0]["image"].dtype == np.uint8
    np.testing.assert_allclose(src[1]["image"] / 255.0, floats[1], atol=0.5 / 255 + 1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        im.ArraySource(floats * 2)
    with pytest.raises(ValueError, match="unknown image source 'nope'"):
        im.make_source("nope")
    assert {"digits", "folder", "arrays"} <= set(im.registered_sources())


# ---- preprocessing ---------------------------------------------------------------------------


def test_preprocess_shapes_flip_shift():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert im.resize(img, 20).shape == (20, 30, 3)
    assert im.center_crop(im.resize(img, 20), 20).shape == (20, 20, 3)
    np.testing.assert_array_equal(im.center_crop(img, 40), img[:, 10:50])
    flipped = [im.random_flip(img, np.random.default_rng(s)) for s in range(16)]
    assert all(np.array_equal(f, img) or np.array_equal(f, img[:, ::-1]) for f in flipped)
    assert any(np.array_equal(f, img[:, ::-1]) for f in flipped) and any(np.array_equal(f, img) for f in flipped)
    np.testing.assert_array_equal(im.random_shift(img, rng, 0), img)
    padded = np.pad(img, ((3, 3), (3, 3), (0, 0)), mode="reflect")
    for seed in range(4):
        out = im.random_shift(img, np.random.default_rng(seed), 3)
        assert out.shape == img.shape
        assert any(np.array_equal(out, padded[dy : dy + 40, dx : dx + 60]) for dy in range(7) for dx in range(7))
    np.testing.assert_array_equal(preprocess.shift(img, 3, 3, 3), img)
    np.testing.assert_array_equal(preprocess.shift(img, 3, 5, 3)[:, :-2], img[:, 2:])
    f = im.to_float(img)
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1 and f.max() > 0.99


def test_pipeline_batches_and_state_resume():
    src = im.ArraySource(np.random.default_rng(1).integers(0, 256, (13, 10, 12, 3), dtype=np.uint8),
                         labels=np.arange(13))
    kwargs = dict(batch_size=4, image_size=8, train=True, seed=3, shift=1, read_threads=1, prefetch_buffer_size=2)
    it = iter(im.make_image_pipeline(src, **kwargs))
    first = next(it)
    assert first["image"].shape == (4, 8, 8, 3) and first["image"].dtype == np.float32
    assert first["label"].shape == (4,) and first["label"].dtype == np.int32
    assert 0.0 <= first["image"].min() and first["image"].max() <= 1.0
    for _ in range(3):  # past one epoch: repeats forever
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = iter(im.make_image_pipeline(src, **kwargs))
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])

    # map functions and sources travel to worker processes by pickle
    for obj in (src, preprocess.ResizeCrop(8), preprocess.Augment(True, 1), preprocess.ToFloat()):
        pickle.loads(pickle.dumps(obj))

    evaluation = list(im.make_image_pipeline(src, batch_size=4, image_size=8, train=False, read_threads=1))
    assert [len(b["label"]) for b in evaluation] == [4, 4, 4, 1]  # one ordered pass, remainder kept
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in evaluation]), np.arange(13))


# ---- writer ----------------------------------------------------------------------------------


def test_grid_writer(tmp_path):
    images = np.random.default_rng(0).random((5, 8, 8, 3)).astype(np.float32)
    plain = tmp_path / "grid.png"
    im.save_image_grid(plain, images, ncols=3, upscale=2, padding=2)
    with Image.open(plain) as pil:
        assert pil.format == "PNG" and pil.size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2)
    grid = im.make_image_grid(images, ncols=3, upscale=2, padding=2)
    first_cell = np.round(images[0] * 255).astype(np.uint8).repeat(2, 0).repeat(2, 1)
    np.testing.assert_array_equal(grid[2:18, 2:18], first_cell)
    labels = [0, 1, 2, "three", 4]
    labelled_path = im.save_image_grid(tmp_path / "sub" / "labels.png", images, ncols=3, labels=labels)
    labelled = np.asarray(Image.open(labelled_path))
    unlabelled = im.make_image_grid(images, ncols=3)
    assert labelled.shape[1] == unlabelled.shape[1] and labelled.shape[0] > unlabelled.shape[0]
    strip = labelled[2 + 8 : 2 + 8 + (labelled.shape[0] - unlabelled.shape[0]) // 2, 2:10]
    assert strip.min() < 128 and strip.max() == 255  # dark text drawn on the white strip
    with pytest.raises(ValueError, match="2 labels for 5 images"):
        im.make_image_grid(images, labels=["a", "b"])


# ---- editing ---------------------------------------------------------------------------------


def test_box_to_token_mask_growth_clipping_and_bad_boxes():
    def cells(mask):
        rows, cols = np.nonzero(mask)
        return rows.min(), rows.max(), cols.min(), cols.max()

    # 32×32 image, 8×8 grid: 4-pixel cells
    assert cells(im.box_to_token_mask((12, 12, 4, 4), (32, 32), (8, 8), grow=0)) == (3, 3, 3, 3)
    assert cells(im.box_to_token_mask((12, 12, 4, 4), (32, 32), (8, 8))) == (2, 4, 2, 4)
    assert cells(im.box_to_token_mask((14, 13, 4, 2), (32, 32), (8, 8), grow=0)) == (3, 4, 3, 3)
    assert cells(im.box_to_token_mask((0, 0, 4, 4), (32, 32), (8, 8), grow=1)) == (0, 1, 0, 1)
    bottom_right = im.box_to_token_mask((28, 24, 4, 8), (32, 32), (8, 8), grow=2)
    assert cells(bottom_right) == (5, 7, 4, 7) and bottom_right.sum() == 12
    assert im.box_to_token_mask((0, 0, 32, 32), (32, 32), (8, 8)).all()
    for bad in [(0, 0, 0, 4), (-1, 0, 4, 4), (30, 0, 4, 4), (0, 40, 4, 4)]:
        with pytest.raises(ValueError, match=r"box .*32x32"):
            im.box_to_token_mask(bad, (32, 32), (8, 8))


def test_outpaint_canvas():
    tokens = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    canvas, mask = im.outpaint_canvas(tokens, (1, 0, 2, 1), mask_id=99)
    assert canvas.shape == (2, 4, 7) and mask.shape == (2, 4, 7) and mask.dtype == bool
    np.testing.assert_array_equal(canvas[:, 1:, 2:6], tokens)
    assert int(mask.sum()) == 2 * (28 - 12)
    np.testing.assert_array_equal(np.asarray(canvas)[np.asarray(mask)], 99)
    with pytest.raises(ValueError, match="pad"):
        im.outpaint_canvas(tokens, (1, -1, 0, 0), mask_id=99)


def test_composite_keeps_far_pixels_and_blends_near():
    original = np.zeros((1, 64, 64, 3), np.float32)
    generated = np.ones((1, 64, 64, 3), np.float32)
    token_mask = np.zeros((8, 8), bool)
    token_mask[0, 0] = True  # pixels [0, 8) × [0, 8)
    out = np.asarray(im.composite(original, generated, token_mask))  # default radius 64/16 - 1 = 3
    assert out.shape == (1, 64, 64, 3) and out.dtype == np.float32
    far = np.ones((64, 64), bool)
    far[: 8 + 9, : 8 + 9] = False  # support of the blur: ⌈3σ⌉ = 9 pixels
    assert np.all(out[0][far] == 0.0)
    assert out[0, 0, 0, 0] > 0.9 and 0.0 < out[0, 10, 2, 0] < 0.5
    hard = np.asarray(im.composite(original, generated, token_mask, blur_radius=0))
    assert hard[0, :8, :8].min() == 1.0 and hard[0, 8:].max() == 0.0 and hard[0, :, 8:].max() == 0.0


@pytest.fixture(scope="module")
def edit_images():
    levels = np.random.default_rng(0).integers(0, V, (2, 4, 4))
    levels[levels == FILL] = 0
    return levels, patch_images(levels)


def test_inpaint_keeps_unmasked_tokens(edit_images):
    levels, images = edit_images
    token_mask = np.zeros((2, 4, 4), bool)
    token_mask[0, 1:3, 1:3] = True
    token_mask[1, 0, :] = True
    result = im.inpaint(
        PatchTokenizer(), always_fill, images, token_mask, jax.random.key(0), mask_id=MASK_ID, num_steps=4
    )
    tokens = np.asarray(result.tokens)
    np.testing.assert_array_equal(tokens[~token_mask], levels[~token_mask])
    assert np.all(tokens[token_mask] == FILL)
    assert result.image.shape == images.shape and result.generated.shape == images.shape
    pixel_mask = np.asarray(im.token_mask_to_pixels(token_mask, (16, 16)), bool)
    out = np.asarray(result.image)
    np.testing.assert_array_equal(out[~pixel_mask], images[~pixel_mask])  # 16 px: no blur by default
    np.testing.assert_allclose(out[pixel_mask], FILL / (V - 1), rtol=1e-6)


def test_class_edit_and_outpaint(edit_images):
    levels, images = edit_images
    tok = PatchTokenizer()
    edit = im.class_edit(tok, always_fill, images, (6, 6, 2, 2), jax.random.key(1), mask_id=MASK_ID)
    expected_mask = np.zeros((4, 4), bool)
    expected_mask[0:3, 0:3] = True  # box in cell (1, 1), grown by one
    np.testing.assert_array_equal(np.asarray(edit.token_mask[0]), expected_mask)
    tokens = np.asarray(edit.tokens)
    assert np.all(tokens[:, expected_mask] == FILL)
    np.testing.assert_array_equal(tokens[:, ~expected_mask], levels[:, ~expected_mask])

    out = im.outpaint(tok, always_fill, images, (0, 1, 2, 0), jax.random.key(2), mask_id=MASK_ID, num_steps=3)
    assert out.image.shape == (2, 20, 24, 3) and out.tokens.shape == (2, 5, 6)
    np.testing.assert_array_equal(np.asarray(out.tokens)[:, :4, 2:], levels)
    assert np.all(np.asarray(out.tokens)[np.asarray(out.token_mask)] == FILL)
    # away from the seam the input is kept exactly; the new region is fully generated
    np.testing.assert_array_equal(np.asarray(out.image)[:, :12, 12:], images[:, :12, 4:])
    np.testing.assert_allclose(np.asarray(out.image)[:, 16:], FILL / (V - 1), rtol=1e-6)
