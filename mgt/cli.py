"""The `mgt` command line: train, sample, edit, convert.

    mgt train  --config FILE[:variant] --workdir DIR [--stage tokenizer|transformer|all] [--config.x=y ...]
    mgt sample --workdir DIR [--labels 0,1,2] [--num N] [--steps 8] [--guidance 0] [--temperature 1]
               [--seed 0] --out FILE(.png|.npz)
    mgt edit   --workdir DIR --image IN --box TOP,LEFT,HEIGHT,WIDTH [--label C] [--mode inpaint|outpaint|class]
               --out OUT
    mgt convert maskgit --tokenizer FILE --transformer FILE --workdir DIR

A user mistake (a missing file, a bad box, labels outside the model's classes, a workdir of another
experiment) ends with a one-line error and a non-zero exit status, never a traceback from JAX.
"""

from __future__ import annotations

import argparse
import os
import sys

COMMANDS = {
    "train": "train the tokenizer and/or the transformer from a config file",
    "sample": "generate a labelled sample grid (.png) or arrays (.npz) from a trained workdir",
    "edit": "inpaint, outpaint or class-edit an image with a trained workdir",
    "convert": "convert official MaskGIT checkpoints into an mgt workdir",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"mgt: unknown command {command!r}; expected one of {sorted(COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    handler = {"train": _train, "sample": _sample, "edit": _edit, "convert": _convert}[command]
    try:
        return handler(rest) or 0
    except KeyboardInterrupt:
        print(f"mgt {command}: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS() as e:
        print(f"mgt {command}: error: {e}", file=sys.stderr)
        return 1


def _USER_ERRORS():
    from mgt.training.loop import TrainingDiverged

    return (ValueError, FileNotFoundError, TrainingDiverged)


def _usage() -> str:
    lines = ["usage: mgt <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "Run `mgt <command> --help` for a command's options."]
    return "\n".join(lines)


# ---- train ---------------------------------------------------------------------------------------
def _train(argv) -> int:
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "experiment config file, e.g. configs/image/digits.py[:tiny]",
                                    flag_values=flag_values, lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and samples", flag_values=flag_values)
    flags.DEFINE_enum("stage", "all", ["tokenizer", "transformer", "all"], "which stage(s) to train",
                      flag_values=flag_values)
    flags.DEFINE_bool("quiet", False, "no progress output", flag_values=flag_values)
    if any(a in ("-h", "--help") for a in argv):
        print("usage: mgt train --config FILE[:variant] --workdir DIR [--stage tokenizer|transformer|all] "
              "[--config.KEY=VALUE ...]\n\n"
              "  --config     experiment config file, e.g. configs/image/digits.py (variants after ':', e.g. :tiny)\n"
              "  --workdir    checkpoints, metrics.jsonl, TensorBoard events and sample grids; started again\n"
              "               with the same command, a run continues from its last checkpoint\n"
              "  --stage      tokenizer, transformer or all (default: all)\n"
              "  --quiet      no progress output\n"
              "  --config.KEY=VALUE  override any config field, e.g. --config.model.num_layers=6")
        return 0
    for i, a in enumerate(argv):  # the config file is loaded lazily by config_flags: check it first
        value = a.split("=", 1)[1] if a.startswith("--config=") else (argv[i + 1] if a == "--config" and i + 1 < len(argv) else None)
        if value is not None and not os.path.isfile(value.split(":", 1)[0]):
            raise ValueError(f"--config {value.split(':', 1)[0]!r} does not exist (e.g. configs/image/digits.py)")
    saved_argv = sys.argv
    sys.argv = ["mgt train"] + list(argv)  # config_flags reads the --config.x overrides from sys.argv
    try:
        flag_values(sys.argv)
        flag_values.config  # noqa: B018 - forces the config file to load here

    except Exception as e:  # flag and config-file errors surface as various exception types
        raise ValueError(f"cannot load --config: {_one_line(e)}") from None
    finally:
        sys.argv = saved_argv
    if flag_values.config is None:
        raise ValueError("--config is required (e.g. --config configs/image/digits.py)")
    if not flag_values.workdir:
        raise ValueError("--workdir is required (e.g. --workdir runs/digits)")
    from mgt.training.trainer import train

    train(flag_values.config, flag_values.workdir, stage=flag_values.stage, quiet=flag_values.quiet)
    return 0


# ---- sample --------------------------------------------------------------------------------------
def _sample(argv) -> int:
    p = argparse.ArgumentParser(prog="mgt sample", description=COMMANDS["sample"])
    p.add_argument("--workdir", required=True)
    p.add_argument("--labels", default=None, help="comma-separated class ids, cycled to fill --num")
    p.add_argument("--num", type=int, default=None, help="number of samples (default: labels × per_class)")
    p.add_argument("--steps", type=int, default=None, help="decoding steps (default: the config's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    p.add_argument("--choice-temperature", type=float, default=None, help="Gumbel noise of the confidence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .png (labelled grid) or .npz (images, labels)")
    args = p.parse_args(argv)
    if not args.out.endswith((".png", ".npz")):
        raise ValueError(f"--out {args.out!r}: expected a .png or .npz path")
    import jax
    import numpy as np

    from mgt.pipeline import GenerationPipeline
    from mgt.training.trainer import load_trained

    config, task, tokenizer, transformer = load_trained(args.workdir)
    cfg = transformer.config
    conditional = cfg.conditioning in ("class_token", "adaln")
    s = config.sample
    if args.labels is not None and not conditional:
        raise ValueError("--labels given but the model in this workdir is unconditional")
    if conditional:
        if args.labels is None:
            base = list(range(cfg.num_classes))
            num = args.num or cfg.num_classes * int(s.per_class)
        else:
            try:
                base = [int(x) for x in args.labels.split(",") if x.strip() != ""]
            except ValueError:
                raise ValueError(f"--labels {args.labels!r}: expected comma-separated integers") from None
            bad = [x for x in base if not 0 <= x < cfg.num_classes]
            if bad or not base:
                raise ValueError(f"--labels {bad or args.labels}: expected class ids in [0, {cfg.num_classes})")
            num = args.num or len(base)
        if num < 1:
            raise ValueError(f"--num {num}: expected >= 1")
        labels = np.resize(np.asarray(base, np.int32), num)
        if args.labels is None:
            labels = np.sort(labels, kind="stable")
    else:
        num = args.num or 16
        labels = None
    guidance = float(s.guidance) if args.guidance is None else args.guidance
    pipe = GenerationPipeline(transformer, tokenizer)
    images = pipe.generate(
        jax.random.key(args.seed), labels=labels, batch_size=num,
        num_steps=int(args.steps or s.num_steps),
        choice_temperature=float(s.choice_temperature if args.choice_temperature is None else args.choice_temperature),
        temperature=float(s.temperature if args.temperature is None else args.temperature),
        guidance_scale=guidance)
    out_labels = labels if labels is not None else np.zeros(num, np.int32)
    ncols = None
    if conditional and args.labels is None:
        per = int(s.per_class)
        ncols = per * (2 if per < 5 else 1) if num == cfg.num_classes * per else None  # whole classes per row
    task.write_samples(args.out, np.asarray(images), out_labels, ncols=ncols)
    print(f"wrote {num} samples to {args.out}")
    return 0


# ---- edit ----------------------------------------------------------------------------------------
def _edit(argv) -> int:
    p = argparse.ArgumentParser(prog="mgt edit", description=COMMANDS["edit"])
    p.add_argument("--workdir", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--box", required=True, help="TOP,LEFT,HEIGHT,WIDTH in pixels of the (resized) image")
    p.add_argument("--label", type=int, default=None, help="class of the regenerated region")
    p.add_argument("--mode", choices=("inpaint", "outpaint", "class"), default="inpaint",
                   help="inpaint: regenerate the box; outpaint: keep the box, regenerate the rest; "
                        "class: the official class-conditional edit (box grown by one token, 12 steps from step 2)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        box = tuple(int(x) for x in args.box.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ValueError(f"--box {args.box!r}: expected TOP,LEFT,HEIGHT,WIDTH (four integers)")
    import jax
    import numpy as np

    from mgt.modalities.image import editing
    from mgt.sampling import model_logits_fn
    from mgt.training.trainer import load_trained

    config, task, tokenizer, transformer = load_trained(args.workdir)
    image = task.read_input(args.image)[None]
    cfg = transformer.config
    conditional = cfg.conditioning in ("class_token", "adaln")
    labels = None
    if conditional:
        if args.label is None:
            raise ValueError(f"--label is required: the model is class-conditional (classes 0..{cfg.num_classes - 1})")
        if not 0 <= args.label < cfg.num_classes:
            raise ValueError(f"--label {args.label}: expected a class id in [0, {cfg.num_classes})")
        labels = np.asarray([args.label], np.int32)
    fn = model_logits_fn(transformer, labels=labels)
    rng = jax.random.key(args.seed)
    mask_id = transformer.spec.mask_id
    f = tokenizer.downsample_factor if hasattr(tokenizer, "downsample_factor") else image.shape[1] // cfg.grid[0]
    if args.mode == "class":
        result = editing.class_edit(tokenizer, fn, image, box, rng, mask_id=mask_id, num_steps=args.steps)
    else:
        grow = 0
        token_mask = editing.box_to_token_mask(box, image.shape[1:3], (image.shape[1] // f, image.shape[2] // f),
                                               grow=grow)
        if args.mode == "outpaint":
            token_mask = ~token_mask
        result = editing.inpaint(tokenizer, fn, image, token_mask, rng, mask_id=mask_id, num_steps=args.steps)
    if args.out.endswith(".npz"):
        np.savez(args.out, image=np.round(np.clip(np.asarray(result.image), 0, 1) * 255).astype(np.uint8))
    else:
        from PIL import Image

        out = np.round(np.clip(np.asarray(result.image[0]), 0, 1) * 255).astype(np.uint8)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        Image.fromarray(out).save(args.out)
    print(f"wrote the edited image to {args.out}")
    return 0


# ---- convert -------------------------------------------------------------------------------------
def _convert(argv) -> int:
    if not argv or argv[0] != "maskgit":
        raise ValueError("usage: mgt convert maskgit --tokenizer FILE --transformer FILE --workdir DIR")
    from mgt.pretrained.convert_cli import convert_maskgit_main

    return convert_maskgit_main(argv[1:])


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
