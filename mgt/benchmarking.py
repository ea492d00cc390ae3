"""Small helpers shared by the scripts in `benchmarks/`: device names, timing, JSON records."""

from __future__ import annotations

import json
import os
import statistics
import time


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
