"""Sparse probing (SAEBench, Gurnee et al. 2023): can k latents, picked without the classifier,
tell classes of labelled text apart?

Each labelled dataset becomes one-vs-rest binary tasks (class c against the others, balanced). A
document is represented by the mean over its counted tokens of either the dictionary's latent
activations or the raw activations. On the task's training documents the k features whose class
means differ most are picked; a logistic regression on those k alone is scored on held-out
documents. The raw-activation baselines are the same probe on all dimensions and on the top-k
dimensions picked the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from sklearn.linear_model import LogisticRegression


class Task(NamedTuple):
    """One balanced binary task: features per document and a bool label, split into train/test."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    def restricted(self, columns: np.ndarray) -> Task:
        return Task(self.name, self.train_x[:, columns], self.train_y, self.test_x[:, columns], self.test_y)


def check_labels(labels: Sequence[str], what: str) -> list[str]:
    """The classes of a labelled set; ValueError when there are fewer than two."""
    classes = sorted({str(label) for label in labels})
    if len(classes) < 2:
        raise ValueError(f"{what} has {len(classes)} class ({classes}): probing needs at least two")
    return classes


def one_vs_rest_splits(labels: Sequence[str], per_class: int, test_fraction: float, seed: int,
                       what: str = "labels") -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """For each class c: (c, train rows, train labels, test rows, test labels), with as many
    documents of c as of the other classes (at most `per_class` each side), each side split into
    train and test in the same proportion."""
    classes = check_labels(labels, what)
    labels_arr = np.asarray([str(label) for label in labels])
    rng = np.random.default_rng(seed)
    out = []
    for c in classes:
        pos, neg = np.flatnonzero(labels_arr == c), np.flatnonzero(labels_arr != c)
        n = min(per_class, len(pos), len(neg))
        if n < 2:
            raise ValueError(f"{what}: class {c!r} has {len(pos)} documents against {len(neg)}: "
                             "a train/test split needs at least 2 on each side")
        n_test = min(n - 1, max(1, round(n * test_fraction)))
        pos, neg = rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)
        train = np.concatenate([pos[n_test:], neg[n_test:]])
        test = np.concatenate([pos[:n_test], neg[:n_test]])
        out.append((c, train, labels_arr[train] == c, test, labels_arr[test] == c))
    return out


def top_k_by_mean_difference(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Column ids of the k features whose means over positives and negatives differ most."""
    if k > x.shape[1]:
        raise ValueError(f"k={k} is larger than the {x.shape[1]} features to choose from")
    diff = np.abs(x[y].mean(0) - x[~y].mean(0))
    return np.argsort(-diff, kind="stable")[:k]


def probe_accuracy(task: Task, seed: int = 0) -> float:
    """Held-out accuracy of an L2 logistic regression on standardised features."""
    mean, std = task.train_x.mean(0), task.train_x.std(0) + 1e-6
    probe = LogisticRegression(max_iter=2000, random_state=seed)
    probe.fit((task.train_x - mean) / std, task.train_y)
    return float(probe.score((task.test_x - mean) / std, task.test_y))


def sparse_probing(task: Task, ks: Sequence[int], seed: int = 0) -> dict[int, float]:
    """Accuracy of the probe on the top-k features of `task` for each k."""
    return {k: probe_accuracy(task.restricted(top_k_by_mean_difference(task.train_x, task.train_y, k)), seed)
            for k in ks}
