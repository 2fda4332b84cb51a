"""Converts classifiers to LiteRT (`.tflite`), float or quantized, and checks each file against the Keras model.

What a file holds depends on the modality, because LiteRT has no
tensorflow-text ops (a KerasHub tokenizer cannot run inside it):

```
image  the whole classifier: resize, normalize, backbone, head
       in:  images float32[batch, H, W, 3], RGB pixels 0..255, H x W = the model's resize size
       (the in-graph resize is then the identity; kerasft.load resizes other sizes first,
       with the model's own Resizing settings, so its outputs match the Keras model's;
       an ensemble takes its largest members' size, and smaller members resize once more)
text   the classifier's "network": backbone, pooling, head
       in:  token_ids, segment_ids, padding_mask int32[batch, sequence_length] (the network's inputs)
       the tokenizer runs outside: vocab.txt and tokenizer_settings.json are written beside the file,
       and kerasft.load rebuilds the model's KerasHub preprocessor from them (same ids)
both   out: probabilities float32[batch, outputs]; a multi-task model: <target>_probabilities per target
```

Quantizations (`QUANTIZATIONS`), each written as its own file (`filename`):
- `"float32"`: no quantization.
- `"float16"`: weights stored as float16 (half the size); the runtime computes in
  float32, or in float16 where the CPU supports it (XNNPACK), which moves
  probabilities by up to ~1e-2.
- `"dynamic"`: weights int8, activations quantized on the fly (dynamic range).
- `"int8"`: weights and activations int8, activation ranges calibrated on a
  representative sample of the training data. Input and output stay
  float32 (a quantize op in, a dequantize op out), so every file takes and
  returns the same tensors; ops without an int8 kernel stay float.

Every file embeds a `"kerasft"` metadata entry (JSON: modality, task, class
names, inputs, quantization; the resize settings of an image model; the
tokenizer settings and vocabulary of a text model), so a `.tflite` file
alone is enough for `LiteRTModel` and `kerasft.load`. Runtimes ignore it.

Parity (`prepare`): every file runs through the LiteRT interpreter on the
test split beside the Keras model: accuracy of each, top-1 agreement, max
probability difference, file size, latency per example (batch 1). A file
whose accuracy is more than `max_accuracy_drop` below the Keras model's is
refused with `AccuracyDropError`, and nothing is written.

The interpreter is `ai_edge_litert`'s (`tf.lite.Interpreter` is deprecated
and announced for removal); the converter is TensorFlow's, from a SavedModel
written by `keras.export.ExportArchive`, restricted to LiteRT's builtin ops
so that a file runs without the Flex (TensorFlow ops) delegate.
"""

import contextlib
import copy
import dataclasses
import importlib.metadata
import json
import numbers
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from kerasft import features, keras_internals, tokenizing
from kerasft.data.targets import present

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
METADATA_NAME = "kerasft"
IMAGE_INPUT = "images"
OUTPUT = "probabilities"
VOCABULARY_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer_settings.json"
# Interpreter threads for the parity latency: one core, as a phone app usually gets, and steady on a shared CPU.
LATENCY_THREADS = 1
_METADATA_VERSION = 1
# Examples timed one at a time (after two warm-up calls) for the latency figure.
_LATENCY_EXAMPLES = 32
_BATCH_SIZE = 64


class LiteRTError(ValueError):
    """A model, an argument or a file does not fit a kerasft LiteRT conversion or run."""


class AccuracyDropError(LiteRTError):
    """A LiteRT file is less accurate than its Keras model by more than the tolerance."""


def filename(quantization):
    """The file name of a quantization: `model.tflite` for float32, else `model_<quantization>.tflite`.

    Args:
        quantization: str. One of `QUANTIZATIONS`.
    """
    return "model.tflite" if quantization == "float32" else f"model_{quantization}.tflite"


@dataclasses.dataclass
class Prepared:
    """The checked LiteRT files of one export, not yet written.

    Attributes:
        files: dict. File name -> bytes: the `.tflite` files, and for text
            `vocab.txt` and `tokenizer_settings.json`.
        reports: dict. Quantization -> its parity report (a dict).
        card: dict. The model card's `"litert"` section.
    """

    files: dict
    reports: dict
    card: dict


