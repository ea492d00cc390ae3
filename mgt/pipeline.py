"""Generation pipeline: the decoding engine and a tokenizer's decoder compiled as one function.

`GenerationPipeline(transformer, tokenizer).generate(rng, labels=...)` runs the whole generation —
decoding loop and tokenizer decode — as one jitted function per (shape, options); the weights of both
models are arguments, never compile-time constants, so swapping in EMA weights or new checkpoints
reuses the compiled code. The engine knows nothing of what the outputs are: `tokenizer.decode`
returns whatever the modality's output is.
"""

from __future__ import annotations

import functools

import jax
from flax import nnx

from mgt.decoding import decode, decode_loop, prepare
from mgt.sampling import LayerWeightsCache, model_inputs


class GenerationPipeline:
    """A masked transformer and a tokenizer (any object with `decode(tokens)`; an nnx.Module's
    weights are passed to the compiled function as arguments)."""

    def __init__(self, transformer, tokenizer, *, task=None, config=None, steps: dict | None = None):
        self.transformer, self.tokenizer = transformer, tokenizer
        # set by `mgt.load_pipeline`: the workdir's task (reads inputs, writes outputs), its config and
        # the checkpoint step of each stage
        self.task, self.config, self.steps = task, config, dict(steps or {})
        self._layers = LayerWeightsCache()

    @property
    def spec(self):
        return self.transformer.spec

    def generate_tokens(self, rng, **kwargs):
        return self.generate(rng, decode_outputs=False, **kwargs)

    def generate(self, rng, *, labels=None, batch_size=None, tokens=None, context=None, context_mask=None,
                 condition=None, decode_outputs: bool = True, prompts=None, negative_prompts=None, negative=None,
                 guidance=None, sketch_guidance: float = 0.0, **decode_kwargs):
        """Generate `B` examples.

        Args:
          rng: one key or B keys. labels: int32 `[B]` for class-conditional models.
          context / context_mask: float `[B, S, C]` / bool `[B, S]` for cross-attention models.
          condition: a `mgt.Condition` instead of labels / context / context_mask.
          prompts: B strings for a text-conditioned workdir (`mgt.load_pipeline`): encoded with the
            workdir's text encoder into the condition.
          negative_prompts: strings (one, or B) whose condition replaces the null condition in
            guidance's unconditional half (needs guidance_scale != 0); `negative`: that as a `Condition`.
          guidance: the same as `guidance_scale` (the classifier-free guidance scale).
          sketch_guidance: see `MaskedTransformer.__call__` (a `recycle_patches` model; 0: off).
          tokens: optional starting grid int32 `[B, *grid(, K)]` (mask id where to generate).
          **decode_kwargs: options of `mgt.decoding.decode` (num_steps, guidance_scale,
            condition_tokens for a multi-task model's conditional tasks, ...).
        Returns:
          the tokenizer's outputs (float32 `[B, *input_shape]`), or int32 tokens when
          `decode_outputs=False`.
        """
        if guidance is not None:
            if "guidance_scale" in decode_kwargs:
                raise ValueError("pass guidance or guidance_scale, not both")
            decode_kwargs["guidance_scale"] = float(guidance)
        if prompts is not None or negative_prompts is not None:
            condition, negative = self._text_conditions(prompts, negative_prompts, condition, negative)
        if decode_outputs and isinstance(self.tokenizer, nnx.Module):
            return _generate_jit(*self._jit_inputs(rng, labels, batch_size, tokens, context, context_mask,
                                                   condition, decode_kwargs, negative, sketch_guidance))
        fn, tokens = self._model_inputs(batch_size, labels, context, context_mask, condition, tokens, decode_kwargs,
                                        negative, sketch_guidance)
        out = decode(fn, tokens, rng, mask_id=self.spec.mask_id, **decode_kwargs)
        if decode_outputs:
            out = self.tokenizer.decode(out[0] if decode_kwargs.get("return_history") else out)
        return out

    def compile(self, rng, *, labels=None, batch_size=None, tokens=None, context=None, context_mask=None,
                condition=None, sketch_guidance: float = 0.0, **decode_kwargs):
        """Compile the whole generation ahead of time for these inputs (same arguments as `generate`).

        Returns `(compiled, run)`: the `jax.stages.Compiled` program (its `as_text()`, `cost_analysis()`,
        `memory_analysis()`) and a function of no arguments that runs it on these inputs, e.g. for
        `mgt.profiling.profile(run, compiled)`. Needs a tokenizer that is an nnx.Module.
        """
        if not isinstance(self.tokenizer, nnx.Module):
            raise ValueError(f"compile needs a tokenizer that is an nnx.Module; got {type(self.tokenizer).__name__}")
        fn, k_graph, k_state, tokens, keys, opts, cond = self._jit_inputs(rng, labels, batch_size, tokens, context,
                                                                          context_mask, condition, decode_kwargs,
                                                                          sketch_guidance=sketch_guidance)
        compiled = _generate_jit.lower(fn, k_graph, k_state, tokens, keys, opts, cond).compile()
        return compiled, lambda: compiled(fn, k_state, tokens, keys, cond)

    def _jit_inputs(self, rng, labels, batch_size, tokens, context, context_mask, condition, decode_kwargs,
                    negative=None, sketch_guidance=0.0):
        """Host-checked arguments of `_generate_jit`."""
        fn, tokens = self._model_inputs(batch_size, labels, context, context_mask, condition, tokens, decode_kwargs,
                                        negative, sketch_guidance)
        tokens, keys, opts, cond = prepare(fn, tokens, rng, mask_id=self.spec.mask_id, **decode_kwargs)
        k_graph, k_state = nnx.split(self.tokenizer)
        return fn, k_graph, k_state, tokens, keys, opts, cond

    def _text_conditions(self, prompts, negative_prompts, condition, negative):
        """The conditions of `prompts` and `negative_prompts` through the workdir's text conditioner."""
        conditioner = getattr(self.task, "text", None) if self.task is not None else None
        if conditioner is None:
            raise ValueError("prompts / negative_prompts need a text-conditioned workdir (config.text.encoder); "
                             "this pipeline has none")
        if prompts is not None:
            if condition is not None:
                raise ValueError("pass prompts or condition, not both")
            condition = conditioner.condition(conditioner.check_prompts(prompts, "prompts"))
        if negative_prompts is not None:
            if negative is not None:
                raise ValueError("pass negative_prompts or negative, not both")
            b = condition.batch_size if condition is not None else None
            texts = conditioner.check_prompts(negative_prompts, "negative_prompts")
            if b is not None and len(texts) == 1:
                texts = texts * b
            negative = conditioner.condition(texts)
        return condition, negative

    def _model_inputs(self, batch_size, labels, context, context_mask, condition, tokens, decode_kwargs,
                      negative=None, sketch_guidance=0.0):
        fn, tokens = model_inputs(self.transformer, batch_size=batch_size, labels=labels, context=context,
                                  context_mask=context_mask, condition=condition, tokens=tokens, negative=negative,
                                  guidance_scale=decode_kwargs.get("guidance_scale", 0.0),
                                  sketch_guidance=sketch_guidance)
        return fn.replace(layers=self._layers.get(self.transformer)), tokens


@functools.partial(jax.jit, static_argnums=(1, 5))
def _generate_jit(logits_fn, k_graph, k_state, tokens, keys, opts, condition_tokens=None):
    out = decode_loop(logits_fn, tokens, keys, opts, condition_tokens)
    final = out[0] if opts.return_history else out
    return nnx.merge(k_graph, k_state, copy=True).decode(final)
