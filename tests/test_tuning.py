"""tune(): searches whose trials are fine_tune's recipe, on cached features; results, models, resuming, bad input."""

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time

import keras_tuner
import numpy as np
import pytest

import kerasft as kft
from kerasft import models, tuning

TESTS = os.path.dirname(os.path.abspath(__file__))
FROZEN = {"trainable": "frozen", "learning_rate": (1e-2, 5e-2, "log"), "depth": 0}
COLUMNS = ["trial", "status", "trainable", "depth", "units", "dropout", "learning_rate", "fine_tune_learning_rate",
           "weight_decay", "label_smoothing", "batch_size", "augmentation", "val_accuracy", "epochs", "seconds",
           "features", "peak_rss_mb"]


def _raw(data, split):
    if data.modality == "text":
        return np.array(list(data.inputs(split)), dtype=object)
    return np.stack([x.numpy() for x, _ in getattr(data, split)])


@pytest.fixture(scope="module")
def image_search(tiny_image_data, tmp_path_factory):
    """A 4-trial frozen search on a random-init ResNet50 (23M parameters, 1x1 features at 32x32)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        search = kft.tune(tiny_image_data, "resnet50", tuner="random", max_trials=4, epochs=8, space=FROZEN,
                          directory=tmp_path_factory.mktemp("searches"), pretrained=False, image_size=(32, 32))
    return search, printed.getvalue()


def test_frozen_search_beats_chance_and_reports_every_trial(image_search):
    search, printed = image_search
    rows = search.results()
    assert [list(row) for row in rows] == [COLUMNS] * 4
    assert all(row["status"] == "COMPLETED" and row["features"] == "cached" for row in rows)
    assert max(row["val_accuracy"] for row in rows) >= 0.8
    lines = [line for line in printed.splitlines() if line.startswith("trial ")]
    assert len(lines) == 4 and all("val_accuracy=" in line and "s, cached features" in line for line in lines)
    assert "computed the features at frozen" in printed
    csv_header = (search.directory / "results.csv").read_text().splitlines()[0]
    assert csv_header.split(",") == COLUMNS
    assert (search.directory / "results.md").read_text().startswith("| trial | status | trainable")
    assert (search.directory / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "Best: trial" in search.summary()


def test_frozen_trials_checkpoint_the_head_not_the_backbone(image_search):
    search, _ = image_search
    backbone = search.hypermodel.reference.get_layer("network").get_layer("backbone")
    assert backbone.count_params() > 20_000_000  # ~94 MB of float32 per trial if it were saved
    sizes = [path.stat().st_size for path in search.directory.glob("trial_*/checkpoint.weights.h5")]
    assert len(sizes) == 4 and max(sizes) < 100_000


def test_best_models_are_independent_classifiers_shaped_like_build_classifier(image_search, tiny_image_data):
    search, _ = image_search
    best = search.best_models(2)
    built = kft.build_classifier("resnet50", data=tiny_image_data, pretrained=False, image_size=(32, 32))
    for model in best:
        assert [layer.name for layer in model.layers] == [layer.name for layer in built.layers]
        assert [layer.name for layer in model.get_layer("network").layers] == [
            layer.name for layer in built.get_layer("network").layers]
        assert models.trainable_setting(model) == "frozen"
    first, second = (m.get_layer("network").get_layer("backbone") for m in best)
    assert first is not second and first.weights[0] is not second.weights[0]
    accuracy = (best[0].predict(_raw(tiny_image_data, "test"), verbose=0).argmax(-1)
                == tiny_image_data.labels("test")).mean()
    assert accuracy >= 0.8
    hyperparameters = search.best_hyperparameters(2)
    assert hyperparameters[0]["trainable"] == "frozen" and "units" not in hyperparameters[0]  # depth 0: inactive
    with pytest.raises(tuning.TuningError, match="number of completed trials"):
        search.best_models(5)


def test_directory_of_another_search_is_refused_before_any_work(image_search, tiny_image_data, tiny_bert,
                                                                tiny_text_data):
    search, _ = image_search
    common = dict(directory=search.directory.parent, project_name=search.directory.name, tuner="random",
                  max_trials=4, epochs=8, space=FROZEN, pretrained=False, image_size=(32, 32))
    start = time.time()
    with pytest.raises(tuning.TuningError, match=r"holds a search for another setup \(data: .*overwrite=True"):
        kft.tune(tiny_image_data.subset(train=60), "resnet50", **common)
    with pytest.raises(tuning.TuningError, match="backbone: 'resnet50' there, 'tiny_bert' here"):
        kft.tune(tiny_text_data, "tiny_bert", **{**common, "image_size": None})
    assert time.time() - start < 5  # refused before any backbone was built


@pytest.mark.parametrize("cut", ["frozen", "top:1"])
def test_a_trial_model_on_cached_inputs_computes_what_its_full_classifier_computes(cut, tiny_bert, tiny_text_data):
    space = {"trainable": cut, "depth": 1, "units": 8, "dropout": 0.0, "learning_rate": 1e-2,
             "fine_tune_learning_rate": 1e-3, "weight_decay": 1e-4, "label_smoothing": 0.1, "batch_size": 16}
    hypermodel = tuning.TransferHyperModel(tiny_text_data, "tiny_bert", space=space, epochs=2)
    hp = keras_tuner.HyperParameters()
    trial_model = hypermodel.build(hp)
    metrics = hypermodel.fit(hp, trial_model)
    assert set(metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    _, validation = hypermodel.inputs.datasets(cut, batch_size=16, seed=0)
    on_cached_inputs = trial_model.predict(validation, verbose=0)
    full = hypermodel.full_model(hp, trial_model)
    assert models.trainable_setting(full) == cut
    np.testing.assert_allclose(full.predict(_raw(tiny_text_data, "validation"), verbose=0), on_cached_inputs,
                               atol=1e-5)


def test_fine_tune_with_the_best_hyperparameters_retrains_the_best_trial(tiny_bert, tiny_text_data, tmp_path):
    """Recipe identity: a trial IS fine_tune's recipe, so its hyperparameters give its validation score back."""
    search = kft.tune(tiny_text_data, "tiny_bert", max_trials=4, epochs=3, directory=tmp_path, verbose=0,
                      space={"learning_rate": (1e-2, 1e-1, "log"), "trainable": ["frozen", "top:1"]})
    best = search.tuner.oracle.get_best_trials(1)[0]
    hp = search.best_hyperparameters(1)[0]
    assert set(hp) >= {"backbone", "head", "trainable", "learning_rate", "batch_size", "seed"}
    model = kft.build_classifier(hp["backbone"], data=tiny_text_data, head=hp["head"], seed=hp["seed"])
    kft.fine_tune(model, tiny_text_data, verbose=0, **hp)
    assert abs(kft.evaluate(model, tiny_text_data.validation)["accuracy"] - best.score) <= 1e-4
    other = kft.build_classifier(hp["backbone"], data=tiny_text_data, head=kft.Head(units=(7,)), seed=hp["seed"])
    with pytest.raises(kft.training.TrainingError, match=r"hyperparameters are for a head Head\(units="):
        kft.fine_tune(other, tiny_text_data, verbose=0, **hp)


