"""The trainer and the CLI on the tiny digits config: stages, outputs, resume, errors."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mgt import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "image", "digits.py") + ":tiny"


def _load_config(arg="tiny"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_config", os.path.join(ROOT, "configs", "image", "digits.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture
def workdir(tiny_workdir):
    """The session's trained `:tiny` workdir (read-only: tests that change it copy it)."""
    return tiny_workdir


def _records(path):
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_config_variants_and_overrides():
    c = _load_config()
    assert c.transformer_train.steps == 6 and c.model.hidden_dim == 32
    full = _load_config(None)
    assert full.data.source == "digits" and full.model.conditioning == "class_token"
    with pytest.raises(ValueError, match="unknown variant"):
        _load_config("huge")


def test_both_stages_train_and_write_outputs(workdir):
    records = _records(workdir)
    stages = {r["stage"] for r in records}
    assert stages == {"tokenizer", "transformer"}
    assert all(np.isfinite(r["loss"]) for r in records)
    assert os.path.exists(os.path.join(workdir, "samples", "final.png"))
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert sorted(os.listdir(os.path.join(workdir, "transformer", "checkpoints")))[-1] == "6"
    events = os.listdir(os.path.join(workdir, "tensorboard", "transformer"))
    assert any(n.startswith("events.out.tfevents") for n in events)


def test_sample_npz_and_png(workdir, tmp_path, capsys):
    out = str(tmp_path / "s.npz")
    assert cli.main(["sample", "--workdir", workdir, "--labels", "3,7", "--num", "5", "--steps", "4",
                     "--out", out]) == 0
    data = np.load(out)
    assert data["images"].dtype == np.uint8 and data["images"].shape == (5, 16, 16, 3)
    assert data["labels"].tolist() == [3, 7, 3, 7, 3]
    png = str(tmp_path / "s.png")
    assert cli.main(["sample", "--workdir", workdir, "--steps", "4", "--typical-p", "0.9", "--top-k", "8",
                     "--confidence", "logit", "--out", png]) == 0
    from PIL import Image

    assert Image.open(png).size[0] > 64
    capsys.readouterr()
    # sketch guidance needs a recycling model: a one-line error naming it, before anything is generated
    assert cli.main(["sample", "--workdir", workdir, "--steps", "4", "--sketch-guidance", "1",
                     "--temperature-final", "0.5", "--out", png]) == 1
    assert "sketch_guidance=1.0 needs a model that recycles its sketch" in capsys.readouterr().err
    assert cli.main(["sample", "--workdir", workdir, "--guidance-schedule", "exp", "--out", png]) == 1
    assert "--guidance-schedule='exp'; expected one of" in capsys.readouterr().err
    # `mgt reconstruct`: the .npz's images through the tokenizer, same N and labels
    recon = str(tmp_path / "r.npz")
    assert cli.main(["reconstruct", "--workdir", workdir, "--input", out, "--out", recon]) == 0
    again = np.load(recon)
    assert again["images"].shape == (5, 16, 16, 3) and again["labels"].tolist() == [3, 7, 3, 7, 3]
    assert cli.main(["reconstruct", "--workdir", workdir, "--input", str(tmp_path / "none.npz"), "--out", recon]) == 1
    assert "--input" in capsys.readouterr().err


