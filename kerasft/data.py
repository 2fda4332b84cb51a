"""Loads labelled images, texts or sound clips into a cleaned, split `TaskData`.

Every loader (`from_directory`, `from_csv`, `from_arrays`, `from_tfds`) reads
its source into one shared core, which checks the labels, drops empty texts and
exact duplicates, splits stratified and seeded, and keeps the raw examples of
each split in numpy (texts, pixels, file paths, encoded image bytes or
waveforms). The
`tf.data` pipelines of a `TaskData` are built from those arrays on first use.

Elements are UNBATCHED `(x, y)` pairs:
- text: `x` is a `tf.string` scalar.
- image: `x` is `tf.uint8` of shape `(H, W, 3)`; grayscale is repeated to RGB,
  alpha is dropped.
- audio: `x` is `tf.float32` of shape `(clip_samples,)`: a mono waveform at
  `sample_rate`, cut or zero-padded to `duration` seconds (`kerasft.audio`).
- `y` is an `int32` class id (multiclass; binary when there are 2 classes), a
  `float32` multi-hot vector `(C,)` (multilabel) or a `float32` scalar
  (regression).

Example:

```python
data = kerasft.data.from_directory("photos/", image_size=(224, 224))
print(data.summary())
model.fit(data.train.batch(32), validation_data=data.validation.batch(32))
```
"""

import csv
import dataclasses
import difflib
import hashlib
import io
import json
import logging
import math
import os
import re
import warnings
from concurrent import futures
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasft import audio

SPLITS = ("train", "validation", "test")
TASKS = ("multiclass", "binary", "multilabel", "regression")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
TEXT_EXTENSIONS = (".txt",)
# The first bytes of each image format TensorFlow decodes; anything else
# carrying an image extension is not an image.
_IMAGE_SIGNATURES = (b"\xff\xd8", b"\x89PNG", b"GIF87a", b"GIF89a", b"BM")
_VALIDATION_FOLDERS = ("validation", "val")
_MISSING_LABELS = ("", "nan")
_INTEGER = re.compile(r"[+-]?\d+")
# How many offending rows/files an error or warning names.
_SHOWN = 5

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Raised when a data source cannot make a task: says what, expected and received."""


class DataWarning(UserWarning):
    """Warns about examples that were skipped or classes missing from a split."""


def _first(items, limit=_SHOWN):
    """Formats the first few items of a list for a message."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _digest(content):
    """Returns a 16-byte content hash of bytes."""
    return hashlib.blake2b(content, digest_size=16).digest()


@dataclasses.dataclass
class CleaningReport:
    """What a loader dropped, skipped or repaired, for `TaskData.summary()`.

    Args:
        duplicates: int. Exact duplicates dropped (the first one is kept).
        conflicting_duplicates: int. Of those, how many carried another label
            than the copy kept.
        empty: int. Empty or whitespace-only texts dropped.
        skipped: list of (str, str). Examples that could not be read: where
            (file path or row) and why.
        fallback_decoded: list of str. Text files or rows that were not UTF-8
            and were decoded with the fallback encoding.
        ignored: list of str. Files in class folders whose extension is not of
            the data's modality.
        notes: list of str. Anything else worth knowing (e.g. "subset of ...").
    """

    duplicates: int = 0
    conflicting_duplicates: int = 0
    empty: int = 0
    skipped: list = dataclasses.field(default_factory=list)
    fallback_decoded: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    def lines(self):
        """Returns the report as short human-readable lines."""
        lines = [
            f"exact duplicates dropped: {self.duplicates}"
            + (f" ({self.conflicting_duplicates} with a different label)"
               if self.conflicting_duplicates else ""),
            f"unreadable examples skipped: {len(self.skipped)}",
        ]
        if self.empty:
            lines.insert(1, f"empty texts dropped: {self.empty}")
        lines += [f"  {where}: {why}" for where, why in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        if self.fallback_decoded:
            lines.append(
                f"decoded with the fallback encoding: {len(self.fallback_decoded)} "
                f"({_first(self.fallback_decoded)})"
            )
        if self.ignored:
            lines.append(
                f"files of another kind ignored: {len(self.ignored)} ({_first(self.ignored)})"
            )
        return lines + list(self.notes)


@dataclasses.dataclass(frozen=True)
class _Examples:
    """One split's examples: raw inputs, encoded labels and content digests."""

    inputs: np.ndarray
    labels: np.ndarray
    digests: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, index):
        return _Examples(self.inputs[index], self.labels[index], self.digests[index])


