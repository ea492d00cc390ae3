"""Tokenizer benchmark: reconstruction quality on held-out digits, and VQGAN encode / decode speed.

quality     a VQGAN trained on the digits training split (`configs/image/digits.py`) reconstructs the
            held-out test split (180 digits, never seen in training): PSNR (dB, mean over images of
            10·log10(1 / MSE), reconstructions clipped to [0, 1]), MSE, codebook usage (share of the codes
            that occur over the whole test set) and perplexity (exp of the entropy of the test set's code
            histogram). The tokenizer is the EMA weights of `--workdir`'s latest tokenizer checkpoint (a
            workdir from `mgt train --config configs/image/digits.py`), or, without `--workdir`, one trained
            here for `--train-steps` steps (default: the config's 1500) with
            `mgt.training.train(config, tmpdir, stage="tokenizer")`.
throughput  encode (images → tokens) and decode (tokens → images) of the official ImageNet VQGAN
            (54.5 M parameters, factor 16, 1024 codes; random weights — speed does not depend on them) at
            `--image-size` px and `--batch`. Each jitted function is compiled ahead of time
            (`compile_seconds`: lower + compile), called once (`first_call_seconds`), then `--repeats` more
            times, each call ended by `block_until_ready`; the time per batch is the median of the repeats.

    python benchmarks/tokenizer.py --json /tmp/tokenizer.json               # trains 1500 steps first
    python benchmarks/tokenizer.py --workdir runs/digits --parts quality
    python benchmarks/tokenizer.py --parts throughput --dtype bfloat16 --batch 32
    python benchmarks/tokenizer.py --smoke --json /tmp/tokenizer_smoke.json    # well under a minute on CPU

JSON: a list of records {"benchmark", "metric", "value", "unit", "device", "dtype", "batch", "model",
"image_size", ...}: benchmark "tokenizer/quality" (metrics psnr, mse, codebook_usage, perplexity,
train_seconds) or "tokenizer/throughput" (metrics encode_images_per_second, decode_images_per_second,
encode_seconds_per_batch, decode_seconds_per_batch, encode_compile_seconds, decode_compile_seconds,
encode_first_call_seconds, decode_first_call_seconds).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import pathlib
import sys
import tempfile
import time

from mgt.benchmarking import device_name, time_call, write_records

PARTS = ("quality", "throughput")
ROOT = pathlib.Path(__file__).resolve().parents[1]
DIGITS_CONFIG = ROOT / "configs" / "image" / "digits.py"
# --smoke: a tiny VQGAN (factor 4) for the throughput part, at 32 px.
SMOKE_VQGAN = dict(base_channels=16, channel_multipliers=(1, 2, 2), num_res_blocks=1, num_groups=8,
                   codebook_size=64, embedding_dim=16)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--workdir", default=None,
                   help="a trained digits workdir (its tokenizer EMA weights); without it a VQGAN is trained here")
    p.add_argument("--train-steps", type=int, default=None,
                   help="tokenizer training steps when there is no --workdir (default: the digits config's "
                        "tokenizer_train.steps, 1500 — a few minutes on a 2-core CPU)")
    p.add_argument("--batch", type=int, default=None,
                   help="throughput batch size (default: 8 on CPU, 32 on an accelerator)")
    p.add_argument("--image-size", type=int, default=256, help="throughput image side (a multiple of 16)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype of the throughput VQGAN (parameters stay float32)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the first (compiling) one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="tiny VQGANs, 2 training steps, 32 px, batch 2, one repetition (a quick self-check)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    args = p.parse_args(argv)

    import jax

    args.parts = tuple(s.strip() for s in args.parts.split(",") if s.strip())
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown or not args.parts:
        p.error(f"--parts={','.join(args.parts)!r}: unknown {unknown}; expected a subset of {PARTS}")
    if args.workdir is not None and args.train_steps is not None:
        p.error("--workdir and --train-steps exclude each other: the workdir's tokenizer is already trained")
    if args.workdir is not None and not os.path.isdir(args.workdir):
        p.error(f"--workdir={args.workdir!r} is not a folder")
    if args.smoke:
        # the quality part trains the digits `:tiny` tokenizer exactly as its config says (6 steps,
        # batch 8), so the test session's compilation cache already holds its train step
        args.train_steps, args.image_size, args.batch, args.repeats = None, 32, 2, 1
    if args.batch is None:
        args.batch = 8 if jax.default_backend() == "cpu" else 32
    for name in ("batch", "repeats") + (("train_steps",) if args.train_steps is not None else ()):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}; expected >= 1")
    factor = 2 ** (len(SMOKE_VQGAN["channel_multipliers"]) - 1) if args.smoke else 16
    if args.image_size < factor or args.image_size % factor:
        p.error(f"--image-size={args.image_size}; expected a multiple of the VQGAN's factor {factor}")
    return args


# ---- quality ---------------------------------------------------------------------------------------
def digits_config(variant: str | None = None):
    """`configs/image/digits.py`'s `get_config(variant)`, loaded by file path."""
    if not DIGITS_CONFIG.is_file():
        raise FileNotFoundError(f"the digits config {DIGITS_CONFIG} is missing (run from a checkout of mgt)")
    spec = importlib.util.spec_from_file_location("mgt_config_digits", DIGITS_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def load_tokenizer(workdir: str):
    """`(config, task, tokenizer with EMA weights, step)` from a workdir's latest tokenizer checkpoint.

    Only the tokenizer checkpoint is needed (`mgt.load_pipeline` also wants the transformer's)."""
    import jax

    from mgt.modalities import make_task
    from mgt.training.loop import latest_state
    from mgt.training.tokenizer_stage import TokenizerStage
    from mgt.training.trainer import load_config, make_mesh

    config = load_config(workdir)
    if config.data.source != "digits":
        raise ValueError(f"--workdir {workdir!r} was trained on data.source={config.data.source!r}; the quality "
                         "benchmark measures held-out digits (a digits workdir, e.g. configs/image/digits.py)")
    task = make_task(config)
    mesh = make_mesh(config)
    with jax.set_mesh(mesh):
        stage = TokenizerStage(config, task, mesh, workdir=workdir)
        state, step = latest_state(stage, workdir)
        return config, task, stage.model_from_state(state), int(step)


def train_tokenizer(steps: int | None, *, smoke: bool, seed: int):
    """Train the digits config's VQGAN for `steps` steps (None: the config's own) in a temporary workdir.

    Returns `(config, task, tokenizer with EMA weights, steps, seconds)`."""
    import jax
    from flax import nnx

    from mgt import sharding
    from mgt.modalities import make_task
    from mgt.training import train
    from mgt.training.builders import make_tokenizer

    config = digits_config("tiny" if smoke else None)
    config.seed = seed
    steps = int(config.tokenizer_train.steps) if steps is None else steps
    config.tokenizer_train.steps = steps
    config.log_every = steps
    config.checkpoint_every = steps
    config.sample_every = 0
    with tempfile.TemporaryDirectory(prefix="mgt_tokenizer_bench_") as workdir:
        start = time.perf_counter()
        state = train(config, workdir, stage="tokenizer", quiet=True)["tokenizer"]
        jax.block_until_ready(state)
        seconds = time.perf_counter() - start
    # as TokenizerStage.model_from_state (EMA weights), with the graphdef of an abstract model: building
    # another stage would initialise a throw-away model eagerly
    graphdef = nnx.graphdef(sharding.abstract_model(lambda: make_tokenizer(config)))
    tokenizer = nnx.merge(graphdef, state["ema"], state["rest"], copy=True)
    return config, make_task(config), tokenizer, steps, seconds


def reconstruction_metrics(tokenizer, images, *, chunk: int = 256) -> dict:
    """float32 images `[N, H, W, 3]` in [0, 1] → {psnr, mse, codebook_usage, perplexity, tokens}."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    graphdef, state = nnx.split(tokenizer)

    @jax.jit
    def roundtrip(state, x):
        model = nnx.merge(graphdef, state, copy=True)
        tokens = model.encode(x)
        return tokens, jnp.clip(model.decode(tokens), 0.0, 1.0)

    n = len(images)
    size = min(chunk, n)
    all_tokens, all_recon = [], []
    for i in range(0, n, size):
        x = images[i:i + size]
        m = len(x)
        if m < size:  # pad the last chunk: one compiled shape
            x = np.concatenate([x, np.zeros((size - m,) + x.shape[1:], x.dtype)])
        tokens, recon = roundtrip(state, jnp.asarray(x))
        all_tokens.append(np.asarray(tokens)[:m])
        all_recon.append(np.asarray(recon)[:m])
    tokens, recon = np.concatenate(all_tokens), np.concatenate(all_recon)
    mse = np.mean(np.square(recon.astype(np.float64) - images.astype(np.float64)), axis=(1, 2, 3))
    psnr = 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))
    counts = np.bincount(tokens.reshape(-1), minlength=tokenizer.codebook_size)
    probs = counts / counts.sum()
    nz = probs[probs > 0]
    return {"psnr": float(psnr.mean()), "mse": float(mse.mean()),
            "codebook_usage": float(np.count_nonzero(counts) / tokenizer.codebook_size),
            "perplexity": float(np.exp(-np.sum(nz * np.log(nz)))), "codes_used": int(np.count_nonzero(counts)),
            "tokens_per_image": int(np.prod(tokens.shape[1:]))}


def bench_quality(args, emit) -> None:
    import numpy as np

    if args.workdir:
        config, task, tokenizer, step = load_tokenizer(args.workdir)
        train_seconds, origin = None, f"workdir {args.workdir} (step {step})"
    else:
        print(f"[quality] training the digits VQGAN for {args.train_steps or 'the config'} steps ...", flush=True)
        config, task, tokenizer, step, train_seconds = train_tokenizer(args.train_steps, smoke=args.smoke,
                                                                       seed=args.seed)
        origin = f"trained here ({step} steps, {train_seconds:.1f} s)"
    test = task.source("test")
    images = np.asarray(test.images, np.float32) / 255.0
    m = reconstruction_metrics(tokenizer, images)
    model = f"digits VQGAN {tuple(config.tokenizer.channel_multipliers)} x {config.tokenizer.base_channels}, " \
            f"{tokenizer.codebook_size} codes"
    extra = dict(model=model, image_size=task.image_size, batch=min(256, len(images)), test_images=len(images),
                 train_steps=step, codebook_size=tokenizer.codebook_size, tokenizer_dtype=tokenizer.config.dtype,
                 source=origin)
    print(f"[quality] {model}, {origin}; {len(images)} held-out digits at {task.image_size} px, "
          f"{m['tokens_per_image']} tokens each, {m['codes_used']} codes used", flush=True)
    for metric, unit in (("psnr", "dB"), ("mse", "mean squared error"), ("codebook_usage", "fraction"),
                         ("perplexity", "codes")):
        emit("tokenizer/quality", metric, m[metric], unit, **extra)
    if train_seconds is not None:
        emit("tokenizer/quality", "train_seconds", train_seconds, "s", **extra)


# ---- throughput ------------------------------------------------------------------------------------
def bench_throughput(args, emit) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from mgt.tokenizers.vqgan import VQGAN, VQGANConfig

    vq_config = VQGANConfig(dtype=args.dtype, **(SMOKE_VQGAN if args.smoke else {}))
    make = lambda: VQGAN(vq_config, rngs=nnx.Rngs(args.seed))
    graphdef, _ = nnx.split(nnx.eval_shape(make))
    state = jax.jit(lambda: nnx.state(make()))()  # random weights, initialised in one compiled call
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))

    @jax.jit
    def encode(state, images):
        return nnx.merge(graphdef, state, copy=True).encode(images)

    @jax.jit
    def decode(state, tokens):
        return nnx.merge(graphdef, state, copy=True).decode(tokens)

    rng = np.random.RandomState(args.seed)
    b, s, f = args.batch, args.image_size, vq_config.downsample_factor
    images = jnp.asarray(rng.uniform(0, 1, (b, s, s, 3)).astype(np.float32))
    tokens = jnp.asarray(rng.randint(0, vq_config.codebook_size, (b, s // f, s // f)).astype(np.int32))
    model = "smoke VQGAN" if args.smoke else "official ImageNet VQGAN"
    extra = dict(model=model, image_size=s, batch=b, repeats=args.repeats, parameters=params,
                 tokens_per_image=(s // f) ** 2)
    print(f"[throughput] {model} ({params / 1e6:.1f} M parameters) at {s} px, batch {b}, dtype {args.dtype}",
          flush=True)
    for name, fn, arg in (("encode", encode, images), ("decode", decode, tokens)):
        t = time_call(fn, (state, arg), args.repeats)
        emit("tokenizer/throughput", f"{name}_images_per_second", b / t["run"], "images/s", **extra)
        emit("tokenizer/throughput", f"{name}_seconds_per_batch", t["run"], "s", **extra)
        emit("tokenizer/throughput", f"{name}_compile_seconds", t["compile"], "s", **extra)
        emit("tokenizer/throughput", f"{name}_first_call_seconds", t["first"], "s", **extra)


# ---- main ------------------------------------------------------------------------------------------
def main(argv=None) -> list[dict]:
    """Run the benchmark; prints a table and returns (and with `--json`, writes) the records."""
    args = parse_args(argv)
    device = device_name()
    records: list[dict] = []

    def emit(benchmark, metric, value, unit, *, batch, **extra):
        dtype = extra.pop("tokenizer_dtype", args.dtype)
        records.append(dict(benchmark=benchmark, metric=metric, value=value, unit=unit, device=device, dtype=dtype,
                            batch=batch, **extra))

    print(f"tokenizer benchmark: parts={','.join(args.parts)} device={device}", flush=True)
    if "quality" in args.parts:
        bench_quality(args, emit)
    if "throughput" in args.parts:
        bench_throughput(args, emit)

    print(f"\n  {'benchmark':<22} {'metric':<28} {'value':>12} {'unit':<20} {'dtype':<9} {'batch':>5}")
    for r in records:
        value = r["value"]
        text = f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
        print(f"  {r['benchmark']:<22} {r['metric']:<28} {text:>12} {r['unit']:<20} {r['dtype']:<9} {r['batch']:>5}")
    write_records(args.json, records)
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
