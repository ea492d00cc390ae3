"""Generation speed against the official MaskGIT code, side by side in one process.

The official implementation (github.com/google-research/maskgit, Apache-2.0) cannot ship with mgt;
give this script a checkout of it:

    git clone https://github.com/google-research/maskgit /tmp/maskgit
    python benchmarks/official.py --official /tmp/maskgit --json official.json
    python benchmarks/official.py --smoke                    # tiny models, mgt's methods only

Both sides run the same random ImageNet-256 weights, written once in the official checkpoint format
(`flax.serialization` bytes of `{"params": ...}`): mgt loads them with `mgt.pretrained.maskgit.load`,
the official code reads them as its `restore_from_path` does. Class-conditional generation, float32,
`--steps` steps (default 8, choice temperature 4.5), VQGAN decoder included:

  official_rejit   the official `parallel_decode.decode` + `VQVAE.decode_from_indices` (what
                   `ImageNet_class_conditional_generator.generate_samples` runs) under one `jax.jit`,
                   the weights as arguments — the official code at its best
  official_as_run  `generate_samples` as the official notebook calls it: a closure over the weights,
                   traced again at every call
  mgt              `MaskGITPipeline.generate`: mgt's decoding loop and VQGAN decoder as one jitted
                   function (inference runs the transformer's layers unrolled over per-layer weights)
  mgt_scan         the same with the layer loop of training (`lax.scan` over the stacked weights,
                   slicing every layer's weights out of the stack at every step), for comparison

Each method is called once (compile + run), then `--repeats` times interleaved round-robin (see
`decode.time_group`); `seconds_per_batch` is the median. Ratios `official_rejit / method` are printed.
The official code imports TensorFlow, matplotlib and requests only to read files and draw; where they
are missing, empty stand-in modules are installed for the import (nothing of them is called here).

JSON: a list of records {"method", "tokens", "batch", "steps", "seconds_per_batch", "images_per_second",
"min_seconds_per_batch", "compile_seconds", "speedup_vs_official_rejit", "device", "dtype", "model",
"repeats"}.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import tempfile
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from mgt.benchmarking import device_name, sibling_script, write_records
from mgt.pretrained import maskgit
from mgt.tokenizers.vqgan import VQGAN, VQGANConfig
from mgt.transformer import MaskedTransformer, TransformerConfig

METHODS = ("official_rejit", "official_as_run", "mgt", "mgt_scan")
# Smoke sizes: the official architecture with every width and depth shrunk.
SMOKE_TRANSFORMER = dict(num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=64, codebook_size=64, num_classes=10)
# (32 channels: the official GroupNorm always has 32 groups)
SMOKE_VQGAN = dict(base_channels=32, channel_multipliers=(1, 1, 2), num_res_blocks=1, codebook_size=64,
                   embedding_dim=16)
CHOICE_TEMPERATURE = 4.5  # the official class-conditional config's sample_choice_temperature


def _sibling(name: str):
    """Another script of this folder, imported as a module (its model sizes and set-up)."""
    return sibling_script(__file__, name)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", default=None,
                   help="path to a checkout of github.com/google-research/maskgit (the folder holding maskgit/); "
                        "without it only mgt's methods run")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny models, 1 repeat (seconds)")
    p.add_argument("--json", default=None, help="write the records here")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; expected some of {list(METHODS)}")
    if args.official is not None and not os.path.isdir(os.path.join(args.official, "maskgit", "nets")):
        p.error(f"--official {args.official!r} is not a checkout of google-research/maskgit "
                "(expected maskgit/nets/ inside it)")
    for name in ("batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.smoke:
        args.repeats = 1
    return args


# ---- the shared weights -------------------------------------------------------------------------
def write_random_official_checkpoints(folder: str, smoke: bool, seed: int) -> tuple[str, str]:
    """Random weights at ImageNet-256 size (or smoke size), written as official checkpoint files."""
    t_cfg = TransformerConfig.maskgit_imagenet(**({"image_size": 64, **SMOKE_TRANSFORMER} if smoke else {}))
    v_cfg = VQGANConfig(**(SMOKE_VQGAN if smoke else {}))
    transformer = MaskedTransformer(t_cfg, rngs=nnx.Rngs(seed))
    vqgan = VQGAN(v_cfg, rngs=nnx.Rngs(seed + 1))
    paths = os.path.join(folder, "tokenizer.ckpt"), os.path.join(folder, "maskgit.ckpt")
    maskgit.MaskGITPipeline(transformer, vqgan).save(*paths)
    return paths


# ---- the official side ----------------------------------------------------------------------------
def import_official(path: str):
    """`(maskgit_transformer, vqgan_tokenizer, parallel_decode, inference, class_cond_config)` of a checkout."""
    # The official code was written for jax 0.3: `jnp.DeviceArray` (only a type annotation there) is gone.
    if not hasattr(jnp, "DeviceArray"):
        jnp.DeviceArray = jax.Array
    for name in ("tensorflow", "tensorflow.compat", "tensorflow.compat.v1", "matplotlib", "matplotlib.pyplot",
                 "matplotlib.patches", "requests"):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["tensorflow.compat"].v1 = sys.modules["tensorflow.compat.v1"]
    sys.modules["tensorflow"].compat = sys.modules["tensorflow.compat"]
    sys.path.insert(0, os.path.abspath(path))
    from maskgit import inference
    from maskgit.configs import maskgit_class_cond_config
    from maskgit.libml import parallel_decode
    from maskgit.nets import maskgit_transformer, vqgan_tokenizer
    return maskgit_transformer, vqgan_tokenizer, parallel_decode, inference, maskgit_class_cond_config


def official_generator(official, pipe, transformer_path: str, tokenizer_path: str):
    """An official `ImageNet_class_conditional_generator` for `pipe`'s sizes holding the checkpoints'
    weights (its own `__init__` reads fixed paths with TensorFlow, so it is assembled here the same way)."""
    maskgit_transformer, vqgan_tokenizer, _, inference, class_cond_config = official
    t, v = pipe.transformer_config, pipe.vqgan_config
    cf = class_cond_config.get_config()
    cf.image_size = pipe.image_shape[0]
    cf.num_class = t.num_classes
    cf.vqvae.codebook_size = t.codebook_size
    cf.vqvae.filters = v.base_channels
    cf.vqvae.channel_multipliers = list(v.channel_multipliers)
    cf.vqvae.num_res_blocks = v.num_res_blocks
    cf.vqvae.embedding_dim = v.embedding_dim
    cf.transformer.num_layers, cf.transformer.num_embeds = t.num_layers, t.hidden_dim
    cf.transformer.num_heads, cf.transformer.intermediate_size = t.num_heads, t.mlp_dim
    gen = object.__new__(inference.ImageNet_class_conditional_generator)
    gen.maskgit_cf = cf
    gen.tokenizer_model = vqgan_tokenizer.VQVAE(config=cf, dtype=jnp.float32, train=False)
    gen.transformer_latent_size = t.grid[0]
    gen.transformer_codebook_size = t.codebook_size + t.num_classes + 1
    gen.transformer_block_size = t.grid[0] * t.grid[1] + 1
    gen.transformer_model = maskgit_transformer.Transformer(
        vocab_size=gen.transformer_codebook_size, hidden_size=t.hidden_dim, num_hidden_layers=t.num_layers,
        num_attention_heads=t.num_heads, intermediate_size=t.mlp_dim, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, max_position_embeddings=gen.transformer_block_size)
    gen.transformer_variables = _restore_from_path(transformer_path)
    gen.tokenizer_variables = _restore_from_path(tokenizer_path)
    return gen


def _restore_from_path(path: str) -> dict:
    """The official `utils.restore_from_path` without TensorFlow's file API."""
    with open(path, "rb") as f:
        return jax.tree.map(jnp.asarray, serialization.from_bytes(None, f.read()))


