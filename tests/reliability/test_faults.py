"""Faults on disk: a full file system, flipped bytes, kill -9 mid-spill, two exports at once. All real: size-limited
tmpfs mounts (root), bytes changed in the files kerasft wrote, processes killed with SIGKILL."""

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasft as kft
from kerasft import caching, checkpoint, features, paths

JOBS = Path(__file__).with_name("jobs.py")


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(kilobytes)` mounts a tmpfs of that size under tmp_path and returns it; unmounted after."""
    mounted = []

    def mount(kilobytes):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount a size-limited tmpfs here ({result.stderr.strip()}); needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder, leave=0):
    """Writes zeros into `folder` until its file system is full (or `leave` bytes are left); returns the file."""
    path = folder / "filler"
    with open(path, "wb") as file:
        try:
            while paths.free_bytes(folder) > leave:
                file.write(b"\0" * min(65536, max(4096, paths.free_bytes(folder) - leave)))
                file.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    return path


def _flip_byte(path, offset=None):
    content = bytearray(path.read_bytes())
    offset = len(content) // 2 if offset is None else offset
    content[offset] ^= 0x40
    path.write_bytes(bytes(content))


def _snapshot(folder):
    return {str(p.relative_to(folder)): paths.file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# === A full disk ===


def test_a_disk_filled_by_a_feature_cache_spill_names_the_folder_and_leaves_earlier_caches_whole(
        tiny_cnn, tiny_image_data, small_disk, monkeypatch):
    monkeypatch.setenv("KERASFT_CACHE_DIR", str(small_disk(400)))
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, trainable="top:1", seed=0)
    earlier = features.FeatureCache(model, tiny_image_data, cuts=["frozen"], memory_budget=0)  # ~5 KB
    earlier_folder = earlier.locations["frozen"]
    before = _snapshot(earlier_folder)
    free = paths.free_bytes(earlier_folder)
    # The activations entering block 2: 15x15x4 floats for each of 136 examples, about 0.5 MB > 400 KB.
    with pytest.raises(paths.DiskFullError, match=r"No space left to write the top:1 feature cache in .*/features: "
                                                  r"it needs about 490 KB, \d+ KB are free"):
        features.FeatureCache(model, tiny_image_data, cuts=["top:1"], memory_budget=0)
    root = earlier_folder.parent
    assert not list(root.glob("*.partial")) and paths.free_bytes(root) == free  # nothing half-written is left
    assert _snapshot(earlier_folder) == before
    caching.open_arrays(earlier_folder)  # still whole: its checksums hold


def test_a_disk_filled_while_inputs_spill_falls_back_to_reading_the_source(tiny_cnn, tiny_image_data, small_disk,
                                                                           monkeypatch):
    import tensorflow as tf

    disk = small_disk(600)
    monkeypatch.setenv("KERASFT_CACHE_DIR", str(disk))
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, seed=0)
    filled = []

    def fill_once(index):
        if index == 80 and not filled:  # another program fills the disk while the spill is being written
            filled.append(_fill(disk))
        return index

    source = tiny_image_data.train.enumerate().map(
        lambda i, xy: (tf.numpy_function(fill_once, [i], tf.int64, stateful=True), xy)).map(lambda i, xy: xy)
    source = source.apply(tf.data.experimental.assert_cardinality(tiny_image_data.size("train")))
    expected = [x.numpy() for x, _ in features.preprocess(model, tiny_image_data.train, 16, cache=False)]
    # 112 decoded 32x32 images (344 KB) fit the 600 KB free at first: the spill starts, then the disk fills.
    with pytest.warns(UserWarning, match=r"No space left to write the decoded inputs spilled to disk .*"
                                         r"Reading the examples from the source on every pass instead"):
        batches = features.preprocess(model, source, 16, memory_budget=0)
    assert filled and not [p for p in (disk / "features").iterdir() if p.is_dir()]  # the partial spill is gone
    for x, x_expected in zip([x.numpy() for x, _ in batches], expected, strict=True):
        np.testing.assert_array_equal(x, x_expected)


def test_a_disk_filled_during_training_stops_at_a_checkpoint_and_the_run_resumes_after_the_last_whole_epoch(
        tiny_cnn, tiny_image_data, small_disk):
    disk = small_disk(2048)
    folder = disk / "run"
    filler = []

    class FillTheDisk(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # runs before the checkpoint's own on_epoch_end
            if epoch == 1 and not filler:
                filler.append(_fill(disk))

    def run(callbacks=None):
        model = kft.build_classifier("tiny_cnn", data=tiny_image_data, seed=0)
        return kft.fine_tune(model, tiny_image_data, trainable="frozen", epochs=4, patience=0, verbose=0,
                             checkpoint_dir=folder, callbacks=callbacks)

    with pytest.raises(paths.DiskFullError, match=rf"to write the phase1\.last checkpoint in {folder}: it needs "
                                                  r"about \d+ KB, 0 KB are free"):
        run([FillTheDisk()])
    state = json.loads((folder / "run.json").read_text())
    assert len(state["phases"]["1"]["epochs"]) == 1  # epoch 0 recorded whole, epoch 1's save failed
    recorded = state["files"]["phase1.last"]
    paths.check_checksums(folder, {recorded["file"]: recorded})
    assert not list(folder.glob(".tmp-*"))
    filler[0].unlink()
    history = run()  # resumes after epoch 0
    assert history.history["phase"] == [1, 1, 1, 1] and len(history.history["loss"]) == 4


def test_a_disk_filled_during_an_export_leaves_the_earlier_version_whole(tiny_cnn, tiny_image_data, small_disk):
    disk = small_disk(4096)
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, seed=0)
    root = disk / "export"
    kft.export(model, root, data=tiny_image_data)
    before = _snapshot(root)
    filler = _fill(disk, leave=64 * 1024)  # room for a part of a second export only
    with pytest.raises(paths.DiskFullError, match=rf"No space left to write the export in {root}: it needs about "
                                                  r"\d+ KB, \d+ KB are free"):
        kft.export(model, root, data=tiny_image_data)
    assert _snapshot(root) == before and sorted(os.listdir(root)) == ["1", "labels.txt", "model.keras",
                                                                      "model_card.json"]
    assert kft.load(root / "1").predict(np.zeros((1, 32, 32, 3), "uint8")).shape == (1, 2)
    filler.unlink()
    assert kft.export(model, root, data=tiny_image_data).version == 2


# === Flipped bytes ===


def test_a_byte_flipped_in_a_cached_feature_file_is_named_and_the_cache_rebuilt(tiny_cnn, tiny_image_data, tmp_path,
                                                                                capsys):
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, trainable="top:1", seed=0)
    first = features.FeatureCache(model, tiny_image_data, cuts=["top:1"], directory=tmp_path)
    folder = first.locations["top:1"]
    stored = np.array(first.arrays("top:1", "train")[0]["activations"])
    _flip_byte(folder / "train.activations.npy")  # same size, one bit of one activation changed
    again = features.FeatureCache(model, tiny_image_data, cuts=["top:1"], directory=tmp_path, verbose=1)
    assert again.rebuilt == ["top:1"] and again.computed == ["top:1"]
    assert re.search(r"train\.activations\.npy is corrupt: its SHA-256 differs", capsys.readouterr().out)
    np.testing.assert_array_equal(again.arrays("top:1", "train")[0]["activations"], stored)
    (folder / "validation.labels.npy").write_bytes((folder / "validation.labels.npy").read_bytes()[:-4])
    truncated = features.FeatureCache(model, tiny_image_data, cuts=["top:1"], directory=tmp_path, verbose=1)
    assert truncated.rebuilt == ["top:1"]
    assert "validation.labels.npy is truncated or altered" in capsys.readouterr().out


@pytest.mark.parametrize("damaged", ["weights", "run.json"])
def test_a_byte_flipped_in_a_checkpoint_is_refused_naming_the_file(damaged, tiny_cnn, tiny_image_data, tmp_path):
    def run():
        model = kft.build_classifier("tiny_cnn", data=tiny_image_data, seed=0)
        return kft.fine_tune(model, tiny_image_data, trainable="frozen", epochs=2, patience=0, verbose=0,
                             checkpoint_dir=tmp_path)

    run()
    state = json.loads((tmp_path / "run.json").read_text())
    target = tmp_path / (state["files"]["phase1"]["file"] if damaged == "weights" else "run.json")
    # A byte of the weights' data, or a digit of a logged loss (still valid JSON).
    _flip_byte(target) if damaged == "weights" else target.write_text(
        target.read_text().replace('"loss": 0.', '"loss": 1.', 1))
    with pytest.raises(checkpoint.CheckpointError, match=rf"{target.name} is corrupt.*refused rather than resumed"):
        run()


# === kill -9 and concurrency ===


def test_kill_9_during_a_feature_cache_spill_leaves_nothing_complete_looking_and_the_next_run_rebuilds(
        tiny_cnn, tmp_path, monkeypatch):
    import conftest

    cache_dir = tmp_path / "cache"
    env = {**os.environ, "KERASFT_CACHE_DIR": str(cache_dir)}
    root = cache_dir / "features"
    process = subprocess.Popen([sys.executable, str(JOBS), "spill", "800"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not list(root.glob("*.partial/*.npy")):  # mid-write: the first rows are on disk
            assert process.poll() is None and time.time() < deadline, "the job ended before it could be killed"
            time.sleep(0.02)
        time.sleep(random.Random().uniform(0, 1.0))  # the write takes ~2 s: somewhere inside it
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    partial = list(root.glob("*.partial"))
    assert len(partial) == 1 and not (partial[0] / caching.KEY_FILE).exists()
    assert [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".partial")] == []
    assert paths.remove_abandoned(root) == partial  # its writer is dead: its lock is free

    monkeypatch.setenv("KERASFT_CACHE_DIR", str(cache_dir))  # the next run, here, spills to the same place
    data = conftest.brightness_data(800)
    cache = features.FeatureCache(kft.build_classifier("tiny_cnn", data=data, trainable="top:1"), data,
                                  cuts=["top:1"], memory_budget=0)
    _, arrays = caching.open_arrays(cache.locations["top:1"])  # complete, every checksum holding
    assert arrays["train"]["activations"].shape == (560, 15, 15, 4) and not list(root.glob("*.partial"))


def test_two_processes_exporting_to_one_folder_get_distinct_whole_versions(tmp_path):
    folder = tmp_path / "export"
    processes = [subprocess.Popen([sys.executable, str(JOBS), "export", str(folder), "2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    assert sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) == [1, 2, 3, 4]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
    for version in range(1, 5):  # each one whole: its checksums hold, and it serves
        card = json.loads((folder / str(version) / "assets.extra" / "model_card.json").read_text())
        assert card["export"]["version"] == version
        kft.load(folder / str(version))
    assert json.loads((folder / "model_card.json").read_text())["export"]["version"] == 4
    kft.load(folder)  # model.keras matches the card written with it
