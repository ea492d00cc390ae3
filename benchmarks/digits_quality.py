"""Quality of the built-in digits model: do class-conditional samples show the digit asked for?

A digit classifier (an RBF support-vector machine on the 16×16 grey pixels) is trained on the real
training digits — the same split the model was trained on — and reports its accuracy on the
held-out real digits. Then it labels `--per-class` class-conditional samples of each class from a
trained workdir; the share it labels with the class they were generated for is the model's score
(target >= 90 %), printed next to the classifier's accuracy on real digits.

Diversity: the mean pairwise pixel distance between the samples of one class, averaged over the
classes, divided by the same measure on the real held-out digits (1.0: as varied as real digits;
lower: samples collapse towards a few prototypes). `--guidance 0,1,3` measures several classifier-free
guidance scales side by side, from the same model and keys.

    mgt train --config configs/image/digits.py --workdir runs/digits
    python benchmarks/digits_quality.py --workdir runs/digits --json digits_quality.json
    python benchmarks/digits_quality.py --workdir runs/digits --guidance 0,1,3
"""

from __future__ import annotations

import argparse
import time

from mgt.modalities.image.metrics import grey_features, within_class_spread  # noqa: F401 (re-exported for tests)


def train_classifier(image_size: int):
    """SVC on real training digits → (classifier, accuracy on held-out real digits, their spread)."""
    from mgt.modalities.image.metrics import digit_classifier

    return digit_classifier(image_size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", default=None,
                   help="classifier-free guidance scale, or several comma-separated (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import numpy as np

    import mgt
    from mgt.benchmarking import write_records

    pipe = mgt.load_pipeline(args.workdir)
    config, task, transformer = pipe.config, pipe.task, pipe.transformer
    clf, real_acc, real_spread = train_classifier(task.image_size)
    labels = np.repeat(np.arange(transformer.config.num_classes, dtype=np.int32), args.per_class)
    s = config.sample
    try:
        scales = [float(s.guidance)] if args.guidance is None else [float(g) for g in args.guidance.split(",")]
    except ValueError:
        p.error(f"--guidance={args.guidance!r}; expected a number or comma-separated numbers")
    records = []
    for guidance in scales:
        kwargs = dict(num_steps=int(args.steps or s.num_steps), choice_temperature=float(s.choice_temperature),
                      guidance_scale=guidance)
        start = time.time()
        images = np.concatenate([
            np.asarray(pipe.generate(jax.random.fold_in(jax.random.key(args.seed), i), labels=labels[i:i + 100],
                                     **kwargs))
            for i in range(0, len(labels), 100)])
        seconds = time.time() - start
        features = grey_features(np.clip(images, 0, 1))
        pred = clf.predict(features)
        per_class = {int(c): float(np.mean(pred[labels == c] == c)) for c in np.unique(labels)}
        spread = within_class_spread(features, labels)
        records.append({
            "benchmark": "digits_quality", "workdir": args.workdir, "samples": int(len(labels)),
            "decode_steps": kwargs["num_steps"], "guidance": guidance,
            "classifier_accuracy_real_heldout": real_acc,
            "samples_labelled_with_their_class": float(np.mean(pred == labels)),
            "per_class": per_class, "within_class_spread": spread, "within_class_spread_real": real_spread,
            "diversity_vs_real": spread / real_spread, "sampling_seconds": seconds,
            "device": str(jax.devices()[0].platform)})
    print(f"classifier accuracy on held-out real digits: {real_acc:.3f}; within-class spread of real digits "
          f"{real_spread:.3f}")
    print(f"{'guidance':>8} {'labelled with their class':>26} {'diversity vs real':>18}   weakest classes")
    for r in records:
        weakest = sorted(r["per_class"].items(), key=lambda kv: kv[1])[:3]
        print(f"{r['guidance']:>8.2f} {r['samples_labelled_with_their_class']:>26.3f} "
              f"{r['diversity_vs_real']:>18.3f}   "
              + " ".join(f"{c}:{a:.2f}" for c, a in weakest))
    print("(target: >= 0.90 labelled with their class)")
    write_records(args.json, records)
    return records


if __name__ == "__main__":
    main()
