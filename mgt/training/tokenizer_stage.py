"""The tokenizer stage: the tokenizer's own losses plus its objective's terms (discriminator, perceptual).

Generator step: `tokenizer.training_losses` (reconstruction and the quantizer's terms) + the
objective's `generator_losses` (for the VQGAN: perceptual weight · perceptual distance + adversarial
weight · warm-up(step) · non-saturating GAN loss). Discriminator step, when the objective has one:
its `discriminator_losses` (for the VQGAN: GAN loss + R1 + LeCAM). The objective comes from the
tokenizer class (`mgt.tokenizers.base.training_objective`): this stage knows nothing of what the
inputs are. EMA of the generator's weights is kept for encoding and decoding later.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mgt import sharding
from mgt.profiling import scope
from mgt.tokenizers.base import training_objective
from mgt.training.builders import make_tokenizer
from mgt.training.optim import make_optimizer
from mgt.training.state import Stage, init_optimizer


class TokenizerStage(Stage):
    name = "tokenizer"

    def __init__(self, config, task, mesh, *, workdir: str):
        super().__init__(config, task, mesh, workdir=workdir, train_config=config.tokenizer_train,
                         config_name="tokenizer_train")
        tc = self.train_cfg
        self.tx = make_optimizer(tc, self.total_steps)
        # the discriminator's seed is the experiment's + 1 (independent of the tokenizer's initialisation)
        self.objective = training_objective(config.tokenizer.name, tc, task.input_shape, int(config.seed) + 1)
        self.adversarial = bool(self.objective.has_discriminator)
        if self.adversarial:
            self.disc_tx = optax.adam(float(tc.discriminator_learning_rate), b1=float(tc.b1), b2=float(tc.b2))
            self._disc_abstract = sharding.abstract_model(self.objective.make_discriminator)
            self.disc_graphdef = nnx.graphdef(self._disc_abstract)
        self.setup_model()

    # ---- state ----------------------------------------------------------------------------------
    def make_model(self):
        return make_tokenizer(self.config)

    def init_state(self, model=None):
        state = super().init_state(model)
        if self.adversarial:
            disc = sharding.create_sharded(self.objective.make_discriminator, self.mesh, abstract=self._disc_abstract)
            dparams = nnx.state(disc, nnx.Param)
            state.update(disc_params=dparams, disc_opt=init_optimizer(self.disc_tx, dparams, self.mesh),
                         **self.objective.init_state())
        source = self.config.tokenizer.get("inflate_from")
        if source and model is None:
            state = self._inflated(state, source)
        return state

    def _inflated(self, state: dict, source: str) -> dict:
        """`state` with generator, EMA and discriminator weights inflated from the (lower-dimensional)
        tokenizer of the workdir `source` (`mgt.tokenizers.inflation`); optimiser states stay fresh."""
        from mgt.tokenizers import inflation
        from mgt.training.trainer import load_config

        theirs = str(load_config(source).tokenizer.get("norm", "group"))
        ours = str(self.config.tokenizer.get("norm", "group"))
        if theirs != ours:  # the same parameters would compute something else
            raise ValueError(f"config.tokenizer.norm={ours!r}, but the tokenizer of config.tokenizer.inflate_from="
                             f"{source!r} was trained with norm={theirs!r}; set config.tokenizer.norm={theirs!r}")
        given = inflation.read_workdir_tokenizer(source)
        mode = str(self.config.tokenizer.get("inflate_mode") or "central")
        causal = bool(self.config.tokenizer.get("causal", False))
        for key in ("params", "ema", "disc_params"):
            if key not in state or (key == "disc_params" and not given[key]):
                continue
            leaves = inflation.flat_paths(state[key].to_pure_dict())
            values = inflation.inflate_tree(given[key], {p: leaf.shape for p, leaf in leaves.items()}, mode=mode,
                                            causal=causal, what=f"the tokenizer's {key}")
            placed = {p: jax.device_put(values[p].astype(leaf.dtype), leaf.sharding) for p, leaf in leaves.items()}
            nnx.replace_by_pure_dict(state[key], _nest_paths(placed))
        return state

    def prepare_training(self):
        """Loads what only training needs (e.g. the perceptual network's local weights)."""
        self.objective.prepare()

    # ---- data -----------------------------------------------------------------------------------
    def data_iterator(self):
        source = self.task.source("train")
        self.task.check_source(source)
        # each process reads its own shard of the data and its slice of the global batch
        return iter(self.task.pipeline(source, batch_size=int(self.train_cfg.batch_size) // jax.process_count(),
                                       train=True, seed=int(self.config.seed)))

    def batch_to_device(self, batch):
        key = self.task.input_key
        return sharding.shard_batch({key: batch[key]}, self.mesh)

    # ---- step -----------------------------------------------------------------------------------
    def _train_step(self, state, batch, rng):
        tc = self.train_cfg
        inputs = batch[self.task.input_key]
        k_model, _ = jax.random.split(rng)
        step = state["step"]
        objective = self.objective

        def generator_loss(params):
            model = nnx.merge(self.graphdef, params, state["rest"], copy=True)
            recon, losses, metrics = model.training_losses(inputs, rng=k_model)
            disc = nnx.merge(self.disc_graphdef, state["disc_params"], copy=True) if self.adversarial else None
            losses = {**losses, **objective.generator_losses(inputs, recon, disc, step)}
            total = sum(losses.values())
            # The quantizer may overwrite parameters in its forward pass (k-means initialisation,
            # dead-code revival): those values, not the inputs, are what the update applies to.
            forward_params = jax.lax.stop_gradient(nnx.state(model, nnx.Param))
            return total, (recon, losses, metrics, nnx.state(model, nnx.Not(nnx.Param)), forward_params)

        (loss, (recon, losses, metrics, rest, forward_params)), grads = jax.value_and_grad(
            generator_loss, has_aux=True)(state["params"])
        new = dict(state, **self._update(state, grads, forward_params, rest, float(tc.ema_decay)))
        out = {"loss": loss, "grad_norm": optax.global_norm(grads), **losses, **metrics}

        if self.adversarial:
            fake = jax.lax.stop_gradient(recon)

            def disc_loss(dparams):
                disc = nnx.merge(self.disc_graphdef, dparams, copy=True)
                total, extra, disc_metrics = objective.discriminator_losses(disc, inputs, fake, state)
                return total, (extra, disc_metrics)

            (d_loss, (extra, disc_metrics)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(
                state["disc_params"])
            with scope("optimizer"):
                d_updates, d_opt = self.disc_tx.update(d_grads, state["disc_opt"], state["disc_params"])
                d_params = optax.apply_updates(state["disc_params"], d_updates)
            new.update(disc_params=d_params, disc_opt=d_opt, **extra)
            out.update(discriminator_loss=d_loss, **disc_metrics)
        return new, out

    # ---- samples --------------------------------------------------------------------------------
    def write_samples(self, state, step, writer=None) -> dict:
        """Reconstructions of a few held-out inputs next to the originals → the task's reconstruction metrics."""
        inputs = self.task.examples("test", 8)
        model = self.model_from_state(state)
        recon = sharding.to_host(_reconstruct(nnx.graphdef(model), nnx.state(model), jnp.asarray(inputs)))
        if sharding.is_writer():
            path = os.path.join(self.workdir, "samples", f"tokenizer_step_{step:06d}{self.task.output_extensions[0]}")
            self.task.write_reconstructions(path, inputs, recon)
        return {f"samples/{k}": v for k, v in self.task.reconstruction_metrics(inputs, recon).items()}


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(graphdef, state, inputs):
    model = nnx.merge(graphdef, state, copy=True)
    return model.decode(model.encode(inputs))


def _nest_paths(flat: dict) -> dict:
    """`{"a/0/b": x}` → `{"a": {0: {"b": x}}}` (integer keys back to ints, as nnx pure dicts have them)."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        keys = [int(k) if k.isdigit() else k for k in path.split("/")]
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out
