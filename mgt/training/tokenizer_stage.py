"""The tokenizer stage: reconstruction + quantizer losses, optional perceptual and adversarial terms.

Generator step: `tokenizer.training_losses` (reconstruction and the quantizer's terms) + perceptual
weight · perceptual distance + adversarial weight · warm-up(step) · non-saturating GAN loss.
Discriminator step (when the adversarial weight > 0): GAN loss + R1 penalty (+ LeCAM). EMA of the
generator's weights is kept for encoding and decoding later.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mgt import sharding
from mgt.profiling import scope
from mgt.tokenizers import losses as tl
from mgt.training.builders import make_tokenizer
from mgt.training.optim import make_optimizer


class TokenizerStage:
    name = "tokenizer"

    def __init__(self, config, task, mesh, *, workdir: str):
        self.config, self.task, self.mesh, self.workdir = config, task, mesh, workdir
        self.train_cfg = tc = config.tokenizer_train
        self.total_steps = int(tc.steps)
        self.adversarial = float(tc.adversarial_weight) > 0
        self.tx = make_optimizer(tc, self.total_steps)
        self.disc_tx = optax.adam(float(tc.discriminator_learning_rate), b1=float(tc.b1), b2=float(tc.b2))
        self.perceptual = None  # loaded by prepare_training: sampling and conversion never need it
        batch = int(tc.batch_size)
        if batch % mesh.size:
            raise ValueError(f"config.tokenizer_train.batch_size={batch} must be divisible by the {mesh.size} devices")
        self.graphdef = nnx.graphdef(sharding.abstract_model(self.make_model))
        if self.adversarial:
            self.disc_graphdef = nnx.graphdef(sharding.abstract_model(self._make_discriminator))
        # the old state is donated: peak memory holds one copy of weights, optimiser state and EMA
        self.train_step = jax.jit(self._train_step, donate_argnums=0)

    def _make_discriminator(self):
        tc = self.config.tokenizer_train
        size = self.task.image_size
        mults = [1]
        while size // (2 ** len(mults)) > 4:
            mults.append(min(2 ** len(mults), 4))
        return tl.StyleGANDiscriminator(size, base_channels=int(tc.discriminator_channels),
                                        channel_multipliers=tuple(mults), rngs=nnx.Rngs(int(self.config.seed) + 1))

    # ---- state ----------------------------------------------------------------------------------
    def make_model(self):
        return make_tokenizer(self.config)

    def init_state(self):
        model = sharding.create_sharded(self.make_model, self.mesh)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        state = {"params": params, "rest": rest, "opt": jax.jit(self.tx.init)(params),
                 "ema": jax.tree.map(jnp.copy, params), "step": jnp.zeros((), jnp.int32)}
        if self.adversarial:
            disc = sharding.create_sharded(self._make_discriminator, self.mesh)
            dparams = nnx.state(disc, nnx.Param)
            state.update(disc_params=dparams, disc_opt=jax.jit(self.disc_tx.init)(dparams),
                         lecam=tl.LecamEMA.create(float(self.config.tokenizer_train.get("lecam_ema_decay", 0.999))))
        return state

    def inference_target(self):
        """Restore target for sampling: EMA weights and non-parameter state only."""
        params, rest = sharding.abstract_state_on_mesh(self.make_model, self.mesh)
        return {"ema": params, "rest": rest}

    def model_from_state(self, state, *, ema: bool = True):
        return nnx.merge(self.graphdef, state["ema"] if ema else state["params"], state["rest"], copy=True)

    def prepare_training(self):
        """Checks and loads what only training needs (the perceptual network's local weights)."""
        tc = self.train_cfg
        if float(tc.perceptual_weight) > 0:
            if not tc.perceptual_weights_path:
                raise ValueError("config.tokenizer_train.perceptual_weight > 0 needs "
                                 "config.tokenizer_train.perceptual_weights_path (a local .npz; nothing is "
                                 "downloaded), or --config.tokenizer_train.perceptual_weight=0")
            self.perceptual = tl.PerceptualLoss(tc.perceptual_weights_path)

    # ---- data -----------------------------------------------------------------------------------
    def data_iterator(self):
        source = self.task.source("train")
        self.task.check_source(source)
        # each process reads its own shard of the data and its slice of the global batch
        return iter(self.task.pipeline(source, batch_size=int(self.train_cfg.batch_size) // jax.process_count(), train=True,
                                       seed=int(self.config.seed)))

    def batch_to_device(self, batch):
        return sharding.shard_batch({"image": batch["image"]}, self.mesh)

    # ---- step -----------------------------------------------------------------------------------
    def _train_step(self, state, batch, rng):
        tc = self.train_cfg
        images = batch["image"]
        k_model, _ = jax.random.split(rng)
        step = state["step"]
        adv_scale = float(tc.adversarial_weight) * tl.adversarial_weight_schedule(step, int(tc.adversarial_warmup_steps))

        def generator_loss(params):
            model = nnx.merge(self.graphdef, params, state["rest"], copy=True)
            recon, losses, metrics = model.training_losses(images, rng=k_model)
            losses = dict(losses)
            if self.perceptual is not None:
                losses["perceptual"] = float(tc.perceptual_weight) * self.perceptual.apply(
                    self.perceptual.params, images, recon)
            if self.adversarial:
                disc = nnx.merge(self.disc_graphdef, state["disc_params"], copy=True)
                losses["adversarial"] = adv_scale * tl.generator_loss(disc(recon))
            total = sum(losses.values())
            # The quantizer may overwrite parameters in its forward pass (k-means initialisation,
            # dead-code revival): those values, not the inputs, are what the update applies to.
            forward_params = jax.lax.stop_gradient(nnx.state(model, nnx.Param))
            return total, (recon, losses, metrics, nnx.state(model, nnx.Not(nnx.Param)), forward_params)

        (loss, (recon, losses, metrics, rest, forward_params)), grads = jax.value_and_grad(
            generator_loss, has_aux=True)(state["params"])
        with scope("optimizer"):
            updates, opt = self.tx.update(grads, state["opt"], state["params"])
            params = optax.apply_updates(forward_params, updates)
        new = dict(state, params=params, rest=rest, opt=opt, step=step + 1,
                   ema=tl.ema_update(state["ema"], params, float(tc.ema_decay)))
        out = {"loss": loss, "grad_norm": optax.global_norm(grads), **losses, **metrics}

        if self.adversarial:
            fake = jax.lax.stop_gradient(recon)

            def disc_loss(dparams):
                disc = nnx.merge(self.disc_graphdef, dparams, copy=True)
                real_logits, fake_logits = disc(images), disc(fake)
                total = tl.discriminator_loss(real_logits, fake_logits)
                total += float(tc.r1_weight) * tl.r1_penalty(disc, images)
                if float(tc.lecam_weight) > 0:
                    total += float(tc.lecam_weight) * tl.lecam_regularizer(real_logits, fake_logits, state["lecam"])
                return total, (real_logits, fake_logits)

            (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(
                state["disc_params"])
            with scope("optimizer"):
                d_updates, d_opt = self.disc_tx.update(d_grads, state["disc_opt"], state["disc_params"])
                d_params = optax.apply_updates(state["disc_params"], d_updates)
            new.update(disc_params=d_params, disc_opt=d_opt, lecam=state["lecam"].update(real_logits, fake_logits))
            out.update(discriminator_loss=d_loss, real_logit=real_logits.mean(), fake_logit=fake_logits.mean())
        return new, out

    # ---- samples --------------------------------------------------------------------------------
    def write_samples(self, state, step, writer=None):
        """Reconstructions of a few held-out inputs next to the originals."""
        source = self.task.source("test")
        images = np.stack([np.asarray(source[i]["image"], np.float32) / 255.0 for i in range(min(8, len(source)))])
        model = self.model_from_state(state)
        recon = sharding.to_host(_reconstruct(nnx.graphdef(model), nnx.state(model), jnp.asarray(images)))
        grid = np.concatenate([images, np.clip(recon, 0, 1)], 0)
        path = os.path.join(self.workdir, "samples", f"tokenizer_step_{step:06d}.png")
        if sharding.is_writer():
            self.task.write_samples(path, grid, ncols=len(images))


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(graphdef, state, images):
    model = nnx.merge(graphdef, state, copy=True)
    return model.decode(model.encode(images))