def test_digits_quality_benchmark_on_a_trained_workdir(workdir, tmp_path):
    """`benchmarks/digits_quality.py`: classifier score and diversity for two guidance scales."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mgt_benchmark_digits_quality",
                                                  os.path.join(ROOT, "benchmarks", "digits_quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "q.json"
    records = module.main(["--workdir", workdir, "--per-class", "3", "--guidance", "0,2", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(records))
    assert [r["guidance"] for r in records] == [0.0, 2.0]
    for r in records:
        assert r["samples"] == 30 and set(r["per_class"]) == set(range(10))
        assert 0.0 <= r["samples_labelled_with_their_class"] <= 1.0
        assert r["classifier_accuracy_real_heldout"] > 0.9  # the SVC on real digits
        assert r["within_class_spread"] > 0 and r["diversity_vs_real"] == pytest.approx(
            r["within_class_spread"] / r["within_class_spread_real"])
    # the spread measure itself: identical examples have none, two distinct ones their distance
    feats = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0]])
    assert module.within_class_spread(feats, np.array([0, 0, 1, 1])) == pytest.approx((5.0 + 0.0) / 2)


def test_cli_errors_are_one_line(workdir, tmp_path, capsys):
    assert cli.main(["sample", "--workdir", workdir, "--labels", "0,12", "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "--labels [12]" in err and "[0, 10)" in err and "Traceback" not in err
    assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path / "w"), "--config.model.hiden_dim=3"]) == 1
    assert "hidden_dim" in capsys.readouterr().err
    assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path / "w"), "--config.data.source=folder",
                     f"--config.data.path={tmp_path / 'missing'}"]) == 1
    assert "missing" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path / "w2"), "--config.data.source=folder",
                     f"--config.data.path={empty}"]) == 1
    assert "empty" in capsys.readouterr().err.lower()
    # a workdir holding another experiment
    assert cli.main(["train", "--config", TINY, "--workdir", workdir, "--config.model.num_layers=2"]) == 1
    err = capsys.readouterr().err
    assert "another experiment" in err and "model.num_layers" in err


def test_workdir_resumes_with_another_execution_setting_only(tmp_path):
    """`model.remat` / `model.scan_unroll` say how a step is computed: a started workdir accepts a change
    of them (or a saved config without them), and still refuses a change of what is trained."""
    from configs.image.digits import get_config
    from mgt.training.trainer import WorkdirMismatchError, check_workdir

    config = get_config("tiny")
    wd = str(tmp_path / "w")
    check_workdir(config, wd)
    os.makedirs(os.path.join(wd, "tokenizer", "checkpoints", "4"))  # a started stage
    with open(os.path.join(wd, "config.json")) as f:
        saved = json.load(f)
    del saved["model"]["remat"]  # a workdir written before the field existed
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(saved, f)
    config.model.remat, config.model.scan_unroll = True, True
    check_workdir(config, wd)
    config.model.hidden_dim += 8
    with pytest.raises(WorkdirMismatchError, match="model.hidden_dim"):
        check_workdir(config, wd)


def test_sample_and_edit_options_come_from_the_modality(workdir, tmp_path, capsys):
    """Generic options are checked before any work; the rest are the workdir's task's (`--help` lists them)."""
    assert cli.main(["sample", "--workdir", workdir, "--help"]) == 0
    assert "--labels" in capsys.readouterr().out
    assert cli.main(["edit", "--workdir", workdir, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--box" in out and "--mode" in out and "--label" in out
    out = str(tmp_path / "x.png")
    for args, expected in ((["--num", "0"], "--num 0: expected an integer >= 1"),
                           (["--steps", "0"], "--steps 0: expected an integer >= 1"),
                           (["--guidance", "-1"], "--guidance -1.0: expected a number >= 0"),
                           (["--prompt", "a cat"], "--prompt / --prompts-file: this workdir's model is not "
                                                   "text-conditioned (use --labels)")):
        assert cli.main(["sample", "--workdir", workdir, *args, "--out", out]) == 1
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
    assert cli.main(["sample", "--workdir", workdir, "--out", str(tmp_path)]) == 1  # a folder
    assert "expected a path ending in one of ['.png', '.npz']" in capsys.readouterr().err
    (tmp_path / "d.png").mkdir()
    assert cli.main(["sample", "--workdir", workdir, "--out", str(tmp_path / "d.png")]) == 1
    assert "is a folder; expected a file path" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli.main(["sample", "--workdir", workdir, "--out", str(tmp_path / "file" / "x.png")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert cli.main(["edit", "--workdir", workdir, "--image", "in.png", "--box", "0,0,4,4", "--out", "x.gif"]) == 1
    assert "expected a path ending in one of" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_python_users_load_any_workdir_as_a_pipeline(workdir, tmp_path):
    import jax

    import mgt

    pipe = mgt.load_pipeline(workdir)
    assert pipe.task.name == "image" and pipe.steps == {"tokenizer": 6, "transformer": 6}
    cond = mgt.Condition(labels=np.array([4, 5], np.int32))
    images = np.asarray(pipe.generate(jax.random.key(0), condition=cond, num_steps=2))
    assert images.shape == (2, 16, 16, 3)
    pipe.task.write_samples(str(tmp_path / "two.npz"), images, cond)
    assert np.load(tmp_path / "two.npz")["labels"].tolist() == [4, 5]


def test_edit_modes_and_bad_box(workdir, tmp_path, capsys):
    from PIL import Image

    from mgt.modalities.image import DigitsSource

    src = str(tmp_path / "in.png")
    Image.fromarray(DigitsSource(image_size=16, split="test")[0]["image"]).save(src)
    for mode in ("inpaint", "outpaint", "class"):
        out = str(tmp_path / f"{mode}.png")
        assert cli.main(["edit", "--workdir", workdir, "--image", src, "--box", "4,4,8,8", "--label", "3",
                         "--mode", mode, "--steps", "4", "--out", out]) == 0
        assert np.asarray(Image.open(out)).shape == (16, 16, 3)
    assert cli.main(["edit", "--workdir", workdir, "--image", src, "--box", "10,10,12,12", "--label", "3",
                     "--out", str(tmp_path / "bad.png")]) == 1
    assert "box" in capsys.readouterr().err


def test_config_checked_before_anything_is_written_and_corrected_before_training(tmp_path):
    """A bad field fails before config.json exists; a workdir whose stages have not started takes a
    corrected config (the fix an error message suggests must work)."""
    from mgt.training import train

    path = str(tmp_path / "w")
    c = _load_config()
    c.model.num_heads = 3
    with pytest.raises(ValueError, match="config.model: hidden_dim=32 must be divisible by num_heads=3"):
        train(c, path, quiet=True)
    c.model.num_heads = 4
    c.model.patch_dim, c.transformer_train.patch_loss = 5, 1.0  # the input-patch head must fit the grid
    with pytest.raises(ValueError, match=r"config.model.patch_dim=5: the input \(.*\) on the token grid .* gives "
                                         r"cells of \d+ values"):
        train(c, path, quiet=True)
    c.model.patch_dim = 0
    with pytest.raises(ValueError, match="patch_loss=1.0 with config.model.patch_dim=0: expected both > 0"):
        train(c, path, quiet=True)
    c.transformer_train.patch_loss = 0.0
    c.sample.sketch_guidance = 0.5  # sketch guidance needs a recycling model
    with pytest.raises(ValueError, match=r"config.sample.sketch_guidance=0.5 needs .*recycle_patches=True"):
        train(c, path, quiet=True)
    c.sample.sketch_guidance = 0.0
    c.data.num_classes = 3  # the digits have 10: the data is checked before anything is written too
    with pytest.raises(ValueError, match=r"labels up to 9 but config.data.num_classes=3; set .*num_classes=10"):
        train(c, path, quiet=True)
    c.data.num_classes = 10
    assert not os.path.exists(os.path.join(path, "config.json"))
    c.model.num_heads = 4
    c.model.num_layers = 3
    with pytest.raises(ValueError, match="no tokenizer checkpoint"):  # passes the config checks, writes it
        train(c, path, stage="transformer", quiet=True)
    c.model.num_layers = 2  # corrected again: nothing trained yet, so accepted
    with pytest.raises(ValueError, match="no tokenizer checkpoint"):
        train(c, path, stage="transformer", quiet=True)
    with open(os.path.join(path, "config.json")) as f:
        assert json.load(f)["model"]["num_layers"] == 2


def test_token_cache_key_covers_the_source_code(tmp_path, monkeypatch):
    """The same config with a changed data generator must not reuse old tokens: the key covers the file
    that defines the source's class."""
    import importlib.util

    from mgt.training.transformer_stage import source_code_fingerprint

    def load(name, body):
        path = tmp_path / f"{name}.py"
        path.write_text(f"class Source:\n    def __getitem__(self, i):\n        return {body}\n")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)  # as an imported module is
        spec.loader.exec_module(module)
        return module.Source()

    old, same, new = load("gen_a", "i"), load("gen_b", "i"), load("gen_c", "i + 1")
    assert source_code_fingerprint(old) == source_code_fingerprint(same)
    assert source_code_fingerprint(old) != source_code_fingerprint(new)
    assert len(source_code_fingerprint(old)) == 16


