"""Metrics and progress: `metrics.jsonl`, TensorBoard event files, and a progress bar or log lines."""

from __future__ import annotations

import json
import math
import os
import sys
import time


class MetricsWriter:
    """Appends scalar metrics to `<workdir>/metrics.jsonl` and TensorBoard, and shows progress.

    On a terminal a tqdm bar shows step, loss, steps/s and ETA; otherwise a plain line is printed
    every `log_every` steps (CI logs and files stay readable). With several JAX processes only
    process 0 writes and shows anything (`write=False` on the others).
    """

    def __init__(self, workdir: str, *, stage: str, total_steps: int, start_step: int = 0, log_every: int = 50,
                 tensorboard: bool = True, quiet: bool = False, write: bool = True):
        self.stage, self.total_steps, self.log_every = stage, total_steps, max(1, log_every)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = self._tb = None
        quiet = quiet or not write
        if write:
            os.makedirs(workdir, exist_ok=True)
            self._file = open(self.path, "a", buffering=1)
        if tensorboard and write:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard", stage))
            except ImportError:  # optional
                self._tb = None
        self._quiet = quiet
        self._bar = None
        self._start_time, self._start_step, self._last_step = time.time(), start_step, start_step
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc=stage, dynamic_ncols=True)

    def write(self, step: int, scalars: dict) -> None:
        if self._file is None:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        self._file.write(json.dumps({"stage": self.stage, "step": int(step), "time": time.time(), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if math.isfinite(v):
                    self._tb.add_scalar(f"{self.stage}/{k}", v, int(step))

    def progress(self, step: int, scalars: dict) -> None:
        done = step - self._start_step
        elapsed = max(time.time() - self._start_time, 1e-9)
        rate = done / elapsed
        if self._bar is not None:
            self._bar.update(step - self._last_step)
            self._bar.set_postfix({k: f"{float(v):.4g}" for k, v in scalars.items()}, refresh=False)
        elif not self._quiet and (step % self.log_every == 0 or step == self.total_steps):
            eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
            parts = " ".join(f"{k} {float(v):.4g}" for k, v in scalars.items())
            print(f"[{self.stage}] step {step}/{self.total_steps} {parts} {rate:.2f} steps/s ETA {_fmt(eta)}",
                  flush=True)
        self._last_step = step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s")