def official_input_tokens(gen, labels: np.ndarray) -> jax.Array:
    """`create_input_tokens_normal` for a batch of labels: class token, then mask ids (-1)."""
    cf = gen.maskgit_cf
    blank = np.full((labels.shape[0], gen.transformer_block_size - 1), cf.transformer.mask_token_id)
    return jnp.asarray(np.concatenate([labels[:, None] + cf.vqvae.codebook_size, blank], axis=1), jnp.int32)


def official_rejit_fn(official, gen, steps: int):
    """The official decode + VQGAN decode under one jax.jit, weights as arguments."""
    _, _, parallel_decode, _, _ = official
    cf = gen.maskgit_cf

    @jax.jit
    def generate(t_vars, v_vars, input_tokens, rng):
        def tokens_to_logits(seq):
            logits = gen.transformer_model.apply(t_vars, seq, deterministic=True)
            return logits[..., : cf.vqvae.codebook_size]

        out = parallel_decode.decode(input_tokens, rng, tokens_to_logits, num_iter=steps,
                                     choice_temperature=cf.sample_choice_temperature,
                                     mask_token_id=cf.transformer.mask_token_id)
        out = jnp.reshape(out[:, -1, 1:], (-1, gen.transformer_latent_size, gen.transformer_latent_size))
        return gen.tokenizer_model.apply(v_vars, out, method=gen.tokenizer_model.decode_from_indices, mutable=False)

    return generate


