"""kft.auto: one call from data to a calibrated, exported model within a time budget; honest fusion scores."""

import time

import numpy as np
import pytest

import kerasft as kft
from kerasft import automl, ensembling


def test_auto_fuses_calibrates_and_exports_within_its_budget(tiny_bert, tiny_text_data, tmp_path):
    start = time.monotonic()
    result = kft.auto(tiny_text_data, time_limit=90, backbones_to_try=["tfidf", "tiny_bert"],
                      directory=tmp_path / "runs", export_path=tmp_path / "export", verbose=0)
    assert time.monotonic() - start < 90 * 1.15
    assert result.method in result.scores and "tfidf" in result.scores
    assert result.evaluation["accuracy"] >= 0.8 and "ece" in result.evaluation.metrics
    assert (tmp_path / "export" / "model.keras").is_file() and result.report.is_file()
    texts = np.array(list(tiny_text_data.inputs("test")), dtype=object)
    np.testing.assert_allclose(kft.load(tmp_path / "export").predict(list(texts)),
                               result.model.predict(texts, verbose=0), atol=1e-5)


def test_auto_takes_multi_task_data_and_scores_every_target(tiny_bert, tmp_path):
    texts = [f"the {animal} is {colour} {i}" for i, (animal, colour) in enumerate(
        zip(["cat", "dog"] * 60, ["red", "blue", "green"] * 40))]
    animals, colours = [t.split()[1] for t in texts], [t.split()[3] if i % 7 else None for i, t in enumerate(texts)]
    tickets = kft.data.from_arrays(texts, {"animal": animals, "colour": colours})
    start = time.monotonic()
    result = kft.auto(tickets, time_limit=60, backbones_to_try=["tfidf", "tiny_bert"], directory=tmp_path / "runs",
                      export_path=tmp_path / "export", verbose=0)
    assert time.monotonic() - start < 60 * 1.15
    assert result.method in result.scores and all(0.0 <= s <= 1.0 for s in result.scores.values())
    assert {t: result.evaluation[t]["accuracy"] >= 0.8 for t in ("animal", "colour")} == {"animal": True,
                                                                                       "colour": True}
    served = kft.load(tmp_path / "export").predict(texts[:8])
    for target, values in result.model.predict(np.array(texts[:8], dtype=object), verbose=0).items():
        np.testing.assert_allclose(served[target], values, atol=1e-5)
    regression = kft.data.from_arrays(texts, {"animal": animals, "age": np.arange(120.0)})
    with pytest.raises(automl.AutoError, match=r"has the targets \{'age': 'regression'\}"):
        kft.auto(regression, time_limit=60)


def test_fusion_scores_are_cross_fitted_where_fitted_on_validation(tiny_bert, tiny_text_data):
    members = []
    for seed in (0, 1):
        model = kft.build_classifier("tiny_bert", data=tiny_text_data, seed=seed)
        kft.fine_tune(model, tiny_text_data, epochs=3, learning_rate=3e-2, seed=seed, verbose=0)
        members.append(model)
    scores = ensembling.validation_scores(members, tiny_text_data)
    assert set(scores) == {"member 0", "member 1", "mean", "weighted"}  # 18 examples: too few to stack
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert scores["member 0"] == pytest.approx(kft.evaluate(members[0], tiny_text_data.validation)["accuracy"])


def test_bad_budgets_and_data_are_refused_before_any_training(tiny_bert, tiny_cnn, tiny_text_data, tiny_image_data,
                                                               tmp_path):
    with pytest.raises(automl.AutoError, match=r"time_limit=1 s is too small .* needs about \d+ s"):
        kft.auto(tiny_image_data, time_limit=1, backbones_to_try=["tiny_cnn"], directory=tmp_path)
    with pytest.raises(automl.AutoError, match="time_limit is a number of seconds > 0"):
        kft.auto(tiny_text_data, time_limit=0)
    regression = kft.data.from_arrays(["a text", "another one", "a third"] * 10, np.arange(30.0), task="regression")
    with pytest.raises(automl.AutoError, match="regression task"):
        kft.auto(regression, time_limit=60)
    with pytest.raises(automl.AutoError, match="does not take text data"):
        kft.auto(tiny_text_data, backbones_to_try=["tiny_cnn"])