def prepare(model, data, task, class_names, resize=None, quantize=None, calibration=200, max_accuracy_drop=0.01):
    """Converts a classifier to LiteRT files and checks each against the Keras model; prints the parity; writes nothing.

    Args:
        model: keras.Model. A kerasft classifier (an image ensemble too); a
            text model must have a `"preprocessor"` with a WordPiece
            tokenizer and a `"network"` taking its token ids.
        data: TaskData. Its test split (the validation split when the test
            split is empty) checks every file; its training split
            calibrates int8.
        task: str. `"multiclass"`, `"binary"`, `"multilabel"` or `"regression"`; a multi-task
            model's `{target: task}` (every target's outputs are checked on the rows that carry it).
        class_names: list of str (a multi-task model's `{target: names}`). Output names, embedded in each file.
        resize: keras.layers.Resizing or None. The layer that sets an image
            model's input size (the largest in an ensemble); None for text.
        quantize: str, tuple of str or None. Quantized files to write besides
            the float32 `model.tflite`: any of `"float16"`, `"dynamic"`, `"int8"`.
        calibration: int, numpy array or list of str. The int8 calibration
            sample: a number of training examples (stratified, seeded), or
            raw inputs (images `(N, H, W, 3)` 0..255, or texts).
        max_accuracy_drop: float. Largest accepted accuracy loss of any file
            against the Keras model, as a fraction (0.01 = 1 point).

    Returns:
        A `Prepared` with the files' bytes, their parity reports and the model card section.

    Raises:
        AccuracyDropError: a file loses more than `max_accuracy_drop` accuracy.
    """
    # === Checks, before any conversion ===
    quantizations = check_quantize(quantize)
    source = _Source.of(model, resize)
    _check_data(data, source.modality, task)
    if "int8" in quantizations:
        if "regression" in (task.values() if isinstance(task, dict) else [task]):
            raise LiteRTError("int8 needs an accuracy to guard it, which a regression model has not. Use "
                              "quantize='float16' or 'dynamic' for a regression model. Received: quantize='int8'")
        calibration = _check_calibration(calibration, data, source.modality)
    if not isinstance(max_accuracy_drop, numbers.Real) or not 0 <= max_accuracy_drop <= 1:
        raise LiteRTError("max_accuracy_drop must be a fraction in [0, 1] (0.01 = 1 accuracy point). "
                          f"Received: {max_accuracy_drop!r}")
    multi = isinstance(task, dict)
    metadata = {"format": METADATA_NAME, "version": _METADATA_VERSION, "modality": source.modality, "task": task,
                "class_names": {t: list(n) for t, n in class_names.items()} if multi else list(class_names),
                "inputs": source.input_specs(), "output": _output_names(task), **source.metadata()}

    # === Convert: one temporary SavedModel, one converter run per quantization ===
    contents = {}
    with source.saved_model() as folder:
        for quantization in quantizations:
            representative = _representative(source, calibration, data) if quantization == "int8" else None
            content = _convert(folder, quantization, representative)
            contents[quantization] = _with_metadata(content, {**metadata, "quantization": quantization})

    # === Check every file against the Keras model, then guard ===
    split = "test" if data.size("test") else "validation"
    reports = _parity(source, contents, getattr(data, split), task)
    for quantization, report in reports.items():
        report.update({"file": filename(quantization), "split": split})
    print(parity_table(reports), flush=True)
    for quantization, report in reports.items():
        _guard(report, max_accuracy_drop, calibration if quantization == "int8" else None)

    files = {filename(q): content for q, content in contents.items()}
    files.update(source.side_files())
    card = {"runtime": {"interpreter": f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}",
                        "latency_threads": LATENCY_THREADS},
            "inputs": metadata["inputs"],
            "output": ({_output_names(task)[t]: f"float32[batch, {len(n)}]" for t, n in class_names.items()} if multi
                       else {OUTPUT: f"float32[batch, {len(class_names)}]"}),
            **source.card(), "max_accuracy_drop": max_accuracy_drop,
            "calibration": _describe_calibration(calibration) if "int8" in quantizations else None,
            "files": {report["file"]: report for report in reports.values()}}
    return Prepared(files=files, reports=reports, card=card)


