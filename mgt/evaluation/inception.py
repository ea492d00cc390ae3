"""The FID Inception-v3 (pytorch-fid's `fid_inception_v3` + `InceptionV3`) as a Flax NNX module, in NHWC.

FID, KID and Inception Score are only comparable with published tables when computed with this exact
network: the TF-slim Inception of 2015-12-05 (`pt_inception-2015-12-05-6726825d.pth`, 1008-way fc)
with pytorch-fid's patches — average pools that do not count the zero padding (TensorFlow's
behaviour), and a max pool in the last block's pool branch. Torchvision's ImageNet Inception differs in
weights and in those layers, so it must not be used for FID.

The input path is pytorch-fid's `resize_input=True, normalize_input=True`: images in [0, 1] are
resized to 299 × 299 like `F.interpolate(x, (299, 299), mode='bilinear', align_corners=False)` (two
taps per axis, no antialiasing, also when shrinking), then mapped to [-1, 1].

Submodules are named after the torch modules in snake_case (`Mixed_5b.branch3x3dbl_1` →
`mixed_5b.branch3x3dbl_1`), so that `inception_arrays_from_torch` is a rename plus layout changes:
conv kernels OIHW → HWIO, the fc weight transposed, BatchNorm `weight` / `bias` / `running_mean` /
`running_var` → `scale` / `bias` / `mean` / `var`.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.evaluation.resize import resize_bilinear_like_torch  # noqa: F401 - re-exported
from mgt.evaluation.weights import assign, load_weights, save_weights

INPUT_SIZE = 299
POOL_FEATURES = 2048
NUM_LOGITS = 1008
# FID is sensitive to small feature errors: keep float32 convolutions exact also on GPUs, where the
# default precision would use TF32 (10-bit mantissa) for float32 inputs.
_PRECISION = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------------
# Layers


class BasicConv2d(nnx.Module):
    """torchvision's BasicConv2d: conv without bias → BatchNorm (eps 0.001, running statistics) → relu."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
                 stride: int = 1, padding: int | tuple[int, int] = 0, rngs: nnx.Rngs):
        kernel_hw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
        self.conv = nnx.Conv(in_channels, out_channels, kernel_hw, strides=stride,
                             padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False, precision=_PRECISION,
                             rngs=rngs)
        self.bn = nnx.BatchNorm(out_channels, epsilon=1e-3, use_running_average=True, rngs=rngs)

    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x_bhwc)))


def max_pool_3x3(x_bhwc: jax.Array, *, stride: int, padding: int = 0) -> jax.Array:
    """`F.max_pool2d(x, 3, stride, padding)`: padding is -inf, so it never wins."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(x_bhwc, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pad)


def avg_pool_3x3_same(x_bhwc: jax.Array) -> jax.Array:
    """`F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)`: the pytorch-fid patch that
    matches TensorFlow — a border window averages only the pixels inside the image."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
    total = jax.lax.reduce_window(x_bhwc, 0.0, jax.lax.add, window, strides, pad)
    ones = jnp.ones((1, *x_bhwc.shape[1:3], 1), x_bhwc.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)
    return total / count


class FIDInceptionA(nnx.Module):
    """Mixed_5b/c/d: 1x1 | 1x1→5x5 | 1x1→3x3→3x3 | avg-pool (padding not counted)→1x1."""

    def __init__(self, in_channels: int, pool_features: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv2d(in_channels, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(avg_pool_3x3_same(x))
        return jnp.concatenate([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nnx.Module):
    """Mixed_6a (torchvision's, unpatched): stride-2 3x3 | 1x1→3x3→stride-2 3x3 | stride-2 max pool."""

    def __init__(self, in_channels: int, *, rngs: nnx.Rngs):
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), branch3x3dbl, max_pool_3x3(x, stride=2)], axis=-1)


