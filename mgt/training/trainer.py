"""`train(config, workdir, stage)`: the tokenizer stage, the transformer stage, or both in sequence;
`load_pipeline(workdir)`: the generation pipeline of a trained workdir, of any modality.

The workdir holds one experiment: `config.json` (the config it was started with), one orbax
checkpoint folder per stage, `metrics.jsonl`, TensorBoard events and samples. Started again with
the same command, a run continues from its latest checkpoints. A workdir holding another experiment
(a different model, tokenizer, or data in the sense of the task's `identity_keys`) is refused once a
stage has started; before that a corrected config replaces the saved one. Every part of the config
is checked (tokenizer and transformer built abstractly) before anything is written.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from mgt import sharding
from mgt.modalities import make_task
from mgt.training.loop import latest_state, run_stage
from mgt.training.tokenizer_stage import TokenizerStage
from mgt.training.transformer_stage import TransformerStage
from mgt.training.workdir_lock import WorkdirLock

STAGES = ("tokenizer", "transformer", "all")
# Fields that define the experiment, with the task's own `identity_keys`: a workdir is refused when
# one of them differs. The data source may change (fine-tuning on other data is legitimate).
# what makes two workdirs different experiments (besides each task's own keys); "text" (the text
# encoder) only where the saved config has that section (workdirs written before it existed)
IDENTITY_KEYS = ("modality", "tokenizer", "model", "text")
# fields inside those that say how a step is computed, not what is trained: a workdir resumes with either
EXECUTION_ONLY_KEYS = frozenset({"model.remat", "model.scan_unroll"})


class WorkdirMismatchError(ValueError):
    pass


def maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize()` when a cluster environment is present (several hosts).

    Clusters JAX detects by itself (SLURM, Open MPI, TPU pods, ...) need nothing more; anywhere else
    set `JAX_COORDINATOR_ADDRESS=host:port`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` on every process.
    """
    env = os.environ
    multi = ("JAX_COORDINATOR_ADDRESS" in env
             or ("SLURM_NTASKS" in env and int(env.get("SLURM_NTASKS", "1")) > 1)
             or "MEGASCALE_COORDINATOR_ADDRESS" in env
             or ("TPU_WORKER_HOSTNAMES" in env and "," in env["TPU_WORKER_HOSTNAMES"]))
    if not multi or jax.distributed.is_initialized():
        return
    kwargs = {}
    for name, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if name in env:
            try:
                kwargs[key] = int(env[name])
            except ValueError:
                raise ValueError(f"{name}={env[name]!r}; expected an integer") from None
    jax.distributed.initialize(**kwargs)


def make_mesh(config):
    return sharding.make_mesh(data=int(config.mesh.data), fsdp=int(config.mesh.fsdp))


def _lookup(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            key = f"{prefix}.{k}" if prefix else k
            if key not in EXECUTION_ONLY_KEYS:
                out += _diff(a.get(k), b.get(k), key)
        return out
    norm = lambda x: list(x) if isinstance(x, tuple) else x
    return [] if norm(a) == norm(b) else [f"{prefix}: {a!r} in the workdir, {b!r} now"]


def _stages_started(workdir: str) -> bool:
    return any(os.path.isdir(os.path.join(workdir, name, "checkpoints")) and
               any(n.isdigit() for n in os.listdir(os.path.join(workdir, name, "checkpoints")))
               for name in ("tokenizer", "transformer"))


def check_workdir(config, workdir: str, identity_keys=()) -> None:
    """Write `config.json` for a new workdir, or refuse one that holds another experiment.

    `identity_keys`: the task's own fields (besides `IDENTITY_KEYS`) that define the experiment. A
    workdir whose stages have not saved a checkpoint yet accepts a different (corrected) config."""
    path = os.path.join(workdir, "config.json")
    now = json.loads(config.to_json())
    if os.path.exists(path) and _stages_started(workdir):
        with open(path) as f:
            saved = json.load(f)
        problems = []
        for key in IDENTITY_KEYS + tuple(identity_keys):
            if key == "text" and "text" not in saved:
                continue
            problems += _diff(_lookup(saved, key), _lookup(now, key), key)
        if problems:
            raise WorkdirMismatchError(
                f"workdir {workdir} holds another experiment ({path}); use a new --workdir or the same config. "
                f"Differences: " + "; ".join(problems[:10]))
    if sharding.is_writer():
        os.makedirs(workdir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config.to_json(indent=2))
        os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"{workdir!r} is not an mgt workdir (no config.json); train one with mgt train")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def _build_stages(config, task, mesh, workdir: str, *, quiet: bool):
    """Both stages, the transformer's on an abstract tokenizer (shapes only), and the data checked
    against the config: every config field is checked here, before anything is written or trained."""
    task.check_source(task.source("train"))  # e.g. labels beyond data.num_classes
    tok_stage = TokenizerStage(config, task, mesh, workdir=workdir)
    abstract_tokenizer = tok_stage.abstract_model()
    tr_stage = TransformerStage(config, task, mesh, workdir=workdir, tokenizer=abstract_tokenizer,
                                tokenizer_step=0, quiet=quiet)
    return tok_stage, tr_stage