# === Checks ===


def check_quantize(quantize):
    """Returns the quantizations to write: `"float32"` always, then those asked, in `QUANTIZATIONS` order.

    Args:
        quantize: str, tuple of str or None.
    """
    asked = (() if quantize is None else (quantize,) if isinstance(quantize, str)
             else tuple(quantize) if isinstance(quantize, (list, tuple)) else (quantize,))
    if any(q not in QUANTIZATIONS for q in asked):
        raise LiteRTError(f"quantize must be None, or one or several of {QUANTIZATIONS[1:]} (float32 is always "
                          f"written). Received: quantize={quantize!r}")
    return tuple(q for q in QUANTIZATIONS if q == "float32" or q in asked)


def _output_names(task):
    """The file's output tensor name: `OUTPUT`, or a multi-task model's `{target: "<target>_probabilities"}`."""
    return {target: f"{target}_{OUTPUT}" for target in task} if isinstance(task, dict) else OUTPUT


def _named(outputs):
    """A batch of model outputs as the file's named output tensors (`_output_names`)."""
    if isinstance(outputs, dict):
        return {f"{target}_{OUTPUT}": value for target, value in outputs.items()}
    return {OUTPUT: outputs}


def _check_data(data, modality, task):
    if not all(hasattr(data, a) for a in ("test", "validation", "train", "size", "modality")):
        raise LiteRTError("A LiteRT export needs data= (a kft TaskData): each file is checked against the Keras "
                          f"model on its test split. Received: data={type(data).__name__}")
    if data.modality != modality:
        raise LiteRTError(f"The model takes {modality} input but the data is {data.modality} ({data.name}).")
    if isinstance(task, dict) or data.targets:
        held = {t: target.task for t, target in (data.targets or {}).items()}
        if not isinstance(task, dict) or list(held) != list(task) or any(
                held[t] != task[t] and {held[t], task[t]} != {"multiclass", "binary"} for t in task):
            raise LiteRTError(f"The model's targets are {task!r} but the data's ({data.name}) are "
                              f"{held or data.task!r}.")
    elif task != data.task and {task, data.task} != {"multiclass", "binary"}:
        raise LiteRTError(f"The model's task is {task!r} but the data's is {data.task!r} ({data.name}).")
    if not data.size("test") and not data.size("validation"):
        raise LiteRTError(f"The test and validation splits of {data.name} are empty; a LiteRT export is checked "
                          "on one of them.")


def _check_calibration(calibration, data, modality):
    """Returns the calibration: a number of training examples, a list of texts or an image array."""
    if isinstance(calibration, numbers.Integral) and not isinstance(calibration, bool):
        if calibration < 1 or not data.size("train"):
            raise LiteRTError("calibration must be >= 1 training examples (and the training split non-empty). "
                              f"Received: calibration={calibration}, {data.size('train')} training examples")
        return calibration
    if modality == "text":
        if isinstance(calibration, (str, bytes)) or not isinstance(calibration, (list, tuple, np.ndarray)) or \
                not len(calibration) or not all(isinstance(x, str) for x in calibration):
            raise LiteRTError("calibration for a text model is a number of training examples or a non-empty list "
                              f"of strings. Received: {type(calibration).__name__} {str(calibration)[:80]!r}")
        return list(calibration)
    images = np.asarray(calibration) if isinstance(calibration, (list, tuple, np.ndarray)) else None
    if images is None or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise LiteRTError("calibration for an image model is a number of training examples or an array (N, H, W, 3) "
                          f"of pixels 0..255. Received: {type(calibration).__name__} "
                          f"{getattr(images, 'shape', str(calibration)[:80])}")
    return images


def _describe_calibration(calibration):
    if isinstance(calibration, numbers.Integral):
        return {"examples": int(calibration), "source": "stratified sample of the training split (seed 0)"}
    return {"examples": len(calibration), "source": "raw inputs passed as calibration="}


