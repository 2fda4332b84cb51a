"""The backbone contract: every registered backbone passes the same checks, by being registered.

In the spirit of timm's `tests/test_models.py`: parametrized over
`kft.backbones.names()`, with random weights at small sizes (the pretrained
checks live in test_convert.py and test_end_to_end.py). Each backbone must
- build a raw-input classifier for its modality (image backbones also hear audio),
- unfreeze with `top:N` exactly the layers of its top N blocks, nothing below, with
  BatchNorm frozen, and read the setting back,
- compute the same function when its network is cut at any depth (the feature cache's premise),
- round-trip through `get_config`/`from_config` and a `.keras` file,
- serve the same outputs from its SavedModel (every backbone in the extended tier,
  one text and one image backbone in the fast tier).
A backbone that is not a network (`"tfidf"`, adapted on the training texts) differs where it
legitimately must: it is built from data, and having no blocks it refuses `top:N` and `"all"`
with a clear error and is cut only at `"frozen"`.
The checks are plain functions so that `test_the_contract_catches_a_wrong_block_pattern`
can show they fail on a broken registry entry.
"""

import dataclasses
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasft as kft
from kerasft import backbones, features, keras_internals, models

NAMES = backbones.names()
# The heavier checks run in the fast tier on one backbone per block pattern (backbones that share a pattern
# share the code paths they exercise), and on every backbone in the extended tier.
REPRESENTATIVES = {backbones.get(name).block_pattern: name for name in reversed(NAMES)}.values()
# Exported in the fast tier; the others export in the extended tier (a SavedModel of ResNet-50 takes ~20 s).
EXPORTED_FAST = ("minilm_l6", "mobilenet_v3_small", "tfidf")
TEXTS = np.array(["the cat sat on the mat", "Stocks fell 3% in Tokyo; the yen rose.", "", "ünïcödé 東京 ok"],
                 dtype=object)


@functools.cache
def _texts_to_adapt_on():
    """30 short texts of 3 classes (one per topic word), for backbones adapted on the training texts."""
    topics = ["cat", "stocks", "東京"]
    texts = [f"{TEXTS[i % len(TEXTS)]} {topics[i % 3]} {i}" for i in range(30)]
    return kft.data.from_arrays(texts, [i % 3 for i in range(30)], class_names=topics, seed=0)


def _build(name, trainable="frozen", audio=False):
    spec = backbones.get(name)
    if spec.adapt is not None:
        return kft.build_classifier(name, data=_texts_to_adapt_on(), trainable=trainable, seed=0,
                                    head=kft.Head(units=(4,), dropout=0.0))
    kwargs = {"sequence_length": 16} if spec.modality == "text" else {"image_size": (max(32, spec.min_image_size),) * 2}
    if audio:
        kwargs.update(sample_rate=16000, duration=0.5)
    return kft.build_classifier(name, num_classes=3, pretrained=False, trainable=trainable, seed=0,
                                head=kft.Head(units=(4,), dropout=0.0), **kwargs)


def _inputs(model):
    modality = models.modality_of(model)
    rng = np.random.default_rng(0)
    if modality == "text":
        return TEXTS
    if modality == "audio":
        return (0.3 * rng.standard_normal((2, model.input.shape[-1]))).astype("float32")
    return rng.integers(0, 256, (2, 40, 36, 3)).astype("uint8")  # any size: the model resizes


def _blocks(model, name):
    return backbones.blocks(model.get_layer("network").get_layer("backbone"), backbones.get(name).block_pattern)


@pytest.fixture(scope="module", params=NAMES)
def built(request):
    """(name, classifier) per registered backbone, built once for the checks below."""
    return request.param, _build(request.param)


@pytest.fixture(scope="module", params=[n if n in REPRESENTATIVES else pytest.param(n, marks=pytest.mark.extended)
                                        for n in NAMES])
def built_heavy(request):
    """As `built`, for the heavier checks: every backbone in the extended tier, one per block pattern in the fast."""
    return request.param, _build(request.param)


# === The checks ===


