"""Small feature networks for the built-in data sets, so that their quality is a number, not a look.

Inception-v3, I3D and VGGish were trained on ImageNet, Kinetics and AudioSet: on 16-px digits or
8 kHz spoken words their features say little. Each built-in data set instead gets a small network
trained on that set's real training examples to classify them (digits: the digit; moving digits:
the digit of the clip; spoken digits: the word; captioned shapes: which colour × shape × size the
caption names, multi-label). The penultimate layer (128 features) plays Inception's pool3: FID of
these features is the data set's "small-feature FID"; the logits give an Inception-score analogue
and the classifier's accuracy on generated samples.

The trained weights ship in `mgt/evaluation/weights/<name>.safetensors` (with their held-out accuracy
in the metadata), made by `python -m mgt.evaluation.train_small --name NAME` (see that module).

    net = small_net("digits")                 # random weights (tests), or
    net = load_small_net("digits")            # the shipped ones
    features, logits = net(inputs)            # inputs: the task's model inputs, float32

Input layouts (a task's model inputs): image `[B, H, W, C]` in [0, 1] (resized to the network's
size), video `[B, T, H, W, C]` in [0, 1] (any T), audio `[B, S]` in [-1, 1] at the network's sample rate.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
FEATURES = 128


@dataclasses.dataclass(frozen=True)
class SmallNetSpec:
    """What a built-in data set's feature network reads and predicts.

    kind: "image", "video" or "audio"; size: frames are resized to `size × size`; channels: 1 (the
    mean of the input's channels) or 3; num_outputs: classes (softmax) or attributes (multi-label,
    sigmoid); sample_rate: audio only; source: the data set (`config.data.source`) it was trained on.
    """

    name: str
    kind: str
    num_outputs: int
    multi_label: bool = False
    size: int = 0
    channels: int = 1
    sample_rate: int = 0


SPECS = {
    "digits": SmallNetSpec("digits", "image", 10, size=16, channels=1),
    "captioned_shapes": SmallNetSpec("captioned_shapes", "image", 42, multi_label=True, size=32, channels=3),
    "moving_digits": SmallNetSpec("moving_digits", "video", 10, size=32, channels=1),
    "spoken_digits": SmallNetSpec("spoken_digits", "audio", 10, sample_rate=8000),
}

# audio front end: 32 ms Hann windows every 8 ms at 8 kHz, 40 mel bands
_N_FFT, _HOP, _N_MELS = 256, 64, 40


def _spec(name: str) -> SmallNetSpec:
    if name not in SPECS:
        raise ValueError(f"small feature network {name!r}: expected one of {sorted(SPECS)}")
    return SPECS[name]


class SmallFeatureNet(nnx.Module):
    """A 4-stage conv net (2D; (2+1)D for video) → global mean → 128 features → logits.

    `__call__(x) -> (features [B, 128] float32, logits [B, num_outputs] float32)`; see the module
    docstring for the input layouts. No normalisation layers: the network is a pure function of its
    weights, the same in training and evaluation.
    """

    def __init__(self, spec: SmallNetSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        in_channels = 1 if spec.kind == "audio" else spec.channels
        video = spec.kind == "video"
        widths = (16, 32, 64, 128) if video else (32, 64, 96, 128)
        convs, temporal, c = [], [], in_channels
        for i, w in enumerate(widths):
            # images: the first stage keeps the resolution, later ones halve it; video halves it at once
            # (8 frames cost 8 images); never time (clips can be short)
            stride = (1, 1) if i == 0 and not video else (2, 2)
            convs.append(nnx.Conv(c, w, (3, 3), strides=stride, padding="SAME", rngs=rngs))
            if spec.kind == "video":
                # (2+1)D: a temporal conv after each spatial one. A 3D conv would do both, but its
                # gradient is ~25× slower on XLA:CPU, and the network must train on a CPU in minutes
                temporal.append(nnx.Conv(w, w, (3,), padding="SAME", rngs=rngs))
            c = w
        self.convs = nnx.List(convs)
        self.temporal = nnx.List(temporal)
        self.features_dense = nnx.Linear(c, FEATURES, rngs=rngs)
        self.head = nnx.Linear(FEATURES, spec.num_outputs, rngs=rngs)
        if spec.kind == "audio":
            import librosa

            mel = librosa.filters.mel(sr=spec.sample_rate, n_fft=_N_FFT, n_mels=_N_MELS)
            self.mel_basis = nnx.Variable(jnp.asarray(mel.T, jnp.float32))  # constant, not trained

    def prepare(self, x):
        """The task's model inputs → the trunk's input (resized frames / log-mel spectrogram)."""
        spec = self.spec
        x = jnp.asarray(x, jnp.float32)
        if spec.kind == "audio":
            if x.ndim == 3:  # [B, S, channels] → mono
                x = x.mean(-1)
            frames = _frame(x, _N_FFT, _HOP) * jnp.hanning(_N_FFT + 1)[:-1]
            power = jnp.abs(jnp.fft.rfft(frames, axis=-1)) ** 2  # [B, T, n_fft/2+1]
            return jnp.log(power @ self.mel_basis[...] + 1e-5)[..., None]  # [B, T, mels, 1]
        if spec.channels == 1:
            x = x.mean(-1, keepdims=True)
        elif x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if x.shape[-3:-1] != (spec.size, spec.size):
            x = jax.image.resize(x, x.shape[:-3] + (spec.size, spec.size, x.shape[-1]), "bilinear",
                                 antialias=False)
        return x * 2.0 - 1.0

    def features(self, x):
        h = self.prepare(x)
        for i, conv in enumerate(self.convs):
            if self.spec.kind == "video":  # [B, T, H, W, C]: frames through the 2D conv, pixels through time
                b, t = h.shape[:2]
                h = jax.nn.gelu(conv(h.reshape((b * t,) + h.shape[2:])))
                h = h.reshape((b, t) + h.shape[1:])
                across = jnp.moveaxis(h, 1, 3).reshape((-1, t, h.shape[-1]))  # [B·H·W, T, C]
                across = jax.nn.gelu(self.temporal[i](across))
                h = h + jnp.moveaxis(across.reshape((b,) + h.shape[2:4] + (t, h.shape[-1])), 3, 1)
            else:
                h = jax.nn.gelu(conv(h))
        h = h.mean(axis=tuple(range(1, h.ndim - 1)))
        return jax.nn.gelu(self.features_dense(h))

    def __call__(self, x):
        f = self.features(x)
        return f, self.head(f)


def _frame(x, n_fft: int, hop: int):
    """`[B, S]` → `[B, T, n_fft]` frames, centred (reflect padding, as librosa)."""
    x = jnp.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    count = 1 + (x.shape[1] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    return x[:, index]


def small_net(name: str, seed: int = 0) -> SmallFeatureNet:
    """The network of built-in data set `name` with random weights (seeded)."""
    return SmallFeatureNet(_spec(name), rngs=nnx.Rngs(seed))


def weights_path(name: str) -> str:
    return os.path.join(WEIGHTS_DIR, f"{_spec(name).name}.safetensors")


def load_small_net(name: str, path: str | None = None) -> tuple[SmallFeatureNet, dict]:
    """The shipped (or `path`'s) trained network of built-in data set `name` and its weights' metadata."""
    from mgt.evaluation.weights import load_weights

    net = small_net(name)
    path = path or weights_path(name)
    if not os.path.isfile(path):
        raise ValueError(f"no trained feature network for {name!r} at {path!r}; make it with "
                         f"`python -m mgt.evaluation.train_small --name {name}`")
    return net, load_weights(net, path, argument="feature weights")


def shapes_targets(shapes) -> np.ndarray:
    """float32 `[42]` multi-hot: which (colour, shape, size) a captioned-shapes example draws."""
    from mgt.modalities.image.shapes import COLOURS, SHAPES, SIZES

    target = np.zeros(len(COLOURS) * len(SHAPES) * len(SIZES), np.float32)
    for s in shapes:  # dicts as `CaptionedShapesSource.describe` gives them
        c, k, z = list(COLOURS).index(s["colour"]), SHAPES.index(s["shape"]), SIZES.index(s["size"])
        target[(c * len(SHAPES) + k) * len(SIZES) + z] = 1.0
    return target
