"""Sampling token grids from a `MaskedTransformer` with the decoding engine.

`sample(model, rng, ...)` validates its inputs on the host, then runs the decoding engine with the
model as a pytree `logits_fn` (`ModelLogits`): the parameters are arguments of the compiled loop —
never baked in as constants — so new weights (a later training step, EMA weights) reuse the code.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from mgt.condition import Condition
from mgt.decoding import CONFIDENCES, GUIDANCE_SCHEDULES, decode


@struct.dataclass
class ModelLogits:
    """The decoding engine's `logits_fn` for an nnx model with a fixed `Condition`, as a pytree.

    Being a pytree (the model's weights and the condition are its leaves, the graph definition is
    static), it is passed to compiled functions as an argument: `mgt.decoding.decode` never bakes the
    weights into the compiled program as constants, and new weights reuse the compiled code.
    Called with a doubled batch and `drop_condition` (classifier-free guidance) the condition is
    tiled to match — or, given a `negative` condition (a negative prompt), the second half is
    conditioned on it instead of the learned null condition.
    """

    graphdef: Any = struct.field(pytree_node=False)
    state: Any
    condition: Condition = Condition()
    # the blocks' per-layer weights (`MaskedTransformer.layer_states`): set by a pipeline's
    # `LayerWeightsCache`, or by `for_decoding` inside the decoding loop
    layers: Any = None
    # the condition of guidance's unconditional half instead of the null condition (negative prompts)
    negative: Condition | None = None
    # `MaskedTransformer(sketch_guidance=)`: a recycling model's sketched pass pushed away from its plain pass
    sketch_guidance: float = struct.field(pytree_node=False, default=0.0)

    def __call__(self, tokens, drop_condition=None, *, segment_ids=None):
        # Merge inside every call: NNX modules must not cross JAX trace levels, and the decoding
        # loop calls this from inside its own lax.scan.
        model = nnx.merge(self.graphdef, self.state, copy=True)
        cond = self.condition
        if drop_condition is not None and self.negative is not None:
            # guidance's doubled batch: the conditional half, then the negative condition (nothing dropped)
            cond, drop_condition = cond.concatenate(self.negative), None
        elif drop_condition is not None and not cond.is_empty:
            cond = cond.tile(tokens.shape[0] // cond.batch_size)
        kwargs = cond.with_drop(drop_condition).model_kwargs()
        if segment_ids is not None:
            kwargs["segment_ids"] = segment_ids
        if self.layers is not None:
            kwargs["layers"] = self.layers
        if self.sketch_guidance:
            kwargs["sketch_guidance"] = self.sketch_guidance
        return model(tokens, **kwargs)

    def for_decoding(self) -> "ModelLogits":
        """Called by the decoding loop once, outside its steps: with `decode_layers="unrolled"` (the
        default) the layers' weights are sliced out of the stack here, once, not at every step; and
        context ids are embedded by the model's context encoder here, once, not at every step."""
        has_ids = self.condition.context_ids is not None or (self.negative is not None and
                                                              self.negative.context_ids is not None)
        if self.layers is not None and not has_ids:
            return self
        model = nnx.merge(self.graphdef, self.state, copy=True)
        out = self
        if self.layers is None and _decodes_unrolled(model):
            out = out.replace(layers=model.layer_states())
        if has_ids:
            out = out.replace(condition=_embed_context(model, self.condition),
                              negative=None if self.negative is None else _embed_context(model, self.negative))
        return out


def _embed_context(model, cond: Condition) -> Condition:
    """`cond` with its context ids replaced by the model's embedding of them (float `[B, S, C]`)."""
    if cond.context_ids is None:
        return cond
    context = model.context_encoder(cond.context_ids, cond.context_mask)
    return cond.replace(context=context, context_ids=None)


