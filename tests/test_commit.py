"""COMMIT (MAGVIT's multi-task masked modelling) in the engine: task tokens and segment ids in the
vocabulary and the embedding, the corrupted inputs of training, 3D-block and frame-ordered masks,
token regions, and condition tokens re-applied at every decoding step — on image and video grids."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mgt import commit, masking
from mgt.condition import Condition
from mgt.decoding import decode
from mgt.sampling import sample
from mgt.tokens import TokenSpec
from mgt.transformer import MaskedTransformer, TransformerConfig

V = 8


def _copy_condition_logits(tokens, drop_condition=None, *, segment_ids=None):
    """A stand-in model: where a condition token is shown (segment 1) it predicts that token with
    certainty, everywhere else code 0. A condition lost at any step (shown as [MASK]) yields 0."""
    segment_ids = jnp.zeros_like(tokens) if segment_ids is None else segment_ids  # None: the shape probe
    copy = jax.nn.one_hot(jnp.clip(tokens, 0, V - 1), V) * 50.0
    zero = jax.nn.one_hot(jnp.zeros_like(tokens), V) * 50.0
    return jnp.where((segment_ids == 1)[..., None], copy, zero)


@pytest.mark.parametrize("grid", [(4, 4), (2, 4, 4)], ids=["image", "video"])
def test_decoding_reapplies_condition_tokens_at_every_step(grid):
    rng = np.random.default_rng(0)
    b, mask_id = 3, V
    region = rng.random((b,) + grid) < 0.5
    cond = np.where(region, rng.integers(1, V, (b,) + grid), mask_id).astype(np.int32)
    tokens = np.full((b,) + grid, mask_id, np.int32)
    tokens[:, 0] = 0  # known tokens win over condition tokens and stay
    cond[:, 0] = 5
    out, history = decode(_copy_condition_logits, tokens, jax.random.key(0), mask_id=mask_id, num_steps=6,
                          condition_tokens=cond, return_history=True)
    out = np.asarray(out)
    expect = np.where(region, cond, 0)
    expect[:, 0] = 0
    np.testing.assert_array_equal(out, expect)  # every region cell committed while seeing its condition token
    # the schedule still re-masked region cells along the way: they were shown again, not lost
    assert (np.asarray(history)[0] == mask_id)[:, 1:].sum() > 0
    # guidance: the unconditional half sees [MASK] and segment 0 (predicts 0); scale 0 is the conditional pass
    guided = decode(_copy_condition_logits, tokens, jax.random.key(0), mask_id=mask_id, num_steps=6,
                    condition_tokens=cond, guidance_scale=1.0)
    np.testing.assert_array_equal(np.asarray(guided), expect)
    with pytest.raises(ValueError, match="condition_tokens has shape"):
        decode(_copy_condition_logits, tokens, jax.random.key(0), mask_id=mask_id, condition_tokens=cond[:, :1])
    with pytest.raises(ValueError, match="condition_tokens holds ids"):
        decode(_copy_condition_logits, tokens, jax.random.key(0), mask_id=mask_id, condition_tokens=cond + 20)


def test_commit_inputs_show_condition_tokens_only_at_masked_region_cells():
    tokens = jnp.arange(8, dtype=jnp.int32).reshape(1, 2, 4)
    mask = jnp.array([[[1, 1, 0, 0], [1, 0, 1, 0]]], bool)
    region = jnp.array([[[1, 0, 1, 0], [1, 1, 1, 1]]], bool)
    cond = tokens + 100
    inputs, segments = masking.commit_inputs(tokens, mask, cond, region, mask_id=-1)
    np.testing.assert_array_equal(inputs, [[[100, -1, 2, 3], [104, 5, 106, 7]]])
    np.testing.assert_array_equal(segments, [[[1, 0, 0, 0], [1, 0, 1, 0]]])


def test_region_condition_tokens_cover_every_level_of_a_region_cell():
    """Cells of K levels (grouped codes): the region selects whole cells, whatever K and the grid's sizes."""
    from mgt.commit import region_condition_tokens

    tokens = np.arange(2 * 4 * 4 * 4 * 4).reshape(2, 4, 4, 4, 4)  # [B, T, H, W, K]: every side 4
    region = np.zeros((4, 4, 4), bool)
    region[0] = True  # the first token frame given
    out = region_condition_tokens(tokens, region, mask_id=-1)
    np.testing.assert_array_equal(out[:, 0], tokens[:, 0])
    assert (out[:, 1:] == -1).all()
    plain = region_condition_tokens(tokens[..., 0], region, mask_id=-1)  # K = 1: no level axis
    np.testing.assert_array_equal(plain, out[..., 0])


