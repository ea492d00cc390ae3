"""Quality and speed of a trained video workdir (the moving-digits main job by default).

Measured on held-out clips of the workdir's own source (the test split), side by side in one run:

- tokenizer: PSNR / SSIM of reconstructions, codebook usage (share of the V codes used and the
  perplexity of their distribution), encode and decode speed (clips/s, compiled, after a warm-up);
- class-conditional generation (the "generation" task): the share of frames a translation-robust
  digit classifier trained on real digits labels with the clip's class, and how often the label
  changes along a clip — next to the same classifier on real clips (target: >= 90 % of frames); how
  fast the ink moves and how far apart two clips of a class are (a sampler that reads right by
  drawing one still digit per class shows here); pooled over `--repeats` sampling seeds (4 by default:
  one seed's 200 clips move the figure by about ±0.02), each seed's figure listed too;
- frame prediction (when the model was trained for it): PSNR of each predicted frame against the
  truth, next to the copy-the-last-given-frame baseline (target: better on every predicted frame).

    mgt train --config configs/video/moving_digits.py --workdir runs/moving_digits
    python benchmarks/video_quality.py --workdir runs/moving_digits --json video_quality.json
"""

from __future__ import annotations

import argparse
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--clips", type=int, default=200, help="held-out clips for the tokenizer and frame prediction")
    p.add_argument("--per-class", type=int, default=20, help="class-conditional clips per class")
    p.add_argument("--steps", type=int, default=None, help="decoding steps (default: the config's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the config's)")
    p.add_argument("--sketch-guidance", type=float, default=None,
                   help="sketch guidance of a recycling model (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=4,
                   help="class-conditional clips drawn at sampling seeds --seed .. --seed + repeats − 1 and pooled "
                        "(default 4: one seed's figure moves by about ±0.02); the frame accuracy also per seed")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: expected >= 1")

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import mgt
    from mgt.benchmarking import write_records
    from mgt.modalities.video import metrics
    from mgt.sampling import decode_options

    pipe = mgt.load_pipeline(args.workdir)
    config, task, model, tokenizer = pipe.config, pipe.task, pipe.transformer, pipe.tokenizer
    # the config's decoding options (temperatures, filtering, ...) as `mgt sample` builds them
    options = decode_options(config.sample, pipe.spec.num_levels, num_steps=args.steps, guidance_scale=args.guidance,
                             sketch_guidance=args.sketch_guidance)
    if not model.config.null_condition:
        options["guidance_scale"] = 0.0
    steps, guidance = options["num_steps"], options["guidance_scale"]
    source = task.source("test")
    n = min(args.clips, len(source))
    clips = task.examples("test", n)  # float32 [N, T, S, S, C]
    labels = np.asarray(getattr(source, "labels", np.zeros(len(source), np.int32)))[:n]
    record = {"benchmark": "video_quality", "workdir": args.workdir, "clips": n, "decode_steps": steps,
              "guidance": guidance, "decode": dict(options), "device": str(jax.devices()[0].platform)}

    # ---- tokenizer ----------------------------------------------------------------------------------
    graphdef, state = nnx.split(tokenizer)
    encode = jax.jit(lambda st, x: nnx.merge(graphdef, st, copy=True).encode(x))
    decode = jax.jit(lambda st, t: nnx.merge(graphdef, st, copy=True).decode(t))
    chunk = 50

    def batched(fn, xs):
        outs = []
        for i in range(0, len(xs), chunk):
            part = xs[i:i + chunk]
            pad = np.zeros((chunk - len(part),) + part.shape[1:], part.dtype)
            outs.append(np.asarray(fn(state, jnp.asarray(np.concatenate([part, pad]))))[:len(part)])
        return np.concatenate(outs)

    tokens = batched(encode, clips)
    recon = np.clip(batched(decode, tokens), 0, 1)
    grey = metrics.grey_frames
    counts = np.bincount(tokens.reshape(-1), minlength=tokenizer.codebook_size)
    prob = counts / counts.sum()
    record.update({
        "tokenizer_psnr": float(metrics.psnr(clips, recon)), "tokenizer_ssim": metrics.ssim(grey(clips), grey(recon)),
        "codebook_usage": float(np.mean(counts > 0)),
        "codebook_perplexity": float(np.exp(-np.sum(prob[prob > 0] * np.log(prob[prob > 0])))),
        "codebook_size": int(tokenizer.codebook_size)})
    x = jnp.asarray(clips[:chunk])
    t = encode(state, x)
    jax.block_until_ready(decode(state, t))
    for name, fn, arg in (("encode", encode, x), ("decode", decode, t)):
        start, reps = time.perf_counter(), 3
        for _ in range(reps):
            jax.block_until_ready(fn(state, arg))
        record[f"tokenizer_{name}_clips_per_s"] = reps * len(x) / (time.perf_counter() - start)

    # ---- class-conditional generation ---------------------------------------------------------------
    is_digits = config.data.source == "moving_digits"
    if is_digits:  # the classifier on real clips, and on their reconstructions (the tokenizer's ceiling)
        record["real_clips"] = metrics.class_consistency(clips, labels)
        record["reconstructed_clips"] = metrics.class_consistency(recon, labels)
        record["real_clips"].update(metrics.motion_and_diversity(clips, labels))
        record["reconstructed_clips"].update(metrics.motion_and_diversity(recon, labels))
    tasks = model.config.tasks
    if model.config.condition_input == "labels" and (not tasks or "generation" in tasks):
        gen_labels = np.repeat(np.arange(model.config.num_classes, dtype=np.int32), args.per_class)
        start = time.time()
        by_seed = [np.concatenate([
            np.asarray(pipe.generate(jax.random.fold_in(jax.random.key(seed), i), labels=gen_labels[i:i + 100],
                                     **options))
            for i in range(0, len(gen_labels), 100)]) for seed in range(args.seed, args.seed + args.repeats)]
        record["generation_seconds"] = time.time() - start
        videos, gen_labels = np.concatenate(by_seed), np.tile(gen_labels, args.repeats)
        record["generated_clips"] = int(len(gen_labels))
        record["sampling_seeds"] = list(range(args.seed, args.seed + args.repeats))
        if is_digits:
            videos = np.clip(videos, 0, 1)
            record["generated"] = metrics.class_consistency(videos, gen_labels, per_class=True)
            record["generated"].update(metrics.motion_and_diversity(videos, gen_labels))
            n = len(videos) // args.repeats
            record["generated"]["frame_class_accuracy_by_seed"] = [
                metrics.class_consistency(videos[k * n:(k + 1) * n], gen_labels[:n])["frame_class_accuracy"]
                for k in range(args.repeats)]

    # ---- frame prediction ---------------------------------------------------------------------------
    if "frame_prediction" in tasks:
        c = int(config.data.get("condition_frames", 2))
        cond_labels = labels if model.config.condition_input == "labels" else None
        # the config's decoding options (with --steps), as `mgt edit` runs them: no guidance
        predicted, _ = task.run_conditional(pipe, "frame_prediction", clips, cond_labels,
                                            jax.random.key(args.seed + 1), num_steps=steps)
        truth = clips[:, c:]
        copy_last = np.repeat(clips[:, c - 1:c], clips.shape[1] - c, axis=1)
        model_psnr = [float(metrics.psnr(truth[:, k], predicted[:, c + k])) for k in range(truth.shape[1])]
        copy_psnr = [float(metrics.psnr(truth[:, k], copy_last[:, k])) for k in range(truth.shape[1])]
        record["frame_prediction"] = {
            "given_frames": c, "guidance": 0.0, "psnr_per_predicted_frame": model_psnr,
            "copy_last_frame_psnr": copy_psnr,
            "beats_copy_last_on_every_frame": bool(all(m > b for m, b in zip(model_psnr, copy_psnr))),
            "given_frames_psnr": float(metrics.psnr(clips[:, :c], predicted[:, :c]))}

    _print(record)
    write_records(args.json, [record])
    return record


