"""Token grids: the shape and vocabulary of one example's tokens.

A `TokenSpec` describes the grid of one example — `(L,)` for audio frames, `(H, W)` for images,
`(T, H, W)` for video — the number of code levels K per cell and the codebook size per level. Token
arrays are int32 `[B, *grid]` when K == 1 and `[B, *grid, K]` otherwise.

The model's input vocabulary follows the official MaskGIT layout, shared by every level:

    [0, V)                      codes
    [V, V + C)                  class tokens (class c is id V + c), C = num_classes
    V + C                       the learned null class (only when `null_class=True`)
    [task_offset, + M)          task tokens (MAGVIT's COMMIT: task m is id task_offset + m), M = num_tasks
    vocab_size - 1              the mask id

so with V = 1024, C = 1000 and no tasks the mask id is 2024, exactly as in the official checkpoints.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """Shape and id layout of one example's token grid.

    Attributes:
      grid: the grid shape of one example, e.g. `(16, 16)`; any rank >= 1.
      codebook_size: V, the number of codes per level.
      num_levels: K, code levels per cell (1 for plain codes; K for residual or grouped codes).
      num_classes: C, class ids that live in the shared vocabulary after the codes (0: none).
      null_class: reserve one more id after the classes for the learned "no class" condition
        used by classifier-free guidance.
      num_tasks: M, task ids after the classes (a multi-task model's task prefix token; 0: none).
    """

    grid: tuple[int, ...]
    codebook_size: int
    num_levels: int = 1
    num_classes: int = 0
    null_class: bool = False
    num_tasks: int = 0

    def __post_init__(self):
        grid = tuple(int(g) for g in self.grid)
        object.__setattr__(self, "grid", grid)
        if len(grid) < 1 or any(g < 1 for g in grid):
            raise ValueError(f"TokenSpec.grid must be a non-empty tuple of positive ints, got {self.grid!r}")
        if self.codebook_size < 1:
            raise ValueError(f"TokenSpec.codebook_size must be >= 1, got {self.codebook_size}")
        if self.num_levels < 1:
            raise ValueError(f"TokenSpec.num_levels must be >= 1, got {self.num_levels}")
        if self.num_classes < 0:
            raise ValueError(f"TokenSpec.num_classes must be >= 0, got {self.num_classes}")
        if self.num_tasks < 0:
            raise ValueError(f"TokenSpec.num_tasks must be >= 0, got {self.num_tasks}")

    # ---- derived ids -------------------------------------------------------------------------
    @property
    def num_cells(self) -> int:
        """Number of grid cells, prod(grid): the model's sequence length without prefix tokens."""
        return math.prod(self.grid)

    @property
    def class_offset(self) -> int:
        """Id of class 0; class c is `class_offset + c`."""
        return self.codebook_size

    @property
    def null_class_id(self) -> int:
        if not self.null_class:
            raise ValueError("this TokenSpec has no null class (null_class=False)")
        return self.codebook_size + self.num_classes

    @property
    def task_offset(self) -> int:
        """Id of task 0; task m is `task_offset + m`."""
        return self.codebook_size + self.num_classes + int(self.null_class)

    @property
    def vocab_size(self) -> int:
        """Size of the input vocabulary: codes, classes, optional null class, tasks, mask."""
        return self.task_offset + self.num_tasks + 1

    @property
    def mask_id(self) -> int:
        """The id of a masked token: the last row of the vocabulary."""
        return self.vocab_size - 1

    # ---- shapes ------------------------------------------------------------------------------
    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one example's tokens: `grid` or `grid + (K,)`."""
        return self.grid if self.num_levels == 1 else self.grid + (self.num_levels,)

    def batch_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size,) + self.example_shape

    def masked(self, batch_size: int) -> np.ndarray:
        """A fully masked int32 batch `[B, *grid(, K)]`."""
        return np.full(self.batch_shape(batch_size), self.mask_id, np.int32)

    def flatten(self, tokens):
        """`[B, *grid(, K)]` → `[B, N(, K)]` with N = prod(grid), raster order."""
        b = tokens.shape[0]
        tail = () if self.num_levels == 1 else (self.num_levels,)
        return tokens.reshape((b, self.num_cells) + tail)

    def unflatten(self, seq):
        """`[B, N(, K), ...]` → `[B, *grid(, K), ...]`; trailing axes (e.g. logits) are kept."""
        b, n = seq.shape[:2]
        if n != self.num_cells:
            raise ValueError(f"sequence length {n} does not match grid {self.grid} ({self.num_cells} cells)")
        return seq.reshape((b,) + self.grid + tuple(seq.shape[2:]))

    # ---- validation --------------------------------------------------------------------------
    def check_tokens(self, tokens, name: str = "tokens", *, allow_mask: bool = True) -> None:
        """Raise ValueError unless `tokens` is an integer `[B, *example_shape]` array of codes
        in [0, V) (or the mask id when `allow_mask`). Runs on concrete (host) values only."""
        check_token_values(tokens, self.codebook_size, self.mask_id if allow_mask else None, name)
        shape = tuple(np.shape(tokens))
        if shape[1:] != self.example_shape:
            raise ValueError(
                f"{name} has shape {shape}; expected [batch, *{self.example_shape}] for {self}"
            )


def check_token_values(tokens, codebook_size: int, mask_id: int | None, name: str = "tokens") -> None:
    """Raise ValueError if a concrete integer array holds ids outside [0, V) other than `mask_id`."""
    import jax

    if isinstance(tokens, jax.core.Tracer):
        return  # values are unknown while tracing; checked by the caller before compiling
    arr = np.asarray(tokens)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= codebook_size)
    if mask_id is not None:
        bad &= arr != mask_id
    if bad.any():
        values = np.unique(arr[bad])[:5].tolist()
        allowed = f"[0, {codebook_size})" + (f" or the mask id {mask_id}" if mask_id is not None else "")
        raise ValueError(f"{name} holds ids {values} outside {allowed}")
