"""Builds classifiers: raw input -> preprocessing -> backbone -> head -> probabilities, one `keras.Model`.

A kerasft classifier is a plain functional `keras.Model` made only of Keras
and KerasHub layers, so `keras.models.load_model` reads it back without
kerasft. Its structure is fixed and found by layer names:

```
model ("<backbone>_classifier")
  ├─ "preprocessor"  raw strings -> token ids  |  images of any size -> normalized pixels
  │                  |  waveforms -> log-mel spectrogram pixels -> normalized pixels (`kerasft.audio`)
  └─ "network"       preprocessed input -> outputs
        ├─ "backbone"  (called with training=False: BatchNorm in inference mode, always)
        ├─ "pooling"   masked mean over tokens  |  global average over the feature map  |  Identity (a vector)
        └─ "head"      features -> probabilities (see `kerasft.heads`)
```
A multi-task classifier (`build_classifier(data=multi_task_data)`) has the
same parts; its "head" holds one "<target>_head" per target
(`heads.build_multi_head`), so it outputs a dict `{target: probabilities}`:
one backbone pass serves every target.
Training maps `preprocessor` over `tf.data` once and fits `network`;
`predict`, `evaluate` and exports use the whole model on raw input (`evaluate`
and the text serving signature tokenize long texts from their head, with the
same ids: `kerasft.tokenizing`). A classic TF-IDF classifier (`"tfidf"`,
`kerasft.tfidf`) has the same parts: its preprocessor outputs TF-IDF vectors,
its backbone normalizes them.
"""

import contextlib
import dataclasses
import random
import re

import keras

from kerasft import audio, backbones, distribute, heads, keras_internals


class ClassifierError(ValueError):
    """An argument to `build_classifier` or a trainable setting is wrong."""


def build_classifier(backbone, num_classes=None, task="multiclass", head=None, trainable="frozen",
                     pretrained=True, image_size=None, sequence_length=None, data=None, strategy=None,
                     precision="auto", seed=None, sample_rate=None, duration=None):
    """Builds a classifier that takes raw input and outputs one probability per class.

    Args:
        backbone: str or BackboneSpec. A name from `kft.backbones.names()`, a
            local KerasHub/Hugging Face folder or a KerasHub preset name.
        num_classes: int. Number of classes (1 output for regression); taken
            from `data` when omitted.
        task: str. `"multiclass"`, `"binary"`, `"multilabel"` or
            `"regression"`; taken from `data` when given.
        head: `kft.Head`, dict or None. The head on the pooled features
            (default: a linear head with dropout 0.1); multi-task data: one
            for every target, or a dict `{target: Head}` (targets left out get
            the default).
        trainable: str. `"frozen"` (feature extraction), `"top:N"` (the top
            N blocks of the backbone train; `fine_tune` warms the head up
            first) or `"all"`. BatchNorm layers stay frozen in every mode.
            `"frozen"` only for `"tfidf"`, which has no blocks.
        pretrained: bool. Load the pretrained weights (False: random init);
            an adapted backbone ("tfidf") is always computed from `data`.
        image_size: tuple of int. `(height, width)` the backbone sees (images
            of any size, or spectrograms, are resized to it); default: the
            backbone's own, or `kerasft.audio.IMAGE_SIZE` for audio.
        sequence_length: int. Tokens per text; default: the backbone's own.
        data: TaskData or None. Fills in `num_classes` and `task` and checks
            them against the data. Required by an adapted backbone
            (`"tfidf"`), whose vocabulary and idf come from its training split.
            Multi-task data (`data.targets`) makes a multi-task model: one named
            output per target, each from its own head on the shared backbone.
        strategy: tf.distribute.Strategy or None. Variables are created under
            its scope, so `fine_tune(..., strategy=strategy)` can train them
            (see `kft.distribute.strategy`).
        precision: str. `"auto"` (float32 on CPU, mixed_float16 on GPU,
            mixed_bfloat16 on TPU), `"float32"`, `"mixed_float16"` or
            `"mixed_bfloat16"`: the dtype policy of the layers, set only while
            they are built. The output layer computes in float32 always.
        seed: int or None. Seeds the initialization of the head (and of the
            backbone when `pretrained=False`): the same seed builds the same
            weights. None leaves Keras' global seed as it is.
        sample_rate: int or None. Makes an AUDIO classifier on an image
            backbone: the waveforms' sample rate in Hz (taken from audio
            `data` when omitted). See `kerasft.audio`.
        duration: float or None. Audio: seconds per clip (default: the
            data's, else `kerasft.audio.DURATION`).

    Returns:
        A `keras.Model` from raw input (strings, images as uint8/float
        pixels 0..255, or mono float32 waveforms `(N, clip_samples)`) to
        outputs (a dict `{target: outputs}` for multi-task data). It is not
        compiled, so its `.keras` file carries no optimizer: train it with
        `kft.fine_tune`, or compile it yourself (`heads.loss_and_metrics(task)`
        fits its output) to `fit` it on raw input.

    Example:
    >>> model = kft.build_classifier("minilm_l6", num_classes=5,
    ...                              head=kft.Head(units=(256,), dropout=0.2))
    >>> words = kft.build_classifier("efficientnet_lite0", data=kft.samples.spoken_words())
    >>> classic = kft.build_classifier("tfidf", data=kft.samples.bbc_news())  # adapted on the training split
    >>> both = kft.build_classifier("efficientnet_lite0", data=kft.samples.spoken_words(
    ...     targets=("word", "speaker_sex")))  # outputs {"word": ..., "speaker_sex": ...}
    """
    spec = backbones.get(backbone)
    if spec.adapt is not None:
        _check_adapted(spec, data, trainable, sequence_length)
    targets = _resolve_targets(num_classes, data, spec)
    if targets is None:
        num_outputs, task = _resolve_task(num_classes, task, data, spec)
        head = _single_head(head)

        def make_head(feature_dim):
            return head.build(feature_dim, num_outputs, task, seed=seed)
    else:
        per_target = _heads_per_target(head, targets)

        def make_head(feature_dim):
            return heads.build_multi_head(per_target, feature_dim, targets, seed=seed)
    sound = _resolve_audio(sample_rate, duration, data, spec)
    parse_trainable(trainable)  # reject a malformed setting before any weights load
    with distribute.precision_scope(precision, strategy), distribute.training_scope(strategy), _seeded(seed):
        model = _build(spec, make_head, image_size, sequence_length, pretrained, sound, data)
    set_trainable(model, trainable, block_pattern=spec.block_pattern)
    if targets is not None:
        model.class_names = {name: tuple(target.class_names) for name, target in data.targets.items()}
    elif data is not None and task != "regression":
        model.class_names = tuple(data.class_names)  # see class_names_of
    return model