def test_damaged_token_cache_is_rebuilt_with_a_warning(workdir, tmp_path):
    import glob

    import jax

    import mgt
    from mgt import sharding
    from mgt.training.transformer_stage import TransformerStage

    copy = str(tmp_path / "cache")
    shutil.copytree(workdir, copy)
    (cache,) = glob.glob(os.path.join(copy, "transformer", "tokens_*.npz"))
    with open(cache, "rb") as f:
        good = np.load(f)["tokens"]
    with open(cache, "r+b") as f:
        f.truncate(os.path.getsize(cache) // 2)
    pipe = mgt.load_pipeline(copy)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    with jax.set_mesh(mesh):
        stage = TransformerStage(pipe.config, pipe.task, mesh, workdir=copy, tokenizer=pipe.tokenizer,
                                 tokenizer_step=pipe.steps["tokenizer"], quiet=True)
        with pytest.warns(UserWarning, match="cannot be read.*rebuilding"):
            tokens, condition = stage.token_cache()
    np.testing.assert_array_equal(tokens, good)
    assert condition["label"].dtype == np.int32 and len(condition["label"]) == len(tokens)
    assert np.load(cache)["tokens"].shape == good.shape  # written again, whole


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(workdir, tmp_path):
    from mgt.training import TrainingDiverged, train

    copy = str(tmp_path / "nan")
    shutil.copytree(workdir, copy)
    c = _load_config()
    c.transformer_train.steps = 12
    c.transformer_train.learning_rate = float("nan")
    c.checkpoint_every = 3  # the NaN of step 8 then lands on a step whose metrics are read one step late
    with pytest.raises(TrainingDiverged, match=r"at step 8; stopped. The last checkpoint is step 6"):
        train(c, copy, stage="transformer", quiet=True)
    assert sorted(int(s) for s in os.listdir(os.path.join(copy, "transformer", "checkpoints")) if s.isdigit())[-1] == 6


def test_final_step_grid_and_final_grid_come_from_one_generation(workdir, tmp_path, monkeypatch):
    """When `sample_every` divides the steps, the last step's grid and `final.png` are one generation."""
    from mgt.training import train, transformer_stage

    copy = str(tmp_path / "grids")
    shutil.copytree(workdir, copy)
    calls = []
    generate = transformer_stage.GenerationPipeline.generate
    monkeypatch.setattr(transformer_stage.GenerationPipeline, "generate",
                        lambda self, *a, **k: calls.append(1) or generate(self, *a, **k))
    c = _load_config()
    c.transformer_train.steps, c.sample_every = 10, 2
    train(c, copy, stage="transformer", quiet=True)
    samples = os.path.join(copy, "samples")
    assert len(calls) == 2  # steps 8 and 10; not a third time for final.png
    with open(os.path.join(samples, "transformer_step_000010.png"), "rb") as a, \
            open(os.path.join(samples, "final.png"), "rb") as b:
        assert a.read() == b.read()
    assert os.path.exists(os.path.join(samples, "transformer_step_000008.png"))


def test_checkpoint_of_other_shapes_is_refused_with_paths(workdir, tmp_path):
    from mgt.training import CheckpointMismatchError, train

    copy = str(tmp_path / "shapes")
    shutil.copytree(workdir, copy)
    os.remove(os.path.join(copy, "config.json"))  # pretend the config was lost: the checkpoint still guards
    c = _load_config()
    c.model.mlp_dim = 48
    with pytest.raises(CheckpointMismatchError, match=r"mlp/.*kernel"):
        train(c, copy, stage="transformer", quiet=True)


def _run_train(workdir, *extra, env=None, wait=True):
    """`mgt train --config digits.py:tiny` in a new process, sharing the session's compilation cache."""
    cmd = [sys.executable, "-m", "mgt.cli", "train", "--config", TINY, "--workdir", workdir, "--quiet", *extra]
    env = dict(os.environ, **(env or {}))
    if wait:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
        assert res.returncode == 0, res.stderr[-3000:]
        return res
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)


