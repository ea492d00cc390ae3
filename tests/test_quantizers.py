"""Tests of mgt.tokenizers.quantizers: VQ (plain, EMA, cosine, factorised, k-means, revival), FSQ, LFQ, RVQ.

Eager JAX compiles every primitive for every new shape, which on 2 CPU cores costs more than
compiling a whole function once: each test runs its module calls inside one `nnx.jit` probe, and
inputs are made with numpy.
"""

import itertools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mgt.tokenizers.quantizers import (
    CodebookStat,
    FiniteScalarQuantizer,
    LookupFreeQuantizer,
    QuantizerOutput,
    ResidualVectorQuantizer,
    VectorQuantizer,
    code_usage_metrics,
)


def normal(seed, shape, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


@pytest.fixture(scope="module")
def train_step():
    """A training call compiled once per module structure and input shape, shared across tests."""
    return nnx.jit(lambda module, z: module(z, train=True))


@pytest.fixture(scope="module")
def eval_step():
    return nnx.jit(lambda module, z: module(z))


# ----------------------------------------------------------------------------------------------- VQ
@pytest.fixture(scope="module")
def vq():
    return VectorQuantizer(16, 4, rngs=nnx.Rngs(0), commitment_cost=0.5, codebook_cost=2.0,
                           entropy_cost=0.1, entropy_temperature=0.5)


@pytest.fixture(scope="module")
def z_small():
    return normal(1, (3, 7, 4))


def test_vq_nearest_code_matches_numpy_brute_force(vq, z_small):
    codebook = np.asarray(vq.codebook[...])
    assert codebook.shape == (16, 4) and isinstance(vq.codebook, nnx.Param)
    assert vq.codebook_size == 16 and vq.num_levels == 1
    expected = np.argmin(((z_small[..., None, :] - codebook) ** 2).sum(-1), axis=-1)

    @nnx.jit
    def probe(m, z):
        return m(z), m.encode(z), m.decode(jnp.asarray(expected))

    out, encoded, decoded = probe(vq, z_small)
    assert isinstance(out, QuantizerOutput)
    assert out.indices.dtype == jnp.int32 and out.indices.shape == (3, 7)
    assert out.quantized.dtype == jnp.float32 and out.quantized.shape == (3, 7, 4)
    np.testing.assert_array_equal(out.indices, expected)
    np.testing.assert_array_equal(encoded, expected)
    np.testing.assert_array_equal(out.quantized, codebook[expected])
    np.testing.assert_array_equal(decoded, codebook[expected])


def test_vq_straight_through_losses_and_gradient_routing(vq, z_small):
    weights = normal(2, z_small.shape)

    def loss_of(name):
        return lambda m, z: m(z, train=True).losses[name]

    @nnx.jit
    def probe(m, z):
        out = m(z, train=True)
        dz = jax.grad(lambda z: jnp.sum(weights * m(z, train=True).quantized))(z)
        commit_grads = nnx.grad(loss_of("commitment"))(m, z)
        codebook_grads = nnx.grad(loss_of("codebook"))(m, z)
        commit_dz = nnx.grad(loss_of("commitment"), argnums=1)(m, z)
        return out, m(z), dz, commit_grads, codebook_grads, commit_dz

    out, eval_out, dz, commit_grads, codebook_grads, commit_dz = probe(vq, z_small)
    np.testing.assert_allclose(dz, weights, rtol=1e-6)  # straight-through: identity gradient
    np.testing.assert_allclose(out.quantized, eval_out.quantized, atol=1e-6)  # forward value = codes
    z, q = z_small, np.asarray(eval_out.quantized)
    np.testing.assert_allclose(out.losses["commitment"], 0.5 * np.mean((q - z) ** 2), rtol=1e-5)
    np.testing.assert_allclose(out.losses["codebook"], 2.0 * np.mean((q - z) ** 2), rtol=1e-5)
    # The official entropy loss over softmax(-distance / T), T = 0.5, weight 0.1.
    logits = -((z.reshape(-1, 1, 4) - np.asarray(vq.codebook[...])) ** 2).sum(-1) / 0.5
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    sample_entropy = -np.mean(np.sum(p * np.log(p), -1))
    avg = p.mean(0)
    expected_entropy = 0.1 * (sample_entropy + np.sum(avg * np.log(avg + 1e-5)))
    np.testing.assert_allclose(out.losses["entropy"], expected_entropy, rtol=1e-4, atol=1e-6)
    # Commitment reaches the encoder only, the codebook term the codebook only.
    assert np.all(np.asarray(commit_grads["codebook"][...]) == 0)
    assert np.any(np.asarray(codebook_grads["codebook"][...]) != 0)
    np.testing.assert_allclose(commit_dz, 0.5 * 2 * (z - q) / z.size, rtol=1e-4, atol=1e-7)


def test_vq_ema_update_moves_codes_toward_assigned_means(train_step):
    vq = VectorQuantizer(8, 2, rngs=nnx.Rngs(3), use_ema=True, ema_decay=0.5)
    assert isinstance(vq.codebook, CodebookStat) and not isinstance(vq.codebook, nnx.Param)
    assert len(jax.tree.leaves(nnx.state(vq, nnx.Param))) == 0
    z = normal(4, (64, 2))
    before = np.asarray(vq.codebook[...])
    out = train_step(vq, z)
    assert "codebook" not in out.losses
    idx = np.asarray(out.indices)
    counts = np.bincount(idx, minlength=8).astype(np.float64)
    sums = np.stack([z[idx == k].sum(0) for k in range(8)])
    cluster = 0.5 * 1.0 + 0.5 * counts
    embed = 0.5 * before + 0.5 * sums
    n = cluster.sum()
    expected = embed / ((cluster + 1e-5) / (n + 8e-5) * n)[:, None]
    after = np.asarray(vq.codebook[...])
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-6)
    used = counts > 0
    assert used.sum() >= 2
    means = sums[used] / counts[used][:, None]
    dist_before = np.linalg.norm(before[used] - means, axis=-1)
    dist_after = np.linalg.norm(after[used] - means, axis=-1)
    assert np.all(dist_after < dist_before)


