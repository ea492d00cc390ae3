"""The `mgt` command line: train, sample, edit, reconstruct, eval, convert.

    mgt train  --config FILE[:variant] --workdir DIR [--stage tokenizer|transformer|all] [--config.x=y ...]
    mgt sample --workdir DIR [--num N] [--steps 8] [--guidance 0] [--temperature 1] [--seed 0] --out FILE
               [the modality's options, e.g. --labels 0,1,2]
    mgt edit   --workdir DIR [--steps N] [--seed 0] --out FILE [the modality's options]
    mgt reconstruct --workdir DIR --input FILE --out FILE
    mgt eval   --workdir DIR [--metrics fid,is,precision_recall] [--num 10000] [--reference PATH] --json FILE
    mgt convert maskgit --tokenizer FILE --transformer FILE --workdir DIR
    mgt convert inception|i3d|vggish --from FILE --out FILE.safetensors

`sample` and `edit` parse the generic options and hand the rest to the workdir's task
(`mgt.modalities.Task`): `mgt sample --workdir DIR --help` lists them. A user mistake (a missing
file, an option the modality does not take, a workdir of another experiment, a path that cannot be
written) ends with a one-line error and a non-zero exit status, never a traceback from JAX.
"""

from __future__ import annotations

import argparse
import os
import sys

