"""The audio task: the `Task` protocol for mono audio clips, built from a config.

Model inputs are float32 `[S]` in [-1, 1], S = `config.data.seconds` · `config.data.sample_rate`;
sources are registered by name (`mgt.modalities.audio.sources`: spoken digits, folders, arrays). A
codec tokenizer turns a clip into `(frames, levels)` tokens; the transformer learns them level by
level (SoundStorm masks) and decodes them with a level plan (`config.sample.stages`).

Outputs: `.npz` (`audio` float32 `[N, samples]`, `sample_rate` int32, `labels` int32 `[N]`), `.wav`
(one file per sample, `x_000_label3.wav`, plus `x.png` with their mel spectrograms side by side) or
`.png` (the spectrograms only). `mgt sample --seconds S` generates longer audio than the training
clips in overlapping windows; `mgt edit --task continue|inpaint|periodic|variation` runs VampNet's
prompts (`mgt.modalities.audio.prompts`).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import numpy as np

from mgt.condition import Condition
from mgt.modalities import register_task
from mgt.modalities.audio import prompts
from mgt.modalities.base import BaseTask, ensure_parent, keep_caption, parse_labels

EDIT_TASKS = ("continue", "inpaint", "periodic", "variation")


@dataclasses.dataclass(frozen=True)
class AudioToFloat:
    """grain `map`: a record's audio → `{"audio": float32 [S] in [-1, 1], "label": int32}`."""

    num_samples: int

    def __call__(self, record: dict) -> dict:
        audio = np.asarray(record["audio"], np.float32)
        if audio.shape != (self.num_samples,):
            raise ValueError(f"a clip of shape {audio.shape} does not fit the config's ({self.num_samples},) samples: "
                             "crop it in the source or set config.data.seconds / sample_rate")
        return keep_caption({"audio": audio, "label": np.int32(record.get("label", 0))}, record)