def test_vq_kmeans_init_sets_codebook_from_data(train_step, eval_step):
    centers = np.array([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]], np.float32)
    z = np.repeat(centers, 16, axis=0) + normal(5, (64, 2), 0.05)
    vq = VectorQuantizer(4, 2, rngs=nnx.Rngs(6), kmeans_init=True)
    assert not bool(vq.initialized[...])
    error_before = float(np.mean((np.asarray(eval_step(vq, z).quantized) - z) ** 2))
    out = train_step(vq, z)
    codebook = np.asarray(vq.codebook[...])
    assert bool(vq.initialized[...])
    # The batch was quantized with the new codebook, and every code is the mean of its vectors
    # (a converged Lloyd iteration; which local optimum depends on the sampled start).
    idx = np.asarray(out.indices)
    np.testing.assert_array_equal(idx, eval_step(vq, z).indices)
    for k in np.unique(idx):
        np.testing.assert_allclose(codebook[k], z[idx == k].mean(0), atol=1e-4)
    error_after = float(np.mean((np.asarray(out.quantized) - z) ** 2))
    assert error_after < 0.3 * error_before
    # Later training calls do not re-initialise.
    train_step(vq, z + 1.0)
    np.testing.assert_array_equal(vq.codebook[...], codebook)

    # Fewer vectors than codes: codes are drawn from the data (with replacement).
    small = normal(7, (3, 2))
    vq8 = VectorQuantizer(8, 2, rngs=nnx.Rngs(8), kmeans_init=True)
    train_step(vq8, small)
    gap = np.linalg.norm(np.asarray(vq8.codebook[...])[:, None] - small[None], axis=-1).min(axis=1)
    np.testing.assert_allclose(gap, 0.0, atol=1e-5)


def test_vq_dead_code_revival_replaces_unused_codes(train_step, eval_step):
    vq = VectorQuantizer(8, 2, rngs=nnx.Rngs(9), dead_code_threshold=0.3, ema_decay=0.5,
                         dead_code_buffer_size=32)
    # Codes far from the data: one of them takes every vector, the rest are dead.
    vq.codebook.set_value(jnp.asarray(50.0 + normal(0, (8, 2))))
    z = normal(10, (48, 2))
    usage_before = float(eval_step(vq, z).metrics["usage"])
    assert usage_before == pytest.approx(1 / 8)
    for _ in range(3):
        train_step(vq, z)
    assert int(vq.buffer_count[...]) == 32
    revived = np.linalg.norm(np.asarray(vq.codebook[...]), axis=-1) < 10
    assert revived.sum() >= 6  # the 7 dead codes now sit on data drawn from the buffer
    assert float(eval_step(vq, z).metrics["usage"]) > usage_before + 0.25


