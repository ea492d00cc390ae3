"""Mask schedules, training-mask structures and the masked loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgt import masking
from mgt.schedules import mask_ratio
from mgt.tokens import TokenSpec

NAMES = ["cosine", "linear", "square", "cubic", "sqrt", "arccos", "pow2.5", "log", "exp"]


@pytest.mark.parametrize("name", NAMES)
def test_schedule_endpoints_and_monotonicity(name):
    r = np.linspace(0.0, 1.0, 101)
    g = np.asarray(mask_ratio(name, r, 256))
    # the official exp schedule starts at 1 − 1/N, every other at 1
    assert g[0] == pytest.approx(1.0 - 1 / 256 if name == "exp" else 1.0)
    assert g[-1] == pytest.approx(1e-6, abs=1e-6)
    assert np.all(np.diff(g) <= 1e-7), "γ must not increase"
    assert g.min() >= 1e-6 and g.max() <= 1.0


def test_schedule_values_match_official_definitions():
    assert float(mask_ratio("cosine", 0.5)) == pytest.approx(np.cos(np.pi / 4))
    assert float(mask_ratio("pow2.5", 0.5)) == pytest.approx(1 - 0.5**2.5)
    assert float(mask_ratio("log", 0.5, 256)) == pytest.approx(1 / 8)
    assert float(mask_ratio("exp", 0.5, 256)) == pytest.approx(1 - 2 ** (-4))
    with pytest.raises(ValueError, match="schedule='wobbly'"):
        mask_ratio("wobbly", 0.5)


def test_mask_counts_are_in_range_and_follow_the_schedule():
    counts = np.asarray(masking.sample_mask_counts(jax.random.key(0), 4096, 64))
    assert counts.min() >= 1 and counts.max() <= 64
    # cosine: E[γ(r)] = 2/π
    assert counts.mean() / 64 == pytest.approx(2 / np.pi, abs=0.03)
    floor = np.asarray(masking.sample_mask_counts(jax.random.key(0), 512, 64, min_ratio=0.5))
    assert floor.min() >= 32


def test_random_mask_has_exact_counts():
    counts = jnp.array([1, 7, 20])
    m = np.asarray(masking.random_mask(jax.random.key(1), counts, (4, 5)))
    assert m.shape == (3, 4, 5)
    assert m.reshape(3, -1).sum(-1).tolist() == [1, 7, 20]


def test_box_mask_is_one_box_of_about_the_right_size():
    counts = jnp.array([16, 4, 64])
    m = np.asarray(masking.box_mask(jax.random.key(2), counts, (8, 8)))
    for b, c in enumerate([16, 4, 64]):
        rows, cols = np.nonzero(m[b])
        # a filled rectangle: its bounding box holds only masked cells
        assert m[b, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert 0.4 * c <= m[b].sum() <= 2.0 * c
    m3 = np.asarray(masking.box_mask(jax.random.key(3), jnp.array([8]), (4, 4, 4)))
    t, h, w = np.nonzero(m3[0])
    assert m3[0, t.min():t.max() + 1, h.min():h.max() + 1, w.min():w.max() + 1].all()


def test_prefix_and_suffix_along_any_axis():
    s = np.asarray(masking.span_mask(jnp.array([1, 3]), (4, 5, 6), axis=0, where="suffix"))
    assert s[0, 3:].all() and not s[0, :3].any()
    assert s[1, 1:].all() and not s[1, :1].any()
    p = np.asarray(masking.span_mask(jnp.array([2]), (4, 6), axis=1, where="prefix"))
    assert p[0, :, :2].all() and not p[0, :, 2:].any()
    with pytest.raises(ValueError, match="axis=3"):
        masking.span_mask(jnp.array([1]), (4, 4), axis=3)


def test_levelwise_mask_follows_soundstorm():
    mask, loss = masking.levelwise_mask(jax.random.key(4), jnp.array([3, 5, 2, 4]), (6,), 4)
    mask, loss = np.asarray(mask), np.asarray(loss)
    for b in range(4):
        masked_levels = [lvl for lvl in range(4) if loss[b, :, lvl].any()]
        assert len(masked_levels) == 1
        q = masked_levels[0]
        assert not mask[b, :, :q].any()  # lower levels visible
        assert mask[b, :, q + 1:].all()  # higher levels fully masked
        assert loss[b, :, q].sum() == [3, 5, 2, 4][b]


def test_levelwise_prompt_and_spans():
    """SoundStorm's prompt prefix stays visible at every level with no loss; MAGNeT's spans mask runs of frames."""
    counts = jnp.array([6, 6, 6, 6, 6, 6, 6, 6])
    mask, loss = masking.levelwise_mask(jax.random.key(7), counts, (24,), 3, prompt_fraction=0.5, span=3)
    mask, loss = np.asarray(mask), np.asarray(loss)
    prompts = []
    for b in range(8):
        visible_frames = ~mask[b].any(-1)
        p = int(np.argmin(visible_frames)) if not visible_frames.all() else 24
        prompts.append(p)
        assert p <= 12 and not loss[b, :p].any() and not mask[b, :p].any()
        q = int(np.flatnonzero(loss[b].any(0))[0])
        assert mask[b, p:, q + 1:].all()  # higher levels masked outside the prompt
        frames = np.flatnonzero(loss[b, :, q])
        assert 1 <= len(frames) <= 6
        runs = np.split(frames, np.flatnonzero(np.diff(frames) != 1) + 1)
        # spans of 3 frames: cut only by the lattice ends, the prompt or where the count ends
        assert sum(len(r) >= 2 for r in runs) >= len(runs) - 2
    assert len(set(prompts)) > 1  # the prompt length is drawn per example


@pytest.mark.parametrize("structure", ["random", "box", "prefix", "suffix", "levelwise", "random_tokens"])
def test_make_training_mask_shapes(structure):
    spec = TokenSpec((4, 6), 16, num_levels=2)
    mask, loss = masking.make_training_mask(jax.random.key(5), spec, 3, structure=structure, axis=1)
    assert mask.shape == (3, 4, 6, 2) and loss.shape == mask.shape
    assert np.asarray(loss).sum() >= 3  # at least one token per example carries the loss
    assert not (np.asarray(loss) & ~np.asarray(mask)).any()
    partial = np.asarray(mask).any(-1) & ~np.asarray(mask).all(-1)  # cells with some levels masked, not all
    assert partial.any() == (structure in ("levelwise", "random_tokens"))


def test_masked_cross_entropy():
    logits = jnp.array([[[10.0, 0.0], [0.0, 10.0]]])
    targets = jnp.array([[0, 0]])
    only_first = masking.masked_cross_entropy(logits, targets, jnp.array([[True, False]]))
    only_second = masking.masked_cross_entropy(logits, targets, jnp.array([[False, True]]))
    both = masking.masked_cross_entropy(logits, targets)
    assert float(only_first) < 1e-3 and float(only_second) == pytest.approx(10.0, abs=1e-3)
    assert float(both) == pytest.approx((float(only_first) + float(only_second)) / 2, rel=1e-5)
    smoothed = masking.masked_cross_entropy(logits, targets, jnp.array([[True, False]]), label_smoothing=0.1)
    assert float(smoothed) > float(only_first)