class TaskData:
    """A labelled data set split into train, validation and test.

    Built by the `from_*` loaders and `kerasft.samples`; each split keeps its
    raw examples (see `inputs()`) and offers an UNBATCHED `tf.data.Dataset` of
    `(x, y)` pairs (see the module docstring for dtypes). Folder images are
    kept as file paths and decoded inside `tf.data`
    (`tf.io.decode_image(..., channels=3, expand_animations=False)`, resized to
    `image_size` when set, in parallel); array images are kept in memory.

    Attributes:
        train, validation, test: tf.data.Dataset. Unbatched `(x, y)` pairs.
        class_names: list of str. Class names in index order (`[]` for regression).
        modality: str. "image", "text" or "audio".
        task: str. "multiclass", "binary", "multilabel" or "regression".
        name: str. A short name for the data set (folder name, file stem, ...).
        image_size: tuple of int or None. The (height, width) images are resized
            to, or None to keep their own size.
        sample_rate: int or None. Audio: the clips' sample rate in Hz.
        duration: float or None. Audio: the clips' length in seconds.
        report: CleaningReport. What the loader dropped or skipped.

    Example:

    ```python
    data = kerasft.data.from_arrays(images, labels)
    data.labels("train")[:5], data.size("test"), data.num_classes
    quick = data.subset(train=200, validation=50, test=50)
    ```
    """

    def __init__(self, splits, *, name, modality, task, class_names, input_kind,
                 image_size=None, sample_rate=None, duration=None, report=None):
        """Wraps split examples; use the `from_*` loaders rather than this.

        Args:
            splits: dict of str to _Examples. One entry per name in SPLITS.
            name: str. The data set's name.
            modality: str. "image", "text" or "audio".
            task: str. One of TASKS.
            class_names: list of str. Class names in index order.
            input_kind: str. How inputs are stored: "text", "pixels" (uint8
                arrays), "files" (image paths), "encoded" (image bytes) or
                "waveform" (float32 clips).
            image_size: tuple of int or None. (height, width) to resize images to.
            sample_rate: int or None. Audio clips' sample rate (Hz).
            duration: float or None. Audio clips' length (seconds).
            report: CleaningReport or None. What cleaning did.
        """
        self._splits = splits
        self.name = name
        self.modality = modality
        self.task = task
        self.class_names = list(class_names)
        self.input_kind = input_kind
        self.image_size = image_size
        self.sample_rate = sample_rate
        self.duration = duration
        self.report = report or CleaningReport()
        self._datasets = {}

    @property
    def num_classes(self):
        """The number of model outputs: classes, or 1 for regression."""
        return 1 if self.task == "regression" else len(self.class_names)

    @property
    def train(self):
        """The training split: an unbatched tf.data.Dataset of (x, y)."""
        return self._dataset("train")

    @property
    def validation(self):
        """The validation split: an unbatched tf.data.Dataset of (x, y)."""
        return self._dataset("validation")

    @property
    def test(self):
        """The test split: an unbatched tf.data.Dataset of (x, y)."""
        return self._dataset("test")

    def _examples(self, split):
        if split not in self._splits:
            raise DataError(f"Unknown split. Expected one of {SPLITS}. Received: split={split!r}")
        return self._splits[split]

    def labels(self, split):
        """Returns the labels of a split as numpy, without iterating tf.data.

        Args:
            split: str. "train", "validation" or "test".
        """
        return self._examples(split).labels

    def inputs(self, split):
        """Returns the stored raw inputs of a split as numpy.

        Texts (str), uint8 images `(N, H, W, 1 or 3)` before resizing, image
        file paths (str), encoded image bytes or float32 waveforms
        `(N, clip_samples)`, depending on `input_kind`.

        Args:
            split: str. "train", "validation" or "test".
        """
        return self._examples(split).inputs

    def size(self, split):
        """Returns the number of examples in a split.

        Args:
            split: str. "train", "validation" or "test".
        """
        return len(self._examples(split))

    def _dataset(self, split):
        if split not in self._datasets:
            self._datasets[split] = _to_dataset(
                self._examples(split), self.input_kind, self.image_size
            )
        return self._datasets[split]

    def subset(self, train=None, validation=None, test=None, seed=0):
        """Returns a smaller TaskData: a stratified, seeded sample of each split.

        Classification keeps the class proportions of each split and, when the
        number asked allows, at least one example of every class present;
        multilabel and regression sample at random.

        Args:
            train: int or None. Examples to keep in train (None keeps all; at
                most the split's size).
            validation: int or None. Likewise for validation.
            test: int or None. Likewise for test.
            seed: int. Seed of the sampling.

        Example:

        ```python
        small = data.subset(train=100, validation=20, test=20)
        ```
        """
        rng = np.random.default_rng(seed)
        splits = {}
        for split, count in zip(SPLITS, (train, validation, test)):
            examples = self._splits[split]
            if count is None or count >= len(examples):
                splits[split] = examples
                continue
            if count < 0:
                raise DataError(f"subset() sizes must be >= 0. Received: {split}={count}")
            index = _sample(examples.labels, self.task, count, rng)
            splits[split] = examples.take(np.sort(index))
        report = dataclasses.replace(
            self.report,
            notes=self.report.notes
            + [f"subset (seed {seed}) of {self.name}: " + ", ".join(
                f"{s}={len(splits[s])}/{len(self._splits[s])}" for s in SPLITS)],
        )
        return TaskData(splits, name=self.name, modality=self.modality, task=self.task,
                        class_names=self.class_names, input_kind=self.input_kind,
                        image_size=self.image_size, sample_rate=self.sample_rate, duration=self.duration,
                        report=report)

    def fingerprint(self):
        """Returns a stable hex hash of the content, labels and splits.

        Two TaskData with the same examples (by content), labels, splits, task,
        class names and image size have the same fingerprint, across runs.
        """
        sha = hashlib.sha256()
        sha.update(json.dumps([self.modality, self.task, self.class_names,
                               list(self.image_size or ())]
                              + ([self.sample_rate, self.duration] if self.sample_rate else [])).encode())
        for split in SPLITS:
            examples = self._splits[split]
            sha.update(split.encode())
            sha.update(examples.digests.tobytes())
            sha.update(np.ascontiguousarray(examples.labels).tobytes())
        return sha.hexdigest()[:20]

    def summary(self):
        """Returns a table of examples per class and split, plus the cleaning report."""
        sizes = {split: self.size(split) for split in SPLITS}
        head = (f"TaskData {self.name!r}: {self.modality}, {self.task}, "
                + ("regression target" if self.task == "regression"
                   else f"{len(self.class_names)} classes")
                + (f", images resized to {self.image_size}" if self.image_size else "")
                + (f", mono clips of {self.duration:g} s at {self.sample_rate} Hz (cut or zero-padded)"
                   if self.sample_rate else ""))
        if self.task == "regression":
            rows = []
            for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
                rows.append([stat] + [f"{fn(self.labels(s)):.4g}" if sizes[s] else "-"
                                      for s in SPLITS])
        else:
            rows = [[name] + [str(int(n)) for n in counts]
                    for name, counts in zip(self.class_names, self.class_counts().T)]
        rows.append(["total"] + [str(sizes[s]) for s in SPLITS])
        table = [["class" if self.task != "regression" else "label", *SPLITS]] + rows
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = [head] + [
            "  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths)))
            for row in table
        ]
        if self.task == "multilabel":
            lines.append("  (multilabel: counts are examples carrying each class)")
        return "\n".join(lines + ["cleaning:"] + ["  " + l for l in self.report.lines()])

    def class_counts(self):
        """Returns an array (3, classes): examples per class in train, validation and test (multilabel: positives)."""
        counts = []
        for split in SPLITS:
            labels = self.labels(split)
            if self.task == "multilabel":
                counts.append(labels.sum(axis=0).astype(int) if len(labels)
                              else np.zeros(len(self.class_names), int))
            else:
                counts.append(np.bincount(labels, minlength=len(self.class_names)))
        return np.array(counts)

    def __repr__(self):
        sizes = ", ".join(f"{s}={self.size(s)}" for s in SPLITS)
        return (f"TaskData(name={self.name!r}, modality={self.modality!r}, "
                f"task={self.task!r}, num_classes={self.num_classes}, {sizes})")

    def __str__(self):
        return self.summary()


# === tf.data ===

def _decode_image(contents, image_size):
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return _resize(image, image_size)


