"""Named registries: configs choose pieces (tokenizers, data sources, ...) by name."""

from __future__ import annotations

from typing import Any, Callable, Mapping


class Registry:
    """A name → factory table for one `kind` of piece (used in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable] = {}

    def register(self, name: str):
        """Decorator: make a class or factory available under `name`."""

        def wrap(factory):
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"a {self.kind} named {name!r} is already registered ({self._factories[name]})")
            self._factories[name] = factory
            return factory

        return wrap

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable:
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of {self.names()}")
        return self._factories[name]


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