# === What a file holds, by modality ===


class _Source:
    """The Keras graph a file is converted from, its input tensors and the preprocessing outside it."""

    modality = None

    @staticmethod
    def of(model, resize):
        if model.inputs[0].dtype == "string":
            return _TextSource(model)
        if resize is None:
            raise LiteRTError(f"An image model needs its Resizing layer to fix the LiteRT input size. Model "
                              f"{model.name!r} has none named 'resize'.")
        return _ImageSource(model, resize)

    @contextlib.contextmanager
    def saved_model(self):
        """A temporary SavedModel of `self.graph` with one `serving_default` signature."""
        specs = {name: tf.TensorSpec(shape, dtype, name=name) for name, (dtype, shape) in self._tensors().items()}
        with tempfile.TemporaryDirectory(prefix="kerasft-litert-") as folder:
            archive = keras.export.ExportArchive()
            archive.track(self.graph)
            archive.add_endpoint("serving_default", lambda inputs: _named(self.reference(inputs)),
                                 input_signature=[specs])
            archive.write_out(folder, verbose=False)
            yield folder

    def input_specs(self):
        return {name: f"{dtype}[batch, {', '.join(map(str, shape[1:]))}]"
                for name, (dtype, shape) in self._tensors().items()}

    def side_files(self):
        return {}


class _ImageSource(_Source):
    modality = "image"

    def __init__(self, model, resize):
        self.graph = model
        self.resize = resize

    def _tensors(self):
        return {IMAGE_INPUT: ("float32", (None, self.resize.height, self.resize.width, 3))}

    def reference(self, inputs):
        return self.graph(inputs[IMAGE_INPUT], training=False)

    def batches(self, dataset, batch_size):
        """`(file inputs, labels)` numpy batches from unbatched `(raw image, label)`."""
        resized = dataset.map(lambda x, y: (self.resize(tf.cast(x, tf.float32)), y),
                              num_parallel_calls=tf.data.AUTOTUNE)
        for x, y in features.prefetched(resized.batch(batch_size)):
            yield {IMAGE_INPUT: x.numpy()}, tf.nest.map_structure(np.asarray, y)

    def metadata(self):
        return {"resize": self.resize.get_config()}

    def card(self):
        return {"image_size": [self.resize.height, self.resize.width]}


