"""Writing many generated samples with memory bounded by one batch.

`NpzStreamWriter` writes arrays into an `.npz` batch by batch: each key becomes one `.npy` member of
the zip, its header written with the final length up front, its rows appended as they come, so
`np.load` reads the file as if `np.savez` had written it. `BufferedSampleWriter` collects batches and
hands them to a task's `write_samples` at the end (formats that need every sample at once, such as a
grid picture).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np


class NpzStreamWriter:
    """`.npz` written batch by batch. `add(images=..., labels=...)` appends rows to every key.

    Args:
      path: the `.npz` file (written to `path + ".partial"` and renamed when complete, so a crash
        never leaves a truncated file under the final name).
      total: rows each key will hold in the end.
      shapes / dtypes: per key, the shape of one row and the dtype.
    """

    def __init__(self, path: str, total: int, shapes: dict[str, tuple], dtypes: dict[str, np.dtype]):
        self.path, self.total = path, int(total)
        self.tmp = path + ".partial"
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.dtypes = {k: np.dtype(v) for k, v in dtypes.items()}
        self.written = 0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._zip = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        # The first key streams directly; the others are small per-example metadata (labels) kept in
        # memory until the end.
        self._stream_key = next(iter(shapes))
        self.rows = {k: [] for k in shapes if k != self._stream_key}  # pending batches of the other keys
        self._member = self._zip.open(f"{self._stream_key}.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtypes[self._stream_key]), "fortran_order": False,
                  "shape": (self.total,) + self.shapes[self._stream_key]}
        np.lib.format.write_array_header_2_0(self._member, header)

    def add(self, **arrays) -> None:
        first = np.ascontiguousarray(arrays[self._stream_key], self.dtypes[self._stream_key])
        if first.shape[1:] != self.shapes[self._stream_key]:
            raise ValueError(f"{self._stream_key} rows have shape {first.shape[1:]}; expected "
                             f"{self.shapes[self._stream_key]}")
        if self.written + len(first) > self.total:
            raise ValueError(f"more than the {self.total} rows announced")
        self._member.write(first.tobytes())
        self.written += len(first)
        for key, value in arrays.items():
            if key != self._stream_key:
                self.rows[key].append(np.asarray(value, self.dtypes[key]))

    def close(self) -> None:
        self._member.close()
        if self.written != self.total:
            self._zip.close()
            os.remove(self.tmp)
            raise ValueError(f"{self.path}: {self.written} of {self.total} rows written")
        for key in self.rows:
            with self._zip.open(f"{key}.npy", "w", force_zip64=True) as f:
                parts = self.rows[key]
                rows = np.concatenate(parts) if parts else np.zeros((0,) + self.shapes[key], self.dtypes[key])
                if rows.dtype.kind == "U":  # strings: as wide as the longest, not the announced width
                    rows = np.asarray(rows.tolist(), str).reshape(rows.shape)
                np.lib.format.write_array(f, rows)
        self._zip.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._member.close()
            self._zip.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


class BufferedSampleWriter:
    """Collects batches of outputs and their conditions; `close()` calls `write(path, outputs, condition)`."""

    def __init__(self, write, path: str):
        self.write, self.path = write, path
        self.outputs, self.conditions = [], []

    def add(self, outputs, condition) -> None:
        self.outputs.append(np.asarray(outputs))
        self.conditions.append(condition)

    def close(self) -> None:
        from mgt.condition import Condition

        outputs = np.concatenate(self.outputs)
        fields = {}
        for name in ("labels", "context", "context_ids", "context_mask", "text"):
            parts = [getattr(c, name) for c in self.conditions if c is not None]
            if parts and all(p is not None for p in parts):
                fields[name] = np.concatenate([np.asarray(p) for p in parts])
        self.write(self.path, outputs, Condition(**fields))

    def abort(self) -> None:
        self.outputs.clear()


class LabelledUint8Npz:
    """Outputs float32 in [0, 1] → uint8 rows of a streamed `.npz` under `key` (e.g. "images",
    "videos"), with int32 `labels` (0 where a batch has none) — and with `prompts` (unicode, the prompt
    of each row) when `prompts=True`: the `.npz` layout of every task's `mgt sample --out *.npz`."""

    def __init__(self, path: str, total: int, key: str, example_shape: tuple[int, ...], *, prompts: bool = False):
        self.key = key
        shapes, dtypes = {key: example_shape, "labels": ()}, {key: np.uint8, "labels": np.int32}
        if prompts:
            shapes["prompts"], dtypes["prompts"] = (), np.dtype("<U1024")
        self.prompts = prompts
        self._npz = NpzStreamWriter(path, total, shapes, dtypes)

    def add(self, outputs, condition) -> None:
        rows = np.round(np.clip(np.asarray(outputs, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
        labels = (np.zeros(len(rows), np.int32) if condition is None or condition.labels is None
                  else np.asarray(condition.labels, np.int32))
        extra = {}
        if self.prompts:
            text = None if condition is None else condition.text
            extra["prompts"] = np.asarray([""] * len(rows) if text is None else text, str)
        self._npz.add(**{self.key: rows, "labels": labels}, **extra)

    def close(self) -> None:
        self._npz.close()

    def abort(self) -> None:
        self._npz.abort()