def check_outputs(model):
    probabilities = model.predict(_inputs(model), verbose=0)
    assert probabilities.shape == (len(_inputs(model)), 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def check_top_n(model, name):
    if backbones.get(name).adapt is not None:  # not a network: no blocks, nothing to unfreeze
        for setting in ("top:1", "all"):
            with pytest.raises(models.ClassifierError, match="'frozen' is its only trainable setting"):
                models.set_trainable(model, setting)
        assert models.trainable_setting(model) == "frozen"
        return
    stem, blocks = _blocks(model, name)
    assert len(blocks) >= 2, f"{name}: {len(blocks)} blocks found"
    for depth in sorted({1, 2, len(blocks)}):
        models.set_trainable(model, f"top:{depth}", block_pattern=backbones.get(name).block_pattern)
        unfrozen = {id(layer) for _, layers in blocks[-depth:] for layer in layers}
        for layer in stem + [layer for _, layers in blocks[:-depth] for layer in layers]:
            assert not layer.trainable_weights, f"{name} top:{depth}: {layer.name} below the cut trains"
        for block_name, layers in blocks[-depth:]:
            assert any(layer.trainable_weights for layer in layers), f"{name} top:{depth}: {block_name} is frozen"
        trained = [layer for layer in model.get_layer("network").get_layer("backbone").layers
                   if layer.trainable_weights]
        assert all(id(layer) in unfrozen for layer in trained)
        for layer in keras_internals.flatten_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                assert not layer.trainable, f"{name} top:{depth}: BatchNorm {layer.name} trains"
        assert models.trainable_setting(model) == f"top:{depth}"
    models.set_trainable(model, "frozen")


def check_cuts(model, name):
    depths = 0 if backbones.get(name).adapt is not None else len(_blocks(model, name)[1])
    network = model.get_layer("network")
    preprocessed = model.get_layer("preprocessor")(tf.constant(_inputs(model)))
    expected = keras.ops.convert_to_numpy(network(preprocessed, training=False))
    for depth in range(depths + 1):
        cut = "frozen" if depth == 0 else f"top:{depth}"
        bottom, top = features.split_network(model, cut, backbones.get(name).block_pattern)
        got = keras.ops.convert_to_numpy(top(bottom(preprocessed, training=False), training=False))
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"{name} cut at {cut}")


def check_round_trips(model, path):
    # Trainable flags are state, not architecture (ConvNeXt's LayerScale comes back trainable).
    ignore = ("name", "trainable")
    rebuilt = keras.Model.from_config(model.get_config())
    with keras_internals.vocabulary_in_config(rebuilt):  # KerasHub keeps a rebuilt tokenizer's vocabulary aside
        assert features.unnamed_config(rebuilt.get_config(), ignore) == features.unnamed_config(model.get_config(),
                                                                                                 ignore)
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(_inputs(model), verbose=0), model.predict(_inputs(model), verbose=0),
                               atol=1e-5)


def check_serving(model, path):
    exported = kft.export(model, path, formats=("saved_model",))
    signatures = tf.saved_model.load(exported.saved_model).signatures
    # Raw input as the model takes it: texts and waveforms by serving_default, pixels by predict_pixels.
    serving = signatures["predict_pixels" if models.modality_of(model) == "image" else "serving_default"]
    (key,) = serving.structured_input_signature[1]
    outputs = serving(**{key: tf.constant(_inputs(model))})
    np.testing.assert_allclose(outputs["probabilities"].numpy(), model.predict(_inputs(model), verbose=0), atol=1e-5)


# === Every registered backbone ===


def test_builds_a_raw_input_classifier(built):
    name, model = built
    assert models.modality_of(model) == backbones.get(name).modality
    check_outputs(model)


def test_listed_parameter_count_is_the_built_backbones(built):
    name, model = built
    backbone = model.get_layer("network").get_layer("backbone")
    assert backbones.get(name).params == backbone.count_params(), f"{name}: BackboneSpec.params is stale"


def test_image_backbones_also_hear_audio(built_heavy):
    name, _ = built_heavy
    if not backbones.takes(backbones.get(name), "audio"):
        pytest.skip(f"{name} is a {backbones.get(name).modality} backbone")
    model = _build(name, audio=True)
    assert models.modality_of(model) == "audio"
    check_outputs(model)


def test_top_n_unfreezes_exactly_the_top_blocks_with_batchnorm_frozen(built):
    check_top_n(built[1], built[0])


def test_the_network_cut_at_every_depth_computes_the_same_function(built_heavy):
    check_cuts(built_heavy[1], built_heavy[0])


def test_config_and_keras_file_round_trip(built_heavy, tmp_path):
    check_round_trips(built_heavy[1], tmp_path / "model.keras")


@pytest.mark.parametrize("name", [n for n in NAMES if n in EXPORTED_FAST]
                         + [pytest.param(n, marks=pytest.mark.extended) for n in NAMES if n not in EXPORTED_FAST])
def test_the_saved_model_serves_what_the_model_predicts(name, tmp_path):
    check_serving(_build(name), tmp_path / "export")


# === The contract can fail ===


def test_the_contract_catches_a_wrong_block_pattern():
    """A block pattern that is too fine (each layer of a block its own "block") fails the contract:
    `top:1` would then unfreeze the last layer alone, a weightless activation."""
    good = backbones.get("mobilenet_v3_small")
    broken = backbones.register(dataclasses.replace(good, name="broken_mobilenet",
                                                    block_pattern=r"^(expanded_conv(?:_\d+)?_\w+)$"))
    try:
        with pytest.raises(AssertionError, match=r"broken_mobilenet top:\d+: \w+ is frozen"):
            check_top_n(_build(broken.name), broken.name)
    finally:
        backbones.unregister(broken.name)
