"""Cuts and feature caches: the cached path computes what the network computes; disk caches are keyed."""

import json

import numpy as np
import pytest

import kerasft as kft
from kerasft import features


def _raw(data, split="validation"):
    inputs = data.inputs(split)
    return np.array(list(inputs), dtype=object) if data.modality == "text" else np.stack(
        [x.numpy() for x, _ in getattr(data, split)])


@pytest.fixture(scope="module")
def text_model(tiny_bert, tiny_text_data):
    return kft.build_classifier("tiny_bert", data=tiny_text_data, head=kft.Head(units=(4,)))


@pytest.mark.parametrize("backbone", ["tiny_bert", "resnet50"])
def test_top_on_cached_features_predicts_what_the_classifier_predicts(backbone, request):
    data = request.getfixturevalue("tiny_text_data" if backbone == "tiny_bert" else "tiny_image_data")
    if backbone == "tiny_bert":
        request.getfixturevalue("tiny_bert")
        model = kft.build_classifier("tiny_bert", data=data, head=kft.Head(units=(4,)))
    else:
        model = kft.build_classifier("resnet50", data=data, pretrained=False, image_size=(32, 32),
                                     head=kft.Head(units=(4,)))
    expected = model.predict(_raw(data), verbose=0)
    cache = features.FeatureCache(model, data, cuts=["frozen", "top:1", "top:2"])
    assert cache.computed == ["frozen", "top:1", "top:2"]  # one pass for all three
    for cut in cache.cuts:
        _, top = features.split_network(model, cut)
        predicted = top.predict(cache.dataset(cut, "validation", batch_size=16), verbose=0)
        np.testing.assert_allclose(predicted, expected, atol=1e-5, err_msg=cut)


def test_cuts_cache_what_enters_the_first_trained_block(text_model, tiny_text_data):
    cache = features.FeatureCache(text_model, tiny_text_data, cuts=["frozen", "top:1"])
    inputs, labels = cache.arrays("top:1", "train")
    assert set(inputs) == {"activations", "padding_mask"}  # the top block also reads the padding mask
    assert inputs["activations"].shape == (tiny_text_data.size("train"), 16, 8)
    np.testing.assert_array_equal(labels, tiny_text_data.labels("train"))
    assert cache.arrays("frozen", "validation")[0]["features"].shape == (tiny_text_data.size("validation"), 8)
    _, top = features.split_network(text_model, "top:1")
    assert [layer.name for layer in top.layers if layer.weights] == ["backbone", "head"]
    assert [layer.name for layer in top.get_layer("backbone").layers if layer.weights] == ["transformer_layer_1"]


def test_recomputed_path_gives_the_cached_activations(text_model, tiny_text_data):
    cache = features.FeatureCache(text_model, tiny_text_data, cuts=["top:1"])
    bottom = features.Bottom(text_model, ["top:1"])
    preprocessed = features.preprocess(text_model, tiny_text_data.validation, batch_size=7)
    recomputed = np.concatenate([x["activations"].numpy() for x, _ in bottom.map(preprocessed, "top:1")])
    np.testing.assert_allclose(recomputed, cache.arrays("top:1", "validation")[0]["activations"], atol=1e-6)


def test_disk_cache_is_reused_when_its_key_matches_and_rebuilt_when_not(text_model, tiny_text_data, tmp_path):
    first = features.FeatureCache(text_model, tiny_text_data, cuts=["frozen"], directory=tmp_path)
    folder = first.locations["frozen"]
    assert folder.parent == tmp_path and (folder / "key.json").exists()
    stored = first.arrays("frozen", "train")[0]["features"].copy()

    again = features.FeatureCache(text_model, tiny_text_data, cuts=["frozen"], directory=tmp_path)
    assert again.computed == [] and again.locations["frozen"] == folder
    np.testing.assert_array_equal(again.arrays("frozen", "train")[0]["features"], stored)

    embedding = text_model.get_layer("network").get_layer("backbone").get_layer("token_embedding")
    original = embedding.get_weights()
    embedding.set_weights([w + 0.5 for w in original])  # other weights, same model name and data
    try:
        changed = features.FeatureCache(text_model, tiny_text_data, cuts=["frozen"], directory=tmp_path)
        changed_key = features.cache_key(text_model, tiny_text_data, "frozen")
    finally:
        embedding.set_weights(original)
    assert changed.rebuilt == ["frozen"] and changed.computed == ["frozen"]
    assert not np.allclose(changed.arrays("frozen", "train")[0]["features"], stored)
    assert json.loads((folder / "key.json").read_text())["key"] == changed_key

    (folder / "key.json").write_text("{not json")  # a damaged folder is rebuilt too
    repaired = features.FeatureCache(text_model, tiny_text_data, cuts=["frozen"], directory=tmp_path)
    assert repaired.rebuilt == ["frozen"]
    np.testing.assert_allclose(repaired.arrays("frozen", "train")[0]["features"], stored, atol=1e-6)
    assert not list(tmp_path.glob("*.partial"))


