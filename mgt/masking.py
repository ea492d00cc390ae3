"""Training masks and the masked-token loss.

A training example is masked in two decisions: how many cells (γ(r)·N with r ~ U[0, 1), the mask
schedule of `mgt.schedules`) and which ones (the structure):

    "random"    i.i.d. positions — MaskGIT / Muse
    "box"       one random box per example — inpainting
    "prefix"    the first cells along an axis — outpainting towards the start
    "suffix"    the last cells along an axis — continuation, frame prediction
    "levelwise" residual levels: levels below a random level q visible, level q masked at γ(r)·N
                cells, levels above q fully masked — SoundStorm (with its prompt prefix, and MAGNeT's
                spans of frames, as options)
    "blocks"    random blocks of `block` cells per axis (the same score over a block) — MAGVIT's 3D
                block masks
    "frame_ordered"  the last slices along axis 0 first, random within the slice where the count ends
                — MAGVIT's frame-by-frame masks

COMMIT (MAGVIT's multi-task masked modelling): `commit_inputs` shows a task's condition tokens instead
of the mask id at masked cells inside the task's condition region, with segment id 1.

Masks are bool `[B, *grid]` over cells, or `[B, *grid, K]` for multi-level tokens (a cell mask is
broadcast over the levels, except for "levelwise" and "random_tokens", which masks each (cell, level)
token on its own — as decoding commits them). All functions are jittable with static shapes.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from mgt.profiling import scoped
from mgt.schedules import check_schedule, mask_ratio
from mgt.tokens import TokenSpec

STRUCTURES = ("random", "box", "prefix", "suffix", "levelwise", "blocks", "frame_ordered", "random_tokens")


def sample_mask_counts(rng, batch_size: int, num_cells: int, *, schedule="cosine", min_ratio=0.0):
    """int32 `[B]`: cells to mask per example, ceil(N·γ(r)) with r ~ U[0, 1), at least 1 and at most N.

    `min_ratio` raises the floor of the ratio (e.g. 0.1 never masks fewer than 10 % of the cells).
    """
    check_schedule(schedule)
    r = jax.random.uniform(rng, (batch_size,))
    ratio = jnp.maximum(mask_ratio(schedule, r, num_cells), min_ratio)
    counts = jnp.ceil(ratio * num_cells).astype(jnp.int32)
    return jnp.clip(counts, 1, num_cells)


def random_mask(rng, counts, grid: Sequence[int]):
    """bool `[B, *grid]` with exactly `counts[b]` cells masked, chosen uniformly at random."""
    b = counts.shape[0]
    n = math.prod(grid)
    scores = jax.random.uniform(rng, (b, n))
    ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    return (ranks < counts[:, None]).reshape((b,) + tuple(grid))


def box_mask(rng, counts, grid: Sequence[int]):
    """bool `[B, *grid]`: one axis-aligned box per example, of about `counts[b]` cells, at a random place.

    The box's side along each axis is close to dim · (counts/N)^(1/rank), with a random aspect jitter,
    clipped to [1, dim]; its offset is uniform over the positions where it fits.
    """
    grid = tuple(grid)
    b, rank, n = counts.shape[0], len(grid), math.prod(grid)
    k_aspect, k_pos = jax.random.split(rng)
    frac = (counts.astype(jnp.float32) / n) ** (1.0 / rank)  # [B]
    jitter = jnp.exp(jax.random.uniform(k_aspect, (b, rank), minval=-0.3, maxval=0.3))
    jitter = jitter / jnp.prod(jitter, axis=-1, keepdims=True) ** (1.0 / rank)  # keep the volume
    dims = jnp.asarray(grid, jnp.float32)
    sides = jnp.clip(jnp.round(frac[:, None] * jitter * dims), 1, dims).astype(jnp.int32)  # [B, rank]
    starts = jnp.floor(jax.random.uniform(k_pos, (b, rank)) * (dims.astype(jnp.int32) - sides + 1)).astype(jnp.int32)
    mask = jnp.ones((b,) + grid, bool)
    for axis, dim in enumerate(grid):
        idx = jnp.arange(dim).reshape((1,) * (axis + 1) + (dim,) + (1,) * (rank - axis - 1))
        lo = starts[:, axis].reshape((b,) + (1,) * rank)
        hi = lo + sides[:, axis].reshape((b,) + (1,) * rank)
        mask &= (idx >= lo) & (idx < hi)
    return mask


def span_mask(lengths, grid: Sequence[int], *, axis: int = 0, where: str = "suffix"):
    """bool `[B, *grid]`: the first (`where="prefix"`) or last (`"suffix"`) `lengths[b]` slices along
    grid axis `axis` are masked. A suffix along time with the first frames known is frame prediction."""
    grid = tuple(grid)
    if not 0 <= axis < len(grid):
        raise ValueError(f"axis={axis} is not a grid axis of grid {grid}; expected 0 <= axis < {len(grid)}")
    if where not in ("prefix", "suffix"):
        raise ValueError(f"where={where!r}; expected 'prefix' or 'suffix'")
    b, dim = lengths.shape[0], grid[axis]
    idx = jnp.arange(dim).reshape((1,) * (axis + 1) + (dim,) + (1,) * (len(grid) - axis - 1))
    lengths = lengths.reshape((b,) + (1,) * len(grid))
    sel = idx < lengths if where == "prefix" else idx >= dim - lengths
    return jnp.broadcast_to(sel, (b,) + grid)


def _lowest(scores, counts):
    """bool `[B, *grid]`: the `counts[b]` lowest scores of each example (exact count, ties by rank)."""
    b = scores.shape[0]
    flat = scores.reshape(b, -1)
    ranks = jnp.argsort(jnp.argsort(flat, axis=-1, stable=True), axis=-1, stable=True)
    return (ranks < counts[:, None]).reshape(scores.shape)


def block_mask(rng, counts, grid: Sequence[int], block: Sequence[int] | int = 2):
    """bool `[B, *grid]` with exactly `counts[b]` cells masked in random blocks of `block` cells per
    axis: one uniform score per block of a randomly offset block lattice, cells ranked by score (a
    small per-cell jitter breaks ties, so the block where the count ends is partly masked)."""
    grid = tuple(grid)
    block = (int(block),) * len(grid) if isinstance(block, int) else tuple(int(x) for x in block)
    if len(block) != len(grid) or min(block) < 1:
        raise ValueError(f"block={block}: expected one positive size per grid axis of {grid}")
    b = counts.shape[0]
    k_score, k_offset, k_jitter = jax.random.split(rng, 3)
    coarse = tuple(-(-g // s) + 1 for g, s in zip(grid, block))
    score = jax.random.uniform(k_score, (b,) + coarse)
    for axis, s in enumerate(block):
        score = jnp.repeat(score, s, axis=axis + 1)
    offsets = jax.random.randint(k_offset, (b, len(grid)), 0, jnp.asarray(block))
    score = jax.vmap(lambda sc, off: jax.lax.dynamic_slice(sc, tuple(off), grid))(score, offsets)
    score = score + 1e-3 * jax.random.uniform(k_jitter, score.shape)
    return _lowest(score, counts)


def frame_ordered_mask(rng, counts, grid: Sequence[int]):
    """bool `[B, *grid]` with exactly `counts[b]` cells masked, the last slices along axis 0 first
    (random cells within the slice where the count ends): frame prediction's order."""
    grid = tuple(grid)
    b = counts.shape[0]
    index = jnp.arange(grid[0]).reshape((1, grid[0]) + (1,) * (len(grid) - 1))
    score = jax.random.uniform(rng, (b,) + grid) - index
    return _lowest(score, counts)


