"""Determinism: the same seed gives the same split, weights, trial order and metrics on CPU (to 1e-6)."""

import numpy as np

import kerasft as kft


def _run(data, seed):
    model = kft.build_classifier("tiny_cnn", data=data, trainable="top:1", seed=seed)
    history = kft.fine_tune(model, data, epochs=2, warmup_epochs=3, seed=seed, verbose=0)
    return model, history.history, kft.evaluate(model, data).metrics


def test_same_seed_same_split_weights_and_metrics(tiny_cnn, tiny_image_data):
    images, labels = tiny_image_data.inputs("train"), tiny_image_data.labels("train")
    first = kft.data.from_arrays(images, labels, class_names=["dark", "bright"], seed=7)
    again = kft.data.from_arrays(images, labels, class_names=["dark", "bright"], seed=7)
    other = kft.data.from_arrays(images, labels, class_names=["dark", "bright"], seed=8)
    assert first.fingerprint() == again.fingerprint() != other.fingerprint()

    model_a, history_a, metrics_a = _run(first, seed=3)
    model_b, history_b, metrics_b = _run(again, seed=3)
    for a, b in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for key in history_a:
        np.testing.assert_allclose(history_a[key], history_b[key], atol=1e-6)
    assert metrics_a == metrics_b
    _, history_c, _ = _run(first, seed=4)
    assert not np.allclose(history_a["loss"], history_c["loss"], atol=1e-6)  # the seed does something


def test_same_seed_same_trials_in_the_same_order(tiny_bert, tiny_text_data, tmp_path):
    results = []
    for run in ("a", "b"):
        search = kft.tune(tiny_text_data, "tiny_bert", tuner="random", max_trials=2, epochs=2, seed=5,
                          space={"trainable": ["frozen", "top:1"]}, directory=tmp_path / run, verbose=0)
        results.append(search.results())
    drop = {"seconds", "peak_rss_mb"}
    first, second = ([{k: v for k, v in row.items() if k not in drop} for row in rows] for rows in results)
    for a, b in zip(first, second):
        assert {k: v for k, v in a.items() if k != "val_accuracy"} == {k: v for k, v in b.items()
                                                                     if k != "val_accuracy"}
        assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 1e-6
