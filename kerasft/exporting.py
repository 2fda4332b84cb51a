"""Writes a classifier as `.keras` + versioned SavedModels for TF Serving, with labels and a model card.

```
<path>/
  model.keras        keras.models.load_model, no kerasft import (keras_hub where a KerasHub layer is inside)
  1/ 2/ ...          SavedModel versions in TF Serving's model_base_path layout; each holds its own
                     assets.extra/labels.txt, assets.extra/model_card.json and assets.extra/checksums.json
                     (the size and SHA-256 of every other file of the version)
  labels.txt         one class name per line, index order (a multi-task model: its first target's)
  labels.json        a multi-task model only: {"<target>": [class names in index order], ...}, targets in
                     output order (a regression target: ["value"]); each version's assets.extra holds it too
  model_card.json    backbone, data summary, metrics, hyperparameters, library versions, date, signatures;
                     "files": the size and SHA-256 of the files this export wrote beside it
  model.tflite       with formats=(..., "litert"): LiteRT float32, and model_<quantize>.tflite per
                     quantization; text models also vocab.txt and tokenizer_settings.json (see kerasft.litert)
```
`labels.txt` and `model_card.json` describe the NEWEST export, and so does
`model.keras` unless that export left it out (`formats=("saved_model",)`
keeps the older file; `load` then follows the card to the newest version).
Likewise a `.tflite` file an older export wrote stays until a newer one
replaces it; the card's `litert.files` lists those of the newest export.
Every version folder keeps its own labels and card, so older versions stay
self-describing after newer exports.

SavedModel signatures (`kerasft.serving`) take RAW input and return
`probabilities` float32[None, C], `label` string[None] and `score`
float32[None]; a multi-task model returns those per target:
`<target>_probabilities`, `<target>_label`, `<target>_score`.
- text: `serving_default(text: string[None])`. The graph holds
  tensorflow-text ops: a serving process must `import tensorflow_text` first
  (TF Serving: a build that includes those ops). A classifier tokenizes long
  texts from their head, with the ids of the whole text (`kerasft.tokenizing`).
- images: `serving_default(image_bytes: string[None])` decodes JPEG, PNG, GIF
  (first frame) or BMP and resizes each image to the model's size, so a batch
  may mix sizes; `predict_pixels(images: uint8[None, None, None, 3])`. An
  ensemble whose members see different sizes decodes to the largest; the
  smaller members resize once more, so their outputs on bytes differ slightly
  from predictions on the original pixels.
- audio: `serving_default(audio: float32[None, None])` takes mono waveforms
  at the model's sample rate (in the card), any length, cut or zero-padded to
  the clip length; `wav_bytes(wav_bytes: string[None])` decodes 16-bit PCM
  WAV files (`tf.audio.decode_wav`), mixes them to mono and resamples them to
  the model's rate inside the graph (`kerasft.audio`).
- multiclass/binary: `label` is the most probable class, `score` its
  probability. Multilabel: `probabilities` are the per-class sigmoids,
  `label`/`score` the most probable class (threshold `probabilities` for the
  set). Regression: `probabilities` holds the predicted value `[None, 1]`,
  `score` the value and `label` the value as a string.

Writes are atomic and never destructive: a version is written into a hidden
`.tmp-...` folder beside the others and renamed into place, files are written
to temporary names and `os.replace`d, and an existing version is never
overwritten. A crash leaves the earlier versions whole and no partial
version visible (a killed process may leave a `.tmp-...` folder, which TF
Serving ignores and which is safe to delete); a full disk raises
`kerasft.paths.DiskFullError` naming the folder and the space needed, and
leaves nothing. Exports into one folder from several processes each get
their own version: the version is chosen, and everything renamed, under a
lock on the folder, so the others wait only for those renames. `kerasft.load`
checks what it reads against the recorded sizes and SHA-256 digests and
refuses a damaged file, naming it.

`keep=N` then prunes: under the same lock, right after the new version is
in place, the versions older than the newest N up to it are each renamed to
a hidden `.tmp-...` name (TF Serving stops seeing it whole, never
half-deleted), and deleted once the lock is released. The version just
written and any newer one (TF Serving may be loading it) are never touched.

A LiteRT export is checked before anything is written (a multi-task model's every target): each file runs
through the interpreter on the data's test split beside the Keras model, its
parity report goes into the card (and is printed), and a file that loses more
than `max_accuracy_drop` accuracy fails the whole export (`kerasft.litert`).

`kerasft.predictor.load(path)` (`kft.load`) reads any of these artefacts back into a `Predictor`.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import numbers
import os
import platform
import secrets
import shutil

import numpy as np
import tensorflow as tf

from kerasft import audio, distribute, keras_internals, litert, paths
from kerasft.serving import ExportError, check_class_names, describe, resize_layer, serving_endpoints

FORMATS = ("keras", "saved_model", "litert")
DEFAULT_FORMATS = ("keras", "saved_model")
KERAS_FILE = "model.keras"
LABELS_FILE = "labels.txt"
LABEL_MAP_FILE = "labels.json"
CARD_FILE = "model_card.json"
# In a version's assets.extra: the size and SHA-256 of every other file of the version.
CHECKSUMS_FILE = "checksums.json"
# TF Serving's folder for files beside a SavedModel that the graph does not use.
EXTRA_DIR = "assets.extra"
_TEMP_PREFIX = ".tmp-"
# Room for a SavedModel's or a .keras file's graph and metadata beside the weights, in a size estimate.
_GRAPH_BYTES = 1_000_000
_LIBRARIES = {"kerasft": "kerasft", "keras": "keras", "keras_hub": "keras-hub", "tensorflow": "tensorflow",
              "tensorflow_text": "tensorflow-text"}


@dataclasses.dataclass(frozen=True)
class Exported:
    """Where `export` wrote each artefact.

    Attributes:
        path: str. The export folder.
        version: int or None. The SavedModel version written (None without "saved_model").
        saved_model: str or None. The version folder.
        keras: str or None. The `.keras` file.
        labels: str. `labels.txt`.
        model_card: str. `model_card.json`.
        litert: dict or None. Quantization (`"float32"`, ...) -> `.tflite` file written.
        litert_reports: dict or None. Quantization -> parity report (as in the model card).
        label_map: str or None. A multi-task model's `labels.json`.
    """

    path: str
    version: int
    saved_model: str
    keras: str
    labels: str
    model_card: str
    litert: dict = None
    litert_reports: dict = None
    label_map: str = None


def export(model, path, class_names=None, version=None, data=None, metrics=None, hyperparameters=None,
           formats=DEFAULT_FORMATS, quantize=None, calibration=200, max_accuracy_drop=0.01, keep=None):
    """Writes a classifier as `model.keras`, a new SavedModel version, `labels.txt` and `model_card.json`.

    With `"litert"` in `formats` it also writes `model.tflite` (float32) and
    one `model_<quantize>.tflite` per quantization asked, each checked
    against the Keras model on `data`'s test split first (see `kerasft.litert`).

    Args:
        model: keras.Model. A kerasft classifier (or any model with one raw
            input, strings or `(None, None, None, 3)` pixels 0..255, and one
            output per class); an image model needs a `Resizing` layer named
            `"resize"`, as every kerasft image classifier has.
        path: str or os.PathLike. The export folder (created when missing).
        class_names: list of str, dict or None. Class names in output order;
            default: `data.class_names`, else `"0"`, `"1"`, ... (`["value"]`
            for regression); a multi-task model's `{target: names}` (default:
            each target's in `data.targets`).
        version: int or None. SavedModel version to write; None takes the
            next free integer. An existing version is refused.
        data: TaskData or None. Summarized in the model card (name, task,
            examples per class and split). Required by `"litert"`: its test
            split checks the files, its training split calibrates int8.
        metrics: dict or `Evaluation` or None. Recorded in the model card.
        hyperparameters: dict or None. Recorded in the model card.
        formats: tuple of str. Any of `"keras"`, `"saved_model"` and `"litert"`.
        quantize: str, tuple of str or None. LiteRT quantizations besides
            float32: any of `"float16"`, `"dynamic"`, `"int8"`.
        calibration: int, numpy array or list of str. int8 calibration: a
            number of training examples (stratified sample, seed 0), or raw
            inputs (images `(N, H, W, 3)` 0..255, or texts).
        max_accuracy_drop: float. Largest accuracy loss (a fraction: 0.01 = 1
            point) a LiteRT file may show against the Keras model on the
            test split; a larger loss raises `litert.AccuracyDropError` and
            nothing is written.
        keep: int or None. Keep only the newest `keep` SavedModel versions
            up to the one written (it included); older ones are deleted after
            it is in place. None keeps every version.

    Returns:
        An `Exported` with the paths written.

    Example:
    >>> exported = kft.export(model, "saved_models/bbc_news", data=data, metrics=kft.evaluate(model, data))
    >>> exported.saved_model
    'saved_models/bbc_news/1'
    >>> kft.export(model, "saved_models/fashion", data=data, formats=("litert",), quantize="int8").litert
    {'float32': 'saved_models/fashion/model.tflite', 'int8': 'saved_models/fashion/model_int8.tflite'}
    >>> kft.export(model, "saved_models/bbc_news", data=data, keep=2).saved_model   # a third export: 1/ goes
    'saved_models/bbc_news/3'

    Under a multi-worker strategy every worker calls `export` (saving runs
    collective ops), but only the chief's files are kept: the others write
    to a scratch folder that is removed after.
    """
    with distribute.chief_path(path, model.distribute_strategy) as path:
        return _export(model, path, class_names, version, data, metrics, hyperparameters, formats, quantize,
                       calibration, max_accuracy_drop, keep)


def _export(model, path, class_names, version, data, metrics, hyperparameters, formats, quantize, calibration,
            max_accuracy_drop, keep):
    # === Checks: everything that can be wrong is refused before anything is written ===
    formats = _check_formats(formats)
    if quantize is not None and "litert" not in formats:
        raise ExportError(f"quantize={quantize!r} applies to LiteRT files, but formats={formats} writes none. "
                          "Add 'litert' to formats.")
    modality, task, num_outputs = describe(model)
    if "litert" in formats and modality == "audio":
        raise ExportError("LiteRT files hold text and image models only; an audio model exports as .keras and "
                          "SavedModel. Pass formats=('keras', 'saved_model').")
    class_names = check_class_names(class_names, data, task, num_outputs)
    root = _check_root(path)
    if version is not None and "saved_model" not in formats:
        raise ExportError(f"version={version!r} applies to SavedModels, but formats={formats} writes none.")
    if "saved_model" in formats:
        _check_version(version, root)  # refused now, before any work; chosen for good when committing
    if keep is not None and ("saved_model" not in formats or not isinstance(keep, numbers.Integral)
                             or isinstance(keep, bool) or keep < 1):
        raise ExportError(f"keep must be an integer >= 1 (SavedModel versions to keep), with 'saved_model' in "
                          f"formats. Received: keep={keep!r}, formats={formats}")
    endpoints = serving_endpoints(model, class_names, task)
    # Built once early to refuse unserializable metrics before the LiteRT work, which comes last: each file
    # is converted and compared against the Keras model, and a worse one is refused before anything is written.
    _model_card(model, modality, task, class_names, data, metrics, hyperparameters, endpoints, formats)
    prepared = None
    if "litert" in formats:
        resize = resize_layer(model) if modality == "image" else None
        prepared = litert.prepare(model, data, task, class_names, resize=resize, quantize=quantize,
                                  calibration=calibration, max_accuracy_drop=max_accuracy_drop)
    card = _model_card(model, modality, task, class_names, data, metrics, hyperparameters, endpoints, formats,
                       prepared.card if prepared else None)
    label_files = _label_files(class_names)

    # === Stage: write everything under hidden temporary names beside the final ones ===
    os.makedirs(root, exist_ok=True)
    files = [(KERAS_FILE, functools.partial(_save_keras, model))] if "keras" in formats else []
    if prepared:
        files += [(name, functools.partial(_write_bytes, content)) for name, content in prepared.files.items()]
    staged = []  # (temporary, final name), committed in order
    # The space check outermost: what was staged is removed before the error says what is free.
    with paths.disk_space(root, _size_estimate(root, model, formats, prepared), "the export"):
        try:
            if "saved_model" in formats:
                staged.append((_temporary(root, "version"), None))
                _write_saved_model(model, endpoints, staged[-1][0])
            for name, write in files:
                staged.append((_temporary(root, name), name))
                write(staged[-1][0])

            # === Commit, one export at a time: choose the version, describe it, rename ===
            with _one_commit_at_a_time(root):
                version = _check_version(version, root) if "saved_model" in formats else None
                card["export"]["version"] = version
                card["files"] = {name: paths.checksums(root, [os.path.basename(temporary)])[
                    os.path.basename(temporary)] for temporary, name in staged if name}
                card["files"].update({name: _text_checksum(text) for name, text in label_files.items()})
                if version is not None:
                    _write_extra(staged[0][0], label_files, card)
                for name, content in (*label_files.items(), (CARD_FILE, _to_json(card))):
                    staged.append((_temporary(root, name), name))
                    _write_text(content, staged[-1][0])
                while staged:
                    temporary, name = staged[0]
                    if name is None:
                        _rename_version(temporary, os.path.join(root, str(version)))
                    else:
                        os.replace(temporary, os.path.join(root, name))
                    staged.pop(0)
                pruned = _hide_old_versions(root, version, keep) if keep is not None else []
        finally:
            for temporary, _ in staged:
                _remove(temporary)
    for hidden in pruned:  # deleted outside the lock: the next export need not wait for it
        _remove(hidden)
    version_dir = os.path.join(root, str(version)) if version is not None else None
    return Exported(path=root, version=version, saved_model=version_dir,
                    keras=os.path.join(root, KERAS_FILE) if "keras" in formats else None,
                    labels=os.path.join(root, LABELS_FILE), model_card=os.path.join(root, CARD_FILE),
                    litert={q: os.path.join(root, litert.filename(q)) for q in prepared.reports} if prepared else None,
                    litert_reports=prepared.reports if prepared else None,
                    label_map=os.path.join(root, LABEL_MAP_FILE) if LABEL_MAP_FILE in label_files else None)


def _label_files(class_names):
    """`{file name: text}`: labels.txt, and a multi-task model's labels.json (module docstring)."""
    if not isinstance(class_names, dict):
        return {LABELS_FILE: "".join(f"{name}\n" for name in class_names)}
    first = next(iter(class_names.values()))
    return {LABELS_FILE: "".join(f"{name}\n" for name in first),
            LABEL_MAP_FILE: json.dumps(class_names, indent=1, ensure_ascii=False) + "\n"}