class _TextSource(_Source):
    modality = "text"

    def __init__(self, model):
        import keras_hub

        try:
            self.preprocessor, self.graph = model.get_layer("preprocessor"), model.get_layer("network")
        except ValueError:
            raise LiteRTError(
                f"A text LiteRT file starts at token ids, so the model needs one 'preprocessor' and one 'network' "
                f"layer, as a kerasft classifier (or a soup) has. Received {model.name!r} with layers "
                f"{[layer.name for layer in model.layers]} (an ensemble of text models is not supported: export "
                "its members, or a uniform_soup / greedy_soup)."
            ) from None
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        self.sequence_length = getattr(self.preprocessor, "sequence_length", None)
        if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer) or not self.sequence_length:
            raise LiteRTError(
                "A text LiteRT export writes the tokenizer as a vocabulary and settings, which kerasft supports for "
                "KerasHub WordPiece tokenizers (the BERT family) with a fixed sequence length. Received a "
                f"{type(tokenizer).__name__} in {type(self.preprocessor).__name__} {self.preprocessor.name!r}"
                + (" (a classic TF-IDF model: its TextVectorization n-grams have no LiteRT ops; export it with "
                   "formats=('keras', 'saved_model'))" if tokenizer is None else "") + "."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.names = list(self.graph.input)
        # The preprocessor's Keras config without its vocabulary (that goes to vocab.txt), for an exact rebuild.
        with keras_internals.vocabulary_in_config(self.preprocessor):
            self.config = keras.saving.serialize_keras_object(self.preprocessor)
        self.config["config"]["tokenizer"]["config"]["vocabulary"] = None
        self.vocabulary = list(tokenizer.get_vocabulary())
        bad = [token for token in self.vocabulary if "\n" in token or "\r" in token]
        if bad:
            raise LiteRTError(f"{VOCABULARY_FILE} holds one token per line; these tokens hold line breaks: {bad[:5]}")

    def _tensors(self):
        return {name: ("int32", (None, self.sequence_length)) for name in self.names}

    def reference(self, inputs):
        return self.graph(inputs, training=False)

    def batches(self, dataset, batch_size):
        """`(file inputs, labels)` numpy batches from unbatched `(text, label)`, tokenized by the model."""
        for x, y in features.preprocess(self.model, dataset, batch_size, cache=False):
            yield {name: x[name].numpy().astype("int32") for name in self.names}, tf.nest.map_structure(np.asarray, y)

    def settings(self):
        """The tokenizer settings a device-side tokenizer needs (tokenizer_settings.json)."""
        tokenizer, vocabulary = self.tokenizer, self.vocabulary
        packer = getattr(self.preprocessor, "packer", None)
        special = {}
        if packer is not None:
            for role, value in (("start", packer.start_value), ("end", packer.end_value), ("pad", packer.pad_value)):
                ids = [int(i) for i in np.ravel(value)]  # an id, or a list of ids
                special[role] = {"tokens": [vocabulary[i] for i in ids], "ids": ids}
        return {
            "algorithm": "WordPiece (BERT): split on whitespace, punctuation and CJK characters, then greedy "
                         "longest-match subwords; [start] tokens [end], truncated and padded to sequence_length",
            "vocabulary_file": VOCABULARY_FILE,
            "vocabulary_size": len(vocabulary),
            "sequence_length": self.sequence_length,
            "inputs": self.input_specs(),
            **{name: meaning for name, meaning in (
                ("padding_mask", "1 for real tokens (start and end included), 0 for padding"),
                ("segment_ids", "0 everywhere (one text segment)")) if name in self.names},
            "lowercase": tokenizer.lowercase,
            "strip_accents": tokenizer.strip_accents,
            "split": tokenizer.split,
            "split_on_cjk": tokenizer.split_on_cjk,
            "suffix_indicator": tokenizer.suffix_indicator,
            "oov_token": tokenizer.oov_token,
            "special_tokens": special,
            "truncate": getattr(self.preprocessor, "truncate", None),
            "keras_hub_config": self.config,
        }

    def metadata(self):
        return {"tokenizer": self.settings(), "vocabulary": self.vocabulary}

    def side_files(self):
        return {VOCABULARY_FILE: "".join(f"{token}\n" for token in self.vocabulary).encode("utf-8"),
                TOKENIZER_FILE: (json.dumps(self.settings(), indent=2) + "\n").encode("utf-8")}

    def card(self):
        return {"sequence_length": self.sequence_length, "tokenizer": TOKENIZER_FILE,
                "vocabulary": VOCABULARY_FILE}


# === Conversion ===


def _representative(source, calibration, data):
    """The int8 calibration examples, one at a time, as the file's input tensors."""
    if isinstance(calibration, numbers.Integral):
        dataset = data.subset(train=int(calibration), seed=0).train
    else:
        raw = tf.constant(calibration, dtype=tf.string if source.modality == "text" else tf.float32)
        dataset = tf.data.Dataset.from_tensor_slices((raw, tf.zeros([len(calibration)], tf.int32)))

    def examples():
        for inputs, _ in source.batches(dataset, 1):
            yield inputs

    return examples


def _convert(saved_model, quantization, representative):
    from tensorflow.lite.python.convert import ConverterError

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    # Builtin ops only: a file that needs TensorFlow ops (the Flex delegate) would not run on most devices.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.representative_dataset = representative
    try:
        with warnings.catch_warnings():
            # int8 calibration runs TensorFlow's own (deprecated) interpreter; the warning is not the user's.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return converter.convert()
    except ConverterError as error:
        raise LiteRTError(f"The LiteRT converter refused the model ({quantization}); it may use TensorFlow ops "
                          f"that LiteRT's builtin op set lacks. Converter message: {error}") from error


def _with_metadata(content, metadata):
    """The flatbuffer with a `"kerasft"` metadata entry (JSON) appended; runtimes ignore unknown entries."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    return flatbuffer_utils.convert_object_to_bytearray(model)


def read_metadata(content):
    """Returns the `"kerasft"` metadata (a dict) embedded in a `.tflite` file's content.

    Args:
        content: bytes. The file's content.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            buffer = model.Buffers(entry.Buffer())
            # A file over 2 GB keeps its buffers after the flatbuffer, at an offset.
            data = (content[buffer.Offset():buffer.Offset() + buffer.Size()] if buffer.Offset() > 1
                    else buffer.DataAsNumpy().tobytes())
            return json.loads(bytes(data).decode("utf-8"))
    raise LiteRTError(f"Not a kerasft LiteRT file: it has no {METADATA_NAME!r} metadata (write it with "
                      "kerasft.export(..., formats=('litert',)) to run it with kerasft.load).")


# === Parity ===


def _parity(source, contents, dataset, task):
    """Runs the Keras model and every file over a split; returns {quantization: report}."""
    reference = tf.function(source.reference, reduce_retracing=True)
    runners = {q: LiteRTModel(content, num_threads=LATENCY_THREADS) for q, content in contents.items()}
    keras_outputs, outputs, labels, timed = [], {q: [] for q in contents}, [], []
    for inputs, y in source.batches(dataset, _BATCH_SIZE):
        keras_outputs.append(tf.nest.map_structure(np.asarray, reference(inputs)))
        for quantization, runner in runners.items():
            outputs[quantization].append(runner.run(inputs))
        labels.append(y)
        rows = len(next(iter(inputs.values())))
        timed += [{name: x[i:i + 1] for name, x in inputs.items()}
                  for i in range(min(rows, _LATENCY_EXAMPLES - len(timed)))]
    keras_probabilities, labels = _joined(keras_outputs), _joined(labels)
    latency = _latency_ms({"keras": reference, **{q: runner.run for q, runner in runners.items()}}, timed)
    return {q: {"quantization": q, "size_bytes": len(content), "examples": len(tf.nest.flatten(labels)[0]),
                **_compare_targets(task, keras_probabilities, _joined(outputs[q]), labels),
                "latency_ms": latency[q], "keras_latency_ms": latency["keras"]}
            for q, content in contents.items()}


def _joined(batches):
    """Batches of arrays (or of dicts of them) as one array (or dict)."""
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *batches)


