"""What every training stage shares: the train state (weights, optimiser, EMA, step), the restore
target for sampling, models from a state, the batch check, and the EMA update itself.

A train state is a dict `{"params", "rest", "opt", "ema", "step"}` (+ what a stage adds, e.g. the
discriminator's): `params` the `nnx.Param`s, `rest` every other variable (EMA codebooks, counters),
`ema` the exponential moving average of `params` used for sampling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mgt import sharding
from mgt.compile_options import compiler_options
from mgt.profiling import scope, scoped


@scoped("ema")
def ema_update(ema_state, new_state, decay: float = 0.999):
    """`decay · ema + (1 − decay) · new` over matching pytrees (e.g. `nnx.State`s of a model's params);
    non-float leaves (counters, rng keys) are copied from `new_state`."""

    def update(e, n):
        if jnp.issubdtype(jnp.result_type(e), jnp.floating):
            return (decay * e + (1.0 - decay) * n).astype(jnp.result_type(e))
        return n

    return jax.tree.map(update, ema_state, new_state)


def init_optimizer(tx: optax.GradientTransformation, params, mesh):
    """`tx.init(params)` laid out like the parameters: every optimiser leaf that mirrors a parameter
    (Adam's moments, ...) gets that parameter's sharding, the rest (step counts) is replicated.

    Left to itself, a jitted `tx.init` may return the moments replicated on every device (XLA does
    not propagate a sharding into `zeros_like`): the memory of a sharded optimiser on each device at
    the start, and a second compile of the train step at its second call, when its outputs' shardings
    come back as inputs."""
    param_shardings = jax.tree.map(lambda p: p.sharding, params)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shardings = optax.tree_map_params(tx, lambda _, sharding: sharding, jax.eval_shape(tx.init, params),
                                      param_shardings, transform_non_params=lambda _: replicated)
    return jax.jit(tx.init, out_shardings=shardings)(params)


class Stage:
    """Base of the tokenizer and transformer stages (see `mgt.training.loop` for the loop's side).

    Subclasses set `name`, `total_steps`, `tx` (the optax optimiser) and implement `make_model()`,
    `data_iterator()`, `batch_to_device(batch)`, `_train_step(state, batch, rng)` and
    `write_samples(state, step)`; `setup_model()` is called at the end of their `__init__`.
    """

    name = "stage"

    def __init__(self, config, task, mesh, *, workdir: str, train_config, config_name: str):
        self.config, self.task, self.mesh, self.workdir = config, task, mesh, workdir
        self.train_cfg = train_config
        self.total_steps = int(train_config.steps)
        batch = int(train_config.batch_size)
        if batch < 1 or batch % mesh.size:
            raise ValueError(f"config.{config_name}.batch_size={batch} must be a positive multiple of the "
                             f"{mesh.size} devices")

    def setup_model(self):
        """The model's graph definition (from an abstract model: nothing allocated) and the compiled step."""
        self.graphdef = nnx.graphdef(self.abstract_model())
        # the old state is donated: peak memory holds one copy of weights, optimiser state and EMA
        self.train_step = jax.jit(self._train_step, donate_argnums=0, compiler_options=compiler_options())

    def make_model(self) -> nnx.Module:
        raise NotImplementedError

    def abstract_model(self) -> nnx.Module:
        """The stage's model as shapes only, built once per stage: constructing NNX modules costs
        even abstractly (about a second for a VQGAN on a CPU), and every state and restore target
        starts from it. Read only."""
        if getattr(self, "_abstract_model", None) is None:
            self._abstract_model = sharding.abstract_model(self.make_model)
        return self._abstract_model

    def init_state(self, model: nnx.Module | None = None) -> dict:
        """A fresh train state, built directly into its sharded layout.

        With `model` (e.g. converted official weights) the state holds that model's variables, placed
        on the mesh, and no model is initialised only to be overwritten. Raises ValueError naming the
        difference when `model` is not the stage's model."""
        if model is None:
            model = sharding.create_sharded(self.make_model, self.mesh, abstract=self.abstract_model())
        else:
            model = self._placed(model)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return {"params": params, "rest": rest, "opt": init_optimizer(self.tx, params, self.mesh),
                "ema": jax.tree.map(jnp.copy, params), "step": jnp.zeros((), jnp.int32)}

    def _placed(self, model: nnx.Module) -> nnx.Module:
        """`model` with its variables on this stage's mesh, after checking it is the stage's model."""
        targets = sharding.abstract_state_on_mesh(self.make_model, self.mesh, abstract=self.abstract_model())
        placed = []
        for what, target, given in zip(("parameters", "other variables"), targets,
                                       nnx.split(model, nnx.Param, ...)[1:]):
            want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(target)[0]}
            got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(given)[0]}
            if want != got:
                diff = sorted(set(want.items()) ^ set(got.items()))[:6]
                raise ValueError(f"the given {self.name} model's {what} do not fit the config's model: "
                                 f"first differences (name, shape): {diff}")
            placed.append(jax.tree.map(lambda ref, x: jax.device_put(x, ref.sharding), target, given))
        return nnx.merge(self.graphdef, *placed)

    def inference_target(self) -> dict:
        """Restore target for sampling: EMA weights and non-parameter state only."""
        params, rest = sharding.abstract_state_on_mesh(self.make_model, self.mesh, abstract=self.abstract_model())
        return {"ema": params, "rest": rest}

    def model_from_state(self, state, *, ema: bool = True) -> nnx.Module:
        return nnx.merge(self.graphdef, state["ema"] if ema else state["params"], state["rest"], copy=True)

    def _update(self, state, grads, params, rest, decay: float):
        """Apply `grads` with the stage's optimiser to `params`; the EMA follows. → new state entries."""
        with scope("optimizer"):
            updates, opt = self.tx.update(grads, state["opt"], state["params"])
            new_params = optax.apply_updates(params, updates)
        return dict(params=new_params, rest=rest, opt=opt, step=state["step"] + 1,
                    ema=ema_update(state["ema"], new_params, decay))
