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
