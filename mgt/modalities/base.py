"""The `Task` protocol: what the trainer, the generation pipeline and the CLI need from a modality.

A modality (image, video, audio, a user's own) is a class built from the experiment config,
`Task(config)`, registered by name with `register_task` (or named by import path in
`config.modality`, e.g. `"my_pkg.waves:WaveTask"`, so that a fresh `mgt sample` process finds it).
The trainer, `mgt.load_pipeline` and the CLI only ever talk to a task through this protocol: they
never see pixels, frames or samples.

`BaseTask` implements the parts every modality shares (the class-label condition, text conditioning
through `config.text` with `--prompt` / `--prompts-file` / `--negative-prompt`, the generic `--labels`
sampling option, output-extension checks); a modality subclasses it and fills in the rest. A source
whose records carry `"text"` (captions) gives a text-conditioned model its condition with no code
in the modality.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np

from mgt.condition import Condition
from mgt.transformer import condition_input


@runtime_checkable
class Task(Protocol):
    """One modality's glue, built from the experiment config (`Task(config)`).

    Attributes:
      name: the registry name (`config.modality`), e.g. "image".
      input_key: the batch key of the model input, e.g. "image".
      input_shape: one example without the batch axis, e.g. `(16, 16, 3)` (the tokenizer's input).
      identity_keys: dotted config fields that make two workdirs incompatible besides the tokenizer
        and the model (e.g. `("data.image_size", "data.num_classes")`); the data source may change.
      output_extensions: file extensions `write_samples` can write, e.g. `(".png", ".npz")`.
      text: the `mgt.text.TextConditioner` of a text-conditioned config (captions → condition), or None.
    """

    name: str
    input_key: str
    input_shape: tuple[int, ...]
    identity_keys: tuple[str, ...]
    output_extensions: tuple[str, ...]
    text: Any

    # ---- data -------------------------------------------------------------------------------------
    def source(self, split: str = "train") -> Any:
        """The configured random-access source (`len`, `[i]` → a record dict) for `split` ("train" or
        "test"; sources without splits ignore it). Sources are registered by name per modality."""

    def check_source(self, source) -> None:
        """Raise ValueError (naming the config field to change) when the source does not fit the config."""

    def pipeline(self, source, *, batch_size: int, train: bool, seed: int, augment: bool = True) -> Iterable[dict]:
        """grain batches `{input_key: float32 [B, *input_shape], "label": int32 [B], ...}`.

        `train=True`: shuffled, repeated, augmented. `train=False`: one ordered pass, augmented only when
        `augment` (the token cache tokenizes augmented copies this way)."""

    def condition(self, batch: dict) -> Condition:
        """The condition of a batch (labels and/or context with its mask)."""

    def examples(self, split: str, num: int) -> np.ndarray:
        """The first `num` model inputs of `split`, float32 `[num, *input_shape]` (reconstruction samples)."""

    def conditional_task(self, name: str):
        """The conditional task `name` of a multi-task model (`config.model.tasks`), as a
        `mgt.commit.ConditionalTask`; ValueError naming the tasks the modality offers otherwise."""

    # ---- files ------------------------------------------------------------------------------------
    def read_input(self, path: str) -> np.ndarray:
        """A file → one model input, float32 `[*input_shape]` (raises ValueError naming the path)."""

    def read_inputs(self, path: str, argument: str = "--input") -> tuple[np.ndarray, Condition]:
        """A file → every input it holds, float32 `[N, ...]` (an `.npz` as `mgt sample` writes it, or one
        media file), with the file's labels as a `Condition` when it has them (`mgt reconstruct`)."""

    def reconstruct(self, tokenizer, inputs) -> np.ndarray:
        """Encode and decode `inputs` `[N, ...]` with `tokenizer` → reconstructions of the same shape."""

    def write_samples(self, path: str, outputs, condition: Condition | None = None, *, grid: bool = True) -> None:
        """Write generated outputs `[N, *input_shape]`; the format follows the extension of `path`.
        `grid=False` writes the outputs as they are (an edit) rather than as a labelled overview."""

    def write_reconstructions(self, path: str, inputs, reconstructions) -> None:
        """Write inputs beside the tokenizer's reconstructions (tokenizer-stage samples)."""

    def sample_writer(self, path: str, total: int):
        """A writer for `total` samples arriving in batches: `add(outputs, condition)`, then `close()`
        (or `abort()`); formats that can be written as they come keep memory bounded by a batch."""

    # ---- command line -------------------------------------------------------------------------------
    def add_sample_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the modality's options of `mgt sample` (e.g. `--labels`)."""

    def sample_condition(self, args: argparse.Namespace, num: int | None) -> tuple[Condition, int]:
        """The condition of `mgt sample` from its arguments and the number of samples it makes."""

    def negative_condition(self, args: argparse.Namespace, batch_size: int, guidance: float) -> Condition | None:
        """The condition of guidance's unconditional half from the arguments (`--negative-prompt`), or None."""

    def generate(self, pipeline, keys, condition: Condition, batch_size: int, args: argparse.Namespace,
                 **options):
        """One batch of `mgt sample`: B outputs `[B, ...]` for `keys` `[B]` and `condition` (decode
        `options`); a modality may generate more than the model's window here (e.g. longer audio)."""

    def add_edit_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the modality's options of `mgt edit` (the image task: `--image --box --label --mode`)."""

    def edit(self, args: argparse.Namespace, pipeline, rng, *, num_steps: int | None) -> tuple[Any, Condition]:
        """Run the edit the arguments ask for with `pipeline` (a `GenerationPipeline`) → (outputs
        `[N, *input_shape]`, their condition). `num_steps`: `--steps`, None for the modality's default."""

    # ---- metrics ----------------------------------------------------------------------------------
    def reconstruction_metrics(self, inputs, reconstructions) -> dict[str, float]:
        """Quality of tokenizer reconstructions, logged when the tokenizer stage writes samples."""

    def sample_metrics(self, outputs, condition: Condition) -> dict[str, float]:
        """Quality of generated samples, logged when the transformer stage writes samples."""


class BaseTask:
    """What every modality shares: the class-label condition, `--labels`, output checks.

    Subclasses set `name`, `input_key`, `input_shape`, `identity_keys`, `output_extensions` and
    implement the data, file and edit methods of `Task`.
    """

    name = "base"
    input_key = "input"
    input_shape: tuple[int, ...] = ()
    identity_keys: tuple[str, ...] = ("data.num_classes",)
    output_extensions: tuple[str, ...] = (".npz",)

    def __init__(self, config):
        self.config = config
        self.num_classes = int(config.data.get("num_classes", 0) or 0)
        # the text conditioner (mgt.text.TextConditioner) of a text-conditioned config, else None
        self.text = None
        if config.get("text") is not None and config.text.get("encoder", None):
            from mgt.text.conditioner import TextConditioner

            self.text = TextConditioner(config.text)

    # ---- condition ----------------------------------------------------------------------------------
    @property
    def model_condition(self) -> str:
        """What the configured model is conditioned on: "labels", "context" or "none"."""
        return condition_input(self.config.model.get("conditioning", "none"))

    def condition(self, batch: dict) -> Condition:
        return Condition.from_batch(batch)

    def check_source(self, source) -> None:
        labels = getattr(source, "labels", None)
        if labels is not None and len(labels) and int(np.max(labels)) >= self.num_classes > 0:
            raise ValueError(f"the data has labels up to {int(np.max(labels))} but config.data.num_classes="
                             f"{self.num_classes}; set --config.data.num_classes={int(np.max(labels)) + 1}")

    # ---- command line -------------------------------------------------------------------------------
    def check_output(self, path: str, argument: str = "--out") -> None:
        """Raise ValueError unless `path` has one of `output_extensions` (before any work is done)."""
        if not str(path).lower().endswith(self.output_extensions):
            raise ValueError(f"{argument} {path!r}: expected a path ending in one of {list(self.output_extensions)}")

    def add_sample_arguments(self, parser: argparse.ArgumentParser) -> None:
        # class and text workdirs both know --labels and --prompt, to say which of them applies
        if self.model_condition != "labels" and self.text is None:
            return
        parser.add_argument("--labels", default=None,
                            help="class-conditional models: comma-separated class ids, cycled to fill --num "
                                 "(default: every class, config.sample.per_class each, grouped by class)")
        parser.add_argument("--prompt", action="append", default=None,
                            help="text-conditioned models: a prompt (repeat for several; cycled to fill --num)")
        parser.add_argument("--prompts-file", default=None, help="text-conditioned models: one prompt per line")
        parser.add_argument("--negative-prompt", default=None,
                            help="text-conditioned models: replaces the unconditional half of guidance "
                                 "(needs --guidance > 0)")

    def sample_condition(self, args: argparse.Namespace, num: int | None) -> tuple[Condition, int]:
        """Class labels from `--labels` (cycled to `num`), or every class `config.sample.per_class` times;
        prompts from `--prompt` / `--prompts-file` (cycled to `num`) for a text-conditioned model."""
        prompts = self._cli_prompts(args)
        if prompts is not None and self.text is None:
            raise ValueError(f"--prompt / --prompts-file: this workdir's model is not text-conditioned "
                             f"({'use --labels' if self.model_condition == 'labels' else 'no config.text.encoder'})")
        if getattr(args, "negative_prompt", None) is not None and self.text is None:
            raise ValueError("--negative-prompt: this workdir's model is not text-conditioned")
        labels_text = getattr(args, "labels", None)
        if labels_text is not None and self.model_condition != "labels":
            raise ValueError(f"--labels: this workdir's model is not class-conditional "
                             f"({'use --prompt' if self.text is not None else 'it takes no labels'})")
        if self.text is not None:
            if prompts is None:
                raise ValueError("--prompt (or --prompts-file) is required: this workdir's model is text-conditioned")
            num = num or len(prompts)
            cycled = [prompts[i % len(prompts)] for i in range(num)]
            return self.text.condition(cycled).replace(text=np.asarray(cycled, str)), num
        if self.model_condition == "labels":
            if labels_text is None:
                num = num or self.num_classes * int(self.config.sample.per_class)
                labels = np.sort(np.resize(np.arange(self.num_classes, dtype=np.int32), num), kind="stable")
                return Condition(labels=labels), num
            labels = parse_labels(labels_text, self.num_classes, argument="--labels")
            num = num or len(labels)
            return Condition(labels=np.resize(labels, num)), num
        if self.model_condition == "context":
            raise ValueError(f"this workdir's model is conditioned on a context sequence; the {self.name!r} task "
                             "has no command-line option to give one (use mgt.load_pipeline from Python)")
        return Condition(), num or 16

    def negative_condition(self, args: argparse.Namespace, batch_size: int, guidance: float) -> Condition | None:
        """`--negative-prompt`'s condition for a batch of `batch_size` (None without one)."""
        text = getattr(args, "negative_prompt", None)
        if text is None:
            return None
        if self.text is None:
            raise ValueError("--negative-prompt: this workdir's model is not text-conditioned")
        if not guidance:
            raise ValueError("--negative-prompt acts through classifier-free guidance: give --guidance > 0")
        return self.text.condition([text] * batch_size)

    def _cli_prompts(self, args) -> list[str] | None:
        prompts = list(getattr(args, "prompt", None) or [])
        path = getattr(args, "prompts_file", None)
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    prompts += [line.strip() for line in f if line.strip()]
            except OSError as e:
                raise ValueError(f"--prompts-file {path!r}: cannot be read ({e.strerror or e})") from None
            if not prompts:
                raise ValueError(f"--prompts-file {path!r}: holds no prompts (one per line)")
        if getattr(args, "prompt", None) is not None and not any(p.strip() for p in args.prompt):
            raise ValueError("--prompt: expected a non-empty prompt")
        return prompts or None

    def generate(self, pipeline, keys, condition: Condition, batch_size: int, args, **options):
        """`pipeline.generate` on the model's own grid."""
        return pipeline.generate(keys, condition=condition, batch_size=batch_size, **options)

    def class_labels(self, per_class: int) -> np.ndarray:
        """int32 `[num_classes · per_class]`: every class `per_class` times, grouped by class."""
        return np.repeat(np.arange(self.num_classes, dtype=np.int32), per_class)

    def add_edit_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def conditional_task(self, name: str):
        raise ValueError(f"config.model.tasks: the {self.name!r} task offers no conditional tasks, got {name!r}")

    def sample_writer(self, path: str, total: int):
        """Collects the batches and writes them with `write_samples` at the end."""
        from mgt.modalities.writers import BufferedSampleWriter

        return BufferedSampleWriter(self.write_samples, path)

    def edit(self, args, pipeline, rng, *, num_steps: int | None):
        raise ValueError(f"the {self.name!r} task offers no edits")

    # ---- files ----------------------------------------------------------------------------------------
    def read_inputs(self, path: str, argument: str = "--input") -> tuple[np.ndarray, Condition]:
        """One input file (`read_input`) → float32 `[1, *input_shape]` and an empty condition."""
        return np.asarray(self.read_input(path, argument))[None], Condition()

    def reconstruct(self, tokenizer, inputs) -> np.ndarray:
        """`tokenizer.decode(tokenizer.encode(inputs))` in compiled batches of at most 16 → numpy."""
        from mgt.tokenizers.base import apply_in_chunks

        inputs = np.asarray(inputs, np.float32)
        chunk = min(16, len(inputs))
        tokens = apply_in_chunks(tokenizer, "encode", inputs, chunk=chunk)
        return apply_in_chunks(tokenizer, "decode", tokens, chunk=chunk)

    # ---- metrics ------------------------------------------------------------------------------------
    def reconstruction_metrics(self, inputs, reconstructions) -> dict[str, float]:
        """Mean squared error and PSNR (inputs in [0, 1])."""
        x, y = np.asarray(inputs, np.float64), np.clip(np.asarray(reconstructions, np.float64), 0.0, 1.0)
        mse = float(np.mean(np.square(x - y)))
        return {"mse": mse, "psnr": float(10.0 * np.log10(1.0 / max(mse, 1e-12)))}

    def sample_metrics(self, outputs, condition: Condition) -> dict[str, float]:
        return {}


def keep_caption(out: dict, record: dict) -> dict:
    """`out` with the record's caption (`"text"`) when it has one: every modality's input transform ends
    with it, so a source with captions conditions a text-conditioned model of any modality."""
    if "text" in record:
        out["text"] = str(record["text"])
    return out


def parse_labels(text: str, num_classes: int, *, argument: str) -> np.ndarray:
    """"0,3,7" → int32 `[0, 3, 7]`, each in [0, num_classes) (ValueError naming `argument` otherwise)."""
    try:
        labels = [int(x) for x in str(text).split(",") if x.strip() != ""]
    except ValueError:
        raise ValueError(f"{argument} {text!r}: expected comma-separated integers") from None
    bad = [x for x in labels if not 0 <= x < num_classes]
    if bad or not labels:
        raise ValueError(f"{argument} {bad or text}: expected class ids in [0, {num_classes})")
    return np.asarray(labels, np.int32)


def ensure_parent(path: str) -> None:
    """Create the folder `path` will be written in."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