def test_halving_runs_cheap_frozen_trials_first_and_promotes_the_best_deeper(tiny_bert, tiny_text_data, tmp_path):
    search = kft.tune(tiny_text_data, "tiny_bert", max_trials=5, epochs=2, directory=tmp_path, verbose=0,
                      space={"learning_rate": (1e-2, 1e-1, "log")})
    rows = search.results()
    assert [row["trainable"] for row in rows] == ["frozen"] * 3 + ["top:1", "top:2"]
    frozen = sorted(rows[:3], key=lambda row: -row["val_accuracy"])
    for row in rows[3:]:  # the best frozen configuration, one depth deeper each time
        assert {k: row[k] for k in ("learning_rate", "dropout", "batch_size")} == {
            k: frozen[0][k] for k in ("learning_rate", "dropout", "batch_size")}


def test_hyperband_continues_a_trial_from_its_small_checkpoint(tiny_bert, tiny_text_data, tmp_path):
    search = kft.tune(tiny_text_data, "tiny_bert", tuner="hyperband", max_trials=4, epochs=3, space=FROZEN,
                      directory=tmp_path, verbose=0)
    rows = search.results()
    assert [row["epochs"] for row in rows] == [1, 1, 1, 2]  # three 1-epoch trials, then the best goes on to 3
    continued = search.tuner.oracle.get_trial(rows[-1]["trial"]).hyperparameters.values
    assert continued["tuner/trial_id"] in {"0", "1", "2"} and continued["tuner/initial_epoch"] == 1
    assert search.best_models(1)[0].predict(_raw(tiny_text_data, "test"), verbose=0).shape == (
        tiny_text_data.size("test"), 2)


def test_bayesian_search_runs_on_the_cache(tiny_bert, tiny_text_data, tmp_path):
    search = kft.tune(tiny_text_data, "tiny_bert", tuner="bayesian", max_trials=2, epochs=2, space=FROZEN,
                      directory=tmp_path, verbose=0)
    assert [row["status"] for row in search.results()] == ["COMPLETED", "COMPLETED"]


SEARCH_SCRIPT = textwrap.dedent("""
    import ast, json, sys
    sys.path.insert(0, {tests!r})
    import conftest
    import kerasft as kft
    conftest.tiny_bert_spec("tiny_bert", conftest.TINY_VOCAB)
    texts, labels = json.load(open(sys.argv[1]))
    kft.tune(kft.data.from_arrays(texts, labels, seed=0), "tiny_bert", **ast.literal_eval(open(sys.argv[2]).read()))
""")


