"""The autoregressive baseline: causality, KV-cache decoding, sampling and the training objective."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mgt.ar import ARTransformer, ar_loss, ar_sample
from mgt.transformer import TransformerConfig

TINY = dict(num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=64)
GRID = (3, 4)
V = 16


def _config(conditional: bool, **kw):
    if conditional:
        return TransformerConfig(grid=GRID, codebook_size=V, num_classes=5, block_style="maskgit",
                                 conditioning="class_token", **TINY, **kw)
    return TransformerConfig(grid=GRID, codebook_size=V, position_embedding="factorized", **TINY, **kw)


@pytest.fixture(scope="module")
def conditional_model():
    return ARTransformer(_config(True), rngs=nnx.Rngs(0))


def _tokens(batch=2, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randint(0, V, (batch,) + GRID), jnp.int32)


def _cached_logits(model, tokens, labels):
    """Teacher-forced logits computed one position at a time through `decode_step` and the cache."""
    graphdef, state = nnx.split(model)
    b, n = tokens.shape[0], model.seq_len

    @jax.jit
    def run(state, tokens, labels):
        flat = tokens.reshape(b, n)
        prev = jnp.concatenate([jnp.zeros((b, 1), jnp.int32), flat[:, :-1]], axis=1)  # input j is t_{j-1}

        def body(cache, j):
            m = nnx.merge(graphdef, state, copy=True)
            logits, cache = m.decode_step(prev[:, j], j, cache, labels=labels)
            return cache, logits

        cache = nnx.merge(graphdef, state, copy=True).init_cache(b)
        _, logits_nbv = jax.lax.scan(body, cache, jnp.arange(n))
        return logits_nbv.transpose(1, 0, 2).reshape(tokens.shape + (V,))

    return run(state, tokens, labels)


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional-factorized", "class-token-maskgit"])
def test_cached_decoding_equals_teacher_forcing(conditional, conditional_model):
    model = conditional_model if conditional else ARTransformer(_config(False), rngs=nnx.Rngs(1))
    tokens = _tokens()
    labels = jnp.array([1, 4]) if conditional else None
    full = model(tokens, labels=labels)
    assert full.shape == (2,) + GRID + (V,) and full.dtype == jnp.float32
    cached = _cached_logits(model, tokens, labels)
    np.testing.assert_allclose(np.asarray(cached), np.asarray(full), atol=1e-5, rtol=0)
    if conditional:  # the class prefix matters
        assert not np.allclose(model(tokens, labels=jnp.array([2, 3])), full, atol=1e-4)


def test_logits_are_causal(conditional_model):
    tokens = _tokens()
    labels = jnp.array([0, 2])
    base = np.asarray(conditional_model(tokens, labels=labels)).reshape(2, -1, V)
    j = 5  # change cell 5 (raster order): logits of cells <= 5 must not move, later ones must
    changed = tokens.reshape(2, -1).at[:, j].add(1).__mod__(V).reshape(tokens.shape)
    after = np.asarray(conditional_model(changed, labels=labels)).reshape(2, -1, V)
    np.testing.assert_array_equal(after[:, : j + 1], base[:, : j + 1])
    assert np.abs(after[:, j + 1:] - base[:, j + 1:]).max(axis=(0, 2)).min() > 0


def test_ar_sample_shape_range_determinism_and_greedy(conditional_model):
    model = conditional_model
    labels = [1, 3, 3]
    out = ar_sample(model, jax.random.key(0), labels=labels)
    assert out.shape == (3,) + GRID and out.dtype == jnp.int32
    assert int(out.min()) >= 0 and int(out.max()) < V
    np.testing.assert_array_equal(ar_sample(model, jax.random.key(0), labels=labels), out)
    assert not np.array_equal(ar_sample(model, jax.random.key(1), labels=labels), out)
    # one key per example: an example's output depends only on its key (and label)
    keys = jax.random.split(jax.random.key(7), 3)
    per_example = ar_sample(model, keys, labels=labels)
    np.testing.assert_array_equal(ar_sample(model, keys[1:], labels=labels[1:]), per_example[1:])

    # top_k=1 is greedy: every sampled token is the argmax of the teacher-forced logits on the output
    greedy = ar_sample(model, jax.random.key(3), labels=labels, top_k=1)
    argmax = jnp.argmax(model(greedy, labels=jnp.asarray(labels)), axis=-1)
    np.testing.assert_array_equal(np.asarray(argmax), np.asarray(greedy))
    np.testing.assert_array_equal(ar_sample(model, jax.random.key(4), labels=labels, top_k=1), greedy)


def test_bad_arguments_raise(conditional_model):
    with pytest.raises(ValueError, match="num_levels=1"):
        ARTransformer(TransformerConfig(grid=(4,), codebook_size=8, num_levels=2, **TINY), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="labels are required"):
        ar_sample(conditional_model, jax.random.key(0), batch_size=2)
    with pytest.raises(ValueError, match="labels hold values outside"):
        ar_sample(conditional_model, jax.random.key(0), labels=[9])
    with pytest.raises(ValueError, match="top_k=0"):
        ar_sample(conditional_model, jax.random.key(0), labels=[1], top_k=0)
    with pytest.raises(ValueError, match="temperature"):
        ar_sample(conditional_model, jax.random.key(0), labels=[1], temperature=0.0)
    with pytest.raises(ValueError, match=r"tokens has shape \(2, 4, 3\)"):
        conditional_model(jnp.zeros((2, 4, 3), jnp.int32), labels=jnp.array([0, 1]))


def test_loss_falls_on_a_fixed_batch():
    model = ARTransformer(_config(True), rngs=nnx.Rngs(2))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    tokens, labels = _tokens(4, seed=1), jnp.array([0, 1, 2, 3])

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: ar_loss(m, tokens, labels))(model)
        optimizer.update(model, grads)
        return loss

    first = float(train_step(model, optimizer))
    assert abs(first - np.log(V)) < 0.1  # a fresh model predicts nearly uniformly
    for _ in range(30):
        last = float(train_step(model, optimizer))
    assert last < 0.5 * first, (first, last)
