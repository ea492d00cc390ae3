"""The video modality: moving digits, the 3D tokenizer (causal option, 2D → 3D inflation), the video
task's files, and a `:tiny` video workdir trained, sampled and read back through the CLI."""

from __future__ import annotations

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mgt.modalities.video.sources import MovingDigitsSource, VideoArraySource, VideoFolderSource
from tests.conftest import trained_once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO_CONFIG = os.path.join(ROOT, "configs", "video", "moving_digits.py")


def _config(path: str, arg: str):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3] + "_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def video_config(arg: str = "tiny"):
    return _config(VIDEO_CONFIG, arg)


def test_moving_digits_are_seeded_bounce_and_split_like_the_image_digits():
    from mgt.modalities.image.sources import DigitsSource

    a, b = MovingDigitsSource("train", num_clips=50), MovingDigitsSource("train", num_clips=50)
    clip = a[7]
    assert clip["video"].shape == (8, 32, 32, 1) and clip["video"].dtype == np.uint8
    np.testing.assert_array_equal(clip["video"], b[7]["video"])  # a function of (seed, split, index)
    assert not np.array_equal(a[7]["video"], a[8]["video"])
    assert [int(a[i]["label"]) for i in range(50)] == a.labels.tolist()
    # the digit moves 1-3 px per frame along each axis and stays whole inside the frame
    for i in range(20):
        v = a[i]["video"][..., 0].astype(np.float64)
        ink = v.sum(axis=(1, 2))
        assert np.allclose(ink, ink[0])  # never clipped by an edge
        ys, xs = np.arange(32), np.arange(32)
        cy, cx = (v.sum(2) @ ys) / ink, (v.sum(1) @ xs) / ink
        steps = np.abs(np.diff(np.stack([cy, cx], 1), axis=0))
        assert steps.max() <= 3 + 1e-6 and steps.min() >= 0
    # test clips draw test digits only: the image digits' split
    test, train = DigitsSource(16, "test"), DigitsSource(16, "train")
    assert len(MovingDigitsSource("test").digits) == len(test) and len(a.digits) == len(train)
    two = MovingDigitsSource("train", num_digits=2, num_clips=4)[0]["video"]
    assert two.shape == (8, 32, 32, 1)
    with pytest.raises(ValueError, match="split"):
        MovingDigitsSource("valid")


def test_class_consistency_reads_uint8_and_overshooting_float_clips_alike():
    """The digit classifier's reading of clips: the scale comes from the dtype, so a generated float clip
    that overshoots 1 somewhere (decoders are not clipped) is not mistaken for a 0–255 one."""
    from mgt.modalities.video import metrics

    source = MovingDigitsSource("test", num_clips=6)
    clips = np.stack([source[i]["video"] for i in range(6)])  # uint8 [6, 8, 32, 32, 1]
    floats = clips.astype(np.float32) / 255.0
    full = floats >= 1.0
    assert full.any()
    floats[full] = 1.6  # the digit's brightest pixels overshoot (clipped, they read as before)
    reads = [metrics.class_consistency(x, source.labels[:6]) for x in (clips, floats)]
    assert reads[0] == reads[1] and reads[0]["frame_class_accuracy"] >= 0.75


def test_class_consistency_breakdown_majority_per_class_and_confusion(monkeypatch):
    """Clip-majority accuracy (a tie is not a majority), per-class frame accuracy and the confusion
    matrix, on fixed frame readings; labels outside the ten digits are an error naming `labels`."""
    from mgt.modalities.video import metrics

    read = np.array([[3, 3, 3, 5], [5, 5, 3, 3], [1, 1, 1, 1]])  # 3/4 right, a 2–2 tie, all right
    monkeypatch.setattr(metrics, "frame_digit_labels", lambda videos: read)
    r = metrics.class_consistency(np.zeros((3, 4, 8, 8, 1), np.uint8), [3, 3, 1], per_class=True)
    assert r["frame_class_accuracy"] == pytest.approx(9 / 12)
    assert r["clip_majority_accuracy"] == pytest.approx(2 / 3)
    assert r["label_flips_per_clip"] == pytest.approx(2 / 3)
    assert r["per_class_frame_accuracy"][3] == pytest.approx(5 / 8) and r["per_class_frame_accuracy"][1] == 1.0
    assert r["per_class_frame_accuracy"][0] is None
    assert r["confusion"][3][5] == 3 and r["confusion"][3][3] == 5 and sum(map(sum, r["confusion"])) == 12
    with pytest.raises(ValueError, match="labels must be digit classes"):
        metrics.class_consistency(np.zeros((3, 4, 8, 8, 1), np.uint8), [3, 12, 1])