def train(config, workdir: str, *, stage: str = "all", quiet: bool = False) -> dict:
    """Train the requested stage(s). Returns `{"tokenizer": state, "transformer": state}` of what ran."""
    if stage not in STAGES:
        raise ValueError(f"--stage={stage!r}; expected one of {STAGES}")
    sharding.use_cpu_devices(config.mesh.get("cpu_devices", 0))
    maybe_initialize_distributed()
    task = make_task(config)
    mesh = make_mesh(config)
    meta = json.loads(config.to_json())
    out = {}
    with jax.set_mesh(mesh):
        tok_stage, tr_stage = _build_stages(config, task, mesh, workdir, quiet=quiet)
        # one training process per workdir (process 0 of a multi-process job holds it for all)
        lock = WorkdirLock(workdir).acquire() if sharding.is_writer() else None
        try:
            check_workdir(config, workdir, task.identity_keys)
            if stage in ("tokenizer", "all"):
                out["tokenizer"] = run_stage(tok_stage, workdir=workdir, config=config, meta=meta, quiet=quiet)
                tok_state, tok_step = out["tokenizer"], int(out["tokenizer"]["step"])
            if stage in ("transformer", "all"):
                if stage == "transformer":
                    tok_state, tok_step = latest_state(tok_stage, workdir, inference=True)
                tr_stage.tokenizer, tr_stage.tokenizer_step = tok_stage.model_from_state(tok_state), tok_step
                out["transformer"] = run_stage(tr_stage, workdir=workdir, config=config, meta=meta, quiet=quiet)
        finally:
            if lock is not None:
                lock.release()
    return out


def load_tokenizer(workdir: str):
    """`(tokenizer, step)`: the EMA tokenizer of a trained workdir's latest checkpoint (any modality)."""
    config = load_config(workdir)
    mesh = make_mesh(config)
    with jax.set_mesh(mesh):
        return _latest_tokenizer(config, make_task(config), mesh, workdir)


def _latest_tokenizer(config, task, mesh, workdir: str):
    stage = TokenizerStage(config, task, mesh, workdir=workdir)
    state, step = latest_state(stage, workdir, inference=True)
    return stage.model_from_state(state), step


def load_pipeline(workdir: str):
    """The generation pipeline of a trained workdir (any modality; EMA weights of the latest checkpoints).

    Returns a `mgt.GenerationPipeline` whose `task` reads inputs and writes outputs, `config` is the
    workdir's config and `steps` the checkpoint step of each stage.
    """
    from mgt.pipeline import GenerationPipeline

    config = load_config(workdir)
    task = make_task(config)
    mesh = make_mesh(config)
    with jax.set_mesh(mesh):
        tokenizer, tok_step = _latest_tokenizer(config, task, mesh, workdir)
        tr_stage = TransformerStage(config, task, mesh, workdir=workdir, tokenizer=tokenizer, tokenizer_step=tok_step,
                                    quiet=True)
        tr_state, tr_step = latest_state(tr_stage, workdir, inference=True)
        transformer = tr_stage.model_from_state(tr_state)
    return GenerationPipeline(transformer, tokenizer, task=task, config=config,
                              steps={"tokenizer": tok_step, "transformer": tr_step})
