"""Convolutions as matmuls over gathered taps (the CPU path of the 3D tokenizer's convolutions)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mgt.tokenizers.conv_matmul import conv_general_dilated


@pytest.mark.parametrize("shape, window, padding", [
    ((2, 4, 6, 5, 3), (3, 3, 3), ((2, 0), (1, 1), (1, 1))),  # the causal 3D tokenizer's: time padded in front
    ((2, 4, 6, 5, 3), (1, 1, 1), "SAME"),
    ((2, 7, 6, 4), (4, 3), "SAME"),  # an even window: 'SAME' pads one more after
    ((2, 9, 3), (5,), "VALID"),
])
def test_matches_xla_convolution_and_its_gradients(shape, window, padding):
    plain, gathered = (nnx.Conv(shape[-1], 5, kernel_size=window, padding=padding, rngs=nnx.Rngs(0), **kw)
                       for kw in ({}, {"conv_general_dilated": conv_general_dilated}))
    x = jax.random.normal(jax.random.key(1), shape)
    weights = jax.random.normal(jax.random.key(2), plain(x).shape)

    def loss(model, x):
        return (model(x) * weights).sum()

    (gp, gx_p), (gg, gx_g) = (nnx.grad(loss, argnums=(0, 1))(m, x) for m in (plain, gathered))
    np.testing.assert_allclose(gathered(x), plain(x), atol=1e-5)
    np.testing.assert_allclose(gx_g, gx_p, atol=1e-4)
    np.testing.assert_allclose(gg["kernel"][...], gp["kernel"][...], rtol=1e-4, atol=1e-4)
    # on a CPU no XLA convolution is left, forward or backward
    assert "conv_general_dilated" not in str(jax.make_jaxpr(nnx.grad(loss, argnums=(0, 1)))(gathered, x))


def test_falls_back_to_xla_for_strides_and_large_inputs(monkeypatch):
    from mgt.tokenizers import conv_matmul

    conv = nnx.Conv(3, 4, kernel_size=(3, 3), strides=(2, 2), padding="SAME", rngs=nnx.Rngs(0),
                    conv_general_dilated=conv_general_dilated)
    x = jnp.ones((1, 8, 8, 3))
    assert "conv_general_dilated" in str(jax.make_jaxpr(conv)(x))
    conv = nnx.Conv(3, 4, kernel_size=(3, 3), padding="SAME", rngs=nnx.Rngs(0),
                    conv_general_dilated=conv_general_dilated)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(conv)(x))
    monkeypatch.setattr(conv_matmul, "MAX_GATHER_BYTES", 1000)  # 1 × 8 × 8 × 9 taps × 3 × 4 bytes > 1000
    assert "conv_general_dilated" in str(jax.make_jaxpr(lambda x: conv(x))(x))  # a new function: traced again


def test_large_batches_run_in_blocks_with_the_same_values_and_gradients(monkeypatch):
    """Above `BLOCK_GATHER_BYTES` of taps the batch runs in blocks (`lax.map`); forward and both gradients
    still equal XLA's convolution's, the last block padded."""
    from mgt.tokenizers import conv_matmul

    # 5 × 2 × 4 × 4 positions × 27 taps × 3 channels × 4 bytes = 52 KB: blocks of 2 examples (three blocks)
    monkeypatch.setattr(conv_matmul, "BLOCK_GATHER_BYTES", 25_000)
    plain, gathered = (nnx.Conv(3, 4, kernel_size=(3, 3, 3), padding="SAME", rngs=nnx.Rngs(0), **kw)
                       for kw in ({}, {"conv_general_dilated": conv_general_dilated}))
    x = jax.random.normal(jax.random.key(1), (5, 2, 4, 4, 3))
    weights = jax.random.normal(jax.random.key(2), (5, 2, 4, 4, 4))

    def loss(model, x):
        return (model(x) * weights).sum()

    jaxpr = str(jax.make_jaxpr(lambda m, x: loss(m, x))(gathered, x))
    assert "scan" in jaxpr and "conv_general_dilated" not in jaxpr
    (gp, gx_p), (gg, gx_g) = (jax.jit(nnx.grad(loss, argnums=(0, 1)))(m, x) for m in (plain, gathered))
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(gathered, x), plain(x), atol=1e-5)
    np.testing.assert_allclose(gx_g, gx_p, atol=1e-4)
    np.testing.assert_allclose(gg["kernel"][...], gp["kernel"][...], rtol=1e-4, atol=1e-4)
