"""Sharded TFRecord files: `from_tfrecord` reads them into a TaskData that streams them; `write` makes them.

Schema: every record is a `tf.train.Example` with

```
input   bytes      the raw example: an encoded image (JPEG, PNG, GIF or BMP), a UTF-8 text, or a
                   sound file (WAV, FLAC or OGG, any rate and channel count)
label   int64      [class id]                   (multiclass / binary)
        bytes      [class name] or [names ...]  (a name; several names: multilabel)
        float      [value] or [0/1 per class]   (regression; a multi-hot row: multilabel)
split   bytes      optional: "train", "validation" or "test", kept as given (on every record or none)
```
Multi-task data (several targets, `kerasft.data.targets`) is written with
one `label/<target>` feature per target instead of `label`, encoded as that
target's `label` would be: a missing class id is -1, a missing value or
multi-hot row NaN. Its manifest (format 2) names the targets, their tasks and
classes and the target the splits were stratified on.

`TaskData.to_tfrecord(folder, shards=...)` (`write`) writes a folder of them:
```
<folder>/
  train-00000-of-00004.tfrecord ...   each split in its own files, so a worker can take whole files
  validation-00000-of-00002.tfrecord ...
  kerasft_tfrecord.json   name, modality, task, class names, image size / audio settings; each file's split,
                          records and bytes; the index's bytes and SHA-256
  kerasft_index.npz       per record, in file order: its label (multi-task: labels_<i> for target i), content
                          digest and split
```
Images are written as their files' bytes (PNG for in-memory pixels), sound
as 32-bit float WAV (exact), texts as UTF-8. Reading such a folder takes
the labels and splits from the index without opening a shard; other shards
are scanned once (labels, splits and content digests are kept, inputs are
not).

A TaskData read from TFRecords holds labels in memory, never inputs: each
split's `tf.data` pipeline reads the files that hold its records, in file
order, and decodes in parallel. Its pipelines shard by FILE under a
`tf.distribute` strategy (`tf.data.experimental.AutoShardPolicy.FILE`), so
each worker of a `MultiWorkerMirroredStrategy` reads only its share of the
files: give each split at least as many files as there are workers, with
about as many records each.
"""

import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasft import audio, paths
from kerasft.data.assemble import assemble
from kerasft.data.errors import DataError
from kerasft.data.readers import IMAGE_SIGNATURES, check_image_size, decode_text
from kerasft.data.splits import SPLITS, check_fractions
from kerasft.data.task_data import CleaningReport, content_digest, decode_image

MANIFEST = "kerasft_tfrecord.json"
INDEX = "kerasft_index.npz"
_FORMAT = 1
_MULTI_TASK_FORMAT = 2  # a manifest with "targets": readers of format 1 refuse it by its number
_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")


