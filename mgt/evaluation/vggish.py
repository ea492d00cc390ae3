"""VGGish (Hershey et al. 2017) in Flax NNX: the audio embedding behind the Fréchet Audio Distance.

FAD (Kilgour et al. 2019) cuts each clip into non-overlapping 0.96 s examples of 96 × 64 log-mel
frames, embeds every example with VGGish (128 features) and takes the Fréchet distance between the
real and the generated sets of per-example embeddings. This module is that embedding as the PyTorch port
most FAD tools use computes it, torchvggish (github.com/harritaylor/torchvggish) — its front end exactly,
its network to float32 rounding (tests/data/vggish/):

- `log_mel_examples` is `vggish_input.waveform_to_examples` in numpy (float64 inside): 25 ms
  periodic-Hann windows every 10 ms at 16 kHz, |rfft| of size 512, VGGish's own HTK-style mel matrix
  (64 bands, 125–7500 Hz, DC bin zeroed), log(mel + 0.01), 96-frame examples without overlap.
- `VGGish` is torchvggish's `VGG`: six 3×3 convolutions (64, 128, 256, 256, 512, 512; bias, ReLU)
  with four 2×2 max pools, flattened as (frames, bands, channels) — torchvggish transposes its NCHW
  features to NHWC before flattening, which is this module's natural layout — then three fully
  connected layers 4096, 4096, 128, each followed by a ReLU (torchvggish's `embeddings` ends with
  one, so the embeddings are non-negative).
- The PCA / whitening / 8-bit quantisation that turns these into AudioSet's released features is not
  applied: FAD uses the raw embeddings. `postprocess_pca` offers it for anyone who needs it.

Weights come from torchvggish's `vggish-10086976.pth` (a state dict of `VGG`): convert it once with
`convert_vggish(src, out)` and load the result with `load_vggish(out)`:

    model = load_vggish("vggish.safetensors")
    embeddings = embed_audio(model, audio, sample_rate)     # audio [N, S] float32 → [M, 128]
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["SAMPLE_RATE", "EXAMPLE_FRAMES", "MEL_BANDS", "EMBEDDING_SIZE", "MIN_SAMPLES", "log_mel_examples", "VGGish",
           "embed_examples", "embed_audio", "postprocess_pca", "vggish_arrays_from_torch", "convert_vggish",
           "load_vggish", "random_vggish"]

# vggish_params.py
SAMPLE_RATE = 16000
EXAMPLE_FRAMES = 96            # 0.96 s of 10 ms frames per example, examples do not overlap
MEL_BANDS = 64
EMBEDDING_SIZE = 128
_WINDOW = 400                  # round(16000 · 0.025)
_HOP = 160                     # round(16000 · 0.010)
_FFT = 512                     # the next power of two above the window
_MEL_LOW_HZ, _MEL_HIGH_HZ = 125.0, 7500.0
_LOG_OFFSET = 0.01
# the fewest samples that give one whole example: 96 frames of 400 samples, 160 apart
MIN_SAMPLES = _WINDOW + (EXAMPLE_FRAMES - 1) * _HOP
_CLIPS_AT_ONCE = 16            # clips per front-end pass (bounds its float64 temporaries)

# (our layer, torchvggish's Sequential index): features.<i> are convolutions, embeddings.<i> linears
_CONVS = (("conv1", 0, 1, 64), ("conv2", 3, 64, 128), ("conv3_1", 6, 128, 256), ("conv3_2", 8, 256, 256),
          ("conv4_1", 11, 256, 512), ("conv4_2", 13, 512, 512))
_POOL_AFTER = ("conv1", "conv2", "conv3_2", "conv4_2")
_LINEARS = (("fc1_1", 0, 512 * 6 * 4, 4096), ("fc1_2", 2, 4096, 4096), ("fc2", 4, 4096, EMBEDDING_SIZE))


# ---- front end (numpy) ----------------------------------------------------------------------------
def _hertz_to_mel(hertz):
    return 1127.0 * np.log(1.0 + np.asarray(hertz, np.float64) / 700.0)


def _mel_matrix() -> np.ndarray:
    """`mel_features.spectrogram_to_mel_matrix` for VGGish's settings: float64 `[257, 64]`.

    Triangles that are linear in HTK mel (not librosa's Slaney filters, and no area normalisation),
    edges spaced evenly in mel from 125 to 7500 Hz; the DC bin gets no weight, as in HTK.
    """
    bins_mel = _hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, _FFT // 2 + 1))[:, None]
    edges = np.linspace(_hertz_to_mel(_MEL_LOW_HZ), _hertz_to_mel(_MEL_HIGH_HZ), MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    matrix = np.maximum(0.0, np.minimum(rising, falling))
    matrix[0] = 0.0
    return matrix


def log_mel_examples(audio, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """VGGish's input: mono audio → float32 `[N, M_per_clip, 96, 64]` log-mel examples.

    `audio`: float `[N, S]` (N clips of equal length) or `[S]` (one clip, → `[M_per_clip, 96, 64]`),
    nominally in [-1, 1]. Audio at another rate is first resampled to 16 kHz with `librosa.resample`;
    torchvggish resamples with resampy, so only 16 kHz input is bit-comparable with it (other rates
    differ by the resamplers' small disagreement). Frames that do not fill a last whole example are
    dropped, as torchvggish does; a clip shorter than one example (`MIN_SAMPLES` = 15 600 samples,
    0.975 s at 16 kHz) is zero-padded at its end to one example, where torchvggish would fail.
    Computed in float64 (as torchvggish's numpy), returned as float32 (what its model is fed).
    """
    x = np.asarray(audio, np.float64)
    single = x.ndim == 1
    x = np.atleast_2d(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"audio must be [clips, samples] or [samples], got shape {np.shape(audio)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r}: expected a positive rate in Hz")
    if sample_rate != SAMPLE_RATE:
        import librosa  # only for other rates: importing it is slow

        x = librosa.resample(x, orig_sr=float(sample_rate), target_sr=float(SAMPLE_RATE), axis=-1)
    if x.shape[1] < MIN_SAMPLES:
        x = np.pad(x, ((0, 0), (0, MIN_SAMPLES - x.shape[1])))
    # a few clips at a time: the float64 frames and spectra are several times the audio's size
    out = np.concatenate([_log_mel(x[i:i + _CLIPS_AT_ONCE]) for i in range(0, x.shape[0], _CLIPS_AT_ONCE)])
    return out[0] if single else out


def _log_mel(x: np.ndarray) -> np.ndarray:
    """16 kHz float64 `[N, S]` (S >= MIN_SAMPLES) → float32 `[N, S_examples, 96, 64]`."""
    frames = np.lib.stride_tricks.sliding_window_view(x, _WINDOW, axis=-1)[:, ::_HOP]   # [N, F, 400]
    # periodic Hann (period 400, not np.hanning's 399), as mel_features.periodic_hann
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi / _WINDOW * np.arange(_WINDOW))
    magnitude = np.abs(np.fft.rfft(frames * window, _FFT, axis=-1))                      # [N, F, 257]
    log_mel = np.log(magnitude @ _mel_matrix() + _LOG_OFFSET)                            # [N, F, 64]
    examples = log_mel.shape[1] // EXAMPLE_FRAMES
    out = log_mel[:, :examples * EXAMPLE_FRAMES].reshape(x.shape[0], examples, EXAMPLE_FRAMES, MEL_BANDS)
    return out.astype(np.float32)


# ---- the network ----------------------------------------------------------------------------------
class VGGish(nnx.Module):
    """torchvggish's `VGG` (see the module docstring), NHWC.

    `__call__(examples float32 [B, 96, 64] log-mel) -> float32 [B, 128]` raw (non-negative) embeddings.
    Layer names follow the TensorFlow original's scopes (conv1 ... conv4_2, fc1_1, fc1_2, fc2), so the
    saved variables are `conv1.kernel` `[3, 3, 1, 64]`, ..., `fc2.bias` `[128]`.
    """

    def __init__(self, *, rngs: nnx.Rngs):
        for name, _, cin, cout in _CONVS:
            # padding 1 on a 3×3 kernel (torch) = SAME
            setattr(self, name, nnx.Conv(cin, cout, (3, 3), padding="SAME", rngs=rngs))
        for name, _, fin, fout in _LINEARS:
            setattr(self, name, nnx.Linear(fin, fout, rngs=rngs))

    def __call__(self, examples):
        x = jnp.asarray(examples, jnp.float32)
        if x.ndim != 3 or x.shape[1:] != (EXAMPLE_FRAMES, MEL_BANDS):
            raise ValueError(f"VGGish expects log-mel examples [B, {EXAMPLE_FRAMES}, {MEL_BANDS}], "
                             f"got shape {tuple(x.shape)}")
        x = x[..., None]                                          # [B, 96, 64, 1]: frames as height
        for name, *_ in _CONVS:
            x = nnx.relu(getattr(self, name)(x))
            if name in _POOL_AFTER:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)                             # [B, 6 · 4 · 512], torchvggish's order
        for name, *_ in _LINEARS:
            x = nnx.relu(getattr(self, name)(x))
        return x


@nnx.jit
def _forward(model: VGGish, examples):
    return model(examples)


def embed_examples(model: VGGish, examples, batch_size: int = 64) -> np.ndarray:
    """Embed log-mel examples float32 `[M, 96, 64]` → float32 `[M, 128]`, `batch_size` at a time.

    Every batch has one shape, min(batch_size, M) (the last is zero-padded, its padding rows dropped),
    so a long run compiles once."""
    examples = np.asarray(examples, np.float32)
    if examples.ndim != 3 or examples.shape[1:] != (EXAMPLE_FRAMES, MEL_BANDS):
        raise ValueError(f"examples must be [M, {EXAMPLE_FRAMES}, {MEL_BANDS}], got shape {examples.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
    count = examples.shape[0]
    if count == 0:
        return np.zeros((0, EMBEDDING_SIZE), np.float32)
    batch = min(int(batch_size), count)
    out = []
    for start in range(0, count, batch):
        chunk = examples[start:start + batch]
        padded = np.pad(chunk, ((0, batch - len(chunk)), (0, 0), (0, 0)))
        out.append(np.asarray(_forward(model, padded))[:len(chunk)])
    return np.concatenate(out).astype(np.float32)


def embed_audio(model: VGGish, audio, sample_rate: int, batch_size: int = 64) -> np.ndarray:
    """FAD's embeddings of a set of clips: float `[N, S]` in [-1, 1] → float32 `[M, 128]`.

    All examples (0.96 s each) of all clips, stacked clip by clip in time order (M = N · examples per
    clip); see `log_mel_examples` for resampling, the dropped tail and the zero-padding of clips shorter
    than 0.975 s to one example. No PCA postprocessing (FAD uses the raw embeddings)."""
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise ValueError(f"audio must be [clips, samples], got shape {audio.shape}")
    examples = log_mel_examples(audio, sample_rate)
    return embed_examples(model, examples.reshape(-1, EXAMPLE_FRAMES, MEL_BANDS), batch_size)


def postprocess_pca(embeddings, pca_means, pca_eigen_vectors, quantize: bool = True) -> np.ndarray:
    """torchvggish's `Postprocessor` (AudioSet's released features), not used by FAD.

    `embeddings` float `[M, 128]`; `pca_means` `[128]` (or `[128, 1]`) and `pca_eigen_vectors`
    `[128, 128]` from torchvggish's `vggish_pca_params` file. Returns float32 `[M, 128]`:
    `(e − means) @ eigen_vectorsᵀ`, and with `quantize` clipped to [-2, 2] and mapped to the integers
    0 ... 255 (as floats; rounding half to even, as torch.round)."""
    e = np.asarray(embeddings, np.float64)
    means = np.asarray(pca_means, np.float64).reshape(1, -1)
    pca = np.asarray(pca_eigen_vectors, np.float64)
    if e.ndim != 2 or e.shape[1] != EMBEDDING_SIZE or means.shape[1] != EMBEDDING_SIZE \
            or pca.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE):
        raise ValueError(f"postprocess_pca expects embeddings [M, 128], means [128], eigen vectors [128, 128], "
                         f"got {e.shape}, {np.shape(pca_means)}, {pca.shape}")
    out = (e - means) @ pca.T
    if quantize:
        out = np.round((np.clip(out, -2.0, 2.0) + 2.0) * (255.0 / 4.0))
    return out.astype(np.float32)


# ---- weights --------------------------------------------------------------------------------------
def vggish_arrays_from_torch(state: dict) -> dict[str, np.ndarray]:
    """torchvggish `VGG` state dict (`{name: array}`, numpy or anything `np.asarray` takes) → this
    module's variables `{"conv1.kernel": [3, 3, 1, 64] float32, ...}`.

    Convolution weights OIHW → HWIO, linear weights `[out, in]` → `[in, out]`; biases as they are. The
    first linear layer needs no permutation: torchvggish flattens NHWC features, as this module does.
    ValueError naming the keys when one is missing or unexpected, or a shape does not fit."""
    expected = {}
    for name, index, cin, cout in _CONVS:
        expected[f"features.{index}.weight"] = (f"{name}.kernel", (cout, cin, 3, 3), (2, 3, 1, 0))
        expected[f"features.{index}.bias"] = (f"{name}.bias", (cout,), None)
    for name, index, fin, fout in _LINEARS:
        expected[f"embeddings.{index}.weight"] = (f"{name}.kernel", (fout, fin), (1, 0))
        expected[f"embeddings.{index}.bias"] = (f"{name}.bias", (fout,), None)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"not a torchvggish VGG state dict: missing {missing}, unexpected {extra[:8]}"
                         f"{' ...' if len(extra) > 8 else ''}")
    out = {}
    for key, (name, shape, axes) in expected.items():
        value = np.asarray(state[key], np.float32)
        if value.shape != shape:
            raise ValueError(f"torchvggish {key} has shape {value.shape}, expected {shape}")
        out[name] = np.ascontiguousarray(value.transpose(axes) if axes else value)
    return out


def _abstract_vggish() -> VGGish:
    # shapes only: the weights are about to be overwritten, so skip drawing 72 M random numbers
    return nnx.eval_shape(lambda: VGGish(rngs=nnx.Rngs(0)))


def _to_device(model: VGGish) -> VGGish:
    # `assign` leaves numpy arrays in the variables; move them once, not on every jitted call
    for _, variable in nnx.state(model).flat_state():
        variable.set_value(jnp.asarray(variable.get_value()))
    return model


def convert_vggish(src: str, out: str) -> str:
    """torchvggish's `vggish-10086976.pth` (path `src`) → safetensors weights at `out`; returns `out`.

    The metadata records `{"network": "vggish", "source": <basename of src>}`."""
    from mgt.evaluation.torch_file import load_torch_state  # lazily: only conversion reads torch files
    from mgt.evaluation.weights import assign, save_weights

    arrays = vggish_arrays_from_torch(load_torch_state(src, argument="--from"))
    model = _abstract_vggish()
    assign(model, arrays, source=f"--from {src!r}")
    return save_weights(model, out, metadata={"network": "vggish", "source": os.path.basename(src)})


def load_vggish(path: str) -> VGGish:
    """A VGGish with the weights `convert_vggish` wrote to `path` (ValueError if it is not such a file)."""
    from mgt.evaluation.weights import load_weights

    model = _abstract_vggish()
    metadata = load_weights(model, path, argument="VGGish weights")
    if metadata.get("network", "vggish") != "vggish":
        raise ValueError(f"VGGish weights {path!r}: the file holds network {metadata['network']!r}, "
                         f"expected 'vggish'")
    return _to_device(model)


def random_vggish(seed: int = 0) -> VGGish:
    """A VGGish with random weights, for tests and smoke runs: He-normal kernels (std sqrt(2 / fan_in),
    so activations keep their scale through the ReLUs), biases normal with std 0.1.

    Drawn with numpy (`default_rng(seed + i)` for the i-th variable in name order): JAX's CPU random
    bits for the 72 M parameters take several seconds, numpy's well under one."""
    model = _abstract_vggish()
    shapes = {".".join(str(k) for k in path): tuple(v.get_value().shape) for path, v in nnx.state(model).flat_state()}
    arrays = {}
    for i, name in enumerate(sorted(shapes)):
        scale = np.sqrt(2.0 / np.prod(shapes[name][:-1])) if name.endswith("kernel") else 0.1
        draws = np.random.default_rng(seed + i).standard_normal(shapes[name], dtype=np.float32)
        arrays[name] = draws * np.float32(scale)
    from mgt.evaluation.weights import assign

    assign(model, arrays, source="random_vggish")
    return _to_device(model)
