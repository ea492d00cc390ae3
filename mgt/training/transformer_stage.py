"""The transformer stage: masked-token training on tokens cached from the trained tokenizer.

The data set is tokenized once with the tokenizer's EMA weights (with `config.data.token_augmentations`
augmented copies — augmentation of the inputs happens before tokenizing) and cached in the workdir
with each example's condition (class labels and/or a context sequence, `mgt.Condition`); the cache
is rebuilt when the tokenizer checkpoint, the tokenizer config or the data config change, or when it
cannot be read. Each step masks a batch (schedule + structure), drops the condition of a random share
of the examples (classifier-free guidance) and minimises the masked cross-entropy.

Multi-task models (`config.model.tasks`, MAGVIT's COMMIT): the cache also holds every example's
condition tokens for each conditional task (its condition input tokenized, `mgt.commit`); each step
draws a task per example, shows its condition tokens at masked cells of its region with segment id 1
(`mgt.masking.commit_inputs`) and gives the model the task token.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import warnings
import zipfile

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mgt import commit, masking, sharding
from mgt.condition import GENERATION_TASK, Condition
from mgt.pipeline import GenerationPipeline
from mgt.profiling import scope
from mgt.sampling import decode_options
from mgt.tokenizers.base import apply_in_chunks
from mgt.training.builders import check_code_digits, transformer_config
from mgt.training.optim import make_optimizer
from mgt.training.state import Stage
from mgt.transformer import MaskedTransformer

OBJECTIVES = ("maskgit", "ar")
# bump when the cache's layout changes: old caches are then rebuilt rather than misread
TOKEN_CACHE_FORMAT = 3


def source_code_fingerprint(source) -> str:
    """sha256 (16 hex digits) of the file that defines `type(source)` — the code that makes its examples —
    or its qualified name where that file cannot be read (a class made at run time)."""
    cls = type(source)
    try:
        with open(inspect.getsourcefile(cls), "rb") as f:
            data = f.read()
    except (TypeError, OSError):
        data = f"{cls.__module__}.{cls.__qualname__}".encode()
    return hashlib.sha256(data).hexdigest()[:16]


def input_patch_dim(input_shape, grid) -> int:
    """Values per cell when an input of `input_shape` (`[*S, ...]`, S split by the token grid) is cut into
    the blocks its cells stand for; 0 when the grid does not divide the input's leading axes."""
    shape, grid = tuple(input_shape), tuple(grid)
    if len(shape) < len(grid) or any(s % g for s, g in zip(shape, grid)):
        return 0
    return math.prod(shape) // math.prod(grid)