def _print(r: dict) -> None:
    print(f"tokenizer: PSNR {r['tokenizer_psnr']:.2f} dB, SSIM {r['tokenizer_ssim']:.3f}, codebook usage "
          f"{r['codebook_usage']:.2f} of {r['codebook_size']} (perplexity {r['codebook_perplexity']:.1f}); "
          f"encode {r['tokenizer_encode_clips_per_s']:.0f} clips/s, decode {r['tokenizer_decode_clips_per_s']:.0f} "
          f"clips/s ({r['device']})")
    if "generated" in r:
        real, gen = r["real_clips"], r["generated"]
        print(f"{'':28}{'frames labelled with class':>28}{'label flips per clip':>22}{'clips by majority':>19}"
              f"{'ink speed (px/frame)':>22}{'within-class distance':>23}")
        rows = (("real held-out clips", real), ("their reconstructions", r["reconstructed_clips"]),
                ("generated (guidance %.1f)" % r["guidance"], gen))
        for name, m in rows:
            print(f"{name:28}{m['frame_class_accuracy']:>28.3f}{m['label_flips_per_clip']:>22.2f}"
                  f"{m['clip_majority_accuracy']:>19.3f}{m['ink_speed']:>22.2f}{m['within_class_distance']:>23.4f}")
        print(f"(target: >= 0.90 of generated frames labelled with their class; {r['generated_clips']} clips "
              f"at sampling seeds {', '.join(map(str, r['sampling_seeds']))}: "
              + " / ".join(f"{a:.3f}" for a in gen["frame_class_accuracy_by_seed"]) + ")")
        print("generated frames labelled with their class, by class: " + " ".join(
            f"{c}:{'-' if a is None else f'{a:.2f}'}" for c, a in enumerate(gen["per_class_frame_accuracy"])))
        import numpy as np

        worst = np.asarray(gen["confusion"], float)
        np.fill_diagonal(worst, 0)
        i, j = np.unravel_index(worst.argmax(), worst.shape)
        if worst[i, j] > 0:
            print(f"most frequent misreading: {int(worst[i, j])} frames of class {i} read as {j}")
    if "frame_prediction" in r:
        fp = r["frame_prediction"]
        print(f"frame prediction ({fp['given_frames']} frames given): PSNR per predicted frame (dB)")
        print("  model:     " + " ".join(f"{v:6.2f}" for v in fp["psnr_per_predicted_frame"]))
        print("  copy last: " + " ".join(f"{v:6.2f}" for v in fp["copy_last_frame_psnr"]))
        print(f"  beats copy-last on every predicted frame: {fp['beats_copy_last_on_every_frame']} "
              f"(given frames reconstructed at {fp['given_frames_psnr']:.2f} dB)")


if __name__ == "__main__":
    main()
