"""Feature-network weights on disk: one safetensors file of named float32 arrays plus string metadata.

Every feature network (Inception-v3, I3D, VGGish, the small built-in networks) is an NNX module whose
variables are saved under their dotted state paths (`"conv1.kernel"`, `"mixed_5b.branch1x1.bn.mean"`).
Converters build such a dict from a foreign file and hand it to `assign`; `load_weights` reads one
back. A missing or extra name, or a shape that does not match, is a ValueError naming the file.
"""

from __future__ import annotations

import os

import numpy as np
from flax import nnx


def state_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every variable of `model` (parameters and statistics) as `{dotted path: numpy array}`."""
    flat = nnx.state(model).flat_state()
    return {".".join(str(k) for k in path): np.asarray(v.get_value()) for path, v in flat}


def assign(model: nnx.Module, arrays: dict[str, np.ndarray], *, source: str = "the weights") -> None:
    """Set every variable of `model` from `arrays` (`{dotted path: array}`), exactly the same names and
    shapes; `source` names where the arrays came from in errors."""
    state = nnx.state(model)
    flat = state.flat_state()
    names = {".".join(str(k) for k in path): (path, v) for path, v in flat}
    missing = sorted(set(names) - set(arrays))
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise ValueError(f"{source}: does not fit {type(model).__name__}: "
                         f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                         f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for name, (_, variable) in names.items():
        value = np.asarray(arrays[name])
        expected = tuple(variable.get_value().shape)
        if tuple(value.shape) != expected:
            raise ValueError(f"{source}: {name} has shape {tuple(value.shape)}, expected {expected}")
        variable.set_value(value.astype(variable.get_value().dtype))


def save_weights(model: nnx.Module, path: str, *, metadata: dict[str, str] | None = None) -> str:
    """Write `model`'s variables to the safetensors file `path` (atomically: a crash leaves no half file)."""
    from safetensors.numpy import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in state_arrays(model).items()}
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(arrays, tmp, metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    os.chmod(tmp, 0o644)  # a shipped or shared weights file is readable by everyone, like any other file
    os.replace(tmp, path)
    return path


def load_weights(model: nnx.Module, path: str, *, argument: str = "weights") -> dict[str, str]:
    """Set `model`'s variables from the safetensors file `path`; returns the file's metadata.
    ValueError naming `argument` and the path when it is missing or does not fit the model."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise ValueError(f"{argument} {path!r} does not exist")
    try:
        arrays = load_file(path)
        with safe_open(path, framework="numpy") as f:
            metadata = dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a foreign file
        raise ValueError(f"{argument} {path!r}: not a safetensors weights file ({e})") from None
    assign(model, arrays, source=f"{argument} {path!r}")
    return metadata