def _size_estimate(root, model, formats, prepared):
    """Bytes an export takes, roughly: what the newest version and `.keras` file here took, else the weights
    once per format that stores them plus room for the graphs; plus the LiteRT files."""
    found = versions(root)
    if found and "saved_model" in formats:
        earlier = paths.folder_bytes(os.path.join(root, str(found[-1])))
        if "keras" in formats and os.path.isfile(os.path.join(root, KERAS_FILE)):
            earlier += os.path.getsize(os.path.join(root, KERAS_FILE))
    else:
        weights = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
        earlier = (weights + _GRAPH_BYTES) * sum(f in formats for f in ("keras", "saved_model"))
    return earlier + sum(len(content) for content in (prepared.files.values() if prepared else ()))


@contextlib.contextmanager
def _one_commit_at_a_time(root):
    """Holds an exclusive lock on the export folder itself: a concurrent export waits, then takes the next version."""
    descriptor = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # released by the kernel if this process dies
        yield
    finally:
        os.close(descriptor)


# === Checks ===


def _check_formats(formats):
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    if not formats or any(f not in FORMATS for f in formats):
        raise ExportError(f"formats must be a non-empty selection of {FORMATS}. Received: formats={formats!r}")
    return formats


def _check_root(path):
    root = os.fspath(path)
    if os.path.exists(root) and not os.path.isdir(root):
        raise ExportError(f"The export path must be a folder. Received a file: {root!r}")
    return root