def test_cache_too_big_for_memory_goes_to_disk(text_model, tiny_text_data, tmp_path):
    cache = features.FeatureCache(text_model, tiny_text_data, cuts=["frozen", "top:1"], spill_directory=tmp_path,
                                  memory_budget=1000 / 2**30)
    assert all(cache.locations[cut].parent == tmp_path for cut in cache.cuts)
    assert isinstance(cache.arrays("top:1", "train")[0]["activations"], np.memmap)
    batch, labels = next(iter(cache.dataset("top:1", "train", batch_size=8, shuffle=True, seed=0)))
    assert batch["activations"].shape == (8, 16, 8) and labels.shape == (8,)


def test_bad_cuts_and_splits_are_refused(text_model, tiny_text_data):
    with pytest.raises(features.FeatureError, match="has: 2 blocks"):
        features.FeatureCache(text_model, tiny_text_data, cuts=["top:3"])
    with pytest.raises(features.FeatureError, match='"frozen" or "top:N"'):
        features.split_network(text_model, "all")
    empty = tiny_text_data.subset(validation=0)
    with pytest.raises(features.FeatureError, match="empty validation split"):
        features.FeatureCache(text_model, empty, cuts=["frozen"])


def test_preprocess_caches_in_memory_within_the_budget_else_on_disk_else_streams(tiny_cnn, tiny_image_data,
                                                                                 monkeypatch):
    import gc

    from kerasft import caching, paths

    model = kft.build_classifier("tiny_cnn", data=tiny_image_data)
    spill_root = paths.user_cache_dir("features")

    def batches(**kwargs):
        ds = features.preprocess(model, tiny_image_data.train, 16, **kwargs)
        spilled = sorted(p.name for p in spill_root.glob("inputs-*") if p.is_dir())
        return [(x.numpy(), y.numpy()) for x, y in ds], spilled

    in_memory, folders = batches()
    assert folders == []
    # 32x32x3 pixels: 3 KB decoded, 12 KB preprocessed; a budget of 10 KB holds neither: the smaller goes to disk.
    on_disk, folders = batches(memory_budget=10_000 / 2**30)
    assert len(folders) == 1
    for (x, y), (x_disk, y_disk) in zip(in_memory, on_disk, strict=True):
        np.testing.assert_array_equal(x_disk, x)
        np.testing.assert_array_equal(y_disk, y)
    gc.collect()  # the dataset is gone: so is its folder
    assert not [p for p in spill_root.glob("inputs-*") if p.is_dir()]
    monkeypatch.setenv("KERASFT_CACHE_MAX_GB", "0")  # no room on disk either: streamed from the source
    with pytest.warns(UserWarning, match=r"room for 0 MB .*from the source on every pass"):
        streamed, folders = batches(memory_budget=0)
    assert folders == [] and all(np.array_equal(a[0], b[0]) for a, b in zip(in_memory, streamed, strict=True))
    monkeypatch.setenv(caching.MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match=r"\$KERASFT_MEMORY_BUDGET_GB must be a number of gigabytes >= 0. "
                                         r"Received: 'lots'"):
        features.preprocess(model, tiny_image_data.train, 16)


def test_every_pipeline_kerasft_iterates_runs_without_the_autotune_thread(tiny_cnn, tiny_image_data):
    # With tf.data's autotuning on, destroying an iterator waits for its tuning thread to wake (up to 60 s): the end
    # of a fit sat idle 25 s (features.prefetched). Every form of preprocessed data and each phase's batches.
    from kerasft import engine

    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, trainable="top:1")
    pipelines = [features.preprocess(model, tiny_image_data.train, 16, **kwargs)
                 for kwargs in ({}, {"memory_budget": 10_000 / 2**30}, {"cache": False})]
    inputs = engine.Inputs(model, tiny_image_data, cuts=["frozen", "top:1"])
    for cut in ("frozen", "top:1", "all"):
        pipelines += inputs.datasets(cut, batch_size=16, seed=0)
    assert [ds.options().autotune.enabled for ds in pipelines] == [False] * len(pipelines)
