"""The tokenizer protocol and the registry that lets configs name tokenizers.

Every codec — mgt's own and a user's — is an object with:

    encode(x)                 x: float32 [B, *input_shape]  -> int32 tokens [B, *grid] or [B, *grid, K]
    decode(tokens)            tokens in that layout         -> float32 [B, *input_shape]
    token_spec(input_shape)   input_shape without batch     -> mgt.TokenSpec (grid, K, V)
    codebook_size             V, codes per level (int)
    num_levels                K, code levels per cell (int)

Tokenizers that mgt can train additionally implement `TrainableTokenizer.training_losses`: a
forward pass in training mode returning the reconstruction and named scalar loss terms (the
quantizer's commitment / codebook / entropy terms and the reconstruction loss). Terms that need
more than the tokenizer — a discriminator, a perceptual network — come from the tokenizer class's
`training_objective(train_config, input_shape, seed)`, a `TokenizerObjective` (the VQGAN's is the
2D image one in `mgt.tokenizers.image_losses`; a video tokenizer brings a 3D discriminator, an
audio codec STFT discriminators and mel losses). The tokenizer stage owns the optimisers and calls
the objective's hooks; it knows nothing of what the inputs are. The trainable state is the module's
`nnx.Param`s (plus any `nnx.BatchStat`-like state such as EMA codebooks).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

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


class TokenizerObjective(Protocol):
    """Training terms of a tokenizer beyond its own `training_losses`: discriminator(s) and auxiliary losses.

    The tokenizer stage calls, in this order:
      `prepare()` once before training (load what only training needs, e.g. local perceptual weights);
      `make_discriminator(rngs)` when `has_discriminator` — any nnx.Module, trained by its own optimiser;
      `init_state()` → a dict of extra non-trainable state kept in the train state (e.g. LeCAM EMAs);
      `generator_losses(inputs, reconstructions, discriminator, step)` → weighted scalar terms added
        to the tokenizer's loss (`discriminator` is None without one);
      `discriminator_losses(discriminator, inputs, fakes, state)` → `(total, new extra state, metrics)`,
        where `fakes` are the (gradient-stopped) reconstructions and `state` the extra state; the
        objective decides what regularisers such as R1 apply to.
    `inputs` are the task's model inputs, float32 `[B, *input_shape]`.
    """

    has_discriminator: bool

    def prepare(self) -> None: ...

    def make_discriminator(self, rngs) -> Any: ...

    def init_state(self) -> dict: ...

    def generator_losses(self, inputs, reconstructions, discriminator, step) -> dict[str, Any]: ...

    def discriminator_losses(self, discriminator, inputs, fakes, state: dict) -> tuple[Any, dict, dict]: ...


class ReconstructionObjective:
    """The objective of a tokenizer that brings none: its own `training_losses` only, no discriminator."""

    has_discriminator = False

    def __init__(self, train_config=None, tokenizer_name: str = "this tokenizer"):
        for field in ("adversarial_weight", "perceptual_weight"):
            value = float((train_config or {}).get(field, 0.0) or 0.0)
            if value > 0:
                raise ValueError(f"config.tokenizer_train.{field}={value}: {tokenizer_name} brings no "
                                 f"{field.split('_')[0]} loss (no `training_objective`); set it to 0")

    def prepare(self) -> None:
        pass

    def make_discriminator(self, rngs):
        return None

    def init_state(self) -> dict:
        return {}

    def generator_losses(self, inputs, reconstructions, discriminator, step) -> dict:
        return {}

    def discriminator_losses(self, discriminator, inputs, fakes, state):
        raise NotImplementedError("ReconstructionObjective has no discriminator")


def training_objective(tokenizer_name: str, train_config, input_shape: tuple[int, ...], seed: int):
    """The `TokenizerObjective` of the tokenizer class registered as (or imported from) `tokenizer_name`."""
    factory = resolve_tokenizer(tokenizer_name)
    make = getattr(factory, "training_objective", None)
    if make is None:
        return ReconstructionObjective(train_config, f"tokenizer {tokenizer_name!r}")
    return make(train_config, tuple(input_shape), seed)


_REGISTRY = Registry("tokenizer", builtin_modules=("mgt.tokenizers.vqgan", "mgt.tokenizers.vqgan3d",
                                                   "mgt.tokenizers.codec"))


def register_tokenizer(name: str):
    """Decorator: make a tokenizer class or factory available to configs under `name`."""
    return _REGISTRY.register(name)


def registered_tokenizers() -> list[str]:
    return _REGISTRY.names()


def resolve_tokenizer(name: str) -> Callable[..., Tokenizer]:
    """A registered name (`"vqgan"`) or an import path (`"my_pkg.codecs:PatchTokenizer"` or
    `"my_pkg.codecs.PatchTokenizer"`) → the class or factory."""
    return _REGISTRY.get(name)


def make_tokenizer(name: str, **kwargs) -> Tokenizer:
    """Build a tokenizer by registered name or import path, passing `kwargs` to it."""
    return resolve_tokenizer(name)(**kwargs)




def apply_in_chunks(module, method: str, inputs, chunk: int = 64):
    """`module.<method>` over `inputs` `[N, ...]` in batches of `chunk` (every batch padded to `chunk`, so
    one shape is compiled), the module's weights an argument of one compiled function per (module structure,
    method, shape) that every call shares → numpy `[N, ...]`.

    E.g. `apply_in_chunks(tokenizer, "encode", clips)` tokenizes a data set; `"decode"` decodes tokens."""
    graphdef, state = nnx.split(module)
    inputs = np.asarray(inputs)
    out = []
    for i in range(0, len(inputs), chunk):
        part = inputs[i:i + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part),) + part.shape[1:], part.dtype)])
        out.append(np.asarray(_apply(graphdef, method, state, jnp.asarray(padded)))[:len(part)])
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(graphdef, method, state, x):
    return getattr(nnx.merge(graphdef, state, copy=True), method)(x)
