"""The step loop shared by every training stage: resume, steps, metrics, checkpoints, NaN guard.

A stage (`mgt.training.state.Stage`) provides `name`, `total_steps`, optionally `prepare_training()`,
`init_state()`, `data_iterator()`, `batch_to_device(batch)`, `train_step(state, batch, rng) ->
(state, metrics)` (compiled once), `write_samples(state, step, writer, path=None) -> metrics` (every
`config.sample_every` steps; their metrics join that step's row) and optionally `final_samples_path`
(samples of the finished run).
Every random draw of step s comes from `fold_in(key(seed), s)`, and the data iterator's position is
checkpointed with the state, so a run resumed from a checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import math
import os

import jax

from mgt.sharding import is_writer
from mgt.training.checkpoint import Checkpointer
from mgt.training.metrics import MetricsWriter


class TrainingDiverged(RuntimeError):
    """A loss or gradient norm became NaN or Inf."""


def run_stage(stage, *, workdir: str, config, meta: dict, quiet: bool = False):
    """Train `stage` to `stage.total_steps`, resuming from its latest checkpoint. Returns the state."""
    ckpt = Checkpointer(os.path.join(workdir, stage.name, "checkpoints"), max_to_keep=int(config.keep_checkpoints))
    if hasattr(stage, "prepare_training"):
        stage.prepare_training()
    state = stage.init_state()
    iterator = stage.data_iterator()
    latest = ckpt.latest_step()
    start = latest or 0
    if latest is not None:  # step 0 exists for converted / imported weights (fine-tuning starts there)
        state = ckpt.restore(state, data_iterator=iterator if latest > 0 else None)
        if not quiet and is_writer():
            print(f"[{stage.name}] resumed from step {start} ({ckpt.directory})", flush=True)
    total = stage.total_steps
    if start >= total:
        ckpt.close()
        return state
    writer = MetricsWriter(workdir, stage=stage.name, total_steps=total, start_step=start,
                           log_every=int(config.log_every), quiet=quiet, write=is_writer())
    base_key = jax.random.key(int(config.seed))
    checkpoint_every = int(config.checkpoint_every) or total
    sample_every = int(config.sample_every)
    try:
        for step in range(start, total):
            batch = stage.batch_to_device(next(iterator))
            state, metrics = stage.train_step(state, batch, jax.random.fold_in(base_key, step))
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            done = step + 1
            bad = [k for k in ("loss", "grad_norm") if k in metrics and not math.isfinite(metrics[k])]
            if bad:
                ckpt.wait()
                last = ckpt.latest_step()
                raise TrainingDiverged(
                    f"[{stage.name}] {bad[0]} is {metrics[bad[0]]} at step {done}; stopped. The last good "
                    f"checkpoint is step {last} in {ckpt.directory}" if last else
                    f"[{stage.name}] {bad[0]} is {metrics[bad[0]]} at step {done}; stopped before any checkpoint"
                )
            writer.progress(done, {"loss": metrics.get("loss", float("nan"))})
            if done % checkpoint_every == 0 or done == total:
                ckpt.save(done, state, data_iterator=iterator, meta=meta)
            sample_metrics = {}
            if sample_every and (done % sample_every == 0):
                sample_metrics.update(stage.write_samples(state, done, writer) or {})
            final_path = getattr(stage, "final_samples_path", None)
            if done == total and final_path:
                sample_metrics.update(stage.write_samples(state, done, writer, path=final_path) or {})
            if done % int(config.log_every) == 0 or done == total or sample_metrics:
                writer.write(done, {**metrics, **sample_metrics})
    finally:
        writer.close()
        ckpt.close()
    return state


def latest_state(stage, workdir: str, *, inference: bool = False):
    """The latest checkpointed state of `stage` and its step (raises ValueError when there is none).

    `inference=True` reads only what sampling needs (`stage.inference_target()`: EMA weights and
    non-parameter state) — no optimiser state is allocated and nothing is compiled.
    """
    ckpt = Checkpointer(os.path.join(workdir, stage.name, "checkpoints"))
    try:
        if ckpt.latest_step() is None:
            raise ValueError(f"no {stage.name} checkpoint in {workdir}; train it first "
                             f"(mgt train --stage {stage.name})")
        if inference:
            return ckpt.restore(stage.inference_target(), partial=True), ckpt.latest_step()
        return ckpt.restore(stage.init_state()), ckpt.latest_step()
    finally:
        ckpt.close()
