"""Reads every artefact `kft.export` writes back into a `Predictor`: `.keras`, SavedModel versions, `.tflite`.

```python
predictor = kft.load("saved_models/bbc_news")        # an export folder, a .keras, a version folder or a .tflite
labels, scores = predictor.predict_labels(["Shares fell after the bank's results."])
```
Every artefact answers through the same serving functions
(`kerasft.serving.serving_endpoints`), so a `.keras` file and the
SavedModel written beside it give the same outputs. A multi-task model
answers per target: `predict` gives `{target: probabilities}`,
`predict_labels` `{target: (labels, scores)}` (or one target's, asked by name).
"""

import json
import os
import zipfile

import keras
import numpy as np
import tensorflow as tf

from kerasft import audio, litert, paths
from kerasft.exporting import (CARD_FILE, CHECKSUMS_FILE, EXTRA_DIR, FORMATS, KERAS_FILE, LABEL_MAP_FILE, LABELS_FILE,
                               versions)
from kerasft.serving import ExportError, check_class_names, describe, serving_endpoints, serving_outputs


class Predictor:
    """Predicts with an exported classifier from raw input, whichever artefact it was loaded from.

    Made by `kerasft.load`. Inputs: a list of strings (text models); a numpy
    array of images `(N, H, W, 3)` with pixels 0..255, or a list of image file
    paths or encoded image bytes (image models); a list of sound file paths
    or bytes (WAV, FLAC, OGG: decoded, mixed to mono and resampled here), or
    waveforms at `sample_rate` (audio models).

    Attributes:
        class_names: list of str. Output names, in order; a multi-task model's `{target: names}`.
        targets: list of str or None. A multi-task model's targets, in output order.
        modality: str. `"text"`, `"image"` or `"audio"`.
        sample_rate: int or None. Audio models: the Hz of their waveforms.
        source: str. The file or folder it was loaded from.
        model: The loaded `keras.Model`, the `tf.saved_model.load` object, or
            a `kerasft.litert.LiteRTModel`.
    """

    def __init__(self, model, endpoints, class_names, modality, source, sample_rate=None):
        """Wraps serving functions; use `kerasft.load` rather than this.

        Args:
            model: keras.Model, a loaded SavedModel or a LiteRTModel. What `endpoints` run
                (a SavedModel's signatures need it alive).
            endpoints: dict. Signature name -> callable of one raw-input
                tensor returning `{"probabilities", "label", "score"}` (per target,
                prefixed, for a multi-task model).
            class_names: list of str, or a multi-task model's `{target: names}`.
            modality: str. `"text"`, `"image"` or `"audio"`.
            source: str. Where it was loaded from.
            sample_rate: int or None. Audio models: their sample rate.
        """
        self.model = model
        self._endpoints = endpoints
        self.targets = list(class_names) if isinstance(class_names, dict) else None
        self.class_names = ({name: list(names) for name, names in class_names.items()} if self.targets
                            else list(class_names))
        self.modality = modality
        self.source = source
        self.sample_rate = sample_rate

    def predict(self, inputs, batch_size=32):
        """Returns the probabilities (regression: the values), a float32 array `(N, outputs)`; a multi-task
        model's `{target: array}`.

        Args:
            inputs: list of str (text); numpy array `(N, H, W, 3)` of pixels
                0..255 (uint8, or floats holding whole numbers), or list of
                image file paths or encoded bytes (images); list of sound
                file paths or bytes, or of mono waveforms at `sample_rate`,
                or an array `(N, samples)` of them (audio).
            batch_size: int. Examples per call.
        """
        outputs = self._run(inputs, batch_size)
        if self.targets:
            return {target: outputs[f"{target}_probabilities"] for target in self.targets}
        return outputs["probabilities"]

    def predict_labels(self, inputs, batch_size=32, target=None):
        """Returns `(labels, scores)`: the most probable class name and its probability per input.

        Regression gives the value as text and as the score. A multi-task
        model gives `{target: (labels, scores)}`, or one target's with `target`.

        Args:
            inputs: as for `predict`.
            batch_size: int. Examples per call.
            target: str or None. A multi-task model's target to answer for (None: every target).
        """
        if target is not None and target not in (self.targets or ()):
            has = f"the targets {self.targets}" if self.targets else "one unnamed target"
            raise ExportError(f"{self.source} has {has}; it cannot predict {target!r}. Received: target={target!r}")
        outputs = self._run(inputs, batch_size)

        def labelled(prefix):
            return [label.decode("utf-8") for label in outputs[f"{prefix}label"]], outputs[f"{prefix}score"]

        if self.targets is None:
            return labelled("")
        return labelled(f"{target}_") if target else {name: labelled(f"{name}_") for name in self.targets}

    def _run(self, inputs, batch_size):
        endpoint, tensor = self._route(inputs)
        chunks = [self._endpoints[endpoint](tf.constant(tensor[start:start + batch_size]))
                  for start in range(0, len(tensor), batch_size)]
        if not chunks:
            raise ExportError("predict() received no inputs.")
        return {key: np.concatenate([chunk[key].numpy() for chunk in chunks]) for key in chunks[0]}

    def _route(self, inputs):
        """Returns (signature name, numpy batch) for raw inputs."""
        if self.modality == "text":
            if isinstance(inputs, (str, bytes)) or not all(isinstance(x, (str, bytes)) for x in inputs):
                raise ExportError("A text model predicts from a list of strings. Received: "
                                  f"{type(inputs).__name__} {str(inputs)[:80]!r}")
            return "serving_default", np.array(list(inputs), dtype=object)
        if self.modality == "audio":
            return "serving_default", self._clips(inputs)
        if isinstance(inputs, np.ndarray) and inputs.dtype != object:
            return "predict_pixels", _as_pixels(inputs)
        if isinstance(inputs, (str, bytes, os.PathLike)) or not all(
                isinstance(x, (str, bytes, os.PathLike)) for x in inputs):
            raise ExportError(
                "An image model predicts from a numpy array (N, H, W, 3) of pixels 0..255 or a list of "
                f"image file paths or encoded bytes. Received: {type(inputs).__name__} {str(inputs)[:80]!r}"
            )
        return "serving_default", np.array([_read_bytes(x) for x in inputs], dtype=object)


    def _clips(self, inputs):
        """Sound files or waveforms as one float32 batch `(N, longest)` at the model's rate (the model cuts/pads)."""
        if isinstance(inputs, (str, bytes, os.PathLike)) or (isinstance(inputs, np.ndarray) and inputs.ndim != 2):
            raise ExportError("An audio model predicts from a list of sound file paths or bytes, a list of waveforms "
                              f"(samples,) or (samples, channels) at {self.sample_rate} Hz, or an array (N, samples). "
                              f"Received: {type(inputs).__name__} {str(inputs)[:80]!r}")
        clips = []
        for i, item in enumerate(inputs):
            try:
                if isinstance(item, (str, bytes, os.PathLike)):
                    waveform, rate = audio.decode(_read_bytes(item))
                else:
                    waveform, rate = audio.as_float(item), self.sample_rate
            except audio.AudioError as error:
                where = str(item) if isinstance(item, (str, os.PathLike)) else f"input {i}"
                raise ExportError(f"{where}: {error}") from None
            clips.append(audio.to_mono(waveform, rate, self.sample_rate))
        longest = max((len(clip) for clip in clips), default=0)
        return np.stack([np.pad(clip, (0, longest - len(clip))) for clip in clips]) if clips else np.zeros((0, 0))

