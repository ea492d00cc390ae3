"""Text-to-image end to end on `configs/text2image/shapes.py:tiny,prefix`: training the in-context prefix with
the jointly trained encoder over a fitted BPE vocabulary, `mgt sample --prompt / --prompts-file /
--negative-prompt` (.npz with prompts, a PNG titled by prompt), `pipe.generate(prompts=...)`, bad
inputs; the cross-attention and pooled-adaLN conditionings trained on the same tokenizer; the Muse
recipe built on a T5 folder."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import ROOT, trained_once


def shapes_config(arg="tiny,prefix"):
    spec = importlib.util.spec_from_file_location("shapes_config", os.path.join(ROOT, "configs", "text2image",
                                                                               "shapes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="session")
def shapes_workdir(tmp_path_factory):
    """Trained once per session, shared by every xdist worker (read-only)."""
    return trained_once(tmp_path_factory, "shapes_tiny", shapes_config)




def test_training_caches_captions_and_fits_the_vocabulary(shapes_workdir):
    folder = os.path.join(shapes_workdir, "transformer")
    assert os.path.exists(os.path.join(folder, "text_vocabulary.json"))
    cache = [f for f in os.listdir(folder) if f.startswith("tokens_")]
    with np.load(os.path.join(folder, cache[0])) as f:
        assert {"tokens", "context_ids", "context_mask", "text"} <= set(f.files)
        assert f["context_ids"].shape == (64, 16) and f["text"].shape == (64,)
        assert f["context_mask"].any(1).all()  # every caption has tokens
    assert os.path.exists(os.path.join(shapes_workdir, "samples", "final.png"))


def test_sample_cli_with_prompts_and_bad_inputs(shapes_workdir, tmp_path, tiny_workdir, capsys):
    from mgt.cli import main

    out = str(tmp_path / "x.npz")
    assert main(["sample", "--workdir", shapes_workdir, "--prompt", "a red circle", "--prompt",
                 "a large blue square to the left of a small yellow triangle", "--num", "3", "--steps", "2",
                 "--guidance", "1.5", "--negative-prompt", "a green circle", "--out", out]) == 0
    with np.load(out) as f:
        assert f["images"].shape == (3, 32, 32, 3) and f["images"].dtype == np.uint8
        assert f["prompts"].tolist() == ["a red circle", "a large blue square to the left of a small yellow "
                                         "triangle", "a red circle"]
    recon = str(tmp_path / "r.npz")
    assert main(["reconstruct", "--workdir", shapes_workdir, "--input", out, "--out", recon]) == 0
    with np.load(recon) as f:  # the prompts travel with the images
        assert f["images"].shape == (3, 32, 32, 3) and f["prompts"].tolist()[0] == "a red circle"
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a white square\n\na cyan triangle\n")
    png = str(tmp_path / "x.png")
    assert main(["sample", "--workdir", shapes_workdir, "--prompts-file", str(prompts_file), "--num", "4",
                 "--steps", "2", "--guidance", "1.5", "--out", png]) == 0
    assert os.path.getsize(png) > 0
    for workdir, args, match in (
            (shapes_workdir, ["--labels", "1"], "--labels: this workdir's model is not class-conditional"),
            (shapes_workdir, [], "--prompt (or --prompts-file) is required"),
            (shapes_workdir, ["--prompt", " "], "--prompt: expected a non-empty prompt"),
            (shapes_workdir, ["--prompt", "a red circle", "--negative-prompt", "x", "--guidance", "0"],
             "--guidance > 0"),
            (shapes_workdir, ["--prompts-file", str(tmp_path / "none.txt")], "--prompts-file"),
            (tiny_workdir, ["--prompt", "a red circle"], "--prompt / --prompts-file: this workdir's model is not "
                                                         "text-conditioned")):
        capsys.readouterr()
        assert main(["sample", "--workdir", workdir, *args, "--out", png]) == 1, args
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_pipeline_generates_from_prompts(shapes_workdir):
    import mgt

    pipe = mgt.load_pipeline(shapes_workdir)
    keys = jax.random.split(jax.random.key(0), 2)
    prompts = ["a red circle", "a small white triangle below a large green square"]
    # a strong guidance scale: the tiny model's conditions differ little, the negative must still show
    a = np.asarray(pipe.generate(keys, prompts=prompts, num_steps=2, guidance=50.0))
    b = np.asarray(pipe.generate(keys, prompts=prompts, num_steps=2, guidance=50.0, negative_prompts="a red circle"))
    assert a.shape == b.shape == (2, 32, 32, 3) and np.isfinite(a).all()
    assert not np.array_equal(a, b)  # the negative prompt replaced the null condition
    with pytest.raises(ValueError, match="prompts"):
        pipe.generate(keys, prompts=[], num_steps=2)
    with pytest.raises(ValueError, match="guidance"):
        pipe.generate(keys, prompts=prompts, num_steps=2, negative_prompts="x")


def test_text_quality_benchmark_smoke(shapes_workdir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("mgt_benchmark_text_quality",
                                                  os.path.join(ROOT, "benchmarks", "text_quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "t.json"
    module.main(["--workdir", shapes_workdir, "--prompts", "3", "--guidance", "0,2", "--steps", "2",
                 "--json", str(out)])
    record = json.loads(out.read_text())
    record = record[0] if isinstance(record, list) else record
    # every group (seen / held-out × one / two shapes) at each guidance scale, scored over 3 images
    assert len(record["results"]) == 8 and {r["num"] for r in record["results"]} == {3}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in record["results"])
    assert record["encoder_ms_per_64_captions"] > 0 and record["negative_prompts"]["guidance"] == 2.0
    assert 0.0 <= record["layout_preference"] <= 1.0
    assert all("relation" in r for r in record["results"] if (r["split"], r["shapes"]) == ("seen", "two"))
    out = capsys.readouterr().out
    assert "standard errors" in out and "layout preference" in out


BERT_FOLDER = os.path.join(ROOT, "tests", "data", "text_encoders", "bert")  # a tiny random BERT (test data)


def test_relation_breakdown_reads_axis_and_order():
    """The benchmark's relation breakdown on drawn images: right, mirrored and stacked layouts."""
    spec = importlib.util.spec_from_file_location("mgt_benchmark_text_quality",
                                                  os.path.join(ROOT, "benchmarks", "text_quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from mgt.modalities.image import shapes

    meaning = shapes.Meaning((shapes.Shape("red", "circle"), shapes.Shape("blue", "square")), "left")
    draw = lambda ca, cb: shapes.draw([dict(colour="red", shape="circle", size="large", cell=ca),  # noqa: E731
                                       dict(colour="blue", shape="square", size="large", cell=cb)])
    images = [draw((1, 0), (1, 2)), draw((1, 2), (1, 0)), draw((0, 1), (2, 1)), np.zeros((32, 32, 3), np.uint8)]
    out = module.relation_breakdown(images, [meaning] * 4)
    assert out["num_axis"] == 3 and out["axis"] == 2 / 3 and out["num_order"] == 2 and out["order"] == 0.5


@pytest.mark.parametrize("variant", ["tiny,cross,bytes", f"tiny,pooled,encoder=bert,path={BERT_FOLDER}"])
def test_other_conditionings_train_and_sample(shapes_workdir, tmp_path, variant):
    """Each mechanism trains its transformer on the shared tiny tokenizer: cross-attention over the
    trainable encoder's byte vocabulary, pooled adaLN over a frozen encoder's cached embeddings."""
    import mgt
    from mgt.training import train

    config = shapes_config(variant)
    path = str(tmp_path / "run")
    shutil.copytree(os.path.join(shapes_workdir, "tokenizer"), os.path.join(path, "tokenizer"))
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(config.to_json())
    train(config, path, stage="transformer", quiet=True)
    pipe = mgt.load_pipeline(path)
    assert pipe.transformer.config.conditioning == config.model.conditioning
    out = pipe.generate(jax.random.key(1), prompts=["a red circle", "a blue square"], num_steps=2, guidance=2.0)
    assert np.asarray(out).shape == (2, 32, 32, 3)
    with open(os.path.join(path, "metrics.jsonl")) as f:
        losses = [r["loss"] for r in map(json.loads, f) if r["stage"] == "transformer" and "loss" in r]
    assert losses and np.isfinite(losses).all()


def test_muse256_recipe_builds_with_a_t5_folder():
    from mgt.modalities import make_task
    from mgt.training.builders import make_tokenizer, transformer_config

    spec = importlib.util.spec_from_file_location("muse_config", os.path.join(ROOT, "configs", "text2image",
                                                                             "muse256.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("runlocal")
    assert module.get_config().sample.num_steps == 24 and module.get_config().text.encoder == "t5"
    config.text.path = os.path.join(ROOT, "tests", "data", "text_encoders", "t5")
    task = make_task(config)
    spec = nnx.eval_shape(lambda: make_tokenizer(config)).token_spec(task.input_shape)  # shapes only
    model = transformer_config(config, spec, task.text)
    assert model.grid == (4, 4) and model.conditioning == "cross_attention" and model.context_dim == 32
    config.text.path = None
    with pytest.raises(ValueError, match="config.text"):
        transformer_config(config, spec)


def test_eval_text_workdir_samples_the_reference_captions(shapes_workdir, tmp_path, capsys):
    """`mgt eval` on the tiny captioned-shapes workdir: samples conditioned on the held-out captions (or
    a prompts file), FID / precision / recall with the shapes network (random weights); IS needs a
    single-label classifier, which the multi-label shapes network is not: left out of the default set,
    an error when asked for."""
    from mgt.cli import main

    common = ["eval", "--workdir", shapes_workdir, "--num", "8", "--batch-size", "8", "--num-reference", "16",
              "--steps", "2", "--random-features", "--quiet"]
    out = tmp_path / "m.json"
    assert main(common + ["--json", str(out)]) == 0  # the default set, less IS (multi-label network)
    result = json.loads(out.read_text())
    assert result["fid"] > 0 and 0 <= result["recall"] <= 1 and "is" not in result
    assert result["setup"]["samples"]["condition"] == "the reference captions in order"
    assert result["setup"]["reference"]["source"] == "captioned_shapes (val split)"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    assert main(common + ["--metrics", "fid", "--prompts-file", str(prompts), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["setup"]["samples"]["condition"].startswith("prompts file")
    capsys.readouterr()
    assert main(common + ["--metrics", "is", "--json", str(tmp_path / "x.json")]) == 1
    assert "single-label" in capsys.readouterr().err
