"""Read PyTorch state-dict files (`.pth` / `.pt`) into numpy arrays, without torch and without trusting
the pickle.

A `torch.save` file is a pickle whose tensors point into raw byte storages kept beside it. Two layouts
exist and both are read:

- zip (torch >= 1.6): `<root>/data.pkl` is the pickle, `<root>/data/<key>` holds each storage's bytes
  and `<root>/byteorder` says `little` or `big` (absent in older files: little).
- legacy (`_use_new_zipfile_serialization=False`, and every file written before torch 1.6, such as
  pytorch-fid's Inception weights): a run of pickles in one stream — the magic number, the protocol
  version, a `sys_info` dict, the main pickle, the list of storage keys — and then, for each key in
  that order, an int64 element count followed by the storage's bytes.

Unpickling runs code named by the file, so a plain `pickle.load` of a downloaded checkpoint can do
anything. `_RestrictedUnpickler.find_class` resolves only the handful of globals a state dict needs
(`collections.OrderedDict`, torch's tensor and parameter rebuilders, the typed storage classes) to
harmless stand-ins defined here, and refuses every other global with a ValueError that names it.
Tensors come back as copies made with `np.lib.stride_tricks.as_strided` after checking that the view
stays inside its storage, so a crafted size / stride cannot read outside the file's bytes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import zipfile
from typing import Any

import ml_dtypes  # a dependency of jax; numpy itself has no bfloat16
import numpy as np

# The first pickle of a legacy file (torch.serialization.MAGIC_NUMBER).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


# torch.<Name>Storage → numpy element dtype (native byte order; the file's order is handled on reading).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64), "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32), "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8), "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64), "ComplexDoubleStorage": np.dtype(np.complex128),
}


class _NoBuild:
    """Refuses pickle's BUILD opcode, which would otherwise let a file set attributes on the stand-ins."""

    __slots__ = ()

    def __setstate__(self, state):
        raise ValueError(f"the file tries to set the state of a {type(self).__name__.lstrip('_')}")


class _StorageType(_NoBuild):
    """Stand-in for a `torch.<Name>Storage` class: only carries the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


class _Function(_NoBuild):
    """Stand-in for an allowed torch function; a fresh one per global, so nothing a file does to it
    outlives the file."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)


def _from_bytes(raw: bytes, dtype: np.dtype, count: int, byteorder: str) -> np.ndarray:
    """`count` elements of `dtype` from `raw`, stored in `byteorder` ('little' / 'big'), as a native copy."""
    data = np.frombuffer(raw, dtype, count=count).copy()
    return data.byteswap() if byteorder != sys.byteorder and dtype.itemsize > 1 else data


class _Storage(_NoBuild):
    """A flat run of `numel` elements of `dtype`; `data` (1-D numpy) is filled when its bytes are read —
    at once for the zip layout, after the main pickle for the legacy one. A legacy storage view refers to
    `base` from element `offset` on."""

    __slots__ = ("dtype", "numel", "base", "offset", "data")

    def __init__(self, dtype: np.dtype, numel: int, base: _Storage | None = None, offset: int = 0):
        self.dtype, self.numel, self.base, self.offset = dtype, numel, base, offset
        self.data: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self.base is not None:
            return self.base.array()[self.offset:self.offset + self.numel]
        if self.data is None:
            raise ValueError("a tensor refers to a storage whose bytes the file does not contain")
        return self.data


class _Tensor(_NoBuild):
    """A tensor as the pickle describes it; `materialize` copies it out once the storages are read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray:
        flat = self.storage.array()
        if not isinstance(self.size, tuple) or not isinstance(self.stride, tuple):
            raise ValueError("invalid tensor geometry")
        size, stride, offset = self.size, self.stride, self.offset
        if (not all(isinstance(v, int) and v >= 0 for v in (*size, *stride, offset))
                or len(size) != len(stride)):
            raise ValueError(f"invalid tensor geometry: size {size}, stride {stride}, offset {offset}")
        if 0 in size:
            return np.zeros(size, flat.dtype)
        # The last element the view touches must lie inside the storage: as_strided does not check.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.shape[0]:
            raise ValueError(f"tensor of size {size}, stride {stride}, offset {offset} reads past its "
                             f"storage of {flat.shape[0]} elements")
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False)
        return np.array(view, copy=True, order="C")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2: requires_grad, hooks and metadata do not change the values."""
    if not isinstance(storage, _Storage):
        raise ValueError(f"_rebuild_tensor_v2 got {type(storage).__name__} instead of a storage")
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its tensor."""
    if not isinstance(data, _Tensor):
        raise ValueError(f"_rebuild_parameter got {type(data).__name__} instead of a tensor")
    return data


# Every global a state dict needs, as a factory of its stand-in (OrderedDict is harmless as itself).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _Function(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): lambda: _Function(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): lambda: _Function(_rebuild_parameter),
    **{("torch", name): (lambda name=name: _StorageType(name)) for name in _STORAGE_DTYPES},
}

_TORCHSCRIPT = ("is a TorchScript archive (torch.jit.save); only state dicts written by torch.save "
                "(.pth / .pt, zip or legacy format) are accepted — save `module.state_dict()` instead")


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals of a state dict. `storage(pid)` turns a persistent id
    `('storage', storage_type, key, location, numel[, view_metadata])` into a `_Storage`."""

    def __init__(self, file, storage):
        super().__init__(file, encoding="utf-8")
        self._storage = storage

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            raise ValueError(f"global {module}.{name}: the file {_TORCHSCRIPT}")
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise ValueError(f"refused global {module}.{name}: a state dict needs only tensors, storages and "
                             "OrderedDict, so the file is not loaded (it could run code)")
        return factory()

    def persistent_load(self, pid):
        view = pid[5] if isinstance(pid, tuple) and len(pid) == 6 else None
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0
                and (view is None or (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                                      and all(isinstance(v, int) and v >= 0 for v in view[1:])))):
            raise ValueError(f"unexpected persistent id {pid!r:.200}")
        return self._storage(pid)


