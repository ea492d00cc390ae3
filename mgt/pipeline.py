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
from flax import nnx

from mgt.decoding import decode, decode_loop, prepare
from mgt.sampling import model_inputs


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
        fn, tokens = model_inputs(self.transformer, batch_size=batch_size, labels=labels, context=context,
                                  context_mask=context_mask, tokens=tokens,
                                  guidance_scale=decode_kwargs.get("guidance_scale", 0.0))
        if decode_outputs and isinstance(self.tokenizer, nnx.Module):
            tokens, keys, opts = prepare(fn, tokens, rng, mask_id=self.spec.mask_id, **decode_kwargs)
            k_graph, k_state = nnx.split(self.tokenizer)
            return _generate_jit(fn, k_graph, k_state, tokens, keys, opts)
        out = decode(fn, tokens, rng, mask_id=self.spec.mask_id, **decode_kwargs)
        if decode_outputs:
            out = self.tokenizer.decode(out[0] if decode_kwargs.get("return_history") else out)
        return out


@functools.partial(jax.jit, static_argnums=(1, 5))
def _generate_jit(logits_fn, k_graph, k_state, tokens, keys, opts):
    out = decode_loop(logits_fn, tokens, keys, opts)
    final = out[0] if opts.return_history else out
    return nnx.merge(k_graph, k_state, copy=True).decode(final)
