"""Meshes and logical-axis sharding (data parallel + FSDP) with JAX's own sharding.

Every parameter names its dimensions with logical axes (`mgt.layers`); `LOGICAL_RULES` maps them to
the mesh axes `data` and `fsdp`. Parameters and optimiser state are sharded along `fsdp` on their
"embed" dimension; batches are split over both axes. On one device every rule degenerates to
replication, so the same code runs on a laptop and on a pod.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
LOGICAL_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", None),
    ("heads", None),
    ("kv", None),
    ("vocab", None),
    ("levels", None),
    ("pos", None),
    ("context", None),
    ("layers", None),
    ("channels", None),
    ("conv_in", None),
)


def use_cpu_devices(n: int) -> None:
    """Split the host's CPU into `n` JAX devices (`jax_num_cpu_devices`) before the first JAX operation.

    A data-parallel mesh over them runs `n` shards of each training step side by side: on a 2-core CPU,
    two devices keep both cores busier than one device's intra-op threads do (the video main job's
    steps ~6 % faster; README). Only the CPU backend is affected (a GPU / TPU mesh is unchanged).
    `n <= 0` leaves JAX's default (one CPU device); the user's own `JAX_NUM_CPU_DEVICES` or
    `--xla_force_host_platform_device_count` in `XLA_FLAGS` win over it. Once JAX has run anything
    in this process (a notebook, a test) the count cannot change: a warning then says so, and
    training goes on with the devices there are.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"config.mesh.cpu_devices={n!r}; expected an integer (0: JAX's default, one CPU device)")
    n = int(n)
    if n <= 0 or "JAX_NUM_CPU_DEVICES" in os.environ or \
            "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # backends already initialised
        have = len(jax.devices("cpu"))
        if have != n:
            warnings.warn(f"config.mesh.cpu_devices={n} not applied: JAX already runs with {have} CPU device(s) "
                          f"in this process (set JAX_NUM_CPU_DEVICES={n} before the first JAX operation)",
                          stacklevel=2)


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A `(data, fsdp)` mesh over `devices` (all devices by default); -1 fills the remaining devices."""
    devices = list(jax.devices()) if devices is None else list(devices)
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise ValueError("at most one of mesh data / fsdp may be -1")
    if data == -1:
        if n % fsdp:
            raise ValueError(f"mesh fsdp={fsdp} does not divide the {n} devices")
        data = n // fsdp
    if fsdp == -1:
        if n % data:
            raise ValueError(f"mesh data={data} does not divide the {n} devices")
        fsdp = n // data
    if data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} = {data * fsdp} does not match the {n} devices")
    return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def state_shardings(state, mesh: Mesh, rules=LOGICAL_RULES):
    """NamedShardings for an nnx State (abstract or concrete) from its logical axis names.

    A dimension whose mesh axes do not divide its size is replicated instead (small biases, odd
    vocabularies), so any model shards on any mesh.
    """
    with nnx.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(state)

    def fit(spec, leaf):
        if not isinstance(spec, P):
            return NamedSharding(mesh, P())
        shape = leaf.shape
        fixed = []
        for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
            names = (axes,) if isinstance(axes, str) else tuple(axes or ())
            size = math.prod(mesh.shape[a] for a in names) if names else 1
            fixed.append(axes if names and dim % size == 0 else None)
        return NamedSharding(mesh, P(*fixed))

    return jax.tree.map(fit, specs, state, is_leaf=lambda x: isinstance(x, P))


def abstract_model(make_model: Callable[[], nnx.Module], rules=LOGICAL_RULES) -> nnx.Module:
    """`nnx.eval_shape(make_model)`, also inside a mesh context (logical names resolved by `rules`)."""
    with nnx.logical_axis_rules(rules):
        return nnx.eval_shape(make_model)


def create_sharded(make_model: Callable[[], nnx.Module], mesh: Mesh, rules=LOGICAL_RULES, *,
                   abstract: nnx.Module | None = None) -> nnx.Module:
    """Build a model directly into its sharded layout (no full copy on one device first).
    `abstract`: `abstract_model(make_model)` when the caller already has it."""
    abstract = abstract_model(make_model, rules) if abstract is None else abstract
    graphdef, abstract_state = nnx.split(abstract)
    shardings = state_shardings(abstract_state, mesh, rules)

    @jax.jit
    def init():
        state = nnx.state(make_model())
        return jax.lax.with_sharding_constraint(state, shardings)

    return nnx.merge(graphdef, init())


def abstract_state_on_mesh(make_model: Callable[[], nnx.Module], mesh: Mesh, rules=LOGICAL_RULES, *,
                           abstract: nnx.Module | None = None):
    """`(params, rest)`: the model's abstract state as `jax.ShapeDtypeStruct`s carrying their shardings
    on `mesh` — a restore target that allocates nothing. `abstract`: as in `create_sharded`."""
    abstract = abstract_model(make_model, rules) if abstract is None else abstract
    _, params, rest = nnx.split(abstract, nnx.Param, ...)

    def on_mesh(state):
        shardings = state_shardings(state, mesh, rules)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)

    return on_mesh(params), on_mesh(rest)


def shard_model(model: nnx.Module, mesh: Mesh, rules=LOGICAL_RULES) -> nnx.Module:
    """Move an existing model's state onto `mesh` by its logical axis rules (in place)."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, state_shardings(state, mesh, rules)))
    return model


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def to_host(x) -> np.ndarray:
    """A (possibly sharded, possibly multi-process) array as one numpy array on every process."""
    if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def is_writer() -> bool:
    """Whether this process writes shared files (logs, caches, sample grids): process 0 only, so that
    several hosts training one model do not write the same file twice."""
    return jax.process_index() == 0


def shard_batch(batch, mesh: Mesh):
    """Put a host batch (pytree of arrays `[B, ...]`) on the mesh, split along the batch axis.

    On several processes each host passes its own slice of the global batch.
    """
    def put(x):
        x = np.asarray(x)
        sharding = batch_sharding(mesh, x.ndim)
        if jax.process_count() > 1:
            return jax.make_array_from_process_local_data(sharding, x)
        return jax.device_put(x, sharding)

    return jax.tree.map(put, batch)