class LayerWeightsCache:
    """A transformer's per-layer weights (`MaskedTransformer.layer_states`), kept between calls.

    Slicing every layer's weights out of the stack inside each generation writes a fresh copy of
    all of them (on a CPU, page faults make that ~0.4 s for the ImageNet model, 4 % of a batch-1
    generation); a pipeline keeps one copy and reuses it while the model's stacked weights are the
    same arrays — new weights (a checkpoint, EMA, `nnx.update`) are sliced again at the next call.
    It costs one more copy of the blocks' weights in memory; `decode_layers="scan"` needs none.
    """

    def __init__(self):
        self._stacked, self._layers = None, None

    def get(self, model):
        """`layers` for `model(..., layers=)` / `ModelLogits`, or None when the model scans its layers."""
        if not _decodes_unrolled(model):
            return None
        stacked = jax.tree.leaves(nnx.state(model.blocks))
        if self._stacked is None or len(stacked) != len(self._stacked) or any(
                a is not b for a, b in zip(stacked, self._stacked)):
            graphdef, state = nnx.split(model)
            self._layers = _layer_states_jit(graphdef, state)
            self._stacked = stacked
        return self._layers


def _decodes_unrolled(model) -> bool:
    """Whether `model` decodes over per-layer weights (`TransformerConfig.decode_layers`)."""
    return getattr(model.config, "decode_layers", "scan") == "unrolled"


@functools.partial(jax.jit, static_argnums=0)
def _layer_states_jit(graphdef, state):
    return nnx.merge(graphdef, state, copy=True).layer_states()


def _condition(condition, labels, context, context_mask) -> Condition:
    """One `Condition` from either a `condition` or the separate fields (not both)."""
    if condition is not None:
        if labels is not None or context is not None or context_mask is not None:
            raise ValueError("pass either condition= or labels= / context= / context_mask=, not both")
        return condition
    return Condition(labels=labels, context=context, context_mask=context_mask)


def model_logits_fn(model, *, labels=None, context=None, context_mask=None, condition=None,
                    negative=None, sketch_guidance: float = 0.0) -> ModelLogits:
    """`ModelLogits` for `model`: `fn(tokens, drop_condition=None) -> logits [B, ..., V]`.

    The condition is `condition` (a `mgt.Condition`) or the separate `labels` / `context` /
    `context_mask`; only what the model takes is kept (`TransformerConfig.condition_input`).
    `negative`: the condition of guidance's unconditional half (a negative prompt), same batch size.
    `sketch_guidance`: see `MaskedTransformer.__call__` (needs a `recycle_patches` model; with a `negative`
    condition it applies to both halves, the negative one included)."""
    sketch_guidance = float(sketch_guidance)
    if sketch_guidance and not getattr(model.config, "recycle_patches", False):
        raise ValueError(f"sketch_guidance={sketch_guidance} needs a model that recycles its sketch "
                         "(config.model.recycle_patches=True); this one does not: set it to 0")
    graphdef, state = nnx.split(model)
    cond = _model_condition(model, _condition(condition, labels, context, context_mask))
    if negative is not None:
        if model.config.condition_input == "none":
            raise ValueError("a negative condition needs a conditional model; this one is unconditional")
        negative = _model_condition(model, negative.with_default_task(model.config, negative.batch_size or 0))
    return ModelLogits(graphdef, state, cond, negative=negative, sketch_guidance=sketch_guidance)


def _model_condition(model, cond: Condition) -> Condition:
    """What `model` takes of `cond`, integer fields as int32 device arrays."""
    if model.config.condition_input != "none" or model.config.tasks:
        cond = cond.for_model(model.config)
    else:
        cond = Condition()
    for field in ("labels", "tasks", "context_ids"):
        if getattr(cond, field) is not None:
            cond = cond.replace(**{field: jnp.asarray(getattr(cond, field), jnp.int32)})
    return cond


