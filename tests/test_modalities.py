"""The modality interface: the Task protocol and registry, one Condition structure, the engine's
independence from any modality, configs with variants."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mgt
from mgt.condition import Condition
from mgt.modalities import BaseTask, Task, make_task, register_task, registered_tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digits_config(arg="tiny"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_config", os.path.join(ROOT, "configs", "image", "digits.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_engine_and_trainer_import_no_modality():
    """`mgt`, `mgt.training`, `mgt.pipeline` and `mgt.cli` load no modality package (the registry may)."""
    code = ("import sys, mgt, mgt.training, mgt.pipeline, mgt.cli, mgt.sampling, mgt.decoding; "
            "print(sorted(m for m in sys.modules if m.startswith('mgt.modalities.') and m != 'mgt.modalities.base'"
            " or m == 'mgt.tokenizers.image_losses'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_generic_modules_do_not_mention_images():
    """No module in mgt/training/, mgt/pipeline.py or mgt/cli.py speaks of images, pixels, PIL, PNG or boxes."""
    files = [os.path.join(ROOT, "mgt", "pipeline.py"), os.path.join(ROOT, "mgt", "cli.py")]
    folder = os.path.join(ROOT, "mgt", "training")
    files += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".py")]
    pattern = re.compile(r"image|pixel|\bPIL\b|png|\bbox", re.IGNORECASE)
    found = [f"{os.path.relpath(f, ROOT)}:{i}: {line.strip()}" for f in files
             for i, line in enumerate(open(f), 1) if pattern.search(line)]
    assert found == []


def test_task_registry_and_protocol():
    c = _digits_config()
    task = make_task(c)
    assert isinstance(task, Task) and task.name == "image" and task.input_shape == (16, 16, 3)
    assert "image" in registered_tasks()
    assert task.identity_keys == ("data.image_size", "data.num_classes")
    c.modality = "sound"
    with pytest.raises(ValueError, match=r"config.modality: unknown modality 'sound'; expected one of \[.*'image'"):
        make_task(c)
    c.modality = "no_such_package.tasks:Task"
    with pytest.raises(ValueError, match="cannot import module 'no_such_package.tasks'"):
        make_task(c)

    @register_task("test_points")
    class PointTask(BaseTask):
        name, input_key, input_shape = "test_points", "points", (4, 2)

    c.modality = "test_points"
    assert isinstance(make_task(c), PointTask)
    with pytest.raises(ValueError, match="already registered"):
        register_task("test_points")(type("Other", (BaseTask,), {}))


def test_task_condition_and_sample_arguments():
    import argparse

    task = make_task(_digits_config())
    batch = {"image": np.zeros((3, 16, 16, 3), np.float32), "label": np.array([1, 2, 3], np.int32)}
    cond = task.condition(batch)
    assert cond.labels.tolist() == [1, 2, 3] and cond.context is None
    parser = argparse.ArgumentParser()
    task.add_sample_arguments(parser)
    args = parser.parse_args(["--labels", "3,7"])
    cond, num = task.sample_condition(args, 5)
    assert num == 5 and cond.labels.tolist() == [3, 7, 3, 7, 3]
    cond, num = task.sample_condition(parser.parse_args([]), None)  # every class, per_class each
    assert num == 10 and cond.labels.tolist() == list(range(10))
    with pytest.raises(ValueError, match=r"--labels \[12\]: expected class ids in \[0, 10\)"):
        task.sample_condition(parser.parse_args(["--labels", "0,12"]), None)
    with pytest.raises(ValueError, match=r"--out 'x.gif': expected a path ending in one of \['.png', '.npz'\]"):
        task.check_output("x.gif")


def test_condition_keeps_what_the_model_takes():
    labels_cfg = mgt.TransformerConfig(grid=(2, 2), codebook_size=8, num_classes=3, conditioning="adaln",
                                       hidden_dim=16, mlp_dim=32, num_layers=1)
    ctx_cfg = mgt.TransformerConfig(grid=(2, 2), codebook_size=8, conditioning="cross_attention", context_dim=5,
                                    hidden_dim=16, mlp_dim=32, num_layers=1)
    none_cfg = mgt.TransformerConfig(grid=(2, 2), codebook_size=8, hidden_dim=16, mlp_dim=32, num_layers=1)
    assert (labels_cfg.condition_input, ctx_cfg.condition_input, none_cfg.condition_input) == ("labels", "context",
                                                                                                "none")
    full = Condition(labels=np.array([0, 1]), context=np.ones((2, 3, 5), np.float32))
    assert full.for_model(labels_cfg).context is None and full.for_model(labels_cfg).labels.tolist() == [0, 1]
    assert full.for_model(ctx_cfg).labels is None and full.for_model(ctx_cfg).context.shape == (2, 3, 5)
    assert full.for_model(none_cfg).is_empty
    with pytest.raises(ValueError, match="class-conditional.*no labels"):
        Condition(context=full.context).for_model(labels_cfg)
    with pytest.raises(ValueError, match="context sequence.*no context"):
        Condition(labels=full.labels).for_model(ctx_cfg)
    assert set(full.to_batch()) == {"label", "context"}
    assert Condition.from_batch(full.to_batch()).labels.tolist() == [0, 1]
    assert full.take(slice(1, 2)).context.shape == (1, 3, 5) and full.tile(2).labels.tolist() == [0, 1, 0, 1]


def test_sampling_with_a_context_condition_and_guidance():
    """A cross-attention model samples from a Condition (context tiled for the guidance pass)."""
    import jax
    from flax import nnx

    cfg = mgt.TransformerConfig(grid=(2, 2), codebook_size=8, conditioning="cross_attention", context_dim=5,
                                null_condition=True, hidden_dim=16, num_heads=2, mlp_dim=32, num_layers=1)
    model = mgt.MaskedTransformer(cfg, rngs=nnx.Rngs(0))
    cond = Condition(context=np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32))
    out = mgt.sample(model, jax.random.key(0), condition=cond, num_steps=2, guidance_scale=1.0)
    assert out.shape == (3, 2, 2) and int(out.max()) < 8
    with pytest.raises(ValueError, match=r"context has shape \(3, 4, 6\); expected \[3, S, 5\]"):
        mgt.sample(model, jax.random.key(0), condition=Condition(context=np.zeros((3, 4, 6), np.float32)),
                   batch_size=3, num_steps=2)
    with pytest.raises(ValueError, match="not both"):
        mgt.sample(model, jax.random.key(0), condition=cond, context=cond.context, num_steps=2)


def test_config_base_and_variant_parser():
    from mgt.config import base_config, parse_arg

    arg = parse_arg("tiny,layers=6", what="x.py", tiny=False, layers=0, scale=1.0)
    assert (arg.tiny, arg.layers, arg.scale) == (True, 6, 1.0)
    with pytest.raises(ValueError,
                       match=r"unknown variant 'huge' of x.py; expected some of \['tiny', 'layers=<int>'\]"):
        parse_arg("huge", what="x.py", tiny=False, layers=0)
    with pytest.raises(ValueError, match="variant layers='six' of x.py: expected a int"):
        parse_arg("layers=six", what="x.py", layers=0)
    with pytest.raises(ValueError, match="needs a value"):
        parse_arg("layers", what="x.py", layers=0)
    c = _digits_config("tiny,layers=2")
    assert c.model.num_layers == 2 and c.transformer_train.steps == 6
    full = _digits_config(None)
    base = base_config()
    # the experiment file states what differs; the rest is the base's
    assert full.transformer_train.mask_schedule == base.transformer_train.mask_schedule == "cosine"
    assert full.model.hidden_dim == 128 != base.model.hidden_dim


def test_tokenizer_without_objective_refuses_adversarial_terms():
    from mgt.tokenizers.base import ReconstructionObjective, training_objective

    c = _digits_config()
    assert type(training_objective("vqgan", c.tokenizer_train, (16, 16, 3), 1)).__name__ == "ImageTokenizerObjective"
    c.tokenizer_train.adversarial_weight = 0.1
    with pytest.raises(ValueError, match=r"adversarial_weight=0.1: tokenizer 'x' brings no adversarial loss"):
        ReconstructionObjective(c.tokenizer_train, "tokenizer 'x'")
