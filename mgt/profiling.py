"""Where the time goes: named scopes on the model's parts, and a per-scope breakdown of a profiled run.

`scoped(name)` runs a function under `jax.named_scope(name)` (`scope(name)` is the `with` form); the
transformer marks its parts with it ("transformer", "embed", "layers", "attention", "mlp", "norm",
"head"), the decoding loop its token choice ("sampling"), the VQGAN its encoder and decoder
("vqgan_encoder", "vqgan_decoder"), training its "masking", "loss", "optimizer", "ema" and
"discriminator". Every HLO op then carries the chain of scopes it was traced under in its metadata (`op_name`, e.g.
`jit(f)/while/body/transformer/layers/while/body/attention/dot_general`).

`profile(run, compiled)` calls `run` under `jax.profiler.trace`, reads the trace back with
`jax.profiler.ProfileData`, and adds up the time of every executed op of `compiled`'s program by its
scope chain: `transformer/layers/attention`, `sampling`, `vqgan_decoder`, ... (ops traced under a
gradient get " [backward]"). On GPU and TPU the ops are the device's kernels; on CPU they are the
host thunks XLA runs. Control-flow ops (while, conditional, call) are left out, their bodies are
counted. A fusion is attributed to the scope of its root op. The trace directory is kept: open it
in TensorBoard's profile plugin or Perfetto (ui.perfetto.dev) for the timeline.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import os
import re
import statistics
import tempfile
import time
from typing import Any, Callable, Sequence

import jax

_SCOPE_NAMES: set[str] = set()
_CONTROL_FLOW = {"while", "conditional", "call"}
# `%name = <type> opcode(...)`: the instruction's name, its opcode, and the rest of the line.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*? ([\w\-]+)\((.*)$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def scope(name: str):
    """`jax.named_scope(name)`, with `name` registered as a scope that `profile` reports."""
    _SCOPE_NAMES.add(name)
    return jax.named_scope(name)


def scoped(name: str):
    """Run the decorated function under `scope(name)`."""
    _SCOPE_NAMES.add(name)

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with scope(name):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def scope_of(op_name: str, scopes: set[str] | None = None) -> str:
    """The chain of registered scopes in an op's `op_name` metadata, outermost first, joined by "/";
    "(unscoped)" when there is none, "(XLA-inserted)" for ops without a source (copies of loop state
    and layout changes XLA adds); " [backward]" appended for ops of a gradient (`transpose(...)`)."""
    scopes = _SCOPE_NAMES if scopes is None else scopes
    chain = []
    for part in op_name.split("/"):
        core = re.sub(r"^(?:[\w.]+\()+", "", part).rstrip(")")  # jvp(attention) -> attention
        if core in scopes and (not chain or chain[-1] != core):
            chain.append(core)
    label = "/".join(chain) or ("(unscoped)" if op_name else "(XLA-inserted)")
    return label + (" [backward]" if "transpose(" in op_name else "")


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """`{instruction name: (opcode, op_name metadata)}` of every instruction in an HLO module's text."""
    out = {}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            op_name = _OP_NAME.search(m.group(3))
            out[m.group(1)] = (m.group(2), op_name.group(1) if op_name else "")
    return out


def _module_name(hlo_text: str) -> str:
    first = hlo_text.lstrip().split("\n", 1)[0]
    return first.split()[1].rstrip(",") if first.startswith("HloModule") else ""