class FIDInceptionC(nnx.Module):
    """Mixed_6b..e: 1x1 | 1x1→1x7→7x1 | 1x1→7x1→1x7→7x1→1x7 | avg-pool (padding not counted)→1x1."""

    def __init__(self, in_channels: int, channels_7x7: int, *, rngs: nnx.Rngs):
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv2d(in_channels, 192, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(avg_pool_3x3_same(x))
        return jnp.concatenate([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nnx.Module):
    """Mixed_7a (torchvision's, unpatched): 1x1→stride-2 3x3 | 1x1→1x7→7x1→stride-2 3x3 | max pool."""

    def __init__(self, in_channels: int, *, rngs: nnx.Rngs):
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return jnp.concatenate([branch3x3, branch7x7x3, max_pool_3x3(x, stride=2)], axis=-1)


class FIDInceptionE(nnx.Module):
    """Mixed_7b (`FIDInceptionE_1`, average pool not counting padding) and Mixed_7c (`FIDInceptionE_2`,
    a max pool instead — pytorch-fid keeps this quirk of the TF graph): 1x1 | 1x1→(1x3, 3x1) |
    1x1→3x3→(1x3, 3x1) | pool→1x1."""

    def __init__(self, in_channels: int, *, max_pool: bool, rngs: nnx.Rngs):
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv2d(in_channels, 192, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = jnp.concatenate([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], axis=-1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = jnp.concatenate([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)],
                                       axis=-1)
        pooled = max_pool_3x3(x, stride=1, padding=1) if self.max_pool else avg_pool_3x3_same(x)
        return jnp.concatenate([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], axis=-1)


# ----------------------------------------------------------------------------------------------------
# The network


class FIDInceptionV3(nnx.Module):
    """pytorch-fid's FID Inception-v3 (`InceptionV3([3], resize_input=True, normalize_input=True)` plus the
    same network's 1008-way fc), NHWC. 23.9 M parameters; weights from `load_inception`."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
        self.conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
        self.conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
        self.conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
        self.conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
        self.mixed_5b = FIDInceptionA(192, 32, rngs=rngs)
        self.mixed_5c = FIDInceptionA(256, 64, rngs=rngs)
        self.mixed_5d = FIDInceptionA(288, 64, rngs=rngs)
        self.mixed_6a = InceptionB(288, rngs=rngs)
        self.mixed_6b = FIDInceptionC(768, 128, rngs=rngs)
        self.mixed_6c = FIDInceptionC(768, 160, rngs=rngs)
        self.mixed_6d = FIDInceptionC(768, 160, rngs=rngs)
        self.mixed_6e = FIDInceptionC(768, 192, rngs=rngs)
        self.mixed_7a = InceptionD(768, rngs=rngs)
        self.mixed_7b = FIDInceptionE(1280, max_pool=False, rngs=rngs)
        self.mixed_7c = FIDInceptionE(2048, max_pool=True, rngs=rngs)
        self.fc = nnx.Linear(POOL_FEATURES, NUM_LOGITS, precision=_PRECISION, rngs=rngs)

    @staticmethod
    def preprocess(images_bhwc: jax.Array) -> jax.Array:
        """Images [B, H, W, 3] float in [0, 1], any size → [B, 299, 299, 3] float32 in [-1, 1] (bilinear
        resize as torch's, then 2x - 1)."""
        images_bhwc = jnp.asarray(images_bhwc, jnp.float32)
        if images_bhwc.ndim != 4 or images_bhwc.shape[-1] != 3:
            raise ValueError(f"images: expected [B, H, W, 3], got shape {images_bhwc.shape}")
        resized = resize_bilinear_like_torch(images_bhwc, (INPUT_SIZE, INPUT_SIZE))
        return 2.0 * resized - 1.0

    def features(self, x_bhwc: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Preprocessed images [B, 299, 299, 3] float32 in [-1, 1] → (pool features [B, 2048], logits
        [B, 1008]), float32. Other sizes run too (the network is fully convolutional up to the pool)."""
        x = self.conv2d_2b_3x3(self.conv2d_2a_3x3(self.conv2d_1a_3x3(x_bhwc)))
        x = max_pool_3x3(x, stride=2)
        x = self.conv2d_4a_3x3(self.conv2d_3b_1x1(x))
        x = max_pool_3x3(x, stride=2)
        for block in (self.mixed_5b, self.mixed_5c, self.mixed_5d, self.mixed_6a, self.mixed_6b, self.mixed_6c,
                      self.mixed_6d, self.mixed_6e, self.mixed_7a, self.mixed_7b, self.mixed_7c):
            x = block(x)
        pool_bc = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)); dropout is off in eval
        return pool_bc, self.fc(pool_bc)

    def __call__(self, images_bhwc: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images [B, H, W, 3] float in [0, 1] → (pool features [B, 2048] float32 — the FID / KID
        features, logits [B, 1008] float32 — the Inception Score's, softmax over them)."""
        return self.features(self.preprocess(images_bhwc))


# ----------------------------------------------------------------------------------------------------
# Weights

_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
# Prefixes that checkpoint wrappers put before a model's keys, stripped when every key has one.
_WRAPPER_PREFIXES = ("state_dict.", "model.", "module.")


def _torch_name(name: str) -> str:
    """Our dotted state name → the pytorch-fid file's key (the inverse of the mapping below)."""
    *path, leaf = name.split(".")
    module = {"conv2d": "Conv2d", "mixed": "Mixed"}
    first = path[0].split("_", 1)
    path[0] = f"{module[first[0]]}_{first[1]}" if first[0] in module else path[0]
    if path[-1] == "fc":
        leaf = {"kernel": "weight", "bias": "bias"}[leaf]
    elif path[-1] == "conv":
        leaf = {"kernel": "weight"}[leaf]
    else:
        leaf = {ours: theirs for theirs, ours in _BN_NAMES.items()}[leaf]
    return ".".join([*path, leaf])


@functools.lru_cache(maxsize=1)
def _abstract_parts() -> tuple[nnx.GraphDef, nnx.State]:
    # Tracing the constructor takes ~2 s on a CPU; do it once per process.
    return nnx.split(nnx.eval_shape(lambda: FIDInceptionV3(rngs=nnx.Rngs(0))))


def abstract_inception() -> FIDInceptionV3:
    """A fresh FIDInceptionV3 whose variables hold shapes only, to be filled by `assign`: building real
    random weights first would cost ~20 s (each layer's initialiser compiles)."""
    graphdef, state = _abstract_parts()
    return nnx.merge(graphdef, state, copy=True)  # copy: `assign` must not fill the cached variables


def state_shapes() -> dict[str, tuple[int, ...]]:
    """{dotted state name: shape} of every FIDInceptionV3 variable (all float32); no weights are made."""
    flat = _abstract_parts()[1].flat_state()
    return {".".join(str(k) for k in path): tuple(v.get_value().shape) for path, v in flat}


def _expected_names() -> dict[str, tuple[str, tuple[int, ...]]]:
    """{torch key: (our state name, our shape)} for every variable of FIDInceptionV3."""
    return {_torch_name(name): (name, shape) for name, shape in state_shapes().items()}


def inception_arrays_from_torch(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pytorch-fid's state dict (`{'Conv2d_1a_3x3.conv.weight': [32, 3, 3, 3], ..., 'fc.weight':
    [1008, 2048]}`, numpy) → `{our state name: float32 array}` for `weights.assign` on FIDInceptionV3.

    Conv kernels go from OIHW to HWIO and the fc weight from [out, in] to [in, out]; BatchNorm's
    `num_batches_tracked` (training bookkeeping) is ignored. A common wrapper prefix (`state_dict.`,
    `model.`, `module.`) is stripped. ValueError naming the missing or unexpected keys (for example
    torchvision's ImageNet Inception, which has `AuxLogits.*` and a 1000-way fc) or a wrong shape.
    """
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    expected = _expected_names()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError("not the FID Inception-v3 state dict (pytorch-fid's pt_inception-2015-12-05): "
                         f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    arrays = {}
    for torch_key, (name, shape) in expected.items():
        value = np.asarray(state[torch_key], np.float32)
        if name.endswith("conv.kernel"):
            value = value.transpose(2, 3, 1, 0)  # OIHW → HWIO
        elif name == "fc.kernel":
            value = value.T
        if value.shape != shape:
            raise ValueError(f"{torch_key}: shape {state[torch_key].shape} does not give {name} {shape}")
        arrays[name] = np.ascontiguousarray(value)
    return arrays


def convert_inception(src: str, out: str) -> str:
    """Convert pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` at `src` to the safetensors file
    `out` (our state names, float32, metadata network / source); returns `out`."""
    from mgt.evaluation import torch_file  # lazily, as the other converters: only converting reads torch files

    arrays = inception_arrays_from_torch(torch_file.load_torch_state(src, argument="--from"))
    model = abstract_inception()
    assign(model, arrays, source=f"--from {src!r}")
    return save_weights(model, out, metadata={"network": "inception_v3_fid", "source": os.path.basename(src)})


def load_inception(path: str) -> FIDInceptionV3:
    """The FID Inception-v3 with the weights of the safetensors file `path` (made by `convert_inception`).
    ValueError naming the path if it is missing or is not such a file."""
    if not os.path.isfile(path):
        raise ValueError(f"inception weights {path!r} does not exist (make it with convert_inception)")
    model = abstract_inception()
    metadata = load_weights(model, path, argument="inception weights")
    if metadata.get("network") != "inception_v3_fid":
        raise ValueError(f"inception weights {path!r}: metadata network is {metadata.get('network')!r}, "
                         "expected 'inception_v3_fid'")
    return model


def random_inception(seed: int = 0) -> FIDInceptionV3:
    """FIDInceptionV3 with random weights drawn with numpy from `seed`: for tests and shape checks only —
    its features mean nothing.

    Scaled so activations stay of order 1 through all 94 conv layers (He-scaled kernels, BatchNorm
    gains near 1, running variances in [0.5, 1.5]); Flax's default initialisers would make the features
    vanish (~1e-4), and drawing them with jax.random op by op takes ~20 s on a CPU.
    """
    model = abstract_inception()
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in sorted(state_shapes().items()):
        if name.endswith("conv.kernel"):
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:3]))  # HWIO: fan-in = H·W·I
        elif name == "fc.kernel":
            value = rng.standard_normal(shape) / np.sqrt(shape[0])
        elif name.endswith(("bn.scale", "bn.var")):
            value = rng.uniform(0.8, 1.2, shape) if name.endswith("scale") else rng.uniform(0.5, 1.5, shape)
        else:  # BatchNorm bias and mean, fc bias
            value = 0.1 * rng.standard_normal(shape)
        arrays[name] = value.astype(np.float32)
    assign(model, arrays, source=f"random_inception(seed={seed})")
    return model
