"""The core every loader shares: encode labels, drop empty texts and duplicates, split, wrap in a TaskData."""

import logging
import warnings

import numpy as np

from kerasft.data.errors import DataError, DataWarning, first_items
from kerasft.data.labels import encode_labels
from kerasft.data.splits import SPLITS, examples_needed, split_index
from kerasft.data.task_data import CleaningReport, Examples, TaskData

logger = logging.getLogger("kerasft.data")


def assemble(*, name, modality, input_kind, inputs, digests, raw_labels, split_of, where,
           class_names=None, task=None, validation_split, test_split, seed,
           deduplicate, drop_empty, image_size=None, sample_rate=None, duration=None, report=None, source=None):
    """Cleans, splits and wraps examples from any loader into a TaskData.

    Args:
        inputs: np.ndarray. One raw input per example.
        digests: np.ndarray of bytes. One content hash per example.
        raw_labels: list or np.ndarray. Labels as the source gave them.
        split_of: np.ndarray of str or None. The source's split of each example
            ("train", "validation", "test"), or None to split it all here.
        where: callable. Example index -> name for messages.
        source: RecordSource or None. Where examples of `input_kind="records"` are read from.
        Other arguments: as in the public loaders.
    """
    report = report or CleaningReport()
    if len(inputs) == 0:
        raise DataError(f"No examples could be read from {name!r}.")
    labels, class_names, task = encode_labels(
        raw_labels, class_names=class_names, task=task, where=where)
    split_of = np.full(len(inputs), "all") if split_of is None else np.asarray(split_of)
    keep = np.ones(len(inputs), bool)
    if drop_empty and input_kind == "text":
        empty = np.array([not text.strip() for text in inputs], bool)
        report.empty = int(empty.sum())
        keep &= ~empty
    if input_kind == "text":
        _warn_numeric_texts(inputs, name)
    if deduplicate:
        keep &= _unique_mask(digests, labels, split_of, keep, report)
    if report.empty or report.duplicates:
        logger.warning("%s: dropped %d exact duplicates%s.", name, report.duplicates,
                       f" and {report.empty} empty texts" if input_kind == "text" else "")
    examples = Examples(np.asarray(inputs), labels, np.asarray(digests))
    pool_split = "all" if (split_of == "all").all() else "train"
    pool = np.flatnonzero(keep & (split_of == pool_split))
    _check_classes(labels[pool], class_names, task, name)
    rng = np.random.default_rng(seed)
    fractions = {"validation": validation_split, "test": test_split}
    carve = {s: f if pool_split == "all" or not (split_of == s).any() else 0.0
             for s, f in fractions.items()}
    parts = split_index(labels[pool], task, carve["validation"], carve["test"], rng)
    index = {s: pool[parts[s]] for s in SPLITS}
    for split in ("validation", "test"):
        if not carve[split] and pool_split == "train":
            index[split] = np.flatnonzero(keep & (split_of == split))
    _warn_missing_classes(labels, index, class_names, task, carve)
    splits = {s: examples.take(index[s]) for s in SPLITS}
    return TaskData(splits, name=name, modality=modality, task=task, class_names=class_names,
                    input_kind=input_kind, image_size=image_size, sample_rate=sample_rate, duration=duration,
                    report=report, source=source)


def _warn_numeric_texts(texts, name):
    """A text column that holds only numbers is most likely the wrong column (or a regression target)."""
    numeric = 0
    for text in texts:
        try:
            float(text)
            numeric += 1
        except ValueError:
            if text.strip():
                return
    if numeric:
        warnings.warn(f"Every text in {name!r} is a number (e.g. {texts[0]!r}). A text model reads words; is the "
                      "text column the right one? (Numeric targets go in the label column with task='regression'.)",
                      DataWarning, stacklevel=4)


def _unique_mask(digests, labels, split_of, keep, report):
    """Marks exact duplicates to drop: within a pool keep the first; drop
    train copies of validation/test examples, leaving eval splits as they are.

    Sorts the digests (numpy) rather than filling a dict: a million examples cost arrays, not a million objects.
    """
    unique = np.ones(len(digests), bool)
    order = np.concatenate([np.flatnonzero(keep & (split_of == s)) for s in ("validation", "test", "all", "train")])
    if not len(order):
        return unique
    _, first, group = np.unique(np.asarray(digests)[order], return_index=True, return_inverse=True)
    firsts = order[first[group]]  # for each example in `order`, the first one with its content
    duplicate = (firsts != order) & np.isin(split_of[order], ("all", "train"))
    dropped, kept = order[duplicate], firsts[duplicate]
    unique[dropped] = False
    report.duplicates += len(dropped)
    differs = labels[dropped] != labels[kept]
    report.conflicting_duplicates += int((differs.any(axis=1) if differs.ndim == 2 else differs).sum())
    return unique


def _check_classes(labels, class_names, task, name):
    if task == "regression":
        return
    counts = (labels.sum(axis=0) if task == "multilabel"
              else np.bincount(labels, minlength=len(class_names)))
    if task != "multilabel" and len(class_names) > max(20, len(labels) // 2):
        raise DataError(
            f"{name!r} has {len(class_names)} classes for {len(labels)} examples: most classes have one "
            "example, too few to learn or evaluate. Is the label column an identifier or free text? Received "
            f"labels such as {first_items(repr(n) for n in class_names[:3])}."
        )
    empty = [n for n, c in zip(class_names, counts) if c == 0]
    if empty:
        raise DataError(
            f"Every class needs at least one training example; in {name!r} classes "
            f"{first_items(repr(n) for n in empty)} have none (after cleaning). "
            f"Received counts: {dict(zip(class_names, counts.tolist()))}."
        )


def _warn_missing_classes(labels, index, class_names, task, carve):
    if task == "regression":
        return
    for split in ("validation", "test"):
        if not len(index[split]):
            continue
        present = labels[index[split]]
        counts = present.sum(axis=0) if task == "multilabel" else np.bincount(
            present, minlength=len(class_names))
        missing = [n for n, c in zip(class_names, counts) if c == 0]
        if missing:
            hint = ""
            if carve[split] and task != "multilabel":
                needed = examples_needed(carve["validation"], carve["test"])
                hint = f" A class needs at least {needed} examples to appear in every split."
            warnings.warn(
                f"The {split} split has no example of classes {first_items(missing)}; "
                f"their {split} metrics will be undefined.{hint}",
                DataWarning, stacklevel=4)


# === Loaders ===