def _compare_targets(task, keras_probabilities, litert_probabilities, labels):
    """`_compare`; a multi-task model's per target on the rows that carry it (`targets`), with the largest
    accuracy drop and probability difference of any target at the top."""
    if not isinstance(task, dict):
        return _compare(task, keras_probabilities, litert_probabilities, labels)
    targets = {}
    for target, kind in task.items():
        carried = present(labels[target], kind)
        targets[target] = _compare(kind, keras_probabilities[target][carried], litert_probabilities[target][carried],
                                   labels[target][carried])
    drops = [r["accuracy_drop"] for r in targets.values() if "accuracy_drop" in r]
    return {"targets": targets, "max_probability_difference": max(r["max_probability_difference"]
                                                                   for r in targets.values()),
            **({"accuracy_drop": max(drops)} if drops else {})}


def _compare(task, keras_probabilities, litert_probabilities, labels):
    difference = float(np.max(np.abs(keras_probabilities - litert_probabilities)))
    if task == "regression":
        truth = labels.reshape(len(labels), -1).astype("float64")
        return {"keras_mae": float(np.mean(np.abs(keras_probabilities - truth))),
                "litert_mae": float(np.mean(np.abs(litert_probabilities - truth))),
                "max_probability_difference": difference}
    if task == "multilabel":
        def predicted(p):
            return p >= 0.5

        def same(a, b):
            return np.all(a == b, axis=-1)

        truth = labels.astype(bool)
    else:
        def predicted(p):
            return p.argmax(-1)

        def same(a, b):
            return a == b

        truth = labels.astype("int64")
    keras_accuracy = float(np.mean(same(predicted(keras_probabilities), truth)))
    litert_accuracy = float(np.mean(same(predicted(litert_probabilities), truth)))
    return {"keras_accuracy": keras_accuracy, "litert_accuracy": litert_accuracy,
            "accuracy_drop": keras_accuracy - litert_accuracy,
            "top1_agreement": float(np.mean(same(predicted(keras_probabilities), predicted(litert_probabilities)))),
            "max_probability_difference": difference}