def model_inputs(model, *, batch_size=None, labels=None, context=None, context_mask=None, condition=None,
                 tokens=None, guidance_scale=0.0, negative=None, sketch_guidance=0.0):
    """Check a model's sampling inputs on the host → `(ModelLogits, starting tokens)`.

    The starting grid is all masked unless `tokens` is given; its batch size comes from
    `batch_size`, the condition or `tokens`. `negative` (a `Condition` of the same batch size) replaces
    the null condition in guidance's unconditional half (negative prompts; needs guidance_scale != 0).
    `sketch_guidance`: see `MaskedTransformer.__call__`.
    """
    cond = _condition(condition, labels, context, context_mask)
    if tokens is None:
        if batch_size is None:
            batch_size = cond.batch_size
        if batch_size is None:
            raise ValueError("sampling needs batch_size, labels, context or tokens to know the batch size")
        tokens = model.spec.masked(batch_size)
    cond = cond.with_default_task(model.config, np.shape(tokens)[0])
    model.check_inputs(tokens, cond.labels, context=cond.context, context_mask=cond.context_mask, tasks=cond.tasks,
                       context_ids=cond.context_ids)
    if negative is not None:
        if not guidance_scale:
            raise ValueError("a negative condition (negative prompt) acts through guidance: set guidance_scale != 0")
        negative = negative.with_default_task(model.config, np.shape(tokens)[0])
        model.check_inputs(tokens, negative.labels, context=negative.context, context_mask=negative.context_mask,
                           tasks=negative.tasks, context_ids=negative.context_ids)
    elif guidance_scale and not model.config.null_condition:
        raise ValueError("guidance_scale != 0 needs a model trained with a null condition (null_condition=True)")
    fn = model_logits_fn(model, condition=cond, negative=negative, sketch_guidance=sketch_guidance)
    return fn, np.asarray(tokens, np.int32)


def sample(model, rng, *, batch_size: int | None = None, labels=None, context=None, context_mask=None,
           condition=None, tokens=None, mask_id: int | None = None, negative=None, sketch_guidance: float = 0.0,
           **decode_kwargs):
    """Generate token grids with `model` (its weights are arguments of the compiled loop).

    Args:
      model: a `MaskedTransformer`.
      rng: one PRNG key or B keys.
      batch_size: B when neither `tokens` nor the condition gives it.
      labels: int32 `[B]` for class-conditional models.
      context / context_mask: `[B, S, C]` / bool `[B, S]` for cross-attention models.
      condition: a `mgt.Condition` instead of labels / context / context_mask.
      tokens: int32 `[B, *grid(, K)]` starting grid (partly known for editing); all masked by default.
      negative: a `Condition` for guidance's unconditional half (negative prompts).
      sketch_guidance: see `MaskedTransformer.__call__` (a `recycle_patches` model; 0: off).
      mask_id: defaults to the model's `spec.mask_id`.
      **decode_kwargs: options of `mgt.decoding.decode` (num_steps, schedule, guidance_scale, ...).
    Returns:
      int32 tokens `[B, *grid(, K)]` (and the history with `return_history=True`).
    """
    fn, tokens = model_inputs(model, batch_size=batch_size, labels=labels, context=context,
                              context_mask=context_mask, condition=condition, tokens=tokens, negative=negative,
                              guidance_scale=decode_kwargs.get("guidance_scale", 0.0), sketch_guidance=sketch_guidance)
    return decode(fn, tokens, rng, mask_id=model.spec.mask_id if mask_id is None else mask_id, **decode_kwargs)