COMMANDS = {
    "train": "train the tokenizer and/or the transformer from a config file",
    "sample": "generate samples from a trained workdir (the output format follows --out's extension)",
    "edit": "edit an input with a trained workdir (the modality's edits; --workdir D --help lists them)",
    "reconstruct": "encode and decode an input with a workdir's tokenizer (what the tokens keep)",
    "eval": "score a workdir: FID / IS / precision-recall, FVD, FAD, rFID, codec distances (JSON)",
    "convert": "convert official MaskGIT checkpoints into a workdir, or feature-network weights for `eval`",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    debug = "--debug" in argv  # show the traceback of an error instead of its one line
    argv = [a for a in argv if a != "--debug"]
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"mgt: unknown command {command!r}; expected one of {sorted(COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    handler = {"train": _train, "sample": _sample, "edit": _edit, "reconstruct": _reconstruct,
               "eval": _eval, "convert": _convert}[command]
    try:
        return handler(rest) or 0
    except KeyboardInterrupt:
        print(f"mgt {command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except _USER_ERRORS() as e:
        if debug:
            raise
        print(f"mgt {command}: error: {_os_error(e)}", file=sys.stderr)
        return 1


def _USER_ERRORS():
    from mgt.training.loop import TrainingDiverged

    # OSError: a path that is a file, a folder, not writable, full — the system's words and the path
    return (ValueError, OSError, TrainingDiverged)


def _os_error(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.strerror or type(e).__name__}: {e.filename!r}"
    return str(e)


def _usage() -> str:
    lines = ["usage: mgt <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "Run `mgt <command> --help` for a command's options; `--debug` shows a traceback on errors."]
    return "\n".join(lines)


# ---- train ---------------------------------------------------------------------------------------
def _train(argv) -> int:
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "experiment config file, configs/<modality>/<name>.py[:variants]",
                                    flag_values=flag_values, lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and samples", flag_values=flag_values)
    flags.DEFINE_enum("stage", "all", ["tokenizer", "transformer", "all"], "which stage(s) to train",
                      flag_values=flag_values)
    flags.DEFINE_bool("quiet", False, "no progress output", flag_values=flag_values)
    if any(a in ("-h", "--help") for a in argv):
        print("usage: mgt train --config FILE[:variant] --workdir DIR [--stage tokenizer|transformer|all] "
              "[--config.KEY=VALUE ...]\n\n"
              "  --config     experiment config file, configs/<modality>/<name>.py (variants after ':', e.g. :tiny)\n"
              "  --workdir    checkpoints, metrics.jsonl, TensorBoard events and sample grids; started again\n"
              "               with the same command, a run continues from its last checkpoint\n"
              "  --stage      tokenizer, transformer or all (default: all)\n"
              "  --quiet      no progress output\n"
              "  --config.KEY=VALUE  override any config field, e.g. --config.model.num_layers=6")
        return 0
    for i, a in enumerate(argv):  # the config file is loaded lazily by config_flags: check it first
        value = (a.split("=", 1)[1] if a.startswith("--config=")
                 else argv[i + 1] if a == "--config" and i + 1 < len(argv) else None)
        if value is not None and not os.path.isfile(value.split(":", 1)[0]):
            raise ValueError(f"--config {value.split(':', 1)[0]!r} does not exist (see the files in configs/)")
    saved_argv = sys.argv
    sys.argv = ["mgt train"] + list(argv)  # config_flags reads the --config.x overrides from sys.argv
    try:
        flag_values(sys.argv)
        flag_values.config  # noqa: B018 - forces the config file to load here

    except Exception as e:  # flag and config-file errors surface as various exception types
        message = _one_line(e)
        if message.startswith("flag --") and not message.startswith("flag --config"):
            raise ValueError(message) from None  # e.g. --stage bogus: absl names the flag and the choices
        raise ValueError(_unknown_override(argv) or f"cannot load --config: {message}") from None
    finally:
        sys.argv = saved_argv
    if flag_values.config is None:
        raise ValueError("--config is required (an experiment file in configs/, "
                         "e.g. --config configs/<modality>/<name>.py)")
    if not flag_values.workdir:
        raise ValueError("--workdir is required (e.g. --workdir runs/digits)")
    from mgt.training.trainer import train

    train(flag_values.config, flag_values.workdir, stage=flag_values.stage, quiet=flag_values.quiet)
    return 0


def _unknown_override(argv) -> str | None:
    """For `--config.a.b=...` naming no field: the message naming it and the nearest fields."""
    import difflib

    from absl import flags
    from ml_collections import config_flags

    config_args = [a for a in argv if not a.startswith("--config.")]
    config_args = ["mgt train"] + [a for i, a in enumerate(config_args) if a.startswith("--config") or
                                   (i > 0 and config_args[i - 1] == "--config")]
    base = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=base, lock_config=True)
    saved_argv, sys.argv = sys.argv, config_args  # config_flags applies the overrides it finds in sys.argv
    try:
        base(config_args, known_only=True)
        config = base.config
    except Exception:  # noqa: BLE001 - the config itself does not load; the caller says so
        return None
    finally:
        sys.argv = saved_argv
    for a in argv:
        if not a.startswith("--config."):
            continue
        path = a[len("--config."):].split("=", 1)[0].split(".")
        node = config
        for depth, key in enumerate(path):
            if not hasattr(node, "keys") or key not in node:
                where = ".".join(path[:depth]) or "the config"
                options = list(node.keys()) if hasattr(node, "keys") else []
                near = difflib.get_close_matches(key, options, n=3, cutoff=0.5) or sorted(options)[:8]
                return (f"--config.{'.'.join(path)}: {where} has no field {key!r}; "
                        f"nearest: {', '.join(near) if near else '(none)'}")
            node = node[key]
    return None


# ---- sample and edit: generic options here, the rest from the workdir's task ---------------------
def _workdir_task(prog: str, argv):
    """`(config, task)` of the workdir named in `argv` (read from its config.json; no weights loaded)."""
    pre = argparse.ArgumentParser(prog=prog, add_help=False)
    pre.add_argument("--workdir", default=None)
    known, _ = pre.parse_known_args(argv)
    if not known.workdir:
        return None, None
    from mgt.modalities import make_task
    from mgt.training.trainer import load_config

    config = load_config(known.workdir)
    task = make_task(config)
    if getattr(task, "text", None) is not None:  # the workdir's fitted text vocabulary
        task.text.use_workdir(known.workdir)
    return config, task


def _number(name: str, kind=int, minimum=1):
    """argparse type: a `kind` number >= `minimum`, with a message naming the option."""
    what = f"{'an integer' if kind is int else 'a number'} >= {minimum}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: expected {what}") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"{name} {value}: expected {what}")
        return value

    return parse


