"""`MaskedTransformer`: a bidirectional Transformer over a flattened token grid of any rank.

Input: int32 tokens `[B, *grid]` (or `[B, *grid, K]` with K code levels), the mask id where unknown.
Each cell's embedding is the sum of its K per-level token embeddings; position embeddings are either
learned absolute (one row per sequence position, as the official MaskGIT) or factorised per grid axis
(so a video model can reuse an image model's spatial tables). Output: float32 logits
`[B, *grid(, K), V]` over the V codes of each level.

Conditioning (`TransformerConfig.conditioning`):
  "none"             unconditional;
  "class_token"      the class id as a prefix token in the shared vocabulary [codes | classes | (null) | mask]
                     — the official MaskGIT layout;
  "adaln"            a class embedding modulating every block (modern blocks only);
  "cross_attention"  an external embedding sequence `context [B, S, context_dim]` (text adapters) that
                     every block cross-attends to (padding positions masked by `context_mask`);
  "prefix"           the same sequence projected to the model width and prepended to the cells (an
                     in-context prefix: attended bidirectionally, masked where padding, no logits);
  "pooled_adaln"     the mean of the sequence over its real positions, projected, modulating every
                     block through adaLN (modern blocks only).
The three context conditionings take either the sequence itself or, with `context_vocab_size > 0`,
int32 token ids `context_ids [B, S]` that the model embeds with its own small encoder
(`mgt.context_encoder.ContextEncoder`, trained jointly). The engine never sees strings.
With `null_condition=True` a learned null condition lets classifier-free guidance drop the condition
of chosen examples (`drop_condition` bool `[B]`), and training drops it at random.

Multi-task models (MAGVIT's COMMIT, `TransformerConfig.tasks`): a task token (`tasks` int32 `[B]`, an
index into `config.tasks`) is a prefix token of the shared vocabulary after the classes, and a segment
embedding (`segment_ids` int32 `[B, *grid]`: 1 where a cell shows a condition token, 0 elsewhere) is
added to every cell, so the model tells condition tokens from committed ones.

Structured codes (`TransformerConfig.code_digits`, e.g. FSQ's levels `(8, 6, 5)`): code `i` is the
mixed-radix number with digits `(i // prod(digits[:j])) % digits[j]`, first digit fastest (FSQ's and
LFQ's index order). Each code's embedding then adds one learned vector per digit to its own, and its
logit one learned term per digit (`h @ W_digit`), so codes that share digits — neighbouring FSQ
values — share what the model learns about them, instead of being V unrelated ids.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.blocks import BLOCK_STYLES
from mgt.layers import TRUNC_NORMAL, ZEROS, Dense, LayerNorm, RMSNorm, dropout, make_param, relative_offset_index
from mgt.profiling import scoped
from mgt.tokens import TokenSpec

CONDITIONINGS = ("none", "class_token", "adaln", "cross_attention", "prefix", "pooled_adaln")
CONTEXT_CONDITIONINGS = ("cross_attention", "prefix", "pooled_adaln")
POSITION_EMBEDDINGS = ("learned", "factorized")
DECODE_LAYERS = ("unrolled", "scan")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes and choices of a `MaskedTransformer` (hashable; usable as a static jit argument).

    The official MaskGIT ImageNet-256 model is `TransformerConfig.maskgit_imagenet(256)`.
    """

    grid: tuple[int, ...]
    codebook_size: int
    num_levels: int = 1
    num_classes: int = 0
    num_layers: int = 4
    hidden_dim: int = 256
    num_heads: int = 4
    mlp_dim: int = 1024
    block_style: str = "modern"
    position_embedding: str = "learned"
    # rotate self-attention's queries and keys by each cell's grid coordinates (axial RoPE; modern blocks):
    # scores see grid offsets, on top of the position embeddings (which still tell where the borders are)
    rope: bool = False
    # a learned bias per head and grid offset added to self-attention's scores (Swin / T5 relative position
    # bias, one table per layer; zero at the start): a head can attend at one exact offset between cells
    relative_bias: bool = False
    conditioning: str = "none"
    null_condition: bool = False
    context_dim: int = 0
    # longest context sequence S (positions of the prefix and of the context encoder); 0: any (cross-attention)
    context_len: int = 0
    # > 0: the context arrives as token ids in [0, context_vocab_size) and the model embeds them with
    # its own `context_layers`-layer encoder of width context_dim (trained with the model)
    context_vocab_size: int = 0
    context_layers: int = 2
    # the trainable context encoder's positions: "learned" embeddings or "rope" (rotary, relative)
    context_position_encoding: str = "learned"
    # names of the conditional tasks a multi-task (COMMIT) model serves; () for a single-task model
    tasks: tuple[str, ...] = ()
    # the codes as mixed-radix digits (FSQ's levels; prod == codebook_size), () for unrelated code ids
    code_digits: tuple[int, ...] = ()
    # > 0: an auxiliary head regresses each cell's input patch (P values: the input block the cell's codes
    # stand for) from its final hidden state, trained beside the code logits (`transformer_train.patch_loss`)
    patch_dim: int = 0
    # True: every call runs the model twice and feeds the first pass's predicted patches (stop-gradient,
    # projected by a zero-initialised `recycle_kernel [P, D]`) into the second pass's embedding of every
    # cell — a sketch of the whole output in pixel space for the codes to agree with (AlphaFold's
    # recycling; in training half the batch gets no sketch, so the first pass is trained too). Needs patch_dim
    recycle_patches: bool = False
    # ... and the first pass's code probabilities at masked positions too (stop-gradient, through a
    # zero-initialised table `recycle_code_table [K, V, D]`: self-conditioning on what it believes)
    recycle_codes: bool = False
    qk_norm: bool = False
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    norm_epsilon: float | None = None  # None: 1e-12 for maskgit (official), 1e-6 for modern
    dtype: str = "float32"
    remat: bool = False
    scan_unroll: int | bool = 1  # layers per iteration of the layer loop; True: no loop (longer compile)
    # How decoding runs the layers: "unrolled" over per-layer weights laid out once per generation
    # (no step slices a layer's weights out of the stack), or "scan" as training does (shorter compile).
    decode_layers: str = "unrolled"
    attention_impl: str | None = None  # None or "xla": attention written out for XLA; "cudnn": fused cuDNN

    def __post_init__(self):
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        object.__setattr__(self, "code_digits", tuple(int(v) for v in self.code_digits))
        if self.code_digits and (min(self.code_digits) < 2 or math.prod(self.code_digits) != self.codebook_size):
            raise ValueError(f"code_digits={self.code_digits}: expected digits >= 2 whose product is "
                             f"codebook_size={self.codebook_size} (e.g. the FSQ quantizer's levels)")
        if self.patch_dim and self.block_style == "maskgit":
            raise ValueError(f"patch_dim={self.patch_dim}: the input-patch head needs block_style='modern'")
        if self.recycle_patches and not self.patch_dim:
            raise ValueError("recycle_patches=True feeds back the input-patch head's predictions; it needs "
                             "patch_dim > 0")
        if self.recycle_codes and not self.recycle_patches:
            raise ValueError("recycle_codes=True rides on the recycling pass; it needs recycle_patches=True")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks={self.tasks}: names must be unique")
        if self.norm_epsilon is None:
            object.__setattr__(self, "norm_epsilon", 1e-12 if self.block_style == "maskgit" else 1e-6)
        _check_choice("block_style", self.block_style, tuple(BLOCK_STYLES))
        _check_choice("position_embedding", self.position_embedding, POSITION_EMBEDDINGS)
        _check_choice("conditioning", self.conditioning, CONDITIONINGS)
        _check_choice("dtype", self.dtype, tuple(DTYPES))
        _check_choice("decode_layers", self.decode_layers, DECODE_LAYERS)
        _check_choice("context_position_encoding", self.context_position_encoding, ("learned", "rope"))
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by num_heads={self.num_heads}")
        if self.condition_input == "labels" and self.num_classes < 1:
            raise ValueError(f"conditioning={self.conditioning!r} needs num_classes >= 1, got {self.num_classes}")
        if self.conditioning in CONTEXT_CONDITIONINGS and self.context_dim < 1:
            raise ValueError(f"conditioning={self.conditioning!r} needs context_dim >= 1, got {self.context_dim}")
        if self.conditioning in ("adaln", "pooled_adaln") and self.block_style != "modern":
            raise ValueError(f"conditioning={self.conditioning!r} needs block_style='modern' "
                             "(the maskgit block has no adaLN)")
        if self.context_len < 0 or self.context_vocab_size < 0:
            raise ValueError(f"context_len={self.context_len}, context_vocab_size={self.context_vocab_size}: "
                             "expected >= 0")
        needs_len = self.conditioning == "prefix" or self.context_vocab_size > 0
        if needs_len and self.context_len < 1:
            raise ValueError(f"conditioning={self.conditioning!r} with context_vocab_size={self.context_vocab_size} "
                             "needs context_len >= 1 (the longest context sequence)")
        if self.context_vocab_size and self.conditioning not in CONTEXT_CONDITIONINGS:
            raise ValueError(f"context_vocab_size={self.context_vocab_size} needs one of the context conditionings "
                             f"{CONTEXT_CONDITIONINGS}, got conditioning={self.conditioning!r}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers}; expected >= 1")
        if self.rope and self.block_style != "modern":
            raise ValueError("rope=True needs block_style='modern' (the official maskgit block has no RoPE)")
        if self.rope and (self.hidden_dim // self.num_heads) // 2 < len(self.grid):
            raise ValueError(f"rope=True: head size {self.hidden_dim // self.num_heads} has fewer channel pairs than "
                             f"the grid's {len(self.grid)} axes")
        if self.relative_bias and self.block_style != "modern":
            raise ValueError("relative_bias=True needs block_style='modern' (the official maskgit block has none)")

    @property
    def spec(self) -> TokenSpec:
        """The token grid and vocabulary layout; class ids live in the vocabulary only for class_token."""
        in_vocab = self.conditioning == "class_token"
        return TokenSpec(self.grid, self.codebook_size, self.num_levels,
                         num_classes=self.num_classes if in_vocab else 0,
                         null_class=in_vocab and self.null_condition, num_tasks=len(self.tasks))

    @property
    def condition_input(self) -> str:
        """What the model is conditioned on: "labels" (class_token, adaln), "context"
        (cross_attention) or "none" — the one place that maps conditionings to inputs."""
        return condition_input(self.conditioning)

    @property
    def num_prefix(self) -> int:
        """Prefix tokens before the cells: the class token (class_token conditioning), then the task token."""
        return int(self.conditioning == "class_token") + int(bool(self.tasks))

    @property
    def num_segments(self) -> int:
        """Rows of the segment embedding: 2 (plain / condition token) for multi-task models, else 0."""
        return 2 if self.tasks else 0

    def task_id(self, name: str, argument: str = "task") -> int:
        """The index of task `name` in `tasks` (ValueError naming `argument` and the trained tasks)."""
        if name not in self.tasks:
            raise ValueError(f"{argument} {name!r}: the model was trained for the tasks {list(self.tasks) or 'none'}")
        return self.tasks.index(name)

    @property
    def seq_len(self) -> int:
        return self.num_prefix + math.prod(self.grid)

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @classmethod
    def maskgit_imagenet(cls, image_size: int = 256, **overrides) -> "TransformerConfig":
        """The official MaskGIT ImageNet transformer (24 × 768, 16 heads, MLP 3072, 1024 codes, 1000 classes)."""
        side = image_size // 16
        kwargs = dict(grid=(side, side), codebook_size=1024, num_classes=1000, num_layers=24, hidden_dim=768,
                      num_heads=16, mlp_dim=3072, block_style="maskgit", conditioning="class_token",
                      dropout_rate=0.1, attention_dropout_rate=0.1)
        kwargs.update(overrides)
        return cls(**kwargs)


# the keyword arguments of `sequence_logits` that hold one row per example
_PER_EXAMPLE = ("labels", "context", "context_mask", "drop_condition", "tasks", "segment_ids", "context_ids")


def digit_onehot(code_digits) -> np.ndarray:
    """float32 `[sum(code_digits), prod(code_digits)]`: row `offset_j + v` is 1 at the codes whose digit j
    is v (mixed radix, first digit fastest — FSQ's index order)."""
    codes = np.arange(math.prod(code_digits))
    rows, basis = [], 1
    for size in code_digits:
        rows.append(np.arange(size)[:, None] == (codes // basis) % size)
        basis *= size
    return np.concatenate(rows).astype(np.float32)


def condition_input(conditioning: str) -> str:
    """What a model with this `conditioning` takes: "labels", "context" or "none"."""
    if conditioning in CONTEXT_CONDITIONINGS:
        return "context"
    return {"class_token": "labels", "adaln": "labels"}.get(conditioning, "none")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r}; expected one of {choices}")


class MaskedTransformer(nnx.Module):
    """Bidirectional Transformer over a token grid; see the module docstring.

    `mgt.ar.ARTransformer` subclasses it: the same parameters and modules, run causally.
    """

    # Attention is bidirectional; the prefix (class token) has its own position row(s).
    causal_attention = False
    prefix_positions = True

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = cfg = config
        spec = cfg.spec
        d, k = cfg.hidden_dim, cfg.num_levels
        self.word_embeddings = make_param(rngs, TRUNC_NORMAL, (k, spec.vocab_size, d), ("levels", "vocab", "embed"))
        prefix_rows = cfg.num_prefix if self.prefix_positions else 0
        if cfg.position_embedding == "learned":
            self.position_embeddings = make_param(rngs, TRUNC_NORMAL, (prefix_rows + spec.num_cells, d),
                                                  ("pos", "embed"))
        else:
            self.axis_embeddings = nnx.List(
                [make_param(rngs, TRUNC_NORMAL, (g, d), ("pos", "embed")) for g in cfg.grid])
            self.prefix_embeddings = (make_param(rngs, TRUNC_NORMAL, (prefix_rows, d), ("pos", "embed"))
                                      if prefix_rows else None)
        self.embeddings_ln = LayerNorm(d, epsilon=cfg.norm_epsilon, rngs=rngs) if cfg.block_style == "maskgit" else None
        if cfg.conditioning == "adaln":
            self.class_embeddings = make_param(rngs, TRUNC_NORMAL, (cfg.num_classes + 1, d), ("vocab", "embed"))
        if cfg.condition_input == "context":
            self.null_context = make_param(rngs, TRUNC_NORMAL, (1, cfg.context_dim), (None, "context"))
        if cfg.context_vocab_size:
            from mgt.context_encoder import ContextEncoder

            self.context_encoder = ContextEncoder(cfg.context_vocab_size, cfg.context_len, cfg.context_dim,
                                                  num_layers=cfg.context_layers, num_heads=cfg.num_heads,
                                                  epsilon=cfg.norm_epsilon, dtype=cfg.compute_dtype,
                                                  positions=cfg.context_position_encoding, rngs=rngs)
        if cfg.conditioning in ("prefix", "pooled_adaln"):
            self.context_projection = Dense(cfg.context_dim, d, names=("context", "embed"), rngs=rngs)
        if cfg.conditioning == "prefix":
            self.context_positions = make_param(rngs, TRUNC_NORMAL, (cfg.context_len, d), ("pos", "embed"))
        if cfg.num_segments:
            self.segment_embeddings = make_param(rngs, TRUNC_NORMAL, (cfg.num_segments, d), (None, "embed"))
        if cfg.code_digits:
            n = sum(cfg.code_digits)
            self.digit_embeddings = make_param(rngs, TRUNC_NORMAL, (k, n, d), ("levels", None, "embed"))
            if cfg.block_style != "maskgit":  # (the maskgit head is tied to the embeddings, digits included)
                self.digit_output_kernel = make_param(rngs, TRUNC_NORMAL, (k, d, n), ("levels", "embed", None))

        block_cls = BLOCK_STYLES[cfg.block_style]

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs):
            return block_cls(cfg, rngs=rngs)

        self.blocks = make_blocks(rngs)

        if cfg.block_style == "maskgit":
            # The official MLM head: dense → GELU → LayerNorm → tied word embeddings + bias.
            self.mlm_dense = Dense(d, d, names=("embed", "mlp"), dtype=cfg.compute_dtype, rngs=rngs)
            self.mlm_ln = LayerNorm(d, epsilon=cfg.norm_epsilon, rngs=rngs)
            self.mlm_bias = make_param(rngs, ZEROS, (k, spec.vocab_size), ("levels", "vocab"))
        else:
            self.final_norm = RMSNorm(d, epsilon=cfg.norm_epsilon, rngs=rngs)
            self.output_kernel = make_param(rngs, TRUNC_NORMAL, (k, d, cfg.codebook_size), ("levels", "embed", "vocab"))
        if cfg.patch_dim:
            self.patch_kernel = make_param(rngs, TRUNC_NORMAL, (d, cfg.patch_dim), ("embed", None))
        if cfg.recycle_patches:  # zero: the model starts as one that ignores the sketch
            self.recycle_kernel = make_param(rngs, ZEROS, (cfg.patch_dim, d), (None, "embed"))
        if cfg.recycle_codes:
            self.recycle_code_table = make_param(rngs, ZEROS, (k, cfg.codebook_size, d), ("levels", "vocab", "embed"))

    # ------------------------------------------------------------------------------------------
    @property
    def spec(self) -> TokenSpec:
        return self.config.spec

    @scoped("transformer")
    def __call__(self, tokens, *, labels=None, context=None, context_mask=None, drop_condition=None,
                 tasks=None, segment_ids=None, deterministic: bool = True, dropout_rng=None, layers=None,
                 context_ids=None, with_patches: bool = False, sketch_guidance: float = 0.0):
        """Logits over the codes of every cell.

        Args:
          tokens: int32 `[B, *grid]` (K == 1) or `[B, *grid, K]`; codes in [0, V) or `spec.mask_id`.
          labels: int32 `[B]` class ids in [0, num_classes) (class_token / adaln conditioning).
          context: float `[B, S, context_dim]` (context conditionings); context_mask: bool `[B, S]`.
          context_ids: int32 `[B, S]` instead of `context` for a model with its own context encoder.
          drop_condition: bool `[B]` — use the learned null condition for these examples.
          tasks: int32 `[B]` task indices into `config.tasks` (multi-task models).
          segment_ids: int32 `[B, *grid]` (or `[B, *grid, K]`, reduced by max over levels): 1 where a
            cell shows a condition token (multi-task models; default all 0).
          deterministic: False enables dropout (needs `dropout_rng`).
          layers: the blocks' weights as `layer_states()` lays them out, to run the layers one after
            another over them instead of scanning the stacked blocks (decoding does; see there).
          with_patches: also return the auxiliary head's input patches (`config.patch_dim` > 0).
          sketch_guidance: s (`recycle_patches` models, inference): the logits l of the pass that reads the
            sketch are pushed away from those of the plain first pass, l + s · (l − l_plain), in the rows
            not marked by `drop_condition` (guidance's unconditional half keeps l) — the same network
            without its sketch serves as the weaker model of autoguidance (Karras et al. 2024). 0: off.
        Returns:
          float32 logits `[B, *grid(, K), V]`; with `with_patches`, `(logits, patches float32 [B, *grid, P])`.
        """
        cfg = self.config
        if with_patches and not cfg.patch_dim:
            raise ValueError("with_patches=True needs a model with an input-patch head (config.patch_dim > 0)")
        if sketch_guidance and not (cfg.recycle_patches and deterministic):
            raise ValueError(f"sketch_guidance={sketch_guidance} needs a model that recycles its sketch "
                             "(config.model.recycle_patches=True), at inference (deterministic=True)")
        b = tokens.shape[0]
        seq = tokens.reshape((b, -1, cfg.num_levels))  # [B, N, K]
        if segment_ids is not None:
            segment_ids = segment_ids.reshape((b, seq.shape[1], -1)).max(-1)  # [B, N]
        kwargs = dict(labels=labels, context=context, context_mask=context_mask, drop_condition=drop_condition,
                      tasks=tasks, segment_ids=segment_ids, deterministic=deterministic, context_ids=context_ids,
                      dropout_rng=dropout_rng, layers=layers, codes_only=True)
        feedback = None
        if cfg.recycle_patches:  # the first pass's sketch of every cell (its code logits are computed only for
            # sketch guidance or recycle_codes; otherwise XLA drops them)
            # in training only the first half of the batch gets a sketch (examples come shuffled): the other
            # half trains the first pass, and the first pass runs on half the batch
            h = b if deterministic else b // 2
            first_kwargs = dict(kwargs, **{k: v[:h] for k, v in kwargs.items() if k in _PER_EXAMPLE and v is not None})
            plain, first = self.sequence_logits(seq[:h], with_patches=True, **first_kwargs)
            feedback = jax.lax.stop_gradient(first[:, cfg.num_prefix:]) @ self.recycle_kernel[...]  # [h, N, D]
            if cfg.recycle_codes:  # + the expected code embedding at each masked (cell, level)
                probs = jax.nn.softmax(jax.lax.stop_gradient(plain[:, cfg.num_prefix:]), -1)  # [h, N, K, V]
                probs = probs * (seq[:h] == cfg.spec.mask_id)[..., None]
                feedback = feedback + jnp.einsum("bnkv,kvd->bnd", probs, self.recycle_code_table[...])
            feedback = jnp.pad(feedback, ((0, b - h), (0, 0), (0, 0)))  # [B, N, D]
        logits = self.sequence_logits(seq, with_patches=with_patches, feedback=feedback, **kwargs)
        logits, patches = logits if with_patches else (logits, None)
        if sketch_guidance:  # [B, P + N, K, V]; the plain pass ran on the whole batch (inference)
            guided = logits + float(sketch_guidance) * (logits - plain)
            logits = guided if drop_condition is None else jnp.where(
                jnp.asarray(drop_condition).reshape((b,) + (1,) * (logits.ndim - 1)), logits, guided)
        logits = logits[:, cfg.num_prefix:].reshape(tokens.shape + (cfg.codebook_size,))  # [B, *grid(, K), V]
        if patches is None:
            return logits
        grid = logits.shape[:len(cfg.grid) + 1]  # [B, *grid]
        return logits, patches[:, cfg.num_prefix:].reshape(grid + (cfg.patch_dim,))

    @scoped("transformer")
    def sequence_logits(self, seq, *, labels=None, context=None, context_mask=None, drop_condition=None,
                        tasks=None, segment_ids=None, deterministic=True, dropout_rng=None, prefix_ids=None,
                        layers=None, codes_only=False, context_ids=None, with_patches=False, feedback=None):
        """The forward pass on the flattened sequence.

        seq: int32 `[B, N, K]` cell tokens. With class_token conditioning the class prefix is built
        from `labels` (or given directly as `prefix_ids` int32 `[B]`, official layout); multi-task
        models add the task token of `tasks` int32 `[B]` and the segment embedding of `segment_ids`
        int32 `[B, N]`.
        Returns float32 `[B, P + N, K, vocab]` where vocab is the full input vocabulary for the maskgit
        head (codes, classes, mask — as the official model) and V for the modern head; with
        `codes_only` the maskgit head scores the V codes only (what sampling reads: half the head's work);
        with `with_patches`, `(logits, patches float32 [B, P + N, patch_dim])` (modern head only).
        `feedback` float `[B, N, D]` (`recycle_patches` models): a previous pass's sketch (its patches through
        `recycle_kernel`, with `recycle_codes` its code beliefs too), added to the cells' embeddings.
        """
        cfg = self.config
        dtype = cfg.compute_dtype
        keys = jax.random.split(dropout_rng if dropout_rng is not None else jax.random.key(0), cfg.num_layers + 2)
        if context_ids is not None:
            if context is not None:
                raise ValueError("pass context or context_ids, not both")
            context = self._encode_context(context_ids, context_mask, deterministic, keys[-2])
        x, cond_vec, context, context_mask = self._embed_sequence(seq, labels, context, context_mask, drop_condition,
                                                                  prefix_ids, tasks, segment_ids)
        if feedback is not None:
            x = x + jnp.pad(feedback, ((0, 0), (x.shape[1] - feedback.shape[1], 0), (0, 0))).astype(x.dtype)
        if cfg.block_style == "maskgit" and not deterministic:
            x = dropout(x, cfg.dropout_rate, keys[-1], deterministic)
        self_mask, prefix_len = None, 0
        if cfg.conditioning == "prefix":  # the in-context prefix: S projected context rows before the sequence
            prefix_len = context.shape[1]
            x, self_mask = self._prepend_context(x, context, context_mask)
            context = context_mask = None
        x = x.astype(dtype)
        x = self._run_blocks(x, keys[:cfg.num_layers], cond_vec, context, context_mask, deterministic, layers,
                             self_mask=self_mask)
        x = x[:, prefix_len:]  # no logits for the context prefix
        logits = self._head(x, cfg.codebook_size if codes_only else None).astype(jnp.float32)
        if with_patches:  # the same normalised hidden state the code head reads
            h = self.final_norm(x).astype(cfg.compute_dtype)
            return logits, (h @ self.patch_kernel[...].astype(cfg.compute_dtype)).astype(jnp.float32)
        return logits

    def _encode_context(self, context_ids, context_mask, deterministic, key):
        """int32 ids `[B, S]` → float `[B, S, context_dim]` with the model's own context encoder."""
        cfg = self.config
        if not cfg.context_vocab_size:
            raise ValueError("context_ids need a model with its own context encoder (context_vocab_size > 0); "
                             f"pass context float [B, S, {cfg.context_dim}]")
        return self.context_encoder(context_ids, context_mask, deterministic=deterministic, dropout_rng=key,
                                    dropout_rate=cfg.dropout_rate)

    def _prepend_context(self, x, context, context_mask):
        """`[B, S + L, D]`: the projected context (with its own position rows) before `x` `[B, L, D]`, and
        the self-attention key mask bool `[B, S + L]` (False at the context's padding)."""
        cfg = self.config
        s = context.shape[1]
        if s > cfg.context_len:
            raise ValueError(f"the context has {s} positions; the model's prefix holds context_len={cfg.context_len}")
        prefix = self.context_projection(context.astype(jnp.float32)) + self.context_positions[:s]
        b, length = x.shape[0], x.shape[1]
        mask = jnp.concatenate([context_mask.astype(bool), jnp.ones((b, length), bool)], 1)
        return jnp.concatenate([prefix.astype(x.dtype), x], 1), mask

    @scoped("embed")
    def _embed_sequence(self, seq, labels, context, context_mask, drop_condition, prefix_ids, tasks=None,
                        segment_ids=None):
        """Token (+ segment) + prefix (class, task) + position embeddings `[B, P + N, D]`, the adaLN
        condition vector `[B, D]` (or None) and the (null-substituted) cross-attention context."""
        cfg = self.config
        b, n, k = seq.shape
        table = self.token_table()  # [K, vocab, D]
        x = sum(jnp.take(table[level], seq[:, :, level], axis=0) for level in range(k))  # [B, N, D]
        if cfg.num_segments:
            segment_ids = jnp.zeros((b, n), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
            x = x + jnp.take(self.segment_embeddings[...], segment_ids, axis=0).astype(x.dtype)
        prefix = []  # [B] ids of the prefix tokens, in order
        cond_vec = None
        if cfg.conditioning == "class_token":
            prefix.append(self._class_ids(b, labels, drop_condition) if prefix_ids is None else prefix_ids)
        if cfg.tasks:
            prefix.append(self._task_ids(b, tasks))
        if prefix:
            x = jnp.concatenate([jnp.take(table[0], jnp.stack(prefix, 1), axis=0), x], axis=1)
        if cfg.conditioning == "adaln":
            ids = self._adaln_ids(b, labels, drop_condition)
            cond_vec = jnp.take(self.class_embeddings[...], ids, axis=0)  # [B, D]
        elif cfg.condition_input == "context":
            context, context_mask = self._context(b, context, context_mask, drop_condition)
            if cfg.conditioning == "pooled_adaln":  # the mean over the real positions, projected
                weights = context_mask.astype(jnp.float32)[..., None]
                pooled = (context.astype(jnp.float32) * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
                cond_vec = self.context_projection(pooled)  # [B, D]
                context = context_mask = None
        x = x + self._positions(n)[None].astype(x.dtype)
        if self.embeddings_ln is not None:
            x = self.embeddings_ln(x)
        return x, cond_vec, context, context_mask

    # ------------------------------------------------------------------------------------------
    def layer_states(self) -> tuple:
        """The blocks' weights as one `nnx.State` per layer (copies sliced out of the stacked blocks).

        Decoding calls the model at every step; scanning the stacked blocks slices every layer's
        weights out of the stack at each of them (7 % of an ImageNet-size generation on a CPU).
        Sliced once and passed as `layers=`, they are read in place at every step: the decoding loop
        slices them once per generation, a pipeline once for as long as its weights stay the same
        (`mgt.sampling.LayerWeightsCache`).
        """
        _, stacked = nnx.split(self.blocks)
        return tuple(jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(self.config.num_layers))

    @scoped("layers")
    def _run_blocks(self, x, keys, cond, context, context_mask, deterministic, layers=None, self_mask=None):
        """Run the blocks: scan the stacked blocks over their leading (layer) axis, or, given
        `layers` (see `layer_states`), one block after another over those per-layer weights.
        `self_mask` bool `[B, L]`: keys self-attention may attend to (the prefix conditioning's padding).

        A plain `lax.scan` over the blocks' split state rather than `nnx.scan`: the model can then be
        called inside any JAX transformation even when it was built outside it (e.g. a `lambda` that
        closes over the model and is passed to `decode`).
        """
        graphdef, stacked = nnx.split(self.blocks)
        causal = self.causal_attention

        grid_args = {"grid_positions": self._grid_positions(x.shape[1])} if self.config.rope else {}
        if self.config.relative_bias:
            grid_args["relative_index"] = relative_offset_index(self.config.grid, x.shape[1])

        def body(x, layer):
            layer_state, key = layer
            block = nnx.merge(graphdef, layer_state, copy=True)
            return block(x, key, cond, context, context_mask, deterministic, causal=causal, self_mask=self_mask,
                         **grid_args), None

        if layers is not None:
            if len(layers) != self.config.num_layers:
                raise ValueError(f"layers holds {len(layers)} layers' weights; the model has {self.config.num_layers}")
            for i, layer_state in enumerate(layers):
                x, _ = body(x, (layer_state, keys[i]))
            return x
        if self.config.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        x, _ = jax.lax.scan(body, x, (stacked, keys), unroll=self.config.scan_unroll)
        return x

    @scoped("head")
    def _head(self, x, vocab=None):
        """`[B, L, K, vocab]` logits; `vocab` limits the maskgit head to the first `vocab` ids."""
        cfg = self.config
        if cfg.block_style == "maskgit":
            h = jax.nn.gelu(self.mlm_dense(x), approximate=True)
            h = self.mlm_ln(h).astype(jnp.float32)
            # One matmul per level against that level's `[vocab, D]` table (contracting D in place):
            # a single einsum over `[K, vocab, D]` makes XLA copy the table transposed at every call.
            table, bias = self.token_table(), self.mlm_bias[...]
            if vocab is not None:
                table, bias = table[:, :vocab], bias[:, :vocab]
            logits = jnp.stack([h @ table[level].T for level in range(cfg.num_levels)], axis=2)
            return logits + bias
        h = self.final_norm(x).astype(cfg.compute_dtype)
        kernel = self.output_kernel[...]
        if cfg.code_digits:  # + one term per digit of each code: h @ (W + W_digit @ onehot)
            kernel = kernel + jnp.einsum("kdn,nv->kdv", self.digit_output_kernel[...], digit_onehot(cfg.code_digits))
        kernel = kernel.astype(cfg.compute_dtype)
        return jnp.stack([h @ kernel[level] for level in range(cfg.num_levels)], axis=2)

    def token_table(self):
        """`[K, vocab, D]`: every id's input embedding — with `code_digits`, each code's own row plus its
        digits' rows (the ids after the codes — classes, tasks, mask — have their own rows only)."""
        table = self.word_embeddings[...]
        if not self.config.code_digits:
            return table
        digits = jnp.einsum("nv,knd->kvd", digit_onehot(self.config.code_digits), self.digit_embeddings[...])
        return table.at[:, :self.config.codebook_size].add(digits.astype(table.dtype))

    def _grid_positions(self, length):
        """int32 `[length, A]`: the grid coordinates of the last num_cells rows (the cells, raster order);
        the rows before them (class / task / context prefix) sit at the origin."""
        cells = np.stack(np.unravel_index(np.arange(self.config.spec.num_cells), self.config.grid), -1)
        prefix = np.zeros((length - len(cells), cells.shape[1]), cells.dtype)
        return jnp.asarray(np.concatenate([prefix, cells]), jnp.int32)

    def _positions(self, n=None):
        """`[rows, D]`: the prefix's position rows (if any), then every cell's, raster order."""
        cfg = self.config
        n = math.prod(cfg.grid)
        if cfg.position_embedding == "learned":
            return self.position_embeddings[...]
        grid = cfg.grid
        pos = 0.0
        for axis, table in enumerate(self.axis_embeddings):
            shape = [1] * len(grid) + [cfg.hidden_dim]
            shape[axis] = grid[axis]
            pos = pos + table[...].reshape(shape)
        pos = jnp.broadcast_to(pos, grid + (cfg.hidden_dim,)).reshape(n, cfg.hidden_dim)
        if self.prefix_embeddings is not None:
            pos = jnp.concatenate([self.prefix_embeddings[...], pos], 0)
        return pos

    def _class_ids(self, b, labels, drop_condition):
        spec = self.config.spec
        if labels is None:
            raise ValueError("this model is class-conditional (conditioning='class_token'): pass labels int32 [B]")
        ids = spec.class_offset + jnp.asarray(labels, jnp.int32).reshape(b)
        if drop_condition is not None:
            if not spec.null_class:
                raise ValueError("drop_condition needs a model built with null_condition=True")
            ids = jnp.where(drop_condition, spec.null_class_id, ids)
        return ids

    def _task_ids(self, b, tasks):
        if tasks is None:
            raise ValueError(f"this model serves the tasks {list(self.config.tasks)}: pass tasks int32 [B] "
                             "(indices into config.tasks)")
        return self.config.spec.task_offset + jnp.asarray(tasks, jnp.int32).reshape(b)

    def _adaln_ids(self, b, labels, drop_condition):
        cfg = self.config
        if labels is None:
            raise ValueError("this model is class-conditional (conditioning='adaln'): pass labels int32 [B]")
        ids = jnp.asarray(labels, jnp.int32).reshape(b)
        if drop_condition is not None:
            if not cfg.null_condition:
                raise ValueError("drop_condition needs a model built with null_condition=True")
            ids = jnp.where(drop_condition, cfg.num_classes, ids)
        return ids

    def _context(self, b, context, context_mask, drop_condition):
        cfg = self.config
        if cfg.condition_input != "context":
            return None, None
        if context is None:
            raise ValueError(f"this model is conditioned on a context sequence (conditioning={cfg.conditioning!r}): "
                             f"pass context float [B, S, {cfg.context_dim}]")
        if context.shape[-1] != cfg.context_dim:
            raise ValueError(f"context has width {context.shape[-1]}; expected context_dim={cfg.context_dim}")
        s = context.shape[1]
        if context_mask is None:
            context_mask = jnp.ones((b, s), bool)
        if drop_condition is not None:
            if not cfg.null_condition:
                raise ValueError("drop_condition needs a model built with null_condition=True")
            null = jnp.broadcast_to(self.null_context[...].astype(context.dtype), (b, s, cfg.context_dim))
            first_only = jnp.arange(s)[None, :] == 0
            context = jnp.where(drop_condition[:, None, None], null, context)
            context_mask = jnp.where(drop_condition[:, None], first_only, context_mask)
        return context, context_mask

    # ------------------------------------------------------------------------------------------
    def check_inputs(self, tokens=None, labels=None, *, context=None, context_mask=None, tasks=None,
                     batch_size: int | None = None, allow_mask: bool = True, context_ids=None):
        """Validate concrete tokens and the condition (labels, or context and its mask; task indices
        of a multi-task model) on the host before compiling; raises ValueError naming the argument.
        `batch_size` checks the condition when no tokens are given."""
        import numpy as np

        if tokens is not None:
            self.spec.check_tokens(tokens, "tokens", allow_mask=allow_mask)
            batch_size = np.shape(tokens)[0]
        if self.config.tasks:
            m = len(self.config.tasks)
            if tasks is None:
                raise ValueError(f"tasks are required: the model serves the tasks {list(self.config.tasks)}; "
                                 "pass int32 [B] indices")
            t = np.asarray(tasks)
            if t.ndim != 1 or (batch_size is not None and t.shape != (batch_size,)) or \
                    not np.issubdtype(t.dtype, np.integer) or (t.size and (t.min() < 0 or t.max() >= m)):
                raise ValueError(f"tasks must be int32 [{batch_size if batch_size is not None else 'B'}] in [0, {m}) "
                                 f"(indices into {list(self.config.tasks)}); got shape {t.shape}, dtype {t.dtype}")
        if self.config.condition_input == "labels":
            if labels is None:
                raise ValueError(f"labels are required: this model is class-conditional "
                                 f"(conditioning={self.config.conditioning!r}); pass int32 [B]")
            lab = np.asarray(labels)
            if lab.ndim != 1 or (batch_size is not None and lab.shape != (batch_size,)):
                raise ValueError(f"labels has shape {lab.shape}; "
                                 f"expected ({batch_size if batch_size is not None else 'B'},)")
            if not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
            if lab.size and (lab.min() < 0 or lab.max() >= self.config.num_classes):
                raise ValueError(f"labels hold values outside [0, {self.config.num_classes}): "
                                 f"{sorted(set(lab.tolist()))[:5]}")
        cfg = self.config
        if cfg.condition_input == "context" and cfg.context_vocab_size:
            b = batch_size if batch_size is not None else "B"
            if context_ids is None:
                raise ValueError(f"context_ids are required: this model embeds its context itself; pass int32 [{b}, S]")
            ids = np.asarray(context_ids)
            shape = ids.shape
            if ids.ndim != 2 or (batch_size is not None and shape[0] != batch_size) or shape[1] > cfg.context_len or \
                    not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"context_ids has shape {shape}, dtype {ids.dtype}; expected int32 [{b}, S] with "
                                 f"S <= context_len={cfg.context_len}")
            if ids.size and (ids.min() < 0 or ids.max() >= cfg.context_vocab_size):
                raise ValueError(f"context_ids hold values outside [0, {cfg.context_vocab_size})")
        elif cfg.condition_input == "context":
            d = cfg.context_dim
            if context is None:
                raise ValueError(f"context is required: this model is conditioned on a context sequence "
                                 f"(conditioning={cfg.conditioning!r}); pass float [B, S, {d}]")
            shape = np.shape(context)
            if len(shape) != 3 or shape[-1] != d or (batch_size is not None and shape[0] != batch_size) or \
                    (cfg.conditioning == "prefix" and shape[1] > cfg.context_len):
                limit = f" with S <= context_len={cfg.context_len}" if cfg.conditioning == "prefix" else ""
                raise ValueError(f"context has shape {shape}; expected "
                                 f"[{batch_size if batch_size is not None else 'B'}, S, {d}]{limit}")
            if context_mask is not None and np.shape(context_mask) != shape[:2]:
                raise ValueError(f"context_mask has shape {np.shape(context_mask)}; expected {shape[:2]} (bool [B, S])")
