"""Build the pieces of an experiment from its config: tokenizer, token spec, transformer config."""

from __future__ import annotations

import dataclasses

from flax import nnx

from mgt.tokenizers import base
from mgt.transformer import CONTEXT_CONDITIONINGS, TransformerConfig, condition_input

_MODEL_FIELDS = {f.name for f in dataclasses.fields(TransformerConfig)}
_RUN_ONLY_MODEL_KEYS = {"objective"}
# config.tokenizer fields that say how to initialise the tokenizer, not what it is
INIT_ONLY_TOKENIZER_KEYS = ("inflate_from", "inflate_mode")


def tokenizer_kwargs(config) -> dict:
    kwargs = config.tokenizer.to_dict()
    kwargs.pop("name")
    for key in INIT_ONLY_TOKENIZER_KEYS:
        kwargs.pop(key, None)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def make_tokenizer(config, *, seed: int | None = None):
    """The tokenizer named by `config.tokenizer.name` with the other `config.tokenizer` fields."""
    seed = int(config.seed) if seed is None else seed
    try:
        return base.make_tokenizer(config.tokenizer.name, rngs=nnx.Rngs(seed), **tokenizer_kwargs(config))
    except TypeError as e:
        raise ValueError(f"config.tokenizer does not fit tokenizer {config.tokenizer.name!r}: {e}") from None


def transformer_config(config, token_spec, text=None) -> TransformerConfig:
    """`config.model` on the tokenizer's grid; with a text encoder (`text`, a `mgt.text.TextConditioner`,
    or `config.text.encoder`) the context's width and length come from it."""
    m = {k: v for k, v in config.model.to_dict().items() if k not in _RUN_ONLY_MODEL_KEYS}
    unknown = sorted(set(m) - _MODEL_FIELDS)
    if unknown:
        raise ValueError(f"config.model has unknown fields {unknown}; expected some of {sorted(_MODEL_FIELDS)}")
    if text is None and config.get("text") is not None and config.text.get("encoder", None):
        from mgt.text.conditioner import TextConditioner

        text = TextConditioner(config.text)
    if text is not None:
        if condition_input(m.get("conditioning", "none")) != "context":
            raise ValueError(f"config.text.encoder={text.name!r} needs a context conditioning "
                             f"(config.model.conditioning one of {CONTEXT_CONDITIONINGS}), "
                             f"got {m.get('conditioning', 'none')!r}")
        m.update(text.model_fields())
    takes_labels = condition_input(m.get("conditioning", "none")) == "labels"
    try:
        return TransformerConfig(grid=token_spec.grid, codebook_size=token_spec.codebook_size,
                                 num_levels=token_spec.num_levels,
                                 num_classes=int(config.data.num_classes) if takes_labels else 0, **m)
    except ValueError as e:
        raise ValueError(f"config.model: {e}") from None


def check_code_digits(model_config: TransformerConfig, tokenizer) -> None:
    """`config.model.code_digits` must be the digits the tokenizer's quantizer codes with (FSQ's levels,
    LFQ's bits), else the model would factor code ids along the wrong digits (ValueError naming both)."""
    digits = getattr(getattr(tokenizer, "quantizer", None), "code_digits", None)
    if model_config.code_digits and digits is not None and tuple(digits) != model_config.code_digits:
        raise ValueError(f"config.model.code_digits={model_config.code_digits}: the tokenizer's quantizer codes "
                         f"with the digits {tuple(digits) or '() (learned codes)'}")