def _single_head(head):
    if isinstance(head, dict):
        raise ClassifierError(f"A dict of heads is for multi-task data (one head per target); this model has one "
                              f"target. Pass one kft.Head. Received: head={head!r}")
    return head or heads.Head()


def _heads_per_target(head, targets):
    """`{target: Head}`: one `Head` for every target, or a dict of them (targets left out get the default)."""
    if not isinstance(head, dict):
        return {name: head or heads.Head() for name in targets}
    unknown = [name for name in head if name not in targets]
    if unknown:
        raise ClassifierError(f"head names targets the data does not have: {unknown}. Expected some of "
                              f"{list(targets)}. Received: head={head!r}")
    return {name: head.get(name) or heads.Head() for name in targets}


@contextlib.contextmanager
def _seeded(seed):
    """Seeds the layers built inside (Keras draws each unseeded initializer's and dropout's seed from Python's
    `random`), then puts Python's random state back: the caller's random streams are left as they were."""
    if seed is None:
        yield
        return
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _build(spec, make_head, image_size, sequence_length, pretrained, sound, data):
    if spec.adapt is not None:
        preprocessor, backbone_model = spec.adapt(data.inputs("train"))
        raw = keras.Input(shape=(), dtype="string", name="text")
    elif spec.modality == "text":
        sequence_length = sequence_length or spec.sequence_length
        if not isinstance(sequence_length, int) or sequence_length < 8:
            raise ClassifierError(f"sequence_length must be an integer >= 8. Received: {sequence_length!r}")
        preprocessor = spec.text_preprocessor(sequence_length)
        keras_internals.carry_vocabulary(preprocessor)  # a .keras file of it reloads without kerasft
        raw = keras.Input(shape=(), dtype="string", name="text")
        backbone_model = spec.build(pretrained, None)
    elif sound:
        image_size = _check_image_size(image_size or audio.IMAGE_SIZE, spec)
        waveform, pixels = audio.front_end(*sound)
        preprocessor = keras.Model(waveform, _image_preprocessor(spec, image_size)(pixels), name="preprocessor")
        raw = keras.Input(shape=waveform.shape[1:], dtype="float32", name="audio")
        backbone_model = spec.build(pretrained, image_size)
    else:
        image_size = _check_image_size(image_size or spec.image_size, spec)
        preprocessor = _image_preprocessor(spec, image_size)
        raw = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
        backbone_model = spec.build(pretrained, image_size)

    network = _network(backbone_model, make_head)
    return keras.Model(raw, network(preprocessor(raw)), name=f"{backbones.short_name(spec.name)}_classifier")


