"""Quality of the built-in digits model: do class-conditional samples show the digit asked for?

A digit classifier (an RBF support-vector machine on the 16×16 grey pixels) is trained on the real
training digits — the same split the model was trained on — and reports its accuracy on the
held-out real digits. Then it labels `--per-class` class-conditional samples of each class from a
trained workdir; the share it labels with the class they were generated for is the model's score
(target >= 90 %), printed next to the classifier's accuracy on real digits.

    mgt train --config configs/image/digits.py --workdir runs/digits
    python benchmarks/digits_quality.py --workdir runs/digits --json digits_quality.json
"""

from __future__ import annotations

import argparse
import time


def _features(images):
    import numpy as np

    images = np.asarray(images, np.float32)
    if images.max() > 1.5:
        images = images / 255.0
    grey = images.mean(-1) if images.ndim == 4 else images
    return grey.reshape(len(grey), -1)


def train_classifier(image_size: int):
    """SVC on real training digits → (classifier, accuracy on held-out real digits)."""
    import numpy as np
    from sklearn.svm import SVC

    from mgt.modalities.image import DigitsSource

    train = DigitsSource(image_size=image_size, split="train")
    test = DigitsSource(image_size=image_size, split="test")
    clf = SVC(gamma="scale", C=10.0).fit(_features(train.images), train.labels)
    acc = float(np.mean(clf.predict(_features(test.images)) == test.labels))
    return clf, acc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import numpy as np

    from mgt.benchmarking import write_records
    from mgt.pipeline import GenerationPipeline
    from mgt.training.trainer import load_trained

    config, task, tokenizer, transformer = load_trained(args.workdir)
    clf, real_acc = train_classifier(task.image_size)
    labels = np.repeat(np.arange(transformer.config.num_classes, dtype=np.int32), args.per_class)
    pipe = GenerationPipeline(transformer, tokenizer)
    s = config.sample
    kwargs = dict(num_steps=int(args.steps or s.num_steps), choice_temperature=float(s.choice_temperature),
                  guidance_scale=float(s.guidance if args.guidance is None else args.guidance))
    start = time.time()
    images = np.concatenate([
        np.asarray(pipe.generate(jax.random.fold_in(jax.random.key(args.seed), i), labels=labels[i:i + 100], **kwargs))
        for i in range(0, len(labels), 100)])
    seconds = time.time() - start
    pred = clf.predict(_features(np.clip(images, 0, 1)))
    per_class = {int(c): float(np.mean(pred[labels == c] == c)) for c in np.unique(labels)}
    sample_acc = float(np.mean(pred == labels))
    record = {"benchmark": "digits_quality", "workdir": args.workdir, "samples": int(len(labels)),
              "decode_steps": kwargs["num_steps"], "guidance": kwargs["guidance_scale"],
              "classifier_accuracy_real_heldout": real_acc, "samples_labelled_with_their_class": sample_acc,
              "per_class": per_class, "sampling_seconds": seconds, "device": str(jax.devices()[0].platform)}
    print(f"{'measure':<48} {'value':>8}")
    print(f"{'classifier accuracy on held-out real digits':<48} {real_acc:>8.3f}")
    print(f"{'samples labelled with their class':<48} {sample_acc:>8.3f}   (target >= 0.90)")
    print("per class: " + " ".join(f"{c}:{a:.2f}" for c, a in per_class.items()))
    write_records(args.json, record)
    return record


if __name__ == "__main__":
    main()
