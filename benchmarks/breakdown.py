"""Where the time goes: a profile of the whole generation or of a training step, broken down by part.

  generation  `mgt.GenerationPipeline.compile`: MaskGIT decoding (`--steps`, optional classifier-free
              guidance) and the VQGAN decoder as one compiled program, on a batch of `--batch` labels
  train       the transformer stage's compiled train step (`benchmarks/train.py`'s set-up: the official
              recipe with a stub tokenizer, synthetic tokens), state threaded from step to step

The program is compiled, run once, then `--repeats` calls run under `jax.profiler.trace`;
`mgt.profiling.profile` reads the trace back and adds up each executed op's time by the named scopes
the model's parts run under (transformer/layers/attention, .../mlp, .../norm, transformer/embed,
transformer/head, sampling — the decoding loop's token choice and re-masking —, vqgan_decoder; a
gradient's ops are marked [backward]). On GPU the times are the device's kernels and their sum
against the wall time shows how busy the device is; on CPU they are XLA's host thunks (several may
run at once on different threads). The raw trace stays in `--trace-dir` for TensorBoard's profile
plugin or Perfetto.

    python benchmarks/breakdown.py --model imagenet --batch 64 --dtype bfloat16 --json prof_gen.json
    python benchmarks/breakdown.py --case train --batch 256 --dtype bfloat16 --json prof_train.json
    python benchmarks/breakdown.py --model imagenet --batch 1 --repeats 2         # CPU: a few seconds a call
    python benchmarks/breakdown.py --smoke --json /tmp/prof_smoke.json            # tiny models, seconds

JSON: a list of records {"case", "scope", "seconds_per_call", "share", "device", "dtype", "batch",
"model", "steps", "repeats", "wall_seconds", "op_seconds", "device_ops", "model_flops_per_call",
"achieved_flops_per_second", "mfu", "peak_name"}; `scope` "(all ops)" holds the summed op time and
"(wall)" the median wall time of one call. Model FLOPs are XLA's count of the same computation
compiled with the layer loop unrolled (generation: the transformer forward × steps + the VQGAN
decoder); MFU divides the achieved rate by the device's peak (`benchmarks/train.py`'s table).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import jax
import numpy as np
from flax import nnx

from mgt.benchmarking import device_name, sibling_script, write_records
from mgt.pipeline import GenerationPipeline
from mgt.profiling import profile
from mgt.transformer import MaskedTransformer

CASES = ("generation", "train")


def _sibling(name: str):
    """Another script of this folder, imported as a module (its model sizes and set-up)."""
    return sibling_script(__file__, name)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=CASES, default="generation")
    p.add_argument("--model", choices=("tiny", "imagenet"), default="imagenet",
                   help="generation: transformer size (the VQGAN is the official one)")
    p.add_argument("--tokens", type=int, default=256, help="generation: tokens per image (256: 16x16, 256 px)")
    p.add_argument("--batch", type=int, default=None, help="default: 64 (generation) / 256 (train) on an "
                   "accelerator, 1 / 2 on CPU")
    p.add_argument("--steps", type=int, default=8, help="generation: decoding steps")
    p.add_argument("--guidance", type=float, default=0.0, help="generation: classifier-free guidance scale")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="compute dtype (default: bfloat16 on an accelerator, float32 on CPU)")
    p.add_argument("--remat", action="store_true", help="train: rematerialise the transformer layers")
    p.add_argument("--repeats", type=int, default=3, help="profiled calls after the first one")
    p.add_argument("--top", type=int, default=12, help="how many of the most expensive ops to list")
    p.add_argument("--trace-dir", default=None, help="where to keep the raw trace (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny models, batch 2, one profiled call")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    args = p.parse_args(argv)
    accelerator = jax.default_backend() != "cpu"
    if args.smoke:
        args.model, args.tokens, args.repeats = "smoke", 16, 1
        args.batch = args.batch or 2
    args.dtype = args.dtype or ("bfloat16" if accelerator else "float32")
    if args.batch is None:
        args.batch = ({"generation": 64, "train": 256}[args.case] if accelerator
                      else {"generation": 1, "train": 2}[args.case])
    for name in ("batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name}={getattr(args, name)}; expected >= 1")
    if math.isqrt(args.tokens) ** 2 != args.tokens:
        p.error(f"--tokens={args.tokens} is not a square number (grids are square: 256 = 16x16)")
    return args


def generation_flops(transformer, vq, batch: int, steps: int, guided: bool) -> float:
    """Model FLOPs of one generation call by XLA's count: `steps` transformer forwards (over 2·batch
    rows with guidance; counted on the lowered program with the layer loop unrolled — XLA counts a loop
    body once — without compiling it) plus the VQGAN decoder on `batch` grids."""
    cost = _sibling("train").cost_flops
    cfg = dataclasses.replace(transformer.config, scan_unroll=True)
    graphdef, state = nnx.split(MaskedTransformer(cfg, rngs=nnx.Rngs(0)))
    rows = batch * (2 if guided else 1)
    tokens = jax.ShapeDtypeStruct((rows,) + cfg.grid, jax.numpy.int32)
    labels = jax.ShapeDtypeStruct((rows,), jax.numpy.int32)
    forward = jax.jit(lambda s, t, lab: nnx.merge(graphdef, s, copy=True)(t, labels=lab)).lower(state, tokens, labels)
    vq_graphdef, vq_state = nnx.split(vq)
    decode = jax.jit(lambda s, t: nnx.merge(vq_graphdef, s, copy=True).decode(t)).lower(
        vq_state, jax.ShapeDtypeStruct((batch,) + cfg.grid, jax.numpy.int32))
    return steps * cost(forward) + cost(decode)


def generation_case(args):
    """`(compiled, run, description, model FLOPs per call)` of the whole generation."""
    decode_bench = _sibling("decode")
    side = math.isqrt(args.tokens)
    cfg = decode_bench.transformer_config(args.model, side, args.dtype)
    if args.guidance:
        cfg = dataclasses.replace(cfg, null_condition=True)
    transformer = MaskedTransformer(cfg, rngs=nnx.Rngs(args.seed))
    vq = decode_bench.make_vqgan("tiny" if args.model == "smoke" else "official", args.dtype, args.seed)
    labels = np.random.RandomState(args.seed).randint(0, cfg.num_classes, (args.batch,)).astype(np.int32)
    compiled, run = GenerationPipeline(transformer, vq).compile(jax.random.key(args.seed), labels=labels,
                                                                num_steps=args.steps, guidance_scale=args.guidance)
    what = (f"MaskGIT {args.steps} steps{f' + guidance {args.guidance}' if args.guidance else ''} + VQGAN decode, "
            f"{cfg.num_layers}x{cfg.hidden_dim} transformer, {args.tokens} tokens")
    return compiled, run, what, generation_flops(transformer, vq, args.batch, args.steps, bool(args.guidance))


def train_case(args):
    """`(compiled, run, description, model FLOPs per call)` of the transformer stage's train step."""
    from mgt.modalities import make_task
    from mgt.training.trainer import make_mesh
    from mgt.training.transformer_stage import TransformerStage

    train_bench = _sibling("train")
    targs = argparse.Namespace(image_size=16 * math.isqrt(args.tokens), dtype=args.dtype, batch=args.batch,
                               tokenizer_batch=args.batch, adversarial=False, smoke=args.model == "smoke")
    config = train_bench.make_config(targs, remat=args.remat)
    mesh = make_mesh(config)
    with jax.set_mesh(mesh):
        stage = TransformerStage(config, make_task(config), mesh, workdir="/nonexistent",
                                 tokenizer=train_bench.StubTokenizer(), tokenizer_step=0, quiet=True)
        cfg = stage.model_config
        rng = np.random.RandomState(args.seed)
        batch = stage.batch_to_device({
            "tokens": rng.randint(0, cfg.codebook_size, (args.batch,) + cfg.grid).astype(np.int32),
            "label": rng.randint(0, cfg.num_classes, (args.batch,)).astype(np.int32)})
        state = [stage.init_state()]
        key = jax.random.key(args.seed)
        compiled = stage.train_step.lower(state[0], batch, key).compile()
        counted = TransformerStage(train_bench.make_config(targs, remat=False, unroll=True), stage.task, mesh,
                                   workdir="/nonexistent", tokenizer=train_bench.StubTokenizer(), tokenizer_step=0,
                                   quiet=True).train_step.lower(state[0], batch, key)  # analysed, not compiled
        flops = train_bench.cost_flops(counted) * mesh.size

    def run():  # the step donates its state: thread it from call to call
        with jax.set_mesh(mesh):
            state[0], _ = compiled(state[0], batch, key)
        return state[0]

    what = (f"transformer train step, {cfg.num_layers}x{cfg.hidden_dim}, T={cfg.seq_len}, "
            f"remat {'on' if args.remat else 'off'}")
    return compiled, run, what, flops


