"""Conditional tasks of a multi-task masked model (MAGVIT's COMMIT), independent of the modality.

A *conditional task* (frame prediction, interpolation, outpainting, inpainting, ...) says which part
of an input is given and how the rest is filled in the input's own space before tokenizing (MAGVIT
pads missing frames with the last given one, interpolates between given ends, fills missing regions
with a constant). The tokens of that *condition input* are the task's condition tokens; the task's
*region* is the set of token cells whose footprint is mostly given. A modality offers its tasks by
name (`Task.conditional_task`); the model learns one task token per name
(`TransformerConfig.tasks`); training shows condition tokens inside the region
(`mgt.masking.commit_inputs`) and decoding re-applies them at every step (`decode(condition_tokens=)`).

The task named "generation" (`mgt.condition.GENERATION_TASK`) has nothing given: plain (class-)
conditional generation.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from mgt.condition import GENERATION_TASK


@runtime_checkable
class ConditionalTask(Protocol):
    """One conditional task on inputs of one shape.

    Attributes:
      name: the task's name (`TransformerConfig.tasks` entry), e.g. "frame_prediction".
      given: bool `[*input_shape[:-1]]` — which input positions (e.g. frame × row × column) are given.
    """

    name: str
    given: np.ndarray

    def condition_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """float32 `[B, *input_shape]` → the condition inputs, same shape: the given part as it is,
        the rest filled (padding, interpolation or a constant) as the task prescribes."""


def cell_footprints(size: int, cells: int) -> list[tuple[int, int]]:
    """The input positions `[start, stop)` along one axis of `size` that each of `cells` token cells
    covers: equal groups (`size = cells · f`), or the first position alone and then equal groups
    (`size = 1 + (cells - 1) · f`, a time-causal tokenizer)."""
    if size % cells == 0:
        f = size // cells
        return [(i * f, (i + 1) * f) for i in range(cells)]
    if cells > 1 and (size - 1) % (cells - 1) == 0:
        f = (size - 1) // (cells - 1)
        return [(0, 1)] + [(1 + i * f, 1 + (i + 1) * f) for i in range(cells - 1)]
    raise ValueError(f"an input axis of {size} positions does not map onto {cells} token cells "
                     "(expected size = cells·f or 1 + (cells-1)·f)")


def token_region(given: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """bool `[*grid]`: the token cells at least half of whose input footprint is given.

    `given` is bool `[*dims]` over the input positions (e.g. `[T, H, W]`), with one dim per grid axis.
    """
    given = np.asarray(given, bool)
    grid = tuple(int(g) for g in grid)
    if given.ndim != len(grid):
        raise ValueError(f"given has shape {given.shape}; expected one axis per token grid axis {grid}")
    share = given.astype(np.float64)
    for axis, cells in enumerate(grid):
        spans = cell_footprints(share.shape[axis], cells)
        share = np.stack([np.take(share, range(a, b), axis=axis).mean(axis=axis) for a, b in spans], axis=axis)
    return share >= 0.5


def region_condition_tokens(tokens: np.ndarray, region: np.ndarray, mask_id: int) -> np.ndarray:
    """int32 `[B, *grid(, K)]`: a condition input's `tokens` inside `region` (bool `[*grid]`, every level of
    a cell alike), `mask_id` elsewhere — what `decode(condition_tokens=)` takes."""
    tokens, region = np.asarray(tokens), np.asarray(region, bool)
    region = region.reshape((1,) + region.shape + (1,) * (tokens.ndim - 1 - region.ndim))
    return np.where(region, tokens, mask_id).astype(np.int32)


def task_regions(tasks: Sequence[str], offered, grid: Sequence[int]) -> np.ndarray:
    """bool `[M, *grid]`: each task's condition region (empty for "generation").

    `offered(name)` returns the modality's `ConditionalTask` of that name (raises ValueError for
    a name it does not offer)."""
    grid = tuple(grid)
    out = np.zeros((len(tasks),) + grid, bool)
    for i, name in enumerate(tasks):
        if name != GENERATION_TASK:
            out[i] = token_region(offered(name).given, grid)
    return out
