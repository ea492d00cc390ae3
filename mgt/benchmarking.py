"""Small helpers shared by the scripts in `benchmarks/`: device names, timing, JSON records, and
importing one script from another."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import statistics
import time


@functools.cache
def sibling_script(script: str, name: str):
    """The script `name`.py of the folder holding `script` (a path), imported as a module — e.g.
    `sibling_script(__file__, "decode")` for another benchmark's model sizes and set-up."""
    path = os.path.join(os.path.dirname(os.path.abspath(script)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"mgt_benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def device_name() -> str:
    """"cpu (N cores)" or "<platform>: <device kind>" of the first device."""
    import jax

    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    return f"{d.platform}: {d.device_kind}"


def time_call(jitted, args: tuple, repeats: int) -> dict:
    """Compile `jitted` for `args` ahead of time, then call it once and `repeats` more times.

    Returns {"compile": lower + compile seconds, "first": seconds of the first call of the compiled
    function, "run": median seconds of the repeats}; every call is ended by `block_until_ready`."""
    import jax

    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return {"compile": compile_seconds, "first": times[0], "run": statistics.median(times[1:])}


def write_records(path: str | None, records) -> None:
    """Write benchmark records (a list of dicts, or one dict) as JSON to `path` (nothing when None)."""
    if not path:
        return
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
    n = len(records) if isinstance(records, list) else 1
    print(f"wrote {n} record{'s' if n != 1 else ''} to {path}")
