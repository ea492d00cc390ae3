"""Plug your own tokenizer into mgt: a tiny patch quantizer, the masked Transformer and the decoder.

Any object with `encode`, `decode`, `token_spec`, `codebook_size` and `num_levels` is a tokenizer
(`mgt.tokenizers.Tokenizer`). Here: 4×4 grey patches of 16 px digits, each replaced by the nearest of
64 k-means centroids — fitted with numpy in a second. Then a small MaskGIT learns the token grids and
generates new digits in 8 steps.

    python examples/custom_tokenizer.py --steps 300 --out custom_digits.png
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mgt
from mgt.modalities.image import DigitsSource, save_image_grid
from mgt.tokenizers import Tokenizer


class PatchTokenizer:
    """4×4 patches → nearest of V centroids. images float32 [B, 16, 16, 3] ↔ tokens int32 [B, 4, 4]."""

    num_levels, patch = 1, 4

    def __init__(self, images, codebook_size=64, iterations=10, seed=0):
        patches = np.asarray(self._patches(images)).reshape(-1, self.patch * self.patch)
        rng = np.random.default_rng(seed)
        centroids = patches[rng.choice(len(patches), codebook_size, replace=False)]
        for _ in range(iterations):  # plain k-means
            assign = ((patches[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
            for k in range(codebook_size):
                if (assign == k).any():
                    centroids[k] = patches[assign == k].mean(0)
        self.codebook, self.codebook_size = jnp.asarray(centroids), codebook_size

    def _patches(self, images):
        grey = jnp.asarray(images).mean(-1)
        b, h, w = grey.shape
        p = self.patch
        return grey.reshape(b, h // p, p, w // p, p).transpose(0, 1, 3, 2, 4).reshape(b, h // p, w // p, p * p)

    def encode(self, images):
        patches = self._patches(images)
        return ((patches[..., None, :] - self.codebook) ** 2).sum(-1).argmin(-1).astype(jnp.int32)

    def decode(self, tokens):
        b, h, w = tokens.shape
        p = self.patch
        grey = self.codebook[tokens].reshape(b, h, w, p, p).transpose(0, 1, 3, 2, 4).reshape(b, h * p, w * p)
        return jnp.repeat(grey[..., None], 3, -1)

    def token_spec(self, input_shape):
        return mgt.TokenSpec(grid=(input_shape[0] // self.patch, input_shape[1] // self.patch),
                             codebook_size=self.codebook_size)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="custom_digits.png")
    args = parser.parse_args(argv)

    data = DigitsSource(image_size=16, split="train")
    images, labels = data.images.astype(np.float32) / 255.0, data.labels
    tokenizer = PatchTokenizer(images)
    assert isinstance(tokenizer, Tokenizer)
    tokens = np.asarray(tokenizer.encode(images))  # int32 [N, 4, 4]

    cfg = mgt.TransformerConfig(grid=tokenizer.token_spec(images.shape[1:]).grid, codebook_size=64,
                                num_classes=10, conditioning="class_token", num_layers=2, hidden_dim=64,
                                num_heads=4, mlp_dim=128)
    model = mgt.MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, batch, batch_labels, key):
        mask, loss_mask = mgt.make_training_mask(key, cfg.spec, batch.shape[0])
        inputs = mgt.masking.apply_mask(batch, mask, cfg.spec.mask_id)
        loss_fn = lambda m: mgt.masked_cross_entropy(m(inputs, labels=batch_labels), batch, loss_mask)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(0)
    for step in range(args.steps):
        idx = rng.choice(len(tokens), 64)
        loss = train_step(model, optimizer, jnp.asarray(tokens[idx]), jnp.asarray(labels[idx]),
                          jax.random.key(step))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {float(loss):.3f}")

    sample_labels = np.repeat(np.arange(10), 4)
    pipeline = mgt.GenerationPipeline(model, tokenizer)
    out = pipeline.generate(jax.random.key(1), labels=sample_labels, num_steps=8)
    save_image_grid(args.out, np.clip(np.asarray(out), 0, 1), labels=sample_labels.tolist(), ncols=8, upscale=4)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
