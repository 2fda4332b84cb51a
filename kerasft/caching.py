"""Where kerasft keeps what it computes once: in memory within a budget, else on disk, checked on read.

Preprocessed inputs (`features.preprocess`) and a frozen bottom's outputs
(`features.FeatureCache`) are arrays with one row per example. They stay in
memory while they fit the memory budget (`memory_budget_bytes`); past it they
go to disk, written row by row (`ArrayWriter`) and read back a batch of rows
at a time (`row_dataset`), so a process holds a few batches whatever the
number of examples. A folder on disk:

```
<name>.partial/          while it is written, under the lock <name>.lock; renamed to <name>/ once complete
<name>/
  <split>.<array>.npy    one `.npy` file per array and split (labels too)
  key.json               what the arrays are (the writer's manifest) and each file's size and SHA-256
```
A folder is checked against `key.json` when it is opened (`open_arrays`): a
truncated or altered file raises `kerasft.paths.CorruptFileError` naming it,
and the cache that owns it is rebuilt.
"""

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import weakref
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasft import paths

MEMORY_BUDGET_ENV = "KERASFT_MEMORY_BUDGET_GB"
# The share of the machine's memory one cache may take when no budget is given.
DEFAULT_BUDGET_SHARE = 0.25
KEY_FILE = "key.json"


# === The memory budget ===


