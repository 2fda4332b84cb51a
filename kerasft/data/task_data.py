"""`TaskData`: a labelled data set's examples per split, their tf.data pipelines, summary and fingerprint."""

import dataclasses
import hashlib
import json

import numpy as np
import tensorflow as tf

from kerasft.data.errors import DataError, first_items
from kerasft.data.splits import SPLITS, sample_index


def content_digest(content):
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
                f"({first_items(self.fallback_decoded)})"
            )
        if self.ignored:
            lines.append(
                f"files of another kind ignored: {len(self.ignored)} ({first_items(self.ignored)})"
            )
        return lines + list(self.notes)


@dataclasses.dataclass(frozen=True)
class Examples:
    """One split's examples: raw inputs, encoded labels and content digests."""

    inputs: np.ndarray
    labels: np.ndarray
    digests: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, index):
        return Examples(self.inputs[index], self.labels[index], self.digests[index])


class TaskData:
    """A labelled data set split into train, validation and test.

    Built by the `from_*` loaders and `kerasft.samples`; each split keeps its
    raw examples (see `inputs()`) and offers an UNBATCHED `tf.data.Dataset` of
    `(x, y)` pairs (see the module docstring for dtypes). Folder images are
    kept as file paths and decoded inside `tf.data`
    (`tf.io.decode_image(..., channels=3, expand_animations=False)`, resized to
    `image_size` when set, in parallel); array images are kept in memory.
    Data read from TFRecord files (`from_tfrecord`) keeps only record numbers,
    labels and digests in memory; its pipelines read the files as they go.

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
                 image_size=None, sample_rate=None, duration=None, report=None, source=None):
        """Wraps split examples; use the `from_*` loaders rather than this.

        Args:
            splits: dict of str to Examples. One entry per name in SPLITS.
            name: str. The data set's name.
            modality: str. "image", "text" or "audio".
            task: str. One of TASKS.
            class_names: list of str. Class names in index order.
            input_kind: str. How inputs are stored: "text", "pixels" (uint8
                arrays), "files" (image paths), "encoded" (image bytes),
                "waveform" (float32 clips) or "records" (record numbers in `source`).
            image_size: tuple of int or None. (height, width) to resize images to.
            sample_rate: int or None. Audio clips' sample rate (Hz).
            duration: float or None. Audio clips' length (seconds).
            report: CleaningReport or None. What cleaning did.
            source: kerasft.data.tfrecord.RecordSource or None. The files of "records".
        """
        if input_kind == "records":  # the order the files are read in, so labels(split) follows the pipelines
            splits = {split: examples.take(np.argsort(examples.inputs, kind="stable"))
                      for split, examples in splits.items()}
        self._splits = splits
        self.source = source
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
        `(N, clip_samples)`, depending on `input_kind`. Data read from
        TFRecord files reads the split's inputs from them (texts, encoded
        images or clips): meant for small splits and subsets.

        Args:
            split: str. "train", "validation" or "test".
        """
        if self.input_kind == "records":
            return self.source.inputs(self._examples(split).inputs)
        return self._examples(split).inputs

    def size(self, split):
        """Returns the number of examples in a split.

        Args:
            split: str. "train", "validation" or "test".
        """
        return len(self._examples(split))

    def _dataset(self, split):
        if split not in self._datasets:
            examples = self._examples(split)
            self._datasets[split] = (self.source.dataset(examples.inputs, examples.labels, self.image_size)
                                     if self.input_kind == "records"
                                     else _to_dataset(examples, self.input_kind, self.image_size))
        return self._datasets[split]

    def to_tfrecord(self, folder, shards=1):
        """Writes the data as sharded TFRecord files that `kerasft.data.from_tfrecord` reads back.

        Each split goes to its own files (`<split>-00000-of-0000N.tfrecord`),
        beside a manifest and an index of labels (schema:
        `kerasft.data.tfrecord`); the folder appears whole, by renaming.

        Args:
            folder: str or Path. A new (or empty) folder.
            shards: int. Files per split (at most one per example); under a
                multi-worker strategy, at least the number of workers.

        Returns:
            Path. The folder.

        Example:

        ```python
        data.to_tfrecord("shards/photos", shards=8)
        same = kerasft.data.from_tfrecord("shards/photos")  # same splits, labels and fingerprint
        ```
        """
        from kerasft.data import tfrecord

        return tfrecord.write(self, folder, shards)

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
            index = sample_index(examples.labels, self.task, count, rng)
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
                        report=report, source=self.source)

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

def decode_image(contents, image_size):
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
        ds = ds.map(lambda path, y: (decode_image(tf.io.read_file(path), image_size), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    elif input_kind == "encoded":
        ds = ds.map(lambda data, y: (decode_image(data, image_size), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    elif input_kind == "pixels" and (image_size or examples.inputs.shape[-1] == 1):
        gray = examples.inputs.shape[-1] == 1
        ds = ds.map(lambda x, y: (_resize(tf.image.grayscale_to_rgb(x) if gray else x,
                                          image_size), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds


# === Checks at the door ===