def commit_inputs(tokens, mask, condition_tokens, region, mask_id: int):
    """MAGVIT's COMMIT corruption ("cond->input"): masked cells inside the condition region show the
    condition token, other masked cells the mask id, unmasked cells their own token.

    Args:
      tokens: int32 `[B, *grid(, K)]` targets. mask: bool, same shape (True: corrupted).
      condition_tokens: int32, same shape — the tokens of the task's condition input.
      region: bool `[B, *grid]` or same shape as tokens — the task's condition region.
    Returns:
      `(inputs int32, segment_ids int32)` shaped like `tokens`; segment 1 where a condition token is shown.
    """
    region = jnp.broadcast_to(region.reshape(region.shape + (1,) * (tokens.ndim - region.ndim)), tokens.shape)
    shown = mask & region
    inputs = jnp.where(mask, jnp.where(region, condition_tokens, jnp.int32(mask_id)), tokens)
    return inputs.astype(jnp.int32), shown.astype(jnp.int32)


def levelwise_mask(rng, counts, grid: Sequence[int], num_levels: int, *, prompt_fraction: float = 0.0,
                   span: int = 0):
    """SoundStorm masking. Returns `(mask, loss_mask)`, both bool `[B, *grid, K]`.

    Per example a level q ~ U{0..K-1}: levels < q visible, level q masked at `counts[b]` cells (scaled
    to the cells outside the prompt), levels > q fully masked. The loss is taken on the masked cells of
    level q only (`loss_mask`).

    `prompt_fraction` > 0: SoundStorm's prompt — the first p ~ U{0..⌊prompt_fraction · grid[0]⌋} slices
    along axis 0 stay visible at every level (no loss there), so the model learns to continue a prompt.
    `span` > 0: the level-q cells are chosen in spans of `span` slices along axis 0 (MAGNeT's span
    masking, spans of 3 frames of audio) rather than independently.
    """
    grid = tuple(grid)
    k_level, k_cells, k_prompt = jax.random.split(rng, 3)
    b, n, length = counts.shape[0], math.prod(grid), grid[0]
    q = jax.random.randint(k_level, (b,), 0, num_levels).reshape((b,) + (1,) * (len(grid) + 1))
    frame = jnp.arange(length).reshape((1, length) + (1,) * (len(grid) - 1))
    prompt = jnp.zeros((b,) + grid, bool)
    if prompt_fraction > 0:
        longest = int(math.floor(prompt_fraction * length))
        p = jax.random.randint(k_prompt, (b,), 0, longest + 1).reshape((b,) + (1,) * len(grid))
        prompt = jnp.broadcast_to(frame < p, (b,) + grid)
        free = n - prompt.reshape(b, -1).sum(-1)
        counts = jnp.clip(jnp.ceil(counts * free / n).astype(jnp.int32), jnp.minimum(free, 1), free)
    if span > 0:
        k_score, k_offset, k_jitter = jax.random.split(k_cells, 3)
        # a span lattice at a random offset, one score per span (as `block_mask`), prompt cells last
        coarse = (-(-length // span) + 1,) + grid[1:]
        score = jnp.repeat(jax.random.uniform(k_score, (b,) + coarse), span, axis=1)
        offsets = jax.random.randint(k_offset, (b,), 0, span)
        score = jax.vmap(lambda sc, off: jax.lax.dynamic_slice_in_dim(sc, off, length, axis=0))(score, offsets)
        score = score + 1e-3 * jax.random.uniform(k_jitter, score.shape)
    else:
        score = jax.random.uniform(k_cells, (b,) + grid)
    cells = _lowest(jnp.where(prompt, 2.0, score), counts)[..., None]  # [B, *grid, 1]
    level = jnp.arange(num_levels).reshape((1,) * (len(grid) + 1) + (num_levels,))
    loss_mask = cells & (level == q)
    mask = loss_mask | ((level > q) & ~prompt[..., None])
    return mask, loss_mask


@scoped("masking")
def make_training_mask(rng, spec: TokenSpec, batch_size: int, *, structure="random", schedule="cosine",
                       min_ratio=0.0, axis=0, block: Sequence[int] | int = 2, prompt_fraction: float = 0.0,
                       span: int = 0):
    """Sample a training mask for a batch on `spec`'s grid (`block`: the block size of "blocks";
    `prompt_fraction`, `span`: SoundStorm's prompt and MAGNeT's spans for "levelwise").

    Returns `(mask, loss_mask)`: bool `[B, *grid]` (K == 1) or `[B, *grid, K]`. `mask` marks the
    tokens replaced by the mask id; `loss_mask` those the loss is taken on (equal to `mask` except
    for "levelwise").
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure={structure!r} is not a mask structure; expected one of {STRUCTURES}")
    k_count, k_where = jax.random.split(rng)
    if structure in ("prefix", "suffix"):
        dim = spec.grid[axis] if 0 <= axis < len(spec.grid) else 0
        counts = sample_mask_counts(k_count, batch_size, max(dim, 1), schedule=schedule, min_ratio=min_ratio)
        cells = span_mask(counts, spec.grid, axis=axis, where=structure)
    elif structure == "random_tokens":  # every (cell, level) token on its own
        counts = sample_mask_counts(k_count, batch_size, spec.num_cells * spec.num_levels, schedule=schedule,
                                    min_ratio=min_ratio)
        tokens = random_mask(k_where, counts, spec.grid + ((spec.num_levels,) if spec.num_levels > 1 else ()))
        return tokens, tokens
    else:
        counts = sample_mask_counts(k_count, batch_size, spec.num_cells, schedule=schedule, min_ratio=min_ratio)
        if structure == "levelwise":
            return levelwise_mask(k_where, counts, spec.grid, spec.num_levels, prompt_fraction=prompt_fraction,
                                  span=span)
        if structure == "blocks":
            cells = block_mask(k_where, counts, spec.grid, block)
        elif structure == "frame_ordered":
            cells = frame_ordered_mask(k_where, counts, spec.grid)
        else:
            cells = (random_mask if structure == "random" else box_mask)(k_where, counts, spec.grid)
    if spec.num_levels > 1:
        cells = jnp.broadcast_to(cells[..., None], cells.shape + (spec.num_levels,))
    return cells, cells


def apply_mask(tokens, mask, mask_id: int):
    """Replace masked tokens by `mask_id`: int32 `[B, ...]`."""
    return jnp.where(mask, jnp.int32(mask_id), tokens)


@scoped("loss")
def masked_cross_entropy(logits, targets, loss_mask=None, *, label_smoothing=0.0):
    """Mean cross-entropy over the tokens selected by `loss_mask` (all tokens when None).

    Args:
      logits: float `[..., V]` (computed in float32).
      targets: int32 `[...]` in [0, V).
      loss_mask: bool `[...]` or None.
      label_smoothing: ε; the target distribution is (1 − ε)·onehot + ε/V.
    Returns:
      float32 scalar. With an empty mask, 0.
    """
    logits = logits.astype(jnp.float32)
    v = logits.shape[-1]
    labels = optax.smooth_labels(jax.nn.one_hot(targets, v, dtype=jnp.float32), label_smoothing)
    per_token = optax.softmax_cross_entropy(logits, labels)
    if loss_mask is None:
        return per_token.mean()
    w = loss_mask.astype(jnp.float32)
    return (per_token * w).sum() / jnp.maximum(w.sum(), 1.0)
