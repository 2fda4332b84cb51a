"""Loaders of examples the user holds: in-memory arrays, class folders (images, sound clips, texts), CSV/TSV/JSONL."""

import csv
import difflib
import json
import os
import warnings
from concurrent import futures
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasft import audio
from kerasft.data.assemble import assemble
from kerasft.data.errors import SHOWN, DataError, DataWarning, first_items
from kerasft.data.labels import check_task
from kerasft.data.splits import check_fractions
from kerasft.data.task_data import CleaningReport, content_digest, decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
TEXT_EXTENSIONS = (".txt",)
# The first bytes of each image format TensorFlow decodes; anything else
# carrying an image extension is not an image.
IMAGE_SIGNATURES = (b"\xff\xd8", b"\x89PNG", b"GIF87a", b"GIF89a", b"BM")
_VALIDATION_FOLDERS = ("validation", "val")
# Files read (and images decoded) at once while a folder is checked, and paths handed to the readers at a time.
_READERS = 8
_CHUNK = 1024


def check_image_size(image_size):
    if image_size is None:
        return None
    if (len(tuple(image_size)) != 2
            or not all(isinstance(v, (int, np.integer)) and v > 0 for v in image_size)):
        raise DataError(
            "image_size must be (height, width) of positive ints or None. "
            f"Received: image_size={image_size!r}"
        )
    return tuple(int(v) for v in image_size)


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
    check_fractions(validation_split, 0.0 if test is not None else test_split)
    check_task(task)
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
        digests = np.array([content_digest(clip.tobytes()) for clip in inputs])
        audio_settings = {"sample_rate": sample_rate, "duration": duration}
    elif array is not None and array.dtype.kind in "iuf":
        modality, input_kind, inputs = "image", "pixels", _pixels(array)
        digests = np.array([content_digest(image.tobytes()) for image in inputs])
    else:
        texts = list(x)
        bad = [f"x[{i}] ({type(t).__name__})" for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError("x must be a numeric image array (N, H, W[, C]) or a list of str. "
                            f"Received non-str items at {first_items(bad)}.")
        modality, input_kind = "text", "text"
        inputs = np.array([str(t) for t in texts], dtype=object)
        digests = np.array([content_digest(t.encode("utf-8", "surrogatepass")) for t in inputs])
    if not isinstance(y, np.ndarray) and all(
            isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in y):
        y = np.asarray(y)  # Python numbers are ids (int) or targets (float), like numpy's.
    return assemble(name=name, modality=modality, input_kind=input_kind, inputs=inputs,
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
        raise DataError(f"{len(bad)} waveforms cannot be clips: " + "; ".join(bad[:SHOWN])
                        + (f"; ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""))
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
                f"{first_items(f'x[{i}]' for i in bad)}."
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
    check_fractions(validation_split, test_split)
    image_size = check_image_size(image_size)
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
        digests = np.array([content_digest(clip.tobytes()) for clip in inputs])
    else:
        inputs = np.array([text for _, text in kept], dtype=object)
        digests = np.array([content_digest(text.encode("utf-8")) for text in inputs])
    return assemble(
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
    and marks what fails. Both passes stream: a few files are in memory at a
    time (threads read chunks of paths; `tf.data` decodes with bounded
    parallelism), whatever the number of files.
    """
    def read(path):
        try:
            content = path.read_bytes()
        except OSError as error:
            return None, f"cannot be read ({error.strerror or error})"
        if not content:
            return None, "empty file (0 bytes)"
        if not content.startswith(IMAGE_SIGNATURES):
            return None, "not an image (no JPEG/PNG/GIF/BMP signature)"
        return content_digest(content), None

    results = []
    with futures.ThreadPoolExecutor(_READERS) as pool:
        for start in range(0, len(paths), _CHUNK):  # not one future per file of a 100,000-file folder at once
            results += pool.map(read, paths[start:start + _CHUNK])
    candidates = [str(p) for p, (digest, _) in zip(paths, results) if digest]
    decodable = set()
    if candidates:
        ds = tf.data.Dataset.from_tensor_slices(candidates).map(
            lambda p: (p, tf.shape(decode_image(tf.io.read_file(p), None))[0]),
            num_parallel_calls=_READERS, deterministic=False,  # a few decoded images at a time, however large
        ).ignore_errors()
        decodable = {p.decode() for p, _ in ds.as_numpy_iterator()}
    return [(digest, None) if str(p) in decodable
            else (None, why or "corrupt or truncated image (TensorFlow cannot decode it)")
            for p, (digest, why) in zip(paths, results)]


def _read_clips(paths, sample_rate, duration, report):
    """Returns [(clip float32, None) or (None, reason)] per sound file; notes resampled rates in `report`."""
    def read(path):
        waveform, rate, why = _decode_clip(path)
        return waveform, rate, why or audio.problem(waveform, rate)

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


def _decode_clip(path):
    """Returns (waveform, rate, None) of a sound file, or (None, None, why it cannot be read)."""
    try:
        waveform, rate = audio.decode(Path(path).read_bytes())
    except OSError as error:
        return None, None, f"cannot be read ({error.strerror or error})"
    except audio.AudioError as error:
        return None, None, str(error)
    return waveform, rate, None


def unreadable(paths, modality):
    """Returns, per file, why it cannot be decoded as an image or a sound file, or None when it can.

    The checks `from_directory` makes (images: the format signature, then
    TensorFlow's own decoder; sound: libsndfile), without its checks of a
    clip's content (silence, length), which do not stop a prediction.

    Args:
        paths: list of str or Path. The files.
        modality: str. `"image"` or `"audio"`.
    """
    paths = [Path(p) for p in paths]
    if modality == "image":
        return [why for _, why in _read_images(paths)]
    with futures.ThreadPoolExecutor(4) as pool:
        return [why for _, _, why in pool.map(_decode_clip, paths)]


def _read_texts(paths, fallback_encoding, report):
    """Returns [(text, None) or (None, reason)] per text path."""
    results = []
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError as error:
            results.append((None, f"cannot be read ({error.strerror or error})"))
            continue
        text, why = decode_text(content, fallback_encoding)
        if text is not None and why:
            report.fallback_decoded.append(str(path))
            why = None
        results.append((text, why))
    return results


def decode_text(content, fallback_encoding):
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
    check_fractions(validation_split, test_split)
    check_task(task)
    path = Path(path)
    numbers, kind, values = _read_columns(path, (text_column, label_column), encoding, share=(label_column,))
    texts = np.array([str(text or "") for text in values[text_column]], dtype=object)
    labels = values[label_column]
    if label_separator is not None:
        labels = [None if v is None else str(v).split(label_separator) for v in labels]
    elif task != "regression":
        labels = [v if v is None or isinstance(v, (list, float, bool)) else str(v) for v in labels]
    return assemble(
        name=name or path.stem, modality="text", input_kind="text", inputs=texts,
        digests=np.fromiter((content_digest(t.encode("utf-8")) for t in texts), "S16", len(texts)), raw_labels=labels,
        split_of=None, where=lambda i: f"{kind} {numbers[i]}", task=task,
        validation_split=validation_split, test_split=test_split, seed=seed,
        deduplicate=deduplicate, drop_empty=drop_empty)


def read_column(path, column, encoding="utf-8"):
    """Returns the values of one column of a `.csv`, `.tsv` or `.jsonl` file, as str, row by row.

    Args:
        path: str or Path. The file.
        column: str. Column (or JSON key) to read; a row without it gives "".
        encoding: str. The file's text encoding.
    """
    _, _, values = _read_columns(Path(path), (column,), encoding)
    return [str(value or "") for value in values[column]]


def _read_columns(path, columns, encoding, share=()):
    """`(row numbers, "row" or "line", {column: values})` of a `.csv`/`.tsv`/`.jsonl` file holding `columns`.

    Read as a stream, keeping only `columns`: a file of millions of rows never
    sits in memory whole. Equal values of a column in `share` are one object
    (a million rows of ten classes hold ten strings).
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"Expected a .csv, .tsv or .jsonl file. Received: {str(path)!r}")
    stream_encoding = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    values, numbers, undecodable, shared = {column: [] for column in columns}, [], [], {}
    with open(path, encoding=stream_encoding, errors="surrogateescape", newline="") as file:
        reader = _jsonl_records if suffix == ".jsonl" else _delimited_records
        found, records = reader(file, "\t" if suffix == ".tsv" else ",", path)
        if found is not None:
            _check_columns(found, columns, path)
        for number, row in records:
            if any(_has_bad_bytes(row.get(column)) for column in columns):
                undecodable.append(number)
            for column in columns:
                value = row.get(column)
                values[column].append(shared.setdefault(value, value) if column in share and isinstance(value, str)
                                      else value)
            numbers.append(number)
    if found is None:  # JSONL: the keys are known once every line is read
        _check_columns(records.columns, columns, path)
    kind = "line" if suffix == ".jsonl" else "row"
    if not numbers:
        raise DataError(f"{str(path)!r} has a header but no examples.")
    if undecodable:
        raise DataError(
            f"{str(path)!r} is not valid {encoding}: {first_items(f'{kind} {n}' for n in undecodable)} "
            f"{'holds' if len(undecodable) == 1 else 'hold'} other bytes. "
            "Pass encoding= (e.g. 'cp1252' or 'latin-1') or re-save the file as UTF-8."
        )
    return np.asarray(numbers, np.int64), kind, values


def _check_columns(columns, wanted, path):
    for column in wanted:
        if column not in columns:
            close = difflib.get_close_matches(column, columns, n=1, cutoff=0.6)
            raise DataError(
                f"Column {column!r} is not in {str(path)!r}."
                + (f" Did you mean {close[0]!r}?" if close else "")
                + f" Received columns: {columns}"
            )


def _has_bad_bytes(value):
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


def _delimited_records(file, delimiter, path):
    """`(columns, records)` of a CSV/TSV stream: records yield `(spreadsheet row number, {column: value})`."""
    reader = csv.reader(file, delimiter=delimiter)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise DataError(f"{str(path)!r} is not valid {path.suffix[1:].upper()} (line {reader.line_num}): "
                        f"{error}") from None
    if header is None or not any(cell.strip() for cell in header):
        raise DataError(f"{str(path)!r} is empty. Expected a header and rows of examples.")
    columns = [c.strip() for c in header]

    def records():
        try:
            for i, row in enumerate(reader):
                if any(cell.strip() for cell in row):
                    yield i + 2, dict(zip(columns, row))
        except csv.Error as error:
            raise DataError(f"{str(path)!r} is not valid {path.suffix[1:].upper()} "
                            f"(line {reader.line_num}): {error}") from None

    return columns, records()


def _jsonl_records(file, _, path):
    """`(None, records)` of a JSON Lines stream: the keys are known only as lines are read (`records.columns`)."""
    return None, _JsonlRecords(file, path)


class _JsonlRecords:
    """Records of a JSON Lines stream, `(line number, object)`; `columns` lists the keys seen so far."""

    def __init__(self, file, path):
        self.file, self.path, self.columns, self._seen = file, path, [], set()

    def __iter__(self):
        blank = True
        for number, line in enumerate(self.file, start=1):
            if not line.strip():
                continue
            blank = False
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{str(self.path)!r} line {number} is not valid JSON: {error}. "
                                "Expected one JSON object per line.") from None
            if not isinstance(record, dict):
                raise DataError(f"{str(self.path)!r} line {number} is a {type(record).__name__}. "
                                "Expected one JSON object per line.")
            for key in record:
                if key not in self._seen:
                    self._seen.add(key)
                    self.columns.append(key)
            yield number, record
        if blank:
            raise DataError(f"{str(self.path)!r} is empty. Expected a header and rows of examples.")