def test_motion_and_diversity_of_moving_still_and_repeated_clips():
    """Ink speed: a square moving 2 px right per frame reads 2, a still one 0; within-class distance: a
    class of identical clips reads 0, two different clips of a class read their mean grey difference."""
    from mgt.modalities.video import metrics

    clips = np.zeros((4, 5, 16, 16, 1), np.float32)
    for t in range(5):
        clips[0, t, 4:8, 2 + 2 * t:6 + 2 * t] = 1.0  # moving
        clips[1, t, 4:8, 2:6] = 1.0  # still
    clips[2] = clips[3] = clips[1]
    r = metrics.motion_and_diversity(clips[:2])
    assert r["ink_speed"] == pytest.approx(1.0, abs=1e-4)  # (2 + 0) / 2
    assert r["within_class_distance"] == pytest.approx(np.abs(clips[0] - clips[1]).mean(), abs=1e-6)
    same = metrics.motion_and_diversity(clips[1:], labels=[5, 5, 5])
    assert same["ink_speed"] == pytest.approx(0.0, abs=1e-4) and same["within_class_distance"] == 0.0
    assert np.isnan(metrics.motion_and_diversity(clips[:2], labels=[0, 1])["within_class_distance"])


def test_video_folder_and_array_sources(tmp_path):
    from mgt.modalities.video.io import write_video

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rng = np.random.default_rng(0)
    write_video(str(tmp_path / "a" / "x.gif"), rng.integers(0, 255, (10, 20, 24, 3), dtype=np.uint8))
    write_video(str(tmp_path / "b" / "y.gif"), rng.integers(0, 255, (4, 20, 24, 3), dtype=np.uint8))
    (tmp_path / "b" / "broken.gif").write_bytes(b"not a gif")
    src = VideoFolderSource(str(tmp_path), num_frames=4, size=16, stride=3)
    assert len(src) == 3 + 1 and src.skipped == 1 and src.class_names == ["a", "b"]
    assert src[0]["video"].shape == (4, 16, 16, 3) and src.labels.tolist() == [0, 0, 0, 1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no video files"):
        VideoFolderSource(str(tmp_path / "empty"), num_frames=4)
    arr = VideoArraySource(np.zeros((3, 4, 8, 8), np.float32))
    assert arr[2]["video"].shape == (4, 8, 8, 1) and arr[2]["video"].dtype == np.uint8
    with pytest.raises(ValueError, match=r"\[N, T, H, W, C\]"):
        VideoArraySource(np.zeros((3, 8, 8)))


def _tiny3d(**kw):
    from mgt.tokenizers.vqgan3d import VQGAN3D

    sizes = dict(video_channels=1, base_channels=8, channel_multipliers=(1, 2), temporal_downsample=(True,),
                 num_res_blocks=1, embedding_dim=8, codebook_size=16, num_groups=4)
    return VQGAN3D(**{**sizes, **kw}, rngs=nnx.Rngs(0))


def test_causal_tokenizer_first_frame_alone_and_later_frames_never_change_earlier_tokens():
    model = _tiny3d(causal=True)
    x = jax.random.uniform(jax.random.key(1), (2, 5, 8, 8, 1))
    encode = nnx.jit(lambda m, v: m.encode(v))
    tokens = encode(model, x)
    assert tokens.shape == (2, 3, 4, 4) and model.token_spec((5, 8, 8, 1)).grid == (3, 4, 4)
    np.testing.assert_array_equal(encode(model, x[:, :3]), tokens[:, :2])  # a prefix chunk: the same tokens
    np.testing.assert_array_equal(encode(model, x[:, :1]), tokens[:, :1])  # an image: the first token frame
    lat = nnx.jit(lambda m, v: m.encode_latents(v))
    changed = x.at[:, 3:].set(0.0)
    np.testing.assert_allclose(lat(model, changed)[:, :2], lat(model, x)[:, :2], rtol=1e-5, atol=1e-6)
    assert model.decode(tokens).shape == (2, 5, 8, 8, 1)
    # the non-causal model's frames see the future
    full = _tiny3d()
    assert not np.allclose(lat(full, changed[:, :4])[:, :1], lat(full, x[:, :4])[:, :1])
    with pytest.raises(ValueError, match="frames - 1 must be a multiple"):
        model.encode(x[:, :4])
    with pytest.raises(ValueError, match="must be a multiple of the temporal downsampling factor 2"):
        full.encode(x)
    # tubelets: 2 × 4 × 4 pixels folded into a cell; the token grid and the shapes follow (abstractly)
    tube = _tiny3d(patch_size=4, temporal_patch_size=2, channel_multipliers=(1,), temporal_downsample=())
    assert tube.token_spec((8, 16, 16, 1)).grid == (4, 4, 4)
    roundtrip = jax.eval_shape(lambda v: tube.decode(tube.encode(v)), jnp.zeros((2, 8, 16, 16, 1)))
    assert roundtrip.shape == (2, 8, 16, 16, 1)
    with pytest.raises(ValueError, match="temporal_patch_size=1"):
        _tiny3d(causal=True, temporal_patch_size=2)


def test_position_norm_and_a_patch_local_encoder_give_an_empty_cell_one_code():
    """norm="position" with encoder_kernel_size=1 on folded tubelets: a cell's latent depends on its own
    pixels alone, so the empty cells of every clip share one latent (one code); the default MAGVIT
    layout spreads a digit over the whole clip's latents."""
    x = jnp.zeros((2, 4, 16, 16, 1)).at[0, :2, :4, :4].set(1.0)  # something in the first cell of clip 0
    tubes = dict(patch_size=4, temporal_patch_size=2, channel_multipliers=(1,), temporal_downsample=())
    local = _tiny3d(**tubes, norm="position", encoder_kernel_size=1)
    z = local.encode_latents(x)  # [2, 2, 4, 4, 8]
    moved = np.asarray(jnp.abs(z[0] - z[1]).max(-1) > 0)
    assert moved[0, 0, 0] and moved.sum() == 1
    wide = _tiny3d(**tubes).encode_latents(x)
    assert np.asarray(jnp.abs(wide[0] - wide[1]).max(-1) > 0).sum() > 1
    with pytest.raises(ValueError, match="encoder_kernel_size must be odd"):
        _tiny3d(encoder_kernel_size=2)
    with pytest.raises(ValueError, match="VQGAN3DConfig.norm must be one of"):
        _tiny3d(norm="layer")


def test_token_group_hands_each_block_of_codes_to_one_cell():
    """token_group=2: the same codes, each 2 × 2 block of a frame's map one cell of 4 levels."""
    tubes = dict(patch_size=4, temporal_patch_size=2, channel_multipliers=(1,), temporal_downsample=())
    plain, grouped = _tiny3d(**tubes), _tiny3d(**tubes, token_group=2)
    nnx.update(grouped, nnx.state(plain))
    x = jax.random.uniform(jax.random.key(0), (2, 4, 16, 16, 1))
    codes, cells = np.asarray(plain.encode(x)), np.asarray(grouped.encode(x))  # [2, 2, 4, 4], [2, 2, 2, 2, 4]
    assert cells.shape == (2, 2, 2, 2, 4) and grouped.token_spec((4, 16, 16, 1)).num_levels == 4
    np.testing.assert_array_equal(cells[:, :, 1, 0], codes[:, :, 2:4, 0:2].reshape(2, 2, 4))
    np.testing.assert_allclose(np.asarray(grouped.decode(cells)), np.asarray(plain.decode(codes)), atol=1e-6)
    with pytest.raises(ValueError, match="tokens must be .* \\+ \\[4\\] \\(token_group=2\\)"):
        grouped.decode(codes)
    with pytest.raises(ValueError, match="multiples of the spatial downsampling factor 8"):
        grouped.encode(jnp.zeros((1, 4, 12, 12, 1)))


def test_inflated_tokenizer_reproduces_the_image_tokenizer_on_a_static_video(tiny_workdir):
    """`--config.tokenizer.inflate_from=<image workdir>`: generator and EMA weights inflated ("central");
    a video of one repeated image tokenizes and decodes frame by frame as the image tokenizer does."""
    from mgt.training import trainer
    from mgt.training.tokenizer_stage import TokenizerStage

    image_config = _config(os.path.join(ROOT, "configs", "image", "digits.py"), "tiny")
    c = video_config()
    c.data.channels = 3
    c.data.image_size = image_config.data.image_size
    for key in ("base_channels", "channel_multipliers", "num_res_blocks", "embedding_dim", "codebook_size",
                "num_groups", "commitment_cost", "entropy_cost"):
        c.tokenizer[key] = image_config.tokenizer[key]
    c.tokenizer.video_channels = 3
    c.tokenizer.patch_size = 1
    c.tokenizer.token_group = 1  # the image tokenizer's token layout, frame by frame
    c.tokenizer.temporal_downsample = (True, False)
    c.tokenizer.shortcut = "output"
    c.tokenizer.inflate_from = tiny_workdir
    task = trainer.make_task(c)
    mesh = trainer.make_mesh(c)
    with jax.set_mesh(mesh):
        stage = TokenizerStage(c, task, mesh, workdir="unused")
        state = stage.init_state()
        video_tok = stage.model_from_state(state)
    image_pipe = trainer.load_pipeline(tiny_workdir)
    image_tok = image_pipe.tokenizer  # EMA weights, as the inflated model's
    images = jnp.asarray(image_pipe.task.examples("test", 2))  # [2, 16, 16, 3]
    static = jnp.repeat(images[:, None], 4, axis=1)  # [2, 4, 16, 16, 3]
    roundtrip = nnx.jit(lambda m, x: (m.encode(x), m.decode(m.encode(x))))
    (tok2d, dec2d), (tok3d, dec3d) = roundtrip(image_tok, images), roundtrip(video_tok, static)
    assert tok3d.shape == (2, 2) + tok2d.shape[1:]
    np.testing.assert_array_equal(tok3d, np.repeat(np.asarray(tok2d)[:, None], 2, axis=1))
    for t in range(4):
        np.testing.assert_allclose(dec3d[:, t], dec2d, rtol=1e-4, atol=1e-4)
    c.tokenizer.shortcut = "input"
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="shortcut='output'"):
        TokenizerStage(c, task, mesh, workdir="unused").init_state()
    c.tokenizer.shortcut, c.tokenizer.norm = "output", "position"  # the image tokenizer's norm is "group"
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="config.tokenizer.norm='position', but the tokenizer"):
        TokenizerStage(c, task, mesh, workdir="unused").init_state()