def _check_adapted(spec, data, trainable, sequence_length):
    """An adapted backbone needs training data, reads whole texts and has no blocks to unfreeze."""
    if data is None:
        raise ClassifierError(f"Backbone {spec.name!r} is adapted on the training texts (its vocabulary and idf "
                              f"come from them): pass data= (a kft TaskData). Received: data=None")
    if trainable != "frozen":
        raise ClassifierError(f"Backbone {spec.name!r} is not a network: it has no blocks to unfreeze and no "
                              f"weights to train, so 'frozen' is its only trainable setting. Received: "
                              f"trainable={trainable!r}")
    if sequence_length is not None:
        raise ClassifierError(f"Backbone {spec.name!r} reads whole texts; sequence_length does not apply. "
                              f"Received: sequence_length={sequence_length!r}")


def _resolve_audio(sample_rate, duration, data, spec):
    """`(sample_rate, duration)` for an audio classifier, or None for text and images."""
    if data is not None and data.modality == "audio":
        if sample_rate not in (None, data.sample_rate) or duration not in (None, data.duration):
            raise ClassifierError(
                f"sample_rate={sample_rate!r}, duration={duration!r} disagree with the data's clips: "
                f"{data.sample_rate} Hz, {data.duration:g} s. Leave them out to take the data's.")
        sample_rate, duration = data.sample_rate, data.duration
    if sample_rate is None:
        if duration is not None:
            raise ClassifierError("duration applies to audio classifiers: pass sample_rate= too (or audio data=).")
        return None
    if not backbones.takes(spec, "audio"):
        raise ClassifierError(f"Audio is heard through image backbones (kerasft.audio); {spec.name!r} takes "
                              f"{spec.modality}. Pick one of kft.backbones.names('audio').")
    try:
        return audio.check_settings(sample_rate, audio.DURATION if duration is None else duration)
    except audio.AudioError as error:
        raise ClassifierError(str(error)) from None


def _check_modality(spec, data):
    if not backbones.takes(spec, data.modality):
        raise ClassifierError(
            f"Backbone {spec.name!r} takes {spec.modality} input but the data is {data.modality} "
            f"({data.name}). Pick a backbone from kft.backbones.names({data.modality!r})."
        )


def _resolve_targets(num_classes, data, spec):
    """`{target: (task, outputs)}` of multi-task data, in order; None for data with one target (or no data)."""
    if getattr(data, "targets", None) is None:
        return None
    _check_modality(spec, data)
    if num_classes is not None:
        raise ClassifierError(f"num_classes is for data with one target; each of the targets {list(data.targets)} "
                              f"of {data.name} has its own classes. Received: num_classes={num_classes!r}")
    return {name: (target.task, target.num_outputs) for name, target in data.targets.items()}


def _resolve_task(num_classes, task, data, spec):
    if data is not None:
        _check_modality(spec, data)
        if num_classes is not None and num_classes != data.num_classes:
            raise ClassifierError(
                f"num_classes={num_classes} disagrees with the data, which has {data.num_classes} "
                f"classes: {data.class_names}."
            )
        num_classes, task = data.num_classes, data.task
    if task not in heads.TASKS:
        raise ClassifierError(f"Unknown task {task!r}; expected one of {heads.TASKS}.")
    if task == "regression":
        return 1, task
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ClassifierError(
            f"A {task} classifier needs num_classes >= 2 (or data=). Received: num_classes={num_classes!r}"
        )
    if task == "binary" and num_classes != 2:
        raise ClassifierError(f"task='binary' needs num_classes=2. Received: num_classes={num_classes}")
    return num_classes, task


