"""The MaskGIT decoding engine: iterative parallel decoding over any token grid.

`decode(logits_fn, tokens, rng, *, mask_id, ...)` starts from `tokens` (int32 `[B, ...]`, `mask_id`
where tokens are to be generated) and fills them in `num_steps` steps. At step s of T:

  1. logits = logits_fn(tokens)  → `[B, ..., V]`; every masked position is sampled from
     categorical(logits / temperature) (optionally top-k / top-p filtered);
  2. confidence = log p(sampled) + τ_s · Gumbel noise, τ_s = choice_temperature · (1 − (s+1)/T);
     known positions have confidence +∞;
  3. for s < T−1 the `max(1, min(u_s − 1, ⌊N0 · γ((s+1)/T)⌋))` least confident positions are masked
     again (N0: masked positions in the input, u_s: masked before step s); after the last step nothing
     is masked.

These are the official MaskGIT semantics (google-research/maskgit, parallel_decode.py), except that
the re-masked set is chosen by rank, so the masked count is exact even when confidences tie.

Condition tokens (MAGVIT's COMMIT decoding): with `condition_tokens` (int32 shaped like `tokens`,
`mask_id` where there is no condition), a masked position that has a condition token is shown to the
model as that token, with segment id 1 (`logits_fn(shown, segment_ids=...)`), at every step until it
is committed: the condition is re-applied at each step, so a position re-masked by the schedule shows
its condition token again rather than `[MASK]`. Such positions are generated like any other masked
position (the given region comes back refined, as in MAGVIT). Guidance's unconditional half sees
plain `[MASK]` tokens and segment 0 there.

The loop is one `lax.scan` with fixed shapes. Every random draw of example b comes from its own key
(`rng` may be a batch of B keys), so an example's output depends only on its key and its input.
`decode` validates its arguments and jit-compiles the loop (cached per logits_fn and options);
`decode_loop` is the same loop without validation or jit, for use inside a caller's own jit (e.g.
a generation function that also runs the tokenizer's decoder).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mgt.profiling import scoped
from mgt.schedules import check_schedule, mask_ratio
from mgt.tokens import check_token_values

ORDERS = ("confidence", "random", "halton")
CONFIDENCES = ("logprob", "logit")
GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """Static (hashable) options of one decoding run; see `decode`."""

    mask_id: int
    num_steps: int = 8
    schedule: str = "cosine"
    choice_temperature: float = 4.5
    temperature: float = 1.0
    temperature_final: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    confidence: str = "logprob"
    order: str = "confidence"
    guidance_scale: float = 0.0
    guidance_schedule: str = "constant"
    start_step: int = 0
    stages: tuple[tuple[tuple[int, ...], int], ...] | None = None
    return_history: bool = False


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def decode(
    logits_fn: Callable,
    tokens,
    rng,
    *,
    mask_id: int,
    num_steps: int = 8,
    schedule: str = "cosine",
    choice_temperature: float = 4.5,
    temperature: float = 1.0,
    return_history: bool = False,
    temperature_final: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    typical_p: float | None = None,
    confidence: str = "logprob",
    order: str = "confidence",
    guidance_scale: float = 0.0,
    guidance_schedule: str = "constant",
    start_step: int = 0,
    stages: Sequence[tuple[int | Sequence[int], int]] | None = None,
    condition_tokens=None,
):
    """Generate the masked tokens of `tokens` by MaskGIT iterative decoding.

    Args:
      logits_fn: `logits_fn(tokens) -> logits` float `[B, ..., V]` for int32 tokens `[B, ...]`.
        A plain function is compiled as a constant (arrays it closes over become part of the
        program); a pytree callable such as `mgt.sampling.model_logits_fn(model, labels=...)` is
        passed as an argument, so large weights are never baked in and new weights reuse the code.
        With `guidance_scale != 0` it is called as `logits_fn(tokens, drop_condition)` on a batch of
        2B (the conditional half first), `drop_condition` bool `[2B]` telling which rows must use the
        null condition; both passes run as one batched forward.
      tokens: int32 `[B, ...]` — any grid rank, with or without a trailing level axis; `mask_id` marks
        the positions to generate; every other id must lie in [0, V).
      rng: one PRNG key, or a batch of B keys (one per example).
      mask_id: the id of masked positions (may be >= V).
      num_steps: T, decoding steps (>= 1). Ignored when `stages` is given.
      schedule: mask schedule name (`mgt.schedules`), default "cosine".
      choice_temperature: scale of the Gumbel noise added to the confidence, annealed linearly to 0.
      temperature: sampling temperature; with `temperature_final`, annealed linearly from
        `temperature` at the first step to `temperature_final` at the last.
      return_history: also return the state after each step, `[T, B, ...]`, positions still masked
        holding `mask_id` (steps before `start_step` hold the input).
      top_k / top_p: sample only from the k most likely codes / the smallest set of probability >= p.
      typical_p: locally typical sampling (Meister et al. 2023; VampNet's sampler): keep the codes whose
        surprisal −log p is closest to the distribution's entropy, the smallest such set of mass >= typical_p.
      confidence: "logprob" (official) or "logit" (raw logit of the sampled code).
      order: "confidence" (official), "random" (uniformly random order) or "halton" (a fixed
        low-discrepancy order over the grid: spread-out positions first).
      guidance_scale: w of classifier-free guidance, logits = l_c + w_s · (l_c − l_u); 0 disables it.
      guidance_schedule: w_s = w ("constant"), w·(s+1)/T ("linear"), w·(1 − cos(π(s+1)/T))/2 ("cosine").
      start_step: begin at this step of the schedule (the official editing mode starts at step 2 of 12).
      stages: a multi-stage plan over code levels for tokens with a trailing level axis, e.g.
        `[(0, 16), (1, 1), (2, 1)]` or `[(0, 16), ((1, 2, 3), 1)]`: each stage decodes the masked
        positions of its levels in its own number of steps, in order; levels of later stages stay
        masked meanwhile (SoundStorm / VampNet).
      condition_tokens: optional int32, shaped like `tokens`: condition tokens shown in place of
        `[MASK]` at still-masked positions (`mask_id`: none), see the module docstring. `logits_fn`
        is then called with a keyword `segment_ids` (int32 shaped like `tokens`, 1 where shown).
    Returns:
      int32 tokens shaped like `tokens` with nothing masked, or `(tokens, history)`.
    Raises:
      ValueError: for ids outside [0, V) other than `mask_id`, `num_steps < 1`, an unknown schedule,
        order or confidence, a batch of keys of the wrong length, bad stages — before compiling.
    """
    tokens, keys, opts, condition_tokens = prepare(
        logits_fn, tokens, rng, mask_id=mask_id, num_steps=num_steps, schedule=schedule,
        choice_temperature=choice_temperature, temperature=temperature, return_history=return_history,
        temperature_final=temperature_final, top_k=top_k, top_p=top_p, typical_p=typical_p, confidence=confidence,
        order=order,
        guidance_scale=guidance_scale, guidance_schedule=guidance_schedule, start_step=start_step, stages=stages,
        condition_tokens=condition_tokens)
    if jax.tree.leaves(logits_fn) != [logits_fn]:
        # a pytree callable (e.g. mgt.sampling.ModelLogits): its arrays are arguments, not constants
        return _decode_jit_pytree(logits_fn, tokens, keys, opts, condition_tokens)
    return _decode_jit(logits_fn, tokens, keys, opts, condition_tokens)


def prepare(logits_fn, tokens, rng, *, mask_id: int, stages=None, condition_tokens=None, **options):
    """Check the arguments of `decode` on the host (nothing is compiled) and return those of
    `decode_loop`: `(tokens int32 [B, ...], keys [B], DecodeOptions, condition_tokens int32 [B, ...] or
    None)`. `options` are `decode`'s."""
    floats = ("choice_temperature", "temperature", "guidance_scale")
    options = {k: float(v) if k in floats else v for k, v in options.items()}
    if options.get("temperature_final") is not None:
        options["temperature_final"] = float(options["temperature_final"])
    opts = DecodeOptions(mask_id=int(mask_id), stages=_normalise_stages(stages), **options)
    tokens = _check_tokens_array(tokens)
    _validate(opts, tokens)
    keys = example_keys(rng, tokens.shape[0])
    vocab = _vocab_size(logits_fn, tokens, opts)
    check_token_values(tokens, vocab, opts.mask_id, "tokens")
    if condition_tokens is not None:
        _check_tokens_array(condition_tokens)
        if tuple(np.shape(condition_tokens)) != tuple(np.shape(tokens)):
            raise ValueError(f"condition_tokens has shape {tuple(np.shape(condition_tokens))}; expected the shape "
                             f"of tokens {tuple(np.shape(tokens))}")
        check_token_values(condition_tokens, vocab, opts.mask_id, "condition_tokens")
        condition_tokens = jnp.asarray(condition_tokens, jnp.int32)
    return jnp.asarray(tokens, jnp.int32), keys, opts, condition_tokens


@functools.partial(jax.jit, static_argnums=(0, 3))
def _decode_jit(logits_fn, tokens, keys, opts, condition_tokens=None):
    return decode_loop(logits_fn, tokens, keys, opts, condition_tokens)


@functools.partial(jax.jit, static_argnums=(3,))
def _decode_jit_pytree(logits_fn, tokens, keys, opts, condition_tokens=None):
    return decode_loop(logits_fn, tokens, keys, opts, condition_tokens)


def example_keys(rng, batch_size: int):
    """A batch of B PRNG keys from one key (split) or a batch of keys (checked)."""
    rng = jnp.asarray(rng) if not isinstance(rng, jax.Array) else rng
    typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
    single_ndim = 0 if typed else 1
    if rng.ndim == single_ndim:
        return jax.random.split(rng, batch_size)
    if rng.ndim == single_ndim + 1:
        if rng.shape[0] != batch_size:
            raise ValueError(
                f"rng holds {rng.shape[0]} keys but tokens has batch size {batch_size}; "
                f"pass one key or exactly {batch_size} keys"
            )
        return rng
    raise ValueError(f"rng must be one PRNG key or a batch of {batch_size} keys, got shape {rng.shape}")


def decode_loop(logits_fn, tokens, keys, opts: DecodeOptions, condition_tokens=None):
    """The decoding loop, traceable inside a caller's jit. No validation: see `decode`.

    tokens int32 `[B, ...]`, keys `[B]` PRNG keys, condition_tokens int32 `[B, ...]` or None.
    Returns tokens, or `(tokens, history)`.
    A `logits_fn` with a `for_decoding()` method is replaced by what it returns, once, before the
    steps: the place to lay weights out for the loop (e.g. `ModelLogits` unstacks per-layer weights).
    """
    if hasattr(logits_fn, "for_decoding"):
        logits_fn = logits_fn.for_decoding()
    shape = tokens.shape
    b = shape[0]
    flat = tokens.reshape(b, -1)
    cond_flat = None if condition_tokens is None else condition_tokens.reshape(b, -1)
    n = flat.shape[1]
    if opts.stages is None:
        plan = [(None, opts.num_steps, opts.start_step)]
    else:
        plan = [(levels, steps, 0) for levels, steps in opts.stages]
    level_of_position = None
    if opts.stages is not None:
        k = shape[-1]
        level_of_position = jnp.broadcast_to(jnp.arange(k), shape[1:]).reshape(-1)
    priority = _halton_priority(shape[1:]) if opts.order == "halton" else None

    histories = []
    for stage_index, (levels, steps, start) in enumerate(plan):
        if levels is None:
            active = jnp.ones((n,), bool)
        else:
            active = jnp.isin(level_of_position, jnp.asarray(levels))
        stage_keys = jax.vmap(lambda k: jax.random.fold_in(k, stage_index))(keys)
        flat, history = _decode_stage(logits_fn, flat, stage_keys, active, steps, start, shape, priority, opts,
                                      cond_flat)
        if opts.return_history:
            histories.append(history)
    out = flat.reshape(shape)
    if not opts.return_history:
        return out
    history = jnp.concatenate(histories, 0)
    return out, history.reshape((history.shape[0],) + shape)


# --------------------------------------------------------------------------------------------
# One stage: a scan over steps
# --------------------------------------------------------------------------------------------
def _decode_stage(logits_fn, flat, keys, active, num_steps, start_step, shape, priority, opts, cond_flat=None):
    b, n = flat.shape
    mask_id = opts.mask_id
    initial = flat
    candidates0 = (flat == mask_id) & active[None, :]
    n0 = candidates0.sum(-1)  # [B] masked positions this stage generates

    def step_fn(cur, step):
        cond = None if cond_flat is None else cond_flat.reshape(shape)
        logits = _logits(logits_fn, cur.reshape(shape), step, num_steps, opts, cond).reshape(b, n, -1)
        nxt = sample_and_remask(cur, logits.astype(jnp.float32), step)
        return nxt, (nxt if opts.return_history else None)

    @scoped("sampling")
    def sample_and_remask(cur, logits, step):
        """cur int32 `[B, N]`, logits float32 `[B, N, V]` → the next tokens int32 `[B, N]`."""
        unknown = (cur == mask_id) & active[None, :]
        u = unknown.sum(-1)
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
        sample_keys, choice_keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(step_keys)
        temperature = _temperature(step, num_steps, opts)
        filtered = _filter_logits(logits / temperature, opts.top_k, opts.top_p, opts.typical_p)
        sampled = jax.vmap(jax.random.categorical)(sample_keys, filtered).astype(jnp.int32)
        sampled = jnp.where(unknown, sampled, cur)

        ratio = (step + 1.0) / num_steps
        if opts.order == "confidence":
            if opts.confidence == "logprob":
                score = jnp.take_along_axis(jax.nn.log_softmax(logits, -1),
                                            sampled[..., None].clip(0, logits.shape[-1] - 1), -1)[..., 0]
            else:
                score = jnp.take_along_axis(logits, sampled[..., None].clip(0, logits.shape[-1] - 1), -1)[..., 0]
            tau = opts.choice_temperature * (1.0 - ratio)
            gumbel = jax.vmap(lambda k: jax.random.gumbel(k, (n,)))(choice_keys)
            score = score + tau * gumbel
        elif opts.order == "random":
            score = jax.vmap(lambda k: jax.random.gumbel(k, (n,)))(choice_keys)
        else:  # halton: fixed priority, earlier Halton points are committed first
            score = jnp.broadcast_to(-priority.astype(jnp.float32), (b, n))
        score = jnp.where(unknown, score, jnp.inf)

        target = jnp.floor(n0.astype(jnp.float32) * mask_ratio(opts.schedule, ratio, n0)).astype(jnp.int32)
        mask_len = jnp.maximum(1, jnp.minimum(u - 1, target))
        mask_len = jnp.where(u > 0, mask_len, 0)
        mask_len = jnp.where(step == num_steps - 1, 0, mask_len)  # nothing stays masked at the end
        ranks = jnp.argsort(jnp.argsort(score, axis=-1, stable=True), axis=-1, stable=True)
        remask = ranks < mask_len[:, None]
        nxt = jnp.where(remask, mask_id, sampled)
        return jnp.where(active[None, :], nxt, cur)  # other stages' positions untouched

    steps = jnp.arange(start_step, num_steps)
    final, history = jax.lax.scan(step_fn, flat, steps)
    if opts.return_history and start_step > 0:
        history = jnp.concatenate([jnp.broadcast_to(initial, (start_step,) + initial.shape), history], 0)
    return final, history


def show_condition(tokens, condition_tokens, mask_id: int):
    """What the model sees at a decoding step: masked positions that have a condition token show it.

    tokens, condition_tokens int32 `[B, ...]` (`mask_id`: masked / no condition) → `(shown int32 [B, ...],
    segment_ids int32 [B, ...])`, segment 1 where a condition token is shown.
    """
    show = (tokens == mask_id) & (condition_tokens != mask_id)
    return jnp.where(show, condition_tokens, tokens), show.astype(jnp.int32)


def _logits(logits_fn, tokens, step, num_steps, opts, condition_tokens=None):
    if opts.guidance_scale == 0.0:
        if condition_tokens is None:
            return logits_fn(tokens)
        shown, segments = show_condition(tokens, condition_tokens, opts.mask_id)
        return logits_fn(shown, segment_ids=segments)
    progress = (step + 1.0) / num_steps
    w = opts.guidance_scale
    if opts.guidance_schedule == "linear":
        w = w * progress
    elif opts.guidance_schedule == "cosine":
        w = w * (1.0 - jnp.cos(math.pi * progress)) / 2.0
    return guided_logits(logits_fn, tokens, w, condition_tokens=condition_tokens, mask_id=opts.mask_id)


def guided_logits(logits_fn, tokens, scale, *, condition_tokens=None, mask_id=None):
    """Classifier-free guidance in one batched forward: l_c + scale · (l_c − l_u).

    `logits_fn(tokens2B, drop_condition [2B])` runs the conditional (first half) and unconditional
    (second half) passes together; with `condition_tokens` the conditional half shows them (see
    `show_condition`, `segment_ids=` keyword) and the unconditional half does not. Returns float32
    `[B, ..., V]`; scale 0 gives the conditional logits.
    """
    b = tokens.shape[0]
    drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
    if condition_tokens is None:
        out = logits_fn(jnp.concatenate([tokens, tokens], 0), drop)
    else:
        shown, segments = show_condition(tokens, condition_tokens, mask_id)
        out = logits_fn(jnp.concatenate([shown, tokens], 0), drop,
                        segment_ids=jnp.concatenate([segments, jnp.zeros_like(segments)], 0))
    out = out.astype(jnp.float32)
    cond, uncond = out[:b], out[b:]
    return cond + scale * (cond - uncond)


def _temperature(step, num_steps, opts):
    if opts.temperature_final is None or num_steps == 1:
        return opts.temperature
    frac = step / (num_steps - 1.0)
    return opts.temperature + (opts.temperature_final - opts.temperature) * frac


def _filter_logits(logits, top_k, top_p, typical_p=None):
    """Set logits outside the top-k / nucleus-p / typical-p set to -inf. logits float32 `[B, N, V]`.

    The kept set is built from indices, never by comparing against a recomputed threshold: XLA may
    fuse the logits' computation twice with different rounding, and a threshold test could then
    drop every code.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        _, idx = jax.lax.top_k(logits, top_k)
        keep = jnp.put_along_axis(jnp.zeros(logits.shape, bool), idx, True, axis=-1, inplace=False)
        logits = jnp.where(keep, logits, -jnp.inf)
    if top_p is not None and top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        probs = jnp.take_along_axis(jax.nn.softmax(logits, -1), order, -1)
        # keep the smallest prefix whose mass reaches p (the most likely code is always kept)
        keep_sorted = (jnp.cumsum(probs, -1) - probs) < top_p
        keep = jnp.put_along_axis(jnp.zeros(logits.shape, bool), order, keep_sorted, axis=-1, inplace=False)
        logits = jnp.where(keep, logits, -jnp.inf)
    if typical_p is not None and typical_p < 1.0:
        log_probs = jax.nn.log_softmax(logits, -1)
        probs = jnp.exp(log_probs)
        entropy = -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), -1, keepdims=True)
        # codes ordered by how far their surprisal is from the entropy (excluded codes last)
        distance = jnp.where(jnp.isfinite(log_probs), jnp.abs(-log_probs - entropy), jnp.inf)
        order = jnp.argsort(distance, axis=-1)
        sorted_probs = jnp.take_along_axis(probs, order, -1)
        keep_sorted = (jnp.cumsum(sorted_probs, -1) - sorted_probs) < typical_p  # the first code always kept
        keep = jnp.put_along_axis(jnp.zeros(logits.shape, bool), order, keep_sorted, axis=-1, inplace=False)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


# --------------------------------------------------------------------------------------------
# Halton order
# --------------------------------------------------------------------------------------------
_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19)


def _radical_inverse(i: np.ndarray, base: int) -> np.ndarray:
    out = np.zeros(i.shape, np.float64)
    f = 1.0 / base
    i = i.copy()
    while np.any(i > 0):
        out += f * (i % base)
        i //= base
        f /= base
    return out


@functools.lru_cache(maxsize=64)
def _halton_priority_np(shape: tuple[int, ...]) -> np.ndarray:
    """int32 `[prod(shape)]`: the rank at which each position appears in a Halton sequence over the
    grid (each axis its own prime base). Spread-out positions come first."""
    n = math.prod(shape)
    if len(shape) > len(_PRIMES):
        return np.arange(n, dtype=np.int32)
    priority = np.full(n, -1, np.int64)
    seen = 0
    count = max(4 * n, 64)
    start = 0
    while seen < n and start < 64 * n + 64:
        idx = np.arange(start, start + count)
        cells = np.zeros(count, np.int64)
        for axis, dim in enumerate(shape):
            coord = np.minimum((_radical_inverse(idx, _PRIMES[axis]) * dim).astype(np.int64), dim - 1)
            cells = cells * dim + coord
        for c in cells:
            if priority[c] < 0:
                priority[c] = seen
                seen += 1
        start += count
    missing = np.flatnonzero(priority < 0)
    priority[missing] = seen + np.arange(missing.size)
    return priority.astype(np.int32)


def _halton_priority(shape: tuple[int, ...]):
    return jnp.asarray(_halton_priority_np(tuple(int(s) for s in shape)))


# --------------------------------------------------------------------------------------------
# Validation (before anything is compiled)
# --------------------------------------------------------------------------------------------
def _check_tokens_array(tokens):
    if isinstance(tokens, jax.core.Tracer):
        return tokens
    arr = np.asarray(tokens)
    if arr.ndim < 2:
        raise ValueError(f"tokens must be int32 [batch, ...] with at least one grid axis, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be an integer array, got dtype {arr.dtype}")
    return tokens


def _normalise_stages(stages):
    if stages is None:
        return None
    out = []
    for i, stage in enumerate(stages):
        try:
            levels, steps = stage
        except (TypeError, ValueError):
            raise ValueError(f"stages[{i}]={stage!r}; expected a pair (levels, num_steps)") from None
        levels = (int(levels),) if np.ndim(levels) == 0 else tuple(int(level) for level in levels)
        out.append((levels, int(steps)))
    if not out:
        raise ValueError("stages is empty; expected at least one (levels, num_steps) pair")
    return tuple(out)


def _validate(opts: DecodeOptions, tokens):
    if not isinstance(opts.num_steps, (int, np.integer)) or opts.num_steps < 1:
        raise ValueError(f"num_steps={opts.num_steps!r}; expected an integer >= 1")
    check_schedule(opts.schedule)
    if not 0 <= opts.start_step < opts.num_steps:
        raise ValueError(f"start_step={opts.start_step}; expected 0 <= start_step < num_steps={opts.num_steps}")
    if opts.order not in ORDERS:
        raise ValueError(f"order={opts.order!r}; expected one of {ORDERS}")
    if opts.confidence not in CONFIDENCES:
        raise ValueError(f"confidence={opts.confidence!r}; expected one of {CONFIDENCES}")
    if opts.guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance_schedule={opts.guidance_schedule!r}; expected one of {GUIDANCE_SCHEDULES}")
    if opts.temperature <= 0 or (opts.temperature_final is not None and opts.temperature_final <= 0):
        raise ValueError(f"temperature={opts.temperature}, temperature_final={opts.temperature_final}; expected > 0")
    if opts.choice_temperature < 0:
        raise ValueError(f"choice_temperature={opts.choice_temperature}; expected >= 0")
    if opts.top_k is not None and opts.top_k < 1:
        raise ValueError(f"top_k={opts.top_k}; expected an integer >= 1 or None")
    if opts.top_p is not None and not 0.0 < opts.top_p <= 1.0:
        raise ValueError(f"top_p={opts.top_p}; expected 0 < top_p <= 1 or None")
    if opts.typical_p is not None and not 0.0 < opts.typical_p <= 1.0:
        raise ValueError(f"typical_p={opts.typical_p}; expected 0 < typical_p <= 1 or None")
    if opts.stages is not None:
        k = tokens.shape[-1]
        seen = set()
        for levels, steps in opts.stages:
            if steps < 1:
                raise ValueError(f"stages: num_steps={steps} for levels {levels}; expected >= 1")
            for level in levels:
                if not 0 <= level < k:
                    raise ValueError(f"stages: level {level} is not in [0, {k}) (the last axis of tokens has size {k})")
                if level in seen:
                    raise ValueError(f"stages: level {level} appears in two stages")
                seen.add(level)


_VOCAB_SIZES: dict = {}  # (logits_fn structure, tokens shape, guided) -> V; a small FIFO


def _vocab_size(logits_fn, tokens, opts) -> int:
    """V from the abstract output of logits_fn (traced, not compiled); checks the logits' shape.

    Tracing a large model takes tens of milliseconds on the host, so the answer is kept per logits_fn
    structure (a pytree's tree structure and leaf shapes, or a plain function itself — what `jit`
    keys its cache on too), token shape and guidance."""
    leaves, treedef = jax.tree.flatten(logits_fn)
    structure = (logits_fn if leaves == [logits_fn]
                 else (treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves)))
    key = (structure, tuple(tokens.shape), opts.guidance_scale != 0.0)
    try:
        if key in _VOCAB_SIZES:
            return _VOCAB_SIZES[key]
    except TypeError:  # an unhashable callable: no caching
        return _traced_vocab_size(logits_fn, tokens, opts)
    if len(_VOCAB_SIZES) >= 64:
        _VOCAB_SIZES.pop(next(iter(_VOCAB_SIZES)))
    _VOCAB_SIZES[key] = _traced_vocab_size(logits_fn, tokens, opts)
    return _VOCAB_SIZES[key]


def _traced_vocab_size(logits_fn, tokens, opts) -> int:
    spec = jax.ShapeDtypeStruct(tokens.shape, jnp.int32)
    if opts.guidance_scale == 0.0:
        out = jax.eval_shape(logits_fn, spec)
        expect = tuple(tokens.shape)
    else:
        both = jax.ShapeDtypeStruct((2 * tokens.shape[0],) + tuple(tokens.shape[1:]), jnp.int32)
        out = jax.eval_shape(logits_fn, both, jax.ShapeDtypeStruct((2 * tokens.shape[0],), jnp.bool_))
        expect = (2 * tokens.shape[0],) + tuple(tokens.shape[1:])
    if tuple(out.shape[:-1]) != expect:
        raise ValueError(f"logits_fn returned logits of shape {out.shape}; expected {expect} + (V,)")
    return int(out.shape[-1])
