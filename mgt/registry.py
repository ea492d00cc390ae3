"""Named registries: configs choose pieces (tasks, tokenizers, data sources, ...) by name.

One `Registry` class serves every kind of piece. A piece is found by its registered name, or by an
import path (`"my_pkg.codecs:PatchTokenizer"`), so a user's own tokenizer or modality plugs in from
its own package: it registers itself when its module is imported, and a config that names the import
path works in a fresh process too (e.g. `mgt sample` on a workdir trained with it).
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
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"a {self.kind} named {name!r} is already registered ({self._factories[name]})")
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
                module = importlib.import_module(module_name)
            except ImportError as e:
                raise ValueError(f"{self.kind} {name!r}: cannot import module {module_name!r} ({e})") from None
            if not hasattr(module, attr):
                raise ValueError(f"{self.kind} {name!r}: module {module_name!r} has no attribute {attr!r}")
            return getattr(module, attr)
        raise ValueError(f"unknown {self.kind} {name!r}; expected one of {self.names()} or an import path "
                         "'module:Name'")


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
