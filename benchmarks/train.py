"""Training throughput and model-FLOPs utilisation of the two training stages at the ImageNet size.

  transformer  `TransformerStage`'s compiled step with the official MaskGIT ImageNet-256 sizes (24 layers,
               hidden 768, 16 heads, MLP 3072, 257 positions = class token + 16×16 codes; Adam, EMA,
               dropout 0.1, label smoothing), from `mgt.pretrained.maskgit_recipe.get_config()`
  tokenizer    `TokenizerStage`'s compiled step with the official VQGAN (256 px, factor 16, 1024 codes);
               with `--adversarial` also the StyleGAN discriminator step (GAN loss + R1). The perceptual
               term is left out: its weights are a local file the recipe does not ship.

The steps are the trainer's own (`stage.train_step`, built from the recipe config with a stub task and,
for the transformer, a stub tokenizer that only supplies the 16×16 token grid) run on synthetic batches
put on the mesh by `stage.batch_to_device`; data loading is not measured. Each case is compiled
explicitly (`compile_seconds`), run once to warm up, then `--steps` steps are timed with
`block_until_ready` on the new state.

Model FLOPs per step come from XLA's cost analysis of the compiled step. XLA counts the body of a loop
once whatever its trip count, and the transformer scans its layers, so the transformer's count is taken
from the same step lowered (not compiled: the analysis of the lowered HLO counts the same matmuls) with
the layer scan fully unrolled and without rematerialisation
(`TransformerConfig.scan_unroll=True`; model FLOPs do not include recomputation; both `--remat`
cases use it; the benchmark fails if the counted program still has a loop). For the transformer the analytic
estimate batch · T · (6·N + 12·L·T·D) is reported too (N: matmul parameters — all parameters of two or
more dimensions except the position table, the tied word embeddings counting as the output layer; T =
257; the second term is attention scores and values). MFU = model FLOPs/s ÷ the device's peak FLOPs/s:
peaks are looked up from `jax.devices()[0].device_kind` (H100 / H200 SXM: bf16 989e12, tf32 494e12, fp32
67e12; A100: bf16 312e12, tf32 156e12, fp32 19.5e12; float32 runs use the tf32 peak unless
`jax_default_matmul_precision` asks for full float32); on CPU pass `--peak-flops` or MFU is null.

    python benchmarks/train.py                                  # GPU: batch 256 (transformer), 16 (tokenizer)
    python benchmarks/train.py --stages transformer --batch 2 --steps 3 --json /tmp/train_cpu.json
    python benchmarks/train.py --stages tokenizer --adversarial --dtype bfloat16
    python benchmarks/train.py --smoke --json /tmp/train_smoke.json    # tiny models, well under a minute

JSON: a list of records {"benchmark", "metric", "value", "unit", "device", "dtype", "batch", "remat",
"model", "steps", "devices", "peak_flops", "peak_name"}; `benchmark` is "train/transformer" or
"train/tokenizer", `metric` one of steps_per_second, tokens_per_second / images_per_second,
seconds_per_step, compile_seconds, model_flops_per_step (XLA), analytic_flops_per_step (transformer),
mfu, mfu_analytic (transformer), final_loss.
"""

from __future__ import annotations

import argparse
import sys
import time

from mgt.benchmarking import device_name, write_records

STAGES = ("transformer", "tokenizer")

