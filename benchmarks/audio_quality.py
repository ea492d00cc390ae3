"""Quality and speed of a trained audio workdir (the spoken-digits main job by default).

Measured on held-out utterances of the workdir's own source (the test split: unseen voices), side by
side in one run:

- codec: multi-scale mel distance, STFT distance and SI-SDR of reconstructions (DAC's definitions),
  the bitrate (frames/s × levels × log2 V), codebook usage per level (share of the V codes used and
  the perplexity of their distribution), encode and decode speed as a real-time factor (seconds of
  audio per second of compute) in a child process pinned to ONE CPU core (target: decode > 1×);
- class-conditional generation: the share of samples a spoken-digit classifier (MFCC statistics +
  SVC, trained on the real training utterances) labels with their class, next to the same classifier
  on real held-out utterances and on their reconstructions (target: >= 80 %);
- continuation: the first `--prompt-seconds` of each held-out utterance kept, the rest generated —
  the digit accuracy of the result and how far its pitch (median f0 of voiced frames, in semitones)
  lies from the prompt's own voice, next to how far it lies from other voices (a continuation that
  keeps the voice is much nearer its own).

    mgt train --config configs/audio/spoken_digits.py --workdir runs/spoken_digits
    python benchmarks/audio_quality.py --workdir runs/spoken_digits --json audio_quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time


def codec_speed(workdir: str, seconds: float, repeats: int = 3) -> dict:
    """Encode / decode real-time factors of the workdir's codec on 8 clips of `seconds` (this process)."""
    import jax
    import numpy as np
    from flax import nnx

    from mgt.training.trainer import load_tokenizer

    tokenizer, _ = load_tokenizer(workdir)
    rate = int(tokenizer.config.sample_rate)
    hop = int(np.prod(tokenizer.config.strides))
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (8, int(seconds * rate) // hop * hop)).astype(np.float32)
    graphdef, state = nnx.split(tokenizer)
    encode = jax.jit(lambda st, x: nnx.merge(graphdef, st, copy=True).encode(x))
    decode = jax.jit(lambda st, t: nnx.merge(graphdef, st, copy=True).decode(t))
    tokens = encode(state, audio).block_until_ready()
    decode(state, tokens).block_until_ready()  # compile both first
    out = {}
    for name, fn, arg in (("encode", encode, audio), ("decode", decode, tokens)):
        start = time.perf_counter()
        for _ in range(repeats):
            fn(state, arg).block_until_ready()
        elapsed = (time.perf_counter() - start) / repeats
        out[f"{name}_real_time_factor"] = audio.size / rate / elapsed
    return out


def _one_core_speed(workdir: str, seconds: float) -> dict:
    """`codec_speed` in a child process whose every thread runs on one CPU core."""
    core = sorted(os.sched_getaffinity(0))[0]
    code = ("import json, sys; sys.path.insert(0, %r); import audio_quality as q; "
            "print('RESULT', json.dumps(q.codec_speed(%r, %r)))" % (os.path.dirname(__file__), workdir, seconds))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {core}), check=False)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return {**json.loads(line[7:]), "cores": 1}
    raise RuntimeError(f"the one-core speed run failed:\n{result.stderr[-2000:]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--clips", type=int, default=100, help="held-out utterances for the codec and continuation")
    p.add_argument("--per-class", type=int, default=10, help="class-conditional samples per class")
    p.add_argument("--prompt-seconds", type=float, default=0.25, help="continuation: the prompt kept")
    p.add_argument("--steps", type=int, default=None, help="decoding steps (default: the config's)")
    p.add_argument("--stages", default=None, help="level plan (default: the config's), e.g. 16,1,1,1")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the config's)")
    p.add_argument("--no-speed", action="store_true", help="skip the one-core codec speed run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import numpy as np

    import mgt
    from mgt.benchmarking import write_records
    from mgt.condition import Condition
    from mgt.modalities.audio import metrics
    from mgt.sampling import decode_options

    pipe = mgt.load_pipeline(args.workdir)
    config, task, model, tokenizer = pipe.config, pipe.task, pipe.transformer, pipe.tokenizer
    spec = pipe.spec
    options = decode_options(config.sample, spec.num_levels, num_steps=args.steps, stages=args.stages,
                             guidance_scale=args.guidance)
    if not model.config.null_condition:
        options["guidance_scale"] = 0.0
    rate = task.sample_rate
    source = task.source("test")
    n = min(args.clips, len(source))
    real = task.examples("test", n)  # float32 [N, S]
    labels = np.asarray(getattr(source, "labels", None) if getattr(source, "labels", None) is not None
                        else np.zeros(len(source), np.int32))[:n]
    frames = spec.grid[0]
    record = {"benchmark": "audio_quality", "workdir": args.workdir, "clips": n, "sample_rate": rate,
              "decode": {k: v for k, v in options.items()}, "device": str(jax.devices()[0].platform)}

    # ---- codec ------------------------------------------------------------------------------------
    tokens = task.encode(tokenizer, real)  # [N, F, K]
    recon = task.decode(tokenizer, tokens, real.shape[1])
    record["codec"] = metrics.codec_metrics(real, recon, rate)
    record["codec"]["frame_rate"] = frames / task.seconds
    record["codec"]["levels"] = spec.num_levels
    record["codec"]["codebook_size"] = spec.codebook_size
    record["codec"]["bitrate_bps"] = frames / task.seconds * spec.num_levels * math.log2(spec.codebook_size)
    usage = []
    for k in range(spec.num_levels):
        counts = np.bincount(tokens[..., k].ravel(), minlength=spec.codebook_size)
        prob = counts / counts.sum()
        usage.append({"level": k, "used": float((counts > 0).mean()),
                      "perplexity": float(np.exp(-(prob[prob > 0] * np.log(prob[prob > 0])).sum()))})
    record["codec"]["usage_per_level"] = usage
    if not args.no_speed:
        record["codec"].update(_one_core_speed(args.workdir, task.seconds))

    # ---- class-conditional generation ----------------------------------------------------------------
    spoken = config.data.source == "spoken_digits"
    if model.config.condition_input == "labels" and spoken:
        classifier = metrics.digit_classifier(config)
        cls_labels = np.repeat(np.arange(task.num_classes, dtype=np.int32), args.per_class)
        keys = jax.random.split(jax.random.key(args.seed), len(cls_labels))
        samples = np.asarray(pipe.generate(keys, condition=Condition(labels=cls_labels), batch_size=len(cls_labels),
                                           **options))
        record["generation"] = {
            "samples": len(samples),
            "samples_labelled_with_their_class": classifier.accuracy(samples, cls_labels),
            "classifier_accuracy_real_heldout": classifier.accuracy(real, labels),
            "classifier_accuracy_reconstructed_heldout": classifier.accuracy(recon, labels),
            "per_class": {int(c): float(np.mean(classifier.predict(samples[cls_labels == c]) == c))
                          for c in range(task.num_classes)},
        }

    # ---- continuation -------------------------------------------------------------------------------
    from mgt.modalities.audio import prompts

    keep = prompts.continuation(frames, spec.num_levels, int(round(args.prompt_seconds * frames / task.seconds)))
    condition = Condition(labels=labels.astype(np.int32)) if model.config.condition_input == "labels" else Condition()
    continued = task.run_prompt(pipe, real, keep, condition, jax.random.key(args.seed + 1),
                                **{**options, "stages": decode_options(config.sample, spec.num_levels)["stages"]})
    cut = int(args.prompt_seconds * rate)
    pitch_prompt = np.array([metrics.median_pitch(a, rate) for a in real])
    pitch_cont = np.array([metrics.median_pitch(a[cut:], rate) for a in continued])
    # the measure's floor: the codec's reconstruction of the true continuation, against the same voice
    pitch_recon = np.array([metrics.median_pitch(a[cut:], rate) for a in recon])
    ok = np.isfinite(pitch_prompt) & np.isfinite(pitch_cont) & np.isfinite(pitch_recon)
    semitones = lambda a, b: np.abs(12 * np.log2(a / b))  # noqa: E731
    own = semitones(pitch_cont[ok], pitch_prompt[ok])
    others = semitones(pitch_cont[ok], np.roll(pitch_prompt[ok], 1 + len(own) // 2))
    floor = semitones(pitch_recon[ok], pitch_prompt[ok])
    median = lambda v: float(np.median(v)) if ok.any() else None  # noqa: E731
    cont = {"prompt_seconds": args.prompt_seconds, "clips": n, "clips_with_pitch": int(ok.sum()),
            "pitch_distance_to_own_voice_semitones": median(own),
            "pitch_distance_to_other_voices_semitones": median(others),
            "pitch_distance_codec_reconstruction_semitones": median(floor)}
    if spoken:
        cont["digit_accuracy"] = metrics.digit_classifier(config).accuracy(continued, labels)
    record["continuation"] = cont

    write_records(args.json, record)
    _print_table(record)
    return record


def _print_table(r: dict) -> None:
    c = r["codec"]
    print(f"\ncodec: mel distance {c['mel_distance']:.3f}  STFT distance {c['stft_distance']:.3f}  "
          f"SI-SDR {c['si_sdr']:.1f} dB  bitrate {c['bitrate_bps']:.0f} bit/s "
          f"({c['frame_rate']:g} frames/s × {c['levels']} levels × log2 {c['codebook_size']})")
    print("codebook usage per level: " + "  ".join(f"L{u['level']} {u['used']:.0%} (ppl {u['perplexity']:.0f})"
                                                   for u in c["usage_per_level"]))
    if "decode_real_time_factor" in c:
        print(f"one CPU core: encode {c['encode_real_time_factor']:.1f}× real time, "
              f"decode {c['decode_real_time_factor']:.1f}× real time (target > 1×)")
    g = r.get("generation")
    if g:
        print(f"class-conditional: {g['samples_labelled_with_their_class']:.1%} of {g['samples']} samples labelled "
              f"with their class (target >= 80%); classifier on real held-out "
              f"{g['classifier_accuracy_real_heldout']:.1%}, on their reconstructions "
              f"{g['classifier_accuracy_reconstructed_heldout']:.1%}")
    k = r["continuation"]
    line = f"continuation ({k['prompt_seconds']} s prompt): "
    if k.get("digit_accuracy") is not None:
        line += f"digit accuracy {k['digit_accuracy']:.1%}; "
    if k["pitch_distance_to_own_voice_semitones"] is not None:
        line += (f"pitch {k['pitch_distance_to_own_voice_semitones']:.2f} semitones from the prompt's voice vs "
                 f"{k['pitch_distance_to_other_voices_semitones']:.2f} from other voices (the codec's reconstruction "
                 f"of the true continuation: {k['pitch_distance_codec_reconstruction_semitones']:.2f})")
    print(line)


if __name__ == "__main__":
    main()