def _xla_flags(devices: int) -> str:
    """The session's XLA flags (see conftest) with `devices` fake CPU devices."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"


def _final_params(workdir):
    from mgt.training.checkpoint import Checkpointer

    out = {}
    for stage in ("tokenizer", "transformer"):
        ckpt = Checkpointer(os.path.join(workdir, stage, "checkpoints"))
        out[stage] = (ckpt.latest_step(), ckpt.read_arrays())
        ckpt.close()
    return out


@pytest.mark.slow
def test_kill_9_and_resume_reaches_the_same_parameters(workdir, tmp_path):
    """A run killed (SIGKILL) after its transformer's step-4 checkpoint and started again ends with the
    parameters of the uninterrupted session workdir (same config, trained in this process). The killed
    run starts from the session workdir's finished tokenizer stage, which a resumed run skips."""
    killed = str(tmp_path / "killed")
    os.makedirs(killed)
    shutil.copytree(os.path.join(workdir, "tokenizer"), os.path.join(killed, "tokenizer"))
    proc = _run_train(killed, wait=False)
    target = os.path.join(killed, "transformer", "checkpoints", "4")
    deadline = time.time() + 500
    while not os.path.isdir(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"
    from mgt.training import train  # the resumed run: in this process (the kill needed its own)

    train(_load_config(), killed, quiet=True)
    a, b = _final_params(workdir), _final_params(killed)
    for stage in a:
        assert a[stage][0] == b[stage][0] == 6
        assert len(a[stage][1]) == len(b[stage][1]) > 10
        for x, y in zip(a[stage][1], b[stage][1]):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


@pytest.mark.multidevice
def test_same_losses_on_1_and_4_devices(workdir, tmp_path):
    """Both stages on 4 CPU devices as a (data 2, fsdp 2) mesh — batches split 4 ways, parameters
    and optimiser state sharded along fsdp — log the losses of the single-device session workdir. The
    devices come from the config (`mesh.cpu_devices=4`): a 2 × 2 mesh on fewer devices would be refused."""
    sharded = str(tmp_path / "sharded")
    # one checkpoint per stage: orbax's sharded saves are slow on fake devices and prove nothing here
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    _run_train(sharded, "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.cpu_devices=4",
               "--config.sample.per_class=0", "--config.checkpoint_every=6", env={"XLA_FLAGS": flags.strip()})
    a, b = _records(workdir), _records(sharded)
    assert len(a) == len(b) == 6  # both stages, steps 2, 4, 6
    for ra, rb in zip(a, b):
        assert ra["stage"] == rb["stage"] and ra["step"] == rb["step"]
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4, abs=1e-5)