def versions(path):
    """The SavedModel versions (ints, ascending) in an export folder."""
    if not os.path.isdir(path):
        return []
    return sorted(int(name) for name in os.listdir(path)
                  if name.isdigit() and os.path.isdir(os.path.join(path, name)))


def _check_version(version, root):
    if version is None:
        return max(versions(root), default=0) + 1
    if not isinstance(version, numbers.Integral) or isinstance(version, bool) or version < 1:
        raise ExportError(f"version must be an integer >= 1 (a TF Serving version folder). Received: {version!r}")
    version = int(version)
    if os.path.exists(os.path.join(root, str(version))):
        raise ExportError(
            f"Version {version} already exists in {root!r}; an export never overwrites a version. "
            f"Pass version=None for the next free one ({max(versions(root), default=0) + 1}) or another number."
        )
    return version


def _signature_summary(endpoints):
    """{name: {"inputs": {...}, "outputs": {...}}} with dtypes and shapes, for the model card."""

    def describe(spec):
        return f"{spec.dtype.name}{list(spec.shape)}"

    summary = {}
    for name, function in endpoints.items():
        concrete = function.get_concrete_function()
        inputs = {spec.name: describe(spec) for spec in concrete.structured_input_signature[0]}
        outputs = {key: describe(tensor) for key, tensor in concrete.structured_outputs.items()}
        summary[name] = {"inputs": inputs, "outputs": outputs}
    return summary


