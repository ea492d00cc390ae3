"""Losses for training 2D image tokenizers (VQGAN): discriminator, GAN terms, R1, LeCAM, perceptual.

`ImageTokenizerObjective` is the VQGAN's `TokenizerObjective` (the hooks the tokenizer stage calls);
it combines them as in the official MaskGIT recipe (`TokenizerLossConfig` holds its weights):

    generator:      reconstruction + quantizer terms            (VQGAN.training_losses)
                    + perceptual_weight · PerceptualLoss(x, x̂)
                    + adversarial_weight · schedule(step) · generator_loss(D(x̂))
    discriminator:  discriminator_loss(D(x), D(x̂)) + r1_weight · r1_penalty(D, x)
                    + lecam_weight · lecam_regularizer(D(x), D(x̂), ema)
    after each step: ema_params = ema_update(ema_params, params, ema_decay)   (mgt.training.state)

Images are float32 NHWC in [0, 1]. Logits are float32 `[B]`. Nothing here downloads: the perceptual
network's weights come from a local .npz file (format in `PerceptualLoss`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from mgt.profiling import scoped

__all__ = [
    "TokenizerLossConfig", "StyleGANDiscriminator", "DiscriminatorBlock", "blur_downsample",
    "minibatch_stddev", "generator_loss", "discriminator_loss", "r1_penalty", "LecamEMA",
    "lecam_regularizer", "PerceptualLoss", "make_perceptual_loss", "adversarial_weight_schedule",
    "ImageTokenizerObjective", "discriminator_multipliers",
]


@dataclasses.dataclass(frozen=True)
class TokenizerLossConfig:
    """Loss weights of tokenizer training; defaults are the official MaskGIT recipe.

    `perceptual_weight` 0.1 needs `perceptual_weights_path` (the official perceptual network was not
    released); set it to 0 to train without one. `lecam_weight` is 0 (not part of the stated recipe).
    """

    adversarial_weight: float = 0.1
    adversarial_warmup_steps: int = 0
    r1_weight: float = 10.0
    perceptual_weight: float = 0.1
    perceptual_weights_path: str | None = None
    lecam_weight: float = 0.0
    lecam_ema_decay: float = 0.999
    commitment_cost: float = 0.25
    entropy_cost: float = 0.1
    ema_decay: float = 0.999


# ---- discriminator -------------------------------------------------------------------------------
def blur_downsample(x):
    """Blur with the separable [1, 3, 3, 1] filter, then keep every second pixel ('SAME' padding).

    `[B, H, W, C]` → `[B, ceil(H/2), ceil(W/2), C]`, same dtype (StyleGAN2's blur pooling). Videos
    `[B, T, H, W, C]` are blurred and halved along time as well (MAGVIT's 3D discriminator).
    """
    nd = x.ndim - 2
    k1 = np.array([1.0, 3.0, 3.0, 1.0], np.float32) / 8.0
    k = k1
    for _ in range(nd - 1):
        k = np.multiply.outer(k, k1)
    c = x.shape[-1]
    kernel = jnp.asarray(np.broadcast_to(k[..., None, None], k.shape + (1, c)), x.dtype)  # spatial…IO, depthwise
    dims = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(2,) * nd, padding="SAME",
                                        dimension_numbers=dims, feature_group_count=c)


def minibatch_stddev(x, group_size: int = 4):
    """Append the minibatch standard deviation as one more channel (StyleGAN).

    Samples n and n + M·k (M = B / G) share a group of G = min(group_size, B); the std over the
    group, averaged over H, W, C, becomes a constant channel. `[B, H, W, C]` → `[B, H, W, C + 1]`.
    """
    b = x.shape[0]
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"batch size {b} must be a multiple of the minibatch-std group size {g}")
    y = x.astype(jnp.float32).reshape((g, b // g) + x.shape[1:])
    std = jnp.sqrt(jnp.var(y, axis=0) + 1e-8).mean(axis=tuple(range(1, x.ndim)))  # [B / G]
    std = jnp.tile(std, (g,)).astype(x.dtype)  # sample n gets its group's value
    std = std.reshape((b,) + (1,) * (x.ndim - 1))
    return jnp.concatenate([x, jnp.broadcast_to(std, x.shape[:-1] + (1,))], axis=-1)


def _leaky_relu(x):
    return jax.nn.leaky_relu(x, negative_slope=0.2)


class DiscriminatorBlock(nnx.Module):
    """Residual down block: conv3x3 → lrelu → blur-down → conv3x3 → lrelu, skip = conv1x1(blur-down(x)),
    output (h + skip) / √2. `[B, H, W, in]` → `[B, ceil(H/2), ceil(W/2), out]`; with `ndim=3` the
    same in 3D (`[B, T, H, W, in]`, time halved too)."""

    def __init__(self, in_channels: int, out_channels: int, *, ndim: int = 2, dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        conv = lambda i, o, k, b: nnx.Conv(i, o, (k,) * ndim, padding="SAME", use_bias=b, dtype=dtype, rngs=rngs)
        self.conv_0 = conv(in_channels, in_channels, 3, True)
        self.conv_1 = conv(in_channels, out_channels, 3, True)
        self.skip = conv(in_channels, out_channels, 1, False)

    def __call__(self, x):
        h = blur_downsample(_leaky_relu(self.conv_0(x)))
        h = _leaky_relu(self.conv_1(h))
        return (h + self.skip(blur_downsample(x))) / math.sqrt(2.0)


class StyleGANDiscriminator(nnx.Module):
    """StyleGAN2-style discriminator: images `[B, H, W, C]` in [0, 1] → float32 logits `[B]`.

    conv3x3(base) → one `DiscriminatorBlock` per multiplier (each halves H and W) → optional
    minibatch-std channel → conv3x3 → flatten → dense(width) → dense(1); leaky ReLU 0.2 between.
    The image size is fixed at construction (the first dense layer sees the flattened grid).
    Official-like ImageNet 256: base 128, multipliers (2, 4, 4, 4, 4); small images: e.g. base 32,
    multipliers (1, 2) for 16 px. A 3-entry `image_size` `(T, H, W)` makes the 3D discriminator of
    MAGVIT: videos `[B, T, H, W, C]`, 3×3×3 convolutions, time halved with space in every block.
    """

    def __init__(self, image_size: int | Sequence[int], *, in_channels: int = 3, base_channels: int = 128,
                 channel_multipliers: Sequence[int] = (2, 4, 4, 4, 4), use_minibatch_std: bool = False,
                 minibatch_std_group: int = 4, dtype: Any = jnp.float32, rngs: nnx.Rngs):
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) not in (2, 3):
            raise ValueError(f"image_size must be S, (H, W) or (T, H, W), got {image_size!r}")
        nd = len(size)
        self.image_shape = size + (in_channels,)
        self.use_minibatch_std = use_minibatch_std
        self.minibatch_std_group = minibatch_std_group
        self.conv_in = nnx.Conv(in_channels, base_channels, (3,) * nd, padding="SAME", dtype=dtype, rngs=rngs)
        blocks, width = [], base_channels
        for m in channel_multipliers:
            blocks.append(DiscriminatorBlock(width, base_channels * m, ndim=nd, dtype=dtype, rngs=rngs))
            width = base_channels * m
            size = tuple(-(-s // 2) for s in size)
        self.blocks = nnx.List(blocks)
        extra = 1 if use_minibatch_std else 0
        self.conv_out = nnx.Conv(width + extra, width, (3,) * nd, padding="SAME", dtype=dtype, rngs=rngs)
        self.dense_0 = nnx.Linear(width * math.prod(size), width, dtype=dtype, rngs=rngs)
        self.dense_1 = nnx.Linear(width, 1, dtype=dtype, rngs=rngs)

    @scoped("discriminator")
    def __call__(self, images):
        shape = tuple(images.shape)
        if len(shape) != len(self.image_shape) + 1 or shape[1:] != self.image_shape:
            raise ValueError(f"images must be [batch, *{self.image_shape}], got shape {shape}")
        x = _leaky_relu(self.conv_in(images))
        for block in self.blocks:
            x = block(x)
        if self.use_minibatch_std:
            x = minibatch_stddev(x, self.minibatch_std_group)
        x = _leaky_relu(self.conv_out(x))
        x = _leaky_relu(self.dense_0(x.reshape(x.shape[0], -1)))
        return self.dense_1(x)[:, 0].astype(jnp.float32)


# ---- GAN losses ----------------------------------------------------------------------------------
def generator_loss(fake_logits):
    """Non-saturating generator loss: mean softplus(-D(x̂)) = -log sigmoid(D(x̂)). Scalar float32."""
    return jnp.mean(jax.nn.softplus(-fake_logits.astype(jnp.float32)))


def discriminator_loss(real_logits, fake_logits):
    """Discriminator loss: mean softplus(-D(x)) + mean softplus(D(x̂)). Scalar float32."""
    real, fake = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def r1_penalty(discriminator: Callable, real_images):
    """R1 gradient penalty: mean over the batch of ||∂D(x)/∂x||² at real images (unweighted; the
    recipe multiplies it by `r1_weight` = 10). `discriminator` maps `[B, H, W, C]` → logits `[B]`;
    it may be an nnx module (it is only read). Scalar float32."""
    x = jnp.asarray(real_images, jnp.float32)
    grads = jax.grad(lambda images: jnp.sum(discriminator(images).astype(jnp.float32)))(x)
    return jnp.mean(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))))


@struct.dataclass
class LecamEMA:
    """Exponential moving averages of the mean real and fake logits, for `lecam_regularizer`.
    A pytree: carry it through `jit` and checkpoints."""

    real: jax.Array
    fake: jax.Array
    decay: float = struct.field(pytree_node=False, default=0.999)

    @classmethod
    def create(cls, decay: float = 0.999) -> "LecamEMA":
        return cls(real=jnp.zeros((), jnp.float32), fake=jnp.zeros((), jnp.float32), decay=decay)

    def update(self, real_logits, fake_logits) -> "LecamEMA":
        d = self.decay
        real = d * self.real + (1 - d) * jnp.mean(real_logits.astype(jnp.float32))
        fake = d * self.fake + (1 - d) * jnp.mean(fake_logits.astype(jnp.float32))
        return self.replace(real=jax.lax.stop_gradient(real), fake=jax.lax.stop_gradient(fake))


def lecam_regularizer(real_logits, fake_logits, ema: LecamEMA):
    """LeCAM (Tseng et al. 2021): mean relu(D(x) − ema_fake)² + mean relu(ema_real − D(x̂))². Scalar."""
    real, fake = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    return (jnp.mean(jnp.square(jax.nn.relu(real - ema.fake)))
            + jnp.mean(jnp.square(jax.nn.relu(ema.real - fake))))


# ---- perceptual loss -----------------------------------------------------------------------------
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class PerceptualLoss:
    """LPIPS-style distance on the features of a small VGG-like conv stack loaded from a local .npz.

    Weights file format (`np.savez`), N conv layers numbered 0..N-1:
      kernel_<i>      float32 [3, 3, in, out]   conv kernel, HWIO (torch OIHW: `w.transpose(2, 3, 1, 0)`)
      bias_<i>        float32 [out]
      pool_after      int [P]  (optional)  layers followed by 2x2 max pooling, stride 2 (after the ReLU)
      feature_layers  int [F]  (optional)  layers whose ReLU outputs are compared; default: every
                                           layer in `pool_after` and the last layer
      linear_<i>      float32 [out_i] (optional, per feature layer) non-negative channel weights
                                           (LPIPS's linear heads); default 1
      mean, std       float32 [C] (optional) input normalisation of [0, 1] images; default ImageNet's
    Every conv is 'SAME' with a ReLU. Distance = Σ_layers mean_{b,h,w} Σ_c w_c (f̂(x) − f̂(y))², f̂ the
    features normalised to unit length over channels; the result is the batch mean, float32 scalar.

    Without a path the loss is off: `enabled` is False and calling it raises ValueError.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None):
        self.weights_path = None if weights_path is None else os.fspath(weights_path)
        self.params: dict[str, Any] | None = None
        self.pool_after: tuple[int, ...] = ()
        self.feature_layers: tuple[int, ...] = ()
        if self.weights_path is not None:
            self.params, self.pool_after, self.feature_layers = self.load(self.weights_path)

    @property
    def enabled(self) -> bool:
        return self.params is not None

    @staticmethod
    def load(path: str) -> tuple[dict[str, Any], tuple[int, ...], tuple[int, ...]]:
        """Read and check a weights file → (array pytree `{'convs': [(kernel, bias)], 'linear',
        'mean', 'std'}`, pool_after, feature_layers)."""
        if not os.path.isfile(path):
            raise ValueError(f"perceptual weights file {path!r} does not exist")
        with np.load(path) as f:
            data = {k: np.asarray(f[k]) for k in f.files}
        n = 0
        while f"kernel_{n}" in data:
            n += 1
        if n == 0:
            raise ValueError(f"perceptual weights file {path!r} holds no 'kernel_0' (keys: {sorted(data)})")
        convs, width = [], None
        for i in range(n):
            k, b = data[f"kernel_{i}"], data.get(f"bias_{i}")
            if k.ndim != 4 or b is None or b.shape != (k.shape[-1],) or (width and k.shape[2] != width):
                raise ValueError(f"{path!r}: kernel_{i} {k.shape} / bias_{i} "
                                 f"{None if b is None else b.shape} do not form a conv after width {width}")
            convs.append((jnp.asarray(k, jnp.float32), jnp.asarray(b, jnp.float32)))
            width = k.shape[-1]
        pool_after = tuple(int(i) for i in data.get("pool_after", np.zeros((0,), int)))
        default_features = sorted(set(pool_after) | {n - 1})
        features = tuple(int(i) for i in data.get("feature_layers", np.array(default_features)))
        if any(not 0 <= i < n for i in pool_after + features):
            raise ValueError(f"{path!r}: pool_after {pool_after} / feature_layers {features} outside 0..{n - 1}")
        channels = convs[0][0].shape[2]
        linear = [jnp.asarray(data.get(f"linear_{i}", np.ones(convs[i][0].shape[-1])), jnp.float32)
                  for i in features]
        params = {
            "convs": convs, "linear": linear,
            "mean": jnp.asarray(data.get("mean", _IMAGENET_MEAN[:channels]), jnp.float32),
            "std": jnp.asarray(data.get("std", _IMAGENET_STD[:channels]), jnp.float32),
        }
        return params, pool_after, features

    def __call__(self, x, y):
        """Images `[B, H, W, C]` float32 in [0, 1] → scalar float32 distance."""
        if self.params is None:
            raise ValueError(
                "PerceptualLoss has no feature network: pass weights_path=<file.npz> (format in "
                "mgt.tokenizers.image_losses.PerceptualLoss), or set the perceptual loss weight to 0")
        return self.apply(self.params, x, y)

    def apply(self, params, x, y):
        """Functional form: pass `params` (= `self.params`) as a jit argument to keep large weights
        out of the compiled code."""
        f = self._features(params, jnp.concatenate([x, y], axis=0).astype(jnp.float32))
        b = x.shape[0]
        total = jnp.zeros((), jnp.float32)
        for feat, w in zip(f, params["linear"]):
            feat = feat * jax.lax.rsqrt(jnp.sum(jnp.square(feat), axis=-1, keepdims=True) + 1e-10)
            total += jnp.mean(jnp.sum(w * jnp.square(feat[:b] - feat[b:]), axis=-1))
        return total

    def _features(self, params, x):
        x = (x - params["mean"]) / params["std"]
        out = []
        for i, (kernel, bias) in enumerate(params["convs"]):
            x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x + bias)
            if i in self.feature_layers:
                out.append(x)
            if i in self.pool_after:
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        return out


def make_perceptual_loss(weights_path: str | os.PathLike | None, weight: float) -> Callable:
    """`(x, y) -> weight · PerceptualLoss(x, y)`, or a function returning 0.0 when `weight == 0`.

    Raises ValueError when `weight > 0` and no weights file is given (nothing is downloaded)."""
    if weight == 0:
        return lambda x, y: jnp.zeros((), jnp.float32)
    if weights_path is None:
        raise ValueError(f"perceptual loss weight is {weight} but no perceptual weights file was given: "
                         "pass the path of an .npz (see mgt.tokenizers.image_losses.PerceptualLoss) or use weight 0")
    loss = PerceptualLoss(weights_path)
    return lambda x, y: weight * loss(x, y)


# ---- schedules ---------------------------------------------------------------------------------
def adversarial_weight_schedule(step, warmup_steps: int):
    """Multiplier of the generator's adversarial term: 0.0 while `step < warmup_steps`, 1.0 after.
    Works on Python ints and traced int arrays; returns float32."""
    return jnp.where(jnp.asarray(step) >= warmup_steps, 1.0, 0.0).astype(jnp.float32)


# ---- the VQGAN's training objective --------------------------------------------------------------
def discriminator_multipliers(image_size: int) -> tuple[int, ...]:
    """Channel multipliers of a `StyleGANDiscriminator` that halves `image_size` down to 4 px or less."""
    mults = [1]
    while image_size // (2 ** len(mults)) > 4:
        mults.append(min(2 ** len(mults), 4))
    return tuple(mults)


class ImageTokenizerObjective:
    """The 2D image tokenizer's `TokenizerObjective` (see `mgt.tokenizers.base`).

    Generator terms: `perceptual_weight · PerceptualLoss(x, x̂)` and
    `adversarial_weight · warm-up(step) · generator_loss(D(x̂))`. Discriminator: a
    `StyleGANDiscriminator` sized to the images, `discriminator_loss + r1_weight · R1(real images)
    (+ lecam_weight · LeCAM)`; the extra state is the LeCAM EMA (`"lecam"`).

    Args:
      train_config: `config.tokenizer_train` (weights, discriminator width, perceptual weights path).
      input_shape: one image `(H, W, C)`.
      seed: the discriminator's initialisation seed.
    """

    def __init__(self, train_config, input_shape: tuple[int, ...], seed: int):
        self.tc, self.input_shape, self.seed = train_config, tuple(input_shape), int(seed)
        self.adversarial_weight = float(train_config.adversarial_weight)
        self.perceptual_weight = float(train_config.perceptual_weight)
        self.has_discriminator = self.adversarial_weight > 0
        self.perceptual = None  # loaded by prepare(): sampling and conversion never need it

    def prepare(self) -> None:
        """Load the perceptual network's local weights (training only)."""
        if self.perceptual_weight > 0:
            path = self.tc.get("perceptual_weights_path")
            if not path:
                raise ValueError("config.tokenizer_train.perceptual_weight > 0 needs "
                                 "config.tokenizer_train.perceptual_weights_path (a local .npz; nothing is "
                                 "downloaded), or --config.tokenizer_train.perceptual_weight=0")
            self.perceptual = PerceptualLoss(path)

    def make_discriminator(self, rngs=None):
        size = self.input_shape[0]
        return StyleGANDiscriminator(size, in_channels=self.input_shape[-1],
                                     base_channels=int(self.tc.discriminator_channels),
                                     channel_multipliers=discriminator_multipliers(size),
                                     rngs=rngs if rngs is not None else nnx.Rngs(self.seed))

    def init_state(self) -> dict:
        if not self.has_discriminator:
            return {}
        return {"lecam": LecamEMA.create(float(self.tc.get("lecam_ema_decay", 0.999)))}

    def generator_losses(self, inputs, reconstructions, discriminator, step) -> dict:
        losses = {}
        if self.perceptual is not None:
            losses["perceptual"] = self.perceptual_weight * self.perceptual.apply(
                self.perceptual.params, inputs, reconstructions)
        if discriminator is not None:
            scale = self.adversarial_weight * adversarial_weight_schedule(step, int(self.tc.adversarial_warmup_steps))
            losses["adversarial"] = scale * generator_loss(discriminator(reconstructions))
        return losses

    def discriminator_losses(self, discriminator, inputs, fakes, state: dict):
        real_logits, fake_logits = discriminator(inputs), discriminator(fakes)
        total = discriminator_loss(real_logits, fake_logits)
        total += float(self.tc.r1_weight) * r1_penalty(discriminator, inputs)
        if float(self.tc.lecam_weight) > 0:
            total += float(self.tc.lecam_weight) * lecam_regularizer(real_logits, fake_logits, state["lecam"])
        new_state = {"lecam": state["lecam"].update(real_logits, fake_logits)}
        # stop_gradient: the metrics are outputs of the loss function whose gradient is taken
        metrics = {"real_logit": jax.lax.stop_gradient(real_logits.mean()),
                   "fake_logit": jax.lax.stop_gradient(fake_logits.mean())}
        return total, new_state, metrics
