"""Workdirs that survive damage and sharing, system errors as one line, inputs read as the user meant.

Each test reproduces a failure a user met (issue #16) on a copy of the session's `:tiny` workdir."""

import glob
import json
import os
import shutil

import numpy as np
import pytest

from mgt import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "image", "digits.py") + ":tiny"


def _copy(tiny_workdir, tmp_path, name="w"):
    path = str(tmp_path / name)
    shutil.copytree(tiny_workdir, path)
    return path


def _truncate_arrays(step_dir):
    """Cut every array data file of a checkpoint step in half (a crash or a full disk mid-copy)."""
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True) if os.path.isfile(f)]
    assert files
    for f in files:
        with open(f, "r+b") as handle:
            handle.truncate(os.path.getsize(f) // 2)


def _config(**overrides):
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_config", os.path.join(ROOT, "configs", "image", "digits.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("tiny")
    for dotted, value in overrides.items():
        section, field = dotted.split("__")
        c[section][field] = value
    return c


def test_damaged_newest_checkpoint_falls_back_for_sampling_and_training(tiny_workdir, tmp_path, capsys):
    from mgt.training import train
    from mgt.training.checkpoint import Checkpointer

    w = _copy(tiny_workdir, tmp_path)
    ckpts = os.path.join(w, "transformer", "checkpoints")
    _truncate_arrays(os.path.join(ckpts, "6"))
    out = str(tmp_path / "s.npz")
    assert cli.main(["sample", "--workdir", w, "--labels", "1", "--num", "2", "--steps", "2", "--out", out]) == 0
    err = capsys.readouterr().err
    assert "transformer checkpoint step(s) [6]" in err and "damaged" in err and "using step 4" in err
    assert "Traceback" not in err
    # emptied metadata of the tokenizer's newest step: the same fallback
    with open(os.path.join(w, "tokenizer", "checkpoints", "6", "state", "_METADATA"), "w"):
        pass
    # training resumes from the newest good step and moves the damaged one aside
    train(_config(), w, stage="transformer", quiet=True)
    assert os.listdir(os.path.join(w, "transformer", "damaged_checkpoints"))[0].startswith("6_")
    ckpt = Checkpointer(ckpts)
    assert ckpt.latest_step() == 6 and len(ckpt.read_arrays(6)) > 10  # trained again from step 4
    ckpt.close()
    # nothing readable: one line
    for step in os.listdir(ckpts):
        if step.isdigit():
            _truncate_arrays(os.path.join(ckpts, step))
    assert cli.main(["sample", "--workdir", w, "--out", out]) == 1
    err = capsys.readouterr().err
    assert "no readable checkpoint" in err and "Traceback" not in err


def test_one_training_process_per_workdir(tiny_workdir, tmp_path, capsys):
    from mgt.training.workdir_lock import WorkdirBusyError, WorkdirLock

    w = _copy(tiny_workdir, tmp_path)
    lock = WorkdirLock(w).acquire()
    try:
        assert cli.main(["train", "--config", TINY, "--workdir", w]) == 1
        err = capsys.readouterr().err
        assert f"in use by another mgt train (PID {os.getpid()}" in err and "Traceback" not in err
        with pytest.raises(WorkdirBusyError):
            WorkdirLock(w).acquire()
    finally:
        lock.release()
    # a lock file left by a dead process (kill -9) holds no lock: the next run takes it over
    with open(os.path.join(w, ".lock"), "w") as f:
        json.dump({"pid": 999999, "host": "gone"}, f)
    with WorkdirLock(w) as taken:
        assert json.load(open(taken.path))["pid"] == os.getpid()


def test_divergence_is_reported_and_sampling_warns(tiny_workdir, tmp_path, capsys):
    from mgt.training.loop import _divergence_message, diverged_warning

    w = _copy(tiny_workdir, tmp_path)
    history = [(1, 3.5), (2, 3.1), (3, 40.0), (4, 1.25e9)]
    msg = _divergence_message("transformer", "loss", float("nan"), 5, 4, history, w)
    assert "had grown from 3.1 to 1.25e+09 (step 4)" in msg and "last checkpoint is step 4" in msg
    assert "earlier one" in msg
    assert diverged_warning("transformer", w, 4) and diverged_warning("transformer", w, 2) is None
    record = json.load(open(os.path.join(w, "transformer", "diverged.json")))
    assert record["last_checkpoint"] == 4 and record["loss_grew"]
    # a NaN without growth says only that
    calm = _divergence_message("transformer", "loss", float("nan"), 5, 4, [(1, 3.5), (2, 3.4)], w)
    assert "grown" not in calm
    # mgt sample warns when the newest checkpoint is the last one before divergence
    json.dump({"step": 7, "last_checkpoint": 6, "loss_grew": True, "loss_min": 3.0, "loss_peak": 1e9},
              open(os.path.join(w, "transformer", "diverged.json"), "w"))
    assert cli.main(["sample", "--workdir", w, "--labels", "2", "--steps", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert "saved shortly before training diverged at step 7" in capsys.readouterr().err


def test_system_errors_are_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert cli.main(["train", "--config", TINY, "--workdir", str(afile)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mgt train: error: File exists") and str(afile) in err and "Traceback" not in err
    assert cli.main(["sample", "--workdir", str(afile), "--out", "x.png"]) == 1
    assert "not an mgt workdir" in capsys.readouterr().err


def test_config_errors_name_the_field_and_the_flag(tmp_path, capsys):
    w = str(tmp_path / "w")
    assert cli.main(["train", "--config", TINY, "--workdir", w, "--config.nonexistent=3"]) == 1
    assert "--config.nonexistent: the config has no field 'nonexistent'" in capsys.readouterr().err
    assert cli.main(["train", "--config", TINY, "--workdir", w, "--config.modl.num_layers=2"]) == 1
    assert "nearest: model" in capsys.readouterr().err
    assert cli.main(["train", "--config", TINY, "--workdir", w, "--stage", "bogus"]) == 1
    err = capsys.readouterr().err
    assert "flag --stage=bogus: value should be one of" in err and "--config" not in err
    assert not os.path.exists(w)


def test_sampling_in_batches_is_the_same_and_streams_npz(tiny_workdir, tmp_path):
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    common = ["sample", "--workdir", tiny_workdir, "--labels", "1,2,3", "--num", "5", "--steps", "2"]
    assert cli.main(common + ["--out", a]) == 0
    assert cli.main(common + ["--batch-size", "2", "--out", b]) == 0
    x, y = np.load(a), np.load(b)
    assert x["images"].shape == (5, 16, 16, 3) and y["labels"].tolist() == [1, 2, 3, 1, 2]
    # one key per sample: batching changes nothing but the decoder's float rounding (XLA compiles each batch
    # shape on its own), at most one uint8 step on a few pixels
    diff = np.abs(x["images"].astype(np.int16) - y["images"].astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert not os.path.exists(b + ".partial")


def test_image_files_read_as_meant(tmp_path, capsys):
    from PIL import Image

    from mgt.modalities import make_task
    from mgt.modalities.image.io import read_rgb

    task = make_task(_config())
    # 16-bit greyscale: scaled from 16 bits, not clipped to white
    ramp = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    rgb = read_rgb(str(tmp_path / "grey16.png"))
    assert rgb.dtype == np.uint8 and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 100 < rgb.mean() < 155
    # transparency: composited onto white, and said so
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[:8, :, 3] = 255, 255  # top half opaque red, bottom transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = task.read_input(str(tmp_path / "rgba.png"))
    assert np.allclose(image[0, 0], [1, 0, 0]) and np.allclose(image[-1, -1], [1, 1, 1])
    assert "transparent pixels: composited onto white" in capsys.readouterr().err
    # an image below the model's resolution is upscaled with a warning
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tmp_path / "dot.png")
    assert task.read_input(str(tmp_path / "dot.png")).shape == (16, 16, 3)
    assert "1x1 pixels, smaller than the model's 16x16: upscaled" in capsys.readouterr().err
    # a decompression bomb: one line with the size and the limit
    Image.new("L", (64, 64)).save(tmp_path / "bomb.png")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000
    try:
        with pytest.raises(ValueError, match=r"--image .*bomb.png.*4096 pixels.*exceeds limit"):
            task.read_input(str(tmp_path / "bomb.png"))
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def test_folder_source_reads_each_file_once_through_link_loops(tmp_path, caplog):
    from PIL import Image

    from mgt.modalities.image import ImageFolderSource

    for name, count in (("a", 3), ("b", 2)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    os.symlink(tmp_path / "data" / "a", tmp_path / "data" / "a" / "loop")  # a folder that contains itself
    os.symlink(tmp_path / "data" / "b" / "0.png", tmp_path / "data" / "b" / "again.png")  # one file, two names
    source = ImageFolderSource(str(tmp_path / "data"))
    assert np.bincount(source.labels).tolist() == [3, 2]
    assert "lead back to folders already read" in caplog.text
