"""fine_tune's two phases on cached bottoms, its guards, time budget, BatchNorm modes, and evaluate's metrics."""

import random
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasft as kft
from kerasft import augment, engine, features, models, training


def test_frozen_fine_tune_learns_a_separable_task(tiny_bert, tiny_text_data):
    # Random-init CNNs with BatchNorm in inference mode can give every image the same features;
    # a random transformer (LayerNorm throughout) still tells "cat" from "dog".
    keras.utils.set_random_seed(0)  # the random backbone's features decide how separable the task is
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, head=kft.Head(units=(64,), dropout=0.0))
    history = kft.fine_tune(model, tiny_text_data, epochs=80, learning_rate=1e-2, patience=15, verbose=0)
    assert set(history.history["phase"]) == {1}
    assert kft.evaluate(model, tiny_text_data)["accuracy"] >= 0.8


def test_partial_fine_tune_runs_both_phases_and_keeps_batch_norm_statistics(tiny_image_data):
    model = kft.build_classifier("mobilenet_v2", data=tiny_image_data, pretrained=False, image_size=(32, 32),
                                 trainable="top:2")
    backbone = model.get_layer("network").get_layer("backbone")
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [np.array(n.moving_mean) for n in norms]
    frozen_kernel = np.array(backbone.get_layer("Conv1").kernel)
    top_kernel = np.array(backbone.get_layer("Conv_1").kernel)
    history = kft.fine_tune(model, tiny_image_data, epochs=2, warmup_epochs=1, patience=0, verbose=0)
    assert history.history["phase"] == [1, 2, 2]
    assert all(np.array_equal(b, np.array(n.moving_mean)) for b, n in zip(before, norms))
    np.testing.assert_array_equal(np.array(backbone.get_layer("Conv1").kernel), frozen_kernel)
    assert not np.array_equal(np.array(backbone.get_layer("Conv_1").kernel), top_kernel)


def test_fine_tuned_model_saves_with_builtin_optimizers_only(tiny_image_data, tmp_path):
    model = kft.build_classifier("resnet50", data=tiny_image_data, pretrained=False, image_size=(32, 32),
                                 trainable="top:1")
    kft.fine_tune(model, tiny_image_data, epochs=1, warmup_epochs=1, patience=0, verbose=0)
    model.save(tmp_path / "model.keras")
    images = np.stack([x.numpy() for x, _ in tiny_image_data.test])
    reloaded = keras.models.load_model(tmp_path / "model.keras")  # DiscriminativeAdam is not registered
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)


def test_text_fine_tune_on_tiny_bert_beats_chance(tiny_bert, tiny_text_data):
    keras.utils.set_random_seed(0)
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, trainable="all")
    kft.fine_tune(model, tiny_text_data, epochs=10, warmup_epochs=2, learning_rate=3e-2,
                  fine_tune_learning_rate=3e-3, patience=0, verbose=0)
    assert kft.evaluate(model, tiny_text_data)["accuracy"] >= 0.7


def test_lower_blocks_get_smaller_learning_rates(tiny_bert):
    model = kft.build_classifier("tiny_bert", num_classes=2, trainable="all")
    factors = engine.layer_factors(model.get_layer("network"), models.describe(model).block_pattern, 0.5)
    backbone = model.get_layer("network").get_layer("backbone")
    top = backbone.get_layer("transformer_layer_1").trainable_weights[0]
    below = backbone.get_layer("transformer_layer_0").trainable_weights[0]
    stem = backbone.get_layer("token_embedding").trainable_weights[0]
    assert factors[id(top)] == 1.0 and factors[id(below)] == 0.5 and factors[id(stem)] == 0.25


def test_auto_class_weight_balances_imbalanced_data():
    images = np.zeros((40, 8, 8, 3), "uint8")
    images[:, 0, 0, 0] = np.arange(40)  # all distinct, so none is dropped as a duplicate
    data = kft.data.from_arrays(images, [0] * 30 + [1] * 10, seed=0)
    weights = engine.class_weight("auto", data)
    assert weights[1] > 2 * weights[0]


def test_model_that_disagrees_with_the_data_is_refused(tiny_bert, tiny_text_data):
    model = kft.build_classifier("tiny_bert", num_classes=3)
    with pytest.raises(training.TrainingError, match="outputs 3 values but the data has 2 classes"):
        kft.fine_tune(model, tiny_text_data, epochs=1, verbose=0)