def from_tfrecord(pattern, modality=None, class_names=None, task=None, image_size="auto", validation_split=0.15,
                  test_split=0.15, seed=0, deduplicate=True, sample_rate=audio.SAMPLE_RATE, duration=audio.DURATION,
                  name=None):
    """Makes a TaskData from sharded TFRecord files (see the module docstring for the schema).

    The inputs stay in the files: only labels, splits and content digests are
    held in memory, and each split's pipeline reads its files as it goes.
    Folders written by `TaskData.to_tfrecord` keep their splits, class names
    and settings (multi-task data: its targets and the target its splits
    were stratified on); for other shards the records' `split` feature is kept when
    present, else the splits are carved here (stratified, seeded), and the
    modality is read from the first input when not given.

    Args:
        pattern: str, Path or list. A folder of `.tfrecord` files, a glob
            (`"shards/*.tfrecord"`) or a list of files.
        modality: str or None. "image", "text" or "audio"; None reads it from
            the folder's manifest, else from the first record's input.
        class_names: list of str or None. Class names in id order (class ids
            in records need them to have names; default "0", "1", ...).
        task: str or None. As in `from_arrays`; None infers it.
        image_size: tuple of int, None or "auto". (height, width) images are
            resized to; "auto" takes the manifest's, else (224, 224).
        validation_split: float. Fraction carved for validation when the records carry no split.
        test_split: float. Likewise for test.
        seed: int. Seed of that split.
        deduplicate: bool. Drop exact duplicate inputs (by content digest).
        sample_rate: int. Sound: the rate (Hz) clips are resampled to (a manifest's wins).
        duration: float. Sound: seconds per clip (a manifest's wins).
        name: str or None. Name in summaries; default the manifest's, else the folder's.

    Example:

    ```python
    data.to_tfrecord("shards/flowers", shards=8)
    data = kerasft.data.from_tfrecord("shards/flowers")
    data = kerasft.data.from_tfrecord("gs-copy/*.tfrecord", class_names=["cat", "dog"])
    ```
    """
    check_fractions(validation_split, test_split)
    files = _resolve(pattern)
    manifest = _manifest(files)
    if manifest is not None:
        for arg, value in (("modality", modality), ("class_names", class_names), ("task", task)):
            stored = manifest[arg]
            if value is not None and (list(value) if arg == "class_names" else value) != stored:
                raise DataError(f"{arg}={value!r} disagrees with the shards' manifest, which says {stored!r}. "
                                f"Leave {arg} out to take the manifest's.")
        modality, class_names, task = manifest["modality"], manifest["class_names"], manifest["task"]
        if manifest["sample_rate"]:
            sample_rate, duration = manifest["sample_rate"], manifest["duration"]
        if image_size == "auto":
            image_size = manifest["image_size"]
    image_size = (224, 224) if image_size == "auto" else check_image_size(image_size)
    modality = modality or _sniff(files)
    if modality not in ("image", "text", "audio"):
        raise DataError(f"modality must be 'image', 'text' or 'audio'. Received: modality={modality!r}")
    if modality == "audio":
        sample_rate, duration = audio.check_settings(sample_rate, duration)
    report = CleaningReport()
    targets = (manifest or {}).get("targets")
    index = _stored_index(files, manifest) if manifest is not None else None
    if index is not None:
        files = [str(Path(files[0]).parent / name) for name in manifest["files"]]  # the index's order
        counts = [_recorded_count(file, manifest) for file in files]
        labels, digests, split_of = index
        keep = np.arange(len(digests))
        validation_split = test_split = 0.0  # the written splits are whole: nothing to carve
    else:
        counts, labels, digests, split_of, keep = _scan(files, modality, task == "multilabel", report, targets)
    if targets:  # each target's encoded labels, a missing one as encode_targets reads it (None or NaN)
        labels = {name: _with_missing(labels[name], spec["task"]) for name, spec in targets.items()}
        class_names = {name: spec["class_names"] for name, spec in targets.items()}
        task = {name: spec["task"] for name, spec in targets.items()}
    source = RecordSource(files, counts, modality, sample_rate, duration)
    return assemble(
        name=name or (manifest or {}).get("name") or Path(files[0]).parent.name, modality=modality,
        input_kind="records", inputs=keep, digests=digests, raw_labels=labels, split_of=split_of,
        where=lambda i: source.where(keep[i]), class_names=class_names, task=task, validation_split=validation_split,
        test_split=test_split, seed=seed, deduplicate=deduplicate, drop_empty=False,
        image_size=image_size if modality == "image" else None, report=report, source=source,
        stratify=(manifest or {}).get("stratify"),
        **({"sample_rate": sample_rate, "duration": duration} if modality == "audio" else {}))


def _with_missing(labels, task):
    """One target's encoded labels as raw labels: class ids with None where missing (-1); values, multi-hot rows
    as they are (NaN where missing)."""
    if task in ("multiclass", "binary"):
        return [None if value < 0 else int(value) for value in np.asarray(labels).tolist()]
    return np.asarray(labels, np.float32)