def test_vq_l2_normalized_factorized_codes():
    vq = VectorQuantizer(16, 6, rngs=nnx.Rngs(11), l2_normalize=True, lookup_dim=3)
    assert vq.codebook[...].shape == (16, 3)
    z = normal(12, (5, 6))

    @nnx.jit
    def probe(m, z):
        grads = nnx.grad(lambda m, z: jnp.sum(m(z, train=True).quantized ** 2))(m, z)
        return m(z), m.code_vectors(), m.in_proj(z), grads

    out, code_vectors, projected, grads = probe(vq, z)
    np.testing.assert_allclose(np.linalg.norm(code_vectors, axis=-1), 1.0, rtol=1e-5)
    x = np.asarray(projected) / np.linalg.norm(projected, axis=-1, keepdims=True)
    cb = np.asarray(vq.codebook[...])
    cb = cb / np.linalg.norm(cb, axis=-1, keepdims=True)
    np.testing.assert_array_equal(out.indices, np.argmax(x @ cb.T, axis=-1))  # nearest = most similar
    kernel, bias = np.asarray(vq.out_proj.kernel[...]), np.asarray(vq.out_proj.bias[...])
    np.testing.assert_allclose(out.quantized, cb[np.asarray(out.indices)] @ kernel + bias, atol=1e-5)
    # Gradients reach both projections through the straight-through estimator.
    assert np.any(np.asarray(grads["in_proj"]["kernel"][...]) != 0)
    assert np.any(np.asarray(grads["out_proj"]["kernel"][...]) != 0)


# ---------------------------------------------------------------------------------------------- FSQ
@pytest.mark.parametrize("symmetric", [False, True])
def test_fsq_index_bijection_and_round_trip(symmetric):
    levels = (3, 4, 2, 8)
    fsq = FiniteScalarQuantizer(levels, symmetric=symmetric)
    assert fsq.codebook_size == 192 and fsq.num_levels == 1
    all_indices = np.arange(192, dtype=np.int32)
    codes = np.asarray(fsq.codes_from_indices(all_indices))
    assert codes.shape == (192, 4) and np.all(np.abs(codes) <= 1.0 + 1e-6)
    assert len({tuple(row) for row in codes.round(5)}) == 192  # every index is a distinct code
    grid = np.array(list(itertools.product(*[np.unique(codes[:, c]) for c in range(4)])), np.float32)
    # Inputs whose bounded values sit inside each code's rounding cell must encode to that code.
    values = codes * fsq._scale
    bounded = 0.9 * (values + fsq._offset) - fsq._offset
    z = (np.arctanh((bounded + fsq._offset) / fsq._half_range) - fsq._shift).astype(np.float32)

    @nnx.jit
    def probe(m, z, grid):
        return m(z), m.encode(z), m.decode(jnp.arange(192)), m.indices_from_codes(grid)

    out, encoded, decoded, grid_indices = probe(fsq, z, grid)
    np.testing.assert_array_equal(np.sort(np.asarray(grid_indices)), all_indices)  # each code once
    np.testing.assert_array_equal(encoded, all_indices)
    np.testing.assert_array_equal(out.indices, all_indices)
    np.testing.assert_allclose(out.quantized, codes, atol=1e-6)
    np.testing.assert_allclose(decoded, codes, atol=1e-6)
    assert float(out.metrics["usage"]) == pytest.approx(1.0)
    assert float(out.metrics["perplexity"]) == pytest.approx(192, rel=1e-4)
    for c, level in enumerate(levels):
        values = np.unique(codes[:, c])
        assert len(values) == level
        if symmetric and level % 2 == 0:
            np.testing.assert_allclose(values, -values[::-1], atol=1e-6)
            assert np.min(np.abs(values)) > 0
        else:
            assert np.min(np.abs(values)) == 0