def parse_stages(text, num_levels: int, *, argument: str = "config.sample.stages"):
    """A decoding plan over code levels, from text → `decode(stages=)` (None: one pool over every level).

    `""` or `"flat"`: one pool over (position, level) — VampNet; with K == 1 the only plan.
    `"16,1,1,1"`: one stage per level, with that many steps each — SoundStorm (K numbers).
    `"0:16;1,2,3:2"`: explicit stages `levels:steps`, separated by `;`.
    """
    text = str(text or "").strip().lower()
    if text in ("", "flat"):
        return None
    try:
        if ":" in text:
            stages = []
            for part in text.split(";"):
                levels, steps = part.split(":")
                stages.append((tuple(int(x) for x in levels.split(",")), int(steps)))
        else:
            steps = [int(x) for x in text.split(",")]
            if len(steps) != num_levels:
                raise ValueError(f"{argument} {text!r}: give one step count per code level ({num_levels}), "
                                 "or 'levels:steps;...'")
            stages = [((k,), s) for k, s in enumerate(steps)]
    except ValueError as e:
        if str(e).startswith(argument):
            raise
        raise ValueError(f"{argument} {text!r}: expected 'flat', steps per level like '16,1,1,1', or "
                         "'0:16;1,2,3:2'") from None
    levels = sorted(k for lv, _ in stages for k in lv)
    if levels != list(range(num_levels)) or min(s for _, s in stages) < 1:
        raise ValueError(f"{argument} {text!r}: every level 0..{num_levels - 1} exactly once, steps >= 1")
    return stages


def decode_options(sample_config, num_levels: int = 1, **overrides) -> dict:
    """Keyword arguments of `decode` / `GenerationPipeline.generate` from a config's `sample` section
    (num_steps, temperatures, guidance, top-k / top-p / typical filtering, the commit ranking
    `confidence`, the level plan `stages`; `temperature_final`, `sketch_guidance` and a `guidance_schedule`
    other than "constant" only when the config sets them, or an override does);
    `overrides` that are not None replace the config's values (e.g. from command-line options)."""
    s = sample_config
    values = dict(num_steps=s.num_steps, choice_temperature=s.choice_temperature, temperature=s.temperature,
                  guidance_scale=s.guidance, top_k=s.get("top_k", 0), top_p=s.get("top_p", 1.0),
                  typical_p=s.get("typical_p", 1.0), stages=s.get("stages", ""),
                  confidence=s.get("confidence", "logprob"), temperature_final=s.get("temperature_final"),
                  sketch_guidance=s.get("sketch_guidance", 0.0),
                  guidance_schedule=s.get("guidance_schedule", "constant"))
    values.update({k: v for k, v in overrides.items() if v is not None})

    def argument(name: str) -> str:  # where a bad value came from, for its error: the flag or the config field
        return "--" + name.replace("_", "-") if overrides.get(name) is not None else f"config.sample.{name}"

    out = dict(num_steps=int(values["num_steps"]), choice_temperature=float(values["choice_temperature"]),
               temperature=float(values["temperature"]), guidance_scale=float(values["guidance_scale"]))
    # 0 / 1.0 turn a filter off (ml_collections fields cannot hold None)
    out["top_k"] = int(values["top_k"]) or None
    out["top_p"] = None if float(values["top_p"]) >= 1.0 else float(values["top_p"])
    out["typical_p"] = None if float(values["typical_p"]) >= 1.0 else float(values["typical_p"])
    out["confidence"] = str(values["confidence"])
    if out["confidence"] not in CONFIDENCES:
        raise ValueError(f"{argument('confidence')}={out['confidence']!r}; expected one of {CONFIDENCES}")
    out["stages"] = parse_stages(values["stages"], num_levels, argument=argument("stages"))
    final = values["temperature_final"]
    if final is not None:  # annealed linearly from `temperature` over the steps
        out["temperature_final"] = float(final)
        if out["temperature_final"] <= 0:
            raise ValueError(f"{argument('temperature_final')}={final}; expected > 0 (or unset: no annealing)")
    if float(values["sketch_guidance"]):
        out["sketch_guidance"] = float(values["sketch_guidance"])
    schedule = str(values["guidance_schedule"])
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"{argument('guidance_schedule')}={schedule!r}; expected one of {GUIDANCE_SCHEDULES}")
    if schedule != "constant":  # the guidance scale ramped up over the steps (`mgt.decoding.decode`)
        out["guidance_schedule"] = schedule
    return out