def _resolve(pattern):
    """The TFRecord files a pattern names, sorted (a folder: its TFRecord files)."""
    if isinstance(pattern, (list, tuple)):
        files = [os.fspath(p) for p in pattern]
    elif os.path.isdir(pattern):
        files = sorted(str(p) for p in Path(pattern).iterdir() if p.name.endswith(_SUFFIXES))
    else:
        files = sorted(tf.io.gfile.glob(os.fspath(pattern)))
    if not files:
        raise DataError(f"No TFRecord files match {os.fspath(pattern) if not isinstance(pattern, list) else pattern}. "
                        f"Expected a folder of {'/'.join(_SUFFIXES)} files, a glob or a list of files.")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(f"These TFRecord files do not exist: {missing[:5]}")
    return files


def _manifest(files):
    """The manifest of the folder the files are in, or None (shards kerasft did not write)."""
    folder = Path(files[0]).parent
    path = folder / MANIFEST
    if not path.is_file() or any(Path(f).parent != folder for f in files):
        return None
    try:
        manifest = paths.read_json(path)
    except paths.CorruptFileError as error:
        raise DataError(f"{error} Write the shards again (TaskData.to_tfrecord).") from None
    if manifest.get("format") not in (_FORMAT, _MULTI_TASK_FORMAT):
        raise DataError(f"{path} is of format {manifest.get('format')!r}; this kerasft reads formats {_FORMAT} "
                        f"and {_MULTI_TASK_FORMAT}.")
    return manifest


def _recorded_count(file, manifest):
    """Records in a file the manifest lists, after checking the file still has the size it was written with."""
    recorded = manifest["files"][os.path.basename(file)]
    size = os.path.getsize(file)
    if size != recorded["bytes"]:
        raise DataError(f"{file} is truncated or altered: {size} bytes, {recorded['bytes']} were written. "
                        "Write the shards again (TaskData.to_tfrecord).")
    return recorded["records"]


def _stored_index(files, manifest):
    """`(labels, digests, split of each record)` from the index to_tfrecord wrote, when it covers these files."""
    if sorted(os.path.basename(f) for f in files) != sorted(manifest["files"]):
        return None  # a subset of the folder's files: scan them
    folder = Path(files[0]).parent
    try:
        paths.check_checksums(folder, {INDEX: manifest["index"]})
    except paths.CorruptFileError as error:
        raise DataError(f"{error} Write the shards again (TaskData.to_tfrecord).") from None
    targets = manifest.get("targets")
    with np.load(folder / INDEX, allow_pickle=False) as index:
        labels = ({name: index[f"labels_{i}"] for i, name in enumerate(targets)} if targets
                  else index["labels"])
        digests, splits = index["digests"], index["splits"]
    return labels, digests, np.asarray(SPLITS)[splits]


def _sniff(files):
    """The modality of the first record's input: image or sound file signatures, else text."""
    for record in tf.data.TFRecordDataset(files[:1]).take(1):
        content = _feature(tf.train.Example.FromString(record.numpy()), "input", files[0], 0)[0]
        if content.startswith(IMAGE_SIGNATURES):
            return "image"
        return "audio" if content[:4] in (b"RIFF", b"fLaC", b"OggS") else "text"
    raise DataError(f"{files[0]} holds no records.")


def _feature(example, key, file, number):
    """The values of one feature of a parsed record, or raises naming the file and record."""
    feature = example.features.feature.get(key)
    kind = feature.WhichOneof("kind") if feature is not None else None
    if kind is None:
        if key == "split":
            return None
        raise DataError(f"{file} record {number} has no {key!r} feature. Expected tf.train.Examples with 'input' "
                        "(bytes), 'label' and optionally 'split' (see kerasft.data.tfrecord).")
    return list(getattr(feature, kind).value)


