"""Your own modality on mgt's trainer, sampler and CLI: 1D waves, a tokenizer for them, a config.

A modality is a `mgt.modalities.Task` (here a `BaseTask` subclass) registered with `register_task`;
its tokenizer is any object with `encode` / `decode` / `token_spec` (trainable: `training_losses`),
registered with `register_tokenizer`. Here a "wave" is 64 samples of a sine with 1–4 cycles (the
class) and a random amplitude and phase; the tokenizer turns each 4-sample patch into one of 125
finite-scalar-quantized codes, so a wave is a `(16,)` token grid. Everything else — the token cache,
the masked Transformer, classifier-free guidance, checkpoints, `mgt sample` — is mgt's.

This small config shows the interface, not a tuned model: with 2 × 64 layers and 600 steps the
tokenizer reconstructs every wave with its frequency, but the samples do not yet follow the asked
frequency reliably (measure it: `samples/frequency_accuracy` in metrics.jsonl).

The config (`get_config` below) names the task and the tokenizer by this file's path, so a fresh
process (`mgt sample`) finds them; in your own package use the import path, e.g.
`c.modality = "my_pkg.waves:WaveTask"`.

    mgt train --config examples/custom_modality.py --workdir runs/waves
    mgt sample --workdir runs/waves --labels 0,3 --num 8 --out waves.png
    mgt train --config examples/custom_modality.py:context --workdir runs/waves_ctx   # cross-attention
    mgt sample --workdir runs/waves_ctx --classes 1,2 --amplitude 0.5 --out waves_ctx.png
    python examples/custom_modality.py --workdir runs/waves [--tiny] [--context]     # the same from Python
"""

from __future__ import annotations

import argparse
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mgt
from mgt.condition import Condition
from mgt.config import base_config, parse_arg
from mgt.modalities import BaseTask, register_task
from mgt.modalities.base import ensure_parent, parse_labels
from mgt.tokenizers import FiniteScalarQuantizer, register_tokenizer
from mgt.training import train


# ---- data ----------------------------------------------------------------------------------------
class WaveSource:
    """`num` waves `{"wave": float32 [length, 1] in [0, 1], "label": int32, "context": float32 [2, C + 1]}`.

    Class c has c + 1 cycles per window. The context describes the wave as two "words": the class
    one-hot, then the amplitude — what a cross-attention model is conditioned on.
    """

    def __init__(self, length: int, num_classes: int, num: int, split: str):
        rng = np.random.default_rng(0 if split == "train" else 1)
        self.labels = rng.integers(0, num_classes, num).astype(np.int32)
        self.amplitudes = rng.uniform(0.3, 1.0, num).astype(np.float32)
        phases = rng.uniform(0, 2 * np.pi, num)
        t = np.arange(length) / length
        self.waves = 0.5 + 0.5 * self.amplitudes[:, None] * np.sin(
            2 * np.pi * (self.labels[:, None] + 1) * t + phases[:, None])
        self.num_classes = num_classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"wave": self.waves[i, :, None].astype(np.float32), "label": self.labels[i],
                "context": describe(self.labels[i:i + 1], self.amplitudes[i:i + 1], self.num_classes)[0]}


def describe(labels, amplitudes, num_classes: int) -> np.ndarray:
    """float32 `[B, 2, C + 1]`: the class one-hot, then the amplitude in the last channel."""
    out = np.zeros((len(labels), 2, num_classes + 1), np.float32)
    out[np.arange(len(labels)), 0, labels] = 1.0
    out[:, 1, -1] = amplitudes
    return out


def dominant_cycles(waves) -> np.ndarray:
    """int `[B]`: the strongest frequency of each wave `[B, L, 1]`, in cycles per window."""
    spectrum = np.abs(np.fft.rfft(np.asarray(waves)[..., 0] - 0.5, axis=-1))
    return spectrum[:, 1:].argmax(-1) + 1


