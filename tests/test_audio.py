"""The audio modality end to end on `configs/audio/spoken_digits.py:tiny`: training (codec with its mel
losses and discriminators, SoundStorm level-wise transformer), `mgt sample` (.npz / .wav / longer
audio in windows / level plans), `mgt edit` (every VampNet prompt), `mgt reconstruct`, bad inputs,
the benchmark; and the prompt masks themselves."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from tests.conftest import ROOT, trained_once

pytest.importorskip("espeakng_loader")


def audio_config(arg="tiny"):
    spec = importlib.util.spec_from_file_location("spoken_digits_config",
                                                  os.path.join(ROOT, "configs", "audio", "spoken_digits.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="session")
def audio_workdir(tmp_path_factory):
    """Trained once per session, shared by every xdist worker (read-only)."""
    os.environ.setdefault("MGT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    return trained_once(tmp_path_factory, "audio_tiny", audio_config)


# ---- prompts as masks (no model) ------------------------------------------------------------------
def test_prompt_masks_and_their_combinations():
    from mgt.modalities.audio import prompts

    f, k = 12, 3
    assert prompts.continuation(f, k, 4)[:4].all() and not prompts.continuation(f, k, 4)[4:].any()
    keep = prompts.inpaint(f, k, 3, 7)
    assert not keep[3:7].any() and keep[:3].all() and keep[7:].all()
    assert np.flatnonzero(prompts.periodic(f, k, 4)[:, 0]).tolist() == [0, 4, 8]
    assert np.flatnonzero(prompts.periodic(f, k, 4, width=2)[:, 1]).tolist() == [0, 1, 4, 5, 8, 9]
    low = prompts.lowest_levels(f, k, 1)
    assert low[:, 0].all() and not low[:, 1:].any()
    both = prompts.periodic(f, k, 4) | low  # VampNet: periodic prompt plus the coarse level everywhere
    assert both[:, 0].all() and np.flatnonzero(both[:, 2]).tolist() == [0, 4, 8]
    assert not (prompts.periodic(f, k, 4) & low)[1:4].any()
    # onsets: two clicks in silence → the frames that hold them are kept
    rate, hop = 16000, 320
    audio = np.zeros(rate, np.float32)
    for at in (3200, 9600):
        audio[at:at + 400] = np.random.default_rng(0).uniform(-0.8, 0.8, 400)
    onset = prompts.onsets(audio, rate, hop, 50, k)
    assert onset[:, 0].sum() >= 2 and set(np.flatnonzero(onset[:, 0])) <= {8, 9, 10, 11, 28, 29, 30, 31}
    tokens = np.arange(f * k).reshape(1, f, k)
    assert (prompts.apply_prompt(tokens, keep, 99)[0, 3:7] == 99).all()
    for call, match in ((lambda: prompts.inpaint(f, k, 5, 5), "span"), (lambda: prompts.periodic(f, k, 0), "period"),
                        (lambda: prompts.lowest_levels(f, k, 4), "levels"),
                        (lambda: prompts.continuation(f, k, 13), "frames"),
                        (lambda: prompts.window_starts(20, 8, 8), "overlap")):
        with pytest.raises(ValueError, match=match):
            call()


def test_windows_overlap_and_stitch():
    from mgt.modalities.audio import prompts

    assert prompts.window_starts(20, 8, 4) == [0, 4, 8, 12]
    assert prompts.window_starts(21, 8, 4) == [0, 4, 8, 12, 13]
    assert prompts.window_starts(5, 8, 4) == [0]
    seen = []

    def generate_window(part):  # fills masks with 1 + the number of windows so far; records what it saw
        seen.append(part.copy())
        return np.where(part == -1, len(seen), part)

    tokens = np.full((2, 20, 2), -1)
    tokens[:, :3] = 0  # a given prompt
    out = prompts.fill_in_windows(generate_window, tokens, -1, 8, 4)
    assert (out[:, :3] == 0).all() and (out != -1).all()
    assert len(seen) == 4
    # every later window is given the frames the one before it generated (the overlap): it stitches
    for before, after in zip(seen, seen[1:]):
        assert (after[:, :4] != -1).all()
    short = prompts.fill_in_windows(generate_window, np.full((1, 5, 2), -1), -1, 8, 4)
    assert short.shape == (1, 5, 2) and (short != -1).all()


# ---- the trained :tiny workdir ------------------------------------------------------------------------
def test_audio_workdir_samples_edits_and_reconstructs(audio_workdir, tmp_path, capsys):
    from mgt.cli import main

    records = [json.loads(line) for line in open(os.path.join(audio_workdir, "metrics.jsonl"))]
    tokenizer_keys = set().union(*(r for r in records if r.get("stage") == "tokenizer"))
    assert {"mel", "adversarial", "feature_matching", "discriminator_loss"} <= tokenizer_keys

    npz = str(tmp_path / "s.npz")
    assert main(["sample", "--workdir", audio_workdir, "--labels", "3,7", "--num", "3", "--out", npz]) == 0
    with np.load(npz) as f:
        audio, rate, labels = f["audio"], int(f["sample_rate"]), f["labels"]
    assert audio.dtype == np.float32 and audio.shape == (3, 2560) and rate == 8000
    assert labels.tolist() == [3, 7, 3] and np.abs(audio).max() <= 1.0
    wav = str(tmp_path / "w.wav")
    assert main(["sample", "--workdir", audio_workdir, "--labels", "1", "--num", "2", "--stages", "flat",
                 "--out", wav]) == 0
    assert os.path.exists(tmp_path / "w_000_label1.wav") and os.path.exists(tmp_path / "w_001_label1.wav")
    assert os.path.exists(tmp_path / "w.png")
    longer = str(tmp_path / "long.npz")  # 0.4 s at 8 kHz: 10 token frames from windows of 8
    assert main(["sample", "--workdir", audio_workdir, "--labels", "2", "--num", "1", "--seconds", "0.4",
                 "--typical-p", "0.9", "--out", longer]) == 0
    assert np.load(longer)["audio"].shape == (1, 3200)

    # every edit on the sampled clips: the output keeps N and the length
    edits = {"continue": ["--prompt-seconds", "0.05"], "inpaint": ["--span", "0.04,0.1"],
             "periodic": ["--period", "2", "--onsets"], "variation": ["--levels", "1"]}
    for name, extra in edits.items():
        out = str(tmp_path / f"{name}.npz")
        assert main(["edit", "--workdir", audio_workdir, "--task", name, *extra, "--input", npz, "--steps", "2",
                     "--out", out]) == 0, name
        with np.load(out) as f:
            assert f["audio"].shape == (3, 2560) and f["labels"].tolist() == [3, 7, 3]
    # a stereo 22.05 kHz file is mixed down and resampled (a note), and needs --labels for this model
    import soundfile

    stereo = str(tmp_path / "stereo.wav")
    soundfile.write(stereo, np.random.default_rng(0).uniform(-0.3, 0.3, (4410, 2)).astype(np.float32), 22050)
    capsys.readouterr()
    assert main(["edit", "--workdir", audio_workdir, "--task", "continue", "--prompt-seconds", "0.1",
                 "--input", stereo, "--labels", "4", "--steps", "2", "--out", str(tmp_path / "e.wav")]) == 0
    assert "resampled from 22050 Hz to 8000 Hz" in capsys.readouterr().err
    assert soundfile.info(str(tmp_path / "e_000_label4.wav")).frames == 1600

    # mgt reconstruct keeps N, the rate and the length (any length)
    recon = str(tmp_path / "r.npz")
    assert main(["reconstruct", "--workdir", audio_workdir, "--input", longer, "--out", recon]) == 0
    assert np.load(recon)["audio"].shape == (1, 3200) and int(np.load(recon)["sample_rate"]) == 8000
    assert main(["reconstruct", "--workdir", audio_workdir, "--input", stereo, "--out",
                 str(tmp_path / "r.wav")]) == 0
    assert soundfile.info(str(tmp_path / "r_000.wav")).frames == 1600

    # bad inputs: one-line errors that name the argument
    empty = str(tmp_path / "empty.wav")
    soundfile.write(empty, np.zeros((0,), np.float32), 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    base = ["edit", "--workdir", audio_workdir, "--steps", "2", "--out", str(tmp_path / "bad.npz")]
    for args, match in (
            (["--task", "continue", "--prompt-seconds", "0.5", "--input", npz], "--prompt-seconds"),
            (["--task", "variation", "--levels", "3", "--input", npz], "--levels"),
            (["--task", "inpaint", "--span", "0.1,0.9", "--input", npz], "--span"),
            (["--task", "periodic", "--input", npz], "--period"),
            (["--task", "variation", "--input", npz], "--levels"),
            (["--task", "continue", "--prompt-seconds", "0.05", "--input", empty, "--labels", "1"], "--input"),
            (["--task", "continue", "--prompt-seconds", "0.05", "--input", str(junk), "--labels", "1"], "--input"),
            (["--task", "continue", "--prompt-seconds", "0.05", "--input", stereo], "--labels")):
        capsys.readouterr()
        assert main(base + args) == 1, args
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert main(["sample", "--workdir", audio_workdir, "--stages", "1,2,3", "--out", npz]) == 1
    assert "--stages" in capsys.readouterr().err


def test_audio_quality_benchmark_smoke(audio_workdir, tmp_path):
    spec = importlib.util.spec_from_file_location("mgt_benchmark_audio_quality",
                                                  os.path.join(ROOT, "benchmarks", "audio_quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "a.json"
    record = module.main(["--workdir", audio_workdir, "--clips", "4", "--per-class", "1", "--steps", "2",
                          "--prompt-seconds", "0.05", "--no-speed", "--json", str(out)])
    assert json.loads(out.read_text())["clips"] == 4
    c = record["codec"]
    assert c["bitrate_bps"] == pytest.approx(25 * 2 * 4) and len(c["usage_per_level"]) == 2
    assert np.isfinite(c["mel_distance"]) and np.isfinite(c["si_sdr"])
    g = record["generation"]
    assert g["samples"] == 10 and 0 <= g["samples_labelled_with_their_class"] <= 1
    assert record["continuation"]["clips"] == 4


@pytest.mark.parametrize("name,grid,levels", [("speech16k", (150,), 12), ("music44k", (430,), 9)])
def test_dac_recipes_build_on_their_token_grids(name, grid, levels):
    """The DAC-size recipes: 50 / 86 frames per second, 12 / 9 levels of 1024 codes, the folder source
    (built abstractly: nothing is initialised or compiled)."""
    from flax import nnx

    from mgt.modalities import make_task
    from mgt.training import builders

    for arg in ("", "runlocal"):
        spec = importlib.util.spec_from_file_location(f"audio_{name}", os.path.join(ROOT, "configs", "audio",
                                                                                   f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        c = module.get_config(arg)
        task = make_task(c)
        tokens = nnx.eval_shape(lambda: builders.make_tokenizer(c)).token_spec(task.input_shape)
        assert tokens.grid == grid and tokens.num_levels == levels
        assert tokens.codebook_size == (64 if arg else 1024)
        assert builders.transformer_config(c, tokens).num_levels == levels
    with pytest.raises(ValueError, match="config.data.path"):
        task.source("train")


def test_eval_audio_workdir(audio_workdir, tmp_path):
    """`mgt eval` on the tiny spoken-digits workdir: FAD with the spoken-digits network (random weights)
    and DAC's codec distances of the tokenizer's reconstructions."""
    from mgt.cli import main

    out = tmp_path / "m.json"
    assert main(["eval", "--workdir", audio_workdir, "--metrics", "fad,mel_distance,stft_distance,si_sdr",
                 "--num", "6", "--batch-size", "6", "--num-reference", "12", "--steps", "2", "--random-features",
                 "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["fad"] > 0 and result["mel_distance"] > 0 and result["stft_distance"] > 0
    assert np.isfinite(result["si_sdr"])
    assert result["setup"]["features"]["audio"]["network"] == "small_spoken_digits"
    assert result["setup"]["checkpoint_steps"]["tokenizer"] >= 1
