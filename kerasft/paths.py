"""Where and how kerasft writes files: the user cache (capped, cleaned), writes that appear whole, checks on read.

Every file kerasft writes is written beside its final name and renamed into
place (`write_atomic`, `staged`), so a killed or failed write leaves the
previous file whole and nothing half-written under the final name. Folders
record the size and SHA-256 of their files (`checksums`) and are checked on
read (`check_checksums`): a corrupted or truncated file raises
`CorruptFileError` naming it, and its owner rebuilds it (caches) or refuses
it (checkpoints, exports). A full disk (or a file-size limit) raises
`DiskFullError` naming the folder, the space needed and the space free.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
from pathlib import Path


def user_cache_dir(*parts):
    """Returns (and creates) a folder under kerasft's user cache.

    The root is `$KERASFT_CACHE_DIR` when set, else `$XDG_CACHE_HOME/kerasft`,
    else `~/.cache/kerasft`.

    Args:
        *parts: str. Sub-folder names below the root.
    """
    root = os.environ.get("KERASFT_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        root = os.path.join(xdg, "kerasft")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path, content):
    """Writes `content` (str: UTF-8, or bytes) to `path` through a temporary name renamed into place.

    A reader never sees a half-written file, and a killed writer or a full
    disk (`DiskFullError`) leaves the previous file whole.
    """
    content = content.encode("utf-8") if isinstance(content, str) else content
    with staged(path, needed=len(content)) as temporary:
        temporary.write_bytes(content)


# === Writes that appear whole, checked on read ===


class DiskFullError(OSError):
    """The disk (or a file-size limit) ran out while kerasft wrote; what was half-written is removed."""


class CorruptFileError(ValueError):
    """A file kerasft wrote earlier is truncated or altered: its size or SHA-256 differs from the recorded one.

    Attributes:
        path: str. The file.
    """

    def __init__(self, message, path):
        super().__init__(message)
        self.path = str(path)


# errno values (and the messages TensorFlow and HDF5 wrap them in) of a full disk, quota or file-size limit.
_FULL = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded", errno.EFBIG: "File too large"}


def is_disk_full(error):
    """True when `error` (an OSError, or TensorFlow's or HDF5's wrapping of one) says the disk is full."""
    while error is not None:
        if getattr(error, "errno", None) in _FULL or any(text in str(error) for text in _FULL.values()):
            return True
        error = error.__cause__ or error.__context__
    return False


def free_bytes(folder):
    """Bytes free for kerasft's writes in `folder` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def readable_size(count):
    """A byte count for people: "850 KB", "3.4 MB", "1.2 GB"."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{max(count, 0) / 1e3:,.0f} KB"


def disk_full_error(folder, needed, what, error):
    """The `DiskFullError` to raise for `error`: it names `folder`, the bytes needed and the bytes free.

    Args:
        folder: str or Path. Where the write went.
        needed: int or None. Bytes the whole write needs (an estimate is fine).
        what: str. What was being written (e.g. "the feature cache").
        error: Exception. The full-disk error raised underneath.
    """
    need = f"about {readable_size(needed)}" if needed else "more space"
    return DiskFullError(
        errno.ENOSPC,
        f"No space left to write {what} in {folder}: it needs {need}, {readable_size(free_bytes(folder))} are free. "
        "Nothing half-written was left and earlier files are intact; free some space (or point kerasft at "
        f"another folder) and run again. ({type(error).__name__}: {str(error)[:200]})")


@contextlib.contextmanager
def disk_space(folder, needed, what):
    """Turns a full disk inside the block into a `DiskFullError` (`disk_full_error`).

    The caller removes what it half-wrote (its own `finally`); this only
    says clearly what happened instead of an errno deep in HDF5 or TensorFlow.

    Args:
        folder: str or Path. Where the block writes.
        needed: int or None. Bytes the block writes in all (an estimate is fine).
        what: str. What is being written, for the message.
    """
    try:
        yield
    except Exception as error:
        if not is_disk_full(error) or isinstance(error, DiskFullError):
            raise
        raise disk_full_error(folder, needed, what, error) from error


@contextlib.contextmanager
def staged(path, needed=None, what=None):
    """Yields a temporary path beside `path`; after the block it is flushed to disk and renamed to `path`.

    On an error (or a kill) the temporary file is removed (or left under a
    hidden `.tmp-` name) and `path` keeps its previous content; a full disk
    raises `DiskFullError`.

    Args:
        path: str or Path. The final file.
        needed: int or None. Bytes to be written, for the message on a full disk.
        what: str or None. What the file is, for that message (default: its name).

    Example:
    >>> with paths.staged(folder / "model.weights.h5") as temporary:
    ...     model.save_weights(temporary)
    """
    path = Path(path)
    # The suffix stays: some writers (Keras' save_weights) insist on it.
    temporary = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    with disk_space(path.parent, needed, what or path.name):  # outermost: says what is free after the cleanup
        try:
            yield temporary
            _sync(temporary)
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()


def _sync(path):
    """Flushes a written file to disk, so a crash of the machine cannot leave it renamed but empty."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_digest(path):
    """Returns the SHA-256 (hex) of a file's content, read in chunks."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def checksums(folder, names=None):
    """Returns `{relative path: {"bytes": size, "sha256": digest}}` of the files in `folder` (recursively).

    Args:
        folder: str or Path.
        names: iterable of str or None. Only these relative paths (default: every file).
    """
    folder = Path(folder)
    if names is None:
        names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": file_digest(folder / name)} for name in names}


def check_checksums(folder, recorded, full=True):
    """Raises `CorruptFileError` naming the first file of `folder` that is missing, truncated or altered.

    Args:
        folder: str or Path.
        recorded: dict. What `checksums` returned when the files were written.
        full: bool. Compare SHA-256 digests too (reads every byte); False checks sizes only.
    """
    folder = Path(folder)
    for name, expected in recorded.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CorruptFileError(f"{path} is missing (it was written with the rest of {folder}).", path) from None
        if size != expected["bytes"]:
            raise CorruptFileError(f"{path} is truncated or altered: {size} bytes, {expected['bytes']} were "
                                   "written.", path)
        if full and file_digest(path) != expected["sha256"]:
            raise CorruptFileError(f"{path} is corrupt: its SHA-256 differs from the one recorded when it was "
                                   "written (same size, altered bytes).", path)


def read_json(path):
    """Reads a JSON file kerasft wrote; a damaged one raises `CorruptFileError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CorruptFileError(f"{path} is corrupt: not the JSON kerasft wrote ({error}).", path) from None


# === Size cap and cleaning ===

DEFAULT_LIMIT_GB = 20.0


def cache_limit_bytes():
    """The most bytes kerasft's feature caches may take on disk: `$KERASFT_CACHE_MAX_GB` (default 20 GB)."""
    value = os.environ.get("KERASFT_CACHE_MAX_GB", DEFAULT_LIMIT_GB)
    try:
        limit = float(value)
    except ValueError:
        raise ValueError(f"KERASFT_CACHE_MAX_GB must be a number of gigabytes. Received: {value!r}") from None
    return int(limit * 2**30)


def folder_bytes(path):
    """Bytes of the regular files under `path` (symlinks are not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed meanwhile by another process
                pass
    return total


def lock_path(folder):
    """The lock file of a cache folder `<name>` (or `<name>.partial`): `<name>.lock`, beside it.

    Its lock is held while `<name>.partial` is written, and for as long as a
    process reads a private folder (`private_name`) only it uses.
    """
    folder = Path(folder)
    return folder.with_name(folder.name.removesuffix(".partial") + ".lock")


def lock(folder, wait=True):
    """Takes the lock of a cache folder: an exclusive `flock`, which the kernel releases if the process dies.

    Args:
        folder: str or Path. The cache folder (it need not exist).
        wait: bool. Wait while another process (or another open in this one) holds it.

    Returns:
        The open lock file (closing it releases the lock), or None when the
        lock is held elsewhere and `wait` is False.
    """
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


def private_name(prefix):
    """A cache folder name no other process uses: `<prefix>-<host>-<pid>-<random>`."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def remove_abandoned(root):
    """Removes what killed processes left in a cache folder: `*.partial` folders and private folders
    (`private_name`) whose lock no process holds. Returns the folders removed."""
    root = Path(root)
    removed = []
    for entry in sorted(root.iterdir()) if root.exists() else []:
        if not entry.is_dir() or not lock_path(entry).exists():
            continue  # no lock file: not a folder kerasft writes under a lock
        if not (entry.name.endswith(".partial") or entry.name.startswith(_PRIVATE_PREFIXES)):
            continue
        handle = lock(entry, wait=False)
        if handle is not None:  # no process holds it: its writer or reader is gone
            shutil.rmtree(entry, ignore_errors=True)
            if entry.name.startswith(_PRIVATE_PREFIXES):  # nobody else will take that name
                lock_path(entry).unlink(missing_ok=True)
            handle.close()
            removed.append(entry)
    return removed


# Prefixes of private cache folders (`private_name`): they belong to one process and go when it ends.
_PRIVATE_PREFIXES = ("inputs-",)


def make_room(root, needed, limit=None):
    """Removes the least recently used cache folders in `root` until `needed` more bytes fit under the cap.

    First removes what killed processes left (`remove_abandoned`). A folder
    counts as used when it was last written or reused (its mtime;
    `FeatureCache` touches a folder it reuses). Lock files, folders being
    written (`*.partial`) and folders a live process reads alone (spilled
    inputs) are left alone.

    Args:
        root: str or Path. A folder of cache folders (e.g. `user_cache_dir("features")`).
        needed: int. Bytes about to be written there.
        limit: int or None. The cap (default `cache_limit_bytes()`).

    Returns:
        The folders removed, oldest first.
    """
    limit = cache_limit_bytes() if limit is None else limit
    root = Path(root)
    remove_abandoned(root)
    entries = [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".partial")] if root.exists() else []
    sizes = {p: folder_bytes(p) for p in entries}
    total = sum(sizes.values())  # folders in use count against the cap too
    removed = []
    unused = [p for p in entries if not p.name.startswith(_PRIVATE_PREFIXES)]
    for folder in sorted(unused, key=lambda p: p.stat().st_mtime):
        if total + needed <= limit:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        removed.append(folder)
    return removed


def cache_usage():
    """Returns `{sub-folder: bytes}` of kerasft's user cache (converted presets, feature caches)."""
    root = user_cache_dir()
    return {p.name: folder_bytes(p) for p in sorted(root.iterdir()) if p.is_dir()}


def clear_cache(parts=()):
    """Deletes kerasft's user cache (or one sub-folder, e.g. `("features",)`); returns the bytes freed.

    Everything there is derived and is made again when needed (a converted
    preset is converted again on next use).
    """
    target = user_cache_dir(*parts)
    freed = folder_bytes(target)
    for entry in target.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return freed