@register_task("audio")
class AudioTask(BaseTask):
    name = "audio"
    input_key = "audio"
    identity_keys = ("data.sample_rate", "data.seconds", "data.num_classes")
    output_extensions = (".wav", ".npz", ".png")

    def __init__(self, config):
        super().__init__(config)
        self.sample_rate = int(config.data.sample_rate)
        self.seconds = float(config.data.seconds)
        if self.sample_rate < 1000:
            raise ValueError(f"config.data.sample_rate={self.sample_rate}: expected a rate in Hz >= 1000")
        self.num_samples = int(round(self.seconds * self.sample_rate))
        if self.num_samples < 1:
            raise ValueError(f"config.data.seconds={self.seconds}: expected > 0")
        self.input_shape = (self.num_samples,)

    # ---- data -----------------------------------------------------------------------------------
    def source(self, split: str = "train"):
        from mgt.modalities.audio.sources import make_source

        data = self.config.data
        kwargs = dict(data.get("source_kwargs", {}) or {})
        if data.source == "spoken_digits":
            return make_source("spoken_digits", split=split, sample_rate=self.sample_rate, seconds=self.seconds,
                               **kwargs)
        if data.source == "folder":
            if not data.path:
                raise ValueError("config.data.source='folder' needs config.data.path (a folder of audio files)")
            return make_source("folder", path=data.path, sample_rate=self.sample_rate, **kwargs)
        return make_source(data.source, **kwargs)

    def check_source(self, source) -> None:
        super().check_source(source)
        if len(source) == 0:
            raise ValueError(f"config.data.source={self.config.data.source!r} gives no audio")

    def pipeline(self, source, *, batch_size: int, train: bool, seed: int, augment: bool = True):
        """grain iterator of `{"audio": float32 [B, S], "label": int32 [B]}`: random crops of S samples in
        training (shorter clips zero-padded), the first S samples otherwise."""
        import grain

        from mgt.modalities.audio.sources import RandomCrop, StartCrop

        if len(source) == 0:
            raise ValueError(f"source {source!r} is empty")
        ds = grain.MapDataset.source(source)
        if jax.process_count() > 1:
            ds = ds[jax.process_index()::jax.process_count()]
        if train:
            ds = ds.seed(seed).shuffle().repeat(None).random_map(RandomCrop(self.num_samples))
        elif augment and self.config.data.get("random_crops", False):
            ds = ds.seed(seed).random_map(RandomCrop(self.num_samples))
        else:
            ds = ds.map(StartCrop(self.num_samples))
        ds = ds.map(AudioToFloat(self.num_samples)).batch(batch_size, drop_remainder=train)
        return ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=16))

    def examples(self, split: str, num: int) -> np.ndarray:
        from mgt.modalities.audio.sources import StartCrop

        source = self.source(split)
        crop = StartCrop(self.num_samples)
        return np.stack([crop(source[i])["audio"] for i in range(min(num, len(source)))]).astype(np.float32)

    # ---- tokens ---------------------------------------------------------------------------------
    def hop_length(self, tokenizer) -> int:
        """Samples per token frame of `tokenizer`: the clip length over its frames."""
        return self.num_samples // tokenizer.token_spec(self.input_shape).grid[0]

    def encode(self, tokenizer, audio) -> np.ndarray:
        """float32 `[N, S']` (any length) → int32 tokens `[N, ceil(S'/hop), K]` (zero-padded to whole frames)."""
        from mgt.tokenizers.base import apply_in_chunks

        audio = np.asarray(audio, np.float32)
        hop = self.hop_length(tokenizer)
        frames = -(-audio.shape[1] // hop)
        audio = np.pad(audio, ((0, 0), (0, frames * hop - audio.shape[1])))
        tokens = apply_in_chunks(tokenizer, "encode", audio, chunk=min(16, len(audio)))
        return tokens.reshape(tokens.shape[:2] + (-1,))

    def decode(self, tokenizer, tokens, num_samples: int | None = None) -> np.ndarray:
        """int32 tokens `[N, F, K]` → float32 `[N, num_samples]` (default F · hop)."""
        from mgt.tokenizers.base import apply_in_chunks

        tokens = np.asarray(tokens, np.int32)
        audio = apply_in_chunks(tokenizer, "decode", tokens, chunk=min(16, len(tokens)))
        return audio[:, :num_samples] if num_samples else audio

    def reconstruct(self, tokenizer, inputs) -> np.ndarray:
        """Audio float32 `[N, S']` of any length through the codec → `[N, S']`."""
        inputs = np.asarray(inputs, np.float32)
        return self.decode(tokenizer, self.encode(tokenizer, inputs), inputs.shape[1])

    # ---- sampling -------------------------------------------------------------------------------
    def add_sample_arguments(self, parser) -> None:
        super().add_sample_arguments(parser)
        parser.add_argument("--seconds", type=float, default=None,
                            help=f"length of each sample (default: the training clips' {self.seconds:g} s); longer "
                                 "audio is generated in overlapping windows that continue each other")

    def generate(self, pipeline, keys, condition: Condition, batch_size: int, args, **options):
        seconds = getattr(args, "seconds", None)
        if seconds is None or abs(seconds - self.seconds) < 1e-9:
            return pipeline.generate(keys, condition=condition, batch_size=batch_size, **options)
        if not seconds > 0:
            raise ValueError(f"--seconds {seconds}: expected a length > 0")
        hop = self.hop_length(pipeline.tokenizer)
        frames = -(-int(round(seconds * self.sample_rate)) // hop)
        spec = pipeline.spec
        tokens = np.full((batch_size, frames, spec.num_levels), spec.mask_id, np.int32)
        tokens = self.fill(pipeline, tokens, condition, keys, **options)
        return self.decode(pipeline.tokenizer, tokens, int(round(seconds * self.sample_rate)))

    def fill(self, pipeline, tokens, condition: Condition, rng, **options) -> np.ndarray:
        """Generate the masked tokens of int32 `[N, F_total, K]` in windows of the model's frames that
        overlap by `config.sample.window_overlap` of a window (`prompts.fill_in_windows`)."""
        window = pipeline.spec.grid[0]
        overlap = min(window - 1, int(round(float(self.config.sample.get("window_overlap", 0.5)) * window)))
        calls = [0]

        def generate_window(part):
            calls[0] += 1  # new randomness for every window
            keys = jax.vmap(lambda k: jax.random.fold_in(k, calls[0]))(_keys(rng, len(part)))
            return pipeline.generate(keys, condition=condition, tokens=part, decode_outputs=False, **options)

        return prompts.fill_in_windows(generate_window, tokens, pipeline.spec.mask_id, window, overlap)

    # ---- editing --------------------------------------------------------------------------------
    def add_edit_arguments(self, parser) -> None:
        parser.add_argument("--input", required=True,
                            help="a .wav/.flac/.ogg/.mp3 file or an .npz with 'audio' float32 [N, samples] (and "
                                 "'sample_rate', optional 'labels'), as `mgt sample` writes")
        parser.add_argument("--task", required=True, choices=EDIT_TASKS,
                            help="continue: keep the first --prompt-seconds; inpaint: regenerate --span; periodic: "
                                 "keep every --period-th frame; variation: keep the lowest --levels code levels")
        parser.add_argument("--prompt-seconds", type=float, default=None, help="continue: the prompt's length (s)")
        parser.add_argument("--span", default=None, help="inpaint: START,END in seconds, regenerated")
        parser.add_argument("--period", type=int, default=None, help="periodic: keep every P-th token frame")
        parser.add_argument("--levels", type=int, default=None,
                            help="variation: code levels kept (the lowest); with another task also kept everywhere")
        parser.add_argument("--onsets", action="store_true", help="also keep the frames at the input's onsets")
        if self.model_condition == "labels":
            parser.add_argument("--labels", default=None,
                                help="comma-separated class ids, cycled over the inputs (default: the .npz's labels)")
        parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")

    def edit(self, args, pipeline, rng, *, num_steps: int | None):
        """`--task` on every input → (float32 `[N, S']` of the inputs' length, their condition)."""
        from mgt.sampling import decode_options

        spec = pipeline.spec
        needs_labels = self.model_condition == "labels" and args.labels is None
        if needs_labels and not str(args.input).lower().endswith(".npz"):
            raise ValueError("--labels is required: the model is class-conditional and an audio file has no labels "
                             f"(classes 0..{self.num_classes - 1})")
        audio, condition = self.read_inputs(args.input, "--input")
        n, length = audio.shape
        hop = self.hop_length(pipeline.tokenizer)
        frames = -(-length // hop)
        keep = self._prompt(args, audio, frames, spec.num_levels, hop)  # [N, F, K]
        if self.model_condition == "labels":
            if args.labels is not None:
                condition = Condition(labels=np.resize(parse_labels(args.labels, self.num_classes, argument="--labels"),
                                                       n))
            elif condition.labels is None:
                raise ValueError("--labels is required: the model is class-conditional and --input has no labels "
                                 f"(classes 0..{self.num_classes - 1})")
            elif condition.labels.min() < 0 or condition.labels.max() >= self.num_classes:
                raise ValueError(f"--input {args.input!r}: labels outside [0, {self.num_classes}); pass --labels")
        else:
            condition = Condition()
        guidance = args.guidance
        if guidance and not pipeline.transformer.config.null_condition:
            raise ValueError("--guidance needs a model trained with a null condition (config.model.null_condition)")
        options = decode_options(self.config.sample, spec.num_levels, num_steps=num_steps, guidance_scale=guidance)
        return self.run_prompt(pipeline, audio, keep, condition, rng, **options), condition

    def run_prompt(self, pipeline, audio, keep, condition: Condition, rng, **options) -> np.ndarray:
        """Audio float32 `[N, S']` with the tokens `keep` (bool `[N, F, K]`) given → the model's completion,
        float32 `[N, S']` (windows of the model's length, `fill`; decode `options`)."""
        tokens = prompts.apply_prompt(self.encode(pipeline.tokenizer, audio), keep, pipeline.spec.mask_id)
        tokens = self.fill(pipeline, tokens, condition, rng, **options)
        return self.decode(pipeline.tokenizer, tokens, audio.shape[1])

    def _prompt(self, args, audio, frames: int, levels: int, hop: int) -> np.ndarray:
        """bool `[N, F, K]`: the tokens the edit keeps (`mgt.modalities.audio.prompts`)."""
        n, length = audio.shape
        seconds = length / self.sample_rate
        if args.levels is not None and not 0 <= args.levels <= levels:
            raise ValueError(f"--levels {args.levels}: the codec has {levels} code levels; expected 0..{levels}")
        if args.task == "continue":
            if args.prompt_seconds is None:
                raise ValueError("--task continue needs --prompt-seconds (the length of the prompt kept)")
            if not 0 < args.prompt_seconds < seconds:
                raise ValueError(f"--prompt-seconds {args.prompt_seconds}: expected 0 < s < the input's "
                                 f"{seconds:.3g} s")
            keep = prompts.continuation(frames, levels, int(round(args.prompt_seconds * self.sample_rate / hop)))
        elif args.task == "inpaint":
            if args.span is None:
                raise ValueError("--task inpaint needs --span START,END (seconds)")
            try:
                start, end = (float(x) for x in args.span.split(","))
            except ValueError:
                raise ValueError(f"--span {args.span!r}: expected START,END in seconds, e.g. 0.4,0.7") from None
            if not 0 <= start < end <= seconds:
                raise ValueError(f"--span {args.span}: expected 0 <= start < end <= the input's {seconds:.3g} s")
            first = int(start * self.sample_rate // hop)
            last = max(first + 1, -(-int(end * self.sample_rate) // hop))
            keep = prompts.inpaint(frames, levels, first, min(last, frames))
        elif args.task == "periodic":
            if args.period is None or args.period < 1:
                raise ValueError(f"--task periodic needs --period P >= 1 (token frames), got {args.period}")
            keep = prompts.periodic(frames, levels, args.period)
        else:  # variation
            if args.levels is None:
                raise ValueError(f"--task variation needs --levels (code levels kept, 0..{levels})")
            keep = prompts.lowest_levels(frames, levels, args.levels)
        keep = np.broadcast_to(keep, (n, frames, levels))
        if args.levels is not None and args.task != "variation":
            keep = keep | prompts.lowest_levels(frames, levels, args.levels)
        if args.onsets:
            keep = keep | np.stack([prompts.onsets(a, self.sample_rate, hop, frames, levels) for a in audio])
        return np.asarray(keep)

    # ---- files ----------------------------------------------------------------------------------
    def read_input(self, path: str, argument: str = "--input") -> np.ndarray:
        """One audio file → float32 `[S]`: its first S samples (zero-padded when shorter)."""
        audio = self.read_inputs(path, argument)[0][0]
        return np.pad(audio, (0, max(0, self.num_samples - len(audio))))[:self.num_samples]

    def read_inputs(self, path: str, argument: str = "--input"):
        """An audio file (mono; resampled to the config's rate with a note on stderr) → float32 `[1, S']`,
        or an `.npz` (`audio` float32 `[N, S']` in [-1, 1], `sample_rate`, optional `labels`) → `[N, S']`
        and its labels. ValueError naming `argument` for a missing, empty or unreadable file."""
        from mgt.modalities.audio.io import read_audio

        if not os.path.isfile(path):
            raise ValueError(f"{argument} {path!r}: no such file")
        if not path.lower().endswith(".npz"):
            audio, note = read_audio(path, self.sample_rate, argument=argument)
            if note:
                print(f"mgt: note: {argument} {path!r}: {note}", file=sys.stderr)
            return audio[None].astype(np.float32), Condition()
        try:
            with np.load(path) as f:
                audio = np.asarray(f["audio"], np.float32)
                rate = int(f["sample_rate"]) if "sample_rate" in f.files else self.sample_rate
                labels = np.asarray(f["labels"]) if "labels" in f.files else None
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{argument} {path!r}: expected an .npz with 'audio' float32 [N, samples] ({e})") from None
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[1] == 0 or len(audio) == 0:
            raise ValueError(f"{argument} {path!r}: 'audio' must be [N, samples] with samples > 0, got {audio.shape}")
        if rate != self.sample_rate:
            import librosa

            print(f"mgt: note: {argument} {path!r}: resampled from {rate} Hz to {self.sample_rate} Hz", file=sys.stderr)
            audio = librosa.resample(audio, orig_sr=rate, target_sr=self.sample_rate, axis=-1).astype(np.float32)
        condition = Condition()
        if labels is not None and labels.shape == (len(audio),):
            condition = Condition(labels=labels.astype(np.int32))
        return audio, condition

    def write_samples(self, path: str, outputs, condition: Condition | None = None, *, grid: bool = True) -> None:
        """Audio float32 `[N, S']` → `.npz` (`audio`, `sample_rate`, `labels`), `.wav` (`<stem>_000[_label3].wav`
        per sample + `<stem>.png`, their mel spectrograms) or `.png` (the spectrograms)."""
        from mgt.modalities.audio.io import mel_image, write_wav

        self.check_output(path)
        audio = np.clip(np.asarray(outputs, np.float32), -1.0, 1.0)
        labels = None if condition is None or condition.labels is None else np.asarray(condition.labels, np.int32)
        ensure_parent(path)
        lower = path.lower()
        if lower.endswith(".npz"):
            np.savez(path, audio=audio, sample_rate=np.int32(self.sample_rate),
                     labels=np.zeros(len(audio), np.int32) if labels is None else labels)
            return
        stem = path[:-4]
        names = None if labels is None else [str(int(x)) for x in labels]
        from PIL import Image

        Image.fromarray(mel_image(audio, self.sample_rate, labels=names)).save(stem + ".png")
        if lower.endswith(".wav"):
            for i, clip in enumerate(audio):
                suffix = "" if labels is None else f"_label{int(labels[i])}"
                write_wav(f"{stem}_{i:03d}{suffix}.wav", clip, self.sample_rate)

    def write_reconstructions(self, path: str, inputs, reconstructions) -> None:
        """`<stem>.png`: each input's spectrogram beside its reconstruction's; `<stem>.wav`: every input
        followed by its reconstruction, with short silences between, to listen to."""
        from PIL import Image

        from mgt.modalities.audio.io import mel_image, write_wav

        x, y = np.asarray(inputs, np.float32), np.clip(np.asarray(reconstructions, np.float32), -1, 1)
        pairs = np.stack([x, y], 1).reshape((-1, x.shape[1]))
        stem = path.rsplit(".", 1)[0]
        ensure_parent(stem + ".png")
        Image.fromarray(mel_image(pairs, self.sample_rate, labels=["in", "out"] * len(x))).save(stem + ".png")
        gap = np.zeros(int(0.2 * self.sample_rate), np.float32)
        write_wav(stem + ".wav", np.concatenate([part for clip in pairs for part in (clip, gap)]), self.sample_rate)

    # ---- metrics --------------------------------------------------------------------------------
    def reconstruction_metrics(self, inputs, reconstructions) -> dict[str, float]:
        """Multi-scale mel distance, SI-SDR (dB) and waveform L1 (DAC's codec metrics)."""
        from mgt.modalities.audio.metrics import codec_metrics

        return codec_metrics(inputs, reconstructions, self.sample_rate)

    def sample_metrics(self, outputs, condition: Condition) -> dict[str, float]:
        """Class-conditional spoken digits: the share of samples a real-speech digit classifier labels
        with their class (`mgt.modalities.audio.metrics`)."""
        if self.config.data.source != "spoken_digits" or condition is None or condition.labels is None:
            return {}
        from mgt.modalities.audio.metrics import digit_accuracy

        return {"digit_accuracy": digit_accuracy(outputs, condition.labels, self.sample_rate, self.config)}


def _keys(rng, n: int):
    """`n` keys from one key or a batch of keys."""
    rng = jax.numpy.asarray(rng) if not isinstance(rng, jax.Array) else rng
    if rng.ndim == 0 or (rng.ndim == 1 and not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)):
        return jax.random.split(rng, n)
    return rng[:n] if len(rng) >= n else jax.random.split(rng[0], n)