def test_search_killed_mid_way_resumes_without_rerunning_finished_trials(tiny_bert, tiny_text_data, tmp_path,
                                                                          capsys):
    splits = ("train", "validation", "test")
    texts = [str(t) for s in splits for t in tiny_text_data.inputs(s)]
    labels = [tiny_text_data.class_names[i] for s in splits for i in tiny_text_data.labels(s)]
    data = kft.data.from_arrays(texts, labels, seed=0)  # what the search process loads too
    args = dict(tuner="random", max_trials=6, epochs=4, space=FROZEN, directory=str(tmp_path / "runs"),
                cache_features="disk")
    (tmp_path / "data.json").write_text(json.dumps([texts, labels]))
    (tmp_path / "args.txt").write_text(repr(args))  # keeps the space's range tuples
    (tmp_path / "search.py").write_text(SEARCH_SCRIPT.format(tests=TESTS))
    project = tmp_path / "runs" / "arrays_tiny_bert_random"
    with open(tmp_path / "search.log", "w") as log:
        process = subprocess.Popen([sys.executable, str(tmp_path / "search.py"), str(tmp_path / "data.json"),
                                    str(tmp_path / "args.txt")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not list(project.glob("trial_*/kerasft_trial.json")):
            assert process.poll() is None, (tmp_path / "search.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial finished in 4 minutes"
            time.sleep(0.1)
        with pytest.raises(tuning.TuningError, match=rf"Another process is searching .*'pid': {process.pid}|"
                                                     rf"Another process is searching .*\"pid\": {process.pid}"):
            kft.tune(data, "tiny_bert", **args)
    finally:
        process.kill()
        process.wait()
    finished = {path.parent.name: (path.read_text(), (path.parent / "trial.json").read_text())
                for path in project.glob("trial_*/kerasft_trial.json")}
    assert 1 <= len(finished) < 6

    search = kft.tune(data, "tiny_bert", **args)
    printed = capsys.readouterr().out
    assert f'"pid": {process.pid}' in printed  # the dead process's lock was taken over
    assert "reusing the frozen feature cache" in printed  # computed on disk by the killed process
    rows = search.results()
    assert [row["trial"] for row in rows] == [str(i) for i in range(6)]
    assert all(row["status"] == "COMPLETED" for row in rows)
    for name, (extra, trial) in finished.items():  # finished trials were not run again
        assert (project / name / "kerasft_trial.json").read_text() == extra
        assert (project / name / "trial.json").read_text() == trial


@pytest.mark.parametrize("kwargs, message", [
    ({"max_trials": 0}, "max_trials must be an integer >= 1"),
    ({"epochs": 0}, "epochs must be None or an integer >= 1"),
    ({"time_limit": -5}, "time_limit is a number of seconds > 0"),
    ({"tuner": "grid"}, "tuner must be one of halving, hyperband, random, bayesian"),
    ({"objective": "val_auc"}, "not logged by a trial .* val_accuracy"),
    ({"objective": "val_mae"}, "not logged by a trial of a binary search"),
    ({"space": {"dropout": (0.6, 0.2)}}, "contradictory: its min 0.6 exceeds its max 0.2"),
    ({"space": {"units": []}}, "empty list"),
    ({"space": {"weight_decay": (0.0, 1e-2, "log")}}, "log scale, so its min must be > 0"),
    ({"space": {"colour": "red"}}, "Unknown hyperparameter 'colour'"),
    ({"space": {"augmentation": 0.1}}, "augmentation applies to images and audio only"),
    ({"space": {"trainable": "top:0"}}, '"frozen", "top:N" with N >= 1, or "all"'),
    ({"space": {"batch_size": (8, 64.0)}}, "an integer >= 1"),
    ({"space": ["frozen"]}, "space must be a dict"),
    ({"cache_features": 3}, "cache_features must be"),
    ({"cache_features": False}, "trials that augment recompute their inputs by themselves"),
    ({"cpu_bfloat16": "on"}, 'cpu_bfloat16 is "auto", True or False. Received: cpu_bfloat16=\'on\''),
])
def test_bad_arguments_are_refused_before_any_work(kwargs, message, tiny_bert, tiny_text_data, tmp_path):
    with pytest.raises(tuning.TuningError, match=message):
        kft.tune(tiny_text_data, "tiny_bert", directory=tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_space_and_data_that_do_not_fit_the_backbone_are_refused(tiny_bert, tiny_text_data, tmp_path):
    with pytest.raises(tuning.TuningError, match="top:5.*has 2 blocks"):
        kft.tune(tiny_text_data, "tiny_bert", directory=tmp_path, space={"trainable": ["frozen", "top:5"]})
    with pytest.raises(tuning.TuningError, match="validation split, and 'arrays' has none"):
        kft.tune(tiny_text_data.subset(validation=0), "tiny_bert", directory=tmp_path)
    (tmp_path / "plain" / "arrays_tiny_bert_random").mkdir(parents=True)
    (tmp_path / "plain" / "arrays_tiny_bert_random" / "oracle.json").write_text("{}")
    with pytest.raises(tuning.TuningError, match="kerasft.tune did not make"):
        kft.tune(tiny_text_data, "tiny_bert", tuner="random", directory=tmp_path / "plain")
