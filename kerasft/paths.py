"""Where kerasft keeps files it derives once and reuses (converted presets, caches)."""

import os
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

    A reader never sees a half-written file, and a killed writer leaves the
    previous file whole.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    os.replace(temporary, path)


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


def make_room(root, needed, limit=None):
    """Removes the least recently used cache folders in `root` until `needed` more bytes fit under the cap.

    A folder counts as used when it was last written or reused (its mtime;
    `FeatureCache` touches a folder it reuses). Lock files and folders being
    written (`*.partial`) are left alone.

    Args:
        root: str or Path. A folder of cache folders (e.g. `user_cache_dir("features")`).
        needed: int. Bytes about to be written there.
        limit: int or None. The cap (default `cache_limit_bytes()`).

    Returns:
        The folders removed, oldest first.
    """
    import shutil

    limit = cache_limit_bytes() if limit is None else limit
    root = Path(root)
    entries = [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".partial")] if root.exists() else []
    sizes = {p: folder_bytes(p) for p in entries}
    total = sum(sizes.values())
    removed = []
    for folder in sorted(entries, key=lambda p: p.stat().st_mtime):
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
    import shutil

    target = user_cache_dir(*parts)
    freed = folder_bytes(target)
    for entry in target.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return freed