def _check_image_size(image_size, spec):
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(not isinstance(s, int) for s in size):
        raise ClassifierError(f"image_size must be (height, width) integers. Received: {image_size!r}")
    if min(size) < spec.min_image_size:
        raise ClassifierError(
            f"Backbone {spec.name!r} needs images of at least {spec.min_image_size}x"
            f"{spec.min_image_size} pixels. Received: image_size={size}. Pass a larger image_size; "
            "smaller source images are upscaled to it."
        )
    return size


def modality_of(model):
    """`"text"`, `"image"` or `"audio"`: what a classifier or ensemble takes, read from its raw input.

    Raises:
        ValueError: the model does not take raw input of any of these kinds.
    """
    inputs = model.inputs[0] if isinstance(model, keras.Model) and len(model.inputs) == 1 else None
    if inputs is not None and inputs.dtype == "string" and len(inputs.shape) == 1:
        return "text"
    if inputs is not None and len(inputs.shape) == 4 and inputs.shape[-1] == 3:
        return "image"
    if inputs is not None and len(inputs.shape) == 2 and inputs.dtype.startswith("float") and inputs.shape[-1]:
        return "audio"
    raise ValueError(
        "Expected a model with one raw input: strings (None,), images (None, None, None, 3) or waveforms "
        f"(None, samples). Received {type(model).__name__} with inputs {getattr(model, 'inputs', None)}.")


def backbones_of(model):
    """The backbones inside a classifier or a mean/weighted ensemble, each once, in member order."""
    return [layer for layer in keras_internals.flatten_layers(model) if layer.name == "backbone"]


def check_clips(model, data):
    """An audio model takes clips of the data's sample rate and length, or this says which differ."""
    if getattr(data, "modality", None) != "audio" or modality_of(model) != "audio":
        return
    rate, samples = audio.sample_rate_of(model)
    if (rate, samples) != (data.sample_rate, audio.clip_samples(data.sample_rate, data.duration)):
        raise ClassifierError(f"The model takes clips of {samples} samples at {rate} Hz but the data's are "
                              f"{data.duration:g} s at {data.sample_rate} Hz ({data.name}). Build it with "
                              "kft.build_classifier(..., data=data), or load the data with that rate and duration.")


def class_names_of(model):
    """The classes a classifier or ensemble predicts, in output order, or None when unknown.

    Known for models built in this process with `build_classifier(data=...)`
    (and ensembles or calibrated models of them); a model loaded from a file
    does not carry them (its export's `labels.txt` does). A multi-task model
    gives a dict `{target: class names}` (`()` for a regression target).
    """
    return getattr(model, "class_names", None)


def is_classifier(model):
    """True for a model with the classifier structure above ("preprocessor" then "network")."""
    return isinstance(model, keras.Model) and {"preprocessor", "network"} <= {layer.name for layer in model.layers}


def _image_preprocessor(spec, image_size):
    """Resize to the backbone's size, then normalize: pure Keras layers, saved with the model."""
    pixels = keras.Input(shape=(None, None, 3), dtype="float32", name="pixels")
    x = keras.layers.Resizing(*image_size, name="resize")(pixels)
    if spec.channel_order == "bgr":
        # A fixed 3x3 permutation (RGB -> BGR) as a frozen Dense: no Lambda, safe_mode-loadable.
        flip = keras.layers.Dense(3, use_bias=False, trainable=False, name="rgb_to_bgr")
        x = flip(x)
        flip.set_weights([keras.ops.convert_to_numpy(keras.ops.flip(keras.ops.eye(3), axis=0))])
    if spec.scale != 1.0 or spec.offset != 0.0:
        x = keras.layers.Rescaling(spec.scale, spec.offset, name="normalize")(x)
    return keras.Model(pixels, x, name="preprocessor")


