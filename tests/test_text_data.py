"""Text-conditioned data: the captioned-shapes source, its caption parser and detector, and captions
for image folders."""

import json
import logging
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mgt.modalities.image import shapes, sources
from mgt.modalities.image import shapes_detector as sd
from mgt.modalities.image.shapes import Meaning, Shape

N_EACH = 300  # real examples of each kind (one shape, two shapes) for the detector's accuracy


# ---- the captioned-shapes source -------------------------------------------------------------


def test_source_is_registered_deterministic_per_index_and_well_formed():
    src = sources.make_source("captioned_shapes", num_examples=40, seed=3)
    again = shapes.CaptionedShapesSource(num_examples=40, seed=3)
    for i in (17, 0, 39, 5, -1):  # any order: each index is generated on its own
        a, b = src[i], again[i]
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["text"] == b["text"] and a["label"] == b["label"]
        assert a["image"].dtype == np.uint8 and a["image"].shape == (32, 32, 3)
        assert a["label"].dtype == np.int32 and a["label"] == len(src.describe(i)["shapes"]) - 1
    other = shapes.CaptionedShapesSource(num_examples=40, seed=4)
    assert [src[i]["text"] for i in range(40)] != [other[i]["text"] for i in range(40)]
    assert len(src) == 40 and "captioned_shapes" in sources.registered_sources()
    assert "CaptionedShapesSource(split='train', 40 examples" in repr(src)
    with pytest.raises(IndexError):
        src[40]
    # exact palette colours on black: every pixel is background or one of the described shapes' colours
    for i in range(20):
        described = {shapes.COLOURS[s["colour"]] for s in src.describe(i)["shapes"]}
        assert {tuple(p) for p in src[i]["image"].reshape(-1, 3)} == described | {(0, 0, 0)}
    labels = [int(shapes.CaptionedShapesSource(400, two_shape_fraction=f)[i]["label"])
              for f in (0.0, 1.0) for i in range(0, 400, 40)]
    assert labels == [0] * 10 + [1] * 10


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'dev'"):
        shapes.CaptionedShapesSource(split="dev")
    with pytest.raises(ValueError, match="'purple'"):
        shapes.CaptionedShapesSource(held_out=(("purple", "circle"),))
    with pytest.raises(ValueError, match="held_out"):
        shapes.CaptionedShapesSource(split="test", held_out=())


def _pairs(description):
    return {(s["colour"], s["shape"]) for s in description["shapes"]}


def test_compositional_split_and_layout():
    held = set(shapes.DEFAULT_HELD_OUT)
    train, val, test = (shapes.CaptionedShapesSource(600, split=s) for s in ("train", "val", "test"))
    assert all(not _pairs(d) & held for d in map(train.describe, range(600)))
    assert all(not _pairs(d) & held for d in map(val.describe, range(600)))
    test_pairs = [_pairs(test.describe(i)) for i in range(600)]
    assert all(p & held for p in test_pairs)  # every test example holds a held-out pair
    assert set().union(*test_pairs) >= held
    assert [train[i]["text"] for i in range(50)] != [val[i]["text"] for i in range(50)]
    for d in map(test.describe, range(600)):
        if d["relation"] is None:
            continue
        (ra, ca), (rb, cb) = (s["cell"] for s in d["shapes"])
        assert d["shapes"][0]["colour"] != d["shapes"][1]["colour"]
        assert {"left": ra == rb and ca < cb, "right": ra == rb and ca > cb,
                "above": ca == cb and ra < rb, "below": ca == cb and ra > rb}[d["relation"]]


def test_canonical_share_rephrases_two_shape_captions_only():
    """canonical_share: the same images; that share of two-shape captions says "A left of / above B",
    and every caption still states its image's meaning."""
    plain = shapes.CaptionedShapesSource(200, "train")
    canon = shapes.CaptionedShapesSource(200, "train", canonical_share=1.0)
    for i in range(200):
        d, c = plain.describe(i), canon.describe(i)
        assert d["shapes"] == c["shapes"] and (plain[i]["image"] == canon[i]["image"]).all()
        if d["relation"] is None:
            assert c["text"] == d["text"]
        else:
            assert c["said"].relation in ("left", "above") and " with " not in c["text"]
            assert c["said"].describes(canon.meaning(i)) and sd.parse_caption(c["text"]) == c["said"]
    with pytest.raises(ValueError, match="canonical_share"):
        shapes.CaptionedShapesSource(10, canonical_share=1.5)


