"""The real pretrained assets on real data, a few dozen to a few hundred examples each (slow)."""

import os
import subprocess
import sys

import pytest

import kerasft as kft

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bbc():
    return kft.samples.bbc_news(seed=0)


def test_pretrained_minilm_features_classify_bbc_news(bbc):
    small = bbc.subset(train=100, validation=40, test=100, seed=0)
    model = kft.build_classifier("minilm_l6", data=small, sequence_length=64)
    kft.fine_tune(model, small, epochs=30, learning_rate=3e-3, patience=5, verbose=0)
    assert kft.evaluate(model, small)["accuracy"] >= 0.85  # chance is 0.2


def test_pretrained_efficientnet_lite0_classifies_fashion_mnist():
    data = kft.samples.fashion_mnist(seed=0).subset(train=300, validation=100, test=300, seed=0)
    model = kft.build_classifier("efficientnet_lite0", data=data, image_size=(64, 64), head=kft.Head())
    kft.fine_tune(model, data, epochs=20, learning_rate=3e-3, patience=4, verbose=0)
    assert kft.evaluate(model, data)["accuracy"] >= 0.7  # chance is 0.1


# The demo recipe (`make demo`) in the fast tier; the others, each ~1 minute, in the extended tier (make test-all).
EXTENDED = pytest.mark.extended


@pytest.mark.parametrize("recipe, output", [
    ("text_classification.py", "model.keras"),
    pytest.param("image_classification.py", "model.keras", marks=EXTENDED),
    pytest.param("distributed_training.py", "export", marks=EXTENDED),  # default strategy; test_distribute: others
    pytest.param("tune_and_ensemble.py", "export", marks=EXTENDED),
    pytest.param("distillation.py", "export", marks=EXTENDED),
    pytest.param("serving.py", "export", marks=EXTENDED),
    pytest.param("audio_classification.py", "export", marks=EXTENDED),
])
def test_recipe_runs_offline_in_smoke_mode(recipe, output, tmp_path):
    env = dict(os.environ, KERASFT_SMOKE="1", KERASFT_OUTPUT=str(tmp_path / output))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", recipe)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout
    assert (tmp_path / output).exists()