def input_patches(inputs: np.ndarray, grid) -> np.ndarray:
    """`[n, *S, ...]` → `[n, *grid, P]`: the input block under each cell (leading axes split by the grid,
    the block's values — and any trailing axes, e.g. channels — flattened in row-major order)."""
    n, grid = inputs.shape[0], tuple(grid)
    a = len(grid)
    split = [v for s, g in zip(inputs.shape[1:a + 1], grid) for v in (g, s // g)]
    x = inputs.reshape((n, *split, *inputs.shape[a + 1:]))
    order = [0] + [1 + 2 * i for i in range(a)] + [2 + 2 * i for i in range(a)] + list(range(1 + 2 * a, x.ndim))
    return x.transpose(order).reshape((n, *grid, -1))


class TokenSource:
    """grain source over cached tokens: records `{"tokens": int32 [*grid(, K)], <condition keys>: ...}`
    (the condition's batch keys, `mgt.condition.BATCH_KEYS`)."""

    def __init__(self, tokens: np.ndarray, condition: dict[str, np.ndarray]):
        self.tokens, self.condition = tokens, condition

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return {"tokens": self.tokens[i], **{k: v[i] for k, v in self.condition.items()}}


class TransformerStage(Stage):
    name = "transformer"

    def __init__(self, config, task, mesh, *, workdir: str, tokenizer, tokenizer_step: int, quiet=False):
        super().__init__(config, task, mesh, workdir=workdir, train_config=config.transformer_train,
                         config_name="transformer_train")
        self.tokenizer, self.tokenizer_step, self.quiet = tokenizer, tokenizer_step, quiet
        tc = self.train_cfg
        self.spec_in = tokenizer.token_spec(task.input_shape)
        self.text = getattr(task, "text", None)  # a text-conditioned config's TextConditioner
        if self.text is not None:
            self.text.use_workdir(workdir)
        self.model_config = transformer_config(config, self.spec_in, self.text)
        check_code_digits(self.model_config, tokenizer)
        self.objective = config.model.get("objective", "maskgit")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"config.model.objective={self.objective!r}; expected one of {OBJECTIVES}")
        self.tx = make_optimizer(tc, self.total_steps)
        self.patch_loss = float(tc.get("patch_loss", 0.0))
        patch_dim = self.model_config.patch_dim
        if self.patch_loss < 0 or (self.patch_loss > 0) != (patch_dim > 0):
            raise ValueError(f"config.transformer_train.patch_loss={self.patch_loss} with config.model.patch_dim="
                             f"{patch_dim}: expected both > 0 (the input-patch head and its loss) or both 0")
        if patch_dim:
            expected = input_patch_dim(task.input_shape, self.spec_in.grid)
            if patch_dim != expected:
                cells = (f"gives cells of {expected} values" if expected else
                         "does not split into equal blocks (set it to 0)")
                raise ValueError(f"config.model.patch_dim={patch_dim}: the input {tuple(task.input_shape)} on the "
                                 f"token grid {self.spec_in.grid} {cells}")
            if self.objective != "maskgit":
                raise ValueError(f"config.transformer_train.patch_loss={self.patch_loss}: the input-patch head "
                                 f"trains with objective 'maskgit', not {self.objective!r}")
        for name, choices in (("mask_structure", masking.STRUCTURES), ("loss_on", ("masked", "all"))):
            if tc[name] not in choices:
                raise ValueError(f"config.transformer_train.{name}={tc[name]!r}; expected one of {tuple(choices)}")
        tasks = self.model_config.tasks
        if tasks and self.objective != "maskgit":
            raise ValueError(f"config.model.tasks={tasks}: conditional tasks need objective 'maskgit'")
        # bool [M, *grid]: each task's condition region (errors name the tasks the modality offers)
        self.task_regions = commit.task_regions(tasks, task.conditional_task, self.spec_in.grid) if tasks else None
        weights = tuple(float(w) for w in (tc.get("task_weights", ()) or ()))
        if weights and (len(weights) != len(tasks) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"config.transformer_train.task_weights={weights}: expected one weight >= 0 per task of "
                             f"config.model.tasks {tasks} (not all 0), or () for uniform")
        self.task_logits = np.log(np.asarray(weights or (1.0,) * len(tasks), np.float32)) if tasks else None
        self.prompt_fraction, self.mask_span = float(tc.get("prompt_fraction", 0.0)), int(tc.get("mask_span", 0))
        if not 0.0 <= self.prompt_fraction < 1.0:
            raise ValueError(f"config.transformer_train.prompt_fraction={self.prompt_fraction}: expected 0 <= x < 1")
        if self.mask_span < 0:
            raise ValueError(f"config.transformer_train.mask_span={self.mask_span}: expected >= 0 (0: no spans)")
        if (self.prompt_fraction or self.mask_span) and tc.mask_structure != "levelwise":
            raise ValueError("config.transformer_train.prompt_fraction / mask_span apply to "
                             f"mask_structure='levelwise', not {tc.mask_structure!r}")
        decode_options(config.sample, self.spec_in.num_levels)  # sampling options checked before training
        if float(config.sample.get("sketch_guidance", 0.0)) and not self.model_config.recycle_patches:
            raise ValueError(f"config.sample.sketch_guidance={config.sample.sketch_guidance} needs a model that "
                             "recycles its sketch (config.model.recycle_patches=True); set it to 0")
        self.setup_model()

    def make_model(self):
        if self.objective == "ar":
            from mgt.ar import ARTransformer

            return ARTransformer(self.model_config, rngs=nnx.Rngs(int(self.config.seed)))
        return MaskedTransformer(self.model_config, rngs=nnx.Rngs(int(self.config.seed)))

    # ---- data -----------------------------------------------------------------------------------
    def token_cache_path(self, source) -> str:
        """The cache file for this config's tokens; `source` (the training source) adds the code that makes
        its data to the key, so that a changed generator under the same config does not reuse old tokens."""
        fingerprint = hashlib.sha256(json.dumps({
            "tokenizer": self.config.tokenizer.to_dict(), "tokenizer_step": self.tokenizer_step,
            "data": {k: v for k, v in self.config.data.to_dict().items() if k != "num_workers"},
            "source_code": source_code_fingerprint(source),
            "text": self.text.fingerprint() if self.text is not None else None,
            "seed": int(self.config.seed), "format": TOKEN_CACHE_FORMAT,
            **({"patches": True} if self.model_config.patch_dim else {})}, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        return os.path.join(self.workdir, "transformer", f"tokens_{fingerprint}.npz")

    def token_cache(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """`(tokens int32 [N, *grid(, K)], condition arrays by batch key)`, built once and cached in the
        workdir. A cache that cannot be read (truncated, damaged) is rebuilt with one warning."""
        source = self.task.source("train")
        path = self.token_cache_path(source)
        # a cache of text ids whose vocabulary is gone (deleted) is rebuilt with a new vocabulary
        if os.path.exists(path) and not (self.text is not None and self.text.needs_fit):
            try:
                with np.load(path) as f:
                    return f["tokens"], {k: f[k] for k in f.files if k != "tokens"}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                warnings.warn(f"the token cache {path} cannot be read ({type(e).__name__}: {e}); rebuilding it",
                              stacklevel=2)
        self.task.check_source(source)
        copies = max(1, int(self.config.data.get("token_augmentations", 1)))
        key, chunk = self.task.input_key, 64
        all_tokens, all_conditions, texts = [], [], []
        tasks = self.model_config.tasks
        conditional = [None if name == GENERATION_TASK else self.task.conditional_task(name) for name in tasks]
        # every batch is padded to `chunk`: one compiled shape (the tokenizer's weights are an argument)
        tokenize = functools.partial(apply_in_chunks, self.tokenizer, "encode", chunk=chunk)

        for copy in range(copies):
            # copy 0 is the data as it is; further copies get the training augmentation, one ordered pass
            it = self.task.pipeline(source, batch_size=chunk, train=False, seed=int(self.config.seed) + copy,
                                    augment=copy > 0)
            for batch in it:
                inputs = np.asarray(batch[key])
                tokens = tokenize(inputs)
                all_tokens.append(tokens)
                fields = {k: np.asarray(v) for k, v in self.task.condition(batch).to_batch().items()}
                if self.model_config.patch_dim:  # the auxiliary head's targets: each cell's input block
                    fields["patches"] = input_patches(inputs, self.spec_in.grid).astype(np.float16)
                if self.text is not None:
                    if "text" not in batch:
                        raise ValueError(f"config.text.encoder={self.text.name!r} needs captions, but the records of "
                                         f"config.data.source={self.config.data.source!r} carry no 'text'")
                    texts += [str(t) for t in np.asarray(batch["text"]).reshape(-1)]
                    fields.pop("text", None)
                if tasks:  # int32 [n, M, *grid]: each task's condition tokens (generation: zeros, never shown)
                    fields["condition_tokens"] = np.stack(
                        [np.zeros_like(tokens) if c is None else tokenize(c.condition_inputs(inputs))
                         for c in conditional], axis=1)
                all_conditions.append(fields)
        tokens = np.concatenate(all_tokens)
        condition = {k: np.concatenate([c[k] for c in all_conditions]) for k in all_conditions[0]}
        if "label" in condition:
            condition["label"] = condition["label"].astype(np.int32)
        if self.text is not None:  # the captions → the model's context, once (a frozen encoder costs no step)
            # a BPE vocabulary: fitted to the captions (the same in every process), saved in the workdir
            self.text.fit(texts, save=sharding.is_writer())
            condition.update(self.text.arrays(texts, progress=not self.quiet))
            condition["text"] = np.asarray(texts, str)
        if not sharding.is_writer():  # every process tokenizes the same data; one writes the cache
            return tokens, condition
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        for old in os.listdir(folder):
            if old.startswith("tokens_") and old.endswith(".npz"):
                os.remove(os.path.join(folder, old))
        tmp = path + ".tmp.npz"
        np.savez(tmp, tokens=tokens, **condition)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
        if not self.quiet:
            print(f"[transformer] tokenized {len(tokens)} examples ({copies} cop{'y' if copies == 1 else 'ies'}) "
                  f"→ {tokens.shape[1:]} tokens each; cached in {path}", flush=True)
        return tokens, condition

    def data_iterator(self):
        tokens, condition = self.token_cache()
        ds = grain.MapDataset.source(TokenSource(tokens, condition))
        if jax.process_count() > 1:
            ds = ds[jax.process_index()::jax.process_count()]
        batch = int(self.train_cfg.batch_size) // jax.process_count()
        ds = ds.seed(int(self.config.seed)).shuffle().repeat(None).batch(batch, drop_remainder=True)
        return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)))

    def batch_to_device(self, batch):
        # only what the model takes travels to the devices
        wanted = Condition.from_batch(batch).for_model(self.model_config).to_batch()
        if self.model_config.tasks:
            wanted["condition_tokens"] = batch["condition_tokens"]
        if self.model_config.patch_dim:
            wanted["patches"] = batch["patches"]
        return sharding.shard_batch({"tokens": batch["tokens"], **wanted}, self.mesh)

    # ---- step -----------------------------------------------------------------------------------
    def _train_step(self, state, batch, rng):
        tc, cfg = self.train_cfg, self.model_config
        tokens = batch["tokens"]
        b = tokens.shape[0]
        k_mask, k_drop, k_dropout, k_task = jax.random.split(rng, 4)
        cond = Condition.from_batch(batch).for_model(cfg)
        if cfg.null_condition and float(tc.condition_dropout) > 0 and cfg.condition_input != "none":
            cond = cond.with_drop(jax.random.bernoulli(k_drop, float(tc.condition_dropout), (b,)))

        if self.objective == "ar":
            from mgt.ar import ar_loss

            def loss_fn(params):
                model = nnx.merge(self.graphdef, params, state["rest"], copy=True)
                loss = ar_loss(model, tokens, **cond.model_kwargs(), deterministic=False, dropout_rng=k_dropout,
                               label_smoothing=float(tc.label_smoothing))
                return loss, (jnp.zeros(()), jnp.zeros(()), nnx.state(model, nnx.Not(nnx.Param)))
        else:
            mask, loss_mask = masking.make_training_mask(k_mask, cfg.spec, b, structure=tc.mask_structure,
                                                         schedule=tc.mask_schedule, block=tc.get("mask_block", 2),
                                                         prompt_fraction=self.prompt_fraction, span=self.mask_span)
            extra = {}
            if cfg.tasks:  # COMMIT: a task per example; its condition tokens shown inside its region
                task_ids = jax.random.categorical(k_task, jnp.asarray(self.task_logits), shape=(b,)).astype(jnp.int32)
                region = jnp.asarray(self.task_regions)[task_ids]  # [B, *grid]
                shape = (b, 1) + (1,) * (tokens.ndim - 1)
                cond_tokens = jnp.take_along_axis(batch["condition_tokens"], task_ids.reshape(shape), axis=1)[:, 0]
                inputs, extra["segment_ids"] = masking.commit_inputs(tokens, mask, cond_tokens, region,
                                                                      cfg.spec.mask_id)
                cond = cond.replace(tasks=task_ids)
            else:
                inputs = masking.apply_mask(tokens, mask, cfg.spec.mask_id)

            def loss_fn(params):
                model = nnx.merge(self.graphdef, params, state["rest"], copy=True)
                out = model(inputs, **cond.model_kwargs(), **extra, deterministic=False, dropout_rng=k_dropout,
                            with_patches=self.patch_loss > 0)
                logits, patches = out if self.patch_loss > 0 else (out, None)
                where = loss_mask if tc.loss_on == "masked" else None
                with scope("loss"):
                    loss = masking.masked_cross_entropy(logits, tokens, where,
                                                        label_smoothing=float(tc.label_smoothing))
                    patch_mse = jnp.zeros(())
                    if patches is not None:  # on the cells with a masked code
                        cells = loss_mask if loss_mask.ndim == patches.ndim - 1 else loss_mask.any(-1)
                        err = jnp.mean(jnp.square(patches - batch["patches"].astype(jnp.float32)), -1)
                        patch_mse = jnp.sum(err * cells) / jnp.maximum(cells.sum(), 1)
                        loss = loss + self.patch_loss * patch_mse
                    hit = (logits.argmax(-1) == tokens) & loss_mask
                    acc = hit.sum() / jnp.maximum(loss_mask.sum(), 1)
                return loss, (acc, patch_mse, nnx.state(model, nnx.Not(nnx.Param)))

        (loss, (acc, patch_mse, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        new = dict(state, **self._update(state, grads, state["params"], rest, float(tc.ema_decay)))
        metrics = {"loss": loss, "masked_accuracy": acc, "grad_norm": optax.global_norm(grads)}
        if self.patch_loss > 0:  # the auxiliary term alone (`loss` holds it weighted)
            metrics["patch_mse"] = patch_mse
        return new, metrics

    # ---- samples --------------------------------------------------------------------------------
    @property
    def final_samples_path(self) -> str | None:
        """Where the samples of the finished run go (None: the AR baseline, or `sample.per_class` 0)."""
        if self.objective != "maskgit" or int(self.config.sample.per_class) <= 0:
            return None
        if self.model_config.tasks and GENERATION_TASK not in self.model_config.tasks:
            return None  # conditional tasks only: samples need inputs (mgt edit)
        return os.path.join(self.workdir, "samples", f"final{self.task.output_extensions[0]}")

    def sample_condition(self) -> tuple[Condition, int]:
        """What the training-time samples are conditioned on: every class `sample.per_class` times, the
        first cached examples' context, or nothing (`per_class` unconditional samples)."""
        per = int(self.config.sample.per_class)
        kind = self.model_config.condition_input
        if kind == "labels":
            labels = self.task.class_labels(per)
            return Condition(labels=labels), len(labels)
        if kind == "context":
            tokens, cached = self.token_cache()
            n = min(8 * per, len(tokens))
            # the whole condition (labels too, for the task's writer and metrics); the model keeps its part
            return Condition.from_batch(cached).take(slice(0, n)), n
        return Condition(), per

    def write_samples(self, state, step, writer=None, *, path=None) -> dict:
        """Samples from the EMA weights (see `sample_condition`) → the task's sample metrics.

        `path`: where the grid goes — None for `samples/transformer_step_<step>`, or a list of paths
        (None among them standing for that one), all written from one generation."""
        if self.objective == "ar":
            return {}  # the AR baseline is sampled with mgt.ar.ar_sample (see benchmarks)
        if self.model_config.tasks and GENERATION_TASK not in self.model_config.tasks:
            return {}  # no plain generation task to sample; the conditional tasks are run by `mgt edit`
        cond, n = self.sample_condition()
        pipe = GenerationPipeline(self.model_from_state(state), self.tokenizer)
        options = decode_options(self.config.sample, self.spec_in.num_levels)
        if not self.model_config.null_condition:
            options["guidance_scale"] = 0.0
        out = pipe.generate(jax.random.key(int(self.config.seed)), condition=cond, batch_size=n, **options)
        out = sharding.to_host(out)  # every process generates (SPMD); one writes the grid
        ext = self.task.output_extensions[0]
        step_path = os.path.join(self.workdir, "samples", f"transformer_step_{step:06d}{ext}")
        paths = [p or step_path for p in (path if isinstance(path, (list, tuple)) else [path])]
        if sharding.is_writer():
            for p in paths:
                self.task.write_samples(p, out, cond)
                if not self.quiet:
                    print(f"[transformer] samples written to {p}", flush=True)
        return {f"samples/{k}": v for k, v in self.task.sample_metrics(out, cond).items()}
