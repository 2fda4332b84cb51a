"""fine_tune's two phases on cached bottoms, its guards, time budget, BatchNorm modes, and evaluate's metrics."""

import random
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasft as kft
from conftest import run_fresh
from kerasft import augment, backbones, engine, features, models, training


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


def test_layer_dropped_student_starts_from_the_teachers_layers_and_loads_without_kerasft(tiny_bert4, tiny_text_data,
                                                                                       tmp_path):
    teacher = kft.build_classifier("tiny_bert4", data=tiny_text_data, seed=0)
    teacher_backbone = teacher.get_layer("network").get_layer("backbone")
    assert "layers [0, 2, 3]" in backbones.fewer_layers("tiny_bert4", teacher_backbone, 3).source
    student = kft.distill(teacher, "tiny_bert4", tiny_text_data, student_layers=2, epochs=2, verbose=0)
    backbone = models.describe(student).backbone  # frozen (distill's default): still the teacher's weights
    assert backbone.get_config()["num_layers"] == 2 and student.count_params() < teacher.count_params()
    copied_from = {"token_embedding": "token_embedding", "embeddings_layer_norm": "embeddings_layer_norm",
                   "transformer_layer_0": "transformer_layer_0", "transformer_layer_1": "transformer_layer_3"}
    for name, source in copied_from.items():
        expected = teacher_backbone.get_layer(source).get_weights()
        for mine, theirs in zip(backbone.get_layer(name).get_weights(), expected, strict=True):
            np.testing.assert_array_equal(mine, theirs)
    texts = np.array(list(tiny_text_data.inputs("test")), dtype=object)
    probabilities = student.predict(texts, verbose=0)
    assert probabilities.shape == (len(texts), 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    student.save(tmp_path / "student.keras")
    np.save(tmp_path / "texts.npy", texts)
    run_fresh(f"""
        import sys, numpy as np, keras, keras_hub
        model = keras.models.load_model({str(tmp_path / "student.keras")!r}, safe_mode=True)
        texts = np.load({str(tmp_path / "texts.npy")!r}, allow_pickle=True)
        np.save({str(tmp_path / "reloaded.npy")!r}, model.predict(texts, verbose=0))
        assert "kerasft" not in sys.modules, "the .keras file imported kerasft"
    """)
    np.testing.assert_allclose(np.load(tmp_path / "reloaded.npy"), probabilities, atol=1e-5)


def test_distillation_beats_labels_alone_when_the_teacher_knows_more(tiny_cnn, tiny_image_data):
    # The student's labels are wrong for most bright training images; the teacher learnt from correct ones.
    teacher = kft.build_classifier("tiny_cnn", data=tiny_image_data, seed=0)
    kft.fine_tune(teacher, tiny_image_data, epochs=60, learning_rate=1e-2, seed=0, verbose=0)
    images = np.concatenate([tiny_image_data.inputs("train"), tiny_image_data.inputs("validation")])
    labels = np.concatenate([tiny_image_data.labels("train"), tiny_image_data.labels("validation")])
    noisy = np.where((labels == 1) & (np.random.default_rng(0).random(len(labels)) < 0.7), 0, labels)
    data = kft.data.from_arrays(images, noisy, class_names=tiny_image_data.class_names, validation_split=0.2,
                                test=(tiny_image_data.inputs("test"), tiny_image_data.labels("test")), seed=0)
    recipe = dict(epochs=60, learning_rate=1e-2, class_weight=None, seed=0, verbose=0)
    alone = kft.build_classifier("tiny_cnn", data=data, seed=0)
    kft.fine_tune(alone, data, **recipe)
    student = kft.distill(teacher, "tiny_cnn", data, alpha=0.1, **recipe)
    teacher_accuracy, alone_accuracy, student_accuracy = (kft.evaluate(model, data)["accuracy"]
                                                          for model in (teacher, alone, student))
    assert teacher_accuracy >= 0.9 and student_accuracy >= 0.9 and student_accuracy > alone_accuracy


def test_teacher_labels_the_augmented_images_the_student_sees(tiny_cnn, tiny_image_data):
    teacher = kft.build_classifier("tiny_cnn", data=tiny_image_data, seed=1)
    student = kft.build_classifier("tiny_cnn", data=tiny_image_data, trainable="all", seed=0)
    soft = {split: teacher.predict(tiny_image_data.inputs(split), verbose=0) for split in ("train", "validation")}
    inputs = engine.Inputs(student, tiny_image_data, cuts=["all"], augmented=True, soft_targets=soft, teacher=teacher)
    train, _ = inputs.datasets("all", batch_size=16, seed=0, augmentation=0.5)
    pixels, targets = next(iter(train))
    viewed = pixels.numpy() * 255  # tiny_cnn's preprocessing: 32x32 (the images' size) and x / 255
    clean = tiny_image_data.inputs("train").astype("float32")
    assert all(np.abs(clean - image).max(axis=(1, 2, 3)).min() > 1.0 for image in viewed)  # augmented, not clean
    np.testing.assert_allclose(targets[:, 2:], teacher.predict(viewed, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(targets[:, 1], viewed.mean(axis=(1, 2, 3)) > 115)  # each image's own label
    distilled = kft.distill(teacher, "tiny_cnn", tiny_image_data, trainable="top:1", augmentation=0.5, epochs=1,
                            warmup_epochs=1, patience=0, verbose=0)  # the taught views through the bottom, in fit
    top = distilled.get_layer("network").get_layer("backbone").get_layer("block2_conv")
    assert not np.array_equal(top.get_weights()[0], student.get_layer("network").get_layer("backbone")
                              .get_layer("block2_conv").get_weights()[0])


@pytest.mark.parametrize("case", ["classes", "task", "modality", "no_blocks", "too_many_layers", "other_backbone"])
def test_distillation_refuses_a_mismatched_teacher_or_student_before_any_work(case, tiny_bert4, tiny_cnn,
                                                                              tiny_text_data):
    teacher, student, layers, message = {
        "classes": (("tiny_bert", {"num_classes": 3}), "tiny_bert", None,
                    r"teacher outputs 3 classes but the data has 2 \(\['cats', 'dogs'\]\)"),
        "task": (("tiny_bert", {"num_classes": 2, "task": "multilabel"}), "tiny_bert", None,
                 "The teacher is a multilabel model but the data is binary"),
        "modality": (("tiny_cnn", {"num_classes": 2}), "tiny_bert", None,
                     "The teacher takes image input but the data is text"),
        "no_blocks": (("tiny_cnn", {"num_classes": 2}), "tiny_cnn", 1, None),
        "too_many_layers": (("tiny_bert4", {"num_classes": 2}), "tiny_bert4", 4,
                            "keeps from 2 to 3 of its 4 transformer layers.*Received: 4 layers"),
        "other_backbone": (("tiny_bert", {"num_classes": 2}), "tiny_bert4", 1,
                           "not a tiny_bert4 backbone: it has num_layers=2 where tiny_bert4 has 4"),
    }[case]
    teacher = kft.build_classifier(teacher[0], **teacher[1])
    if case == "no_blocks":  # an image teacher needs image data
        data = kft.data.from_arrays(np.zeros((20, 8, 8, 3), "uint8") + np.arange(20)[:, None, None, None],
                                    np.arange(20) % 2, seed=0)
        message = "Only a backbone made of repeated transformer layers .* 'tiny_cnn' \\(Functional\\) has no num_layers"
    else:
        data = tiny_text_data
    started = []
    with pytest.raises(training.TrainingError, match=message):
        kft.distill(teacher, student, data, student_layers=layers, epochs=1, verbose=0,
                    callbacks=[keras.callbacks.LambdaCallback(on_train_begin=lambda logs: started.append(1))])
    assert not started


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