def test_fsq_projection_and_straight_through():
    fsq_proj = FiniteScalarQuantizer((5, 5, 4), dim=6, rngs=nnx.Rngs(13))
    fsq = FiniteScalarQuantizer((5, 5, 4))
    z6, z3 = normal(14, (2, 9, 6), 2.0), normal(15, (4, 3))

    @nnx.jit
    def probe(m_proj, m, z6, z3):
        grad = jax.grad(lambda z: jnp.sum(m(z, train=True).quantized))(z3)
        return m_proj(z6), m_proj.decode(m_proj.encode(z6)), grad

    out, round_trip, grad = probe(fsq_proj, fsq, z6, z3)
    assert out.quantized.shape == (2, 9, 6) and out.indices.shape == (2, 9) and out.losses == {}
    np.testing.assert_allclose(round_trip, out.quantized, atol=1e-6)
    # d/dz of tanh(z + shift) * half_range / scale: rounding passes gradients straight through.
    expected = (1 - np.tanh(z3 + fsq._shift) ** 2) * fsq._half_range / fsq._scale
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- LFQ
def test_lfq_index_bijection_and_round_trip():
    lfq = LookupFreeQuantizer(5, entropy_cost=0.0)
    lfq_proj = LookupFreeQuantizer(5, dim=7, rngs=nnx.Rngs(0))
    assert lfq.codebook_size == 32 and lfq.num_levels == 1
    z, z7 = normal(16, (6, 5)), normal(17, (6, 7))

    @nnx.jit
    def probe(m, m_proj, z, z7):
        codes = m.decode(jnp.arange(32))
        grad = jax.grad(lambda z: jnp.sum(m(z, train=True).quantized * 3.0))(z)
        out = m(z)
        return (codes, m.encode(codes), m.encode(jnp.eye(5) - 0.5), out, m.decode(out.indices), grad,
                m_proj(z7), m_proj.decode(m_proj.encode(z7)))

    codes, code_indices, unit_indices, out, decoded, grad, out7, round_trip7 = probe(lfq, lfq_proj, z, z7)
    assert set(np.unique(np.asarray(codes)).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(code_indices, np.arange(32))  # decode ∘ encode is the identity
    assert len({tuple(row) for row in np.asarray(codes)}) == 32
    np.testing.assert_array_equal(unit_indices, 2 ** np.arange(5))  # bit i carries weight 2**i
    np.testing.assert_array_equal(out.quantized, np.sign(z))
    np.testing.assert_array_equal(decoded, out.quantized)
    np.testing.assert_allclose(grad, 3.0)
    assert out7.quantized.shape == (6, 7)
    np.testing.assert_allclose(round_trip7, out7.quantized, atol=1e-6)


def _brute_force_lfq_entropies(x, temperature):
    """Per-sample and codebook entropy of the full 2**bits-way softmax(-|x - c|² / T)."""
    bits = x.shape[-1]
    c = np.arange(2**bits)[:, None]
    codes = np.where((c >> np.arange(bits)) & 1, 1.0, -1.0)
    logits = -((x[:, None, :] - codes[None]) ** 2).sum(-1) / temperature
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    sample = -np.mean(np.sum(p * np.log(p), -1))
    avg = p.mean(0)
    return sample, -np.sum(avg * np.log(avg))


def test_lfq_grouped_entropy_matches_full_softmax():
    full = LookupFreeQuantizer(4, num_groups=1, temperature=0.8, entropy_cost=0.3, diversity_gamma=2.0)
    grouped = LookupFreeQuantizer(4, num_groups=2, temperature=0.8)
    assert grouped.group_sizes == (2, 2)
    assert LookupFreeQuantizer(18).group_sizes == (6, 6, 6)  # never more than a 256-way softmax
    x = normal(18, (12, 4), 0.7)
    # A batch that is the product of independent group patterns: grouped == full softmax exactly.
    a, b = normal(19, (3, 2)), normal(20, (4, 2))
    product = np.array([np.concatenate([ra, rb]) for ra in a for rb in b], np.float32)

    @nnx.jit
    def probe(full, grouped, x, product):
        return (full.bit_entropy_terms(x), grouped.bit_entropy_terms(x), full(x).losses["entropy"],
                grouped.bit_entropy_terms(product))

    (s1, c1), (s2, c2), loss, (sp, cp) = probe(full, grouped, x, product)
    sample, codebook = _brute_force_lfq_entropies(x.astype(np.float64), 0.8)
    np.testing.assert_allclose([s1, c1], [sample, codebook], rtol=1e-4)
    np.testing.assert_allclose(s2, sample, rtol=1e-4)  # per-sample entropy factorises exactly
    assert float(c2) >= codebook - 1e-5  # the sum of group entropies bounds the joint entropy
    np.testing.assert_allclose(loss, 0.3 * (sample - 2.0 * codebook), rtol=1e-4)
    np.testing.assert_allclose([sp, cp], _brute_force_lfq_entropies(product.astype(np.float64), 0.8), rtol=1e-4)


# ---------------------------------------------------------------------------------------------- RVQ
def test_rvq_error_falls_with_each_level_and_prefix_decode(train_step):
    rvq = ResidualVectorQuantizer(4, 16, 3, rngs=nnx.Rngs(21), kmeans_init=True)
    assert rvq.num_levels == 4 and rvq.codebook_size == 16
    z = normal(22, (2, 32, 3))
    out = train_step(rvq, z)  # k-means initialises every level on its residual
    assert out.indices.shape == (2, 32, 4) and out.indices.dtype == jnp.int32
    assert {f"{m}_{k}" for m in ("perplexity", "usage") for k in range(4)} <= set(out.metrics)

    @nnx.jit
    def probe(m, z):
        indices = m.encode(z)
        return indices, m(z), [m.decode(indices[..., :k]) for k in range(1, 5)]

    indices, eval_out, prefixes = probe(rvq, z)
    np.testing.assert_array_equal(indices, eval_out.indices)
    errors = [float(np.mean((np.asarray(p) - z) ** 2)) for p in prefixes]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.25 * float(np.mean(z**2))
    np.testing.assert_allclose(prefixes[-1], eval_out.quantized, atol=1e-5)
    with pytest.raises(ValueError, match="levels"):
        rvq.decode(indices[..., :0])


def test_rvq_quantizer_dropout_keeps_prefixes_and_straight_through():
    rvq = ResidualVectorQuantizer(3, 8, 2, rngs=nnx.Rngs(23), quantizer_dropout=1.0)
    z = normal(24, (12, 5, 2))

    @nnx.jit
    def probe(m, z, rng):
        def loss(m, z):
            out = m(z, train=True, rng=rng)
            return jnp.sum(out.quantized * 2.0), out
        (_, out), dz = nnx.value_and_grad(loss, argnums=1, has_aux=True)(m, z)
        return out, dz, [m.decode(out.indices[..., :k]) for k in (1, 2, 3)], m(z)

    out, dz, prefixes, eval_out = probe(rvq, z, jax.random.key(25))
    np.testing.assert_allclose(dz, 2.0, rtol=1e-5)  # straight-through over the kept levels
    kept = []
    for b in range(12):
        matches = [k + 1 for k in range(3) if np.allclose(out.quantized[b], prefixes[k][b], atol=1e-5)]
        assert matches, f"example {b} is not a prefix reconstruction"
        kept.append(matches[0])
    assert len(set(kept)) >= 2
    np.testing.assert_allclose(eval_out.quantized, prefixes[2], atol=1e-5)  # no dropout in eval
    with pytest.raises(ValueError, match="rng"):
        rvq(z, train=True)


# -------------------------------------------------------------------------------- metrics and errors
@pytest.mark.parametrize("codebook_size", [8, 1 << 20])  # histogram and sort-based paths
def test_usage_metrics_on_known_inputs(codebook_size):
    @jax.jit
    def probe(same, uniform, skewed):
        return [code_usage_metrics(x, codebook_size) for x in (same, uniform, skewed)]

    same, uniform, skewed = probe(np.full((4, 6), 3, np.int32), np.tile(np.arange(8, dtype=np.int32), 5),
                                  np.array([0, 0, 0, 1], np.int32))
    assert float(same["perplexity"]) == pytest.approx(1.0)
    assert float(same["usage"]) == pytest.approx(1 / codebook_size)
    assert float(uniform["perplexity"]) == pytest.approx(8.0, rel=1e-5)
    assert float(uniform["usage"]) == pytest.approx(8 / codebook_size)
    p = np.array([0.75, 0.25])
    assert float(skewed["perplexity"]) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-5)
    assert float(skewed["usage"]) == pytest.approx(2 / codebook_size)


