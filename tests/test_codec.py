"""The DAC-style audio codec (`mgt.tokenizers.codec`): shapes, levels, errors, causality, streaming,
training losses and gradients, quantizer dropout, layer variants, registration.

Tiny models (strides (2, 2), width 4) and 64-sample clips; the compiled encode / decode / training
functions are shared through module-scoped fixtures, so each shape compiles once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mgt.tokenizers import base
from mgt.tokenizers.codec import AudioCodec, AudioCodecConfig
from mgt.tokenizers.codec_layers import Activation, Conv1d, ConvTranspose1d, sin_squared, snake
from mgt.tokens import TokenSpec

TINY = dict(channels=4, decoder_channels=16, strides=(2, 2), num_levels=3, codebook_size=16, codebook_dim=4,
            sample_rate=16000, quantizer_dropout=0.0)
SAMPLES, HOP = 64, 4
FRAMES = SAMPLES // HOP


@pytest.fixture(scope="module")
def causal():
    return AudioCodec(causal=True, rngs=nnx.Rngs(0), **TINY)


@pytest.fixture(scope="module")
def noncausal():
    return AudioCodec(causal=False, rngs=nnx.Rngs(1), **TINY)


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLES) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)[None] + 0.1 * rng.standard_normal((2, SAMPLES))
    return jnp.asarray(tone, jnp.float32)


@pytest.fixture(scope="module")
def fns():
    """Compiled functions of a codec (`nnx.jit`: one compile per codec structure and input shape)."""
    return dict(
        encode=nnx.jit(lambda m, x: m.encode(x)),
        decode=nnx.jit(lambda m, t: m.decode(t)),
        # encoder → decoder without quantization: sees every dependency of the output on the input
        continuous=nnx.jit(lambda m, x: m.decode_codes(m.encode_latents(x))),
        train=nnx.jit(lambda m, x, rng: m.training_losses(x, rng=rng)),
        train_no_rng=nnx.jit(lambda m, x: m.training_losses(x)),
    )


# ---- shapes, levels, errors ------------------------------------------------------------------------
def test_shapes_dtypes_and_token_spec(causal, audio, fns):
    tokens = fns["encode"](causal, audio)
    assert tokens.shape == (2, FRAMES, 3) and tokens.dtype == jnp.int32
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 16
    out = fns["decode"](causal, tokens)
    assert out.shape == (2, SAMPLES) and out.dtype == jnp.float32
    assert float(jnp.abs(out).max()) <= 1.0  # tanh output
    assert causal.token_spec((SAMPLES,)) == TokenSpec(grid=(FRAMES,), codebook_size=16, num_levels=3)
    assert causal.hop_length == HOP and causal.codebook_size == 16 and causal.num_levels == 3
    assert causal.frame_rate() == 4000.0 and causal.frame_rate(8000) == 2000.0
    assert isinstance(causal, base.TrainableTokenizer)


def test_fewer_levels_decode_a_coarser_version(causal, audio, fns):
    tokens = fns["encode"](causal, audio)
    full = fns["decode"](causal, tokens)
    coarse = fns["decode"](causal, tokens[..., :1])
    assert coarse.shape == full.shape
    assert float(jnp.abs(coarse - full).max()) > 1e-4  # the other levels contribute
    # `[B, F]` tokens are one level
    np.testing.assert_allclose(fns["decode"](causal, tokens[..., 0]), coarse, atol=1e-5)


def test_single_level_codec_uses_the_plain_grid_layout(audio, fns):
    model = AudioCodec(rngs=nnx.Rngs(0), **dict(TINY, num_levels=1))
    tokens = fns["encode"](model, audio[:1])
    assert tokens.shape == (1, FRAMES)
    assert model.token_spec((SAMPLES,)).example_shape == (FRAMES,)


def test_bad_inputs_raise_clear_errors(causal, noncausal, audio):
    with pytest.raises(ValueError, match=r"63 samples .*hop length 4"):
        causal.encode(jnp.zeros((2, 63)))
    with pytest.raises(ValueError, match=r"hop length 4"):
        causal.token_spec((30,))
    with pytest.raises(ValueError, match=r"mono audio \[batch, samples\]"):
        causal.encode(jnp.zeros((2, SAMPLES, 1)))
    with pytest.raises(ValueError, match=r"input_shape must be \(num_samples,\)"):
        causal.token_spec((SAMPLES, 1))
    tokens = np.zeros((2, FRAMES, 4), np.int32)
    with pytest.raises(ValueError, match=r"1\.\.3 levels .*\(2, 16, 4\)"):
        causal.decode(tokens)
    with pytest.raises(ValueError, match=r"1\.\.3 levels .*\(2, 16, 0\)"):
        causal.decode(tokens[..., :0])
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        causal.decode(tokens[..., :3] + 16)
    with pytest.raises(ValueError, match="integer"):
        causal.decode(tokens[..., :3].astype(np.float32))
    with pytest.raises(ValueError, match="streaming decode needs a causal codec"):
        noncausal.init_decode_state(2)
    with pytest.raises(ValueError, match="streaming decode needs a causal codec"):
        noncausal.decode_stream([tokens[..., :3]])
    with pytest.raises(ValueError, match="streaming encode needs a causal codec"):
        noncausal.encode_chunk(None, audio)


def test_config_validation():
    with pytest.raises(ValueError, match=r"activation must be one of \['snake', 'elu'\], got 'relu'"):
        AudioCodecConfig(activation="relu")
    with pytest.raises(ValueError, match=r"decoder_channels=6 must be divisible by 2\*\*len\(strides\) = 4"):
        AudioCodecConfig(decoder_channels=6, strides=(2, 2))
    with pytest.raises(ValueError, match="unknown AudioCodec option"):
        AudioCodec(hop=4)
    assert AudioCodecConfig().hop_length == 512 and AudioCodecConfig().latent_size == 1024  # DAC 44.1 kHz
    assert AudioCodecConfig(channels=16, strides=(2, 4, 5, 8)).latent_size == 256


# ---- causality and streaming -----------------------------------------------------------------------
def test_causal_outputs_ignore_the_future_and_noncausal_ones_do_not(causal, noncausal, audio, fns):
    cut = 8 * HOP  # frame boundary: causality holds up to the frame alignment
    future = audio.at[:, cut:].set(jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, SAMPLES - cut))))

    tokens, tokens_f = fns["encode"](causal, audio), fns["encode"](causal, future)
    np.testing.assert_array_equal(tokens[:, :8], tokens_f[:, :8])
    np.testing.assert_array_equal(fns["decode"](causal, tokens)[:, :cut], fns["decode"](causal, tokens_f)[:, :cut])
    out, out_f = fns["continuous"](causal, audio), fns["continuous"](causal, future)
    np.testing.assert_allclose(out[:, :cut], out_f[:, :cut], atol=1e-6)
    assert float(jnp.abs(out[:, cut:] - out_f[:, cut:]).max()) > 1e-4

    out, out_f = fns["continuous"](noncausal, audio), fns["continuous"](noncausal, future)
    assert float(jnp.abs(out[:, :cut] - out_f[:, :cut]).max()) > 1e-4


@pytest.mark.parametrize("chunks,levels", [((1, 3, 2, 5, 5), 3), ((4, 4, 4, 4), 2)])
def test_streaming_decode_equals_whole_decode(causal, audio, fns, chunks, levels):
    tokens = fns["encode"](causal, audio)[..., :levels]
    whole = np.asarray(fns["decode"](causal, tokens))
    bounds = np.cumsum((0,) + chunks)
    parts = list(causal.decode_stream([tokens[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]))
    assert [p.shape[1] for p in parts] == [n * HOP for n in chunks]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-5)


def test_streaming_encode_equals_whole_encode(causal, audio, fns):
    parts = list(causal.encode_stream([audio[:, a:b] for a, b in ((0, 8), (8, 20), (20, SAMPLES))]))
    assert [p.shape for p in parts] == [(2, 2, 3), (2, 3, 3), (2, 11, 3)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), fns["encode"](causal, audio))


# ---- training ----------------------------------------------------------------------------------------
def test_training_losses_and_gradients_are_finite(causal, audio):
    graphdef, params, rest = nnx.split(causal, nnx.Param, ...)

    @jax.jit
    def loss_and_grads(params, rest, x, key):
        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest, copy=True)
            recon, losses, metrics = model.training_losses(x, rng=key)
            return sum(losses.values()), (recon, losses, metrics)
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (total, (recon, losses, metrics)), grads = loss_and_grads(params, rest, audio, jax.random.key(0))
    assert recon.shape == audio.shape and recon.dtype == jnp.float32
    assert set(losses) == {"reconstruction", "quantizer/commitment", "quantizer/codebook"}
    assert {"mse", "quantizer/perplexity_0", "quantizer/usage_2"} <= set(metrics)
    np.testing.assert_allclose(losses["reconstruction"], jnp.mean(jnp.abs(recon - audio)), rtol=1e-5)  # L1
    assert all(np.isfinite(float(v)) for v in list(losses.values()) + list(metrics.values()))
    flat = dict(nnx.to_flat_state(grads))
    assert all(bool(jnp.all(jnp.isfinite(v.get_value()))) for v in flat.values())
    nonzero = {"/".join(map(str, p)) for p, v in flat.items() if float(jnp.abs(v.get_value()).max()) > 0}
    for part in ("encoder/layers/0/kernel", "encoder/layers/0/scale", "decoder/layers/0/kernel",
                 "encoder/layers/1/layers/0/layers/0/alpha", "quantizer/levels/0/codebook",
                 "quantizer/levels/0/in_proj/kernel"):
        assert part in nonzero, part


def test_quantizer_dropout_needs_rng_and_a_positive_rate(causal, audio, fns):
    # the shared models have quantizer_dropout=0: a key changes nothing
    with_key = fns["train"](causal, audio, jax.random.key(0))[0]
    np.testing.assert_allclose(with_key, fns["train_no_rng"](causal, audio)[0], atol=1e-6)

    dropping = AudioCodec(causal=True, rngs=nnx.Rngs(0), **dict(TINY, quantizer_dropout=1.0))
    plain = fns["train_no_rng"](dropping, audio)[0]  # no key: every level, no error
    np.testing.assert_allclose(plain, with_key, atol=1e-6)  # same weights as `causal` (same seed)
    changed = [float(jnp.abs(fns["train"](dropping, audio, jax.random.key(s))[0] - plain).max()) for s in range(4)]
    assert max(changed) > 1e-4, changed


# ---- layers and variants -------------------------------------------------------------------------------
def test_sin_squared_and_snake_match_the_reference():
    y = jnp.linspace(-1000.0, 1000.0, 200_001)
    np.testing.assert_allclose(sin_squared(y), jnp.sin(y) ** 2, atol=1e-6)
    x, alpha = jnp.linspace(-3.0, 3.0, 64).reshape(8, 8), jnp.linspace(0.5, 2.0, 8)
    reference = lambda x, alpha: x + jnp.sin(alpha * x) ** 2 / (alpha + 1e-9)  # noqa: E731
    np.testing.assert_allclose(snake(x, alpha), reference(x, alpha), atol=1e-6)
    # the hand-written gradient (x and alpha) against autodiff of the reference
    ct = jnp.cos(x)
    grads = jax.vjp(snake, x, alpha)[1](ct)
    expected = jax.vjp(reference, x, alpha)[1](ct)
    np.testing.assert_allclose(grads[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(grads[1], expected[1], rtol=1e-4, atol=1e-5)
    assert snake(x.astype(jnp.bfloat16), alpha).dtype == jnp.bfloat16


@pytest.mark.parametrize("causal_layer", [False, True])
@pytest.mark.parametrize("stride", [2, 3])
def test_upsampling_is_a_transposed_convolution(stride, causal_layer):
    layer = ConvTranspose1d(3, 2, stride, causal=causal_layer, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    w, length = np.asarray(layer.kernel_value()), 5 * stride
    full = np.zeros((2, 6 * stride, 2), np.float32)  # y[i·s + m] += x[i] · w[m] (PyTorch's ConvTranspose1d)
    for i in range(5):
        for m in range(2 * stride):
            full[:, i * stride + m] += x[:, i] @ w[m]
    start = 0 if causal_layer else (stride + 1) // 2  # causal: trim the right overlap; else DAC's centring
    expected = full[:, start:start + length] + np.asarray(layer.bias[...])
    np.testing.assert_allclose(layer(jnp.asarray(x)), expected, atol=1e-5)


def test_weight_norm_makes_the_output_invariant_to_the_kernel_scale():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 12, 3)), jnp.float32)
    for weight_norm in (True, False):
        conv = Conv1d(3, 4, 7, dilation=2, weight_norm=weight_norm, rngs=nnx.Rngs(0))
        before = conv(x)
        conv.kernel.set_value(3.0 * conv.kernel[...])
        changed = float(jnp.abs(conv(x) - before).max())
        assert (changed < 1e-5) if weight_norm else (changed > 1e-3)
        assert (conv.scale is not None) == weight_norm


@pytest.mark.parametrize("activation,weight_norm", [("elu", False), ("snake", False), ("elu", True)])
def test_variants_build_and_run(audio, fns, activation, weight_norm):
    model = AudioCodec(activation=activation, weight_norm=weight_norm, rngs=nnx.Rngs(0), **TINY)
    out = fns["continuous"](model, audio)
    assert out.shape == audio.shape and bool(jnp.all(jnp.isfinite(out)))
    params = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert any(p.endswith("alpha") for p in params) == (activation == "snake")
    assert any(p.endswith("scale") for p in params) == weight_norm
    assert isinstance(model.encoder.layers[-2], Activation)


def test_bfloat16_compute_keeps_float32_parameters_and_outputs(audio):
    model = AudioCodec(dtype="bfloat16", rngs=nnx.Rngs(0), **TINY)
    assert model.encoder.layers[0].kernel[...].dtype == jnp.float32
    z, out = nnx.jit(lambda m, x: (m.encode_latents(x), m.decode_codes(m.encode_latents(x))))(model, audio)
    assert z.dtype == jnp.float32 and z.shape == (2, FRAMES, 16)
    assert out.dtype == jnp.float32 and out.shape == audio.shape


# ---- registry --------------------------------------------------------------------------------------------
def test_registered_as_codec():
    model = base.make_tokenizer("codec", rngs=nnx.Rngs(0), **TINY)
    assert isinstance(model, AudioCodec) and model.config.strides == (2, 2)
    assert "codec" in base.registered_tokenizers()
    assert base.resolve_tokenizer("codec") is AudioCodec
