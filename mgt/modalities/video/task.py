"""The video task: the `Task` protocol for clips, built from a config.

Model inputs are float32 `[T, S, S, C]` in [0, 1] (`config.data.num_frames` = T, `config.data.image_size`
= S, `config.data.channels` = C); sources are registered by name (`mgt.modalities.video.sources`);
samples are written as a labelled grid of clips (`.gif`, `.mp4`), a filmstrip PNG (one row per clip)
or an `.npz` of uint8 `videos` `[N, T, H, W, C]` and int32 `labels` `[N]`. Multi-task models
(`config.model.tasks`, MAGVIT's COMMIT) serve the conditional tasks of `commit_tasks` through
`mgt edit --task frame_prediction|interpolation|outpaint|inpaint`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from mgt.condition import Condition
from mgt.modalities import register_task
from mgt.modalities.base import BaseTask, ensure_parent, keep_caption
from mgt.modalities.video import io
from mgt.modalities.video.commit_tasks import video_condition
from mgt.modalities.video.sources import make_source
from mgt.tokenizers.base import apply_in_chunks


@dataclasses.dataclass(frozen=True)
class VideoToFloat:
    """grain `map`: record["video"] uint8 `[T, S, S, C']` → `{"video": float32 [T, S, S, C] in [0, 1], "label"}`."""

    input_shape: tuple[int, ...]

    def __call__(self, record: dict) -> dict:
        video = np.asarray(record["video"])
        if video.ndim == 3:
            video = video[..., None]
        video = io.convert_channels(video, self.input_shape[-1])
        if video.shape != tuple(self.input_shape):
            raise ValueError(f"a clip of shape {video.shape} does not fit the config's (T, S, S, C) = "
                             f"{tuple(self.input_shape)}: set config.data.num_frames / image_size / channels")
        return keep_caption({"video": video.astype(np.float32) / 255.0, "label": np.int32(record.get("label", 0))},
                            record)


@dataclasses.dataclass(frozen=True)
class FlipClip:
    """grain `random_map`: flip a whole clip left–right with probability 1/2 (every frame alike)."""

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        if rng.random() < 0.5:
            return {**record, "video": record["video"][:, :, ::-1]}
        return record


@register_task("video")
class VideoTask(BaseTask):
    name = "video"
    input_key = "video"
    identity_keys = ("data.num_frames", "data.image_size", "data.channels", "data.num_classes")
    output_extensions = (".gif", ".mp4", ".webm", ".png", ".npz")

    def __init__(self, config):
        super().__init__(config)
        data = config.data
        self.num_frames, self.image_size = int(data.num_frames), int(data.image_size)
        self.channels = int(data.get("channels", 3))
        if self.channels not in (1, 3):
            raise ValueError(f"config.data.channels={self.channels}: expected 1 (grey) or 3 (RGB)")
        self.input_shape = (self.num_frames, self.image_size, self.image_size, self.channels)
        self.fps = float(data.get("fps", 4.0))

    # ---- data -----------------------------------------------------------------------------------
    def source(self, split: str = "train"):
        data = self.config.data
        kwargs = dict(data.get("source_kwargs", {}) or {})
        if data.source == "moving_digits":
            return make_source("moving_digits", split=split, num_frames=self.num_frames, size=self.image_size,
                               **kwargs)
        if data.source == "folder":
            if not data.path:
                raise ValueError("config.data.source='folder' needs config.data.path (a folder of videos)")
            return make_source("folder", path=data.path, num_frames=self.num_frames, size=self.image_size,
                               channels=self.channels, **kwargs)
        return make_source(data.source, **kwargs)

    def check_source(self, source) -> None:
        """Labels within `data.num_classes`, and clips of the configured frames and size (the first one)."""
        super().check_source(source)
        if len(source) == 0:
            raise ValueError(f"config.data.source={self.config.data.source!r} gives no clips")
        VideoToFloat(self.input_shape)(source[0])  # raises naming the config fields when it does not fit

    def pipeline(self, source, *, batch_size: int, train: bool, seed: int, augment: bool = True):
        """grain iterator of `{"video": float32 [B, T, S, S, C], "label": int32 [B]}`; training flips
        clips left–right when `config.data.flip`."""
        import grain
        import jax

        if len(source) == 0:
            raise ValueError(f"source {source!r} is empty")
        ds = grain.MapDataset.source(source)
        if jax.process_count() > 1:
            ds = ds[jax.process_index()::jax.process_count()]
        if train:
            ds = ds.seed(seed).shuffle().repeat(None)
        elif augment and self.config.data.get("flip", False):
            ds = ds.seed(seed)
        if augment and self.config.data.get("flip", False):
            ds = ds.random_map(FlipClip())
        ds = ds.map(VideoToFloat(self.input_shape))
        ds = ds.batch(batch_size, drop_remainder=train)
        return ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=64))

    def conditional_task(self, name: str, *, cond_frames: int | None = None, box=None,
                         argument: str = "config.model.tasks"):
        """The COMMIT task `name` (`commit_tasks.VIDEO_TASKS`) on this config's clips; `cond_frames`
        defaults to `config.data.condition_frames`."""
        if cond_frames is None:
            cond_frames = int(self.config.data.get("condition_frames", 2))
        return video_condition(name, self.num_frames, self.image_size, cond_frames=cond_frames, box=box,
                               argument=argument)

    # ---- editing --------------------------------------------------------------------------------
    def add_edit_arguments(self, parser) -> None:
        parser.add_argument("--input", required=True,
                            help="an .npz with 'videos' uint8 [N, T, H, W, C] (C = 1 or 3; as `mgt sample` writes) "
                                 "or one video file")
        parser.add_argument("--task", required=True, choices=EDIT_TASKS, help="the conditional task to run")
        parser.add_argument("--cond-frames", type=int, default=None,
                            help="frames given at the start (frame_prediction) or at each end (interpolation); "
                                 "default config.data.condition_frames")
        parser.add_argument("--region", default=None, choices=("central", "horizontal", "vertical", "moving"),
                            help="outpaint: the given region (central, horizontal, vertical; default central); "
                                 "inpaint: the removed region (central, moving; default central)")
        parser.add_argument("--box", default=None,
                            help="TOP,LEFT,HEIGHT,WIDTH in pixels, every frame: the given region (outpaint) or the "
                                 "removed one (inpaint), instead of --region")
        if self.model_condition == "labels":
            parser.add_argument("--labels", default=None,
                                help="comma-separated class ids, cycled over the clips (default: the .npz's labels)")
        parser.add_argument("--guidance", type=float, default=0.0,
                            help="classifier-free guidance scale (default 0: the given frames or region carry the "
                                 "clip; guidance costs frame prediction about 1 dB on the main job)")

    def edit(self, args, pipeline, rng, *, num_steps: int | None):
        """`--task` on every clip of `--input` → (float32 `[N, T, S, S, C]`, condition). The model sees
        the task's condition tokens in the task's region (re-applied at every decoding step) and
        generates every token; the given part comes back as the model's reconstruction of it."""
        from mgt.modalities.base import parse_labels

        model = pipeline.transformer
        name = self._edit_task_name(args, model.config.tasks)
        box = None
        if args.box is not None:
            if args.task not in ("outpaint", "inpaint"):
                raise ValueError(f"--box is for --task outpaint or inpaint, not {args.task!r}")
            box = tuple(args.box.split(","))
        self.conditional_task(name, cond_frames=args.cond_frames, box=box, argument="--task")  # check first
        clips = self.read_clips(args.input, "--input")
        n = len(clips)
        labels = None
        if self.model_condition == "labels":
            if args.labels is not None:
                labels = np.resize(parse_labels(args.labels, self.num_classes, argument="--labels"), n)
            else:
                labels = _npz_labels(args.input, n)
                if labels is None:
                    raise ValueError("--labels is required: the model is class-conditional and --input has no labels "
                                     f"(classes 0..{self.num_classes - 1})")
                if labels.min() < 0 or labels.max() >= self.num_classes:
                    raise ValueError(f"--input {args.input!r}: labels outside [0, {self.num_classes}); pass --labels")
        if args.guidance and not model.config.null_condition:
            raise ValueError("--guidance needs a model trained with a null condition (config.model.null_condition)")
        return self.run_conditional(pipeline, name, clips, labels, rng, num_steps=num_steps,
                                    cond_frames=args.cond_frames, box=box, guidance_scale=args.guidance)

    def run_conditional(self, pipeline, name: str, clips, labels, rng, *, num_steps: int | None = None,
                        cond_frames=None, box=None, guidance_scale: float = 0.0):
        """Conditional task `name` on clips float32 `[N, T, S, S, C]` (labels int32 `[N]` or None) →
        (generated clips float32 `[N, T, S, S, C]`, their `Condition`).

        The condition clips are tokenized; inside the task's token region the model sees those tokens
        (re-applied at every decoding step, `decode(condition_tokens=)`), elsewhere `[MASK]`. Decoding
        takes the config's `sample` options (temperatures, filters, confidence; `num_steps` overrides
        theirs when given) with guidance `guidance_scale` (0 by default, not the config's: on the video
        main job guidance 5 costs frame prediction 0.4–1.0 dB per frame; 0 for a model without a null
        condition)."""
        from mgt import commit
        from mgt.sampling import decode_options

        model = pipeline.transformer
        ct = self.conditional_task(name, cond_frames=cond_frames, box=box, argument="--task")
        n = len(clips)
        condition = Condition(tasks=np.full((n,), model.config.task_id(name, "--task"), np.int32))
        if labels is not None:
            condition = condition.replace(labels=np.asarray(labels, np.int32))
        region = commit.token_region(ct.given, model.config.grid)
        cond_tokens = apply_in_chunks(pipeline.tokenizer, "encode", ct.condition_inputs(clips),
                                      chunk=min(16, n))
        condition_tokens = commit.region_condition_tokens(cond_tokens, region, model.spec.mask_id)
        options = decode_options(self.config.sample, model.spec.num_levels, num_steps=num_steps,
                                 guidance_scale=guidance_scale)
        if not model.config.null_condition:
            options["guidance_scale"] = 0.0
        out = pipeline.generate(rng, condition=condition, tokens=model.spec.masked(n),
                                condition_tokens=condition_tokens, **options)
        return np.asarray(out), condition

    def sample_metrics(self, outputs, condition: Condition) -> dict[str, float]:
        """For class-conditional moving digits: the share of frames a real-digit classifier labels with
        their clip's class, label flips per clip and the share of clips whose class most frames read
        (`mgt.modalities.video.metrics.class_consistency`)."""
        if self.config.data.source != "moving_digits" or condition is None or condition.labels is None:
            return {}
        from mgt.modalities.video.metrics import class_consistency

        return class_consistency(outputs, condition.labels)

    def _edit_task_name(self, args, trained) -> str:
        """`--task` (+ `--region`) → the trained task's name; one-line errors for what was not trained."""
        if args.task in ("frame_prediction", "interpolation"):
            if args.region is not None:
                raise ValueError(f"--region is for --task outpaint or inpaint, not {args.task!r}")
            name = args.task
        elif args.box is not None:  # a custom region: the task token of that kind the model knows
            if args.region is not None:
                raise ValueError("give --box or --region, not both")
            kinds = [t for t in trained if t.startswith(args.task + "_")]
            name = kinds[0] if kinds else f"{args.task}_central"
        else:
            regions = {"outpaint": ("central", "horizontal", "vertical"), "inpaint": ("central", "moving")}[args.task]
            region = args.region or "central"
            if region not in regions:
                raise ValueError(f"--region {region!r}: --task {args.task} takes one of {list(regions)}")
            name = f"{args.task}_{region}"
        if name not in trained:
            raise ValueError(f"--task {args.task}: this workdir's model was trained for the tasks "
                             f"{list(trained) or '(none: a single-task model)'}, not {name!r}")
        return name

    def examples(self, split: str, num: int) -> np.ndarray:
        source = self.source(split)
        to_float = VideoToFloat(self.input_shape)
        return np.stack([to_float(source[i])["video"] for i in range(min(num, len(source)))])

    # ---- files ----------------------------------------------------------------------------------
    def read_input(self, path: str, argument: str = "--input") -> np.ndarray:
        """One video file → float32 `[T, S, S, C]` (its first T frames, resized and centre-cropped)."""
        frames = self.read_clips(path, argument)
        return frames[0]

    def read_inputs(self, path: str, argument: str = "--input"):
        """Every clip of an `.npz` or one video file (`read_clips`), with the `.npz`'s labels if it has them."""
        clips = self.read_clips(path, argument)
        labels = _npz_labels(path, len(clips))
        return clips, Condition() if labels is None else Condition(labels=labels.astype(np.int32))

    def read_clips(self, path: str, argument: str = "--input") -> np.ndarray:
        """Every clip of an `.npz` (`videos` uint8 `[N, T, H, W, C]`, C = 1 or 3) or one video file →
        float32 `[N, T, S, S, C]` in the model's channels. Clips must have the model's T, H and W; a
        video file gives its first T frames, resized and centre-cropped. ValueError names `argument`."""
        if not os.path.isfile(path):
            raise ValueError(f"{argument} {path!r}: no such file")
        t, s, c = self.num_frames, self.image_size, self.channels
        if path.lower().endswith(".npz"):
            try:
                with np.load(path) as f:
                    videos = np.asarray(f["videos"])
            except (KeyError, ValueError, OSError) as e:
                raise ValueError(f"{argument} {path!r}: expected an .npz with 'videos' uint8 [N, T, H, W, C] ({e})") \
                    from None
            if videos.ndim != 5 or videos.shape[-1] not in (1, 3):
                raise ValueError(f"{argument} {path!r}: 'videos' must be [N, T, H, W, C] with C = 1 or 3, got "
                                 f"{videos.shape}")
            if videos.shape[1:4] != (t, s, s):
                raise ValueError(f"{argument} {path!r}: clips are {videos.shape[1]} frames of "
                                 f"{videos.shape[2]}x{videos.shape[3]}; the model takes {t} frames of {s}x{s}")
            videos = io.to_uint8(videos, f"{argument} {path!r}")
        else:
            try:
                frames = io.read_video(path, size=s, channels=3)
            except ValueError as e:
                raise ValueError(f"{argument} {e}") from None
            if len(frames) < t:
                raise ValueError(f"{argument} {path!r} has {len(frames)} frames; the model takes {t}")
            videos = frames[None, :t]
        return io.convert_channels(videos, c).astype(np.float32) / 255.0

    def write_samples(self, path: str, outputs, condition: Condition | None = None, *, grid: bool = True) -> None:
        """Clips float32 `[N, T, S, S, C]` → `.npz` (uint8 `videos`, int32 `labels`), `.gif` / `.mp4` /
        `.webm` (a labelled grid of clips playing together; `grid=False`: the clips side by side) or
        `.png` (a filmstrip: one row per clip, its frames left to right, labelled)."""
        from mgt.modalities.image.writer import make_image_grid

        self.check_output(path)
        videos = np.round(np.clip(np.asarray(outputs, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
        labels = None if condition is None or condition.labels is None else np.asarray(condition.labels, np.int32)
        ensure_parent(path)
        if path.lower().endswith(".npz"):
            np.savez(path, videos=videos, labels=np.zeros(len(videos), np.int32) if labels is None else labels)
            return
        upscale = max(1, 64 // self.image_size)
        rgb = io.convert_channels(videos, 3)
        names = None if labels is None else [str(int(x)) for x in labels]
        if path.lower().endswith(".png"):
            from PIL import Image

            n, t = rgb.shape[:2]
            strip_labels = None if names is None else [name if j == 0 else "" for name in names for j in range(t)]
            picture = make_image_grid(rgb.reshape((n * t,) + rgb.shape[2:]), ncols=t, labels=strip_labels,
                                      upscale=upscale)
            Image.fromarray(picture).save(path)
            return
        ncols = None if grid else len(rgb)
        frames = [make_image_grid(rgb[:, k], ncols=ncols, labels=names if grid else None, upscale=upscale)
                  for k in range(rgb.shape[1])]
        io.write_video(path, np.stack(frames), fps=self.fps)

    def sample_writer(self, path: str, total: int):
        """`.npz`: streamed batch by batch; other formats: collected and written at the end."""
        if not path.lower().endswith(".npz"):
            return super().sample_writer(path, total)
        self.check_output(path)
        from mgt.modalities.writers import LabelledUint8Npz

        return LabelledUint8Npz(path, total, "videos", self.input_shape)

    def write_reconstructions(self, path: str, inputs, reconstructions) -> None:
        """A filmstrip PNG: each input clip's row above its reconstruction's."""
        x = np.asarray(inputs, np.float32)
        y = np.clip(np.asarray(reconstructions, np.float32), 0, 1)
        pairs = np.stack([x, y], 1).reshape((-1,) + x.shape[1:])
        self.write_samples(path if path.lower().endswith(".png") else path.rsplit(".", 1)[0] + ".png", pairs)


EDIT_TASKS = ("frame_prediction", "interpolation", "outpaint", "inpaint")


def _npz_labels(path: str, n: int):
    """int32 `[n]` labels of an `.npz` written by `mgt sample`, or None."""
    if not path.lower().endswith(".npz"):
        return None
    with np.load(path) as f:
        if "labels" not in f.files or np.shape(f["labels"]) != (n,):
            return None
        return np.asarray(f["labels"], np.int64)