def test_augmentation_is_refused_for_text_and_outside_0_1(tiny_bert, tiny_text_data, tiny_cnn):
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, trainable="top:1")
    with pytest.raises(augment.AugmentationError, match="augmentation applies to image and audio models; this one "
                                                      "takes text"):
        kft.fine_tune(model, tiny_text_data, epochs=1, augmentation=0.2, verbose=0)
    image_model = kft.build_classifier("tiny_cnn", num_classes=2)
    with pytest.raises(augment.AugmentationError, match=r"augmentation is a strength in \[0, 1\]. Received: 2"):
        augment.augmenter(image_model, 2)


def test_image_augmenter_changes_a_batch_reproducibly_and_keeps_its_shape(tiny_cnn):
    model = kft.build_classifier("tiny_cnn", num_classes=2)
    images = tf.random.stateless_uniform([4, 32, 32, 3], seed=[3, 4])
    first = augment.augmenter(model, 0.5, seed=1)(images).numpy()
    assert first.shape == images.shape and not np.allclose(first, images)
    np.testing.assert_allclose(augment.augmenter(model, 0.5, seed=1)(images), first)


def test_fine_tune_needs_task_data(tiny_bert):
    model = kft.build_classifier("tiny_bert", num_classes=2)
    with pytest.raises(training.TrainingError, match="needs a kft TaskData"):
        kft.fine_tune(model, tf.data.Dataset.range(3), epochs=1)


def test_evaluate_reports_accuracy_f1_and_confusion(tiny_image_data):
    model = kft.build_classifier("mobilenet_v3_small", data=tiny_image_data, pretrained=False, image_size=(32, 32))
    result = kft.evaluate(model, tiny_image_data)
    predicted = result.probabilities.argmax(-1)
    assert result["accuracy"] == pytest.approx(float((predicted == result.labels).mean()))
    assert result.confusion_matrix.sum() == tiny_image_data.size("test")
    assert set(result.per_class) == {"dark", "bright"}
    assert "precision" in result.summary()


def test_pipeline_predictions_equal_raw_input_predictions(tiny_image_data):
    model = kft.build_classifier("mobilenet_v2", data=tiny_image_data, pretrained=False, image_size=(32, 32))
    preprocessed = features.preprocess(model, tiny_image_data.test, batch_size=16)
    via_pipeline = np.concatenate([model.get_layer("network")(x).numpy() for x, _ in preprocessed])
    raw = np.stack([x.numpy() for x, _ in tiny_image_data.test])
    np.testing.assert_allclose(model.predict(raw, verbose=0), via_pipeline, atol=1e-5)


def test_phase_two_that_hurts_validation_keeps_the_phase_one_weights(tiny_image_data):
    model = kft.build_classifier("resnet50", data=tiny_image_data, pretrained=False, image_size=(32, 32),
                                 trainable="all")
    history = kft.fine_tune(model, tiny_image_data, epochs=2, warmup_epochs=3, learning_rate=1e-3,
                            fine_tune_learning_rate=5.0, layer_decay=1.0, verbose=0)  # a rate that wrecks it
    phases = np.array(history.history["phase"])
    losses = np.array(history.history["val_loss"])
    assert not np.nanmin(losses[phases == 2], initial=np.inf) <= losses[phases == 1].min()
    result = kft.evaluate(model, tiny_image_data.validation)
    loss = float(keras.losses.SparseCategoricalCrossentropy()(result.labels, result.probabilities))
    assert loss == pytest.approx(losses[phases == 1].min(), rel=1e-3, abs=1e-5)


def test_distilled_student_learns_from_the_teacher(tiny_bert, tiny_text_data, tmp_path):
    keras.utils.set_random_seed(0)
    teacher = kft.build_classifier("tiny_bert", data=tiny_text_data, trainable="all")
    kft.fine_tune(teacher, tiny_text_data, epochs=10, warmup_epochs=2, learning_rate=3e-2,
                  fine_tune_learning_rate=3e-3, patience=0, verbose=0)
    student = kft.distill(teacher, "tiny_bert", tiny_text_data, temperature=2.0, alpha=0.3, trainable="all",
                          epochs=10, warmup_epochs=2, learning_rate=3e-2, fine_tune_learning_rate=3e-3,
                          patience=0, verbose=0)
    assert kft.evaluate(student, tiny_text_data)["accuracy"] >= 0.7
    texts = np.array([x.numpy().decode() for x, _ in tiny_text_data.test], dtype=object)
    agreement = (student.predict(texts, verbose=0).argmax(-1) == teacher.predict(texts, verbose=0).argmax(-1)).mean()
    assert agreement >= 0.7
    student.save(tmp_path / "student.keras")  # only built-in losses and optimizers left in it
    keras.models.load_model(tmp_path / "student.keras")


