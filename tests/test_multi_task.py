"""Multi-task learning: data with several targets, one backbone with a head per target, trained together through
the one engine, evaluated per target, exported and served as one model (tiny backbones throughout)."""

import csv
import json
import math
import types

import keras
import numpy as np
import pytest

import kerasft as kft
from conftest import TINY_VOCAB, run_fresh
from kerasft import calibration, engine, ensembling, features, heads, litert, models, multitask, training
from kerasft.serving import ExportError
from kerasft.data import DataError

# === Data with several targets ===


def _ticket_texts(n=120, seed=0):
    """Texts whose first target (animal) and second (colour) are told apart by two independent words."""
    rng = np.random.default_rng(seed)
    filler = TINY_VOCAB[13:17]
    texts, animals, colours = [], [], []
    for i in range(n):
        animal, colour = ("cat", "dog")[i % 2], ("red", "blue", "green")[(i // 2) % 3]
        words = list(rng.choice(filler, size=3)) + [animal, colour]
        rng.shuffle(words)
        texts.append(" ".join(["the", *words, str(i)]))
        animals.append(animal)
        colours.append(colour)
    return texts, animals, colours


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    return path


def test_from_arrays_keeps_each_targets_task_and_classes_and_the_rows_that_miss_one():
    texts, animals, colours = _ticket_texts()
    colours = [None if i % 10 == 0 else c for i, c in enumerate(colours)]
    sizes = [float(i) if i % 4 else np.nan for i in range(len(texts))]
    data = kft.data.from_arrays(texts, {"animal": animals, "colour": colours, "size": sizes},
                                task={"size": "regression"})
    assert list(data.targets) == ["animal", "colour", "size"]
    assert data.targets["colour"] == kft.data.Target("multiclass", ("blue", "green", "red"))
    assert data.targets["size"].task == "regression" and data.targets["size"].num_outputs == 1
    assert (data.task, data.class_names) == ("binary", ["cat", "dog"])  # the first target
    assert sum(data.size(s) for s in kft.data.SPLITS) == len(texts)  # no row dropped for a missing label
    missing = sum(int((data.labels(s, "colour") == -1).sum()) for s in kft.data.SPLITS)
    assert missing == 12
    assert sum(int(np.isnan(data.labels(s, "size")).sum()) for s in kft.data.SPLITS) == 30
    summary = data.summary()
    assert "multi-task, 3 targets" in summary and "target 'colour': multiclass, 3 classes" in summary
    missing_rows = [line.split() for line in summary.splitlines() if line.strip().startswith("missing")]
    assert [sum(map(int, row[1:])) for row in missing_rows] == [0, 12, 30]
    x, y = next(iter(data.train))
    assert set(y) == {"animal", "colour", "size"}
    # Stratified on the first target: each split holds both animals in equal numbers.
    for split in kft.data.SPLITS:
        counts = data.class_counts()[kft.data.SPLITS.index(split)]
        assert counts[0] == counts[1]


def test_stratify_chooses_the_target_the_splits_follow():
    texts, animals, colours = _ticket_texts(n=150)
    data = kft.data.from_arrays(texts, {"animal": animals, "colour": colours}, stratify="colour")
    assert data.stratify == "colour"
    for row in data.class_counts("colour"):
        assert len(set(row.tolist())) == 1  # the three colours equally in every split
    with pytest.raises(DataError, match=r"stratify names a target .* Received: stratify='size'"):
        kft.data.from_arrays(texts, {"animal": animals, "colour": colours}, stratify="size")


def test_subset_and_fingerprint_follow_every_target():
    texts, animals, colours = _ticket_texts()
    data = kft.data.from_arrays(texts, {"animal": animals, "colour": colours})
    small = data.subset(train=20)
    assert small.targets == data.targets and small.size("train") == 20
    assert set(small.labels("train", "colour")) <= {0, 1, 2}
    other = kft.data.from_arrays(texts, {"animal": animals, "colour": colours[1:] + colours[:1]})
    assert other.fingerprint() != data.fingerprint()


def test_from_csv_reads_one_target_per_label_column(tmp_path):
    texts, animals, colours = _ticket_texts()
    rows = [["text", "animal", "colour"]] + [[t, a, "" if i % 6 == 0 else c]
                                              for i, (t, a, c) in enumerate(zip(texts, animals, colours))]
    path = _write_csv(tmp_path / "tickets.csv", rows)
    data = kft.data.from_csv(path, label_column=["animal", "colour"])
    assert list(data.targets) == ["animal", "colour"]
    assert sum(int((data.labels(s, "colour") == -1).sum()) for s in kft.data.SPLITS) == 20


@pytest.mark.parametrize("label_column, match", [
    (["animal", "animal"], r"label_column lists 'animal' more than once.*Received: label_column=\["),
    (["animal", "urgency"], r"Column 'urgency' is not in .* Received columns: \['text', 'animal', 'colour'\]"),
    (["text", "animal"], r"text_column 'text' is also in label_column"),
    (["animal", "colour level"], r"Rename 'colour level'"),
])
def test_from_csv_refuses_a_bad_label_column_list(tmp_path, label_column, match):
    path = _write_csv(tmp_path / "t.csv", [["text", "animal", "colour"], ["a", "cat", "red"], ["b", "dog", "blue"]])
    with pytest.raises(DataError, match=match):
        kft.data.from_csv(path, label_column=label_column)


def test_targets_of_different_lengths_or_with_one_class_are_refused():
    texts, animals, colours = _ticket_texts()
    with pytest.raises(DataError, match=r"len\(x\)=120, len\(y\['animal'\]\)=120, len\(y\['colour'\]\)=119"):
        kft.data.from_arrays(texts, {"animal": animals, "colour": colours[:-1]})
    with pytest.raises(DataError, match=r"Target 'colour': A classification task needs at least 2 classes\. "
                                        r"Received: only \['red'\]"):
        kft.data.from_arrays(texts, {"animal": animals, "colour": ["red"] * len(texts)})


def test_from_directory_takes_the_other_targets_from_a_labels_file(tmp_path):
    texts, animals, colours = _ticket_texts(n=60)
    root = tmp_path / "tickets"
    lines = [["file", "colour"]]
    for i, (text, animal, colour) in enumerate(zip(texts, animals, colours)):
        (root / animal).mkdir(parents=True, exist_ok=True)
        (root / animal / f"{i}.txt").write_text(text)
        if i % 5:
            lines.append([f"{animal}/{i}.txt", colour])
    labels = _write_csv(tmp_path / "colours.csv", lines)
    data = kft.data.from_directory(root, labels_file=labels, label_column=["animal", "colour"])
    assert list(data.targets) == ["animal", "colour"] and data.targets["animal"].class_names == ("cat", "dog")
    assert sum(int((data.labels(s, "colour") == -1).sum()) for s in kft.data.SPLITS) == 12
    _write_csv(tmp_path / "wrong.csv", lines + [["bird/1.txt", "red"]])
    with pytest.raises(DataError, match=r"names files that are not in .*'bird/1.txt'"):
        kft.data.from_directory(root, labels_file=tmp_path / "wrong.csv", label_column=["animal", "colour"])
    with pytest.raises(DataError, match="labels_file= .* and label_column="):
        kft.data.from_directory(root, labels_file=labels)


def test_multi_task_data_goes_to_tfrecord_and_back_with_every_target(tiny_bert, tmp_path):
    texts, animals, colours = _ticket_texts()
    colours = [None if i % 7 == 0 else c for i, c in enumerate(colours)]
    sizes = [None if i % 5 == 0 else float(len(text)) for i, text in enumerate(texts)]
    data = kft.data.from_arrays(texts, {"animal": animals, "colour": colours, "size": sizes}, stratify="colour")
    folder = data.to_tfrecord(tmp_path / "shards", shards=2)
    read = kft.data.from_tfrecord(folder)
    assert read.targets == data.targets and read.stratify == "colour" and read.input_kind == "records"
    for split in ("train", "validation", "test"):
        for target in data.targets:
            np.testing.assert_array_equal(read.labels(split, target), data.labels(split, target))
        assert list(read.inputs(split)) == list(data.inputs(split))
    x, y = next(iter(read.train))
    assert x.numpy().decode() == data.inputs("train")[0]
    assert {t: v.numpy().tolist() for t, v in y.items()} == {t: data.labels("train", t)[0].tolist()
                                                             for t in data.targets}
    scanned = kft.data.from_tfrecord(sorted(folder.glob("train-*.tfrecord"))[:1], validation_split=0.0,
                                     test_split=0.0)  # one file alone: its records are read, not the index
    assert scanned.targets == data.targets and scanned.size("train") == len(data.labels("train")) // 2
    for target in data.targets:
        np.testing.assert_array_equal(np.sort(scanned.labels("train", target)),
                                      np.sort(data.labels("train", target)[:scanned.size("train")]))
    model = kft.build_classifier("tiny_bert", data=read, head=kft.Head(units=(8,)), seed=0)
    kft.fine_tune(model, read, warmup_epochs=2, verbose=0)  # the streamed shards train every head
    assert set(kft.evaluate(model, read).targets) == {"animal", "colour", "size"}


# === One backbone, a head per target, trained together ===


@pytest.fixture(scope="module")
def tickets():
    """150 texts with an animal (binary) and a colour (3 classes, missing on every 7th text)."""
    texts, animals, colours = _ticket_texts(n=150)
    colours = [None if i % 7 == 0 else c for i, c in enumerate(colours)]
    return kft.data.from_arrays(texts, {"animal": animals, "colour": colours})


@pytest.fixture(scope="module")
def trained(tiny_bert, tickets):
    """A tiny BERT multi-task classifier fine-tuned once: the head warm-up, then its top block."""
    keras.utils.set_random_seed(0)  # the random backbone's features decide how separable the task is
    model = kft.build_classifier("tiny_bert", data=tickets, head=kft.Head(units=(32,), dropout=0.0),
                                 trainable="top:1", seed=0)
    history = kft.fine_tune(model, tickets, epochs=1, warmup_epochs=60, learning_rate=1e-2, patience=10, verbose=0)
    return types.SimpleNamespace(model=model, history=history)


def test_a_multi_task_classifier_has_one_backbone_and_one_named_head_per_target(tiny_bert, tickets):
    model = kft.build_classifier("tiny_bert", data=tickets, head={"colour": kft.Head(units=(8,))}, seed=0)
    assert list(model.output) == ["animal", "colour"]
    assert {name: tensor.shape[-1] for name, tensor in model.output.items()} == {"animal": 2, "colour": 3}
    description = models.describe(model)
    assert description.tasks == {"animal": "binary", "colour": "multiclass"} and description.task is None
    head = description.head
    assert [layer.name for layer in head.layers[1:]] == ["animal_head", "colour_head"]
    assert kft.Head.of(head.get_layer("colour_head")).units == (8,)
    assert kft.Head.of(head.get_layer("animal_head")).units == ()
    assert models.class_names_of(model) == {"animal": ("cat", "dog"), "colour": ("blue", "green", "red")}
    assert sum(layer.name == "backbone" for layer in model.get_layer("network").layers) == 1


def test_build_classifier_refuses_per_target_settings_that_do_not_fit(tiny_bert, tickets, tiny_text_data):
    with pytest.raises(models.ClassifierError, match=r"num_classes is for data with one target.*\['animal', "
                                                     r"'colour'\].*Received: num_classes=3"):
        kft.build_classifier("tiny_bert", data=tickets, num_classes=3)
    with pytest.raises(models.ClassifierError, match=r"head names targets the data does not have: \['size'\]"):
        kft.build_classifier("tiny_bert", data=tickets, head={"size": kft.Head()})
    with pytest.raises(models.ClassifierError, match="A dict of heads is for multi-task data"):
        kft.build_classifier("tiny_bert", data=tiny_text_data, head={"label": kft.Head()})


def test_fine_tune_trains_every_target_with_equal_loss_weights(trained, tickets):
    history = trained.history.history
    assert history["phase"][-1] == 2 and {"val_animal_accuracy", "val_colour_accuracy", "val_loss"} <= set(history)
    assert trained.history.loss_weights == {"animal": 1.0, "colour": 1.0}
    result = kft.evaluate(trained.model, tickets)
    assert result["animal"]["accuracy"] >= 0.9 and result["colour"]["accuracy"] >= 0.8
    carried = int((tickets.labels("test", "colour") >= 0).sum())
    assert result["colour"]["num_examples"] == carried < tickets.size("test") == result["animal"]["num_examples"]
    assert "target 'colour':" in result.summary()
    assert result.headline() == "; ".join(f"{t}: accuracy {result[t]['accuracy']:.4f}, ECE {result[t]['ece']:.4f}"
                                          for t in ("animal", "colour"))
    assert result.metrics["animal"]["accuracy"] == result["animal"]["accuracy"]


def test_balanced_loss_weights_give_each_target_an_equal_share_of_the_first_loss(tiny_bert, tickets):
    model = kft.build_classifier("tiny_bert", data=tickets, seed=0)
    history = kft.fine_tune(model, tickets, epochs=1, loss_weights="balanced", verbose=0)
    weights = history.loss_weights
    assert math.isclose(sum(weights.values()) / 2, 1.0)
    # A fresh head starts near ln 2 (binary) and ln 3 (three classes): the weights even them out.
    assert 1.2 < weights["animal"] / weights["colour"] < 1.9


def test_missing_labels_are_masked_out_of_the_loss_and_the_metrics(trained, tickets):
    model = trained.model
    _, validation = engine.Inputs(model, tickets, cuts=["frozen"]).datasets("frozen", 32, seed=0)
    labels = tickets.labels("validation", "colour")
    (_, _, weights), = list(validation)  # one batch: Keras' per-batch means are then the split's means
    np.testing.assert_array_equal(weights["colour"].numpy(), (labels >= 0).astype("float32"))
    part = engine.head_part(features.split_network(model, "frozen")[1])
    losses, metrics = multitask.losses_and_metrics(models.describe(model).tasks)
    part.compile(loss=losses, loss_weights={"animal": 1.0, "colour": 2.0}, weighted_metrics=metrics)
    result = part.evaluate(validation, return_dict=True, verbose=0)
    probabilities = model.predict(tickets.inputs("validation"), verbose=0)["colour"]
    carried = labels >= 0
    expected_loss = -np.log(probabilities[carried, labels[carried]]).mean()
    assert result["colour_loss"] == pytest.approx(expected_loss, abs=1e-4)
    assert result["colour_accuracy"] == pytest.approx((probabilities[carried].argmax(-1) == labels[carried]).mean())
    assert result["loss"] == pytest.approx(result["animal_loss"] + 2 * result["colour_loss"], abs=1e-4)


def test_the_feature_cache_keeps_every_targets_labels_on_disk(trained, tickets, tmp_path):
    model = trained.model
    first = features.FeatureCache(model, tickets, cuts=["frozen"], directory=tmp_path)
    again = features.FeatureCache(model, tickets, cuts=["frozen"], directory=tmp_path)
    assert again.computed == [] and first.computed == ["frozen"]
    _, labels = again.arrays("frozen", "train")
    assert set(labels) == {"animal", "colour"}
    np.testing.assert_array_equal(labels["colour"], tickets.labels("train", "colour"))
    targets = multitask.targets_and_weights(tickets, "train")
    x, (y, w) = next(iter(again.dataset("frozen", "train", batch_size=8, labels=targets)))  # memory-mapped rows
    np.testing.assert_array_equal(w["colour"].numpy(), targets[1]["colour"][:8])
    np.testing.assert_array_equal(y["animal"].numpy(), targets[0]["animal"][:8])


def test_bad_loss_weights_and_mismatched_data_are_refused_before_any_work(trained, tickets, tiny_text_data):
    with pytest.raises(training.TrainingError, match=r"loss_weights names targets the model does not have: "
                                                     r"\['size'\]. Expected some of \['animal', 'colour'\]"):
        kft.fine_tune(trained.model, tickets, loss_weights={"size": 1.0}, verbose=0)
    with pytest.raises(training.TrainingError, match=r"loss_weights maps target names to numbers > 0"):
        kft.fine_tune(trained.model, tickets, loss_weights={"animal": -1.0}, verbose=0)
    with pytest.raises(training.TrainingError, match=r'or is "balanced".*Received: loss_weights=\'equal\''):
        kft.fine_tune(trained.model, tickets, loss_weights="equal", verbose=0)
    with pytest.raises(training.TrainingError, match=r"Received: loss_weights=array\(\[1\., 2\.\]\)"):
        kft.fine_tune(trained.model, tickets, loss_weights=np.array([1.0, 2.0]), verbose=0)
    with pytest.raises(training.TrainingError, match=r"The model has the targets \['animal', 'colour'\] but the "
                                                     r"data .* has one target"):
        kft.fine_tune(trained.model, tiny_text_data, verbose=0)
    single = kft.build_classifier("tiny_bert", data=tiny_text_data)
    with pytest.raises(training.TrainingError, match="loss_weights weigh the targets of a multi-task model"):
        kft.fine_tune(single, tiny_text_data, loss_weights={"label": 1.0}, verbose=0)


def test_distillation_teaches_every_classification_target_of_a_multi_task_student(trained, tickets, tiny_text_data):
    teacher = trained.model
    student = kft.distill(teacher, "tiny_bert", tickets, head=kft.Head(units=(32,), dropout=0.0), epochs=60,
                          learning_rate=1e-2, alpha=0.0, verbose=0)  # the teacher's probabilities alone
    assert heads.tasks_of(student) == {"animal": "binary", "colour": "multiclass"}
    texts = np.array(tickets.inputs("validation"), dtype=object)
    taught, learnt = teacher.predict(texts, verbose=0), student.predict(texts, verbose=0)
    for target in ("animal", "colour"):  # it learnt the teacher's answers, not only the labels it had
        agreement = np.mean(taught[target].argmax(-1) == learnt[target].argmax(-1))
        assert agreement >= 0.8, (target, agreement)
    with pytest.raises(training.TrainingError, match=r"The teacher's targets \(task, outputs\) are one target but "
                                                     r"the data's are \{'animal'"):
        kft.distill(kft.build_classifier("tiny_bert", data=tickets.for_target("colour")), "tiny_bert", tickets)
    with pytest.raises(training.TrainingError, match=r"The teacher's targets .*'animal'.* but the data's are one "
                                                     r"target"):
        kft.distill(teacher, "tiny_bert", tiny_text_data)


def test_a_single_target_model_is_not_read_against_multi_task_data(tiny_bert, tickets, tmp_path):
    single = kft.build_classifier("tiny_bert", data=tickets.for_target("colour"))
    with pytest.raises(kft.evaluation.EvaluationError, match=r"one target but the data .* has the targets "
                                                            r"\['animal', 'colour'\]: evaluate it on data.for_target"):
        kft.evaluate(single, tickets)
    with pytest.raises(ExportError, match=r"pass data.for_target\(<the model's target>\), or class_names"):
        kft.export(single, tmp_path / "single", data=tickets)
    with pytest.raises(multitask.MultiTaskError, match="kft.ensemble's validation data takes"):
        kft.ensemble([single, single], method="weighted", validation=tickets)
    assert kft.evaluate(single, tickets.for_target("colour"))["num_examples"] > 0


# === Served as one model ===

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(trained, tickets, tmp_path_factory):
    """The trained multi-task model exported once; its test texts and in-memory outputs saved beside."""
    work = tmp_path_factory.mktemp("multi_task_export")
    texts = list(tickets.inputs("test")[:6]) + ["the red dog", ""]
    expected = trained.model.predict(np.array(texts, dtype=object), verbose=0)
    np.save(work / "texts.npy", np.array(texts, dtype=object))
    result = kft.export(trained.model, work / "model", data=tickets, metrics=kft.evaluate(trained.model, tickets))
    return types.SimpleNamespace(work=work, texts=texts, expected=expected, exported=result,
                                 class_names={"animal": ["cat", "dog"], "colour": ["blue", "green", "red"]})


def _assert_target_outputs(outputs, expected, class_names):
    for target, probabilities in expected.items():
        np.testing.assert_allclose(outputs[f"{target}_probabilities"], probabilities, atol=TOLERANCE)
        labels = [label.decode() if isinstance(label, bytes) else str(label) for label in outputs[f"{target}_label"]]
        assert labels == [class_names[target][i] for i in probabilities.argmax(-1)]
        np.testing.assert_allclose(outputs[f"{target}_score"], probabilities.max(-1), atol=TOLERANCE)


def test_export_writes_a_label_map_and_a_card_per_target(exported):
    folder = exported.exported.path
    assert open(f"{folder}/labels.txt").read().splitlines() == ["cat", "dog"]  # the first target's
    with open(exported.exported.label_map) as file:
        assert list(json.load(file).items()) == list(exported.class_names.items())
    with open(f"{exported.exported.saved_model}/assets.extra/labels.json") as file:
        assert json.load(file) == exported.class_names
    with open(exported.exported.model_card) as file:
        card = json.load(file)
    assert card["model"]["task"] == {"animal": "binary", "colour": "multiclass"}
    assert card["model"]["outputs"] == {"animal": 2, "colour": 3}
    assert set(card["signatures"]["serving_default"]["outputs"]) == {
        f"{target}_{key}" for target in ("animal", "colour") for key in ("probabilities", "label", "score")}
    assert set(card["metrics"]) == {"animal", "colour"} and "labels.json" in card["files"]
    assert card["data"]["targets"]["colour"]["task"] == "multiclass"


def test_the_multi_output_keras_file_loads_without_kerasft_in_a_fresh_process(exported):
    run_fresh(f"""
        import sys, numpy as np, keras, keras_hub
        model = keras.models.load_model({exported.exported.keras!r}, safe_mode=True)
        texts = np.load({str(exported.work / "texts.npy")!r}, allow_pickle=True)
        outputs = model.predict(texts, verbose=0)
        assert list(outputs) == ["animal", "colour"], list(outputs)
        np.savez({str(exported.work / "keras_out.npz")!r}, **outputs)
        assert "kerasft" not in sys.modules, "the .keras file imported kerasft"
    """)
    outputs = np.load(exported.work / "keras_out.npz")
    for target, probabilities in exported.expected.items():
        np.testing.assert_allclose(outputs[target], probabilities, atol=TOLERANCE)


def test_the_saved_model_serves_every_target_in_a_fresh_process(exported):
    run_fresh(f"""
        import sys, numpy as np, tensorflow as tf
        import tensorflow_text  # registers the tokenizer ops the graph holds
        serve = tf.saved_model.load({exported.exported.saved_model!r}).signatures["serving_default"]
        texts = np.load({str(exported.work / "texts.npy")!r}, allow_pickle=True).astype(str)
        save_outputs({str(exported.work / "sm_out.npz")!r}, serve(text=tf.constant(texts)))
        assert "kerasft" not in sys.modules
    """)
    _assert_target_outputs(dict(np.load(exported.work / "sm_out.npz")), exported.expected, exported.class_names)


@pytest.mark.parametrize("artefact", ["folder", "version"])
def test_load_predicts_a_dict_per_target_and_names_what_a_model_lacks(exported, artefact):
    path = exported.exported.path if artefact == "folder" else exported.exported.saved_model
    predictor = kft.load(path)
    assert predictor.targets == ["animal", "colour"] and predictor.class_names == exported.class_names
    probabilities = predictor.predict(exported.texts)
    for target, expected in exported.expected.items():
        np.testing.assert_allclose(probabilities[target], expected, atol=TOLERANCE)
    everything = predictor.predict_labels(exported.texts)
    labels, scores = predictor.predict_labels(exported.texts, target="colour")
    assert everything["colour"][0] == labels == [exported.class_names["colour"][i]
                                                  for i in exported.expected["colour"].argmax(-1)]
    with pytest.raises(ExportError, match=r"has the targets \['animal', 'colour'\]; it cannot predict 'size'"):
        predictor.predict_labels(exported.texts, target="size")


def test_calibrate_fits_a_temperature_per_target_on_the_rows_that_carry_it(exported, tickets, tiny_text_data,
                                                                             capsys):
    model = keras.models.load_model(exported.work / "model" / "model.keras")  # a copy: the fixture stays as trained
    validation = tickets.validation.map(lambda x, y: x).batch(64)
    labels = {target: tickets.labels("validation", target) for target in ("animal", "colour")}

    def nll(outputs, target):
        carried = labels[target] >= 0
        rows = outputs[target][carried]
        return -np.mean(np.log(rows[np.arange(len(rows)), labels[target][carried]]))

    before = model.predict(validation, verbose=0)
    kft.calibrate(model, tickets)
    after = model.predict(validation, verbose=0)
    printed = capsys.readouterr().out
    for target in ("animal", "colour"):
        np.testing.assert_array_equal(after[target].argmax(-1), before[target].argmax(-1))  # no prediction changes
        assert nll(after, target) <= nll(before, target) + 1e-6  # T = 1 was among the temperatures tried
        carried = int((labels[target] >= 0).sum())
        assert f"target {target!r}: temperature" in printed and f"fitted on {carried} validation examples" in printed
    assert (labels["colour"] < 0).any()  # the colour temperature saw only the rows with a colour
    with pytest.raises(calibration.CalibrationError, match=r"The model's targets are \['animal', 'colour'\] but "
                                                              r"the data .* has one target"):
        kft.calibrate(model, tiny_text_data)
    single = kft.build_classifier("tiny_bert", data=tickets.for_target("colour"))
    with pytest.raises(multitask.MultiTaskError, match=r"this one is multi-task, with the targets"):
        kft.calibrate(single, tickets)


@pytest.fixture(scope="module")
def second(tiny_bert, tickets):
    """Another multi-task classifier of the same backbone and head shape, fine-tuned from another head seed."""
    keras.utils.set_random_seed(1)
    model = kft.build_classifier("tiny_bert", data=tickets, head=kft.Head(units=(32,), dropout=0.0),
                                 trainable="top:1", seed=1)
    kft.fine_tune(model, tickets, epochs=1, warmup_epochs=30, learning_rate=1e-2, patience=10, verbose=0)
    return model


def test_a_mean_ensemble_of_multi_task_models_averages_each_target_and_reloads(trained, second, tickets, tmp_path):
    members = [trained.model, second]
    mean = kft.ensemble(members, method="mean")
    texts = np.array(tickets.inputs("test")[:8], dtype=object)
    outputs, alone = mean.predict(texts, verbose=0), [m.predict(texts, verbose=0) for m in members]
    assert heads.tasks_of(mean) == {"animal": "binary", "colour": "multiclass"}
    for target in ("animal", "colour"):
        np.testing.assert_allclose(outputs[target], (alone[0][target] + alone[1][target]) / 2, atol=1e-6)
    assert kft.evaluate(mean, tickets)["colour"]["num_examples"] > 0
    _assert_exported_ensemble_serves_every_target(mean, tickets, texts, tmp_path / "mean")


def _assert_exported_ensemble_serves_every_target(model, data, texts, folder):
    """The exported `.keras` reloads to the same outputs; the SavedModel serves each target's labels and scores."""
    kft.export(model, folder, data=data)
    outputs = model.predict(texts, verbose=0)
    reloaded = keras.models.load_model(folder / "model.keras")
    for target, values in reloaded.predict(texts, verbose=0).items():
        np.testing.assert_allclose(values, outputs[target], atol=1e-6)
    served = kft.load(sorted(folder.glob("[0-9]*"))[-1]).predict_labels(texts)  # the SavedModel
    for target, (labels, scores) in served.items():
        names = data.targets[target].class_names
        assert list(labels) == [names[i] for i in outputs[target].argmax(-1)]
        np.testing.assert_allclose(scores, outputs[target].max(-1), atol=1e-5)


def test_soups_of_multi_task_models_average_weights_and_greedy_keeps_the_best(trained, second, tickets):
    members = [trained.model, second]
    soup = kft.ensemble(members, method="uniform_soup")
    for got, a, b in zip(soup.get_weights(), trained.model.get_weights(), second.get_weights()):
        np.testing.assert_allclose(got, (a + b) / 2, atol=1e-6)
    assert list(soup.output) == ["animal", "colour"]
    greedy = kft.ensemble(members, method="greedy_soup", validation=tickets, calibrate=True)
    scores = [ensembling.validation_score(m, tickets) for m in members]
    assert ensembling.validation_score(greedy, tickets) >= max(scores) - 1e-9


def _validation_nll(model, data, target):
    labels = data.labels("validation", target)
    rows = labels >= 0
    probabilities = model.predict(np.array(data.inputs("validation"), dtype=object), verbose=0)[target]
    return -np.mean(np.log(probabilities[rows, labels[rows]]))


def test_weighted_ensembles_of_multi_task_models_fit_weights_and_a_temperature_per_target(trained, second, tickets):
    members = [trained.model, second]
    weighted = kft.ensemble(members, method="weighted", validation=tickets)
    texts = np.array(tickets.inputs("test")[:8], dtype=object)
    outputs, alone = weighted.predict(texts, verbose=0), [m.predict(texts, verbose=0) for m in members]
    assert heads.tasks_of(weighted) == {"animal": "binary", "colour": "multiclass"}
    for target in ("animal", "colour"):  # each target's own weights on the simplex (or an equal-weight mean)
        names = [layer.name for layer in weighted.layers]
        weights = ([float(weighted.get_layer(f"{target}_weight_{i}").scale) for i in range(2)]
                   if f"{target}_weight_0" in names else [0.5, 0.5])
        assert sum(weights) == pytest.approx(1.0, abs=1e-6) and min(weights) >= 0
        np.testing.assert_allclose(outputs[target], weights[0] * alone[0][target] + weights[1] * alone[1][target],
                                   atol=1e-6)
    calibrated = kft.ensemble(members, method="weighted", validation=tickets, calibrate=True)
    for target in ("animal", "colour"):  # the temperature is fitted on the rows that carry the target
        assert _validation_nll(calibrated, tickets, target) <= _validation_nll(weighted, tickets, target) + 1e-4
    for member in members:  # the members' own heads are left as they were
        np.testing.assert_allclose(member.predict(texts, verbose=0)["colour"], alone[members.index(member)]["colour"],
                                   atol=1e-6)


def test_a_stacked_multi_task_ensemble_has_a_combiner_per_target_and_serves_every_target(trained, second, tmp_path):
    texts, animals, colours = _ticket_texts(n=150)
    colours = [None if i % 7 == 0 else c for i, c in enumerate(colours)]
    wide = kft.data.from_arrays(texts, {"animal": animals, "colour": colours}, validation_split=0.3, test_split=0.1)
    stacked = kft.ensemble([trained.model, second], method="stacking", validation=wide, calibrate=True)
    assert heads.tasks_of(stacked) == {"animal": "binary", "colour": "multiclass"}
    assert stacked.get_layer("head").get_layer("colour_head").get_layer("predictions").kernel.shape == (6, 3)
    scores = kft.evaluate(stacked, wide)
    assert scores["animal"]["accuracy"] >= 0.9 and scores["colour"]["accuracy"] >= 0.9
    _assert_exported_ensemble_serves_every_target(stacked, wide, np.array(wide.inputs("test")[:8], dtype=object),
                                                  tmp_path / "stacked")


def test_multi_task_ensembles_refuse_what_they_cannot_fit_and_mismatched_members(trained, tickets, tiny_text_data):
    with pytest.raises(ensembling.EnsembleError, match=r"target 'colour': The validation split has 18 examples, "
                                                       r"and too few of some classes: \{'green': 4\}; stacking"):
        kft.ensemble([trained.model, trained.model], method="stacking", validation=tickets)
    with pytest.raises(ensembling.EnsembleError, match=r"method='weighted' needs validation= data with the members' "
                                                       r"targets \['animal', 'colour'\] .*Received: validation=None"):
        kft.ensemble([trained.model, trained.model], method="weighted")
    single = kft.build_classifier("tiny_bert", data=tickets.for_target("colour"))
    with pytest.raises(ensembling.EnsembleError, match=r"Member 1 has the targets \(task, outputs\) one target; "
                                                       r"member 0 has \{'animal': \('binary', 2\)"):
        kft.ensemble([trained.model, single])
    with pytest.raises(ensembling.EnsembleError, match=r"Member 1 has the targets .*'animal'.*member 0 has one target"):
        kft.ensemble([single, trained.model])
    with pytest.raises(ensembling.EnsembleError, match=r"the validation data \(.*\) has one target"):
        kft.ensemble([trained.model, trained.model], method="greedy_soup", validation=tiny_text_data)


def test_tune_scores_every_target_and_its_best_recipe_retrains_through_fine_tune(tiny_bert, tickets, tmp_path):
    search = kft.tune(tickets, "tiny_bert", tuner="random", max_trials=3, epochs=3, directory=tmp_path, verbose=0,
                      space={"learning_rate": (1e-2, 1e-1, "log"), "trainable": ["frozen", "top:1"]})
    best = search.tuner.oracle.get_best_trials(1)[0]
    scores = {name: best.metrics.get_last_value(name) for name in ("val_animal_accuracy", "val_colour_accuracy")}
    assert best.score == pytest.approx(sum(scores.values()) / 2)  # the objective: the targets' mean accuracy
    assert all(row["status"] == "COMPLETED" for row in search.results())
    hp = search.best_hyperparameters(1)[0]
    model = kft.build_classifier(hp["backbone"], data=tickets, head=hp["head"], seed=hp["seed"])
    kft.fine_tune(model, tickets, verbose=0, **hp)  # the same recipe: the same validation scores
    result = kft.evaluate(model, tickets.validation)
    for name, score in scores.items():
        assert abs(result[name.split("_")[1]]["accuracy"] - score) <= 1e-4
    assert heads.tasks_of(search.best_models(1)[0]) == {"animal": "binary", "colour": "multiclass"}
    colour = kft.tune(tickets, "tiny_bert", tuner="random", max_trials=1, epochs=1, directory=tmp_path / "colour",
                      objective="val_colour_accuracy", space={"trainable": "frozen"}, verbose=0)
    assert colour.objective.name == "val_colour_accuracy"
    with pytest.raises(kft.tuning.TuningError, match=r"not logged by a trial of a multi-task search; a trial logs "
                                                     r".*val_animal_accuracy"):
        kft.tune(tickets, "tiny_bert", objective="val_size_accuracy", directory=tmp_path / "x", verbose=0)


def test_litert_files_hold_every_target_and_load_back_per_target(exported, tickets, tmp_path, capsys):
    model = keras.models.load_model(exported.work / "model" / "model.keras")
    written = kft.export(model, tmp_path / "lite", data=tickets, formats=("litert",), quantize="dynamic").litert
    assert sorted(written) == ["dynamic", "float32"]
    printed = capsys.readouterr().out
    assert "model.tflite [animal]" in printed and "model_dynamic.tflite [colour]" in printed  # parity per target
    card = json.loads((tmp_path / "lite" / "model_card.json").read_text())
    assert set(card["litert"]["output"]) == {"animal_probabilities", "colour_probabilities"}
    assert set(card["litert"]["files"]["model.tflite"]["targets"]) == {"animal", "colour"}
    texts = exported.texts[:6]
    lite = kft.load(tmp_path / "lite" / "model.tflite")
    outputs = lite.predict(texts)
    for target in ("animal", "colour"):  # float32: the Keras model's probabilities
        np.testing.assert_allclose(outputs[target], exported.expected[target][:6], atol=1e-4)
    labels = lite.predict_labels(texts)
    assert set(labels) == {"animal", "colour"} and len(labels["colour"][0]) == 6
    with pytest.raises(litert.LiteRTError, match=r"The model's targets are .* but the data's .* are 'multiclass'"):
        kft.export(model, tmp_path / "other", data=tickets.for_target("colour"), formats=("litert",))
    assert not (tmp_path / "other").exists()


def test_a_litert_file_that_loses_one_targets_accuracy_is_refused_naming_the_target():
    scores = {"animal": {"keras_accuracy": 1.0, "litert_accuracy": 1.0, "accuracy_drop": 0.0, "top1_agreement": 1.0},
              "colour": {"keras_accuracy": 0.9, "litert_accuracy": 0.8, "accuracy_drop": 0.1, "top1_agreement": 0.9}}
    report = {"file": "model_int8.tflite", "quantization": "int8", "split": "test", "examples": 10, "targets": scores}
    with pytest.raises(litert.AccuracyDropError, match=r"model_int8.tflite target 'colour' \(int8\) is 10.0 accuracy "
                                                       r"points below the Keras model"):
        litert._guard(report, 0.01, None)
    litert._guard(report, 0.2, None)  # within the tolerance: accepted


def test_for_target_gives_one_targets_data_on_the_same_splits(tickets):
    colour = tickets.for_target("colour")
    assert colour.targets is None and colour.class_names == ["blue", "green", "red"] and colour.task == "multiclass"
    for split in kft.data.SPLITS:
        carried = tickets.labels(split, "colour") >= 0
        np.testing.assert_array_equal(colour.labels(split), tickets.labels(split, "colour")[carried])
        assert list(colour.inputs(split)) == list(tickets.inputs(split)[carried])
    with pytest.raises(DataError, match=r"has the targets \['animal', 'colour'\]. Received: target='size'"):
        tickets.for_target("size")