def test_cpu_devices_after_jax_started_warns_and_user_settings_win(monkeypatch):
    """In a process where JAX already ran, `mesh.cpu_devices` cannot apply: one warning names the field and
    the environment variable; JAX_NUM_CPU_DEVICES set by the user wins silently (XLA_FLAGS' device count takes
    the same early return, untested here)."""
    import warnings

    import jax

    from mgt import sharding

    monkeypatch.setenv("XLA_FLAGS", "")  # the environment is read at the call; JAX keeps what it started with
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    have = len(jax.devices("cpu"))
    with pytest.warns(UserWarning, match=rf"config.mesh.cpu_devices={have + 1} .*JAX_NUM_CPU_DEVICES={have + 1}"):
        sharding.use_cpu_devices(have + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sharding.use_cpu_devices(0)
        sharding.use_cpu_devices(have)
        monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "1")
        sharding.use_cpu_devices(have + 1)
    assert len(jax.devices("cpu")) == have
    with pytest.raises(ValueError, match=r"config.mesh.cpu_devices='two'; expected an integer"):
        sharding.use_cpu_devices("two")


@pytest.mark.multidevice
def test_two_processes_train_one_model(workdir, tmp_path):
    """Two JAX processes (2 fake CPU devices each, a (2, 2) mesh over both) train the transformer
    together from the session workdir's tokenizer checkpoint: batches are assembled from
    per-process data, checkpoints hold each process's data-iterator state, and shared files —
    metrics, token cache, samples — are written once."""
    import socket

    run = str(tmp_path / "run")
    os.makedirs(run)
    shutil.copytree(os.path.join(workdir, "tokenizer"), os.path.join(run, "tokenizer"))
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [_run_train(run, "--stage", "transformer", "--config.mesh.data=2", "--config.mesh.fsdp=2",
                        "--config.checkpoint_every=6", wait=False,
                        env={"XLA_FLAGS": _xla_flags(devices=2), "JAX_NUM_PROCESSES": "2",
                             "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_PROCESS_ID": str(i)})
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:].decode()
    records = _records(run)
    assert [(r["stage"], r["step"]) for r in records] == [("transformer", s) for s in (2, 4, 6)]
    assert all(np.isfinite(r["loss"]) for r in records)
    data = os.path.join(run, "transformer", "checkpoints", "6", "data")
    assert sorted(f for f in os.listdir(data) if f.endswith(".json")) == ["process_0-of-2.json", "process_1-of-2.json"]
    assert os.path.exists(os.path.join(run, "samples", "final.png"))
    assert len([f for f in os.listdir(os.path.join(run, "transformer")) if f.startswith("tokens_")]) == 1