def _scan(files, modality, multilabel, report, targets=None):
    """Reads every record once, keeping no input: `(records per file, raw labels, digests, split of each kept
    record or None, kept record numbers)`. With `targets` (a multi-task manifest's), the labels are
    `{target: encoded labels}` read from the `label/<target>` features."""
    counts, labels, digests, splits, keep = [], [], [], [], []
    multi = {name: [] for name in targets or {}}
    number = 0
    for file in files:
        count = 0
        try:
            for count, record in enumerate(tf.data.TFRecordDataset(file).as_numpy_iterator(), start=1):
                example = tf.train.Example.FromString(record)
                content = _feature(example, "input", file, count - 1)[0]
                if modality == "text":
                    text, why = decode_text(content, None)
                    if text is None or not text.strip():
                        if text is None:
                            report.skipped.append((f"{file} record {count - 1}", why))
                        report.empty += text is not None
                        number += 1
                        continue
                split = _feature(example, "split", file, count - 1)
                for name, values in multi.items():
                    values.append(_feature(example, f"label/{name}", file, count - 1))
                if not targets:
                    labels.append(_raw_label(_feature(example, "label", file, count - 1), multilabel))
                digests.append(content_digest(content))
                splits.append(split[0].decode() if split else None)
                keep.append(number)
                number += 1
        except tf.errors.DataLossError as error:
            raise DataError(f"{file} is not a whole TFRecord file (record {count}: {error.message}).") from None
        counts.append(count)
    present = {s for s in splits if s is not None}
    if present and None in splits:
        raise DataError("Some records carry a 'split' feature and others do not. Expected it on every record or "
                        f"on none. Received: {sum(s is None for s in splits)} of {len(splits)} without one.")
    if present - set(SPLITS):
        raise DataError(f"'split' features must be one of {SPLITS}. Received: {sorted(present - set(SPLITS))}")
    if targets:
        labels = {name: _encoded(values, targets[name]["task"]) for name, values in multi.items()}
    elif labels and all(isinstance(v, np.ndarray) for v in labels):
        labels = np.stack(labels)
    elif labels and all(isinstance(v, (int, float)) for v in labels):
        labels = np.asarray(labels)  # ids (int) or targets (float), as numpy labels are read
    return counts, labels, np.array(digests), np.array(splits) if present else None, np.asarray(keep, np.int64)


def _encoded(values, task):
    """One target's `label/<target>` values of every record as its encoded labels (as `TaskData.labels` holds
    them)."""
    if task in ("multiclass", "binary"):
        return np.array([value[0] for value in values], np.int64)
    rows = np.asarray(values, np.float32)
    return rows[:, 0] if task == "regression" else rows


def _raw_label(values, multilabel):
    """A record's label as `encode_labels` reads it: an id, a name, a list of names, a number or a multi-hot row."""
    if values and isinstance(values[0], bytes):
        names = [v.decode("utf-8") for v in values]
        return names[0] if len(names) == 1 and not multilabel else names
    if len(values) == 1:
        return int(values[0]) if isinstance(values[0], int) else float(values[0])
    return np.asarray(values, np.float32)


# === Reading ===