def _latency_ms(calls, examples):
    """{name: median milliseconds of one call on one example}, after two warm-up calls each.

    The calls take turns on each example, so a load from other processes on
    a shared CPU slows them alike instead of whichever happened to run then.
    """
    for run in calls.values():
        for inputs in examples[:2]:
            run(inputs)
    times = {name: [] for name in calls}
    for inputs in examples:
        for name, run in calls.items():
            start = time.perf_counter()
            run(inputs)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(spent)) for name, spent in times.items()}


def _guard(report, max_accuracy_drop, calibration):
    if "targets" in report:  # a multi-task model: each target's accuracy
        whole = {key: value for key, value in report.items() if key != "targets"}
        for target, scores in report["targets"].items():
            _guard({**whole, **scores, "file": f"{report['file']} target {target!r}"}, max_accuracy_drop, calibration)
        return
    drop = report.get("accuracy_drop")
    if drop is None or drop <= max_accuracy_drop + 1e-9:
        return
    if calibration is not None:
        advice = (f"Calibrate int8 on more or more typical examples (calibration=; this run used "
                  f"{_describe_calibration(calibration)['examples']}), or use quantize='dynamic' or 'float16'")
    else:
        advice = "Use a lighter quantization (float16 loses least)"
    raise AccuracyDropError(
        f"{report['file']} ({report['quantization']}) is {100 * drop:.1f} accuracy points below the Keras model on "
        f"the {report['split']} split: {report['litert_accuracy']:.4f} against {report['keras_accuracy']:.4f} on "
        f"{report['examples']} examples (top-1 agreement {report['top1_agreement']:.1%}). Expected a drop of at most "
        f"max_accuracy_drop={max_accuracy_drop} ({100 * max_accuracy_drop:g} point"
        f"{'' if 100 * max_accuracy_drop == 1 else 's'}). Nothing was written. "
        f"{advice}, or raise max_accuracy_drop if this loss is acceptable."
    )


def parity_table(reports):
    """Formats parity reports as a text table, one row per file.

    Args:
        reports: dict. Quantization -> report, as in `Prepared.reports`.
    """
    first = next(iter(reports.values()))
    if "targets" in first:  # a multi-task model: a row per file and target
        reports = {f"{q} {target}": {**report, **scores, "file": f"{report.get('file', filename(q))} [{target}]"}
                   for q, report in reports.items() for target, scores in report["targets"].items()}
        first = next(iter(reports.values()))
    accuracy = "keras_accuracy" in first
    metric_header = f"{'accuracy':>9}{'keras':>8}{'agree':>8}" if accuracy else f"{'mae':>9}{'keras':>8}"
    lines = [(f"kerasft LiteRT parity on the {first.get('split', 'test')} split ({first['examples']} examples; "
              f"latency: batch 1, {LATENCY_THREADS} interpreter thread, this CPU)"),
             f"{'file':<22}{'size':>10}  {metric_header}{'max |dp|':>10}{'latency':>10}{'keras':>9}"]
    for quantization, report in reports.items():
        metrics = (f"{report['litert_accuracy']:>9.4f}{report['keras_accuracy']:>8.4f}{report['top1_agreement']:>8.1%}"
                   if "keras_accuracy" in report else f"{report['litert_mae']:>9.4g}{report['keras_mae']:>8.4g}")
        lines.append(f"{report.get('file', filename(quantization)):<22}{report['size_bytes'] / 1e6:>8.2f}MB  {metrics}"
                     f"{report['max_probability_difference']:>10.2e}{report['latency_ms']:>8.2f}ms"
                     f"{report['keras_latency_ms']:>7.2f}ms")
    return "\n".join(lines)


# === Running a file ===


