"""Image quality measures that need no download: a digit classifier for class-conditional digits.

A support-vector classifier (RBF) on the grey pixels of scikit-learn's real training digits labels
generated digits; the share labelled with the class they were generated for says whether the model
draws the digit it was asked for. `within_class_spread` measures diversity (mean pairwise pixel
distance between examples of one class).
"""

from __future__ import annotations

import functools

import numpy as np


def grey_features(images) -> np.ndarray:
    """Images `[N, H, W, 3]` (float in [0, 1] or uint8) or grey `[N, H, W]` → float32 `[N, H·W]` in [0, 1]."""
    images = np.asarray(images, np.float32)
    if images.max(initial=0.0) > 1.5:
        images = images / 255.0
    grey = images.mean(-1) if images.ndim == 4 else images
    return grey.reshape(len(grey), -1)


def within_class_spread(features, labels) -> float:
    """Mean pairwise Euclidean distance between examples of the same class, averaged over classes."""
    spreads = []
    for c in np.unique(labels):
        x = features[labels == c]
        if len(x) < 2:
            continue
        sq = (x * x).sum(1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))
        spreads.append(d.sum() / (len(x) * (len(x) - 1)))
    return float(np.mean(spreads))


@functools.lru_cache(maxsize=4)
def digit_classifier(image_size: int):
    """SVC on real training digits → (classifier, accuracy on held-out real digits, their within-class spread).
    Built once per image size and process (about a second)."""
    from sklearn.svm import SVC

    from mgt.modalities.image.sources import DigitsSource

    train = DigitsSource(image_size=image_size, split="train")
    test = DigitsSource(image_size=image_size, split="test")
    clf = SVC(gamma="scale", C=10.0).fit(grey_features(train.images), train.labels)
    acc = float(np.mean(clf.predict(grey_features(test.images)) == test.labels))
    return clf, acc, within_class_spread(grey_features(test.images), np.asarray(test.labels))


def digit_class_accuracy(images, labels) -> float:
    """Share of generated digits `[N, S, S, 3]` that the real-digit classifier labels as `labels` `[N]`."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    clf, _, _ = digit_classifier(int(images.shape[1]))
    return float(np.mean(clf.predict(grey_features(images)) == np.asarray(labels)))