# === Writers ===


def _write_saved_model(model, endpoints, folder):
    # A plain tf.Module, not keras.export.ExportArchive: on TensorFlow 2.21 / Keras 3.15 the archive stores
    # every weight twice (keras-team/keras#23553). It holds the TensorFlow variables under the Keras ones, not
    # the model: a Keras variable exports as a second variable copied from the one the signatures read, and
    # the checkpoint restores only that copy, so a session-based loader (TF Serving's; `tf.saved_model.load`
    # rebinds by object and did not show it) found the signatures' variables uninitialized.
    root = tf.Module()
    root.model_variables = [variable.value for variable in model.variables]  # with each Dropout's seed state
    # The lookup tables of the layers (a TextVectorization's vocabulary), reachable through the model only.
    root.resources = [trackable for trackable in tf.train.TrackableView(model).descendants()
                      if isinstance(trackable, tf.saved_model.experimental.TrackableResource)]
    for name, function in endpoints.items():
        setattr(root, name, function)
    tf.saved_model.save(root, folder, signatures=endpoints)


def _write_extra(folder, label_files, card):
    """Puts the version's own labels and card in its assets.extra folder, and the size and SHA-256 of every
    file of the version in `assets.extra/checksums.json`, which `kerasft.load` checks."""
    extra = os.path.join(folder, EXTRA_DIR)
    os.makedirs(extra, exist_ok=True)
    for name, text in label_files.items():
        _write_text(text, os.path.join(extra, name))
    _write_text(_to_json(card), os.path.join(extra, CARD_FILE))
    _write_text(json.dumps(paths.checksums(folder), indent=1), os.path.join(extra, CHECKSUMS_FILE))