@dataclasses.dataclass
class Profile:
    """A profiled run, per call of `run` (seconds).

    wall_seconds: median host wall time of one call (ended by `block_until_ready`).
    op_seconds: the summed duration of the program's ops per call; on CPU ops of one call may run on
      several threads at once, so this can exceed the wall time; on a GPU the gap to the wall time
      is idle device time (launches, host work, transfers).
    by_scope: `{scope chain: seconds per call}`, largest first.
    top_ops: `[(instruction, opcode, scope, seconds per call, executions per call)]`, largest first.
    device_ops: True when the times are device kernels (GPU/TPU), False for CPU host thunks.
    trace_dir: where the raw trace lies.
    """

    wall_seconds: float
    op_seconds: float
    by_scope: dict[str, float]
    top_ops: list[tuple[str, str, str, float, float]]
    device_ops: bool
    trace_dir: str
    repeats: int

    def table(self, top: int = 10) -> str:
        """The breakdown as text: scopes with ms per call and share of op time, then the top ops."""
        total = self.op_seconds or float("nan")
        lines = [f"  {'scope':<44} {'ms/call':>10} {'share':>7}"]
        for scope, s in self.by_scope.items():
            lines.append(f"  {scope:<44} {1e3 * s:>10.3f} {100 * s / total:>6.1f}%")
        kind = "device kernels" if self.device_ops else "host thunks"
        lines.append(f"  {'all ops (' + kind + ')':<44} {1e3 * self.op_seconds:>10.3f}")
        lines.append(f"  {'wall time per call':<44} {1e3 * self.wall_seconds:>10.3f}")
        lines.append(f"\n  {'top ops':<28} {'opcode':<14} {'scope':<36} {'ms/call':>9} {'runs':>6}")
        for name, opcode, scope, s, runs in self.top_ops[:top]:
            lines.append(f"  {name[:28]:<28} {opcode[:14]:<14} {scope[:36]:<36} {1e3 * s:>9.3f} {runs:>6.0f}")
        return "\n".join(lines)

    def records(self) -> list[dict]:
        """JSON-ready records: one per scope and the two totals."""
        recs = [dict(scope=k, seconds_per_call=v, share=v / self.op_seconds if self.op_seconds else None)
                for k, v in self.by_scope.items()]
        recs.append(dict(scope="(all ops)", seconds_per_call=self.op_seconds, share=1.0))
        recs.append(dict(scope="(wall)", seconds_per_call=self.wall_seconds, share=None))
        return recs


def profile(run: Callable[[], Any], compiled: Any | Sequence[Any], *, repeats: int = 3,
            trace_dir: str | None = None, warmup: bool = True) -> Profile:
    """Profile `repeats` calls of `run` and break the time of `compiled`'s ops down by scope.

    Args:
      run: a function of no arguments that runs the compiled program once (it may thread state
        between calls, e.g. a donated train state); its result is waited for with `block_until_ready`.
      compiled: the `jax.stages.Compiled` that `run` executes (or several, or their HLO texts): its
        optimised HLO names the ops in the trace and holds their scopes.
      repeats: traced calls (>= 1). warmup: call `run` once before tracing (compilation, first-run
        allocation and autotuning stay out of the trace).
      trace_dir: where the trace is written (a new temporary directory when None).
    Returns:
      a `Profile`.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}; expected >= 1")
    texts = [c if isinstance(c, str) else c.as_text() for c in (compiled if isinstance(compiled, (list, tuple))
                                                                else [compiled])]
    instructions, modules = {}, set()
    for text in texts:
        instructions.update(hlo_instructions(text))
        modules.add(_module_name(text))
    trace_dir = trace_dir or tempfile.mkdtemp(prefix="mgt_profile_")
    if warmup:
        jax.block_until_ready(run())
    before = set(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
    walls = []
    with jax.profiler.trace(trace_dir):
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(run())
            walls.append(time.perf_counter() - start)
    written = sorted(set(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)) - before,
                     key=os.path.getmtime)
    if not written:
        raise RuntimeError(f"jax.profiler.trace wrote no .xplane.pb under {trace_dir}")
    events, device_ops = _op_events(written[-1], modules)
    op_time, op_runs = collections.Counter(), collections.Counter()
    for op, ns in events:
        if instructions.get(op, ("", ""))[0] in _CONTROL_FLOW:
            continue
        op_time[op] += ns * 1e-9 / repeats
        op_runs[op] += 1 / repeats
    by_scope = collections.Counter()
    top = []
    for op, s in op_time.most_common():
        opcode, op_name = instructions.get(op, ("?", ""))
        scope = scope_of(op_name) if op in instructions else "(not in the given program)"
        by_scope[scope] += s
        top.append((op, opcode, scope, s, op_runs[op]))
    return Profile(wall_seconds=statistics.median(walls), op_seconds=sum(op_time.values()),
                   by_scope=dict(by_scope.most_common()), top_ops=top, device_ops=device_ops,
                   trace_dir=trace_dir, repeats=repeats)


def _op_events(xplane_path: str, modules: set[str]) -> tuple[list[tuple[str, float]], bool]:
    """`([(hlo op name, duration ns)], device_ops)` of the trace's XLA op events of `modules`.

    Device planes (`/device:GPU:0`, ...) are used when they hold op events, else the host's (CPU)."""
    from jax.profiler import ProfileData

    data = ProfileData.from_file(xplane_path)
    device, host = [], []
    for plane in data.planes:
        is_device = plane.name.startswith("/device:") and "CPU" not in plane.name
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                op = stats.get("hlo_op")
                if op is None:
                    continue
                module = str(stats.get("hlo_module", ""))
                if modules and module and module not in modules:
                    continue
                (device if is_device else host).append((str(op), float(event.duration_ns)))
    return (device, True) if device else (host, False)