def _resize(image, image_size):
    if not image_size:
        return image
    # Squashes to the size (no crop), like keras.utils.image_dataset_from_directory.
    resized = tf.image.resize(image, image_size, antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def _to_dataset(examples, input_kind, image_size):
    """Builds the unbatched (x, y) tf.data pipeline of one split."""
    if input_kind in ("pixels", "waveform"):
        inputs = examples.inputs
    else:
        inputs = tf.constant(examples.inputs.tolist(), dtype=tf.string, shape=[len(examples)])
    ds = tf.data.Dataset.from_tensor_slices((inputs, examples.labels))
    if input_kind == "files":
        ds = ds.map(lambda path, y: (_decode_image(tf.io.read_file(path), image_size), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    elif input_kind == "encoded":
        ds = ds.map(lambda data, y: (_decode_image(data, image_size), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    elif input_kind == "pixels" and (image_size or examples.inputs.shape[-1] == 1):
        gray = examples.inputs.shape[-1] == 1
        ds = ds.map(lambda x, y: (_resize(tf.image.grayscale_to_rgb(x) if gray else x,
                                          image_size), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds


# === Checks at the door ===

def _check_fractions(validation_split, test_split):
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise DataError(f"{name} must be a fraction in [0, 1). Received: {name}={value!r}")
    if validation_split + test_split >= 1:
        raise DataError(
            "validation_split + test_split must be < 1 to leave training examples. "
            f"Received: validation_split={validation_split}, test_split={test_split}"
        )


def _check_image_size(image_size):
    if image_size is None:
        return None
    if (len(tuple(image_size)) != 2
            or not all(isinstance(v, (int, np.integer)) and v > 0 for v in image_size)):
        raise DataError(
            "image_size must be (height, width) of positive ints or None. "
            f"Received: image_size={image_size!r}"
        )
    return tuple(int(v) for v in image_size)


def _check_task(task):
    if task not in (None, *TASKS):
        raise DataError(f"task must be None or one of {TASKS}. Received: task={task!r}")


# === Labels ===

def _encode_labels(y, *, class_names=None, task=None, where=str):
    """Turns raw labels into (encoded labels, class names, task).

    Integer numpy labels are class ids; Python/JSON values and strings are class
    names, sorted (numerically when all are integers); a 2-D 0/1 array is
    multi-hot and lists of names are multilabel; a 1-D float array, or any
    labels with `task="regression"`, are float targets.

    Args:
        y: list or np.ndarray. Raw labels, one per example.
        class_names: list of str or None. Known class names in index order.
        task: str or None. The task asked for, or None to infer it.
        where: callable. Maps an example index to a name for messages
            ("row 5", "y[4]").
    """
    _check_task(task)
    array = y if isinstance(y, np.ndarray) else None
    if array is not None and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]  # Keras' own loaders give class ids as (N, 1), e.g. CIFAR-10.
    if task == "regression" or (array is not None and array.ndim == 1
                                and array.dtype.kind == "f" and task is None):
        return _regression_labels(y if array is None else array, where), [], "regression"
    if array is not None and array.ndim == 2:
        labels, names = _multi_hot_labels(array, class_names, where)
    elif array is not None and array.dtype.kind in "iu":
        labels, names = _id_labels(array, class_names, where)
    else:
        values = list(y)
        _check_missing(values, where)
        if any(isinstance(v, (list, tuple)) for v in values):
            labels, names = _tag_labels(values, class_names, where)
        else:
            labels, names = _name_labels(values, class_names, where)
    inferred = "multilabel" if labels.ndim == 2 else "binary" if len(names) == 2 else "multiclass"
    if task is not None and (task == "multilabel") != (inferred == "multilabel"):
        raise DataError(
            f"The labels make a {inferred} task, not {task!r}. Multilabel needs a 2-D "
            "multi-hot array, lists of class names, or label_separator=. "
            f"Received: labels such as {list(y[:3])}"
        )
    if len(names) < 2:
        raise DataError(f"A classification task needs at least 2 classes. Received: only {names}.")
    return labels, list(names), inferred


def _show(values, indices, where):
    """Formats the first few offending labels as "row 3 ('cat'), ..."."""
    shown = [values[i].item() if isinstance(values[i], np.generic) else values[i]
             for i in indices]
    return _first(f"{where(i)} ({value!r})" for i, value in zip(indices, shown))


def _check_missing(values, where):
    missing = [i for i, v in enumerate(values)
               if v is None or (isinstance(v, float) and math.isnan(v))
               or (isinstance(v, str) and v.strip().lower() in _MISSING_LABELS)]
    if missing:
        raise DataError(
            f"{len(missing)} examples have an empty or NaN label: "
            f"{_first(where(i) for i in missing)}. Expected a label on every example."
        )


def _regression_labels(y, where):
    values = list(y)
    targets = np.array([_to_float(v) for v in values], np.float64)
    bad = np.flatnonzero(~np.isfinite(targets))
    if len(bad):
        raise DataError(f"Regression labels must be finite numbers. Received: "
                        f"{_show(values, bad, where)}.")
    return targets.astype(np.float32)


def _to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _multi_hot_labels(array, class_names, where):
    bad = (np.flatnonzero(~np.isin(array, (0, 1)).all(axis=1)) if array.dtype.kind in "iubf"
           else np.arange(len(array)))
    if len(bad):
        raise DataError("A 2-D label array must be multi-hot (0 or 1 everywhere). Received "
                        f"other values at {_first(where(i) for i in bad)}.")
    names = class_names or [str(i) for i in range(array.shape[1])]
    if len(names) != array.shape[1]:
        raise DataError(f"class_names has {len(names)} names but the multi-hot labels have "
                        f"{array.shape[1]} columns.")
    return array.astype(np.float32), names


def _tag_labels(values, class_names, where):
    not_lists = [i for i, v in enumerate(values) if not isinstance(v, (list, tuple))]
    if not_lists:
        raise DataError("Multilabel labels must all be lists of class names. Received "
                        f"non-lists at {_show(values, not_lists, where)}.")
    tags = [[str(t).strip() for t in v if str(t).strip()] for v in values]
    _check_missing([row or None for row in tags], where)
    names = _check_known(class_names or sorted({t for row in tags for t in row}), tags)
    index = {n: i for i, n in enumerate(names)}
    labels = np.zeros((len(tags), len(names)), np.float32)
    for row, row_tags in enumerate(tags):
        labels[row, [index[t] for t in row_tags]] = 1
    return labels, names


def _id_labels(array, class_names, where):
    if array.ndim != 1:
        raise DataError(f"Labels must be 1-D (or 2-D multi-hot). Received shape {array.shape}.")
    names = class_names or [str(i) for i in range(int(array.max()) + 1)]
    outside = np.flatnonzero((array < 0) | (array >= len(names)))
    if len(outside):
        raise DataError(f"Integer labels are class ids and must be in [0, {len(names)}). "
                        f"Received: {_show(array, outside, where)}.")
    return array.astype(np.int32), names


def _name_labels(values, class_names, where):
    bad = [i for i, v in enumerate(values)
           if isinstance(v, bool) or not isinstance(v, (str, int, np.integer))]
    if bad:
        raise DataError("Labels must be class names (str) or integers (for numeric targets "
                        f"pass task='regression'). Received: {_show(values, bad, where)}.")
    strings = [str(v).strip() for v in values]
    is_int = np.array([bool(_INTEGER.fullmatch(s)) for s in strings])
    if is_int.any() and not is_int.all():
        raise DataError(
            f"Labels mix integers and text: {_show(values, np.flatnonzero(is_int)[:3], where)} vs "
            f"{_show(values, np.flatnonzero(~is_int)[:3], where)}. Expected labels of one kind "
            "(for numeric targets pass task='regression')."
        )
    if not class_names and not is_int.all() and np.isfinite([_to_float(s) for s in strings]).all():
        raise DataError("Labels are non-integer numbers: pass task='regression' for a numeric "
                        f"target. Received: {_show(values, range(min(3, len(values))), where)}.")
    names = class_names or sorted(set(strings), key=int if is_int.all() else None)
    names = _check_known(names, [[s] for s in strings])
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[s] for s in strings], np.int32), names


def _check_known(class_names, tags):
    unknown = sorted({t for row in tags for t in row} - set(class_names))
    if unknown:
        raise DataError(f"Labels {_first(unknown)} are not in class_names={list(class_names)}.")
    return list(class_names)


# === Splitting ===

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


def _examples_needed(validation_split, test_split):
    """The fewest examples of a class that put one in every non-empty split."""
    for n in range(1, 10_000):
        counts = _split_counts(n, validation_split, test_split)
        if all(c > 0 for c, f in zip(counts, (1, validation_split, test_split)) if f):
            return n
    return None


def _split_index(labels, task, validation_split, test_split, rng):
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


def _sample(labels, task, count, rng):
    """Returns `count` indices of `labels`, stratified for classes."""
    if task not in ("multiclass", "binary"):
        return rng.choice(len(labels), size=count, replace=False)
    classes = np.arange(int(labels.max()) + 1)
    take = _allocate(np.bincount(labels, minlength=len(classes)), count)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
                           for c, k in zip(classes, take)])


# === The shared core ===

def _build(*, name, modality, input_kind, inputs, digests, raw_labels, split_of, where,
           class_names=None, task=None, validation_split, test_split, seed,
           deduplicate, drop_empty, image_size=None, sample_rate=None, duration=None, report=None):
    """Cleans, splits and wraps examples from any loader into a TaskData.

    Args:
        inputs: np.ndarray. One raw input per example.
        digests: np.ndarray of bytes. One content hash per example.
        raw_labels: list or np.ndarray. Labels as the source gave them.
        split_of: np.ndarray of str or None. The source's split of each example
            ("train", "validation", "test"), or None to split it all here.
        where: callable. Example index -> name for messages.
        Other arguments: as in the public loaders.
    """
    report = report or CleaningReport()
    if len(inputs) == 0:
        raise DataError(f"No examples could be read from {name!r}.")
    labels, class_names, task = _encode_labels(
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
    examples = _Examples(np.asarray(inputs), labels, np.asarray(digests))
    pool_split = "all" if (split_of == "all").all() else "train"
    pool = np.flatnonzero(keep & (split_of == pool_split))
    _check_classes(labels[pool], class_names, task, name)
    rng = np.random.default_rng(seed)
    fractions = {"validation": validation_split, "test": test_split}
    carve = {s: f if pool_split == "all" or not (split_of == s).any() else 0.0
             for s, f in fractions.items()}
    parts = _split_index(labels[pool], task, carve["validation"], carve["test"], rng)
    index = {s: pool[parts[s]] for s in SPLITS}
    for split in ("validation", "test"):
        if not carve[split] and pool_split == "train":
            index[split] = np.flatnonzero(keep & (split_of == split))
    _warn_missing_classes(labels, index, class_names, task, carve)
    splits = {s: examples.take(index[s]) for s in SPLITS}
    return TaskData(splits, name=name, modality=modality, task=task, class_names=class_names,
                    input_kind=input_kind, image_size=image_size, sample_rate=sample_rate, duration=duration,
                    report=report)


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
    train copies of validation/test examples, leaving eval splits as they are."""
    unique = np.ones(len(digests), bool)
    seen = {}
    order = [i for s in ("validation", "test", "all", "train")
             for i in np.flatnonzero(keep & (split_of == s))]
    for i in order:
        first = seen.setdefault(digests[i], i)
        if first != i and split_of[i] in ("all", "train"):
            unique[i] = False
            report.duplicates += 1
            report.conflicting_duplicates += int(not np.array_equal(labels[i], labels[first]))
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
            f"labels such as {_first(repr(n) for n in class_names[:3])}."
        )
    empty = [n for n, c in zip(class_names, counts) if c == 0]
    if empty:
        raise DataError(
            f"Every class needs at least one training example; in {name!r} classes "
            f"{_first(repr(n) for n in empty)} have none (after cleaning). "
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
                needed = _examples_needed(carve["validation"], carve["test"])
                hint = f" A class needs at least {needed} examples to appear in every split."
            warnings.warn(
                f"The {split} split has no example of classes {_first(missing)}; "
                f"their {split} metrics will be undefined.{hint}",
                DataWarning, stacklevel=4)


# === Loaders ===

def from_arrays(x, y, class_names=None, task=None, validation_split=0.15, test_split=0.15,
                seed=0, deduplicate=True, test=None, name="arrays", sample_rate=None, duration=audio.DURATION):
    """Makes a TaskData from in-memory images, texts or waveforms and their labels.

    Images: a numeric array `(N, H, W)` or `(N, H, W, 1|3|4)`. uint8 is used as
    is; other integer types must lie in 0..255; float arrays whose maximum is
    <= 1 are taken as [0, 1] and scaled to 0..255, otherwise as [0, 255] and
    rounded. Grayscale is repeated to RGB in the pipeline; alpha is dropped.
    Texts: a list or 1-D array of str.
    Waveforms (with `sample_rate`): an array `(N, samples)` or
    `(N, samples, channels)`, or a list of arrays `(samples,)` or
    `(samples, channels)` of any lengths; floats in [-1, 1] or integer PCM
    (scaled by its type's range). Each is mixed to mono and cut or
    zero-padded to `duration` seconds.

    Args:
        x: np.ndarray, list of str or list of waveforms. The inputs.
        y: array-like. Integer class ids, class names (str), a 2-D multi-hot
            array (multilabel), lists of class names (multilabel) or floats
            (regression).
        class_names: list of str or None. Names in class-id order; defaults to
            the sorted string labels or "0", "1", ... for ids.
        task: str or None. None infers it; "regression" reads y as numbers;
            "multiclass"/"binary" are decided by the number of classes.
        validation_split: float. Fraction for validation, in [0, 1).
        test_split: float. Fraction for test, in [0, 1).
        seed: int. Seed of the stratified split.
        deduplicate: bool. Drop exact duplicate inputs (keeps the first; with
            `test`, drops training copies of test inputs).
        test: tuple or None. A fixed test set `(x_test, y_test)` like the ones
            `keras.datasets` return; `test_split` is then ignored.
        name: str. Name of the data set in summaries.
        sample_rate: int or None. Set for waveforms: their sample rate in Hz,
            which the data keeps.
        duration: float. Seconds per audio clip.

    Example:

    ```python
    (x, y), (x_test, y_test) = keras.datasets.mnist.load_data()
    data = kerasft.data.from_arrays(x, y, test=(x_test, y_test))
    data = kerasft.data.from_arrays(["good", "bad"] * 10, ["pos", "neg"] * 10)
    ```
    """
    _check_fractions(validation_split, 0.0 if test is not None else test_split)
    _check_task(task)
    _check_lengths(x, y, "x", "y")
    split_of = None
    if test is not None:
        x_test, y_test = test
        _check_lengths(x_test, y_test, "x_test", "y_test")
        split_of = np.repeat(["train", "test"], [len(y), len(y_test)])
        x = np.concatenate([x, x_test]) if isinstance(x, np.ndarray) else [*x, *x_test]
        y = np.concatenate([y, y_test]) if isinstance(y, np.ndarray) else [*y, *y_test]
    array = x if isinstance(x, np.ndarray) else None
    audio_settings = {}
    if sample_rate is not None:
        sample_rate, duration = _check_audio_settings(sample_rate, duration)
        modality, input_kind = "audio", "waveform"
        inputs = _waveforms(x, sample_rate, duration)
        digests = np.array([_digest(clip.tobytes()) for clip in inputs])
        audio_settings = {"sample_rate": sample_rate, "duration": duration}
    elif array is not None and array.dtype.kind in "iuf":
        modality, input_kind, inputs = "image", "pixels", _pixels(array)
        digests = np.array([_digest(image.tobytes()) for image in inputs])
    else:
        texts = list(x)
        bad = [f"x[{i}] ({type(t).__name__})" for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError("x must be a numeric image array (N, H, W[, C]) or a list of str. "
                            f"Received non-str items at {_first(bad)}.")
        modality, input_kind = "text", "text"
        inputs = np.array([str(t) for t in texts], dtype=object)
        digests = np.array([_digest(t.encode("utf-8", "surrogatepass")) for t in inputs])
    if not isinstance(y, np.ndarray) and all(
            isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in y):
        y = np.asarray(y)  # Python numbers are ids (int) or targets (float), like numpy's.
    return _build(name=name, modality=modality, input_kind=input_kind, inputs=inputs,
                  digests=digests, raw_labels=y if isinstance(y, np.ndarray) else list(y),
                  split_of=split_of, where=lambda i: f"y[{i}]", class_names=class_names,
                  task=task, validation_split=validation_split, test_split=test_split,
                  seed=seed, deduplicate=deduplicate, drop_empty=True, **audio_settings)


def _check_audio_settings(sample_rate, duration):
    try:
        return audio.check_settings(sample_rate, duration)
    except audio.AudioError as error:
        raise DataError(str(error)) from None


def _waveforms(x, sample_rate, duration):
    """Converts in-memory waveforms to clips `(N, clip_samples)` float32, or raises naming the bad ones."""
    if isinstance(x, np.ndarray) and x.ndim not in (2, 3):
        raise DataError("Waveforms must be an array (N, samples) or (N, samples, channels), or a list of arrays. "
                        f"Received an array of shape {x.shape}.")
    clips, bad = [], []
    for i, waveform in enumerate(x):
        try:
            waveform = audio.as_float(waveform)
            why = audio.problem(waveform, sample_rate)
        except audio.AudioError as error:
            why = str(error)
        if why:
            bad.append(f"x[{i}]: {why}")
            continue
        clips.append(audio.to_clip(waveform, sample_rate, sample_rate, duration))
    if bad:
        raise DataError(f"{len(bad)} waveforms cannot be clips: " + "; ".join(bad[:_SHOWN])
                        + (f"; ... and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""))
    return np.stack(clips) if clips else np.zeros((0, audio.clip_samples(sample_rate, duration)), np.float32)


def _check_lengths(x, y, x_name, y_name):
    if len(x) != len(y):
        raise DataError(f"{x_name} and {y_name} must have the same length. Received: "
                        f"len({x_name})={len(x)}, len({y_name})={len(y)}")


def _pixels(array):
    """Converts an image array to uint8 (N, H, W, 1 or 3), or raises."""
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise DataError(
            "Image arrays must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4. "
            f"Received shape {array.shape}." + (" Waveforms? Pass sample_rate=." if array.ndim in (2, 3) else "")
        )
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1))
            raise DataError(
                f"Image arrays must be finite. Received NaN or inf in {len(bad)} images: "
                f"{_first(f'x[{i}]' for i in bad)}."
            )
        if array.size and array.max() <= 1.0:
            array = array * 255.0
    low, high = (array.min(), array.max()) if array.size else (0, 0)
    if low < 0 or high > 255:
        raise DataError(
            "Image values must lie in [0, 1] (float) or [0, 255]. "
            f"Received values in [{low}, {high}] (dtype {array.dtype})."
        )
    return np.round(array).astype(np.uint8)


def from_directory(path, image_size=(224, 224), validation_split=0.15, test_split=0.15,
                   seed=0, strict=False, deduplicate=True, fallback_encoding=None, name=None,
                   sample_rate=audio.SAMPLE_RATE, duration=audio.DURATION):
    """Makes a TaskData from a folder with one subfolder of images, sound clips or texts per class.

    Class names are the sorted subfolder names. Images are JPEG, PNG, GIF (first
    frame) or BMP, found recursively; sound clips are WAV, FLAC or OGG (read
    with libsndfile, mixed to mono, resampled to `sample_rate` and cut or
    zero-padded to `duration` seconds, all up front; clips at another rate are
    counted in `summary()`); texts are `.txt` files. A folder of several kinds
    takes images first, then clips, then texts. When the folder
    holds `train/` (and optionally `validation/` or `val/`, and `test/`), each
    with class subfolders, those splits are kept and missing ones are carved
    from train. Hidden files and folders are ignored; symlinked files are
    followed. Every image is decoded once up front with TensorFlow's own
    decoder, so the pipeline never fails mid-epoch: empty, corrupt, truncated
    files and non-images with an image extension are skipped with a warning
    (or raise with `strict=True`), and listed in `summary()`. Images stay on
    disk and are decoded in `tf.data`. Likewise clips that are empty, silent,
    shorter than one STFT window (25 ms), corrupt or not audio at all are
    skipped and listed; clips are held in memory as float32.

    Args:
        path: str or Path. The root folder.
        image_size: tuple of int or None. (height, width) to resize images to
            (squashed, not cropped); None keeps each image's size.
        validation_split: float. Fraction for validation, in [0, 1).
        test_split: float. Fraction for test, in [0, 1).
        seed: int. Seed of the stratified split.
        strict: bool. Raise on any unreadable file instead of skipping it.
        deduplicate: bool. Drop exact duplicate files (by content).
        fallback_encoding: str or None. Encoding tried on text files that are
            not UTF-8 (e.g. "cp1252"); None skips them (or raises if strict).
        name: str or None. Name in summaries; defaults to the folder name.
        sample_rate: int. Sound clips: the sample rate (Hz) they are
            resampled to.
        duration: float. Sound clips: seconds per clip.

    Example:

    ```python
    data = kerasft.data.from_directory("flowers/", image_size=(224, 224))
    data = kerasft.data.from_directory("commands/", sample_rate=16000, duration=1.0)
    ```
    """
    _check_fractions(validation_split, test_split)
    image_size = _check_image_size(image_size)
    root = Path(path)
    presplit, class_names, files = _scan_folder(root)
    for modality, extensions, what in (("image", IMAGE_EXTENSIONS, "image files"),
                                       ("audio", audio.AUDIO_EXTENSIONS, "WAV/FLAC/OGG files"),
                                       ("text", TEXT_EXTENSIONS, ".txt files")):
        chosen = [f for f in files if f.suffix.lower() in extensions]
        if chosen:
            break
    chosen_set = set(chosen)
    report = CleaningReport(ignored=[str(f) for f in files if f not in chosen_set])
    _check_every_class(class_names, {files[f][1] for f in chosen}, root, what)
    if modality == "image":
        read = _read_images(chosen)
    elif modality == "audio":
        sample_rate, duration = _check_audio_settings(sample_rate, duration)
        read = _read_clips(chosen, sample_rate, duration, report)
    else:
        read = _read_texts(chosen, fallback_encoding, report)
    report.skipped = [(str(f), why) for f, (_, why) in zip(chosen, read) if why]
    if report.skipped:
        listing = "\n".join(f"  {f}: {why}" for f, why in report.skipped)
        if strict:
            raise DataError(f"{len(report.skipped)} files in {str(root)!r} cannot be read "
                            f"(strict=True):\n{listing}")
        warnings.warn(f"Skipped {len(report.skipped)} unreadable files in {str(root)!r}:\n"
                      f"{listing}", DataWarning, stacklevel=2)
    kept = [(f, content) for f, (content, why) in zip(chosen, read) if not why]
    paths = [f for f, _ in kept]
    _check_every_class(class_names, {files[f][1] for f in paths}, root, "readable files")
    if modality == "image":
        inputs = np.array([str(f) for f in paths], dtype=object)
        digests = np.array([digest for _, digest in kept])
    elif modality == "audio":
        inputs = np.stack([clip for _, clip in kept])
        digests = np.array([_digest(clip.tobytes()) for clip in inputs])
    else:
        inputs = np.array([text for _, text in kept], dtype=object)
        digests = np.array([_digest(text.encode("utf-8")) for text in inputs])
    return _build(
        name=name or root.resolve().name, modality=modality,
        input_kind={"image": "files", "audio": "waveform", "text": "text"}[modality],
        inputs=inputs, digests=digests, raw_labels=np.array([files[f][1] for f in paths]),
        split_of=[files[f][0] for f in paths] if presplit else None,
        where=lambda i: str(paths[i]), class_names=class_names,
        validation_split=validation_split, test_split=test_split, seed=seed,
        deduplicate=deduplicate, drop_empty=True,
        image_size=image_size if modality == "image" else None,
        **({"sample_rate": sample_rate, "duration": duration} if modality == "audio" else {}), report=report)


def _scan_folder(root):
    """Returns (is presplit, class names, {file: (split, class id)}) of a class folder tree."""
    if not root.is_dir():
        raise DataError(f"Expected a folder with one subfolder per class. Received: {str(root)!r} "
                        "is not a folder.")
    presplit = _split_folders(root)
    class_roots = presplit or {"all": root}
    class_names = [d.name for d in _subfolders(class_roots.get("train", root))]
    if not class_names:
        raise DataError(f"{str(root)!r} has no class subfolders. Expected one subfolder per class "
                        "(e.g. photos/cat/, photos/dog/).")
    unknown = sorted({d.name for folder in class_roots.values() for d in _subfolders(folder)}
                     - set(class_names))
    if unknown:
        raise DataError(f"Class folders {unknown} appear in validation/test but not in "
                        f"{str(class_roots['train'])!r}. Expected every class to have training "
                        "examples.")
    files = {file: (split, label)
             for split, folder in class_roots.items()
             for label, class_name in enumerate(class_names)
             for file in _files(folder / class_name)}
    return bool(presplit), class_names, files


def _check_every_class(class_names, present, root, what):
    empty = [name for label, name in enumerate(class_names) if label not in present]
    if empty:
        raise DataError(f"Class folders {empty} in {str(root)!r} have no {what}. Expected at "
                        "least one per class folder.")


def _subfolders(folder):
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _split_folders(root):
    """Returns {split: folder} when root is laid out as train/[validation|val/][test/]."""
    names = {d.name for d in _subfolders(root)}
    allowed = {"train", "test", *_VALIDATION_FOLDERS}
    if "train" not in names or not names <= allowed or not _subfolders(root / "train"):
        return None
    splits = {"train": root / "train"}
    for folder in _VALIDATION_FOLDERS:
        if folder in names:
            splits["validation"] = root / folder
    if "test" in names:
        splits["test"] = root / "test"
    return splits


def _files(folder):
    """Lists the non-hidden files under a folder, recursively, sorted."""
    if not folder.is_dir():
        return []
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(parent, n) for n in names if not n.startswith(".")]
    return sorted(found)


def _read_images(paths):
    """Returns [(digest, None) or (None, reason)] per image path.

    Reads each file to hash it, checks the format signature, then decodes every
    candidate once with TensorFlow (the decoder the pipeline uses, in parallel)
    and marks what fails.
    """
    def read(path):
        try:
            content = path.read_bytes()
        except OSError as error:
            return None, f"cannot be read ({error.strerror or error})"
        if not content:
            return None, "empty file (0 bytes)"
        if not content.startswith(_IMAGE_SIGNATURES):
            return None, "not an image (no JPEG/PNG/GIF/BMP signature)"
        return _digest(content), None

    with futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read, paths))
    candidates = [str(p) for p, (digest, _) in zip(paths, results) if digest]
    decodable = set()
    if candidates:
        ds = tf.data.Dataset.from_tensor_slices(candidates).map(
            lambda p: (p, tf.shape(_decode_image(tf.io.read_file(p), None))[0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).ignore_errors()
        decodable = {p.decode() for p, _ in ds.as_numpy_iterator()}
    return [(digest, None) if str(p) in decodable
            else (None, why or "corrupt or truncated image (TensorFlow cannot decode it)")
            for p, (digest, why) in zip(paths, results)]


def _read_clips(paths, sample_rate, duration, report):
    """Returns [(clip float32, None) or (None, reason)] per sound file; notes resampled rates in `report`."""
    def read(path):
        try:
            waveform, rate = audio.decode(path.read_bytes())
        except OSError as error:
            return None, None, f"cannot be read ({error.strerror or error})"
        except audio.AudioError as error:
            return None, None, str(error)
        return waveform, rate, audio.problem(waveform, rate)

    with futures.ThreadPoolExecutor(4) as pool:
        decoded = list(pool.map(read, paths))
    rates = {}
    results = []
    for waveform, rate, why in decoded:
        if why:
            results.append((None, why))
            continue
        if rate != sample_rate:
            rates[rate] = rates.get(rate, 0) + 1
        results.append((audio.to_clip(waveform, rate, sample_rate, duration), None))
    if rates:
        report.notes.append(f"resampled to {sample_rate} Hz: " + ", ".join(
            f"{count} clips from {rate} Hz" for rate, count in sorted(rates.items())))
    return results


def _read_texts(paths, fallback_encoding, report):
    """Returns [(text, None) or (None, reason)] per text path."""
    results = []
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError as error:
            results.append((None, f"cannot be read ({error.strerror or error})"))
            continue
        text, why = _decode_text(content, fallback_encoding)
        if text is not None and why:
            report.fallback_decoded.append(str(path))
            why = None
        results.append((text, why))
    return results


def _decode_text(content, fallback_encoding):
    """Returns (text, problem): problem is None for UTF-8, a note when the
    fallback decoded it (text is set), or the reason it failed (text None)."""
    try:
        return content.decode("utf-8"), None
    except UnicodeDecodeError as error:
        problem = f"not UTF-8 (byte {content[error.start]:#04x} at offset {error.start})"
    if fallback_encoding:
        try:
            return content.decode(fallback_encoding), f"decoded as {fallback_encoding}"
        except UnicodeDecodeError:
            problem += f" nor {fallback_encoding}"
    return None, problem


def from_csv(path, text_column="text", label_column="label", validation_split=0.15,
             test_split=0.15, seed=0, deduplicate=True, drop_empty=True, label_separator=None,
             task=None, encoding="utf-8", name=None):
    """Makes a text TaskData from a `.csv`, `.tsv` or `.jsonl` file.

    The format follows the extension (stdlib `csv` / `json`); quoted CSV fields
    may hold newlines. Rows are named as in a spreadsheet (the header is row 1);
    JSONL lines by line number. Labels are class names, or integers (classes
    sorted numerically); mixing both is an error. Surrounding spaces of labels
    are ignored.

    Args:
        path: str or Path. The file.
        text_column: str. Column (or JSON key) holding the text.
        label_column: str. Column (or JSON key) holding the label.
        validation_split: float. Fraction for validation, in [0, 1).
        test_split: float. Fraction for test, in [0, 1).
        seed: int. Seed of the split (stratified for classes).
        deduplicate: bool. Drop exact duplicate texts (keeps the first).
        drop_empty: bool. Drop empty or whitespace-only texts.
        label_separator: str or None. Splits each label into several class
            names, making a multilabel task (e.g. "|" for "sport|politics").
            JSON lists as labels are multilabel too.
        task: str or None. "regression" reads labels as numbers; None infers.
        encoding: str. The file's text encoding (a UTF-8 BOM is skipped).
        name: str or None. Name in summaries; defaults to the file stem.

    Example:

    ```python
    data = kerasft.data.from_csv("reviews.csv", text_column="review", label_column="stars")
    ```
    """
    _check_fractions(validation_split, test_split)
    _check_task(task)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"Expected a .csv, .tsv or .jsonl file. Received: {str(path)!r}")
    content = path.read_bytes()
    if not content.strip():
        raise DataError(f"{str(path)!r} is empty. Expected a header and rows of examples.")
    text = content.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8")
                          else encoding, errors="surrogateescape")
    reader = _read_jsonl if suffix == ".jsonl" else _read_delimited
    columns, records = reader(text, "\t" if suffix == ".tsv" else ",", path)
    for column in (text_column, label_column):
        if column not in columns:
            close = difflib.get_close_matches(column, columns, n=1, cutoff=0.6)
            raise DataError(
                f"Column {column!r} is not in {str(path)!r}."
                + (f" Did you mean {close[0]!r}?" if close else "")
                + f" Received columns: {columns}"
            )
    if not records:
        raise DataError(f"{str(path)!r} has a header but no examples.")
    where_names = [where for where, _ in records]
    rows = [row for _, row in records]
    undecodable = [where for where, row in records
                   if any(_has_bad_bytes(row.get(c)) for c in (text_column, label_column))]
    if undecodable:
        raise DataError(
            f"{str(path)!r} is not valid {encoding}: {_first(undecodable)} "
            f"{'holds' if len(undecodable) == 1 else 'hold'} other bytes. "
            "Pass encoding= (e.g. 'cp1252' or 'latin-1') or re-save the file as UTF-8."
        )
    texts = np.array([str(row.get(text_column) or "") for row in rows], dtype=object)
    labels = [row.get(label_column) for row in rows]
    if label_separator is not None:
        labels = [None if v is None else str(v).split(label_separator) for v in labels]
    elif task != "regression":
        labels = [v if v is None or isinstance(v, (list, float, bool)) else str(v) for v in labels]
    return _build(
        name=name or path.stem, modality="text", input_kind="text", inputs=texts,
        digests=np.array([_digest(t.encode("utf-8")) for t in texts]), raw_labels=labels,
        split_of=None, where=lambda i: where_names[i], task=task,
        validation_split=validation_split, test_split=test_split, seed=seed,
        deduplicate=deduplicate, drop_empty=drop_empty)


def _has_bad_bytes(value):
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


def _read_delimited(text, delimiter, path):
    """Returns (columns, [(row name, {column: value})]) of a CSV/TSV text."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
        rows = list(reader)
    except csv.Error as error:
        raise DataError(f"{str(path)!r} is not valid {path.suffix[1:].upper()} "
                        f"(line {reader.line_num}): {error}") from None
    columns = [c.strip() for c in header]
    records = [(f"row {i + 2}", dict(zip(columns, row)))
               for i, row in enumerate(rows) if any(cell.strip() for cell in row)]
    return columns, records


def _read_jsonl(text, _, path):
    """Returns (keys, [(line name, object)]) of a JSON Lines text."""
    columns, records = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{str(path)!r} line {number} is not valid JSON: {error}. "
                            "Expected one JSON object per line.") from None
        if not isinstance(record, dict):
            raise DataError(f"{str(path)!r} line {number} is a {type(record).__name__}. "
                            "Expected one JSON object per line.")
        columns += [k for k in record if k not in columns]
        records.append((f"line {number}", record))
    return columns, records


def from_tfds(name, data_dir=None, split=None, download=False, image_size=None,
              validation_split=0.15, test_split=0.15, seed=0, deduplicate=True,
              input_key=None, label_key=None):
    """Makes a TaskData from a TensorFlow Datasets data set, offline by default.

    Uses `tfds.builder(name, data_dir=data_dir)`. A data set that is not
    prepared there raises unless `download=True`. The data set's own train /
    validation / test splits are used where it has them; missing ones are
    carved (stratified) from train. Fixed-shape images (MNIST) are held in
    memory; variable-size images (tf_flowers) are held encoded and decoded in
    `tf.data`.

    Args:
        name: str. The TFDS name, e.g. "tf_flowers" or "imdb_reviews".
        data_dir: str or None. Where TFDS keeps data (None: its default).
        split: None, str or dict. None uses the data set's splits; a TFDS split
            string (e.g. "train[:10%]") is split here; a dict maps "train",
            "validation", "test" to TFDS split strings.
        download: bool. Download and prepare the data set if missing.
        image_size: tuple of int or None. (height, width) to resize images to.
        validation_split: float. Fraction carved for validation when needed.
        test_split: float. Fraction carved for test when needed.
        seed: int. Seed of the split.
        deduplicate: bool. Drop exact duplicates (train copies of eval examples).
        input_key: str or None. Feature holding the input; default from the
            data set's supervised keys.
        label_key: str or None. Feature holding the label; likewise.

    Example:

    ```python
    data = kerasft.data.from_tfds("tf_flowers", data_dir="~/tensorflow_datasets",
                                  image_size=(224, 224))
    ```
    """
    import tensorflow_datasets as tfds  # Imported on use: 0.5 s that most users never need.

    _check_fractions(validation_split, test_split)
    image_size = _check_image_size(image_size)
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise DataError(
                f"TFDS data set {name!r} is not prepared in {str(builder.data_dir)!r}. "
                "Pass data_dir= where it is, or download=True to fetch it (needs internet)."
            )
        builder.download_and_prepare()
    info = builder.info
    input_key, label_key = _tfds_keys(info, input_key, label_key)
    input_feature, label_feature = info.features[input_key], info.features[label_key]
    if isinstance(input_feature, tfds.features.Image):
        modality = "image"
        input_kind = "pixels" if None not in input_feature.shape else "encoded"
    elif isinstance(input_feature, tfds.features.Text):
        modality, input_kind = "text", "text"
    else:
        raise DataError(f"Feature {input_key!r} of {name!r} is a {type(input_feature).__name__}. "
                        "Expected an Image or Text feature.")
    if isinstance(label_feature, tfds.features.ClassLabel):
        class_names, task = list(label_feature.names), None
    elif label_feature.shape == () and tf.as_dtype(label_feature.dtype).is_floating:
        class_names, task = None, "regression"
    else:
        raise DataError(f"Label feature {label_key!r} of {name!r} is {label_feature}. "
                        "Expected a ClassLabel or a float scalar.")
    roles = _tfds_roles(split, list(info.splits), name)
    decoders = {input_key: tfds.decode.SkipDecoding()} if input_kind == "encoded" else None
    report = CleaningReport()
    inputs, labels, split_of, origins = [], [], [], []
    for role, tfds_split in roles.items():
        ds = builder.as_dataset(split=tfds_split, decoders=decoders)
        ds = ds.map(lambda ex: (ex[input_key], ex[label_key])).batch(1024)
        count = 0
        for x, y in ds.as_numpy_iterator():
            inputs += list(x)
            labels.append(y)
            count += len(y)
        split_of += [role] * count
        origins += [f"{tfds_split}[{i}]" for i in range(count)]
    if input_kind == "text":
        decoded = [_decode_text(raw, None) for raw in inputs]
        report.skipped = [(origins[i], why) for i, (_, why) in enumerate(decoded) if why]
        keep = [i for i, (text, _) in enumerate(decoded) if text is not None]
        inputs = np.array([decoded[i][0] for i in keep], dtype=object)
        digests = np.array([_digest(t.encode("utf-8")) for t in inputs])
    else:
        keep = range(len(inputs))
        inputs = np.stack(inputs) if input_kind == "pixels" else np.array(inputs, dtype=object)
        digests = np.array([_digest(x if input_kind == "encoded" else x.tobytes())
                            for x in inputs])
    labels = np.concatenate(labels)[list(keep)] if labels else np.array([], int)
    split_of = np.array(split_of)[list(keep)]
    return _build(
        name=name, modality=modality, input_kind=input_kind, inputs=inputs, digests=digests,
        raw_labels=labels.astype(np.float32 if task == "regression" else np.int64),
        split_of=None if list(roles) == ["all"] else split_of,
        where=lambda i: origins[keep[i]], class_names=class_names, task=task,
        validation_split=validation_split, test_split=test_split, seed=seed,
        deduplicate=deduplicate, drop_empty=True, image_size=image_size, report=report)


def _tfds_keys(info, input_key, label_key):
    if input_key and label_key:
        keys = (input_key, label_key)
    elif info.supervised_keys and len(info.supervised_keys) == 2:
        keys = (input_key or info.supervised_keys[0], label_key or info.supervised_keys[1])
    else:
        raise DataError(f"{info.name!r} has no supervised keys. Pass input_key= and label_key= "
                        f"from its features: {list(info.features)}")
    missing = [k for k in keys if k not in info.features]
    if missing:
        raise DataError(f"Features {missing} are not in {info.name!r}. "
                        f"Received features: {list(info.features)}")
    return keys


def _tfds_roles(split, available, name):
    """Maps our split roles to TFDS split strings."""
    if isinstance(split, str):
        return {"all": split}
    if isinstance(split, dict):
        unknown = set(split) - set(SPLITS)
        if unknown or "train" not in split:
            raise DataError(f"split= as a dict maps 'train' (required), 'validation', 'test' "
                            f"to TFDS splits. Received keys: {sorted(split)}")
        return dict(split)
    if split is not None:
        raise DataError(f"split must be None, a str or a dict. Received: {split!r}")
    if "train" not in available:
        raise DataError(f"{name!r} has no 'train' split. Pass split= (e.g. a dict of "
                        f"'train'/'validation'/'test'). Received splits: {available}")
    roles = {"train": "train"}
    for candidate in ("validation", "val", "dev"):
        if candidate in available:
            roles["validation"] = candidate
            break
    if "test" in available:
        roles["test"] = "test"
    return roles
