"""Generation pipeline: the decoding engine and a tokenizer's decoder compiled as one function.

`GenerationPipeline(transformer, tokenizer).generate(rng, labels=...)` runs the whole generation —
decoding loop and tokenizer decode — as one jitted function per (shape, options); the weights of both
models are arguments, never compile-time constants, so swapping in EMA weights or new checkpoints
reuses the compiled code. The engine knows nothing of pixels: `tokenizer.decode` returns whatever
the modality's output is.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.decoding import DecodeOptions, _normalise_stages, _validate, decode_loop, example_keys
from mgt.sampling import model_logits_fn


class GenerationPipeline:
    """A masked transformer and a tokenizer (any object with `decode(tokens)`; an nnx.Module's
    weights are passed to the compiled function as arguments)."""

    def __init__(self, transformer, tokenizer):
        self.transformer, self.tokenizer = transformer, tokenizer

    @property
    def spec(self):
        return self.transformer.spec

    def generate_tokens(self, rng, **kwargs):
        return self.generate(rng, decode_outputs=False, **kwargs)

    def generate(self, rng, *, labels=None, batch_size=None, tokens=None, context=None, context_mask=None,
                 decode_outputs: bool = True, **decode_kwargs):
        """Generate `B` examples.

        Args:
          rng: one key or B keys. labels: int32 `[B]` for class-conditional models.
          tokens: optional starting grid int32 `[B, *grid(, K)]` (mask id where to generate).
          **decode_kwargs: options of `mgt.decoding.decode` (num_steps, guidance_scale, ...).
        Returns:
          the tokenizer's outputs (e.g. float32 images `[B, H, W, 3]`), or int32 tokens when
          `decode_outputs=False`.
        """
        model, spec = self.transformer, self.spec
        if tokens is None:
            if batch_size is None:
                batch_size = len(labels) if labels is not None else None
            if batch_size is None:
                raise ValueError("generate needs labels, batch_size or tokens")
            tokens = spec.masked(batch_size)
        model.check_inputs(tokens, labels)
        if decode_kwargs.get("guidance_scale", 0.0) and not model.config.null_condition:
            raise ValueError("guidance_scale != 0 needs a model trained with a null condition (null_condition=True)")
        stages = _normalise_stages(decode_kwargs.pop("stages", None))
        opts = DecodeOptions(mask_id=spec.mask_id, stages=stages, **decode_kwargs)
        tokens = np.asarray(tokens, np.int32)
        _validate(opts, tokens)
        keys = example_keys(rng, tokens.shape[0])
        labels = None if labels is None else jnp.asarray(labels, jnp.int32)
        t_graph, t_state = nnx.split(model)
        if decode_outputs and isinstance(self.tokenizer, nnx.Module):
            k_graph, k_state = nnx.split(self.tokenizer)
            return _generate_jit(t_graph, t_state, k_graph, k_state, jnp.asarray(tokens), keys, labels, context,
                                 context_mask, opts)
        out = _tokens_jit(t_graph, t_state, jnp.asarray(tokens), keys, labels, context, context_mask, opts)
        if decode_outputs:
            out = self.tokenizer.decode(out[0] if opts.return_history else out)
        return out


def _logits_fn(t_graph, t_state, labels, context, context_mask):
    return model_logits_fn(nnx.merge(t_graph, t_state, copy=True), labels=labels, context=context,
                           context_mask=context_mask)


@functools.partial(jax.jit, static_argnums=(0, 7))
def _tokens_jit(t_graph, t_state, tokens, keys, labels, context, context_mask, opts):
    return decode_loop(_logits_fn(t_graph, t_state, labels, context, context_mask), tokens, keys, opts)


@functools.partial(jax.jit, static_argnums=(0, 2, 9))
def _generate_jit(t_graph, t_state, k_graph, k_state, tokens, keys, labels, context, context_mask, opts):
    out = decode_loop(_logits_fn(t_graph, t_state, labels, context, context_mask), tokens, keys, opts)
    final = out[0] if opts.return_history else out
    return nnx.merge(k_graph, k_state, copy=True).decode(final)