def _parser(command: str, task, description: str) -> argparse.ArgumentParser:
    p = _ArgumentParser(prog=f"mgt {command}", description=description,
                        epilog=None if task else "Give --workdir to see the options of its modality.")
    p.add_argument("--workdir", required=True, help="a trained (or converted) workdir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output file; the modality's extensions "
                   f"({', '.join(task.output_extensions) if task else 'those of its modality'})")
    return p


def _sample(argv) -> int:
    config, task = _workdir_task("mgt sample", argv)
    p = _parser("sample", task, COMMANDS["sample"])
    p.add_argument("--num", type=_number("--num"), default=None, help="number of samples (default: the modality's)")
    p.add_argument("--steps", type=_number("--steps"), default=None, help="decoding steps (default: the config's)")
    p.add_argument("--guidance", type=_number("--guidance", float, 0), default=None,
                   help="classifier-free guidance scale, >= 0 (default: the config's)")
    p.add_argument("--guidance-schedule", default=None,
                   help="constant, or linear / cosine: the guidance scale ramped up to --guidance over the steps "
                        "(default: the config's)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    p.add_argument("--temperature-final", type=float, default=None,
                   help="anneal the temperature linearly to this over the steps (default: the config's)")
    p.add_argument("--choice-temperature", type=float, default=None, help="Gumbel noise of the confidence")
    p.add_argument("--sketch-guidance", type=float, default=None,
                   help="a recycling model's sketched pass pushed away from its plain pass, 0: off "
                        "(default: the config's)")
    p.add_argument("--confidence", default=None,
                   help="what ranks sampled codes for committing: logprob (MaskGIT) or logit (default: the config's)")
    p.add_argument("--top-k", type=_number("--top-k", int, 0), default=None, help="sample from the k likeliest codes")
    p.add_argument("--top-p", type=_number("--top-p", float, 0), default=None, help="nucleus sampling mass")
    p.add_argument("--typical-p", type=_number("--typical-p", float, 0), default=None,
                   help="locally typical sampling mass (VampNet)")
    p.add_argument("--stages", default=None,
                   help="multi-level tokens: 'flat' (one pool over positions and levels), steps per level "
                        "'16,1,1,1' (SoundStorm), or 'levels:steps;...' (default: the config's)")
    p.add_argument("--batch-size", type=_number("--batch-size"), default=64,
                   help="samples generated at once; memory is bounded by it, not by --num (default 64)")
    if task is not None:
        task.add_sample_arguments(p)
    args = p.parse_args(argv)
    task.check_output(args.out)
    import jax
    import numpy as np

    from mgt.sampling import decode_options
    from mgt.training.trainer import load_pipeline

    condition, num = task.sample_condition(args, args.num)
    _check_writable(args.out, "--out")
    pipe = load_pipeline(args.workdir)
    options = decode_options(config.sample, pipe.spec.num_levels, num_steps=args.steps,
                             choice_temperature=args.choice_temperature, temperature=args.temperature,
                             guidance_scale=args.guidance, top_k=args.top_k, top_p=args.top_p,
                             typical_p=args.typical_p, stages=args.stages, confidence=args.confidence,
                             temperature_final=args.temperature_final, sketch_guidance=args.sketch_guidance,
                             guidance_schedule=args.guidance_schedule)
    # one key per sample, whatever the batching: the same --seed gives the same samples at any --batch-size
    keys = jax.random.split(jax.random.key(args.seed), num)
    batch = min(args.batch_size, num)
    negative = task.negative_condition(args, batch, options["guidance_scale"])
    if negative is not None:
        options["negative"] = negative
    writer = task.sample_writer(args.out, num)
    try:
        from tqdm import tqdm

        for start in tqdm(range(0, num, batch), desc="sampling", unit="batch", disable=num <= batch or None):
            n = min(batch, num - start)
            rows = np.minimum(np.arange(start, start + batch), num - 1)  # the last batch padded: one compiled shape
            cond = condition if condition.is_empty else condition.take(rows)
            outputs = task.generate(pipe, keys[rows], cond, batch, args, **options)
            writer.add(np.asarray(outputs)[:n], cond.take(slice(0, n)))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    print(f"wrote {num} samples to {args.out}")
    return 0


