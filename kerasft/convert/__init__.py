"""Reads foreign pretrained weights safely and converts them to native KerasHub presets or Keras weights.

A PyTorch weights file is a pickle, and unpickling can run any code the file
names. `read_torch_state_dict` therefore never calls `pickle.load`: its
unpickler resolves only the handful of names a state dict needs (to stand-ins
defined in `torch_pickle`, not to torch) and refuses every other name before it can run.
`read_onnx_bert` reads an ONNX file's weights with the `onnx` package's
protobuf parser alone: nothing in the graph is run.

Each offline asset is converted once into kerasft's user cache, atomically,
and the cached result is returned on later calls:
`efficientnet_lite_preset("lite0" | "lite2")` and `minilm_l3_preset()` give
KerasHub preset folders, `mobilenet_v2_torchvision_weights()` a Keras weights
file for `torchvision_mobilenet_v2`.

```
torch_pickle       read_torch_state_dict: the restricted unpickler for `.pth` files (zip and legacy formats)
onnx_bert          read_onnx_bert: a BERT's weights from an ONNX graph's initializers; bert_weight_shapes
tensor_names       check_tensor_names: exactly the tensors a network needs, or an error naming the first odd one
assets             ASSETS, asset_path, asset_installed; an asset converted once, atomically, into the user cache
efficientnet_lite  efficientnet_lite_preset: efficientnet-pytorch weights -> timm names -> KerasHub preset
minilm_l3          minilm_l3_preset: ONNX BERT -> Hugging Face folder (write_hf_bert) -> KerasHub preset
mobilenet_v2       torchvision_mobilenet_v2 (stock Keras layers) and mobilenet_v2_torchvision_weights
```
"""

from kerasft.convert.assets import ASSETS, asset_installed, asset_path
from kerasft.convert.efficientnet_lite import (
    EFFICIENTNET_LITE_BATCH_NORM_EPSILON,
    EFFICIENTNET_LITE_IMAGE_SIZES,
    efficientnet_lite_preset,
    efficientnet_pytorch_to_timm,
    efficientnet_stages,
)
from kerasft.convert.minilm_l3 import MINILM_L3_CONFIG, minilm_l3_preset, write_hf_bert
from kerasft.convert.mobilenet_v2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_BATCH_NORM_EPSILON,
    mobilenet_v2_torchvision_weights,
    torchvision_mobilenet_v2,
    torchvision_mobilenet_v2_to_keras,
)
from kerasft.convert.onnx_bert import SENTENCE_TRANSFORMERS_PREFIX, bert_weight_shapes, read_onnx_bert
from kerasft.convert.torch_pickle import UnsafePickleError, read_torch_state_dict

__all__ = [
    "ASSETS", "EFFICIENTNET_LITE_BATCH_NORM_EPSILON", "EFFICIENTNET_LITE_IMAGE_SIZES", "IMAGENET_MEAN", "IMAGENET_STD",
    "MINILM_L3_CONFIG", "SENTENCE_TRANSFORMERS_PREFIX", "TORCHVISION_BATCH_NORM_EPSILON", "UnsafePickleError",
    "asset_installed", "asset_path", "bert_weight_shapes", "efficientnet_lite_preset", "efficientnet_pytorch_to_timm",
    "efficientnet_stages", "minilm_l3_preset", "mobilenet_v2_torchvision_weights", "read_onnx_bert",
    "read_torch_state_dict", "torchvision_mobilenet_v2", "torchvision_mobilenet_v2_to_keras", "write_hf_bert",
]