# ---- the task ------------------------------------------------------------------------------------
@register_task("waves")
class WaveTask(BaseTask):
    name = "waves"
    input_key = "wave"
    identity_keys = ("data.length", "data.num_classes")
    output_extensions = (".png", ".npz")

    def __init__(self, config):
        super().__init__(config)
        self.length = int(config.data.length)
        self.input_shape = (self.length, 1)

    def source(self, split="train"):
        return WaveSource(self.length, self.num_classes, int(self.config.data.num_examples), split)

    def pipeline(self, source, *, batch_size, train, seed, augment=True):
        ds = grain.MapDataset.source(source)
        if train:
            ds = ds.seed(seed).shuffle().repeat(None)
        return ds.batch(batch_size, drop_remainder=train).to_iter_dataset()

    def examples(self, split, num):
        source = self.source(split)
        return np.stack([source[i]["wave"] for i in range(num)])

    def read_input(self, path):
        wave = np.load(path).astype(np.float32).reshape(-1, 1)
        if wave.shape != self.input_shape:
            raise ValueError(f"{path!r} holds {wave.shape[0]} samples; expected {self.length}")
        return wave

    # sampling: class ids for a class-conditional model, a described wave for a cross-attention one
    def add_sample_arguments(self, parser):
        super().add_sample_arguments(parser)
        if self.model_condition == "context":
            parser.add_argument("--classes", default="0", help="comma-separated classes, cycled to fill --num")
            parser.add_argument("--amplitude", type=float, default=0.8, help="amplitude of the waves, in (0, 1]")

    def sample_condition(self, args, num):
        if self.model_condition != "context":
            return super().sample_condition(args, num)
        labels = parse_labels(args.classes, self.num_classes, argument="--classes")
        if not 0 < args.amplitude <= 1:
            raise ValueError(f"--amplitude {args.amplitude}: expected a number in (0, 1]")
        num = num or len(labels)
        labels = np.resize(labels, num)
        return Condition(labels=labels, context=describe(labels, np.full(num, args.amplitude), self.num_classes)), num

    def write_samples(self, path, outputs, condition=None, *, grid=True):
        """`.npz`: `waves` float32 [N, L] and `labels`; `.png`: one plot per wave, titled with its class."""
        self.check_output(path)
        waves = np.clip(np.asarray(outputs, np.float32)[..., 0], 0, 1)
        labels = None if condition is None or condition.labels is None else np.asarray(condition.labels)
        ensure_parent(path)
        if path.endswith(".npz"):
            np.savez(path, waves=waves, labels=np.zeros(len(waves), np.int32) if labels is None else labels)
            return
        from PIL import Image, ImageDraw

        cols, (w, h) = min(len(waves), 8), (128, 64)
        rows = -(-len(waves) // cols)
        canvas = Image.new("RGB", (cols * w, rows * h), "white")
        draw = ImageDraw.Draw(canvas)
        for i, wave in enumerate(waves):
            x0, y0 = (i % cols) * w, (i // cols) * h
            draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], outline=(200, 200, 200))
            draw.line([(x0 + 4 + j * (w - 8) / (len(wave) - 1), y0 + h - 4 - v * (h - 8)) for j, v in enumerate(wave)],
                      fill=(20, 60, 200), width=2)
            if labels is not None:
                draw.text((x0 + 4, y0 + 2), str(int(labels[i])), fill="black")
        canvas.save(path)

    def write_reconstructions(self, path, inputs, reconstructions):
        self.write_samples(path, np.concatenate([inputs, reconstructions]))

    def sample_metrics(self, outputs, condition):
        """Share of samples whose strongest frequency is their class's (c + 1 cycles)."""
        if condition is None or condition.labels is None:
            return {}
        return {"frequency_accuracy": float(np.mean(dominant_cycles(outputs) == np.asarray(condition.labels) + 1))}