# ---- main ---------------------------------------------------------------------------------------
def build_methods(args, pipe, official, paths) -> dict:
    labels = np.arange(args.batch, dtype=np.int32) % pipe.num_classes
    rng = jax.random.key(args.seed)
    fns = {}
    if official is not None:
        gen = official_generator(official, pipe, paths[1], paths[0])
        tokens = official_input_tokens(gen, labels)
        rejit = official_rejit_fn(official, gen, args.steps)
        if "official_rejit" in args.methods:
            fns["official_rejit"] = lambda: rejit(gen.transformer_variables, gen.tokenizer_variables, tokens, rng)
        if "official_as_run" in args.methods:
            fns["official_as_run"] = lambda: gen.generate_samples(tokens, rng, num_iterations=args.steps)
    kw = dict(num_steps=args.steps, choice_temperature=CHOICE_TEMPERATURE)
    if "mgt" in args.methods:
        fns["mgt"] = lambda: pipe.generate(labels, rng, **kw)
    if "mgt_scan" in args.methods:
        scanned = nnx.clone(pipe.transformer)
        scanned.config = dataclasses.replace(scanned.config, decode_layers="scan")
        scan_pipe = maskgit.MaskGITPipeline(scanned, pipe.vqgan, matmul_precision=pipe.matmul_precision)
        fns["mgt_scan"] = lambda: scan_pipe.generate(labels, rng, **kw)
    return fns


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    official = import_official(args.official) if args.official else None
    with tempfile.TemporaryDirectory() as folder:
        paths = write_random_official_checkpoints(folder, args.smoke, args.seed)
        pipe = maskgit.load(*paths)
        fns = build_methods(args, pipe, official, paths)
        timings = _sibling("decode").time_group(fns, args.repeats)
    base = timings.get("official_rejit", (None,))[0]
    records, device = [], device_name()
    print(f"{'method':<16} {'batch':>5} {'steps':>5} {'s/batch':>9} {'min s':>8} {'compile s':>10} "
          f"{'vs official_rejit':>18}")
    for name, (median, fastest, compile_s) in timings.items():
        ratio = base / median if base else None
        rec = dict(method=name, tokens=pipe.spec.num_cells, batch=args.batch, steps=args.steps,
                   seconds_per_batch=median, images_per_second=args.batch / median, min_seconds_per_batch=fastest,
                   compile_seconds=compile_s, speedup_vs_official_rejit=ratio, device=device, dtype="float32",
                   model="smoke" if args.smoke else "imagenet", repeats=args.repeats)
        records.append(rec)
        shown = f"{ratio:.3f}x" if ratio else "-"
        print(f"{name:<16} {args.batch:>5} {args.steps:>5} {median:>9.3f} {fastest:>8.3f} {compile_s:>10.1f} "
              f"{shown:>18}")
    if args.json:
        write_records(args.json, records)
    return records


if __name__ == "__main__":
    main()
