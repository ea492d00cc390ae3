"""Named registries: configs choose pieces (tasks, tokenizers, data sources, ...) by name.

One `Registry` class serves every kind of piece. A piece is found by its registered name, by an
import path (`"my_pkg.codecs:PatchTokenizer"`) or by a file path (`"/abs/waves.py:WaveTask"`), so a
user's own tokenizer or modality plugs in from its own package or file: it registers itself when its
module is imported, and a config that names the import path works in a fresh process too (e.g.
`mgt sample` on a workdir trained with it).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence


class Registry:
    """A name → factory table for one `kind` of piece (used in error messages).

    Args:
      kind: what the entries are, e.g. "tokenizer" (error messages say "unknown tokenizer ...").
      builtin_modules: modules imported before the first look-up; importing them registers the
        built-in entries (imported lazily so that the registry itself imports nothing heavy).
    """

    def __init__(self, kind: str, builtin_modules: Sequence[str] = ()):
        self.kind = kind
        self._factories: dict[str, Callable] = {}
        self._builtin_modules = tuple(builtin_modules)
        self._builtins_loaded = not self._builtin_modules

    def register(self, name: str):
        """Decorator: make a class or factory available under `name`."""

        def wrap(factory):
            old = self._factories.get(name)
            if old is not None and old is not factory and not _same_definition(old, factory):
                raise ValueError(f"a {self.kind} named {name!r} is already registered ({old})")
            self._factories[name] = factory
            return factory

        return wrap

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._factories

    def get(self, name: str) -> Callable:
        """The entry registered as `name`, or one named by an import path (`module:attr` or `module.attr`)."""
        self._load_builtins()
        if name in self._factories:
            return self._factories[name]
        if isinstance(name, str) and (":" in name or "." in name):
            module_name, _, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
            try:
                module = (_load_file(module_name) if module_name.endswith(".py")
                          else importlib.import_module(module_name))
            except (ImportError, OSError) as e:
                raise ValueError(f"{self.kind} {name!r}: cannot import module {module_name!r} ({e})") from None
            if not hasattr(module, attr):
                raise ValueError(f"{self.kind} {name!r}: module {module_name!r} has no attribute {attr!r}")
            return getattr(module, attr)
        raise ValueError(f"unknown {self.kind} {name!r}; expected one of {self.names()} or an import path "
                         "'module:Name'")

    def build(self, name: str, /, **kwargs):
        """The entry `name` (as `get` finds it) called with `kwargs`: e.g. a data source built from its options."""
        return self.get(name)(**kwargs)


def _same_definition(a, b) -> bool:
    """The same class or function defined again: its module loaded twice (a script that is also
    imported by name, a config file loaded by path). The later definition replaces the earlier."""
    file_a, file_b = _defining_file(a), _defining_file(b)
    return getattr(a, "__qualname__", None) == getattr(b, "__qualname__", 0) and file_a is not None and file_a == file_b


def _defining_file(obj) -> str | None:
    """The source file of a function, or of the first method of a class (its module may be unnamed)."""
    import os

    candidates = [obj] + (list(vars(obj).values()) if isinstance(obj, type) else [])
    for item in candidates:
        code = getattr(item, "__code__", None) or getattr(getattr(item, "__func__", None), "__code__", None)
        if code is not None:
            return os.path.abspath(code.co_filename)
    return None


_FILE_MODULES: dict[str, object] = {}


def _load_file(path: str):
    """The module defined by a Python file, loaded once per absolute path."""
    import importlib.util
    import os
    import sys

    path = os.path.abspath(path)
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    if not os.path.isfile(path):
        raise ImportError(f"no such file {path!r}")
    name = "mgt_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    _FILE_MODULES[path] = module
    return module


def flatten_dict(tree: Mapping, prefix: tuple = ()) -> dict[tuple, Any]:
    """`{'a': {'b': leaf}}` → `{('a', 'b'): leaf}` (keys as strings)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten_dict(value, prefix + (str(key),)))
        else:
            out[prefix + (str(key),)] = value
    return out


def nest_dict(flat: Mapping[tuple, Any]) -> dict:
    """`{('a', 'b'): leaf}` → `{'a': {'b': leaf}}`."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out
