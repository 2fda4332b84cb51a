"""Disk: kerasft's own caches stay under a size cap (least recently used go first); `kerasft cache clear`."""

import os
import time

import kerasft as kft
from kerasft import cli, features, paths


def _folder(root, name, size, age):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "data.npy").write_bytes(b"\0" * size)
    stamp = time.time() - age
    os.utime(folder, (stamp, stamp))
    return folder


def test_make_room_drops_least_recently_used_first(tmp_path):
    old, middle, new = (_folder(tmp_path, n, 1000, age) for n, age in (("old", 300), ("middle", 200), ("new", 100)))
    partial = _folder(tmp_path, "writing.partial", 1000, 400)
    assert paths.make_room(tmp_path, needed=1500, limit=3000) == [old, middle]
    assert new.exists() and partial.exists()  # a folder being written is never removed
    assert paths.make_room(tmp_path, needed=0, limit=3000) == []


def test_spilled_feature_caches_stay_under_the_cap(tiny_bert, tiny_text_data, monkeypatch, capsys):
    monkeypatch.setenv("KERASFT_MEMORY_BUDGET_GB", "0")  # every cut spills to kerasft's user cache
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, seed=0)
    features.FeatureCache(model, tiny_text_data)
    root = paths.user_cache_dir("features")
    first = paths.folder_bytes(root)
    assert first > 0
    monkeypatch.setenv("KERASFT_CACHE_MAX_GB", str(1.2 * first / 2**30))  # room for one cache, not two (3/4 of it)
    other = kft.build_classifier("tiny_bert", data=tiny_text_data.subset(train=60, seed=0), seed=1)
    features.FeatureCache(other, tiny_text_data.subset(train=60, seed=0), verbose=1)
    assert "removed the least recently used feature cache" in capsys.readouterr().out
    assert paths.folder_bytes(root) <= 1.2 * first


def test_cache_clear_empties_the_user_cache(tiny_bert, tiny_text_data, monkeypatch, capsys):
    monkeypatch.setenv("KERASFT_MEMORY_BUDGET_GB", "0")
    features.FeatureCache(kft.build_classifier("tiny_bert", data=tiny_text_data), tiny_text_data)
    assert paths.folder_bytes(paths.user_cache_dir("features")) > 0
    assert cli.main(["cache", "info"]) == 0
    assert "features" in capsys.readouterr().out
    assert cli.main(["cache", "clear", "--features"]) == 0
    assert "removed" in capsys.readouterr().out
    assert paths.folder_bytes(paths.user_cache_dir("features")) == 0
