"""What the built-in data sets' small-feature FIDs mean: the floor a perfect model reaches, and how far
common damage moves it — then, optionally, the score of trained workdirs on the same scale.

    python benchmarks/eval_builtin.py --num 1000 --json eval_builtin.json
    python benchmarks/eval_builtin.py --workdir runs/digits --workdir runs/shapes --num 1000 --json ...

For each built-in data set (digits, captioned shapes, moving digits, spoken digits) and its shipped
network (`mgt.evaluation.small_nets`), all against the same held-out examples' statistics:

  floor        FID of N real training examples against the held-out split (sampling noise of N examples
               plus the train / held-out gap: what a model that reproduces the data gets from N samples)
  noise        the same training examples with Gaussian noise (σ 0.1 of the [0, 1] / [-1, 1] range)
  blur         images / frames blurred (Gaussian σ 1 px); audio low-passed (a 5-tap moving average)
  frozen       video only: every frame replaced by the clip's first (no motion)
  accuracy     the network's held-out accuracy (from the weights' metadata)

With `--workdir`, each workdir is scored with `mgt.evaluate` (its default metrics, `--num` samples).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _damage(x: np.ndarray, kind: str, how: str, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter, uniform_filter1d

    if how == "noise":
        scale = 0.1 if kind != "audio" else 0.2  # 10 % of the value range either way
        lo, hi = (-1.0, 1.0) if kind == "audio" else (0.0, 1.0)
        return np.clip(x + rng.normal(0, scale, x.shape), lo, hi).astype(np.float32)
    if how == "blur":
        if kind == "audio":
            return uniform_filter1d(x, 5, axis=1).astype(np.float32)
        sigma = [0] * (x.ndim - 3) + [1.0, 1.0, 0]
        return gaussian_filter(x, sigma=sigma).astype(np.float32)
    if how == "frozen":
        return np.repeat(x[:, :1], x.shape[1], axis=1)
    raise ValueError(how)


def measure_data_set(name: str, num: int, seed: int = 0) -> dict:
    from mgt.evaluation.features import feature_net, reference_split
    from mgt.evaluation.frechet import FeatureStatistics, frechet_between
    from mgt.evaluation.train_small import load_config
    from mgt.modalities import make_task

    task = make_task(load_config(name))
    kind = {"image": "image", "video": "video", "audio": "audio"}[task.name]
    net = feature_net(task, kind, choice="builtin")
    split = reference_split(task)
    held = task.examples(split, num)
    train = task.examples("train", num)  # as many as a sampled side would have
    real = FeatureStatistics.of(net.embed(held)[0])
    record = {"data_set": name, "examples": len(held), "train_examples": len(train), "split": split,
              "accuracy": float(net.metadata.get("heldout_accuracy", "nan")),
              "floor": frechet_between(FeatureStatistics.of(net.embed(train)[0]), real)}
    rng = np.random.default_rng(seed)
    for how in ("noise", "blur") + (("frozen",) if kind == "video" else ()):
        # the damaged training examples: each row carries the same sampling noise as the floor
        record[how] = frechet_between(FeatureStatistics.of(net.embed(_damage(train, kind, how, rng))[0]), real)
    return record


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num", type=int, default=1000, help="examples per set (capped by the held-out split)")
    p.add_argument("--data", default="digits,captioned_shapes,moving_digits,spoken_digits")
    p.add_argument("--workdir", action="append", default=[], help="also score this trained workdir (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="decoding steps for --workdir (default: the config's)")
    p.add_argument("--smoke", action="store_true", help="digits only, 40 examples")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    names = ["digits"] if args.smoke else [n for n in args.data.split(",") if n]
    num = 40 if args.smoke else args.num
    records = []
    print(f"{'data set':<18}{'N':>6}{'accuracy':>10}{'floor':>9}{'noise':>9}{'blur':>9}{'frozen':>9}   (FID)")
    for name in names:
        start = time.time()
        r = measure_data_set(name, num)
        r["seconds"] = round(time.time() - start, 1)
        records.append(r)
        print(f"{name:<18}{r['examples']:>6}{r['accuracy']:>10.3f}{r['floor']:>9.2f}{r['noise']:>9.2f}"
              f"{r['blur']:>9.2f}{r.get('frozen', float('nan')):>9.2f}", flush=True)
    for workdir in args.workdir:
        import mgt

        result = mgt.evaluate(workdir, num=num, steps=args.steps, quiet=True)
        setup = result.pop("setup")
        records.append({"workdir": workdir, **result, "setup": setup})
        print(f"{workdir}: " + "  ".join(f"{k} {v:.4g}" for k, v in result.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)
    return records


if __name__ == "__main__":
    main()