def _text_checksum(text):
    content = text.encode("utf-8")
    return {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def _save_keras(model, filename):
    # A tokenizer loaded from disk no longer carries its vocabulary; without it the file does not reload.
    with keras_internals.vocabulary_in_config(model):
        model.save(filename)


def _write_text(text, filename):
    _write_bytes(text.encode("utf-8"), filename)


def _write_bytes(content, filename):
    with open(filename, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())  # on disk before it is renamed into place


def _temporary(root, name):
    """A hidden, unused name in `root` (same file system, so the final rename is atomic).

    Not tempfile's: it creates 0700/0600 entries, which a serving process run
    by another user could not read once renamed into place.
    """
    stem, suffix = os.path.splitext(name)
    return os.path.join(root, f"{_TEMP_PREFIX}{stem}-{secrets.token_hex(8)}{suffix}")


def _rename_version(temporary, final):
    # os.rename onto an existing non-empty folder fails, so a concurrent export cannot be overwritten.
    if os.path.exists(final):
        raise ExportError(f"Version folder {final!r} appeared while exporting (another export?); "
                          "nothing was written. Export again to take the next version.")
    try:
        os.rename(temporary, final)
    except OSError as error:
        raise ExportError(f"Could not move the new version into {final!r}: {error}. Nothing was written.") from error


def _hide_old_versions(root, written, keep):
    """Renames the versions older than the newest `keep` up to `written` to hidden names, which it returns for
    deletion; `written` and newer ones stay. A renamed version leaves TF Serving's view at once, and whole."""
    hidden = []
    for number in [v for v in versions(root) if v <= written][:-keep]:
        hidden.append(_temporary(root, f"deleting-{number}"))
        try:
            os.rename(os.path.join(root, str(number)), hidden[-1])
        except FileNotFoundError:  # pruned meanwhile by another process
            hidden.pop()
    return hidden


def _remove(temporary):
    if os.path.isdir(temporary):
        shutil.rmtree(temporary, ignore_errors=True)
    elif os.path.exists(temporary):
        os.remove(temporary)


# === Model card ===


def _model_card(model, modality, task, class_names, data, metrics, hyperparameters, endpoints, formats,
                litert_card=None):
    card = {
        "model": {
            "name": model.name,
            "modality": modality,
            "task": task,
            "outputs": ({name: len(names) for name, names in class_names.items()} if isinstance(class_names, dict)
                        else len(class_names)),
            "parameters": int(model.count_params()),
            **_input_details(model, modality),
        },
        "backbones": [_backbone_details(layer) for layer in keras_internals.flatten_layers(model)
                      if layer.name == "backbone"],
        "class_names": class_names,
        "data": _data_summary(data) if data is not None else None,
        "metrics": getattr(metrics, "metrics", metrics),
        "hyperparameters": hyperparameters,
        "signatures": _signature_summary(endpoints) if "saved_model" in formats else None,
        "litert": litert_card,
        "export": {"version": None, "formats": list(formats),
                   "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        "libraries": {**{module: _installed_version(dist) for module, dist in _LIBRARIES.items()},
                      "python": platform.python_version()},
    }
    _to_json(card)  # refuse unserializable metrics or hyperparameters before writing anything
    return card


def _input_details(model, modality):
    if modality in ("image", "audio"):
        resize = resize_layer(model)
        details = {"image_size": [resize.height, resize.width]}
        if modality == "audio":
            rate, samples = audio.sample_rate_of(model)
            details.update(sample_rate=rate, duration=round(samples / rate, 6))
        return details
    lengths = sorted({layer.sequence_length for layer in keras_internals.flatten_layers(model)
                      if hasattr(layer, "tokenizer") and hasattr(layer, "sequence_length")})
    return {"sequence_length": lengths[0] if len(lengths) == 1 else lengths}


def _backbone_details(layer):
    config = layer.get_config()
    return {
        "class": type(layer).__name__,
        "package": type(layer).__module__.split(".")[0],
        "parameters": int(layer.count_params()),
        # Scalars only: KerasHub backbones list their sizes here; a functional config would be every layer.
        "config": {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool)) and k != "trainable"},
    }


def _data_summary(data):
    from kerasft.data import SPLITS

    summary = {"name": data.name, "modality": data.modality, "task": data.task,
               "examples": {split: data.size(split) for split in SPLITS}}
    if data.targets:
        summary["targets"] = {name: {"task": target.task, **({} if target.task == "regression" else {
            "class_counts": {split: dict(zip(target.class_names, map(int, row)))
                             for split, row in zip(SPLITS, data.class_counts(name))}})}
            for name, target in data.targets.items()}
    elif data.task != "regression":
        counts = data.class_counts()
        summary["class_counts"] = {split: dict(zip(data.class_names, map(int, row)))
                                   for split, row in zip(SPLITS, counts)}
    return summary


def _installed_version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _to_json(card):
    def default(value):
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. a kft.Head in hyperparameters
            return {"type": type(value).__name__, **dataclasses.asdict(value)}
        raise ExportError(
            f"The model card holds only JSON values (numbers, strings, lists, dicts). Received "
            f"{type(value).__name__}: {value!r} in metrics or hyperparameters."
        )

    return json.dumps(card, indent=2, default=default) + "\n"