def test_distillation_refuses_a_teacher_of_another_task(tiny_bert, tiny_text_data):
    teacher = kft.build_classifier("tiny_bert", num_classes=3)
    with pytest.raises(training.TrainingError, match="teacher outputs 3 classes"):
        kft.distill(teacher, "tiny_bert", tiny_text_data, epochs=1, verbose=0)


def test_phase_two_trains_on_cached_bottoms_and_the_classifier_holds_the_result(tiny_bert, tiny_text_data):
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, trainable="top:1", seed=0)
    kft.fine_tune(model, tiny_text_data, epochs=2, warmup_epochs=2, fine_tune_learning_rate=1e-2, patience=0,
                  verbose=0)
    inputs = engine.Inputs(model, tiny_text_data, cuts=["frozen", "top:1"])
    assert inputs.cache.computed == ["frozen", "top:1"]  # both phases' inputs, one pass
    _, validation = inputs.datasets("top:1", batch_size=16, seed=0)
    _, top = features.split_network(model, "top:1")
    texts = np.array(list(tiny_text_data.inputs("validation")), dtype=object)
    np.testing.assert_allclose(model.predict(texts, verbose=0), top.predict(validation, verbose=0), atol=1e-5)


def test_batchnorm_train_adapts_unfrozen_blocks_only(tiny_image_data):
    model = kft.build_classifier("mobilenet_v2", data=tiny_image_data, pretrained=False, image_size=(32, 32),
                                 trainable="top:1", seed=0)
    backbone = model.get_layer("network").get_layer("backbone")
    stem, blocks = models.describe(model).stem, models.describe(model).blocks
    norms = lambda layers: [l for l in layers if isinstance(l, keras.layers.BatchNormalization)]  # noqa: E731
    top, below = norms(blocks[-1][1]), norms(stem + [l for _, ls in blocks[:-1] for l in ls])
    before = {n.name: np.array(n.moving_mean) for n in top + below}
    kft.fine_tune(model, tiny_image_data, epochs=1, warmup_epochs=1, patience=0, batchnorm="train", verbose=0)
    assert all(np.array_equal(before[n.name], np.array(n.moving_mean)) for n in below)
    assert any(not np.array_equal(before[n.name], np.array(n.moving_mean)) for n in top)
    assert models.batchnorm_setting(model) == "train" and backbone.trainable
    with pytest.raises(training.TrainingError, match="batchnorm must be one of .* Received: batchnorm='adapt'"):
        kft.fine_tune(model, tiny_image_data, batchnorm="adapt", verbose=0)


def test_time_limit_stops_before_an_epoch_that_would_overrun_and_says_so(tiny_bert, tiny_text_data):
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, trainable="top:1", seed=0)
    start = time.monotonic()
    history = kft.fine_tune(model, tiny_text_data, epochs=5000, warmup_epochs=5000, patience=0, time_limit=10,
                            verbose=0)
    assert time.monotonic() - start < 10 * 1.5
    assert any(note.startswith("time limit") for note in history.notes)
    for bad in (0, -1, "10", True):
        with pytest.raises(training.TrainingError, match="time_limit is a number of seconds > 0"):
            kft.fine_tune(model, tiny_text_data, time_limit=bad, verbose=0)


def test_build_and_fine_tune_leave_the_callers_random_streams_alone(tiny_bert, tiny_text_data):
    def draws():
        return random.random(), np.random.random()

    random.seed(5)
    np.random.seed(5)
    expected = draws()
    random.seed(5)
    np.random.seed(5)
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, head=kft.Head(units=(4,)), seed=0)
    kft.fine_tune(model, tiny_text_data, epochs=1, warmup_epochs=1, seed=0, verbose=0)
    assert draws() == expected


def test_hyperparameters_for_another_backbone_are_refused(tiny_bert, tiny_text_data):
    model = kft.build_classifier("tiny_bert", data=tiny_text_data)
    with pytest.raises(training.TrainingError, match="search of backbone 'minilm_l6', but the model's backbone is "
                                                     "'tiny_bert'"):
        kft.fine_tune(model, tiny_text_data, backbone="minilm_l6", verbose=0)