def _edit(argv) -> int:
    config, task = _workdir_task("mgt edit", argv)
    p = _parser("edit", task, COMMANDS["edit"])
    p.add_argument("--steps", type=_number("--steps"), default=None,
                   help="decoding steps (default: the modality's — the config's sample.num_steps, or the "
                        "official editing mode's 12 where the modality follows it)")
    if task is not None:
        task.add_edit_arguments(p)
    args = p.parse_args(argv)
    task.check_output(args.out)
    _check_writable(args.out, "--out")
    import jax

    from mgt.training.trainer import load_pipeline

    pipe = load_pipeline(args.workdir)
    outputs, condition = task.edit(args, pipe, jax.random.key(args.seed), num_steps=args.steps)
    task.write_samples(args.out, outputs, condition, grid=False)
    print(f"wrote the edited output to {args.out}")
    return 0


def _reconstruct(argv) -> int:
    config, task = _workdir_task("mgt reconstruct", argv)
    p = _parser("reconstruct", task, COMMANDS["reconstruct"])
    p.add_argument("--input", required=True,
                   help="an .npz in the layout `mgt sample` writes, or one input file of the workdir's modality")
    args = p.parse_args(argv)
    task.check_output(args.out)
    _check_writable(args.out, "--out")
    inputs, condition = task.read_inputs(args.input, "--input")
    from mgt.training.trainer import load_tokenizer

    tokenizer, _ = load_tokenizer(args.workdir)
    outputs = task.reconstruct(tokenizer, inputs)
    task.write_samples(args.out, outputs, condition, grid=False)
    print(f"wrote {len(outputs)} reconstruction{'s' if len(outputs) != 1 else ''} to {args.out}")
    return 0


