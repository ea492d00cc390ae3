"""`mgt convert maskgit`: official MaskGIT checkpoint files → an mgt workdir.

The workdir holds the official recipe's config (`mgt.pretrained.maskgit_recipe`, with the sizes
inferred from the files) and one orbax checkpoint per stage at step 0, with the converted weights as
both the parameters and the EMA weights. `mgt sample`, `mgt edit` and `mgt train` (fine-tuning,
which starts at step 0) accept it.
"""

from __future__ import annotations

import argparse
import json
import os

import jax


def convert_maskgit(tokenizer_path: str, transformer_path: str, workdir: str, *, num_classes: int | None = None,
                    quiet: bool = False) -> str:
    from mgt import sharding
    from mgt.modalities import make_task
    from mgt.pretrained import maskgit
    from mgt.pretrained.maskgit_recipe import get_config
    from mgt.training.tokenizer_stage import TokenizerStage
    from mgt.training.trainer import check_workdir
    from mgt.training.transformer_stage import TransformerStage

    if os.path.exists(os.path.join(workdir, "tokenizer", "checkpoints")) or os.path.exists(
            os.path.join(workdir, "transformer", "checkpoints")):
        raise ValueError(f"--workdir {workdir!r} already holds checkpoints; convert into a new folder")
    pipe = maskgit.load(tokenizer_path, transformer_path, num_classes=num_classes)
    t, v = pipe.transformer_config, pipe.vqgan_config
    config = get_config(image_size=pipe.image_size if isinstance(pipe.image_size, int) else pipe.image_shape[0])
    config.data.num_classes = t.num_classes
    for field in ("base_channels", "num_res_blocks", "embedding_dim", "codebook_size", "num_groups"):
        config.tokenizer[field] = getattr(v, field)
    config.tokenizer.channel_multipliers = tuple(v.channel_multipliers)
    for field in ("num_layers", "hidden_dim", "num_heads", "mlp_dim"):
        config.model[field] = getattr(t, field)
    check_workdir(config, workdir)

    task = make_task(config)
    mesh = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
    meta = json.loads(config.to_json())
    with jax.set_mesh(mesh):
        tok_stage = TokenizerStage(config, task, mesh, workdir=workdir)
        _save_stage(tok_stage, pipe.vqgan, workdir, meta)
        tr_stage = TransformerStage(config, task, mesh, workdir=workdir, tokenizer=pipe.vqgan, tokenizer_step=0,
                                    quiet=True)
        _save_stage(tr_stage, pipe.transformer, workdir, meta)
    if not quiet:
        print(f"converted {tokenizer_path} and {transformer_path} into {workdir} "
              f"({pipe.image_size} px, {t.num_layers} layers, {t.num_classes} classes)")
    return workdir


def _save_stage(stage, model, workdir, meta):
    """Step 0 of `stage` around the converted `model`: its weights as parameters and EMA, a fresh
    optimiser (and discriminator, for the tokenizer); no model is initialised only to be overwritten."""
    from mgt.training.checkpoint import Checkpointer

    state = stage.init_state(model)
    ckpt = Checkpointer(os.path.join(workdir, stage.name, "checkpoints"))
    ckpt.save(0, state, meta=meta)
    ckpt.close()


def convert_maskgit_main(argv) -> int:
    p = argparse.ArgumentParser(prog="mgt convert maskgit",
                                description="convert the official MaskGIT checkpoint files into an mgt workdir")
    p.add_argument("--tokenizer", required=True, help="the official VQGAN file, e.g. tokenizer_imagenet256_checkpoint")
    p.add_argument("--transformer", required=True,
                   help="the official transformer file, e.g. maskgit_imagenet256_checkpoint")
    p.add_argument("--workdir", required=True)
    p.add_argument("--num-classes", type=int, default=None, help="class tokens in the vocabulary (default 1000)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    convert_maskgit(args.tokenizer, args.transformer, args.workdir, num_classes=args.num_classes)
    return 0