def _network(backbone_model, make_head):
    """preprocessed input -> backbone -> pooling -> head (`make_head(feature size)` builds it).

    The backbone is called without a fixed `training` flag, so the flag of the call reaches it: frozen
    BatchNorm layers (`trainable=False`) run in inference mode whatever it is, and those of unfrozen blocks
    adapt in training when `set_trainable(..., batchnorm="train")` lets them.
    """
    inputs = backbone_model.input
    if isinstance(inputs, dict):
        inputs = {k: keras.Input(shape=v.shape[1:], dtype=v.dtype, name=k) for k, v in inputs.items()}
    else:
        inputs = keras.Input(shape=inputs.shape[1:], dtype=inputs.dtype, name="pixels")
    features = backbone_model(inputs)
    if isinstance(features, dict):
        features = features["sequence_output"]  # see used_output
    if len(features.shape) == 3:
        mask = inputs.get("padding_mask") if isinstance(inputs, dict) else None
        pooled = keras.layers.GlobalAveragePooling1D(name="pooling")(features, mask=mask)
    elif len(features.shape) == 2:  # already one vector per example (TF-IDF)
        pooled = keras.layers.Identity(name="pooling")(features)
    else:
        pooled = keras.layers.GlobalAveragePooling2D(name="pooling")(features)
    return keras.Model(inputs, make_head(pooled.shape[-1])(pooled), name="network")


# === Trainable settings ===

BATCHNORM_MODES = ("frozen", "train")


def parse_trainable(trainable):
    """Returns how many top blocks a trainable setting trains: 0 (`"frozen"`), N (`"top:N"`) or None (`"all"`).

    The one parser of trainable settings (and of the cuts of `kerasft.features`, which take the same values).

    Raises:
        ClassifierError: not `"frozen"`, `"top:N"` with N >= 1, or `"all"`.
    """
    if trainable == "frozen":
        return 0
    if trainable == "all":
        return None
    match = re.fullmatch(r"top:(\d+)", trainable) if isinstance(trainable, str) else None
    if not match or int(match.group(1)) < 1:
        raise ClassifierError(
            f'trainable must be "frozen", "top:N" with N >= 1, or "all". Received: {trainable!r}'
        )
    return int(match.group(1))


def check_batchnorm(batchnorm):
    """Raises unless `batchnorm` is one of `BATCHNORM_MODES`."""
    if batchnorm not in BATCHNORM_MODES:
        raise ClassifierError(f"batchnorm must be one of {BATCHNORM_MODES}: 'frozen' keeps every BatchNormalization "
                              "layer in inference mode with its pretrained statistics, 'train' lets those of unfrozen "
                              f"blocks adapt. Received: batchnorm={batchnorm!r}")
    return batchnorm


@dataclasses.dataclass(frozen=True)
class Description:
    """The parts of a kerasft classifier and what they are, read once (see `describe`).

    Attributes:
        preprocessor, network, backbone, pooling, head: keras.Layer. The parts named in the module docstring.
        spec: BackboneSpec or None. The registry entry the classifier was built from (None for a model whose
            backbone is not registered, e.g. loaded from disk after a session that registered it).
        block_pattern: str. The regex that finds its blocks (the spec's, else the first registered one that does).
        stem: list of keras.Layer. Backbone layers below the first block.
        blocks: list of (str, list of keras.Layer). The ordered blocks, bottom to top.
        modality: str. `"text"`, `"image"` or `"audio"`.
        task: str or None. Read from the output layer; None for a multi-task model.
        trainable: str. The current trainable setting (`"frozen"`, `"top:N"`, `"all"`).
        tasks: dict or None. A multi-task model's `{target: task}`, in output order (`heads.tasks_of`).
    """

    preprocessor: object
    network: object
    backbone: object
    pooling: object
    head: object
    spec: object
    block_pattern: str
    stem: list
    blocks: list
    modality: str
    task: str
    trainable: str
    tasks: dict = None


def describe(model):
    """Reads a classifier's parts, backbone spec, blocks, task and trainable setting, once.

    Args:
        model: keras.Model. A kerasft classifier (built or loaded from disk).

    Raises:
        ClassifierError: the model lacks the classifier structure.
    """
    if not is_classifier(model):
        raise ClassifierError("Expected a kerasft classifier (a keras.Model with 'preprocessor' and 'network' "
                              f"layers, from kft.build_classifier). Received: {type(model).__name__} "
                              f"{getattr(model, 'name', '')!r}")
    network = model.get_layer("network")
    backbone_model = network.get_layer("backbone")
    spec = backbones.find(model.name.removesuffix("_classifier"))
    if backbone_model.weights:
        pattern, (stem, found) = backbones.blocks_with_pattern(backbone_model, spec.block_pattern if spec else None)
    else:  # not a network (the classic TF-IDF member): no blocks, "frozen" is its only setting
        pattern, (stem, found) = None, (list(backbone_model.layers), [])
    tasks = heads.tasks_of(model)
    return Description(
        preprocessor=model.get_layer("preprocessor"), network=network, backbone=backbone_model,
        pooling=network.get_layer("pooling"), head=network.get_layer("head"), spec=spec, block_pattern=pattern,
        stem=stem, blocks=found, modality=modality_of(model), task=None if tasks else heads.task_of(model),
        trainable=_setting(backbone_model, stem, found), tasks=tasks)


