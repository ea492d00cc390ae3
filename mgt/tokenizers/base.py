"""The tokenizer protocol and the registry that lets configs name tokenizers.

Every codec — mgt's own and a user's — is an object with:

    encode(x)                 x: float32 [B, *input_shape]  -> int32 tokens [B, *grid] or [B, *grid, K]
    decode(tokens)            tokens in that layout         -> float32 [B, *input_shape]
    token_spec(input_shape)   input_shape without batch     -> mgt.TokenSpec (grid, K, V)
    codebook_size             V, codes per level (int)
    num_levels                K, code levels per cell (int)

Tokenizers that mgt can train additionally implement `TrainableTokenizer.training_losses`: a
forward pass in training mode returning the reconstruction and named scalar loss terms (the
quantizer's commitment / codebook / entropy terms and the reconstruction loss); the trainer adds the
perceptual and adversarial terms from `mgt.tokenizers.losses` and owns the optimiser. The trainable
state is the module's `nnx.Param`s (plus any `nnx.BatchStat`-like state such as EMA codebooks).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, runtime_checkable

from mgt.registry import Registry
from mgt.tokens import TokenSpec


@runtime_checkable
class Tokenizer(Protocol):
    """What the masked Transformer, the decoding engine and the modalities need of a codec."""

    codebook_size: int
    num_levels: int

    def encode(self, x) -> Any:
        """float32 `[B, *input_shape]` → int32 `[B, *grid]` (K == 1) or `[B, *grid, K]`."""

    def decode(self, tokens) -> Any:
        """int32 tokens in the `token_spec` layout → float32 `[B, *input_shape]`."""

    def token_spec(self, input_shape: tuple[int, ...]) -> TokenSpec:
        """The token grid produced for inputs of `input_shape` (without the batch axis)."""


@runtime_checkable
class TrainableTokenizer(Tokenizer, Protocol):
    def training_losses(self, x, *, rng=None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Training-mode forward pass.

        Returns `(reconstruction [B, *input_shape] float32, losses {name: scalar}, metrics {name: scalar})`.
        `losses` are already weighted and are summed by the trainer.
        """


_REGISTRY = Registry("tokenizer")


def register_tokenizer(name: str):
    """Decorator: make a tokenizer class or factory available to configs under `name`."""
    return _REGISTRY.register(name)


def registered_tokenizers() -> list[str]:
    _import_builtin()
    return _REGISTRY.names()


def resolve_tokenizer(name: str) -> Callable[..., Tokenizer]:
    """A registered name (`"vqgan"`) or an import path (`"my_pkg.codecs:PatchTokenizer"` or
    `"my_pkg.codecs.PatchTokenizer"`) → the class or factory."""
    _import_builtin()
    if name in _REGISTRY:
        return _REGISTRY.get(name)
    if ":" in name or "." in name:
        module_name, _, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"tokenizer {name!r}: cannot import module {module_name!r} ({e})") from None
        if not hasattr(module, attr):
            raise ValueError(f"tokenizer {name!r}: module {module_name!r} has no attribute {attr!r}")
        return getattr(module, attr)
    raise ValueError(
        f"unknown tokenizer {name!r}; expected one of {_REGISTRY.names()} or an import path 'module:Class'"
    )


def make_tokenizer(name: str, **kwargs) -> Tokenizer:
    """Build a tokenizer by registered name or import path, passing `kwargs` to it."""
    return resolve_tokenizer(name)(**kwargs)


def _import_builtin():
    # Importing the built-in tokenizer modules registers them.
    for module in ("mgt.tokenizers.vqgan",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