def test_discriminators_for_video_take_clips():
    """3D (MAGVIT) and per-frame discriminators map clips to one logit each (R1 and the GAN terms are
    the image objective's functions, tested with the image tokenizer)."""
    from mgt.tokenizers.video_losses import VideoTokenizerObjective

    tc = video_config().tokenizer_train
    tc.adversarial_weight, tc.discriminator_channels = 0.1, 4
    x = jax.random.uniform(jax.random.key(0), (2, 4, 16, 16, 1))
    for kind in ("3d", "frames"):
        tc.discriminator = kind
        disc = VideoTokenizerObjective(tc, (4, 16, 16, 1), 0).make_discriminator()
        logits = nnx.jit(lambda d, v: d(v))(disc, x)
        assert logits.shape == (2,) and logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    tc.discriminator = "2d"
    with pytest.raises(ValueError, match="discriminator='2d'"):
        VideoTokenizerObjective(tc, (4, 16, 16, 1), 0)


@pytest.fixture(scope="session")
def video_workdir(tmp_path_factory):
    """Trained once per session, shared by every xdist worker (read-only)."""
    return trained_once(tmp_path_factory, "video_tiny", video_config)


def test_video_workdir_trains_samples_and_reads_back(video_workdir, tmp_path, capsys):
    from mgt.cli import main

    records = [json.loads(line) for line in open(os.path.join(video_workdir, "metrics.jsonl"))]
    assert {r["stage"] for r in records} == {"tokenizer", "transformer"}
    # the input-patch head (the config's) trains beside the codes, its error logged on its own
    patch = [r["patch_mse"] for r in records if r["stage"] == "transformer" and "patch_mse" in r]
    assert patch and all(0 < p < 10 for p in patch)
    assert os.path.exists(os.path.join(video_workdir, "samples", "final.gif"))
    for ext in ("npz", "gif", "png", "mp4"):
        out = str(tmp_path / f"c.{ext}")
        assert main(["sample", "--workdir", video_workdir, "--labels", "3,7", "--num", "3", "--out", out]) == 0
    with np.load(tmp_path / "c.npz") as f:
        assert f["videos"].shape == (3, 4, 32, 32, 1) and f["videos"].dtype == np.uint8
        assert f["labels"].tolist() == [3, 7, 3]
        first = f["videos"]
    # the config's sampling (sketch guidance, temperature annealed to 0.5, guidance ramped up linearly) overridden
    # from the command line
    out = str(tmp_path / "c0.npz")
    assert main(["sample", "--workdir", video_workdir, "--labels", "3,7", "--num", "3", "--sketch-guidance", "0",
                 "--temperature-final", "0.05", "--guidance-schedule", "constant", "--out", out]) == 0
    with np.load(out) as f:
        assert f["videos"].shape == first.shape and not np.array_equal(f["videos"], first)
    from mgt.modalities.video.io import read_frames

    assert read_frames(str(tmp_path / "c.gif")).shape[0] == 4 and read_frames(str(tmp_path / "c.mp4")).shape[0] == 4
    from mgt.training.trainer import load_pipeline

    task = load_pipeline(video_workdir).task
    clips = task.read_clips(str(tmp_path / "c.npz"))
    assert clips.shape == (3, 4, 32, 32, 1) and clips.dtype == np.float32
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, videos=np.zeros((2, 4, 32, 32, 3), np.uint8))
    assert task.read_clips(str(rgb)).shape == (2, 4, 32, 32, 1)  # channels converted to the model's
    np.savez(tmp_path / "long.npz", videos=np.zeros((1, 6, 32, 32, 1), np.uint8))
    with pytest.raises(ValueError, match="--input .*6 frames of 32x32; the model takes 4 frames of 32x32"):
        task.read_clips(str(tmp_path / "long.npz"))
    capsys.readouterr()
    bad = str(tmp_path / "bad")
    assert main(["train", "--config", VIDEO_CONFIG + ":tiny", "--workdir", bad, "--config.data.num_frames=5"]) == 1
    err = capsys.readouterr().err
    assert "temporal downsampling factor 2" in err and "5 frames" in err and "Traceback" not in err
    assert not os.path.exists(bad)
    assert main(["sample", "--workdir", video_workdir, "--out", str(tmp_path / "c.txt")]) == 1
    err = capsys.readouterr().err
    assert "--out" in err and ".gif" in err and "Traceback" not in err