# ---- the tokenizer -------------------------------------------------------------------------------
@register_tokenizer("waves_fsq")
class WaveTokenizer(nnx.Module):
    """Patches of `patch` samples → MLP → FSQ code (prod(levels) codes) → MLP → patch.
    waves float32 `[B, L, 1]` ↔ tokens int32 `[B, L / patch]`."""

    num_levels = 1

    def __init__(self, patch: int = 4, levels=(5, 5, 5), hidden: int = 32, *, rngs: nnx.Rngs):
        self.patch = patch
        self.quantizer = FiniteScalarQuantizer(levels)
        self.codebook_size = self.quantizer.codebook_size
        self.enc_in, self.enc_out = nnx.Linear(patch, hidden, rngs=rngs), nnx.Linear(hidden, len(levels), rngs=rngs)
        self.dec_in, self.dec_out = nnx.Linear(len(levels), hidden, rngs=rngs), nnx.Linear(hidden, patch, rngs=rngs)

    def _latents(self, waves):
        patches = jnp.asarray(waves, jnp.float32).reshape(waves.shape[0], -1, self.patch)
        return self.enc_out(jax.nn.gelu(self.enc_in(patches)))

    def _waves(self, latents):
        return self.dec_out(jax.nn.gelu(self.dec_in(latents))).reshape(latents.shape[0], -1, 1)

    def encode(self, waves):
        return self.quantizer.encode(self._latents(waves))

    def decode(self, tokens):
        return self._waves(self.quantizer.decode(tokens))

    def token_spec(self, input_shape):
        return mgt.TokenSpec(grid=(input_shape[0] // self.patch,), codebook_size=self.codebook_size)

    def training_losses(self, waves, *, rng=None):
        q = self.quantizer(self._latents(waves), train=True)
        recon = self._waves(q.quantized)
        mse = jnp.mean(jnp.square(recon - waves))
        return recon, {"reconstruction": mse, **q.losses}, {"mse": mse}


# ---- the config ----------------------------------------------------------------------------------
def get_config(arg: str | None = None):
    """`tiny`: a few steps (tests); `context`: cross-attention on the wave's description instead of class tokens."""
    arg = parse_arg(arg, what="examples/custom_modality.py", tiny=False, context=False)
    here = os.path.abspath(__file__)
    c = base_config()
    c.modality = f"{here}:WaveTask"
    c.data.source = "waves"
    c.data.length = 64
    c.data.num_classes = 4
    c.data.num_examples = 1024
    c.tokenizer.name = f"{here}:WaveTokenizer"
    c.tokenizer.patch = 4
    c.tokenizer.levels = (5, 5, 5)
    c.tokenizer.hidden = 32
    c.tokenizer_train.steps = 400
    c.tokenizer_train.learning_rate = 3e-3
    # short runs: an EMA of decay 0.999 (the base's, for long runs) would still be 2/3 initial weights
    c.tokenizer_train.ema_decay = c.transformer_train.ema_decay = 0.99
    c.model.num_layers = 2
    c.model.hidden_dim = 64
    c.model.mlp_dim = 128
    c.model.conditioning = "class_token"
    c.model.null_condition = True
    if arg.context:
        c.model.conditioning = "cross_attention"
        c.model.context_dim = c.data.num_classes + 1
    c.transformer_train.steps = 600
    c.transformer_train.batch_size = 32
    c.transformer_train.learning_rate = 1e-3
    c.transformer_train.condition_dropout = 0.1
    c.sample.per_class = 4
    c.sample.guidance = 1.0
    if arg.tiny:
        c.tokenizer_train.steps = c.transformer_train.steps = 4
        c.tokenizer_train.batch_size = c.transformer_train.batch_size = 8
        c.model.num_layers, c.model.hidden_dim, c.model.mlp_dim = 1, 32, 64
        c.sample.per_class = 1
        c.sample.num_steps = 4
        c.log_every = c.checkpoint_every = 2
    return c


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/waves")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--context", action="store_true", help="cross-attention on the waves' descriptions")
    p.add_argument("--out", default=None, help="sample plot (default: WORKDIR/waves.png)")
    args = p.parse_args(argv)
    config = get_config(",".join(name for name in ("tiny", "context") if getattr(args, name)))
    train(config, args.workdir, quiet=args.tiny)
    pipe = mgt.load_pipeline(args.workdir)
    s = config.sample
    labels = np.sort(np.resize(np.arange(4, dtype=np.int32), 8 * int(s.per_class)))  # every class, in order
    condition = Condition(labels=labels, context=describe(labels, np.full(len(labels), 0.8), 4))
    waves = pipe.generate(jax.random.key(0), condition=condition, num_steps=int(s.num_steps),
                          guidance_scale=float(s.guidance))
    out = args.out or os.path.join(args.workdir, "waves.png")
    pipe.task.write_samples(out, waves, condition)
    accuracy = pipe.task.sample_metrics(np.asarray(waves), condition)["frequency_accuracy"]
    print(f"wrote {len(waves)} waves to {out}; {accuracy:.0%} have the frequency of their class")
    return waves, accuracy


if __name__ == "__main__":
    main()
