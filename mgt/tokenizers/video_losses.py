"""Training terms of video tokenizers: the image objective's pieces applied to clips.

`VideoTokenizerObjective` is the 3D VQGAN's `TokenizerObjective`. It reuses
`mgt.tokenizers.image_losses` rather than copying it: the same StyleGAN discriminator built in 3D
(`config.tokenizer_train.discriminator = "3d"`, MAGVIT's choice) or applied to every frame
("frames"), the same GAN, R1 and LeCAM terms, and the perceptual loss on every frame. Videos are
float32 `[B, T, H, W, C]` in [0, 1].
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from mgt.tokenizers.image_losses import (
    ImageTokenizerObjective,
    StyleGANDiscriminator,
    adversarial_weight_schedule,
    discriminator_multipliers,
    generator_loss,
)

DISCRIMINATORS = ("3d", "frames")


def frames(x):
    """`[B, T, H, W, C]` → `[B·T, H, W, C]`."""
    return x.reshape((-1,) + tuple(x.shape[2:]))


class FrameDiscriminator(nnx.Module):
    """A 2D discriminator applied to every frame: videos `[B, T, H, W, C]` → logits `[B]` (the mean of
    the frames' logits)."""

    def __init__(self, image_discriminator: StyleGANDiscriminator):
        self.image = image_discriminator

    def __call__(self, videos):
        logits = self.image(frames(videos))
        return logits.reshape(videos.shape[0], -1).mean(axis=1)


class VideoTokenizerObjective(ImageTokenizerObjective):
    """The image objective on clips `(T, H, W, C)`: a 3D or per-frame StyleGAN discriminator (GAN + R1
    + LeCAM terms as for images) and the perceptual loss averaged over frames."""

    def __init__(self, train_config, input_shape: tuple[int, ...], seed: int):
        super().__init__(train_config, input_shape, seed)
        if len(self.input_shape) != 4:
            raise ValueError(f"a video tokenizer's input shape is (T, H, W, C), got {self.input_shape}")
        self.discriminator_kind = str(train_config.get("discriminator", "3d") or "3d")
        if self.discriminator_kind not in DISCRIMINATORS:
            raise ValueError(f"config.tokenizer_train.discriminator={self.discriminator_kind!r}: expected one of "
                             f"{list(DISCRIMINATORS)}")

    def make_discriminator(self, rngs=None):
        t, h, w, c = self.input_shape
        rngs = rngs if rngs is not None else nnx.Rngs(self.seed)
        kw = dict(in_channels=c, base_channels=int(self.tc.discriminator_channels),
                  channel_multipliers=discriminator_multipliers(h), rngs=rngs)
        if self.discriminator_kind == "frames":
            return FrameDiscriminator(StyleGANDiscriminator((h, w), **kw))
        return StyleGANDiscriminator((t, h, w), **kw)

    def generator_losses(self, inputs, reconstructions, discriminator, step) -> dict:
        losses = {}
        if self.perceptual is not None:
            x, y = frames(inputs), frames(reconstructions)
            if x.shape[-1] == 1:  # the perceptual network sees RGB
                x, y = jnp.repeat(x, 3, axis=-1), jnp.repeat(y, 3, axis=-1)
            losses["perceptual"] = self.perceptual_weight * self.perceptual.apply(self.perceptual.params, x, y)
        if discriminator is not None:
            scale = self.adversarial_weight * adversarial_weight_schedule(step, int(self.tc.adversarial_warmup_steps))
            losses["adversarial"] = scale * generator_loss(discriminator(reconstructions))
        return losses