def test_video_edits_run_every_commit_task_reject_bad_inputs_and_benchmark(video_workdir, tmp_path, capsys,
                                                                          monkeypatch):
    """`mgt edit` on the :tiny multi-task workdir: each COMMIT task end to end on an .npz of clips (the
    output keeps N, T, H, W); every bad input is a one-line error naming the argument; then the video
    quality benchmark on the same workdir."""
    from mgt.cli import main
    from mgt.training.trainer import load_pipeline

    task = load_pipeline(video_workdir).task
    clips = np.round(task.examples("test", 2) * 255).astype(np.uint8)  # [2, 4, 32, 32, 1]
    src = str(tmp_path / "in.npz")
    np.savez(src, videos=np.repeat(clips, 3, axis=-1), labels=np.array([3, 7], np.int32))  # RGB in, grey model
    edit = ["edit", "--workdir", video_workdir, "--input", src, "--steps", "2"]
    for args in (["--task", "frame_prediction"], ["--task", "interpolation", "--cond-frames", "1"],
                 ["--task", "outpaint", "--region", "horizontal"], ["--task", "inpaint", "--region", "moving"],
                 ["--task", "inpaint", "--box", "8,8,16,16", "--labels", "1"]):
        out = str(tmp_path / "out.npz")
        assert main(edit + args + ["--out", out]) == 0, args
        with np.load(out) as f:
            assert f["videos"].shape == (2, 4, 32, 32, 1) and f["videos"].dtype == np.uint8
            assert f["labels"].tolist() == ([1, 1] if "--labels" in args else [3, 7])
    assert main(edit + ["--task", "outpaint", "--out", str(tmp_path / "out.gif")]) == 0
    # without --steps a video edit decodes in the config's sample.num_steps (4 in :tiny), not the image default 12
    from mgt.pipeline import GenerationPipeline

    steps, generate = [], GenerationPipeline.generate
    monkeypatch.setattr(GenerationPipeline, "generate",
                        lambda self, *a, **kw: steps.append(kw.get("num_steps")) or generate(self, *a, **kw))
    assert main(edit[:-2] + ["--task", "frame_prediction", "--out", str(tmp_path / "default.npz")]) == 0
    assert steps == [4]
    monkeypatch.undo()
    capsys.readouterr()
    np.savez(tmp_path / "long.npz", videos=np.zeros((1, 6, 32, 32, 1), np.uint8))
    np.savez(tmp_path / "small.npz", videos=np.zeros((1, 4, 16, 16, 1), np.uint8))
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    out = ["--out", str(tmp_path / "x.npz")]
    for args, message in (
            (["--task", "frame_prediction", "--cond-frames", "4"], "--cond-frames 4: expected 1 <= c < 4"),
            (["--task", "interpolation", "--cond-frames", "2"], "--cond-frames 2: interpolation"),
            (["--task", "inpaint", "--box", "30,30,8,8"], "--box 30,30,8,8: expected a non-empty box inside"),
            (["--task", "frame_prediction", "--box", "0,0,4,4"], "--box is for --task outpaint or inpaint"),
            (["--task", "inpaint", "--region", "vertical"], "--region 'vertical': --task inpaint takes one of"),
            (["--task", "frame_prediction", "--input", str(tmp_path / "long.npz")], "6 frames of 32x32"),
            (["--task", "frame_prediction", "--input", str(tmp_path / "small.npz")], "4 frames of 16x16"),
            (["--task", "frame_prediction", "--input", str(tmp_path / "bad.mp4")], "--input"),
            (["--task", "frame_prediction", "--input", str(tmp_path / "none.npz")], "no such file"),
            (["--task", "frame_prediction", "--labels", "12"], "--labels"),
    ):
        argv = ["edit", "--workdir", video_workdir, "--input", src] + args + out
        argv = argv[:3] + argv[5:] if "--input" in args else argv
        assert main(argv) == 1, args
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and err.count("\n") == 0, (args, err)
    # a task the workdir's model was not trained for
    import argparse

    trained = ("generation", "frame_prediction")
    with pytest.raises(ValueError, match="--task inpaint: this workdir's model was trained for the tasks"):
        task._edit_task_name(argparse.Namespace(task="inpaint", region=None, box=None), trained)

    # benchmarks/video_quality.py end to end on the same workdir (one fixture build): every section
    # measured, JSON written (the figures of a tiny model mean nothing; the main job's are in the README)
    spec = importlib.util.spec_from_file_location("mgt_benchmark_video_quality",
                                                  os.path.join(ROOT, "benchmarks", "video_quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "v.json"
    record = module.main(["--workdir", video_workdir, "--clips", "4", "--per-class", "1", "--steps", "2",
                          "--repeats", "2", "--json", str(out)])
    assert json.loads(out.read_text())[0]["clips"] == 4
    assert 0 <= record["tokenizer_ssim"] <= 1 and 0 < record["codebook_usage"] <= 1
    assert record["real_clips"]["frame_class_accuracy"] >= 0.75  # the classifier reads real moving digits
    assert record["real_clips"]["ink_speed"] >= 1.0  # real digits move 1–3 px per frame in x and y
    # one clip per class at each of two sampling seeds, pooled: two clips of a class to compare
    assert record["generated_clips"] == 20 and record["sampling_seeds"] == [0, 1]
    assert np.isfinite(record["generated"]["within_class_distance"])
    by_seed = record["generated"]["frame_class_accuracy_by_seed"]
    assert len(by_seed) == 2 and record["generated"]["frame_class_accuracy"] == pytest.approx(np.mean(by_seed))
    assert 0 <= record["generated"]["frame_class_accuracy"] <= 1
    assert len(record["generated"]["per_class_frame_accuracy"]) == 10  # one clip per class: none missing
    assert None not in record["generated"]["per_class_frame_accuracy"]
    fp = record["frame_prediction"]
    assert len(fp["psnr_per_predicted_frame"]) == len(fp["copy_last_frame_psnr"]) == 3


@pytest.mark.parametrize("name", ["ucf101", "kinetics600", "bair"])
def test_magvit_recipes_build_on_the_published_token_grids(name):
    """The MAGVIT-B recipes: 16 frames → 4 × 16 × 16 tokens, the transformer's tasks, the folder source
    (built abstractly: nothing is initialised or compiled)."""
    from mgt.training import builders

    for arg in ("", "runlocal"):
        c = _config(os.path.join(ROOT, "configs", "video", f"{name}.py"), arg)
        assert c.data.source == "folder" and c.data.num_frames == 16
        tokenizer = nnx.eval_shape(lambda: builders.make_tokenizer(c))
        spec = tokenizer.token_spec((16, c.data.image_size, c.data.image_size, 3))
        assert spec.grid == (4, 16, 16)
        model = builders.transformer_config(c, spec)
        assert model.tasks == {"ucf101": (), "kinetics600": ("frame_prediction",)}.get(name, model.tasks)
        if name == "kinetics600":
            assert c.data.condition_frames == 5
    with pytest.raises(ValueError, match="config.data.path"):
        from mgt.training import trainer

        trainer.make_task(c).source("train")


def test_eval_video_workdir(video_workdir, tmp_path):
    """`mgt eval` on the tiny video workdir: FVD and per-frame FID with the moving-digits network (random
    weights), PSNR / SSIM of frame prediction of the reference clips."""
    import mgt
    from mgt.cli import main

    out = tmp_path / "m.json"
    assert main(["eval", "--workdir", video_workdir, "--metrics", "fvd,frame_fid,psnr,ssim", "--num", "6",
                 "--batch-size", "6", "--num-reference", "12", "--steps", "2", "--random-features", "--quiet",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["fvd"] > 0 and result["frame_fid"] > 0
    assert 0 < result["psnr"] < 60 and -1 <= result["ssim"] <= 1
    setup = result["setup"]
    assert setup["features"]["video"]["network"] == "small_moving_digits"
    assert setup["prediction"] == {"task": "frame_prediction", "condition_frames": 1, "clips": 6}
    assert setup["reference"]["count"] == 12
    with pytest.raises(ValueError, match="at least 9 frames"):  # I3D on 4-frame clips: refused before sampling
        mgt.evaluate(video_workdir, metrics="fvd", num=6, features="standard", random_features=True, quiet=True)