def test_prompts_seen_and_held_out():
    held = set(shapes.DEFAULT_HELD_OUT)
    for kind, n_shapes in (("one", 1), ("two", 2)):
        seen = shapes.prompts(kind, held_out=False, num=100, seed=1)
        unseen = shapes.prompts(kind, held_out=True, num=100, seed=1)
        assert seen == shapes.prompts(kind, held_out=False, num=100, seed=1)
        assert all(not {s.pair for s in m.shapes} & held for _, m in seen)
        assert all({s.pair for s in m.shapes} & held for _, m in unseen)
        assert all(len(m.shapes) == n_shapes and sd.parse_caption(t) == m for t, m in seen + unseen)
    with pytest.raises(ValueError, match="'three'"):
        shapes.prompts("three", held_out=False, num=1)


# ---- the caption parser ----------------------------------------------------------------------


def test_every_template_and_phrase_parses_back():
    sized = Shape("yellow", "triangle", "small")
    for size in (None, "large"):
        one = Meaning((Shape("red", "circle", size),))
        for t in range(len(shapes.ONE_SHAPE_TEMPLATES)):
            assert sd.parse_caption(shapes.caption(one, template=t)) == one
        for relation in shapes.RELATIONS:
            two = Meaning((Shape("blue", "square", size), sized), relation)
            for t in range(len(shapes.TWO_SHAPE_TEMPLATES)):
                for p in range(len(shapes.RELATION_PHRASES[relation])):
                    text = shapes.caption(two, template=t, phrase=p)
                    assert sd.parse_caption(text) == two, text
    assert sd.parse_caption("  A Large  Blue square to the LEFT of a small yellow triangle. ") == Meaning(
        (Shape("blue", "square", "large"), sized), "left")
    # "B with A to its left": A is left of B, the same meaning as "B to the right of A"
    its = sd.parse_caption("a white circle with a green triangle to its left")
    assert its.canonical() == sd.parse_caption("a white circle to the right of a green triangle").canonical()
    for bad in ("a purple circle", "a red circle above", "two red circles", ""):
        with pytest.raises(ValueError, match=repr(bad)):
            sd.parse_caption(bad)


def test_data_captions_state_their_images_meaning():
    src = shapes.CaptionedShapesSource(400, split="test")
    for i in range(400):
        d = src.describe(i)
        said = sd.parse_caption(d["text"])
        assert said == d["said"] and said.describes(src.meaning(i))


