"""Invariants of the MaskGIT decoding engine on 1D, 2D, 3D and multi-level grids."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgt.decoding import decode
from mgt.schedules import mask_ratio

V = 12
MASK = 20  # a mask id >= V, as the official layout has


def stub_logits(tokens):
    """Deterministic, per-example logits that depend on the tokens (so decoding is non-trivial)."""
    b = tokens.shape[0]
    flat = tokens.reshape(b, -1).astype(jnp.float32)
    ctx = jnp.tanh(flat.mean(-1, keepdims=True) / 10.0)  # per-example context
    pos = jnp.arange(flat.shape[1], dtype=jnp.float32)[None, :, None]
    v = jnp.arange(V, dtype=jnp.float32)[None, None, :]
    logits = 2.0 * jnp.sin(0.7 * pos + 1.3 * v + 3.0 * ctx[..., None])
    return logits.reshape(tokens.shape + (V,))


def expected_masked_counts(n0, num_steps, schedule="cosine", start_step=0):
    counts, u = [], n0
    for s in range(start_step, num_steps):
        if s == num_steps - 1:
            u = 0
        elif u > 0:
            ratio = mask_ratio(schedule, (s + 1) / num_steps, n0)
            u = max(1, min(u - 1, math.floor(n0 * float(ratio))))
        counts.append(u)
    return counts


GRIDS = {
    "1d": (24,),
    "2d": (6, 6),
    "3d": (2, 4, 4),
    "levels": (10, 3),  # (L, K): multi-level tokens, decoded jointly
}


@pytest.fixture(scope="module", params=list(GRIDS))
def decoded(request):
    shape = GRIDS[request.param]
    rs = np.random.RandomState(0)
    tokens = np.full((3,) + shape, MASK, np.int32)
    # example 1 keeps a third of its tokens known, example 2 is fully known except 2 positions
    known = rs.rand(*shape) < 0.33
    tokens[1][known] = rs.randint(0, V, known.sum())
    flat2 = rs.randint(0, V, int(np.prod(shape)))
    flat2[[0, 5]] = MASK
    tokens[2] = flat2.reshape(shape)
    keys = jax.random.split(jax.random.key(7), 3)
    out, hist = decode(stub_logits, tokens, keys, mask_id=MASK, num_steps=8, return_history=True)
    return tokens, keys, np.asarray(out), np.asarray(hist)


def test_masked_count_after_each_step_follows_the_formula(decoded):
    tokens, _, _, hist = decoded
    assert hist.shape == (8,) + tokens.shape
    for b in range(tokens.shape[0]):
        n0 = int((tokens[b] == MASK).sum())
        got = [(hist[s, b] == MASK).sum() for s in range(8)]
        assert got == expected_masked_counts(n0, 8), (b, got)


def test_known_tokens_never_change_and_nothing_masked_at_end(decoded):
    tokens, _, out, hist = decoded
    known = tokens != MASK
    assert (out[known] == tokens[known]).all()
    for s in range(hist.shape[0]):
        assert (hist[s][known] == tokens[known]).all()
    assert (out != MASK).all() and out.min() >= 0 and out.max() < V
    assert (hist[-1] == out).all()


def test_committed_tokens_stay_committed(decoded):
    _, _, out, hist = decoded
    for s in range(1, hist.shape[0]):
        committed = hist[s - 1] != MASK
        assert (hist[s][committed] == hist[s - 1][committed]).all()


def test_same_key_same_output_and_batch_independence(decoded):
    tokens, keys, out, _ = decoded
    again = np.asarray(decode(stub_logits, tokens, keys, mask_id=MASK, num_steps=8))
    assert (again == out).all()
    # change the other examples; example 0 keeps its key and input
    other = tokens.copy()
    other[1:] = np.where(other[1:] == MASK, 3, MASK)
    keys2 = keys.at[1].set(jax.random.key(99))
    mixed = np.asarray(decode(stub_logits, other, keys2, mask_id=MASK, num_steps=8))
    assert (mixed[0] == out[0]).all()
    # a different key changes the output
    keys3 = keys.at[0].set(jax.random.key(12345))
    assert not (np.asarray(decode(stub_logits, tokens, keys3, mask_id=MASK, num_steps=8))[0] == out[0]).all()


def test_official_cosine_counts_for_256_tokens():
    assert expected_masked_counts(256, 8) == [251, 236, 212, 181, 142, 97, 49, 0]
    tokens = np.full((1, 16, 16), MASK, np.int32)
    _, hist = decode(stub_logits, tokens, jax.random.key(0), mask_id=MASK, num_steps=8, return_history=True)
    assert [(np.asarray(hist[s]) == MASK).sum() for s in range(8)] == [251, 236, 212, 181, 142, 97, 49, 0]


def test_start_step_and_history_prefix():
    tokens = np.full((2, 4, 4), MASK, np.int32)
    tokens[:, 0] = 1
    out, hist = decode(stub_logits, tokens, jax.random.key(1), mask_id=MASK, num_steps=12, start_step=2,
                       return_history=True)
    hist = np.asarray(hist)
    assert hist.shape[0] == 12
    assert (hist[:2] == tokens[None]).all()
    n0 = 12
    assert [(hist[s, 0] == MASK).sum() for s in range(2, 12)] == expected_masked_counts(n0, 12, start_step=2)
    assert (np.asarray(out) != MASK).all()


def test_multistage_levels_plan():
    tokens = np.full((2, 8, 3), MASK, np.int32)
    out, hist = decode(stub_logits, tokens, jax.random.key(2), mask_id=MASK, stages=[(0, 4), ((1, 2), 1)],
                       return_history=True)
    hist = np.asarray(hist)
    assert hist.shape[0] == 5
    # during the level-0 stage, levels 1 and 2 stay fully masked
    for s in range(4):
        assert (hist[s][..., 1:] == MASK).all()
    assert [(hist[s][0, :, 0] == MASK).sum() for s in range(4)] == expected_masked_counts(8, 4)
    assert (np.asarray(out) != MASK).all()


@pytest.mark.parametrize("kwargs", [
    dict(order="random"), dict(order="halton"), dict(confidence="logit"), dict(top_k=2),
    dict(top_p=0.5), dict(temperature=2.0, temperature_final=0.5), dict(schedule="linear"),
    dict(schedule="pow2.5"), dict(schedule="exp"), dict(schedule="log"),
])
def test_options_keep_the_invariants(kwargs):
    tokens = np.full((2, 5, 5), MASK, np.int32)
    tokens[0, 2] = 4
    out, hist = decode(stub_logits, tokens, jax.random.key(3), mask_id=MASK, num_steps=6, return_history=True,
                       **kwargs)
    out, hist = np.asarray(out), np.asarray(hist)
    schedule = kwargs.get("schedule", "cosine")
    for b in range(2):
        n0 = int((tokens[b] == MASK).sum())
        assert [(hist[s, b] == MASK).sum() for s in range(6)] == expected_masked_counts(n0, 6, schedule)
    assert (out[0, 2] == 4).all() and (out != MASK).all()


def test_top_k_one_is_greedy():
    tokens = np.full((1, 7), MASK, np.int32)
    out = np.asarray(decode(stub_logits, tokens, jax.random.key(0), mask_id=MASK, num_steps=1, top_k=1))
    assert (out == np.asarray(stub_logits(jnp.asarray(tokens))).argmax(-1)).all()


def test_typical_filter_keeps_the_codes_nearest_the_entropy():
    from mgt.decoding import _filter_logits

    # one dominant code and a flat tail: the kept codes are those whose surprisal is nearest the entropy
    probs = np.array([0.66] + [0.34 / 17] * 17)
    logits = jnp.log(jnp.asarray(probs, jnp.float32))[None, None]
    kept = np.isfinite(np.asarray(_filter_logits(logits, None, None, 0.3)))[0, 0]
    entropy = -(probs * np.log(probs)).sum()
    distance = np.abs(-np.log(probs) - entropy)
    assert kept.sum() >= 1 and distance[kept].max() <= distance[~kept].min()
    assert np.isfinite(np.asarray(_filter_logits(logits, None, None, 1.0))).all()  # 1.0: off


def test_decode_options_from_a_sample_config():
    from mgt.config import base_config
    from mgt.sampling import decode_options, parse_stages

    s = base_config().sample
    opts = decode_options(s, 4)
    assert opts["stages"] is None and opts["top_k"] is None and opts["typical_p"] is None
    opts = decode_options(s, 4, stages="16,1,1,2", typical_p=0.9, num_steps=3)
    assert opts["stages"] == [((0,), 16), ((1,), 1), ((2,), 1), ((3,), 2)]
    assert opts["typical_p"] == 0.9 and opts["num_steps"] == 3
    assert opts["confidence"] == "logprob" and decode_options(s, 4, confidence="logit")["confidence"] == "logit"
    assert "temperature_final" not in opts and "sketch_guidance" not in opts  # only when the config sets them
    s.temperature_final, s.sketch_guidance = 0.5, 0.75
    opts = decode_options(s, 4)
    assert opts["temperature_final"] == 0.5 and opts["sketch_guidance"] == 0.75
    opts = decode_options(s, 4, temperature_final=0.8, sketch_guidance=0.0)  # command-line overrides win
    assert opts["temperature_final"] == 0.8 and "sketch_guidance" not in opts
    assert "guidance_schedule" not in opts  # "constant": decode's default
    s.guidance_schedule = "linear"
    assert decode_options(s, 4)["guidance_schedule"] == "linear"
    assert "guidance_schedule" not in decode_options(s, 4, guidance_schedule="constant")
    expected = r"expected one of \('constant', 'linear', 'cosine'\)"
    with pytest.raises(ValueError, match=r"--guidance-schedule='exp'; " + expected):
        decode_options(s, 4, guidance_schedule="exp")
    s.guidance_schedule = "ramp"
    with pytest.raises(ValueError, match=r"config.sample.guidance_schedule='ramp'; expected one of"):
        decode_options(s, 4)
    s.guidance_schedule = "constant"
    with pytest.raises(ValueError, match=r"--temperature-final=-1.0; expected > 0"):
        decode_options(s, 4, temperature_final=-1.0)
    s.temperature_final = 0.0
    with pytest.raises(ValueError, match=r"config.sample.temperature_final=0.0; expected > 0"):
        decode_options(s, 4)
    with pytest.raises(ValueError, match=r"--confidence='margin'; expected one of \('logprob', 'logit'\)"):
        decode_options(s, 4, confidence="margin")
    bad_config = base_config().sample
    bad_config.confidence = "probability"
    with pytest.raises(ValueError, match="config.sample.confidence='probability'"):
        decode_options(bad_config, 4)
    assert parse_stages("0:12;1,2,3:2", 4) == [((0,), 12), ((1, 2, 3), 2)]
    for bad in ("16,1,1", "0:4;0:2", "x", "0:0;1:1"):
        with pytest.raises(ValueError, match="--stages"):
            decode_options(s, 2, stages=bad)


def test_halton_order_commits_spread_out_positions_first():
    tokens = np.full((1, 8, 8), MASK, np.int32)
    _, hist = decode(stub_logits, tokens, jax.random.key(0), mask_id=MASK, num_steps=8, order="halton",
                     return_history=True)
    first = np.argwhere(np.asarray(hist[0, 0]) != MASK)
    assert len(first) == 64 - expected_masked_counts(64, 8)[0]
    # the first committed cells are not all in one row or column
    assert len(set(first[:, 0])) > 1 and len(set(first[:, 1])) > 1


def test_classifier_free_guidance_batches_both_passes():
    calls = []

    def guided(tokens, drop):
        calls.append(tokens.shape)
        base = stub_logits(tokens)
        return jnp.where(drop[:, None, None], 0.0, base)

    tokens = np.full((2, 6), MASK, np.int32)
    out = decode(guided, tokens, jax.random.key(0), mask_id=MASK, num_steps=3, guidance_scale=2.0,
                 guidance_schedule="cosine")
    assert calls and all(shape[0] == 4 for shape in calls)
    assert (np.asarray(out) != MASK).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_steps=0), "num_steps"),
    (dict(schedule="wobbly"), "schedule"),
    (dict(start_step=8), "start_step"),
    (dict(order="sideways"), "order"),
    (dict(top_p=1.5), "top_p"),
    (dict(typical_p=0.0), "typical_p"),
    (dict(stages=[(5, 2)]), "level"),
])
def test_bad_arguments_raise_value_errors(kwargs, match):
    tokens = np.full((2, 4, 3), MASK, np.int32)
    with pytest.raises(ValueError, match=match):
        decode(stub_logits, tokens, jax.random.key(0), mask_id=MASK, **kwargs)


def test_bad_token_ids_and_key_batch():
    tokens = np.full((2, 4), MASK, np.int32)
    tokens[0, 1] = V  # outside [0, V) and not the mask id
    with pytest.raises(ValueError, match=r"tokens holds ids \[12\]"):
        decode(stub_logits, tokens, jax.random.key(0), mask_id=MASK)
    with pytest.raises(ValueError, match="3 keys"):
        decode(stub_logits, np.full((2, 4), MASK, np.int32), jax.random.split(jax.random.key(0), 3), mask_id=MASK)
    with pytest.raises(ValueError, match="integer"):
        decode(stub_logits, np.zeros((2, 4), np.float32), jax.random.key(0), mask_id=MASK)


def test_repeated_calls_do_not_retrace_the_model():
    """The host-side shape check traces logits_fn once per structure, not on every call (for a large
    model that trace cost tens of milliseconds per generation)."""
    traces = []

    @jax.tree_util.register_pytree_node_class
    class CountingLogits:
        def __init__(self, scale):
            self.scale = scale

        def __call__(self, tokens):
            traces.append(tokens.shape)
            return stub_logits(tokens) * self.scale

        def tree_flatten(self):
            return (self.scale,), None

        @classmethod
        def tree_unflatten(cls, aux, children):
            return cls(*children)

    tokens = np.full((2, 5), MASK, np.int32)
    first = decode(CountingLogits(jnp.float32(1.0)), tokens, jax.random.key(0), mask_id=MASK, num_steps=3)
    after_first = len(traces)
    second = decode(CountingLogits(jnp.float32(1.0)), tokens, jax.random.key(0), mask_id=MASK, num_steps=3)
    assert after_first >= 1 and len(traces) == after_first
    np.testing.assert_array_equal(first, second)
    # a new shape is checked (and compiled) anew
    decode(CountingLogits(jnp.float32(1.0)), np.full((3, 5), MASK, np.int32), jax.random.key(0), mask_id=MASK,
           num_steps=3)
    assert len(traces) > after_first