def main(argv=None) -> list[dict]:
    """Profile one case; prints the breakdown and returns (and with `--json`, writes) the records."""
    args = parse_args(argv)
    device = device_name()
    compiled, run, what, flops = (generation_case if args.case == "generation" else train_case)(args)
    peak, peak_name = _sibling("train").peak_flops(args.dtype)
    print(f"profile: {args.case} — {what}; batch {args.batch}, {args.dtype}, {device}, {args.repeats} calls",
          flush=True)
    result = profile(run, compiled, repeats=args.repeats, trace_dir=args.trace_dir)
    print(result.table(args.top))
    achieved = flops / result.wall_seconds
    mfu = None if peak is None else achieved / (peak * jax.device_count())
    print(f"\n  model FLOPs per call {flops / 1e9:.1f} GFLOP (XLA's count); achieved {achieved / 1e12:.3f} TFLOP/s"
          + ("" if mfu is None else f" = {100 * mfu:.1f} % of {peak_name}") + " at the wall time")
    print(f"  trace: {result.trace_dir}  (TensorBoard profile plugin or ui.perfetto.dev)")
    common = dict(case=args.case, device=device, dtype=args.dtype, batch=args.batch, model=args.model,
                  steps=args.steps if args.case == "generation" else None, repeats=args.repeats,
                  wall_seconds=result.wall_seconds, op_seconds=result.op_seconds, device_ops=result.device_ops,
                  model_flops_per_call=flops, achieved_flops_per_second=achieved, mfu=mfu, peak_name=peak_name)
    records = [dict(rec, **common) for rec in result.records()]
    write_records(args.json, records)
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