def test_ar_objective_trains_with_the_same_trainer(workdir, tmp_path):
    """`--config.model.objective=ar`: the autoregressive baseline on the same modules and trainer."""
    from mgt.training import train

    copy = str(tmp_path / "ar")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "transformer"))
    os.remove(os.path.join(copy, "config.json"))
    c = _load_config()
    c.model.objective = "ar"
    c.transformer_train.steps = 3
    state = train(c, copy, stage="transformer", quiet=True)["transformer"]
    assert int(state["step"]) == 3
    losses = [r["loss"] for r in _records(copy) if r["stage"] == "transformer"]
    assert losses and all(np.isfinite(losses))


def test_quantizer_forward_writes_reach_the_trained_parameters(tmp_path):
    """k-means initialisation rewrites the codebook in the forward pass; the trainer must keep it."""
    import jax

    from mgt import sharding
    from mgt.modalities import make_task
    from mgt.training.tokenizer_stage import TokenizerStage

    c = _load_config()
    c.tokenizer.quantizer_options = {"kmeans_init": True}
    c.tokenizer_train.adversarial_weight = 0.0  # the generator's update is what keeps the write; a smaller program
    task = make_task(c)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    with jax.set_mesh(mesh):
        stage = TokenizerStage(c, task, mesh, workdir=str(tmp_path))
        state = stage.init_state()
        before = np.asarray(state["params"]["quantizer"]["codebook"][...]).copy()
        batch = stage.batch_to_device(next(stage.data_iterator()))
        state, _ = stage.train_step(state, batch, jax.random.key(0))
        after = np.asarray(state["params"]["quantizer"]["codebook"][...])
    # the learning rate is 0 at step 0 (warm-up): any change comes from the k-means initialisation
    assert np.abs(after - before).max() > 0.05
