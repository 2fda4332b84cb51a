"""Reads PyTorch `torch.save` state dicts into numpy arrays, without torch and without running the file's code.

A PyTorch weights file is a pickle, and unpickling can run any code the file
names. `read_torch_state_dict` therefore never calls `pickle.load`: its
unpickler resolves only the handful of names a state dict needs (to stand-ins
defined here, not to torch) and refuses every other name before it can run.
"""

import collections
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

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
