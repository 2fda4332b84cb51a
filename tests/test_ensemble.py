"""Probability ensembles that share identical bottoms, of one kind or fused (classic + transformer, two image
backbones), with weights or a stacking combiner fitted on validation, calibrated; weight soups; and their guards."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kerasft as kft
from conftest import run_fresh
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


def _weights(ens):
    return np.array([ens.get_layer(f"weight_{i}").scale for i in range(2)])


def _nll(model, data):
    result = kft.evaluate(model, data.validation)
    return -np.mean(np.log(result.probabilities[np.arange(len(result.labels)), result.labels]))


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


# === Fused ensembles: members of different kinds ===


@pytest.fixture(scope="module")
def fused(members, tiny_text_data):
    """A classic TF-IDF member and a tiny BERT member on the same data."""
    keras.utils.set_random_seed(0)
    classic = kft.build_classifier("tfidf", data=tiny_text_data, seed=0)
    kft.fine_tune(classic, tiny_text_data, epochs=10, learning_rate=1e-2, verbose=0)
    return [classic, members[1]]


def _log_probabilities(model, texts):
    return np.log(model.predict(texts, verbose=0))


def test_weighted_ensemble_fits_its_weights_on_validation(fused, tiny_text_data):
    """A member that is confidently wrong (the good one's head negated) gets almost no weight."""
    good = fused[0]
    wrong = kft.build_classifier("tfidf", data=tiny_text_data)
    wrong.set_weights(good.get_weights())
    head = wrong.get_layer("network").get_layer("head")
    head.set_weights([-w for w in head.get_weights()])
    ens = kft.ensemble([good, wrong], method="weighted", validation=tiny_text_data)
    weights = _weights(ens)
    assert weights.sum() == pytest.approx(1.0) and weights[1] < 0.1
    texts = _texts(tiny_text_data)
    expected = weights[0] * good.predict(texts, verbose=0) + weights[1] * wrong.predict(texts, verbose=0)
    np.testing.assert_allclose(ens.predict(texts, verbose=0), expected, atol=1e-6)
    assert _nll(ens, tiny_text_data) < _nll(kft.ensemble([good, wrong]), tiny_text_data)


def test_stacking_fits_one_dense_on_the_members_log_probabilities(fused, tiny_text_data):
    ens = kft.ensemble(fused, method="stacking", validation=tiny_text_data)
    texts = _texts(tiny_text_data)
    kernel, bias = ens.get_layer("predictions").get_weights()
    logits = np.concatenate([_log_probabilities(m, texts) for m in fused], axis=-1) @ kernel + bias
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(ens.predict(texts, verbose=0), expected / expected.sum(-1, keepdims=True), atol=1e-5)
    assert kft.heads.task_of(ens) == "binary" and ens.class_names == ("cats", "dogs")
    assert sum(layer.name.startswith("preprocessor_") for layer in ens.layers) == 2  # a vectorizer, a tokenizer


def test_calibrated_mean_ensemble_folds_one_temperature_into_copies_of_the_heads(fused, tiny_text_data):
    texts = _texts(tiny_text_data)
    before = [m.predict(texts, verbose=0) for m in fused]
    plain = kft.ensemble(fused, method="mean")
    calibrated = kft.ensemble(fused, method="mean", validation=tiny_text_data, calibrate=True)
    assert _nll(calibrated, tiny_text_data) < _nll(plain, tiny_text_data)
    np.testing.assert_array_equal(calibrated.predict(texts, verbose=0).argmax(-1),
                                  plain.predict(texts, verbose=0).argmax(-1))
    for member, probabilities in zip(fused, before):  # the members' own heads are untouched
        np.testing.assert_allclose(member.predict(texts, verbose=0), probabilities, atol=1e-7)
    assert "ece" in kft.evaluate(calibrated, tiny_text_data).metrics


def test_fused_ensemble_files_load_and_serve_in_a_fresh_process(fused, tiny_text_data, tmp_path):
    ens = kft.ensemble(fused, method="stacking", validation=tiny_text_data, calibrate=True)
    exported = kft.export(ens, tmp_path / "export", data=tiny_text_data)
    texts = _texts(tiny_text_data)
    np.save(tmp_path / "texts.npy", texts)
    run_fresh(f"""
        import sys, numpy as np, keras, keras_hub, tensorflow as tf, tensorflow_text
        texts = np.load({str(tmp_path / 'texts.npy')!r}, allow_pickle=True)
        model = keras.models.load_model({exported.keras!r}, safe_mode=True)
        serve = tf.saved_model.load({exported.saved_model!r}).signatures["serving_default"]
        np.savez({str(tmp_path / 'out.npz')!r}, keras=model.predict(texts, verbose=0),
                 saved_model=serve(text=tf.constant(list(texts)))["probabilities"].numpy())
        assert "kerasft" not in sys.modules
    """)
    expected = ens.predict(texts, verbose=0)
    outputs = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(outputs["keras"], expected, atol=1e-5)
    np.testing.assert_allclose(outputs["saved_model"], expected, atol=1e-5)


def test_image_members_of_different_backbones_and_sizes_average(tiny_cnn, tiny_image_data):
    first = kft.build_classifier("tiny_cnn", data=tiny_image_data, image_size=(32, 32), seed=0)
    second = kft.build_classifier("mobilenet_v3_small", data=tiny_image_data, image_size=(40, 40), pretrained=False,
                                  seed=0)
    ens = kft.ensemble([first, second], method="mean")
    images = np.stack([x.numpy() for x, _ in tiny_image_data.test]).astype("float32")
    expected = (first.predict(images, verbose=0) + second.predict(images, verbose=0)) / 2
    np.testing.assert_allclose(ens.predict(images, verbose=0), expected, atol=1e-6)
    names = [layer.name for layer in ens.layers]
    assert sum(n.startswith("preprocessor_") for n in names) == sum(n.startswith("bottom_") for n in names) == 2


# === Regression ensembles ===


@pytest.fixture(scope="module")
def regression():
    """Texts whose target is the number of times "cat" appears; a trained classic member and an untrained one."""
    rng = np.random.default_rng(0)
    texts, values = [], []
    for i in range(200):
        cats = int(rng.integers(0, 4))
        words = list(rng.choice(["the", "a", "mat", "sat", "dog", "on"], size=6)) + ["cat"] * cats
        rng.shuffle(words)
        texts.append(" ".join(words) + f" {i}")
        values.append(float(cats))
    data = kft.data.from_arrays(texts, values, task="regression", seed=0)
    good = kft.build_classifier("tfidf", data=data, seed=0)
    kft.fine_tune(good, data, epochs=40, learning_rate=3e-2, verbose=0)
    bad = kft.build_classifier("tfidf", data=data, seed=1)  # untrained: outputs near 0
    return data, good, bad


def _mse(model, data):
    return kft.evaluate(model, data.validation)["rmse"] ** 2


def test_weighted_regression_ensemble_weights_the_better_member_more(regression):
    data, good, bad = regression
    assert _mse(good, data) < _mse(bad, data)
    ens = kft.ensemble([good, bad], method="weighted", validation=data)
    weights = _weights(ens)
    assert weights[0] > 0.8 and weights.sum() == pytest.approx(1.0)
    assert _mse(ens, data) < _mse(kft.ensemble([good, bad]), data)


def test_stacked_regression_ensemble_fits_a_linear_combiner(regression):
    data, good, bad = regression
    ens = kft.ensemble([good, bad], method="stacking", validation=data)
    assert kft.heads.task_of(ens) == "regression"
    assert _mse(ens, data) < _mse(kft.ensemble([good, bad]), data)


# === Bad input ===


def test_members_of_different_class_lists_are_refused_naming_both(tiny_text_data):
    texts, labels = tiny_text_data.inputs("train"), tiny_text_data.labels("train")
    swapped = kft.data.from_arrays(texts, [["dogs", "cats"][i] for i in labels], class_names=["dogs", "cats"], seed=0)
    one, other = (kft.build_classifier("tfidf", data=d) for d in (tiny_text_data, swapped))
    with pytest.raises(EnsembleError, match=r"Member 1 was built for the classes \['dogs', 'cats'\]; member 0 for "
                                            r"\['cats', 'dogs'\]"):
        kft.ensemble([one, other])
    with pytest.raises(EnsembleError, match=r"the validation data \(arrays\) has \['dogs', 'cats'\]"):
        kft.ensemble([one], method="weighted", validation=swapped)


def test_stacking_needs_a_validation_split_big_enough_to_cross_validate(fused, tiny_text_data):
    with pytest.raises(EnsembleError, match=r"method='stacking' needs validation="):
        kft.ensemble(fused, method="stacking")
    small = tiny_text_data.validation.take(6)
    with pytest.raises(EnsembleError, match=r"has 6 examples, and too few of some classes: .*needs at least 5 of "
                                            r"every class \(10 for 2 classes\)"):
        kft.ensemble(fused, method="stacking", validation=small)


def test_calibrating_a_regression_ensemble_is_refused(regression):
    data, good, bad = regression
    with pytest.raises(EnsembleError, match="regression model, whose outputs are values"):
        kft.ensemble([good, bad], validation=data, calibrate=True)
