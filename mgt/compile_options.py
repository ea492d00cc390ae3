"""XLA compiler options for mgt's training steps (`Stage.train_step`: every tokenizer and Transformer stage).

On a CPU, jaxlib 0.10's XLA hands YNNPACK not only the matrix multiplications but also elementwise and
reduction fusions (and lays out some of the backward pass for them); at the sizes of mgt's CPU main
jobs those fusions are slow — the video main job's Transformer step spends a fifth of its time in four
transposing elementwise fusions of the MLP's backward pass. With dots alone handed to YNNPACK the step
runs 5.2 instead of 3.5 steps/s on the 2-core development CPU; losses agree to rounding (README,
"Benchmarks"). Generation is not helped (measured), so it compiles with XLA's defaults.

`compiler_options()` is what `jax.jit(..., compiler_options=...)` gets: empty on GPU / TPU, when this
jaxlib does not know the option, or when the user chose YNNPACK's fusions in `XLA_FLAGS` themselves.
"""

from __future__ import annotations

import functools
import os

import jax

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_OPTION: "LIBRARY_FUSION_TYPE_DOT"}


def compiler_options() -> dict[str, str]:
    """The options for a program compiled for the default backend (a new dict; may be empty)."""
    if jax.default_backend() != "cpu" or YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}
    return dict(CPU_OPTIONS) if _cpu_options_supported() else {}


@functools.cache
def _cpu_options_supported() -> bool:
    """Whether this jaxlib's XLA accepts `CPU_OPTIONS` (compiles a one-op program once)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(0.0).compile()
    except Exception:  # an older / newer XLA without the option or that enum value
        return False
    return True
