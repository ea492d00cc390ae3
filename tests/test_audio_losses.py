"""The audio codec's objective (mgt.tokenizers.audio_losses): spectral losses against librosa, the MPD and
MS-STFT discriminators, the DAC objective under jit as the tokenizer stage calls it, and the metrics.

Tiny shapes (B = 2, S = 4096, discriminators 4–8 channels wide); three compiled functions shared through
module-scoped fixtures.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from mgt.tokenizers import audio_losses as al

SAMPLE_RATE = 16000
LENGTH = 4096
TINY = dict(sample_rate=SAMPLE_RATE, mel_window_lengths=(64, 256), mel_bins=(10, 20), stft_weight=1.0,
            stft_window_lengths=(256,), adversarial_warmup_steps=5, discriminator_channels=4,
            discriminator_max_channels=8, discriminator_periods=(2, 3), discriminator_window_lengths=(256, 128))


def train_config(**overrides) -> ml_collections.ConfigDict:
    fields = dict(al.DEFAULT_TRAIN_FIELDS, **TINY)
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


@pytest.fixture(scope="module")
def pair():
    """A real clip and a perturbed copy, float32 [2, LENGTH] in [-1, 1]."""
    rng = np.random.default_rng(0)
    t = np.arange(LENGTH) / SAMPLE_RATE
    real = 0.5 * np.sin(2 * np.pi * np.array([[220.0], [440.0]]) * t) + 0.05 * rng.standard_normal((2, LENGTH))
    fake = real + 0.1 * rng.standard_normal((2, LENGTH))
    return real.astype(np.float32), np.clip(fake, -1, 1).astype(np.float32)


# ---- spectral building blocks --------------------------------------------------------------------
def test_mel_filterbank_is_librosas_and_cached():
    bank = al.mel_filterbank(SAMPLE_RATE, 64, 10)
    assert bank.shape == (33, 10) and bank.dtype == np.float32 and not bank.flags.writeable
    np.testing.assert_allclose(bank, librosa.filters.mel(sr=SAMPLE_RATE, n_fft=64, n_mels=10).T, rtol=1e-6)
    assert al.mel_filterbank(SAMPLE_RATE, 64, 10) is bank


@pytest.mark.parametrize("window, hop", [(64, 16), (100, 30)])  # the reshape and the gather framing
def test_stft_matches_librosa(window, hop):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 1000)).astype(np.float32)
    ours = np.asarray(al.stft(x, window, hop))
    theirs = librosa.stft(x, n_fft=window, hop_length=hop, center=True, pad_mode="reflect").swapaxes(-1, -2)
    assert ours.dtype == np.complex64 and ours.shape == theirs.shape == (2, 1 + 1000 // hop, window // 2 + 1)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_scales_longer_than_the_clip_are_skipped():
    assert al.usable_scales(300, (32, 256, 512), (5, 40, 80)) == [(32, 5), (256, 40)]
    assert al.usable_scales(300, (2048, 512, 256)) == [256]
    with pytest.raises(ValueError, match="exceed the clip length 100"):
        al.usable_scales(100, (128, 256))
    with pytest.raises(ValueError, match="one entry per window"):
        al.usable_scales(300, (32, 64), (5,))


@pytest.fixture(scope="module")
def spectral_losses():
    """jit: (x, y) → (mel loss with DAC's seven scales, STFT loss), and their gradients with respect to x."""
    def losses(x, y):
        return al.multiscale_mel_loss(x, y, SAMPLE_RATE), al.multiscale_stft_loss(x, y)

    def grads(x, y):
        return jax.grad(lambda x: sum(losses(x, y)))(x)

    return jax.jit(lambda x, y: (losses(x, y), grads(x, y)))


def test_spectral_losses_zero_on_identical_inputs_positive_otherwise(spectral_losses, pair):
    real, fake = pair
    (mel, stft_loss), grad = spectral_losses(real, real)
    # 0 up to rounding: both signals share one batched spectrogram, whose rows XLA may sum in different orders
    assert abs(float(mel)) < 1e-6 and abs(float(stft_loss)) < 1e-6 and np.isfinite(np.asarray(grad)).all()
    (mel, stft_loss), grad = spectral_losses(fake, real)
    assert 0 < float(mel) < np.inf and 0 < float(stft_loss) < np.inf
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0
    # the float64 librosa metrics compute the same quantities per example
    np.testing.assert_allclose(float(mel), al.mel_distance(real, fake, SAMPLE_RATE).mean(), rtol=1e-3)
    np.testing.assert_allclose(float(stft_loss), al.stft_distance(real, fake).mean(), rtol=1e-3)


def test_spectral_losses_are_finite_on_silence(spectral_losses):
    silence = np.zeros((2, LENGTH), np.float32)
    (mel, stft_loss), grad = spectral_losses(silence, silence)
    assert float(mel) == 0.0 and float(stft_loss) == 0.0 and np.isfinite(np.asarray(grad)).all()


def test_si_sdr_is_scale_invariant(pair):
    real, fake = pair
    assert al.si_sdr(real[0], real[0]) > 100
    base = al.si_sdr(real, fake)
    assert base.shape == (2,) and np.all(base < 40)
    np.testing.assert_allclose(al.si_sdr(real, 3.0 * fake), base, atol=1e-6)
    np.testing.assert_allclose(al.si_sdr(real, 0.1 * fake), base, atol=1e-6)
    assert al.si_sdr(real[0], fake[0] + 0.5 * real[1]) < base[0]
    with pytest.raises(ValueError, match="must both be"):
        al.si_sdr(real, fake[:, :100])


# ---- discriminators ------------------------------------------------------------------------------
def _ceil_div(a, b):
    return -(-a // b)


def test_discriminator_outputs_and_shapes():
    disc = al.AudioDiscriminator(periods=(2, 3), window_lengths=(256,), channels=4, max_channels=8, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(disc)
    outputs = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                             jax.ShapeDtypeStruct((2, LENGTH), jnp.float32))
    assert len(outputs) == 3  # two periods, one STFT window
    for (logits, features), period in zip(outputs[:2], (2, 3)):
        rows = _ceil_div(LENGTH, period)
        assert [f.shape for f in features][0] == (2, _ceil_div(rows, 3), period, 4)
        assert [f.shape[-1] for f in features] == [4, 8, 8, 8, 8]
        for _ in range(4):
            rows = _ceil_div(rows, 3)
        assert logits.shape == (2, rows, period, 1) and logits.dtype == jnp.float32
    logits, features = outputs[2]
    bands = [(int(lo * 129), int(hi * 129)) for lo, hi in al.DAC_BANDS]
    bins = sum(_ceil_div(_ceil_div(_ceil_div(hi - lo, 2), 2), 2) for lo, hi in bands)
    assert len(features) == 5 * len(bands) and logits.shape == (2, 1 + LENGTH // 64, bins, 1)
    with pytest.raises(ValueError, match="expected a non-empty subset"):
        al.AudioDiscriminator(("mpd", "msd"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="empty band"):
        al.STFTDiscriminator(8, 4, rngs=nnx.Rngs(0))


# ---- the objective under jit, as the tokenizer stage calls it --------------------------------------
@pytest.fixture(scope="module")
def objective_steps():
    """The objective on tiny widths and its two jitted steps: generator terms (and their gradient with
    respect to the reconstructions), and the discriminator loss (and its gradient)."""
    objective = al.AudioCodecObjective(train_config(), (LENGTH,), seed=0)
    objective.prepare()
    disc = objective.make_discriminator(nnx.Rngs(0))
    graphdef, params = nnx.graphdef(disc), nnx.state(disc, nnx.Param)

    @jax.jit
    def generator(params, inputs, recon, step):
        def total(recon):
            d = nnx.merge(graphdef, params, copy=True)
            losses = objective.generator_losses(inputs, recon, d, step)
            return sum(losses.values()), losses
        (_, losses), grad = jax.value_and_grad(total, has_aux=True)(recon)
        return losses, grad

    @jax.jit
    def discriminator(params, inputs, fakes):
        def total(params):
            loss, extra, metrics = objective.discriminator_losses(nnx.merge(graphdef, params, copy=True), inputs,
                                                                  fakes, objective.init_state())
            return loss, (extra, metrics)
        (loss, (extra, metrics)), grads = jax.value_and_grad(total, has_aux=True)(params)
        return loss, extra, metrics, grads

    return objective, params, generator, discriminator


def test_generator_losses_under_jit(objective_steps, pair):
    objective, params, generator, _ = objective_steps
    real, fake = pair
    assert objective.has_discriminator and objective.init_state() == {}
    losses, grad = generator(params, real, fake, jnp.asarray(10))
    assert set(losses) == {"mel", "stft", "adversarial", "feature_matching"}
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in losses.values())
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0
    warming, _ = generator(params, real, fake, jnp.asarray(0))  # adversarial_warmup_steps = 5
    assert float(warming["adversarial"]) == 0.0 and float(warming["feature_matching"]) == 0.0
    np.testing.assert_allclose(float(warming["mel"]), float(losses["mel"]), rtol=1e-6)


def test_one_discriminator_step_lowers_its_loss(objective_steps, pair):
    _, params, _, discriminator = objective_steps
    real, fake = pair
    loss, extra, metrics, grads = discriminator(params, real, fake)
    assert extra == {} and set(metrics) == {"real_logit", "fake_logit"}
    assert np.isfinite(float(loss)) and all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    tx = optax.adam(1e-3)
    updates, _ = tx.update(grads, tx.init(params), params)
    new_loss, *_ = discriminator(optax.apply_updates(params, updates), real, fake)
    assert float(new_loss) < float(loss)


def test_no_discriminator_without_adversarial_weight():
    objective = al.AudioCodecObjective(train_config(adversarial_weight=0.0, discriminator_window_lengths=(8192,)),
                                       (LENGTH,), seed=0)
    assert not objective.has_discriminator


@pytest.mark.parametrize("field, value, expected", [
    ("sample_rate", 0, "sample rate in Hz"),
    ("sample_rate", None, "sample rate in Hz"),
    ("mel_weight", -1.0, ">= 0"),
    ("adversarial_warmup_steps", -2, "an integer >= 0"),
    ("mel_bins", (5, 10, 20), "a tuple of 2 integers"),
    ("mel_window_lengths", (8192, 16384), "clip length 4096"),
    ("discriminator", ("mpd", "msd"), "distinct"),
    ("discriminator", "", "distinct"),
    ("discriminator_channels", 0, "an integer >= 1"),
    ("discriminator_periods", (2, 4096), "periods < the clip length"),
    ("discriminator_window_lengths", (8192,), "windows <= the clip length"),
    ("discriminator_bands", ((0.0, 0.01), (0.01, 1.0)), "empty band"),
    ("discriminator_bands", ((0.5, 0.2),), "0 <= low < high <= 1"),
    ("r1_weight", 10.0, "no such term"),
])
def test_bad_fields_raise_naming_the_field(field, value, expected):
    with pytest.raises(ValueError, match=rf"config\.tokenizer_train\.{field}=.*{expected}"):
        al.AudioCodecObjective(train_config(**{field: value}), (LENGTH,), seed=0)


def test_input_shape_must_be_samples():
    with pytest.raises(ValueError, match=r"\(samples,\)"):
        al.AudioCodecObjective(train_config(), (LENGTH, 1), seed=0)