_SHARDED_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    import jax, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from flax import nnx
    from mgt.tokenizers.quantizers import VectorQuantizer
    assert jax.device_count() == 8
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    sharded = VectorQuantizer(16, 4, rngs=nnx.Rngs(0), use_ema=True, entropy_cost=0.1)
    single = nnx.clone(sharded)
    z = np.random.default_rng(0).normal(size=(8, 10, 4)).astype(np.float32)
    z[:2] += 3.0  # the first device's shard uses other codes than the rest
    step = nnx.jit(lambda m, z: m(z, train=True))
    with jax.set_mesh(mesh):
        out = step(sharded, jax.device_put(z, NamedSharding(mesh, P(("data", "fsdp")))))
    ref = step(single, z)
    for name in ("perplexity", "usage"):
        np.testing.assert_allclose(out.metrics[name], ref.metrics[name], rtol=1e-6)
    np.testing.assert_allclose(out.losses["entropy"], ref.losses["entropy"], rtol=1e-5)
    np.testing.assert_allclose(sharded.codebook[...], single.codebook[...], atol=1e-6)
    print("OK", float(out.metrics["perplexity"]))
""")


@pytest.mark.multidevice
def test_vq_metrics_and_ema_are_global_over_a_sharded_batch():
    """Histograms, entropy and EMA statistics reduce over the whole batch on 8 fake devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], capture_output=True, text=True,
                            env=env, timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_constructor_and_input_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"levels\[1\]"):
        FiniteScalarQuantizer((5, 1))
    with pytest.raises(ValueError, match="rngs"):
        FiniteScalarQuantizer((5, 5), dim=8)
    with pytest.raises(ValueError, match="codebook_size"):
        VectorQuantizer(1, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="ema_decay"):
        VectorQuantizer(8, 4, rngs=nnx.Rngs(0), ema_decay=1.0)
    with pytest.raises(ValueError, match="num_bits"):
        LookupFreeQuantizer(0)
    with pytest.raises(ValueError, match="num_groups"):
        LookupFreeQuantizer(4, num_groups=5)
    with pytest.raises(ValueError, match="quantizer_dropout"):
        ResidualVectorQuantizer(2, 8, 4, rngs=nnx.Rngs(0), quantizer_dropout=1.5)
    with pytest.raises(ValueError, match="dim=4"):
        VectorQuantizer(8, 4, rngs=nnx.Rngs(0)).encode(np.zeros((2, 3), np.float32))


