"""Decoding speed: MaskGIT parallel decoding vs the autoregressive baseline (KV cache), the VQGAN
decoder, and the whole generation (tokens → pixels).

Measures, for each token count (256 = 16×16 grid / 256 px, 1024 = 32×32 / 512 px) and batch size:
  maskgit         `mgt.sampling.sample` at each `--steps` count
  ar              `mgt.ar.ar_sample`: N sequential steps with a KV cache
  vqgan_decode    the VQGAN decoder (official size by default) on a token grid
  maskgit+vqgan   `mgt.GenerationPipeline.generate`: MaskGIT decoding (first `--steps` value) and the VQGAN
                  decoder compiled as one function
  ar+vqgan        one jitted function: AR decoding then the VQGAN decoder
Every function is called once (compile + run), then `--repeats` more times, each call ended by
`block_until_ready`; the timed calls of the methods compared with each other are interleaved
round-robin, so that a shared machine's changing load hits them alike. `seconds_per_batch` is the
median of the repeats, `min_seconds_per_batch` the fastest, and `compile_seconds` the first call
minus the median. Weights are random (speed does not depend on them). MaskGIT / AR speed
ratios are printed side by side from the same run.

    python benchmarks/decode.py --model tiny --json /tmp/decode_tiny.json
    python benchmarks/decode.py --model imagenet --tokens 256 --batches 1 --steps 8 --methods maskgit,ar
    python benchmarks/decode.py --smoke --json /tmp/smoke.json      # seconds on CPU (MaskGIT at 8 steps only)

JSON: a list of records {"method", "tokens", "batch", "steps", "seconds_per_batch",
"images_per_second", "device", "dtype", "compile_seconds", "min_seconds_per_batch", "model",
"repeats", "image_size"}.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.ar import ARTransformer, ar_decode_loop, ar_sample
from mgt.benchmarking import device_name, write_records
from mgt.pipeline import GenerationPipeline
from mgt.sampling import sample
from mgt.tokenizers.vqgan import VQGAN, VQGANConfig
from mgt.transformer import MaskedTransformer, TransformerConfig

METHODS = ("maskgit", "ar", "vqgan", "generation")
MODELS = ("tiny", "imagenet")

# The "tiny" transformer keeps the official vocabulary (1024 codes, 1000 classes) so that it drives
# the official-size VQGAN; "smoke" is smaller still, with a matching tiny VQGAN.
TINY = dict(num_layers=2, hidden_dim=128, num_heads=4, mlp_dim=512, codebook_size=1024, num_classes=1000,
            block_style="maskgit", conditioning="class_token")
SMOKE = dict(num_layers=1, hidden_dim=32, num_heads=4, mlp_dim=64, codebook_size=64, num_classes=10,
             block_style="maskgit", conditioning="class_token")
SMOKE_VQGAN = dict(base_channels=16, channel_multipliers=(1, 2, 2), num_res_blocks=1, num_groups=8,
                   codebook_size=64, embedding_dim=16)


def _int_list(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--{name}={text!r}; expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--{name}={text!r}; expected positive integers")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="tiny",
                   help="imagenet: the official MaskGIT size (24 layers, 768 wide); tiny: 2 layers, 128 wide")
    p.add_argument("--tokens", type=lambda s: _int_list(s, "tokens"), default=(256, 1024),
                   help="token counts (square grids): 256 = 16x16 (256 px), 1024 = 32x32 (512 px)")
    p.add_argument("--batches", type=lambda s: _int_list(s, "batches"), default=(1, 32),
                   help="batch sizes: 1 for latency, 32 for throughput")
    p.add_argument("--steps", type=lambda s: _int_list(s, "steps"), default=None,
                   help="MaskGIT decoding steps (default 8,12,16; 8 with --smoke)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--vqgan", choices=("official", "tiny"), default="official",
                   help="VQGAN size for the decoder and whole-generation records")
    p.add_argument("--vqgan-batches", type=lambda s: _int_list(s, "vqgan-batches"), default=None,
                   help="batch sizes of the VQGAN / whole-generation records (default: --batches on an "
                        "accelerator, 1 on CPU, where the official decoder at 512 px takes seconds per image)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="also find the largest MaskGIT batch that fits: double the batch from the largest of "
                        "--batches up to this cap, stopping at the first out-of-memory error (e.g. 4096 on a GPU)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the first (compiling) one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="tiny model, 16 tokens, batch 1, one repetition, tiny VQGAN (a quick self-check)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    args = p.parse_args(argv)
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        p.error(f"--methods={','.join(args.methods)!r}: unknown {unknown}; expected a subset of {METHODS}")
    if args.repeats < 1:
        p.error(f"--repeats={args.repeats}; expected >= 1")
    if args.smoke:
        args.model, args.tokens, args.batches, args.repeats, args.vqgan = "smoke", (16,), (1,), 1, "tiny"
        args.steps = args.steps or (8,)
    args.steps = args.steps or (8, 12, 16)
    for n in args.tokens:
        if math.isqrt(n) ** 2 != n:
            p.error(f"--tokens: {n} is not a square number (grids are square: 256 = 16x16)")
    if args.vqgan_batches is None:
        args.vqgan_batches = args.batches if jax.default_backend() != "cpu" else (min(args.batches),)
    return args


# ----------------------------------------------------------------------------------------------
def transformer_config(model: str, side: int, dtype: str) -> TransformerConfig:
    if model == "imagenet":
        return TransformerConfig.maskgit_imagenet(16 * side, dtype=dtype)
    sizes = SMOKE if model == "smoke" else TINY
    return TransformerConfig(grid=(side, side), dtype=dtype, **sizes)


def make_vqgan(kind: str, dtype: str, seed: int) -> VQGAN:
    sizes = SMOKE_VQGAN if kind == "tiny" else {}
    return VQGAN(VQGANConfig(dtype=dtype, **sizes), rngs=nnx.Rngs(seed))


def time_group(fns: dict, repeats: int) -> dict:
    """Time several functions side by side: each is called once (compile + run), then the timed calls
    are interleaved round-robin so that every method sees the same machine load (a shared CPU's
    load changes from minute to minute). Every call ends with `block_until_ready`.

    Returns {name: (median seconds, min seconds, compile seconds = first call − median)}.
    """
    first, times = {}, {name: [] for name in fns}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn())
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    out = {}
    for name in fns:
        median = statistics.median(times[name])
        out[name] = (median, min(times[name]), max(first[name] - median, 0.0))
    return out


@functools.partial(jax.jit, static_argnums=(0, 2))
def _ar_generation(graphdef, state, vq_graphdef, vq_state, keys, labels):
    model = nnx.merge(graphdef, state, copy=True)
    tokens = ar_decode_loop(model, keys, labels=labels)
    vq = nnx.merge(vq_graphdef, vq_state, copy=True)
    return vq.decode_codes(vq.quantizer.decode(tokens))


@functools.partial(jax.jit, static_argnums=(0,))
def _vqgan_decode(vq_graphdef, vq_state, tokens):
    vq = nnx.merge(vq_graphdef, vq_state, copy=True)
    return vq.decode_codes(vq.quantizer.decode(tokens))


# ----------------------------------------------------------------------------------------------
def main(argv=None) -> list[dict]:
    """Run the benchmark; prints tables and returns (and with `--json`, writes) the records."""
    args = parse_args(argv)
    device = device_name()
    rng = np.random.RandomState(args.seed)
    records: list[dict] = []

    def record(timing, method, tokens, batch, steps, image_size=None, largest_batch=False):
        seconds, fastest, compile_seconds = timing
        rec = dict(method=method, tokens=tokens, batch=batch, steps=steps, seconds_per_batch=seconds,
                   images_per_second=batch / seconds if seconds > 0 else float("inf"), device=device,
                   dtype=args.dtype, compile_seconds=compile_seconds, min_seconds_per_batch=fastest,
                   model=args.model, repeats=args.repeats, image_size=image_size, largest_batch=largest_batch)
        records.append(rec)
        steps_text = "-" if steps is None else str(steps)
        print(f"  {method:>14} {steps_text:>6} {tokens:>7} {batch:>6} {seconds:>12.4f} {fastest:>12.4f} "
              f"{rec['images_per_second']:>10.2f} {compile_seconds:>10.2f}", flush=True)

    print(f"decode benchmark: model={args.model} dtype={args.dtype} device={device} repeats={args.repeats}")
    print(f"  {'method':>14} {'steps':>6} {'tokens':>7} {'batch':>6} {'s/batch':>12} {'min s':>12} {'img/s':>10} "
          f"{'compile s':>10}")
    need_vqgan = "vqgan" in args.methods or "generation" in args.methods
    vq = make_vqgan(args.vqgan, args.dtype, args.seed) if need_vqgan else None
    vq_graphdef, vq_state = nnx.split(vq) if vq is not None else (None, None)
    for n in args.tokens:
        side = math.isqrt(n)
        cfg = transformer_config(args.model, side, args.dtype)
        if vq is not None and vq.codebook_size != cfg.codebook_size:
            raise ValueError(f"--vqgan={args.vqgan} has {vq.codebook_size} codes but the transformer has "
                             f"{cfg.codebook_size}; use matching sizes")
        needs_maskgit = "maskgit" in args.methods or "generation" in args.methods
        needs_ar = "ar" in args.methods or "generation" in args.methods
        maskgit = MaskedTransformer(cfg, rngs=nnx.Rngs(args.seed)) if needs_maskgit else None
        ar = ARTransformer(cfg, rngs=nnx.Rngs(args.seed)) if needs_ar else None
        image_size = side * vq.downsample_factor if vq is not None else None
        key = jax.random.key(args.seed)

        # token generation: MaskGIT at each step count and AR, interleaved
        for b in args.batches:
            labels = rng.randint(0, cfg.num_classes, (b,)).astype(np.int32)
            fns = {}
            if "maskgit" in args.methods:
                for steps in args.steps:
                    fns[("maskgit", steps)] = functools.partial(sample, maskgit, key, labels=labels, num_steps=steps)
            if "ar" in args.methods:
                fns[("ar", n)] = functools.partial(ar_sample, ar, key, labels=labels)
            if fns:
                for (method, steps), timing in time_group(fns, args.repeats).items():
                    record(timing, method, n, b, steps)

        # the largest MaskGIT batch that fits in memory (doubling until the first out-of-memory error)
        if args.max_batch and maskgit is not None:
            best, b = None, max(args.batches) * 2
            while b <= args.max_batch:
                labels = rng.randint(0, cfg.num_classes, (b,)).astype(np.int32)
                fn = functools.partial(sample, maskgit, key, labels=labels, num_steps=args.steps[0])
                try:
                    best = (b, time_group({("maskgit", args.steps[0]): fn}, args.repeats)[("maskgit", args.steps[0])])
                except Exception as e:  # XLA reports exhausted device memory as a runtime error
                    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                        raise
                    break
                b *= 2
            if best is not None:
                record(best[1], "maskgit", n, best[0], args.steps[0], largest_batch=True)

        # the VQGAN decoder and the whole generation (tokens → pixels), interleaved
        if vq is None:
            continue
        for b in args.vqgan_batches:
            labels = jnp.asarray(rng.randint(0, cfg.num_classes, (b,)), jnp.int32)
            keys = jax.random.split(key, b)
            fns = {}
            if "vqgan" in args.methods:
                codes = jnp.asarray(rng.randint(0, vq.codebook_size, (b, side, side)), jnp.int32)
                fns[("vqgan_decode", None)] = functools.partial(_vqgan_decode, vq_graphdef, vq_state, codes)
            if "generation" in args.methods:
                steps = args.steps[0]
                ar_graphdef, ar_state = nnx.split(ar)
                fns[("maskgit+vqgan", steps)] = functools.partial(
                    GenerationPipeline(maskgit, vq).generate, keys, labels=labels, num_steps=steps)
                fns[("ar+vqgan", n)] = functools.partial(
                    _ar_generation, ar_graphdef, ar_state, vq_graphdef, vq_state, keys, labels)
            for (method, steps), timing in time_group(fns, args.repeats).items():
                record(timing, method, n, b, steps, image_size)
        del maskgit, ar

    print_ratios(records)
    write_records(args.json, records)
    return records


def print_ratios(records: list[dict]) -> None:
    """MaskGIT vs AR side by side: seconds per batch and the speed-up AR time / MaskGIT time."""
    pairs = [("maskgit", "ar"), ("maskgit+vqgan", "ar+vqgan")]
    rows = []
    for mg_name, ar_name in pairs:
        for ar_rec in (r for r in records if r["method"] == ar_name):
            for mg in records:
                if mg["method"] == mg_name and (mg["tokens"], mg["batch"]) == (ar_rec["tokens"], ar_rec["batch"]):
                    rows.append((mg_name, mg["steps"], mg["tokens"], mg["batch"], mg["seconds_per_batch"],
                                 ar_rec["seconds_per_batch"], ar_rec["seconds_per_batch"] / mg["seconds_per_batch"]))
    if not rows:
        return
    print("\nMaskGIT vs AR (same run): speed-up = AR seconds / MaskGIT seconds")
    print(f"  {'method':>14} {'steps':>6} {'tokens':>7} {'batch':>6} {'MaskGIT s':>11} {'AR s':>11} {'speed-up':>9}")
    for name, steps, n, b, mg_s, ar_s, ratio in rows:
        print(f"  {name:>14} {steps:>6} {n:>7} {b:>6} {mg_s:>11.4f} {ar_s:>11.4f} {ratio:>8.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