def _zip_state(archive: zipfile.ZipFile) -> Any:
    names = archive.namelist()
    roots = [n[: -len("data.pkl")] for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise ValueError(f"the file {_TORCHSCRIPT}")
    if len(roots) != 1:
        raise ValueError("a zip file without exactly one <root>/data.pkl is not a torch.save file")
    root = roots[0]
    byteorder = "little"
    if f"{root}byteorder" in names:
        byteorder = archive.read(f"{root}byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise ValueError(f"unknown byteorder {byteorder!r}")
    storages: dict[str, _Storage] = {}

    def storage(pid):
        _, storage_type, key, _, numel = pid[:5]
        if key not in storages:
            try:
                raw = archive.read(f"{root}data/{key}")
            except KeyError:
                raise ValueError(f"storage {key!r} is missing from the archive") from None
            dtype = storage_type.dtype
            if len(raw) < numel * dtype.itemsize:
                raise ValueError(f"storage {key!r} holds {len(raw)} bytes, expected {numel * dtype.itemsize}")
            found = _Storage(dtype, numel)
            found.data = _from_bytes(raw, dtype, numel, byteorder)
            storages[key] = found
        return storages[key]

    return _RestrictedUnpickler(io.BytesIO(archive.read(f"{root}data.pkl")), storage).load()


def _legacy_state(stream) -> Any:
    def no_storage(pid):
        raise ValueError("unexpected persistent id in the file header")

    magic = _RestrictedUnpickler(stream, no_storage).load()
    if magic != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch file (no zip archive, and no legacy magic number)")
    protocol = _RestrictedUnpickler(stream, no_storage).load()
    if protocol != _LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _RestrictedUnpickler(stream, no_storage).load()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    byteorder = "little" if little else "big"
    storages: dict[str, _Storage] = {}

    def storage(pid):
        _, storage_type, key, _, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        if key not in storages:
            storages[key] = _Storage(storage_type.dtype, numel)
        if view is None:
            return storages[key]
        # Storage views existed in torch < 0.4: (view_key, offset, size) in elements of the root storage.
        view_key, offset, view_size = view
        if view_key not in storages:
            storages[view_key] = _Storage(storage_type.dtype, view_size, base=storages[key], offset=offset)
        return storages[view_key]

    result = _RestrictedUnpickler(stream, storage).load()
    keys = _RestrictedUnpickler(stream, no_storage).load()
    if not isinstance(keys, list):
        raise ValueError("the storage key list is missing")
    for key in keys:
        if key not in storages:
            raise ValueError(f"storage {key!r} is listed but no tensor uses it")
        found = storages[key]
        count = int.from_bytes(_read_exactly(stream, 8), byteorder, signed=True)
        # A huge count from a corrupt file must fail as a short read, not as a huge allocation.
        raw = _read_exactly(stream, count * found.dtype.itemsize)
        found.data = _from_bytes(raw, found.dtype, count, byteorder)
        if count < found.numel:
            raise ValueError(f"storage {key!r} holds {found.data.shape[0]} elements, expected {found.numel}")
    return result


def _read_exactly(stream, count: int) -> bytes:
    if count < 0:
        raise ValueError("negative storage size")
    remaining = os.fstat(stream.fileno()).st_size - stream.tell() if hasattr(stream, "fileno") else count
    if count > remaining:
        raise ValueError("the file ends inside a storage (truncated)")
    data = stream.read(count)
    if len(data) != count:
        raise ValueError("the file ends inside a storage (truncated)")
    return data


def _flatten(value: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    """Tensors of nested dicts / lists, keyed by their '.'-joined path; other leaves (epoch numbers,
    strings, optimizer hyper-parameters) are dropped."""
    if isinstance(value, _Tensor):
        out[prefix] = value.materialize()
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}.{index}" if prefix else str(index), out)


def load_torch_state(path: str, *, argument: str = "--from") -> dict[str, np.ndarray]:
    """The tensors of the PyTorch file `path` as `{dotted key: numpy array}`.

    Reads both the zip and the legacy `torch.save` layouts. Nested containers are flattened with
    '.'-joined keys (`{'state_dict': {'fc.weight': t}}` → `'state_dict.fc.weight'`); non-tensor leaves
    are dropped. Each array is a fresh C-contiguous copy with the tensor's shape and numpy dtype
    (float32, float16, int64, bool, ...; bfloat16 as `ml_dtypes.bfloat16`), honouring the tensor's
    size, stride and storage offset.

    Raises ValueError naming `argument` and `path` when the file is missing, is not a torch.save file,
    is a TorchScript archive, is truncated, or names a global a state dict does not need.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{argument} {path!r} does not exist")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                state = _zip_state(archive)
        else:
            with open(path, "rb") as stream:
                state = _legacy_state(stream)
        out: dict[str, np.ndarray] = {}
        _flatten(state, "", out)
    except ValueError as e:
        raise ValueError(f"{argument} {path!r}: {e}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as e:
        # Whatever a corrupt or foreign file makes the unpickler raise, report it as one clear error.
        raise ValueError(f"{argument} {path!r}: not a PyTorch state-dict file ({type(e).__name__}: {e})"
                         ) from None
    if not out:
        raise ValueError(f"{argument} {path!r}: the file holds no tensors")
    return out
