"""Stratified, seeded splitting into train / validation / test, and stratified sampling."""

import math

import numpy as np

from kerasft.data.errors import DataError

SPLITS = ("train", "validation", "test")


def check_fractions(validation_split, test_split):
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise DataError(f"{name} must be a fraction in [0, 1). Received: {name}={value!r}")
    if validation_split + test_split >= 1:
        raise DataError(
            "validation_split + test_split must be < 1 to leave training examples. "
            f"Received: validation_split={validation_split}, test_split={test_split}"
        )


def _round(x):
    return int(math.floor(x + 0.5))


def _split_counts(n, validation_split, test_split):
    """Splits n examples into (train, validation, test) counts, train >= 1."""
    validation, test = _round(n * validation_split), _round(n * test_split)
    while validation + test > max(n - 1, 0):
        if test >= validation:
            test -= 1
        else:
            validation -= 1
    return n - validation - test, validation, test


def examples_needed(validation_split, test_split):
    """The fewest examples of a class that put one in every non-empty split."""
    for n in range(1, 10_000):
        counts = _split_counts(n, validation_split, test_split)
        if all(c > 0 for c, f in zip(counts, (1, validation_split, test_split)) if f):
            return n
    return None


def split_index(labels, task, validation_split, test_split, rng):
    """Returns {split: sorted example indices}; stratified for classes."""
    parts = {split: [] for split in SPLITS}
    if task in ("multiclass", "binary"):
        groups = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    else:
        groups = [np.arange(len(labels))]
    for group in groups:
        group = rng.permutation(group)
        n_train, n_val, _ = _split_counts(len(group), validation_split, test_split)
        parts["train"].append(group[:n_train])
        parts["validation"].append(group[n_train:n_train + n_val])
        parts["test"].append(group[n_train + n_val:])
    parts = {s: np.concatenate(p) if p else np.array([], int) for s, p in parts.items()}
    if task == "multilabel":
        parts = _cover_train(labels, parts)
    return {s: np.sort(p).astype(int) for s, p in parts.items()}


def _cover_train(labels, parts):
    """Moves an example into train for each class that has none there."""
    for c in range(labels.shape[1]):
        if labels[parts["train"], c].any():
            continue
        for split in ("validation", "test"):
            holders = parts[split][labels[parts[split], c] > 0]
            if len(holders):
                parts["train"] = np.append(parts["train"], holders[0])
                parts[split] = parts[split][parts[split] != holders[0]]
                break
    return parts


def _allocate(counts, total):
    """Splits `total` over classes in proportion to `counts` (largest remainder).

    Every class present gets at least one when `total` allows.
    """
    counts = np.asarray(counts, float)
    quota = total * counts / counts.sum()
    take = np.floor(quota).astype(int)
    present = counts > 0
    if total >= present.sum():
        take = np.where(present, np.maximum(take, 1), 0)
    while take.sum() < total:
        room = np.where(take < counts, quota - take, -np.inf)
        take[np.argmax(room)] += 1
    while take.sum() > total:
        excess = np.where(take > 1, quota - take, np.inf)
        take[np.argmin(excess)] -= 1
    return take


def sample_index(labels, task, count, rng):
    """Returns `count` indices of `labels`, stratified for classes."""
    if task not in ("multiclass", "binary"):
        return rng.choice(len(labels), size=count, replace=False)
    classes = np.arange(int(labels.max()) + 1)
    take = _allocate(np.bincount(labels, minlength=len(classes)), count)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
                           for c, k in zip(classes, take)])


# === The shared core ===