class LiteRTModel:
    """Runs a kerasft `.tflite` file from raw input: the preprocessing its metadata names, then the interpreter.

    Images of any size are resized with the model's own Resizing settings;
    texts are tokenized by the model's KerasHub preprocessor, rebuilt from
    the embedded vocabulary and settings (the same ids as the Keras model).

    Args:
        model: str, os.PathLike or bytes. A `.tflite` file written by
            `kerasft.export(..., formats=("litert",))`, or its content.
        num_threads: int or None. Interpreter threads (None: the runtime's default).

    Attributes:
        metadata: dict. The embedded `"kerasft"` metadata.
        modality: str. `"image"` or `"text"`.
        task: str. The classifier's task (a multi-task model's `{target: task}`).
        class_names: list of str. Output names, in order (a multi-task model's `{target: names}`).
        quantization: str. One of `QUANTIZATIONS`.

    Example:
    >>> runner = LiteRTModel("saved_models/fashion/model_int8.tflite")
    >>> probabilities = runner.predict(images)   # uint8 or float pixels 0..255, any size
    """

    def __init__(self, model, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, (bytes, bytearray)):
            self._content = bytes(model)
        else:
            with open(model, "rb") as file:
                self._content = file.read()
        self.metadata = read_metadata(self._content)
        self.modality = self.metadata["modality"]
        self.task = self.metadata["task"]
        self.class_names = self.metadata["class_names"]
        self.quantization = self.metadata["quantization"]
        self._interpreter = Interpreter(model_content=self._content, num_threads=num_threads)
        self._signature = self._interpreter.get_signature_runner("serving_default")
        self._preprocess = self._text_preprocessing() if self.modality == "text" else self._image_preprocessing()

    def preprocess(self, inputs):
        """Returns the file's input tensors (numpy dict) for raw inputs: resized images, or token ids.

        Args:
            inputs: list of str (text); numpy array `(N, H, W, 3)` or list of
                `(H, W, 3)` arrays of pixels 0..255, any size (images).
        """
        return self._preprocess(inputs)

    def run(self, inputs):
        """Returns the file's output for its own input tensors (numpy dict, as `metadata["inputs"]` lists); a
        multi-task model's `{target: output}`.

        Args:
            inputs: dict. Input name -> numpy batch.
        """
        outputs, names = self._signature(**inputs), self.metadata["output"]
        return {target: outputs[name] for target, name in names.items()} if isinstance(names, dict) else outputs[names]

    def predict(self, inputs, batch_size=32):
        """Returns the probabilities (regression: the values) for raw inputs, float32 `(N, outputs)`; a
        multi-task model's `{target: probabilities}`.

        Args:
            inputs: list of str (text); numpy array `(N, H, W, 3)` or list of
                `(H, W, 3)` arrays of pixels 0..255, any size (images).
            batch_size: int. Examples per interpreter call.
        """
        chunks = [self.run(self.preprocess(inputs[start:start + batch_size]))
                  for start in range(0, len(inputs), batch_size)]
        if not chunks:
            raise LiteRTError("predict() received no inputs.")
        return _joined(chunks)

    def _image_preprocessing(self):
        resize = keras.layers.Resizing.from_config(self.metadata["resize"])

        def preprocess(images):
            if isinstance(images, np.ndarray) and images.ndim == 4:  # one size: resize the batch at once
                return {IMAGE_INPUT: np.asarray(resize(tf.cast(images, tf.float32)))}
            return {IMAGE_INPUT: np.stack([np.asarray(resize(tf.cast(image, tf.float32))) for image in images])}

        return preprocess

    def _text_preprocessing(self):
        import keras_hub  # noqa: F401  registers the preprocessor classes

        settings = self.metadata["tokenizer"]
        config = copy.deepcopy(settings["keras_hub_config"])
        config["config"]["tokenizer"]["config"]["vocabulary"] = self.metadata["vocabulary"]
        preprocessor = keras.saving.deserialize_keras_object(config)
        names = list(self.metadata["inputs"])
        tokenize = tokenizing.head_preprocessor(preprocessor)  # a tf.function: KerasHub's eager path is Python

        def preprocess(texts):
            ids = tokenize(tf.constant(list(texts), tf.string))
            return {name: np.asarray(ids[name]).astype("int32") for name in names}

        return preprocess