def set_trainable(model, trainable, block_pattern=None, batchnorm="frozen"):
    """Freezes the backbone, or unfreezes its top N blocks, or all of it.

    BatchNormalization layers of frozen blocks always stay frozen, in inference
    mode with their pretrained statistics; those of unfrozen blocks follow `batchnorm`.

    Args:
        model: keras.Model. A kerasft classifier.
        trainable: str. `"frozen"`, `"top:N"` or `"all"`.
        block_pattern: str or None. The backbone spec's block regex (found
            from the layer names when None).
        batchnorm: str. `"frozen"`: every BatchNormalization layer keeps its
            statistics and scale/offset; `"train"`: those of unfrozen blocks update
            their statistics (in training) and learn their scale/offset.
    """
    top = parse_trainable(trainable)
    check_batchnorm(batchnorm)
    backbone_model = model.get_layer("network").get_layer("backbone")
    if top == 0:
        backbone_model.trainable = False
        return
    if not backbone_model.weights:
        raise ClassifierError(f"The backbone of {model.name!r} has no weights to train (a classic TF-IDF model is "
                              f"not a network): 'frozen' is its only trainable setting. Received: "
                              f"trainable={trainable!r}")
    _, (stem, found) = backbones.blocks_with_pattern(backbone_model, block_pattern)
    if top is not None and top > len(found):
        raise ClassifierError(
            f"trainable={trainable!r} asks for more blocks than backbone {model.name.removesuffix('_classifier')!r} "
            f"has: it has {len(found)} blocks ({found[0][0]} .. {found[-1][0]}). Use top:1 .. top:{len(found)} or "
            "'all'."
        )
    backbone_model.trainable = True
    unfrozen = {id(layer) for _, layers in (found if top is None else found[-top:]) for layer in layers}
    if top is None:
        unfrozen |= {id(layer) for layer in stem}
    unfrozen &= _layers_feeding(used_output(backbone_model))
    for layer in backbone_model.layers:
        layer.trainable = id(layer) in unfrozen
        for sub in keras_internals.flatten_layers(layer, include_self=True):
            if isinstance(sub, keras.layers.BatchNormalization):
                sub.trainable = layer.trainable and batchnorm == "train"


def used_output(backbone_model):
    """The backbone output the network pools (a KerasHub text backbone also has a pooled output)."""
    output = backbone_model.output
    return output["sequence_output"] if isinstance(output, dict) else output


def _layers_feeding(tensor):
    """ids of the layers a symbolic tensor depends on, so layers feeding only unused outputs stay frozen."""
    seen, stack = set(), [tensor]
    while stack:
        operation, node_index = keras_internals.producer(stack.pop())
        if id(operation) in seen:
            continue
        seen.add(id(operation))
        stack.extend(keras_internals.node_inputs(operation, node_index))
    return seen


def trainable_setting(model):
    """Reads back the trainable setting (`"frozen"`, `"top:N"` or `"all"`) from the layer flags."""
    return describe(model).trainable


def batchnorm_setting(model):
    """Reads back whether BatchNormalization layers of unfrozen blocks train: `"train"` or `"frozen"`."""
    return "train" if any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable_weights
                          for layer in keras_internals.flatten_layers(model)) else "frozen"


def _setting(backbone_model, stem, found):
    if not backbone_model.trainable or not backbone_model.trainable_weights:
        return "frozen"
    trained = [any(layer.trainable_weights for layer in layers) for _, layers in found]
    if all(trained) and any(layer.trainable_weights for layer in stem):
        return "all"
    top = 0
    for is_trained in reversed(trained):
        if not is_trained:
            break
        top += 1
    return f"top:{top}" if top else "frozen"