def machine_memory_bytes():
    """The memory this process may use: physical memory, or its cgroup's limit when that is lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def memory_budget_bytes(budget_gb=None):
    """The bytes one in-memory cache may take.

    Args:
        budget_gb: float or None. Gigabytes (2**30 bytes); None reads
            `$KERASFT_MEMORY_BUDGET_GB`, else takes a quarter of the machine's
            memory (`machine_memory_bytes`). 0 keeps nothing in memory.
    """
    value = budget_gb if budget_gb is not None else os.environ.get(MEMORY_BUDGET_ENV)
    if value is None or value == "":
        return int(machine_memory_bytes() * DEFAULT_BUDGET_SHARE)
    try:
        gigabytes = float(value)
    except (TypeError, ValueError):
        gigabytes = math.nan
    if not math.isfinite(gigabytes) or gigabytes < 0:
        source = "memory_budget" if budget_gb is not None else f"${MEMORY_BUDGET_ENV}"
        raise ValueError(f"{source} must be a number of gigabytes >= 0. Received: {value!r}")
    return int(gigabytes * 2**30)


# === Arrays written row by row ===


class ArrayWriter:
    """Arrays of one or more splits filled batch by batch: in memory, or in a folder on disk that appears whole.

    On disk each array is a `.npy` file written sequentially (never mapped
    into memory) while its SHA-256 is computed; `finish` records sizes and
    digests in `key.json` and renames `<folder>.partial` to `<folder>`. A
    full disk raises `kerasft.paths.DiskFullError` naming the folder and the
    bytes the arrays need, and removes what was written.

    Args:
        folder: Path or None. The final folder; None keeps the arrays in memory.
        manifest: dict. What the arrays are, stored in `key.json`.
        sizes: dict of str to int. Rows of each split.
        what: str. What is written, for messages (e.g. "the frozen feature cache").
        private: bool. The folder belongs to this process alone: its lock stays
            held after `finish` until `remove` (or the process's end), so no
            other process cleans it away.
    """

    def __init__(self, folder, manifest, sizes, what, private=False):
        self.folder, self.manifest, self.sizes, self.what, self.private = folder, manifest, dict(sizes), what, private
        self._targets = {}  # (split, name) -> in memory: [array, rows]; on disk: [file, sha256, rows, shape]
        self._lock = None
        if folder is not None:
            folder.parent.mkdir(parents=True, exist_ok=True)
            self._lock = paths.lock(folder)  # a second writer of the same folder waits here
            self.partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(self.partial, ignore_errors=True)  # left by a killed writer: we hold the lock
            self.partial.mkdir()

    @property
    def nbytes(self):
        """Bytes the arrays take at full size, every split included (known once their first rows came)."""
        row_bytes = {}
        for (_, name), target in self._targets.items():
            shape, dtype = (target[0].shape, target[0].dtype) if self.folder is None else target[3]
            row_bytes[name] = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        return sum(row_bytes.values()) * sum(self.sizes.values())

    def write(self, split, values):
        """Appends a batch of rows to each array of `split`.

        Args:
            split: str. A key of `sizes`.
            values: dict of str to np.ndarray. One batch `(rows, ...)` per array name.
        """
        with self._on_failure_remove():
            for name, value in values.items():
                value = np.ascontiguousarray(value)
                key = (split, name)
                if key not in self._targets:
                    self._targets[key] = self._begin(split, name, value)
                target = self._targets[key]
                rows = target[2] if self.folder is not None else target[1]
                if rows + len(value) > self.sizes[split]:
                    raise ValueError(f"{self.what}: {split} was to have {self.sizes[split]} rows; received more.")
                if self.folder is None:
                    target[0][rows:rows + len(value)] = value
                    target[1] += len(value)
                else:
                    content = value.tobytes()
                    target[0].write(content)
                    target[1].update(content)
                    target[2] += len(value)

    def _begin(self, split, name, first):
        shape = (self.sizes[split], *first.shape[1:])
        if self.folder is None:
            return [np.empty(shape, dtype=first.dtype), 0]
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(first.dtype),
                                                      "fortran_order": False, "shape": shape})
        file = open(self.partial / f"{split}.{name}.npy", "wb")
        file.write(header.getvalue())
        digest = hashlib.sha256(header.getvalue())
        return [file, digest, 0, (shape, first.dtype)]

    def finish(self):
        """Returns `{split: {name: array}}`: in memory, or memory-mapped from the folder, complete from here on."""
        with self._on_failure_remove():
            for (split, name), target in self._targets.items():
                rows = target[1] if self.folder is None else target[2]
                if rows != self.sizes[split]:
                    raise ValueError(f"{self.what}: {split} was to have {self.sizes[split]} rows; received {rows}.")
            if self.folder is None:
                arrays = {}
                for (split, name), target in self._targets.items():
                    arrays.setdefault(split, {})[name] = target[0]
                return arrays
            files = {}
            for (split, name), (file, digest, _, _) in self._targets.items():
                file.flush()
                os.fsync(file.fileno())
                file.close()
                files[f"{split}.{name}.npy"] = {"bytes": os.path.getsize(file.name), "sha256": digest.hexdigest()}
            paths.write_atomic(self.partial / KEY_FILE, json.dumps({**self.manifest, "files": files}, indent=1))
            shutil.rmtree(self.folder, ignore_errors=True)  # an older cache of the same name: replaced whole
            os.replace(self.partial, self.folder)
        if not self.private:
            self._release()
        return open_arrays(self.folder, full=False)[1]  # just written and digested: sizes suffice

    @contextlib.contextmanager
    def _on_failure_remove(self):
        """Removes what was written when the block fails; a full disk becomes a `DiskFullError` naming the need."""
        try:
            yield
        except BaseException as error:
            needed = self.nbytes
            self.abort()
            if self.folder is not None and paths.is_disk_full(error):
                raise paths.disk_full_error(self.folder.parent, needed, self.what, error) from error
            raise

    def abort(self):
        """Removes what was written (the final folder is left as it was) and releases the lock."""
        for target in self._targets.values():
            if self.folder is not None and not target[0].closed:
                with contextlib.suppress(OSError):  # its last buffer may not fit a full disk: discarded anyway
                    target[0].close()
        self._targets.clear()
        if self.folder is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
            self._release()

    def remove(self):
        """Removes a private folder this writer made, and its lock file."""
        shutil.rmtree(self.folder, ignore_errors=True)
        paths.lock_path(self.folder).unlink(missing_ok=True)
        self._release()

    def _release(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def open_arrays(folder, full=True):
    """Opens a folder `ArrayWriter` wrote, after checking its files against `key.json`.

    Args:
        folder: Path.
        full: bool. Compare SHA-256 digests (reads every byte once); False checks sizes.

    Returns:
        `(manifest, {split: {name: np.memmap}})`.

    Raises:
        FileNotFoundError: no complete folder there.
        kerasft.paths.CorruptFileError: a file is missing, truncated or altered (named in the message).
    """
    folder = Path(folder)
    if not (folder / KEY_FILE).is_file():
        raise FileNotFoundError(folder / KEY_FILE)
    manifest = paths.read_json(folder / KEY_FILE)
    if not isinstance(manifest.get("files"), dict):
        raise paths.CorruptFileError(f"{folder / KEY_FILE} lists no files: not a complete cache folder.",
                                     folder / KEY_FILE)
    paths.check_checksums(folder, manifest["files"], full=full)
    arrays = {}
    for name in manifest["files"]:
        split, array = name.removesuffix(".npy").split(".", 1)
        try:
            arrays.setdefault(split, {})[array] = np.load(folder / name, mmap_mode="r")
        except ValueError as error:  # a header altered to another valid size
            raise paths.CorruptFileError(f"{folder / name} is corrupt: {error}", folder / name) from None
    return manifest, arrays


# === Reading rows back ===


class _RowReader:
    """Reads rows of a memory-mapped `.npy` array with `pread`: the rows land in fresh buffers, the mapping
    is never touched, so the process's resident memory does not grow with the file."""

    def __init__(self, array):
        self.shape, self.dtype, self.offset, self.filename = array.shape, array.dtype, array.offset, array.filename
        self.row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
        self._descriptor = os.open(array.filename, os.O_RDONLY)
        weakref.finalize(self, os.close, self._descriptor)

    def __call__(self, index):
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        buffer = memoryview(out.reshape(len(index), -1).view(np.uint8))
        start = 0
        while start < len(index):  # one read per run of consecutive rows
            end = start + 1
            while end < len(index) and index[end] == index[end - 1] + 1:
                end += 1
            wanted = (end - start) * self.row_bytes
            read = os.preadv(self._descriptor, [buffer[start:end]], self.offset + int(index[start]) * self.row_bytes)
            if read != wanted:
                raise paths.CorruptFileError(f"The cache file {self.filename} ended early: rows "
                                             f"{index[start]}..{index[end - 1]} are missing.", self.filename)
            start = end
        return out


def _reader(array):
    if isinstance(array, np.memmap) and array.filename:
        return _RowReader(array)
    return lambda index: np.asarray(array[index])


def row_dataset(arrays, batch_size, shuffle=False, seed=None):
    """Batches of rows of equally long arrays (in memory or memory-mapped), in order or reshuffled on every pass.

    Shuffling row numbers, not rows, shuffles the whole split without a
    buffer of examples; rows of a file on disk are read with `pread`, a batch
    at a time.

    Args:
        arrays: list of np.ndarray. The same number of rows each.
        batch_size: int. Rows per batch.
        shuffle: bool. A new order on every pass.
        seed: int or None. Shuffle seed.

    Returns:
        A `tf.data.Dataset` of tuples of tensors, one per array.
    """
    readers = [_reader(array) for array in arrays]
    dtypes = [tf.as_dtype(array.dtype) for array in arrays]

    def take(index):
        return [read(index) for read in readers]

    def gather(index):
        tensors = tf.numpy_function(take, [index], dtypes, stateful=False)
        for tensor, array in zip(tensors, arrays):
            tensor.set_shape((None, *array.shape[1:]))
        return tuple(tensors)

    ds = tf.data.Dataset.range(len(arrays[0]))
    if shuffle:
        ds = ds.shuffle(len(arrays[0]), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
