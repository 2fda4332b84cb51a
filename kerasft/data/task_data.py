"""`TaskData`: a labelled data set's examples per split, their tf.data pipelines, summary and fingerprint."""

import dataclasses
import hashlib
import json

import numpy as np
import tensorflow as tf

from kerasft.data.errors import DataError, first_items
from kerasft.data.splits import SPLITS, sample_index
from kerasft.data.targets import present, stratification_labels


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
        unlabelled: int. Multi-task data: examples dropped because they carry no target's label.
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
    unlabelled: int = 0
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
        if self.unlabelled:
            lines.insert(1, f"examples without any target's label dropped: {self.unlabelled}")
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
    """One split's examples: raw inputs, encoded labels (a dict of them per target, for multi-task data) and
    content digests."""

    inputs: np.ndarray
    labels: object
    digests: np.ndarray

    def __len__(self):
        return len(self.digests)

    def take(self, index):
        labels = ({name: labels[index] for name, labels in self.labels.items()} if isinstance(self.labels, dict)
                  else self.labels[index])
        return Examples(self.inputs[index], labels, self.digests[index])


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

    Multi-task data (several named targets, `kerasft.data.targets`) yields
    `y` as a dict `{target: label}`, a missing label marked as there; `task`,
    `class_names` and `labels(split)` describe the first target.

    Attributes:
        train, validation, test: tf.data.Dataset. Unbatched `(x, y)` pairs.
        class_names: list of str. Class names in index order (`[]` for regression).
        modality: str. "image", "text" or "audio".
        task: str. "multiclass", "binary", "multilabel" or "regression".
        targets: dict or None. Multi-task data: target name -> `Target(task, class_names)`, in order;
            None for data with one (unnamed) target.
        stratify: str or None. Multi-task data: the target its splits are stratified on.
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
    tickets = kerasft.data.from_csv("tickets.csv", label_column=["topic", "urgency"])
    tickets.targets["urgency"].class_names, tickets.labels("train", target="urgency")
    ```
    """

    def __init__(self, splits, *, name, modality, task, class_names, input_kind,
                 image_size=None, sample_rate=None, duration=None, report=None, source=None, targets=None,
                 stratify=None):
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
            targets: dict or None. Multi-task data: target name -> Target; the splits' labels are then
                dicts of the same keys.
            stratify: str or None. Multi-task data: the target the splits were stratified on.
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
        self.targets = dict(targets) if targets else None
        self.stratify = stratify if targets else None
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

    def labels(self, split, target=None):
        """Returns the labels of a split as numpy, without iterating tf.data.

        Args:
            split: str. "train", "validation" or "test".
            target: str or None. Multi-task data: the target (default: the first); missing labels are
                marked as `kerasft.data.targets` says.
        """
        labels = self._examples(split).labels
        if target is None and not isinstance(labels, dict):
            return labels
        if self.targets is None or (target is not None and target not in self.targets):
            has = f"the targets {list(self.targets)}" if self.targets else "one unnamed target"
            raise DataError(f"{self.name!r} has {has}. Received: target={target!r}")
        return labels[target or next(iter(self.targets))]

    def _stratified(self, split):
        """`(labels, task)` that splits and samples are stratified on."""
        if self.targets is None:
            return self.labels(split), self.task
        target = self.targets[self.stratify]
        return stratification_labels(self.labels(split, self.stratify), target), target.task

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
        `kerasft.data.tfrecord`; multi-task data: a label feature per target);
        the folder appears whole, by renaming.

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

    def shard_positions(self, split, count, index):
        """The positions (in `labels(split)` order) of the examples of `split` that worker `index` of `count` reads.

        Data read from TFRecord files is shared by FILE, as `tf.distribute`
        shares it (`AutoShardPolicy.FILE`): of the files holding the split, in
        order, worker i takes files i, i + count, ...; so each worker opens only
        its own files. Other data is shared by example: positions i, i + count, ...

        Args:
            split: str. "train", "validation" or "test".
            count: int. Workers.
            index: int. This worker, in [0, count).
        """
        if not (isinstance(count, int) and isinstance(index, int) and 0 <= index < count):
            raise DataError(f"shard needs a worker count >= 1 and an index in [0, count). Received: count={count!r}, "
                            f"index={index!r}")
        examples = self._examples(split)
        if self.input_kind != "records":
            return np.arange(index, len(examples), count)
        files = self.source.file_of(examples.inputs)
        rank = np.searchsorted(np.unique(files), files)  # each record's file, counted among the split's files
        return np.flatnonzero(rank % count == index)

    def shard(self, count, index):
        """Returns the share of every split that worker `index` of `count` reads (`shard_positions`).

        Under a `MultiWorkerMirroredStrategy`, `fine_tune` trains each worker
        on its own shard (its feature cache holds only its examples).

        Args:
            count: int. Workers.
            index: int. This worker, in [0, count).

        Example:

        ```python
        mine = data.shard(2, 0)   # worker 0 of 2: the even files (TFRecord data) or the even examples
        ```
        """
        splits = {split: self._splits[split].take(self.shard_positions(split, count, index)) for split in SPLITS}
        return self._with_splits(splits, f"shard {index} of {count} of {self.name}")

    def _with_splits(self, splits, note):
        """This data with other examples per split (their subsets), the same classes, settings and source."""
        report = dataclasses.replace(self.report, notes=self.report.notes + [note])
        return TaskData(splits, name=self.name, modality=self.modality, task=self.task,
                        class_names=self.class_names, input_kind=self.input_kind,
                        image_size=self.image_size, sample_rate=self.sample_rate, duration=self.duration,
                        report=report, source=self.source, targets=self.targets, stratify=self.stratify)

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
            index = sample_index(*self._stratified(split), count, rng)
            splits[split] = examples.take(np.sort(index))
        return self._with_splits(splits, f"subset (seed {seed}) of {self.name}: " + ", ".join(
            f"{s}={len(splits[s])}/{len(self._splits[s])}" for s in SPLITS))

    def with_text_windows(self, copies=2, words=100, seed=0):
        """Returns the data with `copies` random windows of each long training text added to its train split.

        A transformer reads the first `sequence_length` tokens of a text; a long
        document says more than that. Each training text longer than `words`
        words gains `copies` windows of `words` consecutive words (starting at a
        random word, seeded) with the text's label(s): new views of the same
        document. Shorter texts stay as they are (a window would repeat them);
        validation and test are untouched. Distilling on such data, the teacher
        labels every window (`kft.distill` uses its probabilities on the training
        split). On BBC News they lifted MiniLM-L3 from 0.9717 to 0.9780 distilled
        and from 0.9528 to 0.9780 on the labels alone (bench/BENCHMARKS.md,
        "Distillation ... window views"). ~100 words fill 128 WordPiece tokens of English.

        Args:
            copies: int. Windows per long text (>= 1).
            words: int. Words per window (>= 1).
            seed: int. Seed of the windows' starts.

        Returns:
            A TaskData; its train split holds the originals, then the windows.

        Raises:
            DataError: data that is not in-memory text, or `copies`/`words` not positive integers.

        Example:

        ```python
        student = kft.distill(teacher, "minilm_l3", data.with_text_windows(copies=2), trainable="all")
        ```
        """
        if self.modality != "text" or self.input_kind != "text":
            raise DataError(f"with_text_windows() cuts windows of in-memory texts; {self.name!r} holds "
                            f"{self.modality} ({self.input_kind}).")
        for name, value in (("copies", copies), ("words", words)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise DataError(f"with_text_windows() takes {name} as an integer >= 1. Received: {name}={value!r}")
        train = self._splits["train"]
        split_texts = [str(text).split() for text in train.inputs]
        long = np.flatnonzero([len(text) > words for text in split_texts])
        rng = np.random.default_rng(seed)
        sources = np.tile(long, copies)  # every long text once, then again
        windows = []
        for index in sources:
            start = rng.integers(0, len(split_texts[index]) - words + 1)
            windows.append(" ".join(split_texts[index][start:start + words]))
        added = train.take(sources)
        inputs = np.empty(len(train) + len(windows), dtype=object)
        inputs[:len(train)], inputs[len(train):] = list(train.inputs), windows
        digests = np.concatenate([train.digests, np.array(
            [content_digest(t.encode("utf-8", "surrogatepass")) for t in windows], dtype=train.digests.dtype)])
        labels = ({name: np.concatenate([train.labels[name], added.labels[name]]) for name in train.labels}
                  if isinstance(train.labels, dict) else np.concatenate([train.labels, added.labels]))
        return self._with_splits(dict(self._splits, train=Examples(inputs, labels, digests)),
                                 f"{len(windows)} windows of {words} words added to train ({copies} of each of "
                                 f"{len(long)} longer texts, seed {seed})")

    def for_target(self, target):
        """Returns the data of one target of multi-task data: the same splits, labelled by it alone.

        Examples missing the target's label are left out; the result is
        single-target data (`targets` None), to train a single-task model on.

        Args:
            target: str. One of `targets`.

        Example:

        ```python
        words = kerasft.samples.spoken_words(targets=("word", "speaker_sex")).for_target("word")
        ```
        """
        self.labels("train", target)  # refuses data without that target
        spec = self.targets[target]
        splits = {}
        for split in SPLITS:
            examples, labels = self._splits[split], self.labels(split, target)
            carried = present(labels, spec.task)
            splits[split] = Examples(examples.inputs[carried], labels[carried], examples.digests[carried])
        report = dataclasses.replace(self.report, notes=self.report.notes + [
            f"target {target!r} of {self.name} (the examples carrying it)"])
        return TaskData(splits, name=f"{self.name}_{target}", modality=self.modality, task=spec.task,
                        class_names=list(spec.class_names), input_kind=self.input_kind, image_size=self.image_size,
                        sample_rate=self.sample_rate, duration=self.duration, report=report, source=self.source)

    def fingerprint(self):
        """Returns a stable hex hash of the content, labels and splits.

        Two TaskData with the same examples (by content), labels, splits, task,
        class names and image size have the same fingerprint, across runs.
        """
        sha = hashlib.sha256()
        sha.update(json.dumps([self.modality, self.task, self.class_names,
                               list(self.image_size or ())]
                              + ([self.sample_rate, self.duration] if self.sample_rate else [])
                              + ([[name, t.task, list(t.class_names)] for name, t in self.targets.items()]
                                 if self.targets else [])).encode())
        for split in SPLITS:
            examples = self._splits[split]
            sha.update(split.encode())
            sha.update(examples.digests.tobytes())
            for labels in (examples.labels.values() if self.targets else [examples.labels]):
                sha.update(np.ascontiguousarray(labels).tobytes())
        return sha.hexdigest()[:20]

    def summary(self):
        """Returns a table of examples per class and split (per target for multi-task data), plus the cleaning
        report."""
        sizes = {split: self.size(split) for split in SPLITS}
        described = (f"{len(self.targets)} targets" if self.targets
                     else "regression target" if self.task == "regression" else f"{len(self.class_names)} classes")
        head = (f"TaskData {self.name!r}: {self.modality}, " + ("multi-task" if self.targets else self.task)
                + f", {described}"
                + (f", images resized to {self.image_size}" if self.image_size else "")
                + (f", mono clips of {self.duration:g} s at {self.sample_rate} Hz (cut or zero-padded)"
                   if self.sample_rate else ""))
        lines = [head]
        if self.targets is None:
            lines += self._table(None, sizes, "  ")
        for name, target in (self.targets or {}).items():
            lines.append(f"  target {name!r}: {target.task}, "
                         + ("a value" if target.task == "regression" else f"{len(target.class_names)} classes")
                         + (" (the splits are stratified on it)" if name == self.stratify else ""))
            lines += self._table(name, sizes, "    ")
        return "\n".join(lines + ["cleaning:"] + ["  " + l for l in self.report.lines()])

    def _table(self, target, sizes, indent):
        """The lines of one target's table: examples per class (or value statistics) per split."""
        task = self.targets[target].task if target else self.task
        class_names = self.targets[target].class_names if target else self.class_names
        labels = {split: self.labels(split, target) for split in SPLITS}
        carried = {split: labels[split][present(labels[split], task)] for split in SPLITS}
        if task == "regression":
            rows = [[stat] + [f"{fn(carried[s]):.4g}" if len(carried[s]) else "-" for s in SPLITS]
                    for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max))]
        else:
            rows = [[name] + [str(int(n)) for n in counts]
                    for name, counts in zip(class_names, self.class_counts(target).T)]
        if target:
            rows.append(["missing"] + [str(sizes[s] - len(carried[s])) for s in SPLITS])
        rows.append(["total"] + [str(sizes[s]) for s in SPLITS])
        table = [["class" if task != "regression" else "label", *SPLITS]] + rows
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = [indent + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                    for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in table]
        if task == "multilabel":
            lines.append(f"{indent}(multilabel: counts are examples carrying each class)")
        return lines

    def class_counts(self, target=None):
        """Returns an array (3, classes): examples per class in train, validation and test (multilabel: positives).

        Args:
            target: str or None. Multi-task data: the target (default: the first); missing labels are not counted.
        """
        task = self.targets[target].task if target else self.task
        num_classes = len(self.targets[target].class_names if target else self.class_names)
        counts = []
        for split in SPLITS:
            labels = self.labels(split, target)
            labels = labels[present(labels, task)]
            if task == "multilabel":
                counts.append(labels.sum(axis=0).astype(int) if len(labels) else np.zeros(num_classes, int))
            else:
                counts.append(np.bincount(labels, minlength=num_classes))
        return np.array(counts)

    def __repr__(self):
        sizes = ", ".join(f"{s}={self.size(s)}" for s in SPLITS)
        described = (f"targets={ {name: t.task for name, t in self.targets.items()} }" if self.targets
                     else f"task={self.task!r}, num_classes={self.num_classes}")
        return f"TaskData(name={self.name!r}, modality={self.modality!r}, {described}, {sizes})"

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