class RecordSource:
    """Where a TaskData's examples live: TFRecord files, their records numbered across the files in order.

    Args:
        files: list of str. The files, in order.
        counts: list of int. Records per file.
        modality: str. "image", "text" or "audio".
        sample_rate: int. Sound: the clips' rate.
        duration: float. Sound: the clips' seconds.
    """

    def __init__(self, files, counts, modality, sample_rate=None, duration=None):
        self.files, self.counts, self.modality = list(files), list(counts), modality
        self.sample_rate, self.duration = sample_rate, duration
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def where(self, number):
        """Names a record for messages: its file and position."""
        file = int(np.searchsorted(self.offsets, number, side="right")) - 1
        return f"{self.files[file]} record {number - self.offsets[file]}"

    def file_of(self, numbers):
        """The index (in `files`) of the file holding each record of `numbers`."""
        return np.searchsorted(self.offsets, np.asarray(numbers, np.int64), side="right") - 1

    def _records(self, numbers):
        """`(file indices, dataset of (record number, serialized record))` of the files holding `numbers`."""
        holding = np.unique(self.file_of(numbers)) if len(numbers) else []
        offsets = tf.constant(self.offsets)
        files = tf.data.Dataset.from_tensor_slices((tf.constant(holding, tf.int64),
                                                    tf.constant([self.files[i] for i in holding], tf.string)))
        # One file after another (flat_map): records come in file order, the order of labels(split).
        return files.flat_map(lambda i, file: tf.data.TFRecordDataset(file).enumerate(start=offsets[i]))

    def dataset(self, numbers, labels, image_size):
        """The unbatched `(x, y)` pipeline of the records `numbers` (ascending) with their encoded `labels`
        (multi-task data: `{target: labels}`, and `y` a dict of them).

        Under a distribution strategy it is sharded by file (`AutoShardPolicy.FILE`).
        """
        member = np.zeros(self.offsets[-1], bool)
        member[numbers] = True

        def table(values):  # the labels by record number (a multi-task data's: one table per target)
            full = np.zeros((self.offsets[-1], *values.shape[1:]), values.dtype)
            full[numbers] = values
            return tf.constant(full)

        member, tables = tf.constant(member), tf.nest.map_structure(table, labels)
        decode = self._decoder(image_size)

        def example(number, record):
            content = tf.io.parse_single_example(record, {"input": tf.io.FixedLenFeature([], tf.string)})["input"]
            return decode(content), tf.nest.map_structure(lambda values: tf.gather(values, number), tables)

        ds = self._records(numbers).filter(lambda number, _: tf.gather(member, number))
        ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
        return ds.with_options(options)

    def _decoder(self, image_size):
        if self.modality == "image":
            return lambda content: decode_image(content, image_size)
        if self.modality == "text":
            return lambda content: content
        samples = audio.clip_samples(self.sample_rate, self.duration)

        def clip(content):
            waveform, rate = audio.decode(content)
            return audio.to_clip(waveform, rate, self.sample_rate, self.duration)

        def decode(content):
            waveform = tf.numpy_function(clip, [content], tf.float32, stateful=False)
            waveform.set_shape([samples])
            return waveform

        return decode

    def raw(self, numbers):
        """Yields the `input` bytes of the records `numbers` (ascending), in that order."""
        wanted = set(np.asarray(numbers).tolist())
        for number, record in self._records(numbers).as_numpy_iterator():
            if number in wanted:
                yield _feature(tf.train.Example.FromString(record), "input", "", number)[0]

    def inputs(self, numbers):
        """The raw inputs of the records `numbers` as `TaskData.inputs` gives them: texts, encoded images, clips."""
        values = list(self.raw(numbers))
        if self.modality == "text":
            return np.array([v.decode("utf-8") for v in values], dtype=object)
        if self.modality == "image":
            return np.array(values, dtype=object)
        samples = audio.clip_samples(self.sample_rate, self.duration)
        clips = [audio.to_clip(*audio.decode(v), self.sample_rate, self.duration) for v in values]
        return np.stack(clips) if clips else np.zeros((0, samples), np.float32)


# === Writing ===