def test_quantizer_graph_definitions_are_hashable():
    """A tokenizer's graph definition is a static jit argument (mgt.GenerationPipeline): every quantizer's
    static attributes must hash (FSQ kept its per-channel constants in a dict, which does not)."""
    from flax import nnx

    from mgt.tokenizers import FiniteScalarQuantizer, LookupFreeQuantizer, ResidualVectorQuantizer, VectorQuantizer

    rngs = nnx.Rngs(0)
    for q in (FiniteScalarQuantizer((5, 5, 5)), FiniteScalarQuantizer((8, 5), dim=4, rngs=rngs),
              VectorQuantizer(8, 4, rngs=rngs), LookupFreeQuantizer(3, rngs=rngs),
              ResidualVectorQuantizer(2, 8, 4, rngs=rngs)):
        hash(nnx.graphdef(q))


def test_l2_normalize_has_finite_gradients_at_zero():
    """Silent audio through a bias-free codec gives exactly zero latents: the gradient must stay finite."""
    from mgt.tokenizers.quantizers.base import l2_normalize

    x = jnp.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    np.testing.assert_allclose(np.asarray(l2_normalize(x))[1], [0.6, 0.8, 0.0], rtol=1e-6)
    grad = jax.grad(lambda v: l2_normalize(v).sum())(x)
    assert np.isfinite(np.asarray(grad)).all()