# (substring of the lower-cased device_kind, name, {precision: peak dense FLOP/s per device}); first match wins.
PEAKS = (
    ("h100 pcie", "H100 PCIe", {"bfloat16": 756e12, "tf32": 378e12, "float32": 51e12}),
    ("h200", "H200 SXM", {"bfloat16": 989e12, "tf32": 494e12, "float32": 67e12}),
    ("h100", "H100 SXM", {"bfloat16": 989e12, "tf32": 494e12, "float32": 67e12}),
    ("a100", "A100", {"bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12}),
)

# --smoke: 32 px — a 2-layer transformer on a 2×2 grid (its layer scan is still a loop) and a tiny VQGAN.
SMOKE_MODEL = dict(num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=64)
SMOKE_TOKENIZER = dict(base_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, num_groups=8,
                       codebook_size=64, embedding_dim=16)


# ---- arguments ---------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--batch", type=int, default=None,
                   help="transformer batch size (default: 256 on an accelerator, 2 on CPU)")
    p.add_argument("--tokenizer-batch", type=int, default=None,
                   help="tokenizer batch size (default: 16 on an accelerator — the recipe's 256 is a global "
                        "batch over many devices — and --batch on CPU)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per case (default: 20 on an accelerator, 3 on CPU)")
    p.add_argument("--remat", choices=("both", "on", "off"), default=None,
                   help="transformer layer rematerialisation: with, without, or both side by side "
                        "(default: both; off with --smoke)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="compute dtype, parameters stay float32 (default: bfloat16 — the recipe's — on an "
                        "accelerator, float32 on CPU)")
    p.add_argument("--attention-dropout", type=float, default=None,
                   help="transformer attention dropout (default: the recipe's 0.1, which keeps the explicit "
                        "attention path; 0 lets XLA / cuDNN use fused attention)")
    p.add_argument("--adversarial", action="store_true",
                   help="tokenizer: add the discriminator (official adversarial weight 0.1, R1 10)")
    p.add_argument("--image-size", type=int, default=256, help="image side (256: 16×16 tokens, 257 positions)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="peak FLOP/s of one device (overrides the table; needed for MFU on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="tiny transformer and VQGAN (32 px), batch 2, 2 steps, no remat (a quick self-check)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    args = p.parse_args(argv)

    import jax

    args.stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown or not args.stages:
        p.error(f"--stages={','.join(args.stages)!r}: unknown {unknown}; expected a subset of {STAGES}")
    accelerator = jax.default_backend() != "cpu"
    if args.smoke:
        args.batch, args.tokenizer_batch, args.steps, args.image_size = 2, 2, 2, 32
        args.remat = args.remat or "off"
    args.remat = args.remat or "both"
    if args.dtype is None:
        args.dtype = "bfloat16" if accelerator else "float32"
    if args.batch is None:
        args.batch = 256 if accelerator else 2
    if args.tokenizer_batch is None:
        args.tokenizer_batch = 16 if accelerator else args.batch
    if args.steps is None:
        args.steps = 20 if accelerator else 3
    for name in ("batch", "tokenizer_batch", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}; expected >= 1")
    if args.image_size % 16 or args.image_size < 16:
        p.error(f"--image-size={args.image_size}; expected a multiple of 16 (the VQGAN's factor)")
    if args.peak_flops is not None and not args.peak_flops > 0:
        p.error(f"--peak-flops={args.peak_flops}; expected a positive number of FLOP/s")
    n = jax.device_count()
    for name in ("batch", "tokenizer_batch"):
        if getattr(args, name) % n:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be divisible by the {n} devices")
    return args


# ---- device and peak ---------------------------------------------------------------------------
def peak_flops(dtype: str, override: float | None = None, device_kind: str | None = None):
    """`(peak dense FLOP/s of one device, description)`; `(None, reason)` when unknown (CPU).

    float32 maps to the TF32 tensor-core peak (what XLA uses for float32 matmuls on these GPUs by
    default) unless `jax_default_matmul_precision` is "highest" / "float32".
    """
    import jax

    if override is not None:
        return float(override), "--peak-flops"
    if device_kind is None:
        device_kind = jax.devices()[0].device_kind
    kind = device_kind.lower()
    precision = dtype
    if dtype == "float32":
        requested = str(jax.config.jax_default_matmul_precision or "").lower()
        precision = "float32" if requested in ("highest", "float32") else "tf32"
    for pattern, name, peaks in PEAKS:
        if pattern in kind:
            return peaks[precision], f"{name} {precision} dense"
    return None, f"unknown peak for {device_kind!r} (pass --peak-flops)"


# ---- XLA FLOPs -----------------------------------------------------------------------------------
def cost_flops(compiled) -> float | None:
    """FLOPs of a compiled (or lowered) computation from XLA's cost analysis; dict or list-of-dict returns."""
    analysis = compiled.cost_analysis()
    if analysis is None:
        return None
    if isinstance(analysis, dict):
        analysis = [analysis]
    values = [float(a["flops"]) for a in analysis if isinstance(a, dict) and "flops" in a]
    return sum(values) if values else None


def layer_loops(hlo_text: str) -> list[str]:
    """The while loops of an HLO module that scan the transformer's layers: traced directly under the
    "layers" scope (`.../transformer/layers/while`; loops inside a layer, e.g. dropout's random bits,
    are deeper)."""
    from mgt.profiling import hlo_instructions

    return [name for name, (opcode, op_name) in hlo_instructions(hlo_text).items()
            if opcode == "while" and op_name.split("/")[-2:] == ["layers", "while"]]


# ---- configs and stub objects --------------------------------------------------------------------
class StubTokenizer:
    """What `TransformerStage` reads from a tokenizer: the token grid (factor 16) and codebook size."""

    def __init__(self, codebook_size: int = 1024, factor: int = 16):
        self.codebook_size, self.factor = codebook_size, factor

    def token_spec(self, input_shape):
        from mgt.tokens import TokenSpec

        return TokenSpec(grid=(input_shape[0] // self.factor, input_shape[1] // self.factor),
                         codebook_size=self.codebook_size)


def make_config(args, *, remat: bool = True, unroll: bool = False):
    """The official recipe with this run's sizes, dtype, batch and remat; no perceptual term. `unroll`
    unrolls the transformer's layer loop (for XLA's FLOP count, which counts a loop body once)."""
    from mgt.pretrained.maskgit_recipe import get_config

    c = get_config(None, image_size=args.image_size)
    c.data.num_workers = 0
    c.model.dtype = args.dtype
    c.model.remat = bool(remat)
    if getattr(args, "attention_dropout", None) is not None:
        c.model.attention_dropout_rate = float(args.attention_dropout)
    if unroll:
        c.model.scan_unroll = True
    c.tokenizer.dtype = args.dtype
    c.transformer_train.batch_size = args.batch
    c.tokenizer_train.batch_size = args.tokenizer_batch
    c.tokenizer_train.perceptual_weight = 0.0
    c.tokenizer_train.adversarial_weight = 0.1 if args.adversarial else 0.0
    if args.smoke:
        c.model.update(SMOKE_MODEL)
        c.tokenizer.update(SMOKE_TOKENIZER)
        c.tokenizer_train.discriminator_channels = 16
    return c


# ---- timing ----------------------------------------------------------------------------------------
def run_steps(stage, state, batch, *, steps: int, seed: int):
    """Compile `stage.train_step`, warm up once, time `steps` steps. Returns a dict of measurements."""
    import jax

    key = jax.random.key(seed)
    start = time.perf_counter()
    compiled = stage.train_step.lower(state, batch, key).compile()
    compile_seconds = time.perf_counter() - start
    state, metrics = compiled(state, batch, jax.random.fold_in(key, 0))
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = compiled(state, batch, jax.random.fold_in(key, i + 1))
    jax.block_until_ready(state)
    seconds = (time.perf_counter() - start) / steps
    loss = float(jax.device_get(metrics["loss"]))
    return dict(compiled=compiled, compile_seconds=compile_seconds, seconds_per_step=seconds, final_loss=loss,
                state=state)


def analytic_transformer_flops(model, batch: int) -> float:
    """batch · T · (6·N + 12·L·T·D): N matmul parameters (see the module docstring)."""
    import numpy as np
    from flax import nnx

    cfg = model.config
    n = 0
    for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
        if np.ndim(value) >= 2 and "position_embeddings" not in [str(p) for p in path]:
            n += int(np.prod(np.shape(value)))
    t = cfg.seq_len
    return float(batch * t * (6 * n + 12 * cfg.num_layers * t * cfg.hidden_dim)), n


# ---- stages ------------------------------------------------------------------------------------------
def bench_transformer(args, emit) -> None:
    import jax
    import numpy as np

    from mgt.modalities import make_task
    from mgt.training.trainer import make_mesh
    from mgt.training.transformer_stage import TransformerStage

    remats = {"both": (False, True), "on": (True,), "off": (False,)}[args.remat]
    tokenizer = StubTokenizer()
    base = make_config(args, remat=False)
    task = make_task(base)
    mesh = make_mesh(base)
    rng = np.random.RandomState(args.seed)
    with jax.set_mesh(mesh):
        stages = {r: TransformerStage(make_config(args, remat=r), task, mesh, workdir="/nonexistent",
                                      tokenizer=tokenizer, tokenizer_step=0, quiet=True) for r in remats}
        first = stages[remats[0]]
        cfg = first.model_config
        if not args.smoke:
            from mgt.transformer import TransformerConfig

            ref = TransformerConfig.maskgit_imagenet(args.image_size)
            for field in ("num_layers", "hidden_dim", "num_heads", "mlp_dim", "codebook_size", "num_classes", "grid"):
                if getattr(cfg, field) != getattr(ref, field):
                    raise RuntimeError(f"recipe config differs from TransformerConfig.maskgit_imagenet: {field} "
                                       f"{getattr(cfg, field)} vs {getattr(ref, field)}")
        batch = first.batch_to_device({
            "tokens": rng.randint(0, cfg.codebook_size, (args.batch,) + cfg.grid).astype(np.int32),
            "label": rng.randint(0, cfg.num_classes, (args.batch,)).astype(np.int32)})
        state0 = first.init_state()
        model = first.model_from_state(state0, ema=False)
        analytic, n_params = analytic_transformer_flops(model, args.batch)
        del model
        # model FLOPs: the step without remat, layer scan unrolled (XLA counts a loop body once)
        start = time.perf_counter()
        flops_stage = TransformerStage(make_config(args, remat=False, unroll=True), task, mesh,
                                       workdir="/nonexistent", tokenizer=tokenizer, tokenizer_step=0, quiet=True)
        # XLA's cost analysis of the lowered (not compiled) step: the same dot FLOPs, no compile
        counted = flops_stage.train_step.lower(state0, batch, jax.random.key(0))
        if layer_loops(counted.as_text(dialect="hlo")):
            raise RuntimeError("the transformer step still has a loop after unrolling the layer scan: "
                               "XLA's FLOP count would miss all but one iteration")
        xla = cost_flops(counted)
        xla = None if xla is None else xla * mesh.size  # the analysis is of one device's program
        analysis_seconds = time.perf_counter() - start
        print(f"[transformer] {cfg.num_layers} layers x {cfg.hidden_dim}, {cfg.num_heads} heads, MLP {cfg.mlp_dim}, "
              f"T={cfg.seq_len}; {n_params / 1e6:.1f} M matmul params; XLA model FLOPs/step "
              f"{_fmt_flops(xla)} (unrolled analysis {analysis_seconds:.1f} s), analytic {_fmt_flops(analytic)}",
              flush=True)
        for remat in remats:
            out = run_steps(stages[remat], state0, batch, steps=args.steps, seed=args.seed)
            tokens = args.batch * cfg.seq_len
            emit("train/transformer", remat, args.batch, out, per_step=("tokens_per_second", "tokens/s", tokens),
                 model_flops=xla, analytic=analytic, model="smoke" if args.smoke else "maskgit_imagenet")
            del out


def bench_tokenizer(args, emit) -> None:
    import jax
    import numpy as np

    from mgt.modalities import make_task
    from mgt.training.tokenizer_stage import TokenizerStage
    from mgt.training.trainer import make_mesh

    config = make_config(args)
    mesh = make_mesh(config)
    task = make_task(config)
    rng = np.random.RandomState(args.seed)
    with jax.set_mesh(mesh):
        stage = TokenizerStage(config, task, mesh, workdir="/nonexistent")
        images = rng.uniform(0, 1, (args.tokenizer_batch, args.image_size, args.image_size, 3)).astype(np.float32)
        batch = stage.batch_to_device({"image": images})
        state = stage.init_state()
        out = run_steps(stage, state, batch, steps=args.steps, seed=args.seed)
        # the VQGAN and discriminator have no loops, so the timed compile's count is complete
        flops = cost_flops(out["compiled"])
        if " while(" in out["compiled"].as_text():
            print("[tokenizer] note: the compiled step has a loop; XLA counts its body once", flush=True)
        flops = None if flops is None else flops * mesh.size
        print(f"[tokenizer] VQGAN {tuple(config.tokenizer.channel_multipliers)} x {config.tokenizer.base_channels} at "
              f"{args.image_size} px{' + discriminator' if args.adversarial else ''}; XLA model FLOPs/step "
              f"{_fmt_flops(flops)}", flush=True)
        name = ("smoke" if args.smoke else "vqgan_imagenet") + ("+discriminator" if args.adversarial else "")
        emit("train/tokenizer", None, args.tokenizer_batch, out,
             per_step=("images_per_second", "images/s", args.tokenizer_batch), model_flops=flops, analytic=None,
             model=name)


def _fmt_flops(x) -> str:
    return "n/a" if x is None else f"{x / 1e9:.1f} GFLOP"


# ---- main -------------------------------------------------------------------------------------------
def main(argv=None) -> list[dict]:
    """Run the benchmark; prints a table and returns (and with `--json`, writes) the records."""
    args = parse_args(argv)
    import jax

    device = device_name()
    peak, peak_name = peak_flops(args.dtype, args.peak_flops)
    n_dev = jax.device_count()
    records: list[dict] = []
    rows = []

    def emit(benchmark, remat, batch, out, *, per_step, model_flops, analytic, model):
        sps = 1.0 / out["seconds_per_step"]
        rate_name, rate_unit, per = per_step
        common = dict(device=device, dtype=args.dtype, batch=batch, remat=remat, model=model, steps=args.steps,
                      devices=n_dev, peak_flops=peak, peak_name=peak_name)
        peak_total = None if peak is None else peak * n_dev
        values = [("steps_per_second", sps, "steps/s"), (rate_name, sps * per, rate_unit),
                  ("seconds_per_step", out["seconds_per_step"], "s"),
                  ("compile_seconds", out["compile_seconds"], "s"),
                  ("model_flops_per_step", model_flops, "FLOP"),
                  ("mfu", None if model_flops is None or peak_total is None else model_flops * sps / peak_total,
                   "fraction")]
        if analytic is not None:
            values += [("analytic_flops_per_step", analytic, "FLOP"),
                       ("mfu_analytic", None if peak_total is None else analytic * sps / peak_total, "fraction")]
        values.append(("final_loss", out["final_loss"], "loss"))
        for metric, value, unit in values:
            records.append(dict(benchmark=benchmark, metric=metric, value=value, unit=unit, **common))
        get = {m: v for m, v, _ in values}
        remat_text = "-" if remat is None else "on" if remat else "off"
        rows.append((benchmark, remat_text, batch, sps, sps * per, rate_unit, out["compile_seconds"], model_flops,
                     get["mfu"], get.get("mfu_analytic", "-")))
        print(f"[{benchmark}] remat={remat_text} batch={batch}: {sps:.4g} steps/s, {sps * per:.4g} {rate_unit}, "
              f"compile {out['compile_seconds']:.1f} s", flush=True)

    print(f"train benchmark: stages={','.join(args.stages)} dtype={args.dtype} device={device} x{n_dev} "
          f"steps={args.steps} peak={'n/a' if peak is None else f'{peak:.3g} FLOP/s'} ({peak_name})", flush=True)
    if "transformer" in args.stages:
        bench_transformer(args, emit)
    if "tokenizer" in args.stages:
        bench_tokenizer(args, emit)

    pct = lambda x: x if isinstance(x, str) else "n/a" if x is None else f"{100 * x:.2f}%"
    gflop = lambda x: "n/a" if x is None else f"{x / 1e9:.1f}"
    print(f"\n  {'benchmark':<18} {'remat':>5} {'batch':>5} {'steps/s':>9} {'throughput':>18} {'compile s':>9} "
          f"{'GFLOP/step':>11} {'MFU':>7} {'MFU(6N)':>8}")
    for bench, remat, batch, sps, rate, unit, comp, flops, mfu, mfu_a in rows:
        print(f"  {bench:<18} {remat:>5} {batch:>5} {sps:>9.4g} {rate:>11.4g} {unit:<6} {comp:>9.1f} "
              f"{gflop(flops):>11} {pct(mfu):>7} {pct(mfu_a):>8}")
    write_records(args.json, records)
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
