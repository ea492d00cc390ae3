"""Train the small feature network of a built-in data set on its real examples and ship its weights.

    python -m mgt.evaluation.train_small --name digits            # → mgt/evaluation/weights/digits.safetensors
    python -m mgt.evaluation.train_small --name all

The data come from the data set's main config (`configs/<modality>/<file>.py`, default variant) and
its task, exactly as the models see them: the train split trains the network, the held-out split
(`reference_split`) measures it, and that accuracy is stored in the weights' metadata. Shifts of up
to 2 px (images, frames) and time shifts with gain changes (audio) keep the features from hanging
on exact pixel positions, which generated samples do not reproduce.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from mgt.evaluation.small_nets import SPECS, shapes_targets, small_net, weights_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {"digits": "image/digits.py", "captioned_shapes": "text2image/shapes.py",
           "moving_digits": "video/moving_digits.py", "spoken_digits": "audio/spoken_digits.py"}
STEPS = {"digits": 1500, "captioned_shapes": 3000, "moving_digits": 1500, "spoken_digits": 600}


def load_config(name: str, arg: str | None = None):
    """The config of built-in data set `name`'s main job (`configs/...`), variant `arg`."""
    from mgt.registry import _load_file  # the one loader of Python files by path

    return _load_file(os.path.join(ROOT, "configs", CONFIGS[name])).get_config(arg)


def labelled_set(name: str, task, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """float32 inputs `[N, *input_shape]` and targets (int32 `[N]` classes or float32 `[N, 42]`)."""
    source = task.source(split)
    n = len(source) if limit is None else min(limit, len(source))
    inputs = task.examples(split, n)
    if name == "captioned_shapes":
        targets = np.stack([shapes_targets(source.describe(i)["shapes"]) for i in range(n)])
    else:
        targets = np.asarray([int(source[i]["label"]) for i in range(n)], np.int32)
    return inputs, targets


def _augment(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(len(x)):
        if kind == "audio":
            out[i] = np.roll(x[i], int(rng.integers(-400, 401)), axis=0) * rng.uniform(0.6, 1.2)
        else:
            dy, dx = rng.integers(-2, 3, size=2)
            out[i] = np.roll(x[i], (int(dy), int(dx)), axis=(-3, -2))
    return out


def train(name: str, *, steps: int | None = None, batch_size: int = 64, seed: int = 0, out: str | None = None,
          quiet: bool = False) -> dict:
    """Train `name`'s network; write its weights (with the held-out accuracy) to `out`; return the metadata."""
    import jax
    import optax
    from flax import nnx

    from mgt.evaluation.features import reference_split
    from mgt.evaluation.weights import save_weights
    from mgt.modalities import make_task

    spec = SPECS[name]
    steps = steps or STEPS[name]
    config = load_config(name)
    task = make_task(config)
    start = time.time()
    x_train, y_train = labelled_set(name, task, "train")
    split = reference_split(task)
    x_test, y_test = labelled_set(name, task, split, limit=1000)
    if not quiet:
        print(f"{name}: {len(x_train)} train / {len(x_test)} {split} examples ({time.time() - start:.0f} s)")

    net = small_net(name, seed)
    optimizer = nnx.Optimizer(net, optax.adamw(optax.cosine_decay_schedule(2e-3, steps), weight_decay=1e-4),
                              wrt=nnx.Param)

    def loss_of(model, x, y):
        _, logits = model(x)
        if spec.multi_label:
            return optax.sigmoid_binary_cross_entropy(logits, y).sum(-1).mean()
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(loss_of)(model, x, y)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def predict(model, x):
        return model(x)[1]

    rng = np.random.default_rng(seed)
    for i in range(steps):
        rows = rng.integers(0, len(x_train), batch_size)
        loss = step(net, optimizer, _augment(x_train[rows], spec.kind, rng), y_train[rows])
        if not quiet and (i % 250 == 0 or i == steps - 1):
            print(f"  step {i:5d}  loss {float(loss):.4f}  ({time.time() - start:.0f} s)")
    logits = np.concatenate([np.asarray(predict(net, x_test[j:j + 100])) for j in range(0, len(x_test), 100)])
    if spec.multi_label:  # exact set of attributes right
        accuracy = float(np.mean(np.all((logits > 0) == (y_test > 0.5), axis=1)))
    else:
        accuracy = float(np.mean(np.argmax(logits, 1) == y_test))
    meta = {"network": f"small_{name}", "data": f"configs/{CONFIGS[name]} ({config.data.source})",
            "train_examples": str(len(x_train)), "steps": str(steps), "heldout_split": split,
            "heldout_accuracy": f"{accuracy:.4f}", "jax": jax.__version__}
    path = out or weights_path(name)
    save_weights(net, path, metadata=meta)
    if not quiet:
        print(f"{name}: held-out ({split}) accuracy {accuracy:.4f}; wrote {path} ({time.time() - start:.0f} s)")
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mgt.evaluation.train_small", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, choices=sorted(SPECS) + ["all"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--out", default=None, help="weights file (default: the shipped one)")
    args = p.parse_args(argv)
    for name in sorted(SPECS) if args.name == "all" else [args.name]:
        train(name, steps=args.steps, out=args.out if args.name != "all" else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