def write(data, folder, shards=1):
    """Writes a TaskData as TFRecord shards, a manifest and an index (see the module docstring).

    The folder appears whole: it is written under a hidden name beside it and
    renamed into place; a full disk raises `kerasft.paths.DiskFullError` and
    leaves nothing.

    Args:
        data: TaskData.
        folder: str or Path. A new (or empty) folder.
        shards: int. Files per split (at most one per example); for a
            cluster, at least the number of workers.

    Returns:
        Path. The folder.
    """
    folder = Path(folder)
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise DataError(f"shards must be a positive integer (files per split). Received: shards={shards!r}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder} already exists and is not an empty folder; to_tfrecord writes a new folder.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.partial-{secrets.token_hex(4)}")
    staging.mkdir()
    files, labels, digests, splits = {}, [], [], []
    targets = data.targets or {}
    try:
        with paths.disk_space(folder.parent, None, "the TFRecord shards"):
            for split_code, split in enumerate(SPLITS):
                count = data.size(split)
                parts = min(shards, count)
                bounds = [count * i // parts for i in range(parts + 1)]
                contents = _contents(data, split)
                split_labels = {t: data.labels(split, t) for t in targets} if targets else data.labels(split)
                for part in range(parts):
                    name = f"{split}-{part:05d}-of-{parts:05d}.tfrecord"
                    with tf.io.TFRecordWriter(str(staging / name)) as writer:
                        for row in range(bounds[part], bounds[part + 1]):
                            content = next(contents)
                            label = tf.nest.map_structure(lambda values: values[row], split_labels)
                            writer.write(_example(content, label, split).SerializeToString())
                            digests.append(content_digest(content))
                    labels.append(tf.nest.map_structure(lambda values: values[bounds[part]:bounds[part + 1]],
                                                        split_labels))
                    splits += [split_code] * (bounds[part + 1] - bounds[part])
                    files[name] = {"split": split, "records": bounds[part + 1] - bounds[part],
                                   "bytes": (staging / name).stat().st_size}
            stored = ({f"labels_{i}": np.concatenate([part[t] for part in labels]) for i, t in enumerate(targets)}
                      if targets else {"labels": np.concatenate(labels)})
            with open(staging / INDEX, "wb") as index:
                np.savez(index, digests=np.array(digests), splits=np.array(splits, np.uint8), **stored)
            manifest = {"format": _MULTI_TASK_FORMAT if targets else _FORMAT, "name": data.name,
                        "modality": data.modality, "task": data.task, "class_names": data.class_names,
                        "image_size": list(data.image_size or []) or None, "sample_rate": data.sample_rate,
                        "duration": data.duration, "files": files, "index": paths.checksums(staging, [INDEX])[INDEX]}
            if targets:
                manifest["targets"] = {t: {"task": spec.task, "class_names": list(spec.class_names)}
                                       for t, spec in targets.items()}
                manifest["stratify"] = data.stratify
            paths.write_atomic(staging / MANIFEST, json.dumps(manifest, indent=1))
        if folder.exists():
            folder.rmdir()  # empty, checked above
        os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _contents(data, split):
    """Yields the bytes each example of a split is stored as (see the module docstring)."""
    import io

    import soundfile

    if data.input_kind == "records":
        yield from data.source.raw(data._examples(split).inputs)  # the record numbers
        return
    for value in data.inputs(split):
        if data.input_kind == "text":
            yield value.encode("utf-8")
        elif data.input_kind == "files":
            yield Path(value).read_bytes()
        elif data.input_kind == "encoded":
            yield bytes(value)
        elif data.input_kind == "pixels":
            yield tf.io.encode_png(value).numpy()
        else:  # waveform: float WAV keeps the samples exactly
            buffer = io.BytesIO()
            soundfile.write(buffer, value, data.sample_rate, format="WAV", subtype="FLOAT")
            yield buffer.getvalue()


def _example(content, label, split):
    """A record: `label` one encoded label, or `{target: encoded label}` (one `label/<target>` feature each)."""
    def feature(value):
        value = np.asarray(value)
        if value.dtype.kind in "iu":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=value.reshape(-1).tolist()))
        return tf.train.Feature(float_list=tf.train.FloatList(value=value.reshape(-1).tolist()))

    labels = ({f"label/{target}": feature(value) for target, value in label.items()} if isinstance(label, dict)
              else {"label": feature(label)})
    return tf.train.Example(features=tf.train.Features(feature={
        "input": tf.train.Feature(bytes_list=tf.train.BytesList(value=[content])),
        **labels,
        "split": tf.train.Feature(bytes_list=tf.train.BytesList(value=[split.encode()])),
    }))
