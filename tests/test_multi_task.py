"""Multi-task learning: data with several targets, one backbone with a head per target, trained together through
the one engine, evaluated per target, exported and served as one model (tiny backbones throughout)."""

import csv

import numpy as np
import pytest

import kerasft as kft
from conftest import TINY_VOCAB
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


def test_multi_task_data_is_not_written_to_tfrecord(tmp_path):
    texts, animals, colours = _ticket_texts()
    data = kft.data.from_arrays(texts, {"animal": animals, "colour": colours})
    with pytest.raises(DataError, match=r"has the targets \['animal', 'colour'\]"):
        data.to_tfrecord(tmp_path / "shards")
