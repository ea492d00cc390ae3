"""`mgt eval`: score a trained workdir with the standard metrics of its modality.

    mgt eval --workdir D [--metrics fid,is,precision_recall] [--num 10000] [--reference PATH]
             [--steps 8] [--guidance G] [--features auto|builtin|standard] [--feature-weights F] --json out.json

Metrics per modality (the first ones are the default):

  image  fid, is, precision_recall (samples)   rfid (the tokenizer's reconstructions of the reference)
  video  fvd, frame_fid (samples)              psnr, ssim (frame prediction of reference clips)
  audio  fad (samples)                         mel_distance, stft_distance, si_sdr (codec reconstructions)

Samples come from the workdir's pipeline with its decoding options (overridable): class-balanced for
a class-conditional model (sample i has class i mod C), captioned for a text-conditioned one (the
reference examples' captions in order, cycled, or `--prompts-file`), unconditional otherwise. Every
sample gets its own key from `--seed`, so a run is reproducible at any `--batch-size`.

The reference defaults to the held-out split of the workdir's own data set; `--reference` takes a
folder of media files, an `.npz` as `mgt sample` writes it, or precomputed statistics (an `.npz`
with `mu` and `sigma`, as pytorch-fid and the ADM suite write them, for the one metric they belong
to). Reference features are computed once per (reference, feature network, count) and cached in
`WORKDIR/eval/`. The JSON holds one float per metric (`"fid"`, `"is"`, `"precision"`, `"recall"`,
...) and a `"setup"` object with what reproduces it: checkpoint steps, decoding options, seed,
counts, reference source, feature network and weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import numpy as np

from mgt.condition import Condition

SAMPLE_METRICS = {"image": ("fid", "is", "precision_recall"), "video": ("fvd", "frame_fid"), "audio": ("fad",)}
RECONSTRUCTION_METRICS = {"image": ("rfid",), "video": (), "audio": ("mel_distance", "stft_distance", "si_sdr")}
PREDICTION_METRICS = {"image": (), "video": ("psnr", "ssim"), "audio": ()}
DEFAULT_METRICS = {"image": "fid,is,precision_recall", "video": "fvd,frame_fid", "audio": "fad"}
FEATURE_KIND = {"fid": "image", "is": "image", "precision_recall": "image", "rfid": "image", "fvd": "video",
                "frame_fid": "frames", "fad": "audio"}
FRECHET = {"fid": "image", "fvd": "video", "frame_fid": "frames", "fad": "audio"}


def metrics_table() -> str:
    """"image fid, is, ...; video ...": every modality's metrics, for help texts."""
    return "; ".join(f"{m} {', '.join(SAMPLE_METRICS[m] + RECONSTRUCTION_METRICS[m] + PREDICTION_METRICS[m])}"
                     for m in SAMPLE_METRICS)


def metrics_of(task) -> tuple[str, ...]:
    return SAMPLE_METRICS[task.name] + RECONSTRUCTION_METRICS[task.name] + PREDICTION_METRICS[task.name]


def parse_metrics(task, text: str | None) -> list[str]:
    """"fid,is" → ["fid", "is"], each one the task's modality offers (ValueError naming --metrics)."""
    if task.name not in SAMPLE_METRICS:
        raise ValueError(f"mgt eval knows the metrics of image, video and audio workdirs, not {task.name!r}")
    names = [m.strip() for m in (text or DEFAULT_METRICS[task.name]).split(",") if m.strip()]
    allowed = metrics_of(task)
    bad = [m for m in names if m not in allowed]
    if bad or not names:
        article = "an" if task.name[0] in "aeiou" else "a"
        raise ValueError(f"--metrics {bad or text!r}: {article} {task.name} workdir offers {list(allowed)}")
    return list(dict.fromkeys(names))


