"""build_classifier, trainable settings, raw-input predictions and `.keras` round trips."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kerasft as kft
from kerasft import backbones, convert, heads, models


def _texts(data, n=8):
    return np.array([x.numpy().decode() for x, _ in data.test.take(n)], dtype=object)


def _images(data, n=8):
    return np.stack([x.numpy() for x, _ in data.test.take(n)])


def test_text_classifier_takes_raw_strings_and_outputs_probabilities(tiny_bert, tiny_text_data):
    model = kft.build_classifier("tiny_bert", data=tiny_text_data)
    probs = model.predict(_texts(tiny_text_data), verbose=0)
    assert probs.shape == (8, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_image_classifier_takes_any_image_size(tiny_image_data):
    model = kft.build_classifier("mobilenet_v3_small", data=tiny_image_data, pretrained=False, image_size=(32, 32))
    for size in [(32, 32), (48, 40), (20, 20)]:
        probs = model.predict(np.zeros((2, *size, 3), "uint8"), verbose=0)
        assert probs.shape == (2, 2)


@pytest.mark.parametrize("task, num_classes, outputs", [
    ("multiclass", 4, 4), ("binary", 2, 2), ("multilabel", 3, 3), ("regression", None, 1)])
def test_tasks_have_the_right_output_layer(tiny_bert, task, num_classes, outputs):
    model = kft.build_classifier("tiny_bert", num_classes=num_classes, task=task)
    assert model.output.shape[-1] == outputs
    assert heads.task_of(model) == task


def test_keras_file_reloads_without_kerasft_and_predicts_the_same(tiny_bert, tiny_text_data, tmp_path):
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, head=kft.Head(units=(4,)))
    texts = _texts(tiny_text_data)
    expected = model.predict(texts, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "texts.npy", texts)
    # A fresh process that imports only keras (+ keras_hub for the BERT layers), never kerasft.
    script = textwrap.dedent(f"""
        import sys, numpy as np, keras, keras_hub
        model = keras.models.load_model({str(path)!r}, safe_mode=True)
        texts = np.load({str(tmp_path / 'texts.npy')!r}, allow_pickle=True)
        np.save({str(tmp_path / 'out.npy')!r}, model.predict(texts, verbose=0))
        assert "kerasft" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_image_keras_file_round_trips_in_process(tiny_image_data, tmp_path):
    model = kft.build_classifier("resnet50", data=tiny_image_data, pretrained=False, image_size=(32, 32))
    images = _images(tiny_image_data)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)


def test_frozen_backbone_has_no_trainable_weights(tiny_bert):
    model = kft.build_classifier("tiny_bert", num_classes=3, trainable="frozen")
    assert not model.get_layer("network").get_layer("backbone").trainable_weights
    assert model.get_layer("network").get_layer("head").trainable_weights
    assert models.trainable_setting(model) == "frozen"


def test_top_n_unfreezes_only_the_top_blocks(tiny_bert):
    model = kft.build_classifier("tiny_bert", num_classes=3, trainable="top:1")
    backbone = model.get_layer("network").get_layer("backbone")
    trainable = {w.path.split("/")[0] for w in backbone.trainable_weights}
    # pooled_dense trails the last block but feeds only BERT's unused pooled output.
    assert trainable == {"transformer_layer_1"}
    assert models.trainable_setting(model) == "top:1"
    models.set_trainable(model, "all")
    assert models.trainable_setting(model) == "all"


def test_batch_norm_stays_frozen_when_blocks_unfreeze(tiny_image_data):
    model = kft.build_classifier("mobilenet_v2", data=tiny_image_data, pretrained=False, image_size=(32, 32),
                                 trainable="all")
    backbone = model.get_layer("network").get_layer("backbone")
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    assert any(layer.trainable_weights for layer in backbone.layers)


def test_mobilenet_v2_takes_torchvision_weights_when_installed_else_keras_applications(monkeypatch, tmp_path):
    spec = backbones.get("mobilenet_v2")
    torchvision = spec.build(False, (32, 32))
    norms = [layer for layer in torchvision.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert torchvision.layers[1].name == "torch_normalization" and {n.epsilon for n in norms} == {1e-5}
    assert torchvision.get_layer("block_1_pad").padding == ((1, 1), (1, 1))
    assert torchvision.count_params() == spec.params
    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # an environment without the weights package
    assert not convert.asset_installed("mobilenet_v2")
    stock = spec.build(False, (32, 32))
    assert "torch_normalization" not in [layer.name for layer in stock.layers]
    assert {layer.epsilon for layer in stock.layers if isinstance(layer, keras.layers.BatchNormalization)} == {1e-3}
    assert stock.count_params() == spec.params


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(backbones.BackboneError, match="Did you mean 'minilm_l6'"):
        backbones.get("minilm_l8")


@pytest.mark.parametrize("trainable", ["top:0", "top", "some", 3, "top:-1"])
def test_malformed_trainable_is_refused(tiny_bert, trainable):
    with pytest.raises(models.ClassifierError, match="trainable must be"):
        kft.build_classifier("tiny_bert", num_classes=2, trainable=trainable)


def test_top_n_beyond_the_block_count_names_the_count(tiny_bert):
    with pytest.raises(models.ClassifierError, match="it has 2 blocks"):
        kft.build_classifier("tiny_bert", num_classes=2, trainable="top:3")


def test_num_classes_that_disagrees_with_the_data_is_refused(tiny_bert, tiny_text_data):
    with pytest.raises(models.ClassifierError, match="disagrees with the data, which has 2 classes"):
        kft.build_classifier("tiny_bert", num_classes=5, data=tiny_text_data)


def test_image_backbone_on_text_data_is_refused(tiny_text_data):
    with pytest.raises(models.ClassifierError, match="takes image input but the data is text"):
        kft.build_classifier("mobilenet_v2", data=tiny_text_data, pretrained=False)


def test_image_size_below_the_backbone_minimum_is_refused():
    with pytest.raises(models.ClassifierError, match="at least 32x32"):
        kft.build_classifier("mobilenet_v2", num_classes=2, pretrained=False, image_size=(16, 16))


def test_head_rejects_bad_settings():
    with pytest.raises(ValueError, match="dropout must be in"):
        kft.Head(dropout=1.5)
    with pytest.raises(ValueError, match="positive integers"):
        kft.Head(units=(0,))