def _check_writable(path: str, argument: str) -> None:
    """Fail before any work when `path` cannot be written (a folder, or a place the user may not write)."""
    if os.path.isdir(path):
        raise ValueError(f"{argument} {path!r} is a folder; expected a file path")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{argument} {path!r}: {existing!r} is a file, not a folder")
    if not os.access(existing, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{argument} {path!r}: no permission to write there")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one-line ValueErrors (the CLI prints them as `mgt CMD: error: ...`)."""

    def error(self, message):
        raise ValueError(message)


# ---- eval ----------------------------------------------------------------------------------------
def _eval(argv) -> int:
    from mgt.evaluation.evaluate import DEFAULT_METRICS, metrics_table

    p = _ArgumentParser(prog="mgt eval", description=f"{COMMANDS['eval']}. Metrics per modality: {metrics_table()}.")
    p.add_argument("--workdir", required=True, help="a trained (or converted) workdir")
    p.add_argument("--metrics", default=None,
                   help="comma-separated (default: " + "; ".join(f"{k} {v}" for k, v in DEFAULT_METRICS.items()) + ")")
    p.add_argument("--num", type=_number("--num", int, 2), default=10_000, help="samples generated (default 10000)")
    p.add_argument("--reference", default=None,
                   help="a folder of media files, an .npz as `mgt sample` writes, or statistics (.npz with mu, "
                        "sigma); default: the held-out split of the workdir's data set")
    p.add_argument("--num-reference", type=_number("--num-reference", int, 2), default=50_000,
                   help="reference examples used, at most (default 50000)")
    p.add_argument("--steps", type=_number("--steps"), default=None, help="decoding steps (default: the config's)")
    p.add_argument("--guidance", type=_number("--guidance", float, 0), default=None,
                   help="classifier-free guidance scale (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_number("--batch-size"), default=64, help="samples generated at once")
    p.add_argument("--features", default="auto", choices=("auto", "builtin", "standard"),
                   help="auto: a built-in data set's shipped small network, else the standard one (Inception-v3, "
                        "I3D, VGGish)")
    p.add_argument("--feature-weights", default=None,
                   help="the standard network's weights (`mgt convert inception|i3d|vggish` makes them)")
    p.add_argument("--random-features", action="store_true",
                   help="random feature-network weights: tests the machinery; the numbers compare with nothing")
    p.add_argument("--prompts-file", default=None, help="text-conditioned models: one prompt per line "
                   "(default: the reference captions)")
    p.add_argument("--json", required=True, help="where the metrics go (one JSON object)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.workdir, "config.json")):
        raise ValueError(f"--workdir {args.workdir!r} is not a workdir (no config.json)")
    _check_writable(args.json, "--json")
    from mgt.evaluation.evaluate import evaluate, write_json

    result = evaluate(args.workdir, metrics=args.metrics, num=args.num, reference=args.reference,
                      num_reference=args.num_reference, steps=args.steps, guidance=args.guidance, seed=args.seed,
                      batch_size=args.batch_size, features=args.features, feature_weights=args.feature_weights,
                      random_features=args.random_features, prompts_file=args.prompts_file, quiet=args.quiet)
    write_json(result, args.json)
    print("  ".join(f"{k} {v:.4g}" for k, v in result.items() if k != "setup") + f"  → {args.json}")
    return 0


# ---- convert -------------------------------------------------------------------------------------
_CONVERT_USAGE = ("usage: mgt convert maskgit --tokenizer FILE --transformer FILE --workdir DIR\n"
                  "       mgt convert inception|i3d|vggish --from FILE --out FILE.safetensors")


def _convert(argv) -> int:
    if not argv or argv[0] not in ("maskgit", "inception", "i3d", "vggish"):
        raise ValueError(_CONVERT_USAGE)
    if argv[0] == "maskgit":
        from mgt.pretrained.convert_cli import convert_maskgit_main

        return convert_maskgit_main(argv[1:])
    from mgt.evaluation.features import WEIGHT_FILES as sources

    p = _ArgumentParser(prog=f"mgt convert {argv[0]}",
                        description=f"convert {sources[argv[0]]} into the safetensors file `mgt eval "
                                    "--feature-weights` reads (no torch needed; only tensor data is read)")
    p.add_argument("--from", dest="source", required=True, help=sources[argv[0]])
    p.add_argument("--out", required=True, help="the converted weights, FILE.safetensors")
    args = p.parse_args(argv[1:])
    if not os.path.isfile(args.source):
        raise ValueError(f"--from {args.source!r} does not exist")
    _check_writable(args.out, "--out")
    import importlib

    module = importlib.import_module(f"mgt.evaluation.{argv[0]}")
    getattr(module, f"convert_{argv[0]}")(args.source, args.out)
    print(f"wrote {args.out}")
    return 0


def _one_line(e: BaseException) -> str:
    """absl quotes an underlying KeyError's repr; unquote it into one readable line."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if "Traceback (most recent call last)" in msg:  # an error raised inside the config file
        msg = msg.strip().splitlines()[-1]
    for a, b in (("\\n", " "), ("\\'", "'"), ("'\"", "\""), ("\"'", "\"")):
        msg = msg.replace(a, b)
    msg = " ".join(msg.split())
    return msg[1:].replace("' Did you", " Did you") if msg.startswith("'") else msg


if __name__ == "__main__":
    sys.exit(main())