# ---- the reference ---------------------------------------------------------------------------------
class Reference:
    """Real inputs in batches, with their labels and captions: the workdir's held-out split, a folder,
    an `.npz` of samples — or only precomputed statistics (`stats`)."""

    def __init__(self, task, path: str | None, limit: int | None):
        from mgt.evaluation.features import reference_split

        self.task, self.path, self.stats = task, path, None
        self.inputs = self.labels = self.files = None
        if path is None:
            self.split = reference_split(task)
            self.source = task.source(self.split)
            self.count = len(self.source) if limit is None else min(limit, len(self.source))
            kwargs = json.dumps(dict(task.config.data.get("source_kwargs", {}) or {}), sort_keys=True, default=str)
            self.description = f"{task.config.data.source} ({self.split} split)"
            self.key = f"builtin:{task.config.data.source}:{self.split}:{kwargs}:{task.input_shape}:{self.count}"
            return
        if not os.path.exists(path):
            raise ValueError(f"--reference {path!r} does not exist")
        stat = os.stat(path)
        self.description = os.path.abspath(path)
        if path.endswith(".npz"):
            with np.load(path) as f:
                keys = set(f.files)
                if {"mu", "sigma"} <= keys:
                    from mgt.evaluation.frechet import FeatureStatistics

                    self.stats = FeatureStatistics(mean=f["mu"], cov=f["sigma"], count=0)
                    self.count, self.key = 0, f"stats:{self.description}:{stat.st_size}:{int(stat.st_mtime)}"
                    return
        if os.path.isdir(path):
            files = sorted(os.path.join(r, n) for r, _, names in os.walk(path) for n in names
                           if not n.startswith(".") and not n.endswith((".txt", ".json", ".jsonl", ".md")))
            if not files:
                raise ValueError(f"--reference {path!r}: the folder holds no files")
            # read batch by batch (a folder may be ImageNet); at most `limit` files spread evenly over the
            # sorted list, so that a class-per-folder layout keeps every class
            step = max(1, len(files) // limit) if limit else 1
            self.files = files[::step][:limit] if limit else files
            self.count = len(self.files)
        else:
            self.inputs, condition = task.read_inputs(path, "--reference")
            self.labels = None if condition is None else condition.labels
            if limit:
                self.inputs = self.inputs[:limit]
            self.count = len(self.inputs)
        self.key = f"path:{self.description}:{stat.st_size}:{int(stat.st_mtime)}:{self.count}"

    def batches(self, batch_size: int):
        """`(inputs float32 [b, ...], labels int32 [b] or None, texts list[str] or None)` in order."""
        if self.stats is not None:
            raise ValueError(f"--reference {self.path!r} holds statistics only (mu, sigma): it serves fid / fvd / "
                             "fad, not metrics that need the reference examples themselves")
        if self.files is not None:
            for start in range(0, self.count, batch_size):
                files = self.files[start:start + batch_size]
                yield np.stack([self.task.read_input(f, "--reference") for f in files]), None, None
            return
        if self.inputs is not None:
            for start in range(0, self.count, batch_size):
                labels = None if self.labels is None else self.labels[start:start + batch_size]
                yield self.inputs[start:start + batch_size], labels, None
            return
        head = _Head(self.source, self.count)
        for batch in self.task.pipeline(head, batch_size=batch_size, train=False, seed=0, augment=False):
            texts = batch.get("text")
            yield (np.asarray(batch[self.task.input_key], np.float32), np.asarray(batch.get("label")) if
                   "label" in batch else None, None if texts is None else [str(t) for t in np.asarray(texts)])


class _Head:
    """The first `n` records of a random-access source."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if not 0 <= int(index) < self.n:
            raise IndexError(index)
        return self.source[int(index)]


# ---- the evaluation --------------------------------------------------------------------------------
def evaluate(workdir: str, *, metrics: str | None = None, num: int = 10_000, reference: str | None = None,
             num_reference: int | None = 50_000, steps: int | None = None, guidance: float | None = None,
             seed: int = 0, batch_size: int = 64, features: str = "auto", feature_weights: str | None = None,
             random_features: bool = False, prompts_file: str | None = None, k: int = 3, is_splits: int = 10,
             quiet: bool = False) -> dict:
    """Score `workdir`; returns `{metric: float, ..., "setup": {...}}` (see the module docstring)."""
    from mgt.evaluation import frechet
    from mgt.evaluation.features import feature_net
    from mgt.modalities import make_task
    from mgt.training.trainer import load_config

    started = time.time()
    config = load_config(workdir)
    task = make_task(config)
    if task.text is not None:
        task.text.use_workdir(workdir)
    names = parse_metrics(task, metrics)
    if num < 2:
        raise ValueError(f"--num {num}: expected at least 2 samples")
    ref = Reference(task, reference, num_reference)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    log(f"mgt eval: {', '.join(names)} of {workdir}; reference {ref.description} ({ref.count or 'statistics'})")

    kinds = sorted({FEATURE_KIND[m] for m in names if m in FEATURE_KIND})
    nets = {kind: feature_net(task, kind, choice=features, weights=feature_weights, random=random_features,
                              batch_size=min(batch_size, 50)) for kind in kinds}  # the outer loops show progress
    if "is" in names and nets["image"].multi_label:  # before any sampling
        if metrics is not None:
            raise ValueError(f"--metrics is: the {nets['image'].name} network is multi-label, and IS needs a "
                             "single-label classifier head")
        names.remove("is")  # only in the default set: no meaning with this network
    if ref.stats is not None:
        frechet_names = [m for m in names if m in FRECHET]
        if len(kinds) != 1 or frechet_names != names:
            raise ValueError(f"--reference {reference!r} holds statistics (mu, sigma) of one feature set: it serves "
                             f"one of fid / fvd / frame_fid / fad alone, not {names}")

    # reference features (cached) and captions; reconstruction metrics need the pass anyway
    reconstruction = [m for m in names if m in RECONSTRUCTION_METRICS[task.name]]
    ref_features, ref_texts, _ = _reference_features(workdir, task, ref, nets, batch_size, log, quiet)
    result: dict = {}
    tokenizer_step = None
    if reconstruction:
        tokenizer_step = _reconstruction_metrics(workdir, task, ref, nets.get("image"), reconstruction, ref_features,
                                                 batch_size, result, log)

    setup = {"workdir": os.path.abspath(workdir), "modality": task.name, "metrics": names, "seed": seed,
             "reference": {"source": ref.description, "count": ref.count,
                           "statistics_only": ref.stats is not None},
             "features": {kind: net.describe() for kind, net in nets.items()}}
    if tokenizer_step is not None:
        setup["checkpoint_steps"] = {"tokenizer": tokenizer_step}

    sampled = [m for m in names if m in SAMPLE_METRICS[task.name]]
    predicted = [m for m in names if m in PREDICTION_METRICS[task.name]]
    if sampled or predicted:
        from mgt.sampling import decode_options
        from mgt.training.trainer import load_pipeline

        pipe = load_pipeline(workdir)
        options = decode_options(config.sample, pipe.spec.num_levels, num_steps=steps, guidance_scale=guidance)
        setup["checkpoint_steps"] = dict(pipe.steps)
        setup["decoding"] = {k: v for k, v in options.items() if k != "stages"}
        setup["decoding"]["stages"] = str(config.sample.get("stages", ""))
        if sampled:
            condition, conditioning = _sample_condition(task, num, ref_texts, prompts_file)
            setup["samples"] = {"count": num, "condition": conditioning, "batch_size": batch_size}
            gen = _sample_features(task, pipe, condition, num, seed, batch_size, options, nets, quiet)
            for m in sampled:
                net = nets[FEATURE_KIND[m]]
                if m in FRECHET:
                    real = ref.stats if ref.stats is not None else frechet.FeatureStatistics.of(ref_features[net.kind])
                    fake = frechet.FeatureStatistics.of(gen[net.kind][0])
                    result[m] = frechet.frechet_between(fake, real)
                elif m == "is":
                    result["is"], result["is_std"] = frechet.inception_score(gen["image"][1], is_splits)
                    setup["is_splits"] = is_splits
                elif m == "precision_recall":
                    from mgt.evaluation.precision_recall import precision_recall

                    result["precision"], result["recall"] = precision_recall(ref_features["image"], gen["image"][0],
                                                                             k=k)
                    setup["precision_recall_k"] = k
            main_kind = task.name  # "image", "video" or "audio": the kind that embeds a whole sample
            if task.model_condition == "labels" and main_kind in gen and gen[main_kind][1] is not None \
                    and not nets[main_kind].multi_label and nets[main_kind].name.startswith("small_"):
                # the built-in classifier's reading of class-conditional samples (it knows the data's classes)
                labels = np.asarray(condition.labels)
                result["class_accuracy"] = float(np.mean(np.argmax(gen[main_kind][1], 1) == labels))
        if predicted:
            result.update(_prediction_metrics(task, pipe, ref, predicted, num, seed, batch_size, options, setup, log))
    setup["seconds"] = round(time.time() - started, 1)
    # the metrics in the order asked for, each with its companions (is_std, recall), then class_accuracy
    order = [key for m in names for key in {"is": ("is", "is_std"), "precision_recall": ("precision", "recall")}
             .get(m, (m,))]
    ordered = {k: float(result[k]) for k in order if k in result}
    ordered.update({k: float(v) for k, v in result.items() if k not in ordered})
    ordered["setup"] = setup
    return ordered


def _reference_features(workdir, task, ref, nets, batch_size, log, quiet):
    """`({kind: float32 [N, D]}, captions or None, labels or None)` of the reference, cached per network."""
    if ref.stats is not None or not nets:
        return {}, None, None
    folder = os.path.join(workdir, "eval")
    out, todo = {}, {}
    texts = labels = None
    for kind, net in nets.items():
        key = hashlib.sha1(f"{ref.key}|{net.fingerprint()}|{kind}".encode()).hexdigest()[:16]
        path = os.path.join(folder, f"reference-{kind}-{key}.npz")
        if os.path.isfile(path):
            with np.load(path) as f:
                out[kind] = f["features"]
                texts = [str(t) for t in f["texts"]] if "texts" in f.files else texts
                labels = f["labels"] if "labels" in f.files else labels
            log(f"  reference {kind} features: {path} (cached)")
        else:
            todo[kind] = (net, path)
    if not todo:
        return out, texts, labels
    collected = {kind: [] for kind in todo}
    all_texts, all_labels = [], []
    from tqdm import tqdm

    for inputs, batch_labels, batch_texts in tqdm(ref.batches(batch_size), desc="reference", unit="batch",
                                                  total=-(-ref.count // batch_size), disable=True if quiet else None):
        for kind, (net, _) in todo.items():
            collected[kind].append(net.embed(inputs)[0])
        all_texts += list(batch_texts or [])
        if batch_labels is not None:
            all_labels.append(np.asarray(batch_labels))
    texts = all_texts or None
    labels = np.concatenate(all_labels) if all_labels else None
    os.makedirs(folder, exist_ok=True)
    for kind, (net, path) in todo.items():
        out[kind] = np.concatenate(collected[kind]).astype(np.float32)
        extra = {"texts": np.asarray(texts, str)} if texts else {}
        if labels is not None:
            extra["labels"] = labels
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, features=out[kind], source=ref.description, network=net.name, **extra)
        os.replace(tmp, path)
        log(f"  reference {kind} features: {len(out[kind])} vectors → {path}")
    return out, texts, labels


def _sample_condition(task, num: int, ref_texts, prompts_file) -> tuple[Condition, str]:
    """The samples' condition and how it was chosen (for the setup)."""
    if task.text is not None:
        if prompts_file:
            try:
                with open(prompts_file, encoding="utf-8") as f:
                    prompts = [line.strip() for line in f if line.strip()]
            except OSError as e:
                raise ValueError(f"--prompts-file {prompts_file!r}: cannot be read ({e.strerror or e})") from None
            source = f"prompts file {os.path.abspath(prompts_file)}"
        else:
            prompts, source = ref_texts, "the reference captions in order"
        if not prompts:
            raise ValueError("--prompts-file is required: the model is text-conditioned and the reference has no "
                             "captions")
        cycled = [prompts[i % len(prompts)] for i in range(num)]
        return task.text.condition(cycled).replace(text=np.asarray(cycled, str)), source
    if prompts_file:
        raise ValueError("--prompts-file: this workdir's model is not text-conditioned")
    if task.model_condition == "labels":
        labels = (np.arange(num) % task.num_classes).astype(np.int32)
        return Condition(labels=labels), f"class-balanced: sample i has class i mod {task.num_classes}"
    if task.model_condition == "context":
        raise ValueError("mgt eval: this workdir's model is conditioned on a context sequence it cannot make up")
    return Condition(), "unconditional"


def sample_args(task) -> argparse.Namespace:
    """The task's sampling options at their defaults (what `task.generate` reads)."""
    parser = argparse.ArgumentParser(add_help=False)
    task.add_sample_arguments(parser)
    return parser.parse_args([])


def _sample_features(task, pipe, condition, num, seed, batch_size, options, nets, quiet):
    """Generate `num` samples batch by batch (memory bounded by one batch) and embed each batch:
    `{kind: (features [num, D], logits [num, C] or None)}`."""
    import jax
    from tqdm import tqdm

    keys = jax.random.split(jax.random.key(seed), num)
    batch = min(batch_size, num)
    args = sample_args(task)
    collected = {kind: ([], []) for kind in nets}
    for start in tqdm(range(0, num, batch), desc="sampling", unit="batch", disable=True if quiet else None):
        n = min(batch, num - start)
        rows = np.minimum(np.arange(start, start + batch), num - 1)  # the last batch padded: one compiled shape
        cond = condition if condition.is_empty else condition.take(rows)
        outputs = np.asarray(task.generate(pipe, keys[rows], cond, batch, args, **options))[:n]
        for kind, net in nets.items():
            f, logits = net.embed(outputs)
            collected[kind][0].append(f)
            if logits is not None:
                collected[kind][1].append(logits)
    return {kind: (np.concatenate(f), np.concatenate(lg) if lg else None) for kind, (f, lg) in collected.items()}


def _reconstruction_metrics(workdir, task, ref, image_net, names, ref_features, batch_size, result, log) -> int:
    """rFID (images) or DAC's codec distances (audio) of the tokenizer's reconstructions of the reference."""
    from mgt.evaluation import frechet
    from mgt.training.trainer import load_tokenizer

    tokenizer, step = load_tokenizer(workdir)
    fakes, sums, count = [], {}, 0
    for inputs, _, _ in ref.batches(batch_size):
        recon = task.reconstruct(tokenizer, inputs)
        if "rfid" in names:
            fakes.append(image_net.embed(recon)[0])
        if task.name == "audio":
            from mgt.evaluation import audio_metrics

            rate = int(task.config.data.sample_rate)
            values = {"mel_distance": lambda: audio_metrics.mel_distance(inputs, recon, rate),
                      "stft_distance": lambda: audio_metrics.stft_distance(inputs, recon, rate),
                      "si_sdr": lambda: audio_metrics.si_sdr(inputs, recon)}
            for m in names:
                sums[m] = sums.get(m, 0.0) + values[m]() * len(inputs)
        count += len(inputs)
    if "rfid" in names:
        result["rfid"] = frechet.frechet_between(frechet.FeatureStatistics.of(np.concatenate(fakes)),
                                                 frechet.FeatureStatistics.of(ref_features["image"]))
    for m, total in sums.items():
        result[m] = total / max(count, 1)
    log(f"  reconstructions of {count} reference examples (tokenizer step {step})")
    return int(step)


def _prediction_metrics(task, pipe, ref, names, num, seed, batch_size, options, setup, log) -> dict:
    """PSNR / SSIM of frame prediction: the first `config.data.condition_frames` frames of each reference
    clip given, the rest generated and compared with the real frames."""
    import jax

    from mgt.modalities.video.metrics import grey_frames, psnr, ssim

    trained = tuple(pipe.transformer.config.tasks)
    if "frame_prediction" not in trained:
        raise ValueError(f"--metrics {','.join(names)}: these score frame prediction, and this workdir's model was "
                         f"trained for {list(trained) or 'no conditional tasks'}")
    cond_frames = int(task.config.data.get("condition_frames", 2))
    values, count, rng = {m: 0.0 for m in names}, 0, jax.random.key(seed)
    for inputs, labels, _ in ref.batches(batch_size):
        inputs = inputs[:max(0, num - count)]
        if not len(inputs):
            break
        labels = None if labels is None or task.model_condition != "labels" else labels[:len(inputs)]
        rng, key = jax.random.split(rng)
        out, _ = task.run_conditional(pipe, "frame_prediction", inputs, labels, key, num_steps=options["num_steps"],
                                      guidance_scale=options["guidance_scale"])
        real, fake = inputs[:, cond_frames:], np.asarray(out)[:, cond_frames:]
        if "psnr" in values:
            values["psnr"] += float(np.sum(psnr(real, fake, axis=tuple(range(1, real.ndim)))))
        if "ssim" in values:
            values["ssim"] += ssim(grey_frames(real), grey_frames(fake)) * len(inputs)
        count += len(inputs)
    setup["prediction"] = {"task": "frame_prediction", "condition_frames": cond_frames, "clips": count}
    log(f"  frame prediction of {count} reference clips")
    return {m: v / max(count, 1) for m, v in values.items()}


def write_json(result: dict, path: str) -> None:
    """Write the result atomically (a crash leaves the previous file or none, never half of one)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)
