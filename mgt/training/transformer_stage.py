"""The transformer stage: masked-token training on tokens cached from the trained tokenizer.

The data set is tokenized once with the tokenizer's EMA weights (with `config.data.token_augmentations`
augmented copies — augmentation that changes pixels happens before tokenizing) and cached in the
workdir; the cache is rebuilt when the tokenizer checkpoint, the tokenizer config or the data config
change. Each step masks a batch (schedule + structure), drops the condition of a random share of the
examples (classifier-free guidance) and minimises the masked cross-entropy.
"""

from __future__ import annotations

import hashlib
import json
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mgt import masking, sharding
from mgt.pipeline import GenerationPipeline
from mgt.profiling import scope
from mgt.training.builders import transformer_config
from mgt.tokenizers.losses import ema_update
from mgt.training.optim import make_optimizer
from mgt.transformer import MaskedTransformer


class TokenSource:
    """grain source over cached tokens: records `{"tokens": int32 [*grid(, K)], "label": int32}`."""

    def __init__(self, tokens: np.ndarray, labels: np.ndarray):
        self.tokens, self.labels = tokens, labels

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return {"tokens": self.tokens[i], "label": self.labels[i]}


class TransformerStage:
    name = "transformer"

    def __init__(self, config, task, mesh, *, workdir: str, tokenizer, tokenizer_step: int, quiet=False):
        self.config, self.task, self.mesh, self.workdir = config, task, mesh, workdir
        self.tokenizer, self.tokenizer_step, self.quiet = tokenizer, tokenizer_step, quiet
        self.train_cfg = tc = config.transformer_train
        self.total_steps = int(tc.steps)
        self.spec_in = tokenizer.token_spec(task.input_shape)
        self.model_config = transformer_config(config, self.spec_in)
        self.objective = config.model.get("objective", "maskgit")
        if self.objective not in ("maskgit", "ar"):
            raise ValueError(f"config.model.objective={self.objective!r}; expected 'maskgit' or 'ar'")
        self.tx = make_optimizer(tc, self.total_steps)
        batch = int(tc.batch_size)
        if batch % mesh.size:
            raise ValueError(f"config.transformer_train.batch_size={batch} must be divisible by the {mesh.size} devices")
        for name, choices in (("mask_structure", masking.STRUCTURES), ("loss_on", ("masked", "all"))):
            if tc[name] not in choices:
                raise ValueError(f"config.transformer_train.{name}={tc[name]!r}; expected one of {tuple(choices)}")
        self.graphdef = nnx.graphdef(sharding.abstract_model(self.make_model))
        # the old state is donated: peak memory holds one copy of weights, optimiser state and EMA
        self.train_step = jax.jit(self._train_step, donate_argnums=0)

    def make_model(self):
        if self.objective == "ar":
            from mgt.ar import ARTransformer

            return ARTransformer(self.model_config, rngs=nnx.Rngs(int(self.config.seed)))
        return MaskedTransformer(self.model_config, rngs=nnx.Rngs(int(self.config.seed)))

    def init_state(self):
        model = sharding.create_sharded(self.make_model, self.mesh)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return {"params": params, "rest": rest, "opt": jax.jit(self.tx.init)(params),
                "ema": jax.tree.map(jnp.copy, params), "step": jnp.zeros((), jnp.int32)}

    def inference_target(self):
        """Restore target for sampling: EMA weights and non-parameter state only."""
        params, rest = sharding.abstract_state_on_mesh(self.make_model, self.mesh)
        return {"ema": params, "rest": rest}

    def model_from_state(self, state, *, ema: bool = True):
        return nnx.merge(self.graphdef, state["ema"] if ema else state["params"], state["rest"], copy=True)

    # ---- data -----------------------------------------------------------------------------------
    def token_cache(self):
        """`(tokens int32 [N, *grid], labels int32 [N])`, built once and cached in the workdir."""
        fingerprint = hashlib.sha256(json.dumps({
            "tokenizer": self.config.tokenizer.to_dict(), "tokenizer_step": self.tokenizer_step,
            "data": {k: v for k, v in self.config.data.to_dict().items() if k != "num_workers"},
            "seed": int(self.config.seed)}, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = os.path.join(self.workdir, "transformer", f"tokens_{fingerprint}.npz")
        if os.path.exists(path):
            with np.load(path) as f:
                return f["tokens"], f["labels"]
        source = self.task.source("train")
        self.task.check_source(source)
        copies = max(1, int(self.config.data.get("token_augmentations", 1)))
        graphdef, state = nnx.split(self.tokenizer)
        encode = jax.jit(lambda s, x: nnx.merge(graphdef, s, copy=True).encode(x))
        all_tokens, all_labels = [], []
        for copy in range(copies):
            # copy 0 is the data as it is; further copies get the training augmentation, one ordered pass
            it = self.task.pipeline(source, batch_size=64, train=False, seed=int(self.config.seed) + copy,
                                    augment=copy > 0)
            for batch in it:
                images = batch["image"]
                n = len(images)
                if n < 64:  # pad the last batch to keep one compiled shape
                    images = np.concatenate([images, np.zeros((64 - n,) + images.shape[1:], images.dtype)])
                all_tokens.append(np.asarray(encode(state, jnp.asarray(images)))[:n])
                all_labels.append(np.asarray(batch["label"], np.int32))
        tokens, labels = np.concatenate(all_tokens), np.concatenate(all_labels)
        if not sharding.is_writer():  # every process tokenizes the same data; one writes the cache
            return tokens, labels
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for old in os.listdir(os.path.dirname(path)):
            if old.startswith("tokens_") and old.endswith(".npz"):
                os.remove(os.path.join(os.path.dirname(path), old))
        tmp = path + ".tmp.npz"
        np.savez(tmp, tokens=tokens, labels=labels)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
        if not self.quiet:
            print(f"[transformer] tokenized {len(tokens)} examples ({copies} cop{'y' if copies == 1 else 'ies'}) "
                  f"→ {tokens.shape[1:]} tokens each; cached in {path}", flush=True)
        return tokens, labels

    def data_iterator(self):
        tokens, labels = self.token_cache()
        ds = grain.MapDataset.source(TokenSource(tokens, labels))
        if jax.process_count() > 1:
            ds = ds[jax.process_index()::jax.process_count()]
        ds = ds.seed(int(self.config.seed)).shuffle().repeat(None).batch(int(self.train_cfg.batch_size) // jax.process_count(),
                                                                             drop_remainder=True)
        return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)))

    def batch_to_device(self, batch):
        return sharding.shard_batch({"tokens": batch["tokens"], "label": batch["label"]}, self.mesh)

    # ---- step -----------------------------------------------------------------------------------
    def _train_step(self, state, batch, rng):
        tc, cfg = self.train_cfg, self.model_config
        tokens, labels = batch["tokens"], batch["label"]
        b = tokens.shape[0]
        k_mask, k_drop, k_dropout = jax.random.split(rng, 3)
        conditional = cfg.conditioning in ("class_token", "adaln")
        drop = None
        if cfg.null_condition and float(tc.condition_dropout) > 0:
            drop = jax.random.bernoulli(k_drop, float(tc.condition_dropout), (b,))

        if self.objective == "ar":
            from mgt.ar import ar_loss

            def loss_fn(params):
                model = nnx.merge(self.graphdef, params, state["rest"], copy=True)
                loss = ar_loss(model, tokens, labels if conditional else None, drop_condition=drop,
                               deterministic=False, dropout_rng=k_dropout,
                               label_smoothing=float(tc.label_smoothing))
                return loss, (jnp.zeros(()), nnx.state(model, nnx.Not(nnx.Param)))
        else:
            mask, loss_mask = masking.make_training_mask(k_mask, cfg.spec, b, structure=tc.mask_structure,
                                                         schedule=tc.mask_schedule)
            inputs = masking.apply_mask(tokens, mask, cfg.spec.mask_id)

            def loss_fn(params):
                model = nnx.merge(self.graphdef, params, state["rest"], copy=True)
                logits = model(inputs, labels=labels if conditional else None, drop_condition=drop,
                               deterministic=False, dropout_rng=k_dropout)
                where = loss_mask if tc.loss_on == "masked" else None
                with scope("loss"):
                    loss = masking.masked_cross_entropy(logits, tokens, where, label_smoothing=float(tc.label_smoothing))
                    hit = (logits.argmax(-1) == tokens) & loss_mask
                    acc = hit.sum() / jnp.maximum(loss_mask.sum(), 1)
                return loss, (acc, nnx.state(model, nnx.Not(nnx.Param)))

        (loss, (acc, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        with scope("optimizer"):
            updates, opt = self.tx.update(grads, state["opt"], state["params"])
            params = optax.apply_updates(state["params"], updates)
        new = dict(state, params=params, rest=rest, opt=opt, step=state["step"] + 1,
                   ema=ema_update(state["ema"], params, float(tc.ema_decay)))
        return new, {"loss": loss, "masked_accuracy": acc, "grad_norm": optax.global_norm(grads)}

    # ---- samples --------------------------------------------------------------------------------
    def write_samples(self, state, step, writer=None, *, path=None):
        """A grid with `config.sample.per_class` samples of each class (EMA weights)."""
        if self.objective == "ar":
            return None  # the AR baseline is sampled with mgt.ar.ar_sample (see benchmarks)
        s = self.config.sample
        model = self.model_from_state(state)
        conditional = self.model_config.conditioning in ("class_token", "adaln")
        num_classes = self.model_config.num_classes if conditional else 1
        per = int(s.per_class)
        labels = np.repeat(np.arange(num_classes, dtype=np.int32), per) if conditional else None
        n = num_classes * per
        pipe = GenerationPipeline(model, self.tokenizer)
        out = pipe.generate(jax.random.key(int(self.config.seed)), labels=labels, batch_size=n,
                            num_steps=int(s.num_steps), choice_temperature=float(s.choice_temperature),
                            temperature=float(s.temperature),
                            guidance_scale=float(s.guidance) if self.model_config.null_condition else 0.0)
        out = sharding.to_host(out)  # every process generates (SPMD); one writes the grid
        path = path or os.path.join(self.workdir, "samples", f"transformer_step_{step:06d}.png")
        if sharding.is_writer():
            self.task.write_samples(path, out, labels, ncols=per * (2 if per < 5 else 1) if conditional else None)
        return path
