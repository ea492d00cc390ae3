"""Captioned shapes: a built-in, offline data set for text-conditioned generation.

32 × 32 RGB images on black with one or two flat shapes — circle, square or triangle; one of seven
saturated colours; small or large — in a 3 × 3 layout, each with an English caption from a small
grammar with paraphrases:

  one shape    "a red circle", "one large red circle", "red circle", "a picture of a small red circle",
               "an image of a red circle"
  two shapes   "a large blue square to the left of a small yellow triangle",
               "a green triangle is above a white circle",
               "a white circle with a green triangle above it",
               "a picture of a cyan square beneath a red circle"

Size words are optional (each is said with probability 1/2; a caption without one does not
constrain the size). Every caption parses back into its meaning (`shapes_detector.parse_caption`),
and `shapes_detector.matches` checks a generated image against it, which makes the data set a
measurable test of compositional text conditioning.

The split is compositional: `held_out` (colour, shape) pairs (by default a red triangle, a blue
circle and a green square) never occur in "train" or "val", while every "test" example holds at
least one of them (the other shape of a two-shape test example may be seen or held out). "val" is
an in-distribution split drawn from its own random stream (only 324 distinct one-shape images avoid
the default held-out pairs, so its one-shape images recur in "train"; its captions and two-shape
pairings mostly do not). `prompts` draws evaluation captions, seen or held out, with their meanings.

The two shapes of an image always differ in colour, so that neither the caption nor the detector
has to tell two identical shapes apart, and adjacent shapes never merge into one blob when a
generated image is blurred.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from mgt.modalities.image.sources import register_source

# Pure saturated RGB, so that every colour is exact in a PNG and far from its neighbours.
COLOURS = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "magenta": (255, 0, 255), "cyan": (0, 255, 255), "white": (255, 255, 255),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
RELATIONS = ("left", "right", "above", "below")  # "A <relation> B": A is left of / right of / above / below B
DEFAULT_HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("green", "square"))
SPLITS = {"train": 0, "val": 1, "test": 2}
_PROMPT_STREAMS = {False: 3, True: 4}  # random streams of `prompts` (seen / held-out), apart from the splits

# Geometry at 32 px, scaled by image_size / 32. Coordinates are continuous: pixel (row r, col c)
# covers [c, c + 1) × [r, r + 1). Every cell centre is a pixel centre and every side odd, so each
# shape is drawn symmetric and the same in every cell: large 9 px, small 5 px across. The middle
# cell sits half a pixel right of (below) the image centre, which leaves gaps of 2 and 1 px between
# large shapes in neighbouring cells.
CELL_CENTRES_32 = (5.5, 16.5, 26.5)
EXTENT_32 = {"large": 9.0, "small": 5.0}

# ---- caption grammar ---------------------------------------------------------------------------
# One shape: an optional prefix, an optional determiner, then "[size] colour shape".
ONE_SHAPE_TEMPLATES = ("a {0}", "one {0}", "{0}", "a picture of a {0}", "an image of a {0}")
# Two shapes: {a} and {b} are "a [size] colour shape"; the meaning is always "{a} <relation> {b}".
TWO_SHAPE_TEMPLATES = ("{a} {rel} {b}", "{a} is {rel} {b}", "{b} with {a} {its}", "a picture of {a} {rel} {b}")
RELATION_PHRASES = {
    "left": ("to the left of", "left of", "on the left of"),
    "right": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over", "on top of"),
    "below": ("below", "under", "beneath"),
}
ITS_PHRASES = {"left": "to its left", "right": "to its right", "above": "above it", "below": "below it"}
_MIRROR = {"right": "left", "below": "above"}


@dataclasses.dataclass(frozen=True)
class Shape:
    """One shape of a meaning: `size` None means the caption does not say (any size matches)."""

    colour: str
    shape: str
    size: str | None = None

    def __post_init__(self):
        for field, value, allowed in (("colour", self.colour, tuple(COLOURS)), ("shape", self.shape, SHAPES),
                                      ("size", self.size, SIZES + (None,))):
            if value not in allowed:
                raise ValueError(f"Shape: {field} must be one of {allowed}, got {value!r}")

    @property
    def pair(self) -> tuple[str, str]:
        return self.colour, self.shape

    def phrase(self) -> str:
        """'[size] colour shape', e.g. 'large red circle'."""
        return " ".join(w for w in (self.size, self.colour, self.shape) if w)


@dataclasses.dataclass(frozen=True)
class Meaning:
    """What a caption says: one shape (relation None), or two with `shapes[0] <relation> shapes[1]`."""

    shapes: tuple[Shape, ...]
    relation: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "shapes", tuple(self.shapes))
        if len(self.shapes) == 1 and self.relation is not None:
            raise ValueError(f"Meaning: one shape takes no relation, got relation {self.relation!r}")
        if len(self.shapes) == 2 and self.relation not in RELATIONS:
            raise ValueError(f"Meaning: two shapes need a relation in {RELATIONS}, got {self.relation!r}")
        if len(self.shapes) not in (1, 2):
            raise ValueError(f"Meaning: expected 1 or 2 shapes, got {len(self.shapes)}")

    def canonical(self) -> Meaning:
        """The same meaning with relation "left" or "above" ("A right of B" is "B left of A")."""
        if self.relation in _MIRROR:
            return Meaning(self.shapes[::-1], _MIRROR[self.relation])
        return self

    def describes(self, full: Meaning) -> bool:
        """True when `full` (sizes all given, e.g. an image's description) fits this meaning: same
        shapes, colours and relation, and the same size wherever this meaning names one."""
        a, b = self.canonical(), full.canonical()
        return (a.relation == b.relation and len(a.shapes) == len(b.shapes)
                and all(s.pair == t.pair and s.size in (None, t.size) for s, t in zip(a.shapes, b.shapes)))


def caption(meaning: Meaning, rng: np.random.Generator | None = None, *, template: int | None = None,
            phrase: int | None = None) -> str:
    """A caption for `meaning` from the grammar; the template and relation phrase are drawn from `rng`
    unless given (indices into ONE_SHAPE_TEMPLATES / TWO_SHAPE_TEMPLATES and RELATION_PHRASES[...]).
    Sizes are said exactly where `meaning` has them."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if len(meaning.shapes) == 1:
        t = int(rng.integers(len(ONE_SHAPE_TEMPLATES))) if template is None else template
        return ONE_SHAPE_TEMPLATES[t].format(meaning.shapes[0].phrase())
    t = int(rng.integers(len(TWO_SHAPE_TEMPLATES))) if template is None else template
    phrases = RELATION_PHRASES[meaning.relation]
    p = int(rng.integers(len(phrases))) if phrase is None else phrase
    a, b = (f"a {s.phrase()}" for s in meaning.shapes)
    return TWO_SHAPE_TEMPLATES[t].format(a=a, b=b, rel=phrases[p], its=ITS_PHRASES[meaning.relation])


# ---- drawing -----------------------------------------------------------------------------------


def cell_centre(cell: tuple[int, int], image_size: int = 32) -> tuple[float, float]:
    """Continuous (x, y) centre of layout cell (row, col) in an image of side `image_size`."""
    scale = image_size / 32.0
    row, col = cell
    return CELL_CENTRES_32[col] * scale, CELL_CENTRES_32[row] * scale


_SUPERSAMPLE = 8  # sub-pixels per pixel side when measuring how much of a pixel a shape covers


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Whether points at offset (dx, dy) from a shape's centre lie inside it (half: half its side)."""
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    t = (dy + half) / (2 * half)  # upward triangle filling its box: 0 at the apex, 1 along the base
    return (t >= 0) & (t <= 1) & (np.abs(dx) <= half * t)


def shape_mask(shape: str, extent: float, centre: tuple[float, float], height: int, width: int) -> np.ndarray:
    """bool [height, width]: the pixels that `shape` (side / diameter `extent` px, continuous centre
    (x, y)) covers at least half of. Whole pixels, no antialiasing, so colours stay exact; coverage
    rather than the pixel centre keeps a small triangle's apex and base in proportion."""
    k = _SUPERSAMPLE
    y, x = np.meshgrid((np.arange(height * k) + 0.5) / k, (np.arange(width * k) + 0.5) / k, indexing="ij")
    covered = _inside(shape, x - centre[0], y - centre[1], extent / 2.0)
    return covered.reshape(height, k, width, k).mean(axis=(1, 3)) >= 0.5


@functools.lru_cache(maxsize=8)
def _masks(image_size: int) -> dict:
    """bool [S, S] masks of every (shape, size, cell), drawn once per image size."""
    masks = {}
    for shape in SHAPES:
        for size in SIZES:
            for cell in np.ndindex(3, 3):
                mask = shape_mask(shape, EXTENT_32[size] * image_size / 32.0, cell_centre(cell, image_size),
                                  image_size, image_size)
                mask.setflags(write=False)
                masks[shape, size, cell] = mask
    return masks


def draw(shapes: list[dict], image_size: int = 32) -> np.ndarray:
    """uint8 [S, S, 3] image of `shapes` (dicts with colour, shape, size and cell) on black."""
    image = np.zeros((image_size, image_size, 3), np.uint8)
    masks = _masks(image_size)
    for s in shapes:
        image[masks[s["shape"], s["size"], tuple(s["cell"])]] = COLOURS[s["colour"]]
    return image


# ---- sampling ----------------------------------------------------------------------------------


def _check_held_out(held_out) -> tuple[tuple[str, str], ...]:
    held_out = tuple(tuple(p) for p in held_out)
    for pair in held_out:
        if len(pair) != 2 or pair[0] not in COLOURS or pair[1] not in SHAPES:
            raise ValueError(f"held_out: expected (colour, shape) pairs with colour in {tuple(COLOURS)} and "
                             f"shape in {SHAPES}, got {pair!r}")
    return held_out


def _sample(rng: np.random.Generator, two: bool, held_out: tuple, want_held_out: bool,
            canonical_share: float = 0.0) -> dict:
    """One example's description: shapes (colour, shape, size, cell), relation, caption text.

    `want_held_out`: at least one shape is a held-out pair; otherwise none is. `canonical_share`: the
    chance that a two-shape caption is said as "A left of B" / "A above B" (first template and phrase)."""
    all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
    seen = [p for p in all_pairs if p not in held_out]
    pick = lambda pairs: pairs[int(rng.integers(len(pairs)))]  # noqa: E731
    if not two:
        pairs = [pick(list(held_out) if want_held_out else seen)]
        cells = [(int(rng.integers(3)), int(rng.integers(3)))]
        relation = None
    else:
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        if want_held_out:
            first = pick(list(held_out))
            other = pick([p for p in all_pairs if p[0] != first[0]])
            pairs = [first, other] if rng.random() < 0.5 else [other, first]
        else:
            first = pick(seen)
            pairs = [first, pick([p for p in seen if p[0] != first[0]])]
        line = int(rng.integers(3))  # the shared row (left/right) or column (above/below)
        lo, hi = sorted(rng.choice(3, size=2, replace=False).tolist())
        # pairs[0] is A in "A <relation> B"
        a, b = (lo, hi) if relation in ("left", "above") else (hi, lo)
        cells = [(line, a), (line, b)] if relation in ("left", "right") else [(a, line), (b, line)]
    shapes = [{"colour": c, "shape": s, "size": SIZES[int(rng.integers(2))], "cell": cell}
              for (c, s), cell in zip(pairs, cells)]
    said = Meaning(tuple(Shape(d["colour"], d["shape"], d["size"] if rng.random() < 0.5 else None)
                         for d in shapes), relation)
    canonical = two and canonical_share > 0 and rng.random() < canonical_share
    said = said.canonical() if canonical else said
    text = caption(said, rng, template=0, phrase=0) if canonical else caption(said, rng)
    return {"shapes": shapes, "relation": relation, "text": text, "said": said}


def _meaning(description: dict) -> Meaning:
    return Meaning(tuple(Shape(s["colour"], s["shape"], s["size"]) for s in description["shapes"]),
                   description["relation"])


@register_source("captioned_shapes")
class CaptionedShapesSource:
    """Seeded, offline captioned shapes (see the module docstring); random access, nothing stored.

    Example i is drawn from `np.random.default_rng([seed, split_id, i])` (train 0, val 1, test 2), so
    any index is cheap (~0.1 ms) and the same in every process.

    Args:
      num_examples: length of the split.
      split: "train" / "val" (no held-out pair anywhere) or "test" (every example has at least one
        held-out pair).
      seed: seeds every example.
      held_out: (colour, shape) pairs kept out of "train" and "val".
      two_shape_fraction: chance that an example has two shapes (label 1) rather than one (label 0).
      image_size: side in pixels (the layout scales with it; 32 is the reference).
      canonical_share: the chance that a two-shape caption is said canonically, "A left of B" or
        "A above B" (the same meaning; the first colour named is the left / upper shape), drawn after
        the image so the images do not change. Without such captions the first colour named is left
        in exactly half the captions, and a small model never learns which colour the relation puts
        where (README); 0.5 teaches it the whole grammar.

    Records: `{"image": uint8 [S, S, 3], "label": int32 (0 one shape, 1 two shapes), "text": str}`.
    """

    class_names = ["one shape", "two shapes"]

    def __init__(self, num_examples: int = 20000, split: str = "train", seed: int = 0,
                 held_out: tuple = DEFAULT_HELD_OUT, two_shape_fraction: float = 0.5, image_size: int = 32,
                 canonical_share: float = 0.0):
        if split not in SPLITS:
            raise ValueError(f"CaptionedShapesSource: split must be one of {tuple(SPLITS)}, got {split!r}")
        if int(num_examples) < 1:
            raise ValueError(f"CaptionedShapesSource: num_examples must be >= 1, got {num_examples}")
        if not 0.0 <= two_shape_fraction <= 1.0:
            raise ValueError(f"CaptionedShapesSource: two_shape_fraction must be in [0, 1], got {two_shape_fraction}")
        if not 0.0 <= canonical_share <= 1.0:
            raise ValueError(f"CaptionedShapesSource: canonical_share must be in [0, 1], got {canonical_share}")
        if int(image_size) < 16:
            raise ValueError(f"CaptionedShapesSource: image_size must be >= 16, got {image_size}")
        self.held_out = _check_held_out(held_out)
        if split == "test" and not self.held_out:
            raise ValueError("CaptionedShapesSource: split 'test' needs at least one held_out pair, got none")
        seen_colours = {c for c in COLOURS for s in SHAPES if (c, s) not in self.held_out}
        if len(seen_colours) < (2 if two_shape_fraction > 0 else 1):
            raise ValueError(f"CaptionedShapesSource: held_out {self.held_out} leaves too few colours for "
                             "train / val images (two shapes need two colours)")
        self.num_examples, self.split, self.seed = int(num_examples), split, int(seed)
        self.two_shape_fraction, self.image_size = float(two_shape_fraction), int(image_size)
        self.canonical_share = float(canonical_share)

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return (f"CaptionedShapesSource(split={self.split!r}, {len(self)} examples, seed={self.seed}, "
                f"held_out={self.held_out}, two_shape_fraction={self.two_shape_fraction}, "
                f"image_size={self.image_size})")

    def describe(self, index: int) -> dict:
        """Example `index`'s content: `{"shapes": [{"colour", "shape", "size", "cell": (row, col)}, ...],
        "relation": None or "shapes[0] <relation> shapes[1]", "text": its caption, "said": the
        caption's Meaning (sizes only where the caption names them)}`."""
        n = self.num_examples
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} examples")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index % n])
        two = rng.random() < self.two_shape_fraction
        return _sample(rng, two, self.held_out, want_held_out=self.split == "test",
                       canonical_share=self.canonical_share)

    def meaning(self, index: int) -> Meaning:
        """Example `index`'s full meaning (every size given), whatever its caption leaves out."""
        return _meaning(self.describe(index))

    def __getitem__(self, index: int) -> dict:
        d = self.describe(index)
        return {"image": draw(d["shapes"], self.image_size), "label": np.int32(len(d["shapes"]) - 1),
                "text": d["text"]}


def prompts(kind: str, held_out: bool, num: int, seed: int = 0,
            held_out_pairs: tuple = DEFAULT_HELD_OUT) -> list[tuple[str, Meaning]]:
    """`num` evaluation captions with the meanings they state (sizes only where the caption says one).

    Args:
      kind: "one" (one shape) or "two" (two shapes and a relation).
      held_out: True — at least one shape is a pair of `held_out_pairs` (compositional
        generalisation); False — none is (seen combinations).
      num: how many; seed: seeds them (streams apart from the data set's splits).
    """
    if kind not in ("one", "two"):
        raise ValueError(f"prompts: kind must be 'one' or 'two', got {kind!r}")
    held_out_pairs = _check_held_out(held_out_pairs)
    if held_out and not held_out_pairs:
        raise ValueError("prompts: held_out=True needs at least one held_out_pairs entry")
    out = []
    for i in range(int(num)):
        rng = np.random.default_rng([int(seed), _PROMPT_STREAMS[bool(held_out)], i])
        d = _sample(rng, kind == "two", held_out_pairs, want_held_out=bool(held_out))
        out.append((d["text"], d["said"]))
    return out
