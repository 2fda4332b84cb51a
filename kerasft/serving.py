"""What a served classifier answers: its signatures as `tf.function`s over raw input, and the names of its outputs.

The same functions go into every SavedModel `kft.export` writes and run in a
`Predictor` over a `.keras` file, so both give the same outputs. Each returns
`probabilities` float32[None, C], `label` string[None] and `score`
float32[None] (regression: `probabilities` holds the value `[None, 1]`,
`score` the value, `label` the value as text). A multi-task model returns
those three per target, prefixed by its name: `<target>_probabilities`,
`<target>_label`, `<target>_score`.
"""

import keras
import tensorflow as tf

from kerasft import audio, heads, keras_internals, models, tokenizing


class ExportError(ValueError):
    """An argument to `export` or `load`, or the folder it points at, is wrong."""


def describe(model):
    """Returns `(modality, task, number of outputs)` of a classifier; a multi-task model's
    `(modality, {target: task}, {target: number of outputs})`."""
    tasks = _tasks(model) if isinstance(model, keras.Model) else None
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or (len(model.outputs) != 1 and not tasks):
        raise ExportError(
            "export takes a keras.Model with one raw input and one output (a kerasft classifier or "
            f"ensemble), or a kerasft multi-task classifier. Received: {type(model).__name__} with inputs "
            f"{getattr(model, 'inputs', None)} and outputs {getattr(model, 'outputs', None)}."
        )
    try:
        modality = models.modality_of(model)
    except ValueError as error:
        raise ExportError(f"export takes a model of raw input. {error}") from None
    if tasks:
        return modality, tasks, {name: output.shape[-1] for name, output in model.output.items()}
    return modality, _task(model), model.outputs[0].shape[-1]


def _tasks(model):
    try:
        return heads.tasks_of(model)
    except ValueError as error:
        raise ExportError(str(error)) from None


def _task(model):
    try:
        return heads.task_of(model)
    except ValueError as error:
        raise ExportError(str(error)) from None


def check_class_names(class_names, data, task, num_outputs):
    """Returns the class names of a classifier's outputs: given, from `data`, or defaults; or raises.

    Args:
        class_names: list of str, dict or None. A multi-task model's: `{target: names}` (targets left out
            take the data's or the defaults).
        data: TaskData or None. Gives the names left out.
        task: str or dict. The model's task, or `{target: task}` (see `describe`).
        num_outputs: int or dict. Outputs, or `{target: outputs}`.
    """
    if isinstance(task, dict):
        if class_names is not None and (not isinstance(class_names, dict) or set(class_names) - set(task)):
            raise ExportError(f"class_names of a multi-task model maps some of its targets {list(task)} to their "
                              f"class names. Received: class_names={class_names!r}")
        targets = getattr(data, "targets", None) or {}
        return {name: check_class_names((class_names or {}).get(name) or (
                    list(targets[name].class_names) if name in targets else None), None, task[name],
                    num_outputs[name]) for name in task}
    if class_names is None and getattr(data, "targets", None):
        raise ExportError(f"The model has one target but the data ({data.name}) has the targets {list(data.targets)}: "
                          "pass data.for_target(<the model's target>), or class_names.")
    if class_names is None:
        class_names = getattr(data, "class_names", None) or (
            ["value"] if task == "regression" else [str(i) for i in range(num_outputs)])
    class_names = list(class_names)
    if len(class_names) != num_outputs:
        raise ExportError(
            f"class_names must name each of the model's {num_outputs} outputs"
            + (" (regression: one name for the value)" if task == "regression" else "")
            + f". Received {len(class_names)}: {class_names}"
        )
    bad = [name for name in class_names if not isinstance(name, str) or not name or "\n" in name or "\r" in name]
    if bad or len(set(class_names)) != len(class_names):
        raise ExportError(
            "class_names must be distinct, non-empty strings without line breaks (labels.txt holds one per "
            f"line). Received: {class_names}"
        )
    return class_names


