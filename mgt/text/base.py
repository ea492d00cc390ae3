"""The text-encoder protocol and its registry.

A text encoder turns strings into what a text-conditioned model attends to:

    encoder.encode(texts: list[str]) -> TextEncoding
      embeddings  float32 [B, L, D]  one vector per token (L = encoder.max_length: every batch is
                                     padded to it, so one compiled shape serves every prompt)
      mask        bool [B, L]        which positions are real tokens
      pooled      float32 [B, D]     the encoder's sentence vector where it has one (CLIP's end token,
                                     sentence-transformers' mean pooling), else None

Texts longer than `max_length` tokens are truncated with one warning (never an error). Encoders are
built by name from the config's `text` section (`make_encoder(name, **kwargs)`), or named by import
path (`"my_pkg.enc:MyEncoder"`) like tokenizers, and register themselves with `register_encoder`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

from mgt.registry import Registry


@dataclasses.dataclass(frozen=True)
class TextEncoding:
    """What `TextEncoder.encode` returns; see the module docstring for shapes and dtypes."""

    embeddings: Any
    mask: Any
    pooled: Any = None


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen text encoder (see the module docstring).

    Attributes:
      width: D, the width of the embeddings.
      max_length: L, the number of token positions every encoding has.
    """

    width: int
    max_length: int

    def encode(self, texts: list[str]) -> TextEncoding: ...


_ENCODERS = Registry("text encoder", builtin_modules=("mgt.text.encoders",))

# `register_encoder(name)` (a decorator), `registered_encoders()`, `make_encoder(name, **kwargs)`
register_encoder = _ENCODERS.register
registered_encoders = _ENCODERS.names
make_encoder = _ENCODERS.build
get_encoder = _ENCODERS.get
