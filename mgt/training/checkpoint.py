"""Checkpoint I/O behind one small module (orbax `CheckpointManager`), so that a move to orbax's
newer API stays local.

A checkpoint holds one train-state pytree (parameters, optimiser state, EMA weights, step, ...),
the data iterator's state and the experiment's config as JSON. Saves are asynchronous; a save
interrupted by a crash (even `kill -9`) is never taken as a checkpoint, because orbax only commits
a step after all its files are written. Nothing is unpickled.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
    """A checkpoint whose structure or shapes do not match the model built from the config."""


class NoReadableCheckpointError(ValueError):
    """Every checkpoint of a stage is damaged."""


# Orbax saves an array held by several replicas in slices, one per replica ("replica-parallel"); for
# arrays under this size the eager slicing costs more than it saves (on 4 fake CPU devices a tiny run
# compiled ~90 slice programs and spent seconds per save).
_MIN_REPLICA_SLICE_BYTES = 1 << 20


def _type_handlers():
    """Orbax's standard type handlers, with replica-parallel saving for large arrays only."""
    import numpy as np

    th = ocp.type_handlers
    return th.create_type_handler_registry(
        (int, th.ScalarHandler()), (float, th.ScalarHandler()), (bytes, th.ScalarHandler()),
        (np.number, th.ScalarHandler()), (np.ndarray, th.NumpyHandler()),
        (jax.Array, th.ArrayHandler(min_slice_bytes_for_replica_parallel=_MIN_REPLICA_SLICE_BYTES)),
        (str, th.StringHandler()))


class Checkpointer:
    """Saves and restores `(state, data iterator, meta)` under `directory`.

    Args:
      directory: where the numbered step folders live.
      max_to_keep: the last K checkpoints are kept.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        import grain

        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True)
        # Explicit handlers: a new process (a resumed run) can then read metadata before restoring.
        handlers = {"state": ocp.PyTreeCheckpointHandler(type_handler_registry=_type_handlers()),
                    "meta": ocp.JsonCheckpointHandler(),
                    "data": grain.checkpoint.CheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, *, data_iterator=None, meta: dict | None = None) -> None:
        """Start an asynchronous save of `state` (a pytree of arrays) at `step`."""
        import grain

        items = {"state": ocp.args.PyTreeSave(state), "meta": ocp.args.JsonSave(meta or {})}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)

    def restore(self, target_state, *, step: int | None = None, data_iterator=None, partial: bool = False):
        """Restore into the structure, shapes and shardings of `target_state` (arrays or
        `jax.ShapeDtypeStruct`s). Restores the data iterator's position in place when given.
        With `partial=True` the target may hold a subset of the saved tree (e.g. only the EMA
        weights for sampling: no optimiser state is read or allocated).

        Raises:
          CheckpointMismatchError: listing every missing, unexpected or mis-shaped path.
        """
        import grain

        step = self.latest_step() if step is None else step
        self.check_compatible(target_state, step, partial=partial)
        abstract = jax.tree.map(_abstract, target_state)
        items = {"state": ocp.args.PyTreeRestore(abstract,
                                                 restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                                                 partial_restore=partial)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self._manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def all_steps(self) -> list[int]:
        return sorted(int(s) for s in self._manager.all_steps())

    def restore_newest_readable(self, target_state, *, data_iterator=None, partial: bool = False):
        """Restore the newest checkpoint that reads back whole; damaged newer ones (truncated array
        files, emptied metadata) are skipped with a warning naming their step.

        Returns `(state, step, damaged_steps)`; `self.damage` maps each damaged step to the error.
        Raises `CheckpointMismatchError` (the model does not fit: not damage) at once, and
        `NoReadableCheckpointError` when no checkpoint reads.
        """
        damaged = []
        self.damage = {}
        for step in reversed(self.all_steps()):
            try:
                # step 0 holds converted / imported weights and no data-iterator position
                state = self.restore(target_state, step=step, data_iterator=data_iterator if step > 0 else None,
                                     partial=partial)
                return state, step, damaged
            except CheckpointMismatchError:
                raise
            except Exception as e:  # orbax / tensorstore / json errors of a damaged step
                damaged.append(step)
                self.damage[step] = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise NoReadableCheckpointError(f"no readable checkpoint in {self.directory}: steps {damaged} are all "
                                        f"damaged (step {damaged[0]}: {self.damage[damaged[0]]}); remove the "
                                        "folder to start this stage again")

    def read_tree(self, step: int | None = None):
        """The saved state as nested dicts of host numpy arrays (no target needed; for tools such as
        inflating one workdir's weights into another model)."""
        import numpy as np

        step = self.latest_step() if step is None else step
        meta = self._manager.item_metadata(step)["state"]
        tree = getattr(meta, "tree", meta)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(restore_args=restore_args)))["state"]

    def read_arrays(self, step: int | None = None) -> list:
        """The saved state's leaves as host numpy arrays, in tree order (for comparisons and tools)."""
        import numpy as np

        return [np.asarray(x) for x in jax.tree.leaves(self.read_tree(step))]

    def check_compatible(self, target_state, step: int, *, partial: bool = False) -> None:
        saved = self._manager.item_metadata(step)["state"]
        saved_tree = getattr(saved, "tree", saved)
        saved_shapes = _shapes_by_path(saved_tree)
        wanted_shapes = _shapes_by_path(target_state)
        problems = []
        for path in sorted(set(wanted_shapes) - set(saved_shapes)):
            problems.append(f"  missing in checkpoint: {path} {wanted_shapes[path]}")
        for path in sorted(set(saved_shapes) - set(wanted_shapes)) if not partial else ():
            problems.append(f"  not in the model: {path} {saved_shapes[path]}")
        for path in sorted(set(saved_shapes) & set(wanted_shapes)):
            if tuple(saved_shapes[path]) != tuple(wanted_shapes[path]):
                problems.append(f"  shape {saved_shapes[path]} in checkpoint, {wanted_shapes[path]} expected: {path}")
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory} step {step} does not match the configured model "
                f"({len(problems)} parameter paths differ):\n" + "\n".join(problems[:40])
                + ("\n  ..." if len(problems) > 40 else "")
            )

    def set_aside(self, steps, folder: str) -> None:
        """Move the folders of `steps` (damaged checkpoints) into `folder`, so that training continues
        from an older step without them shadowing its new checkpoints."""
        import shutil
        import time

        os.makedirs(folder, exist_ok=True)
        for step in steps:
            source = os.path.join(self.directory, str(step))
            if os.path.exists(source):
                shutil.move(source, os.path.join(folder, f"{step}_{int(time.time())}"))
        self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _path_str(path) -> str:
    parts = []
    for p in path:
        for attr in ("key", "name", "idx"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
        else:
            parts.append(str(p))
    # nnx.State pure leaves sit under a 'value' / 'raw_value' key in some versions
    return "/".join(q for q in parts if q not in ("value", "raw_value"))


def _shapes_by_path(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None or hasattr(x, "shape"))[0]
    return {_path_str(path): tuple(getattr(leaf, "shape", ())) for path, leaf in leaves if leaf is not None}
