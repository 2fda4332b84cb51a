"""Probability ensembles that share identical bottoms, weight soups, and their guards."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kerasft as kft
from kerasft.ensembling import EnsembleError, _config


def _texts(data):
    return np.array([x.numpy().decode() for x, _ in data.test], dtype=object)


@pytest.fixture(scope="module")
def members(tiny_bert, tiny_text_data):
    """Three heads trained on one shared, frozen tiny BERT (as a tuning search would give)."""
    keras.utils.set_random_seed(0)
    result = []
    for seed, units in [(0, ()), (1, (8,)), (2, ())]:
        model = kft.build_classifier("tiny_bert", data=tiny_text_data, head=kft.Head(units=units))
        if result:
            backbone = model.get_layer("network").get_layer("backbone")
            backbone.set_weights(result[0].get_layer("network").get_layer("backbone").get_weights())
        kft.fine_tune(model, tiny_text_data, epochs=3 + seed, learning_rate=1e-2, seed=seed, verbose=0)
        result.append(model)
    return result


def test_mean_ensemble_averages_members_and_computes_the_shared_bottom_once(members, tiny_text_data):
    ens = kft.ensemble(members, method="mean")
    texts = _texts(tiny_text_data)
    expected = np.mean([m.predict(texts, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(ens.predict(texts, verbose=0), expected, atol=1e-6)
    names = [layer.name for layer in ens.layers]
    assert sum(n.startswith("bottom_") for n in names) == 1
    assert sum(n.startswith("preprocessor_") for n in names) == 1
    assert sum(n.startswith("head_") for n in names) == 3


def test_weighted_ensemble_uses_normalised_validation_accuracy(members, tiny_text_data):
    ens = kft.ensemble(members, method="weighted", validation=tiny_text_data)
    scores = np.array([kft.evaluate(m, tiny_text_data.validation)["accuracy"] for m in members])
    weights = scores / scores.sum()
    texts = _texts(tiny_text_data)
    expected = sum(w * m.predict(texts, verbose=0) for w, m in zip(weights, members))
    np.testing.assert_allclose(ens.predict(texts, verbose=0), expected, atol=1e-6)


def test_ensemble_keras_file_loads_without_kerasft(members, tiny_text_data, tmp_path):
    ens = kft.ensemble(members, method="mean")
    texts = _texts(tiny_text_data)
    np.save(tmp_path / "texts.npy", texts)
    ens.save(tmp_path / "ens.keras")
    script = textwrap.dedent(f"""
        import sys, numpy as np, keras, keras_hub
        model = keras.models.load_model({str(tmp_path / 'ens.keras')!r}, safe_mode=True)
        texts = np.load({str(tmp_path / 'texts.npy')!r}, allow_pickle=True)
        np.save({str(tmp_path / 'out.npy')!r}, model.predict(texts, verbose=0))
        assert "kerasft" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ens.predict(texts, verbose=0), atol=1e-6)


def test_ensemble_config_round_trips(members, tiny_text_data):
    ens = kft.ensemble(members, method="mean")
    rebuilt = keras.Model.from_config(ens.get_config())
    # The rebuilt tokenizer is KerasHub's own again, which leaves its vocabulary out of its config.
    assert _config(rebuilt, ignore=("vocabulary",)) == _config(ens, ignore=("vocabulary",))
    rebuilt.set_weights(ens.get_weights())
    texts = _texts(tiny_text_data)
    np.testing.assert_allclose(rebuilt.predict(texts, verbose=0), ens.predict(texts, verbose=0), atol=1e-6)


def test_uniform_soup_is_one_model_with_the_mean_weights(tiny_bert, tiny_text_data):
    models = []
    base = kft.build_classifier("tiny_bert", data=tiny_text_data, trainable="all")
    for seed in range(2):
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
        kft.fine_tune(model, tiny_text_data, epochs=1, warmup_epochs=1, trainable="all", seed=seed, verbose=0)
        models.append(model)
    soup = kft.ensemble(models, method="uniform_soup")
    for w, a, b in zip(soup.weights, models[0].weights, models[1].weights):
        np.testing.assert_allclose(np.array(w), (np.array(a) + np.array(b)) / 2, atol=1e-6)
    assert soup.count_params() == models[0].count_params()


def test_greedy_soup_is_not_worse_than_the_best_member_on_validation(members, tiny_text_data):
    soup = kft.ensemble(members[::2], method="greedy_soup", validation=tiny_text_data)  # same architecture
    best = max(kft.evaluate(m, tiny_text_data.validation)["accuracy"] for m in members[::2])
    assert kft.evaluate(soup, tiny_text_data.validation)["accuracy"] >= best


def test_greedy_soup_leaves_out_members_of_another_architecture(members, tiny_bert, tiny_text_data):
    untrained = kft.build_classifier("tiny_bert", data=tiny_text_data, head=kft.Head(units=(3,)))
    output = untrained.get_layer("network").get_layer("head").get_layer("predictions")
    output.set_weights([np.zeros_like(output.kernel), np.array([1.0, 0.0])])  # one class for all: never the best
    with pytest.warns(UserWarning, match=r"left out members \[2\]"):
        soup = kft.ensemble([members[0], members[2], untrained], method="greedy_soup", validation=tiny_text_data)
    assert soup.count_params() == members[0].count_params()


def test_soup_of_different_architectures_names_the_difference(members):
    with pytest.raises(EnsembleError, match="different architectures"):
        kft.ensemble(members, method="uniform_soup")


def test_weighted_without_validation_is_refused(members):
    with pytest.raises(EnsembleError, match="needs validation="):
        kft.ensemble(members, method="weighted")


def test_members_of_different_tasks_are_refused(members, tiny_bert):
    other = kft.build_classifier("tiny_bert", num_classes=3)
    with pytest.raises(EnsembleError, match="same task"):
        kft.ensemble([members[0], other])


def test_unknown_method_and_non_classifiers_are_refused(members):
    with pytest.raises(EnsembleError, match="Unknown method"):
        kft.ensemble(members, method="median")
    with pytest.raises(EnsembleError, match="not a kerasft classifier"):
        kft.ensemble([keras.Sequential([keras.layers.Dense(2)])])