def serving_endpoints(model, class_names, task):
    """The serving signatures as `tf.function`s over raw input, by name.

    Text `serving_default(text)`; images `serving_default(image_bytes)` and
    `predict_pixels(images)`; audio `serving_default(audio)` and
    `wav_bytes(wav_bytes)`; each returns `serving_outputs`.

    Args:
        model: keras.Model. A classifier, ensemble or multi-task classifier on raw input.
        class_names: list of str, or a multi-task model's `{target: names}`.
        task: str, or a multi-task model's `{target: task}`.
    """

    def outputs(probabilities):
        return serving_outputs(probabilities, class_names, task)

    modality = models.modality_of(model)
    if modality == "text":
        forward = _text_forward(model)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve_text(text):
            return outputs(forward(text))

        return {"serving_default": serve_text}
    if modality == "audio":
        return _audio_endpoints(model, outputs)

    resize = resize_layer(model)
    decoded = tf.TensorSpec([resize.height, resize.width, 3], tf.float32)

    def decode(image_bytes):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        # The model's own Resizing layer: exactly what the model does to an image of this size.
        return resize(tf.cast(image, tf.float32)[tf.newaxis])[0]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_image_bytes(image_bytes):
        images = tf.map_fn(decode, image_bytes, fn_output_signature=decoded)
        return outputs(model(images, training=False))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def predict_pixels(images):
        return outputs(model(tf.cast(images, tf.float32), training=False))

    return {"serving_default": serve_image_bytes, "predict_pixels": predict_pixels}


def _text_forward(model):
    """Raw strings -> outputs: a classifier tokenizes only the head of long texts (same ids, `kerasft.tokenizing`)."""
    if not models.is_classifier(model):
        return lambda text: model(text, training=False)
    preprocess = tokenizing.head_preprocessor(model.get_layer("preprocessor"))
    network = model.get_layer("network")
    return lambda text: network(preprocess(text), training=False)


def _audio_endpoints(model, outputs):
    rate, samples = audio.sample_rate_of(model)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="audio")])
    def serve_audio(waveforms):
        return outputs(model(audio.fit_length(waveforms, samples), training=False))

    def decode(wav):
        waveform, file_rate = tf.audio.decode_wav(wav)
        mono = tf.reduce_mean(waveform, axis=1)
        mono = tf.cond(tf.equal(file_rate, rate), lambda: mono, lambda: audio.resample(mono, file_rate, rate))
        return audio.fit_length(mono[tf.newaxis], samples)[0]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav_bytes")])
    def serve_wav_bytes(wav_bytes):
        clips = tf.map_fn(decode, wav_bytes, fn_output_signature=tf.TensorSpec([samples], tf.float32))
        return outputs(model(clips, training=False))

    return {"serving_default": serve_audio, "wav_bytes": serve_wav_bytes}


def serving_outputs(probabilities, class_names, task):
    """`{"probabilities", "label", "score"}` from a batch of model outputs; for a multi-task model (a dict of
    outputs, `class_names` and `task` dicts per target) those three per target, as `<target>_probabilities`..."""
    if isinstance(task, dict):
        return {f"{target}_{key}": value for target in task
                for key, value in serving_outputs(probabilities[target], class_names[target], task[target]).items()}
    probabilities = tf.cast(probabilities, tf.float32)
    if task == "regression":
        score = probabilities[:, 0]
        return {"probabilities": probabilities, "label": tf.strings.as_string(score), "score": score}
    label = tf.gather(tf.constant(class_names), tf.argmax(probabilities, axis=-1))
    return {"probabilities": probabilities, "label": label, "score": tf.reduce_max(probabilities, axis=-1)}


def resize_layer(model):
    """The model's Resizing layer named "resize"; the largest one when an ensemble has several sizes."""
    layers = [layer for layer in keras_internals.flatten_layers(model)
              if isinstance(layer, keras.layers.Resizing) and layer.name == "resize"]
    if not layers:
        raise ExportError(
            f"Cannot tell which size image bytes should be decoded to: model {model.name!r} has no Resizing "
            "layer named 'resize' (kerasft image classifiers have one in their 'preprocessor')."
        )
    return max(layers, key=lambda layer: layer.height * layer.width)