def test_block_and_frame_ordered_masks_have_exact_counts():
    counts = jnp.array([5, 20, 33], jnp.int32)
    grid = (4, 4, 4)
    blocks = np.asarray(masking.block_mask(jax.random.key(1), counts, grid, block=(1, 2, 2)))
    assert blocks.reshape(3, -1).sum(1).tolist() == [5, 20, 33]
    # a block's cells share one score: most masked cells have a masked neighbour in their 2 × 2 block
    full = np.asarray(masking.block_mask(jax.random.key(2), jnp.array([32]), grid, block=(1, 2, 2)))[0]
    horizontal = (full[:, :, 1:] & full[:, :, :-1]).sum() + (full[:, 1:] & full[:, :-1]).sum()
    random_ = np.asarray(masking.random_mask(jax.random.key(2), jnp.array([32]), grid))[0]
    assert horizontal > (random_[:, :, 1:] & random_[:, :, :-1]).sum() + (random_[:, 1:] & random_[:, :-1]).sum()
    ordered = np.asarray(masking.frame_ordered_mask(jax.random.key(3), counts, grid))
    assert ordered.reshape(3, -1).sum(1).tolist() == [5, 20, 33]
    per_frame = ordered.sum((2, 3))  # later frames first
    np.testing.assert_array_equal(per_frame[1], [0, 0, 4, 16])
    np.testing.assert_array_equal(per_frame[2], [0, 1, 16, 16])
    with pytest.raises(ValueError, match="block="):
        masking.block_mask(jax.random.key(0), counts, grid, block=(2, 2))


def test_token_region_pools_footprints_including_a_causal_first_frame():
    given = np.zeros((8, 4, 4), bool)
    given[:3] = True  # frames 0-2: token frame 0 wholly, token frame 1 half given
    np.testing.assert_array_equal(commit.token_region(given, (4, 2, 2))[:, 0, 0], [True, True, False, False])
    causal = np.zeros((5, 4, 4), bool)
    causal[:1] = True  # the first frame alone is the first token frame
    np.testing.assert_array_equal(commit.token_region(causal, (3, 2, 2))[:, 0, 0], [True, False, False])
    with pytest.raises(ValueError, match="does not map onto"):
        commit.token_region(np.zeros((8, 4, 4), bool), (3, 2, 2))


def test_task_tokens_and_segment_embeddings_in_the_model():
    spec = TokenSpec((2, 2), 16, num_classes=10, null_class=True, num_tasks=3)
    assert spec.task_offset == 27 and spec.mask_id == 30 and spec.vocab_size == 31
    assert TokenSpec((2, 2), 1024, num_classes=1000).mask_id == 2024  # no tasks: the official layout
    cfg = TransformerConfig(grid=(2, 2, 2), codebook_size=16, num_classes=4, conditioning="class_token",
                            tasks=("generation", "frame_prediction"), num_layers=1, hidden_dim=32, num_heads=4,
                            mlp_dim=64)
    assert cfg.num_prefix == 2 and cfg.num_segments == 2 and cfg.task_id("frame_prediction") == 1
    model = MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.full((2, 2, 2, 2), cfg.spec.mask_id, jnp.int32)
    labels = jnp.array([1, 2])
    run = nnx.jit(lambda m, t, **kw: m(t, labels=labels, **kw))
    a = run(model, tokens, tasks=jnp.array([0, 0]))
    b = run(model, tokens, tasks=jnp.array([0, 1]))
    c = run(model, tokens, tasks=jnp.array([0, 1]), segment_ids=jnp.ones_like(tokens))
    assert a.shape == (2, 2, 2, 2, 16)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[1], b[1]) and not np.allclose(b, c)  # the task token and the segment ids matter
    with pytest.raises(ValueError, match="tasks"):
        model(tokens, labels=labels)
    with pytest.raises(ValueError, match="task 'inpaint'"):
        cfg.task_id("inpaint", "task")
    # sampling defaults to the "generation" task; a model without it needs explicit tasks
    out = sample(model, jax.random.key(0), labels=np.array([1, 2]), num_steps=2)
    assert out.shape == (2, 2, 2, 2)
    with pytest.raises(ValueError, match=r"tasks must be int32 \[2\] in \[0, 2\)"):
        sample(model, jax.random.key(0), condition=Condition(labels=np.array([1, 2]), tasks=np.array([0, 5])))
    only = MaskedTransformer(TransformerConfig(grid=(2, 2), codebook_size=16, tasks=("frame_prediction",),
                                               num_layers=1, hidden_dim=32, num_heads=4, mlp_dim=64),
                             rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="not plain 'generation'"):
        sample(only, jax.random.key(0), batch_size=2)