def _as_pixels(images):
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ExportError(f"Images must be an array (N, H, W, 3). Received shape {images.shape}.")
    if images.dtype == np.uint8:
        return images
    if images.size and (images.min() < 0 or images.max() > 255 or not np.all(np.mod(images, 1) == 0)):
        raise ExportError(
            "Images must hold whole-number pixels 0..255 (the SavedModel takes uint8). Received "
            f"{images.dtype} values in [{images.min()}, {images.max()}]."
        )
    return images.astype(np.uint8)


def _read_bytes(image):
    if isinstance(image, bytes):
        return image
    with open(image, "rb") as file:
        return file.read()


def load(path, class_names=None):
    """Loads an exported classifier as a `Predictor`: a `.keras` file, an export folder, a SavedModel or a `.tflite`.

    An export folder is read through its `model.keras` when the newest
    export wrote one, else through its newest SavedModel version, else
    through its `model.tflite`. A `.keras` file takes its class names from a
    `labels.txt` beside it (else "0", "1", ...); a version folder from its
    own `assets.extra/labels.txt`; a `.tflite` file from its embedded
    metadata, which also holds what runs outside the file: the resize
    settings of an image model, the tokenizer of a text model (see
    `kerasft.litert.LiteRTModel`).

    What it reads is checked first against the sizes and SHA-256 digests the
    export recorded (a version's `assets.extra/checksums.json`, the card's
    `files`) and a `.keras` file against its own zip checksums: a truncated
    or altered file raises `ExportError` naming it, and is never served.

    A classifier in memory works too: `kft.load(model, class_names)` gives it
    the Predictor's inputs (a list of strings for a text model, where Keras'
    `model.predict` refuses a list) and its class names.

    Args:
        path: str, os.PathLike or keras.Model. A `.keras` file, an export
            folder written by `export`, one SavedModel version folder, a
            `.tflite` file written by `export(..., formats=("litert",))`, or
            a classifier in memory.
        class_names: list of str or None. For a model in memory: its class
            names (default "0", "1", ...). Files carry their own.

    Returns:
        A `Predictor`.

    Example:
    >>> predictor = kft.load("saved_models/bbc_news")
    >>> labels, scores = predictor.predict_labels(["Shares fell after the bank's results."])
    >>> kft.load(model, data.class_names).predict_labels(["The striker scored twice."])
    """
    if isinstance(path, keras.Model):
        return _model_predictor(path, class_names, source=f"<in-memory model {path.name!r}>")
    if class_names is not None:
        raise ExportError("class_names is for a model in memory; a file carries its own (labels.txt, its card "
                          f"or metadata). Received: path={os.fspath(path)!r}, class_names={class_names!r}")
    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith(".keras"):
        return _keras_predictor(path)
    if os.path.isfile(path) and path.endswith(".tflite"):
        return _litert_predictor(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return _saved_model_predictor(path)
    wrote = _newest_formats(path)
    if os.path.isfile(os.path.join(path, KERAS_FILE)) and "keras" in wrote:
        return _keras_predictor(os.path.join(path, KERAS_FILE))
    found = versions(path)
    tflite = os.path.join(path, litert.filename("float32"))
    if found and ("saved_model" in wrote or not os.path.isfile(tflite)):
        return _saved_model_predictor(os.path.join(path, str(found[-1])))
    if os.path.isfile(tflite):
        return _litert_predictor(tflite)
    raise ExportError(
        f"Nothing to load at {path!r}. Expected a .keras or .tflite file, an export folder (with {KERAS_FILE}, "
        "numbered SavedModel versions or model.tflite) or a SavedModel folder (with saved_model.pb)."
    )


def _newest_formats(folder):
    """The formats the newest export wrote (its card), so older files it left behind are passed over."""
    card = _card(folder)
    return card["export"]["formats"] if card else FORMATS


def _card(folder):
    """The model card in an export folder, or None."""
    return _optional_json(os.path.join(folder, CARD_FILE), folder)


def _optional_json(path, refused_as):
    """A JSON file's content, None without the file; a corrupt one is refused naming `refused_as`."""
    if not os.path.isfile(path):
        return None
    try:
        return paths.read_json(path)
    except paths.CorruptFileError as error:
        raise _refused(error, refused_as) from None


def _refused(error, what):
    return ExportError(f"{error} Refusing to load {what}: export the model again, or load another version.")


def _check_recorded(folder, names):
    """Checks the files `names` of an export folder against the sizes and digests its card records (when it does)."""
    recorded = (_card(folder) or {}).get("files", {})
    try:
        paths.check_checksums(folder, {name: recorded[name] for name in names if name in recorded})
    except paths.CorruptFileError as error:
        raise _refused(error, folder) from None


def _keras_predictor(filename):
    import keras_hub  # noqa: F401  registers the KerasHub layers a text model holds

    try:  # a .keras file is a zip archive: every member carries its CRC-32
        with zipfile.ZipFile(filename) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise _refused(paths.CorruptFileError(f"{filename} is not a whole .keras file ({error}).", filename),
                       filename) from None
    if damaged:
        raise _refused(paths.CorruptFileError(f"{filename} is corrupt: its member {damaged!r} fails its CRC-32 "
                                              "check.", filename), filename)
    _check_recorded(os.path.dirname(filename), [os.path.basename(filename), LABELS_FILE, LABEL_MAP_FILE])
    model = keras.models.load_model(filename, compile=False)
    folder = os.path.dirname(filename)
    # A multi-task export's labels.json maps every target to its classes (its labels.txt: the first target's).
    labels = (_optional_json(os.path.join(folder, LABEL_MAP_FILE), filename)
              or _read_labels(os.path.join(folder, LABELS_FILE)))
    return _model_predictor(model, labels, filename)


def _model_predictor(model, class_names, source):
    modality, task, num_outputs = describe(model)
    class_names = check_class_names(class_names, None, task, num_outputs)
    return Predictor(model, serving_endpoints(model, class_names, task), class_names, modality, source,
                     sample_rate=audio.sample_rate_of(model)[0] if modality == "audio" else None)


def _saved_model_predictor(folder):
    import tensorflow_text  # noqa: F401  registers the ops of a raw-text SavedModel

    recorded = os.path.join(folder, EXTRA_DIR, CHECKSUMS_FILE)
    if os.path.isfile(recorded):  # versions kerasft wrote record every file; older ones are read unchecked
        try:
            paths.check_checksums(folder, paths.read_json(recorded))
        except paths.CorruptFileError as error:
            raise _refused(error, folder) from None
    loaded = tf.saved_model.load(folder)
    signatures = dict(loaded.signatures)
    outputs = getattr(signatures.get("serving_default"), "structured_outputs", {})
    targets = [key.removesuffix("_probabilities") for key in outputs if key.endswith("_probabilities")]
    if "probabilities" not in outputs and not targets:
        raise ExportError(
            f"{folder!r} is not a kerasft export: expected a serving_default signature with a 'probabilities' "
            "output (or '<target>_probabilities' per target). Received signatures: "
            f"{ {n: list(f.structured_outputs) for n, f in signatures.items()} }"
        )
    endpoints = {}
    for name, signature in signatures.items():
        (input_name,) = signature.structured_input_signature[1]
        endpoints[name] = lambda tensor, signature=signature, key=input_name: signature(**{key: tensor})
    (input_name,) = signatures["serving_default"].structured_input_signature[1]
    modality = {"text": "text", "audio": "audio"}.get(input_name, "image")
    if targets:  # the targets in the model's order, as its labels.json lists them
        label_map = os.path.join(folder, EXTRA_DIR, LABEL_MAP_FILE)
        class_names = _optional_json(label_map, label_map) or {
            target: [str(i) for i in range(outputs[f"{target}_probabilities"].shape[-1])] for target in targets}
    else:
        class_names = _read_labels(os.path.join(folder, EXTRA_DIR, LABELS_FILE)) or [
            str(i) for i in range(outputs["probabilities"].shape[-1])]
    sample_rate = None
    if modality == "audio":
        with open(os.path.join(folder, EXTRA_DIR, CARD_FILE), encoding="utf-8") as file:
            sample_rate = json.load(file)["model"]["sample_rate"]
    return Predictor(loaded, endpoints, class_names, modality, folder, sample_rate=sample_rate)


def _litert_predictor(filename):
    _check_recorded(os.path.dirname(filename), [os.path.basename(filename)])
    runner = litert.LiteRTModel(filename)

    def outputs(probabilities):
        return serving_outputs(probabilities, runner.class_names, runner.task)

    if runner.modality == "text":
        endpoints = {"serving_default": lambda text: outputs(runner.predict(list(text.numpy())))}
    else:
        def decode(image_bytes):
            return [tf.io.decode_image(data, channels=3, expand_animations=False) for data in image_bytes]

        endpoints = {"serving_default": lambda image_bytes: outputs(runner.predict(decode(image_bytes))),
                     "predict_pixels": lambda images: outputs(runner.predict(images.numpy()))}
    return Predictor(runner, endpoints, runner.class_names, runner.modality, filename)


def _read_labels(filename):
    if not os.path.isfile(filename):
        return None
    with open(filename, encoding="utf-8") as file:
        return file.read().splitlines()