# ---- the detector ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    """N_EACH one-shape and N_EACH two-shape examples (half seen pairs, half held out): float images
    [2 N, 32, 32, 3], their full meanings, their captions and the shapes detected in them."""
    images, meanings, texts = [], [], []
    for fraction in (0.0, 1.0):
        for split in ("train", "test"):
            src = shapes.CaptionedShapesSource(N_EACH // 2, split=split, seed=7, two_shape_fraction=fraction)
            for i in range(len(src)):
                images.append(src[i]["image"].astype(np.float32) / 255.0)
                meanings.append(src.meaning(i))
                texts.append(src[i]["text"])
    return np.stack(images), meanings, texts, [sd.detect(image) for image in images]


def _binomial_blur(images):
    kernel = np.array([0.25, 0.5, 0.25])
    return ndimage.convolve1d(ndimage.convolve1d(images, kernel, axis=1, mode="constant"), kernel, axis=2,
                              mode="constant")


def test_detector_reads_real_images_and_captions(real):
    images, meanings, texts, found = real
    by_caption = sd.score(images, texts)
    assert by_caption["num_one"] == by_caption["num_two"] == N_EACH
    assert by_caption["accuracy_one"] >= 0.99 and by_caption["accuracy_two"] >= 0.99
    # the full meanings name every size
    assert np.mean([sd.matches_detections(f, m) for f, m in zip(found, meanings)]) >= 0.99
    assert math.isnan(sd.score(images[:3], texts[:3])["accuracy_two"])  # no two-shape caption among them


def _wrong(meaning: Meaning, rng) -> dict:
    """The meaning with one thing changed: a colour, a shape, a size, the relation."""
    i = int(rng.integers(len(meaning.shapes)))
    s = meaning.shapes[i]
    used = {t.colour for t in meaning.shapes}
    swaps = {
        "colour": Shape(rng.choice([c for c in shapes.COLOURS if c not in used]), s.shape, s.size),
        "shape": Shape(s.colour, rng.choice([k for k in shapes.SHAPES if k != s.shape]), s.size),
        "size": Shape(s.colour, s.shape, "small" if s.size == "large" else "large"),
    }
    out = {k: Meaning(tuple(v if j == i else t for j, t in enumerate(meaning.shapes)), meaning.relation)
           for k, v in swaps.items()}
    if meaning.relation:
        out["relation"] = Meaning(meaning.shapes, {"left": "right", "right": "left", "above": "below",
                                                   "below": "above"}[meaning.relation])
    return out


def test_detector_rejects_wrong_captions(real):
    _, meanings, _, found = real
    rng = np.random.default_rng(0)
    rejected, total = {}, {}
    for shapes_found, meaning in zip(found, meanings):
        for kind, wrong in _wrong(meaning, rng).items():
            total[kind] = total.get(kind, 0) + 1
            rejected[kind] = rejected.get(kind, 0) + (not sd.matches_detections(shapes_found, wrong))
    assert total["relation"] == N_EACH
    for kind in total:
        assert rejected[kind] / total[kind] >= 0.99, kind


def test_detector_tolerates_noise_and_blur(real):
    images, meanings, _, _ = real
    rng = np.random.default_rng(1)
    noisy = np.clip(images + rng.normal(0.0, 0.05, images.shape), 0.0, 1.0)
    # a 1-px blur (3 × 3 binomial kernel) and then noise; the blur alone is milder than both
    both = np.clip(_binomial_blur(images) + rng.normal(0.0, 0.05, images.shape), 0.0, 1.0)
    for damaged in (noisy, both):
        result = sd.score(damaged, meanings)
        assert result["accuracy_one"] >= 0.95 and result["accuracy_two"] >= 0.95, result
    # as uint8, the form a sampler writes
    assert sd.score(np.round(both * 255).astype(np.uint8)[::10], meanings[::10])["accuracy"] >= 0.95


def test_detector_counts_exactly_and_ignores_specks():
    image = np.zeros((32, 32, 3), np.uint8)
    assert sd.detect(image) == [] and not sd.matches(image, "a red circle")
    image[shapes.shape_mask("square", 9, (16.5, 16.5), 32, 32)] = (0, 0, 255)
    assert sd.matches(image, "a large blue square") and not sd.matches(image, "a small blue square")
    image[0:1, 0:3] = (255, 0, 0)  # a 3-pixel speck is noise (under MIN_PIXELS)
    assert sd.matches(image, "a blue square")
    image[shapes.shape_mask("circle", 5, (5.5, 5.5), 32, 32)] = (255, 255, 0)  # a second shape
    assert not sd.matches(image, "a blue square")
    assert sd.matches(image, "a small yellow circle to the left of a blue square")
    assert sd.matches(image, "a yellow circle above a blue square")  # both hold by the centres
    bar = np.zeros((32, 32, 3), np.uint8)
    bar[15:18, 8:25] = (0, 255, 0)  # like no drawing: detected, but no shape
    (found,) = sd.detect(bar)
    assert found.colour == "green" and found.shape is None and not sd.matches(bar, "a green square")


# ---- captions for image folders --------------------------------------------------------------


def _write(path, color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), color).save(path)


def test_folder_captions_from_sidecars(tmp_path, caplog):
    for name in ("a", "b", "c"):
        _write(tmp_path / "cats" / f"{name}.png")
    (tmp_path / "cats" / "a.txt").write_text("a red cat\n")
    (tmp_path / "cats" / "b.txt").write_bytes(b"\xff\xfe not utf-8 \xff")
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        src = sources.ImageFolderSource(tmp_path)
    assert src.has_captions and len(src) == 1 and src[0]["text"] == "a red cat"
    assert src.caption_stats == {"uncaptioned": 2, "uncaptioned_files": [str(tmp_path / "cats" / "b.png"),
                                                                        str(tmp_path / "cats" / "c.png")],
                                 "unreadable_captions": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3 images" in warnings[0]


def test_folder_captions_from_jsonl_and_without_captions(tmp_path, caplog):
    root = tmp_path / "imgs"
    _write(root / "x" / "one.png", (255, 0, 0))
    _write(root / "x" / "two.png", (0, 255, 0))
    _write(root / "y" / "deep" / "three.png", (0, 0, 255))
    lines = [json.dumps({"file": "x/one.png", "text": "red"}), "{not json", "",
             json.dumps({"file": "y/deep/three.png", "text": "blue"}), json.dumps({"file": "x/two.png"})]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    (root / "x" / "one.txt").write_text("the sidecar loses to the jsonl entry")
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        src = sources.make_source("folder", path=str(root))
    assert [src[i]["text"] for i in range(len(src))] == ["red", "blue"]
    assert list(src.labels) == [0, 1] and src[1]["image"][0, 0].tolist() == [0, 0, 255]
    assert src.caption_stats["uncaptioned"] == 1 and src.caption_stats["unreadable_captions"] == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

    plain = tmp_path / "plain"
    _write(plain / "p.png")
    (plain / "notes.txt").write_text("not a sidecar: no image is called notes")
    src = sources.ImageFolderSource(plain)
    assert not src.has_captions and set(src[0]) == {"image", "label"} and src.caption_stats["uncaptioned"] == 0

    (plain / "captions.jsonl").write_text(json.dumps({"file": "elsewhere.png", "text": "t"}) + "\n")
    with pytest.raises(ValueError, match="none for any"):
        sources.ImageFolderSource(plain)
