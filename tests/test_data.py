"""Tests for kerasft.data: every loader, the cleaning, the splits and each bad input."""

import io
import json
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasft import data as data_lib
from kerasft.data import DataError, DataWarning


# === Helpers ===

def write_image(path, seed, mode="RGB", size=(10, 8), fmt=None):
    """Writes a small image of random content; returns its path."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def make_image_folder(root, per_class=6, classes=("cat", "dog"), seed=0):
    """Writes `per_class` distinct PNG/JPEG images per class folder."""
    for name in classes:
        for i in range(per_class):
            seed += 1
            write_image(root / name / f"{i}.{'png' if i % 2 else 'jpg'}", seed)
    return root


def make_text_folder(root, texts):
    """Writes {class: [text, ...]} as one .txt file per text."""
    for name, items in texts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(items):
            content = text if isinstance(text, bytes) else text.encode("utf-8")
            (root / name / f"{i:03d}.txt").write_bytes(content)
    return root


def elements(dataset):
    return list(dataset.as_numpy_iterator())


def all_elements(data):
    return [e for split in ("train", "validation", "test") for e in elements(getattr(data, split))]


def class_counts(data, split):
    return np.bincount(data.labels(split), minlength=data.num_classes)


def toy_texts(counts, seed=0):
    """Distinct texts with string labels, `counts` examples per class."""
    texts, labels = [], []
    for c, n in enumerate(counts):
        texts += [f"text {c} {i} {seed}" for i in range(n)]
        labels += [f"class{c}"] * n
    return texts, labels


def write_csv(path, rows, delimiter=","):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file, delimiter=delimiter).writerows(rows)
    return path


# === from_directory: images ===

def test_from_directory_decodes_every_format_and_mode_to_uint8_rgb(tmp_path):
    root = tmp_path / "photos"
    seed = 100
    for name in ("cat", "dog"):
        for mode, ext in [("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("P", "gif"),
                          ("L", "bmp"), ("RGB", "bmp"), ("RGB", "jpeg"), ("LA", "png")]:
            seed += 1
            write_image(root / name / f"{mode}.{ext}", seed, mode=mode, size=(12, 9))
    # An animated GIF: only its first frame is used.
    frames = [Image.fromarray(np.full((9, 12, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(root / "cat" / "anim.gif", save_all=True, append_images=frames[1:])

    data = data_lib.from_directory(root, image_size=(16, 20), validation_split=0.2,
                                   test_split=0.2)

    assert data.class_names == ["cat", "dog"]
    assert (data.modality, data.task, data.input_kind) == ("image", "binary", "files")
    found = all_elements(data)
    assert len(found) == 17
    for x, y in found:
        assert x.shape == (16, 20, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    assert data.train.element_spec[0].shape == (16, 20, 3)
    assert any(abs(float(x.mean()) - 10) < 1 for x, _ in found)  # first GIF frame, not 200


def test_from_directory_without_image_size_keeps_each_size(tmp_path):
    write_image(tmp_path / "a" / "big.png", 1, size=(30, 20))
    write_image(tmp_path / "b" / "small.png", 2, size=(5, 7))

    data = data_lib.from_directory(tmp_path, image_size=None, validation_split=0, test_split=0)

    shapes = sorted(x.shape for x, _ in elements(data.train))
    assert shapes == [(7, 5, 3), (20, 30, 3)]


def test_from_directory_skips_and_reports_unreadable_files(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=4)
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "notes.png").write_text("I am text, not a PNG")
    good = write_image(tmp_path / "elsewhere.jpg", 50).read_bytes()
    (root / "dog" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, "PNG")
    (root / "dog" / "corrupt.png").write_bytes(png.getvalue()[:20] + b"\0" * 60)
    write_image(root / "cat" / ".hidden.png", 60)
    (root / "dog" / ".cache").mkdir()
    write_image(root / "dog" / ".cache" / "thumb.png", 61)
    os.symlink(tmp_path / "elsewhere.jpg", root / "dog" / "linked.jpg")
    os.symlink(tmp_path / "missing.jpg", root / "dog" / "dangling.jpg")

    with pytest.warns(DataWarning) as caught:
        data = data_lib.from_directory(root, image_size=(8, 8))

    bad = ["empty.jpg", "notes.png", "truncated.jpg", "corrupt.png", "dangling.jpg"]
    message = str(caught[0].message)
    assert "5 unreadable files" in message and all(name in message for name in bad)
    summary = data.summary()
    assert "unreadable examples skipped: 5" in summary
    assert all(name in summary for name in bad) and "hidden" not in summary
    assert "empty file (0 bytes)" in summary and "not an image" in summary
    # 8 good images + the symlinked one; every remaining file decodes in the pipeline.
    assert sum(data.size(s) for s in data_lib.SPLITS) == 9
    assert len(all_elements(data)) == 9


def test_from_directory_strict_raises_listing_every_bad_file(tmp_path):
    root = make_image_folder(tmp_path, per_class=3)
    (root / "cat" / "zero.jpg").write_bytes(b"")
    (root / "dog" / "fake.gif").write_text("not a gif")

    with pytest.raises(DataError, match="2 files .* cannot be read") as error:
        data_lib.from_directory(root, strict=True)

    assert "zero.jpg" in str(error.value) and "fake.gif" in str(error.value)


def test_from_directory_drops_duplicate_images_before_splitting(tmp_path):
    root = make_image_folder(tmp_path, per_class=5)
    (root / "cat" / "copy.png").write_bytes((root / "cat" / "1.png").read_bytes())
    (root / "dog" / "copy.jpg").write_bytes((root / "cat" / "0.jpg").read_bytes())

    data = data_lib.from_directory(root, validation_split=0, test_split=0)
    kept = data_lib.from_directory(root, validation_split=0, test_split=0, deduplicate=False)

    assert data.size("train") == 10 and kept.size("train") == 12
    assert data.report.duplicates == 2 and data.report.conflicting_duplicates == 1
    assert "exact duplicates dropped: 2 (1 with a different label)" in data.summary()
    assert not any(p.endswith("copy.png") or p.endswith("copy.jpg")
                   for p in data.inputs("train"))


def test_from_directory_keeps_given_splits_and_drops_train_copies_of_test(tmp_path):
    make_image_folder(tmp_path / "train", per_class=6)
    make_image_folder(tmp_path / "test", per_class=2, classes=("cat",), seed=100)
    write_image(tmp_path / "test" / "dog" / "t.png", 999)
    leaked = tmp_path / "train" / "dog" / "leak.png"
    leaked.write_bytes((tmp_path / "test" / "dog" / "t.png").read_bytes())

    data = data_lib.from_directory(tmp_path, validation_split=0.2, seed=3)

    assert data.size("test") == 3  # the test folder as given
    assert data.report.duplicates == 1
    assert str(leaked) not in set(data.inputs("train")) | set(data.inputs("validation"))
    # Validation is carved from the 12 train images (6 per class, 1 leak dropped).
    assert data.size("train") + data.size("validation") == 12
    assert class_counts(data, "validation").tolist() == [1, 1]


def test_from_directory_uses_a_val_folder_when_present(tmp_path):
    make_image_folder(tmp_path / "train", per_class=3)
    make_image_folder(tmp_path / "val", per_class=1, seed=100)

    data = data_lib.from_directory(tmp_path, validation_split=0.5, test_split=0.25)

    assert data.size("validation") == 2
    assert data.size("train") + data.size("test") == 6 and data.size("test") == 2


@pytest.mark.parametrize("layout, message", [
    ({}, "no class subfolders"),
    ({"cat": 2, "dog": 0}, r"\['dog'\].*no image files"),
    ({"cat": 3}, "at least 2 classes"),
])
def test_from_directory_rejects_folders_that_cannot_make_a_task(tmp_path, layout, message):
    for name, count in layout.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            write_image(tmp_path / name / f"{i}.png", hash((name, i)) % 1000)
    (tmp_path / "README.md").write_text("root files are ignored")

    with pytest.raises(DataError, match=message):
        data_lib.from_directory(tmp_path)


def test_from_directory_names_a_class_whose_files_are_all_unreadable(tmp_path):
    make_image_folder(tmp_path, per_class=2, classes=("cat",))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 nope")

    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"\['dog'\].* no readable"):
        data_lib.from_directory(tmp_path)


def test_from_directory_rejects_a_path_that_is_not_a_folder(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        data_lib.from_directory(tmp_path / "nope")


# === from_directory: texts ===

def test_from_directory_reads_text_folders_and_reports_cleaning(tmp_path):
    root = make_text_folder(tmp_path / "news", {
        "sport": ["goal", "match report", "goal", "   \n"],
        "tech": ["chips", "phones £ cheap".encode("cp1252"), "robots"],
    })

    with pytest.warns(DataWarning, match="001.txt: not UTF-8"):
        data = data_lib.from_directory(root, validation_split=0, test_split=0)

    assert (data.modality, data.name, data.image_size) == ("text", "news", None)
    assert sorted(x.decode() for x, _ in elements(data.train)) == [
        "chips", "goal", "match report", "robots"]
    assert (data.report.duplicates, data.report.empty, len(data.report.skipped)) == (1, 1, 1)
    summary = data.summary()
    assert "exact duplicates dropped: 1" in summary and "empty texts dropped: 1" in summary


def test_from_directory_decodes_non_utf8_text_with_a_fallback_encoding(tmp_path):
    root = make_text_folder(tmp_path, {"a": ["one", "cost £5".encode("cp1252")],
                                       "b": ["two", "three"]})

    data = data_lib.from_directory(root, validation_split=0, test_split=0,
                                   fallback_encoding="cp1252")

    assert "cost £5" in set(data.inputs("train"))
    assert data.report.fallback_decoded == [str(root / "a" / "001.txt")]
    with pytest.raises(DataError, match="001.txt: not UTF-8"):
        data_lib.from_directory(root, strict=True)


def test_from_directory_ignores_files_of_another_kind_and_says_so(tmp_path):
    root = make_image_folder(tmp_path, per_class=3)
    (root / "cat" / "notes.txt").write_text("a note")

    data = data_lib.from_directory(root, validation_split=0, test_split=0)

    assert data.size("train") == 6
    assert "files of another kind ignored: 1" in data.summary()


# === from_csv ===

def test_from_csv_keeps_quoted_newlines_and_commas(tmp_path):
    rows = [["id", "text", "label"], ["1", "line one\nline two, with comma", "pos"],
            ["2", 'she said "hi"', "neg"], ["3", "plain", "pos"], ["4", "other", "neg"]]
    path = write_csv(tmp_path / "reviews.csv", rows)

    data = data_lib.from_csv(path, validation_split=0, test_split=0)

    assert data.name == "reviews" and data.task == "binary"
    assert data.class_names == ["neg", "pos"]
    texts = {x.decode(): data.class_names[y] for x, y in elements(data.train)}
    assert texts == {"line one\nline two, with comma": "pos", 'she said "hi"': "neg",
                     "plain": "pos", "other": "neg"}


def test_from_csv_reads_tsv_and_jsonl_alike(tmp_path):
    texts, labels = toy_texts([4, 4, 4])
    tsv = write_csv(tmp_path / "d.tsv", [["text", "label"], *zip(texts, labels)], "\t")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": l})
                               for t, l in zip(texts, labels)) + "\n\n")

    from_tsv = data_lib.from_csv(tsv)
    from_jsonl = data_lib.from_csv(jsonl)

    assert from_tsv.fingerprint() == from_jsonl.fingerprint()
    assert from_tsv.class_names == ["class0", "class1", "class2"]


def test_from_csv_suggests_the_closest_column(tmp_path):
    path = write_csv(tmp_path / "d.csv", [["review", "sentiment"], ["good", "pos"]])

    with pytest.raises(DataError, match="Column 'label'.*Received columns: "
                                        r"\['review', 'sentiment'\]"):
        data_lib.from_csv(path, text_column="review", label_column="label")
    with pytest.raises(DataError, match="Column 'Sentimnet'.*Did you mean 'sentiment'?"):
        data_lib.from_csv(path, text_column="review", label_column="Sentimnet")
    with pytest.raises(DataError, match="Did you mean 'review'"):
        data_lib.from_csv(path, text_column="reviw", label_column="sentiment")


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("  \n", "is empty"),
    ("text,label\n", "no examples"),
])
def test_from_csv_rejects_empty_files(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_text(content)

    with pytest.raises(DataError, match=message):
        data_lib.from_csv(path)


def test_from_csv_names_rows_with_missing_labels(tmp_path):
    path = write_csv(tmp_path / "d.csv", [["text", "label"], ["a", "x"], ["b", ""],
                                          ["c", "y"], ["d", "NaN"], ["e"]])

    with pytest.raises(DataError, match="3 examples have an empty or NaN label: "
                                        "row 3, row 5, row 6"):
        data_lib.from_csv(path)


def test_from_csv_rejects_labels_mixing_integers_and_names(tmp_path):
    path = write_csv(tmp_path / "d.csv", [["text", "label"], ["a", "1"], ["b", "cat"],
                                          ["c", "2"]])

    with pytest.raises(DataError, match=r"mix integers and text: row 2 \('1'\), row 4 "
                                        r"\('2'\) vs row 3 \('cat'\)"):
        data_lib.from_csv(path)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "cat"}\n')
    with pytest.raises(DataError, match="line 1 .*line 2"):
        data_lib.from_csv(jsonl)


def test_from_csv_names_rows_that_are_not_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\nfine,a\ncaf\xe9,b\nok,a\nna\xefve,b\n".encode("latin-1"))

    with pytest.raises(DataError, match="not valid utf-8: row 3, row 5.*encoding="):
        data_lib.from_csv(path)
    data = data_lib.from_csv(path, encoding="latin-1", validation_split=0, test_split=0)
    assert {"café", "naïve"} <= set(data.inputs("train"))


def test_from_csv_reports_invalid_json_by_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", label}\n')

    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        data_lib.from_csv(path)


def test_from_csv_rejects_other_extensions(tmp_path):
    with pytest.raises(DataError, match=r"\.csv, \.tsv or \.jsonl"):
        data_lib.from_csv(tmp_path / "data.xlsx")


def test_from_csv_sorts_integer_labels_numerically(tmp_path):
    rows = [["text", "label"]] + [[f"t{i}", str(s)] for i, s in enumerate([10, 2, 10, 2, 3, 3])]
    data = data_lib.from_csv(write_csv(tmp_path / "d.csv", rows), validation_split=0,
                             test_split=0)

    assert data.class_names == ["2", "3", "10"]
    assert sorted(data.labels("train").tolist()) == [0, 0, 1, 1, 2, 2]


def test_from_csv_label_separator_makes_multilabel(tmp_path):
    rows = [["text", "label"], ["a", "sport|politics"], ["b", "tech"], ["c", "sport"],
            ["d", "tech | politics"], ["e", "sport"], ["f", "politics"]]
    data = data_lib.from_csv(write_csv(tmp_path / "d.csv", rows), label_separator="|",
                             validation_split=0, test_split=0)

    assert data.task == "multilabel" and data.class_names == ["politics", "sport", "tech"]
    by_text = {x.decode(): y.tolist() for x, y in elements(data.train)}
    assert by_text["a"] == [1.0, 1.0, 0.0] and by_text["d"] == [1.0, 0.0, 1.0]
    assert data.train.element_spec[1].dtype == tf.float32


def test_from_csv_regression_reads_float_labels(tmp_path):
    rows = [["text", "score"]] + [[f"t{i}", f"{i / 4}"] for i in range(8)]
    path = write_csv(tmp_path / "d.csv", rows)

    data = data_lib.from_csv(path, label_column="score", task="regression",
                             validation_split=0.25, test_split=0)
    assert (data.task, data.class_names, data.num_classes) == ("regression", [], 1)
    assert data.labels("train").dtype == np.float32
    assert sorted(np.concatenate([data.labels("train"), data.labels("validation")])) == \
        [i / 4 for i in range(8)]
    assert "mean" in data.summary()
    with pytest.raises(DataError, match="task='regression'"):
        data_lib.from_csv(path, label_column="score")


def test_from_csv_drops_duplicate_and_empty_texts_unless_asked_not_to(tmp_path):
    rows = [["text", "label"], ["same", "a"], ["same", "b"], ["  ", "a"], ["x", "a"],
            ["y", "b"], ["z", "b"]]
    path = write_csv(tmp_path / "d.csv", rows)

    cleaned = data_lib.from_csv(path, validation_split=0, test_split=0)
    raw = data_lib.from_csv(path, validation_split=0, test_split=0, deduplicate=False,
                            drop_empty=False)

    assert cleaned.size("train") == 4 and raw.size("train") == 6
    assert (cleaned.report.duplicates, cleaned.report.conflicting_duplicates,
            cleaned.report.empty) == (1, 1, 1)


# === from_arrays ===

def test_from_arrays_turns_grayscale_rgba_and_float_images_into_uint8_rgb():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    labels = np.array([0, 1] * 3)
    cases = {
        "gray": (gray, gray[..., None].repeat(3, -1)),
        "gray1": (gray[..., None], gray[..., None].repeat(3, -1)),
        "rgba": (np.stack([gray] * 4, -1), gray[..., None].repeat(3, -1)),
        "unit float": (gray.astype(np.float32) / 255, gray[..., None].repeat(3, -1)),
        "0-255 float": (gray.astype(np.float64), gray[..., None].repeat(3, -1)),
    }
    for name, (x, expected) in cases.items():
        data = data_lib.from_arrays(x, labels, validation_split=0, test_split=0)
        got = np.stack([x for x, _ in elements(data.train)])
        assert got.dtype == np.uint8 and got.shape == (6, 5, 4, 3), name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_from_arrays_infers_the_task_from_the_labels():
    x = [f"t{i}" for i in range(8)]
    cases = [
        (np.array([0, 1, 2, 0, 1, 2, 0, 1]), "multiclass", ["0", "1", "2"]),
        ([0, 1] * 4, "binary", ["0", "1"]),
        (np.array([[1], [0]] * 4, np.uint8), "binary", ["0", "1"]),
        (["dog", "cat"] * 4, "binary", ["cat", "dog"]),
        (np.eye(3, dtype=int)[[0, 1, 2, 0, 1, 2, 0, 1]] | np.eye(3, dtype=int)[[1] * 8],
         "multilabel", ["0", "1", "2"]),
        ([["a"], ["a", "b"], ["b"], ["c"]] * 2, "multilabel", ["a", "b", "c"]),
        (np.linspace(0, 1, 8), "regression", []),
    ]
    for y, task, names in cases:
        data = data_lib.from_arrays(x, y, validation_split=0, test_split=0)
        assert (data.task, data.class_names) == (task, names), y
    regression = data_lib.from_arrays(x, [1, 2, 3, 4] * 2, task="regression",
                                      validation_split=0, test_split=0)
    assert regression.labels("train").dtype == np.float32


def test_from_arrays_class_names_name_the_ids():
    data = data_lib.from_arrays([f"t{i}" for i in range(6)], [0, 1, 2] * 2,
                                class_names=["a", "b", "c"], validation_split=0, test_split=0)

    assert data.class_names == ["a", "b", "c"] and data.num_classes == 3
    with pytest.raises(DataError, match=r"in \[0, 2\).*y\[2\] \(2\)"):
        data_lib.from_arrays([f"t{i}" for i in range(6)], [0, 1, 2] * 2, class_names=["a", "b"])


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((3, 4, 4)), [0, 1], r"len\(x\)=3, len\(y\)=2"),
    (np.array([[[np.nan]], [[0.5]]]), [0, 1], "NaN or inf in 1 images: x\\[0\\]"),
    (np.array([[[np.inf]], [[0.5]]]), [0, 1], "finite"),
    (np.full((2, 3, 3), 300, np.int32), [0, 1], r"\[0, 255\]"),
    (np.zeros((2, 3, 3, 2)), [0, 1], "C in 1, 3, 4"),
    ([b"bytes", "str"], [0, 1], r"x\[0\] \(bytes\)"),
    (["a", "b", "c"], ["x", None, "y"], r"empty or NaN label: y\[1\]"),
    (["a", "b", "c"], np.array([0.5, np.nan, 1.0]), r"finite numbers.*y\[1\]"),
    (["a", "b"], ["x", "x"], "at least 2 classes"),
    (["a", "b"], np.array([[0, 2], [1, 0]]), "multi-hot"),
])
def test_from_arrays_rejects_bad_inputs_clearly(x, y, message):
    with pytest.raises(DataError, match=message):
        data_lib.from_arrays(x, y)


def test_from_arrays_rejects_an_unknown_or_contradicted_task():
    with pytest.raises(DataError, match="task must be None or one of"):
        data_lib.from_arrays(["a", "b"], [0, 1], task="clustering")
    with pytest.raises(DataError, match="make a binary task, not 'multilabel'"):
        data_lib.from_arrays(["a", "b"], [0, 1], task="multilabel")
    with pytest.raises(DataError, match=r"class names \(str\) or integers.*y\[0\] \(0\.5\)"):
        data_lib.from_arrays(["a", "b"], [0.5, 1.5], task="multiclass")


def test_from_arrays_keeps_a_given_test_set_and_drops_its_copies_from_train():
    x = np.arange(40, dtype=np.uint8).reshape(10, 2, 2)
    y = np.array([0, 1] * 5)
    x_test = x[:2].copy()
    x_test[1] += 100

    data = data_lib.from_arrays(x, y, test=(x_test, np.array([0, 1])), validation_split=0.25)

    assert data.size("test") == 2
    assert data.report.duplicates == 1
    assert data.size("train") + data.size("validation") == 9


# === Splits ===

@pytest.mark.parametrize("counts", [[50, 30, 20], [7, 13, 101], [2, 40]])
@pytest.mark.parametrize("seed", [0, 1])
def test_splits_keep_class_proportions_within_one_example(counts, seed):
    texts, labels = toy_texts(counts)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = data_lib.from_arrays(texts, labels, validation_split=0.2, test_split=0.1,
                                    seed=seed)

    for split, fraction in (("train", 0.7), ("validation", 0.2), ("test", 0.1)):
        assert np.all(np.abs(class_counts(data, split) - np.array(counts) * fraction) <= 1)
    assert all(class_counts(data, "train") >= 1)
    assert sum(data.size(s) for s in data_lib.SPLITS) == sum(counts)


def test_splits_are_seeded():
    texts, labels = toy_texts([20, 20])

    first = data_lib.from_arrays(texts, labels, seed=7)
    again = data_lib.from_arrays(texts, labels, seed=7)
    other = data_lib.from_arrays(texts, labels, seed=8)

    assert list(first.inputs("test")) == list(again.inputs("test"))
    assert first.fingerprint() == again.fingerprint()
    assert list(first.inputs("test")) != list(other.inputs("test"))
    assert first.fingerprint() != other.fingerprint()


def test_a_rare_class_stays_in_train_and_a_warning_says_how_many_are_needed():
    texts, labels = toy_texts([30, 1])

    with pytest.warns(DataWarning, match="no example of classes class1.*at least 4 examples"):
        data = data_lib.from_arrays(texts, labels, validation_split=0.15, test_split=0.15)

    assert class_counts(data, "train")[1] == 1


def test_multilabel_split_gives_every_class_a_training_example():
    x = [f"t{i}" for i in range(20)]
    y = [["common"]] * 19 + [["common", "rare"]]

    for seed in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            data = data_lib.from_arrays(x, y, validation_split=0.3, test_split=0.3, seed=seed)
        assert data.labels("train")[:, 1].sum() == 1


@pytest.mark.parametrize("validation_split, test_split", [
    (-0.1, 0.1), (1.0, 0.0), (0.5, 0.5), (0.1, 1.5), ("0.1", 0.1)])
def test_bad_split_fractions_are_rejected_before_any_work(tmp_path, validation_split,
                                                          test_split):
    with pytest.raises(DataError, match="must be"):
        data_lib.from_directory(tmp_path / "not-read", validation_split=validation_split,
                                test_split=test_split)


# === TaskData ===

def test_taskdata_exposes_labels_sizes_and_datasets_that_agree():
    texts, labels = toy_texts([12, 8])
    data = data_lib.from_arrays(texts, labels, validation_split=0.25, test_split=0.25)

    for split in data_lib.SPLITS:
        from_pipeline = [y for _, y in elements(getattr(data, split))]
        assert from_pipeline == data.labels(split).tolist()
        assert data.size(split) == len(from_pipeline)
    assert data.num_classes == 2
    with pytest.raises(DataError, match="'valid'"):
        data.labels("valid")


def test_subset_is_stratified_seeded_and_sized():
    texts, labels = toy_texts([60, 30, 10])
    data = data_lib.from_arrays(texts, labels, validation_split=0.2, test_split=0.2)

    small = data.subset(train=20, validation=10, seed=1)

    assert [small.size(s) for s in data_lib.SPLITS] == [20, 10, data.size("test")]
    assert class_counts(small, "train").tolist() == [12, 6, 2]
    assert all(class_counts(small, "validation") >= 1)
    assert small.fingerprint() == data.subset(train=20, validation=10, seed=1).fingerprint()
    assert small.fingerprint() != data.subset(train=20, validation=10, seed=2).fingerprint()
    assert "subset (seed 1)" in small.summary()
    assert len(elements(small.train)) == 20


def test_with_text_windows_adds_labelled_windows_of_long_training_texts_only():
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}_{j}" for j in range(rng.integers(3, 30))) for i in range(40)]
    labels = [f"class{i % 2}" for i in range(40)]
    data = data_lib.from_arrays(texts, labels, validation_split=0.25, test_split=0.25)

    windowed = data.with_text_windows(copies=2, words=8, seed=3)

    train, words = list(data.inputs("train")), [t.split() for t in data.inputs("train")]
    long = [i for i, w in enumerate(words) if len(w) > 8]
    assert 0 < len(long) < len(train)
    assert windowed.size("train") == len(train) + 2 * len(long)
    assert list(windowed.inputs("train")[:len(train)]) == train  # the originals first, as they were
    added, added_labels = windowed.inputs("train")[len(train):], windowed.labels("train")[len(train):]
    for window, label, source in zip(added, added_labels, long + long):
        assert len(window.split()) == 8 and window in train[source]  # 8 consecutive words of its own text
        assert label == data.labels("train")[source]
    for split in ("validation", "test"):
        assert list(windowed.inputs(split)) == list(data.inputs(split))
    assert [x.decode() for x, _ in elements(windowed.train)] == list(windowed.inputs("train"))
    assert list(data.with_text_windows(copies=2, words=8, seed=3).inputs("train")) == list(windowed.inputs("train"))
    assert list(data.with_text_windows(copies=2, words=8, seed=4).inputs("train")) != list(windowed.inputs("train"))
    assert windowed.fingerprint() != data.fingerprint()
    assert f"{2 * len(long)} windows of 8 words added to train" in windowed.summary()


def test_with_text_windows_keeps_every_target_of_multi_task_data():
    texts = [" ".join(f"w{i}_{j}" for j in range(12)) for i in range(40)]
    data = data_lib.from_arrays(texts, {"topic": [f"t{i % 2}" for i in range(40)],
                                        "urgency": [f"u{i % 3}" for i in range(40)]})

    windowed = data.with_text_windows(copies=1, words=4)

    for target in ("topic", "urgency"):
        assert np.array_equal(windowed.labels("train", target), np.tile(data.labels("train", target), 2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(copies=0), "copies as an integer >= 1. Received: copies=0"),
    (dict(words=2.5), "words as an integer >= 1. Received: words=2.5"),
])
def test_with_text_windows_rejects_bad_arguments_and_data_that_is_not_text(kwargs, message):
    texts, labels = toy_texts([5, 5])
    with pytest.raises(DataError, match=message):
        data_lib.from_arrays(texts, labels).with_text_windows(**kwargs)
    images = np.zeros((10, 4, 4, 3), np.uint8) + np.arange(10, dtype=np.uint8)[:, None, None, None]
    with pytest.raises(DataError, match="cuts windows of in-memory texts; 'arrays' holds image"):
        data_lib.from_arrays(images, [0, 1] * 5).with_text_windows()


def test_fingerprint_follows_content_and_labels():
    texts, labels = toy_texts([5, 5])
    base = data_lib.from_arrays(texts, labels).fingerprint()

    assert data_lib.from_arrays(list(texts), list(labels)).fingerprint() == base
    relabelled = ["class1" if i == 0 else l for i, l in enumerate(labels)]
    assert data_lib.from_arrays(texts, relabelled).fingerprint() != base
    edited = ["changed"] + texts[1:]
    assert data_lib.from_arrays(edited, labels).fingerprint() != base


def test_summary_and_repr_describe_the_data():
    texts, labels = toy_texts([10, 6])
    data = data_lib.from_arrays(texts + ["text 0 0 0"], labels + ["class0"], name="toy")

    summary = data.summary()
    assert "TaskData 'toy': text, binary, 2 classes" in summary
    rows = {cells[0]: [int(n) for n in cells[1:]]
            for cells in map(str.split, summary.splitlines())
            if cells and cells[0] in ("class0", "class1", "total")}
    assert rows["class0"] == [6, 2, 2] and rows["class1"] == [4, 1, 1]
    assert rows["total"] == [10, 3, 3]
    assert "exact duplicates dropped: 1" in summary
    assert str(data) == summary
    assert repr(data) == ("TaskData(name='toy', modality='text', task='binary', num_classes=2, "
                          "train=10, validation=3, test=3)")


# === from_tfds (mocked: never touches the network) ===

@pytest.fixture
def no_network(monkeypatch):
    """Fails the test on any attempt to open a connection or resolve a host."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def tfds_dir(tmp_path):
    """A TFDS data_dir holding the metadata of prepared mnist and imdb_reviews."""
    import tensorflow_datasets as tfds

    for name, splits in (("mnist", {"train": 60, "test": 20}),
                         ("imdb_reviews", {"train": 40, "test": 20, "unsupervised": 10})):
        builder = tfds.builder(name, data_dir=tmp_path)
        builder.info.set_splits(tfds.core.SplitDict([
            tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0)
            for s, n in splits.items()]))
        os.makedirs(builder.data_dir, exist_ok=True)
        builder.info.write_to_directory(builder.data_dir)
    return tmp_path


def fake_tfds_split(builder, split, decoders=None, read_config=None, shuffle_files=False):
    """Distinct, balanced examples per split, with one train copy of a test example."""
    n = builder.info.splits[split].num_examples
    offset = 0 if str(split).startswith("train") else 1000
    ids = [offset + i for i in range(n)]
    if str(split).startswith("train"):
        ids[-1] = 1000  # the first test example, leaked into train
    labels = np.array([i % 10 if builder.name == "mnist" else i % 2 for i in ids])
    if builder.name == "mnist":
        images = np.stack([np.full((28, 28, 1), i % 256, np.uint8) for i in ids])
        images[:, 0, 0, 0] = np.array(ids) // 256
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    return tf.data.Dataset.from_tensor_slices(
        {"text": [f"review {i}" for i in ids], "label": labels})


def test_from_tfds_uses_the_datasets_splits_and_class_names(tfds_dir, no_network):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(data_dir=str(tfds_dir), as_dataset_fn=fake_tfds_split):
        mnist = data_lib.from_tfds("mnist", data_dir=tfds_dir, validation_split=0.2)
        imdb = data_lib.from_tfds("imdb_reviews", data_dir=tfds_dir, validation_split=0.25)

    assert (mnist.modality, mnist.task, mnist.class_names) == (
        "image", "multiclass", [str(i) for i in range(10)])
    assert mnist.size("test") == 20 and mnist.report.duplicates == 1
    assert mnist.size("train") + mnist.size("validation") == 59
    x, y = next(iter(mnist.train))
    assert (x.shape, x.dtype, y.dtype) == ((28, 28, 3), tf.uint8, tf.int32)
    assert (imdb.modality, imdb.task, imdb.class_names) == ("text", "binary", ["neg", "pos"])
    assert imdb.size("test") == 20 and imdb.size("validation") == 10
    assert imdb.train.element_spec[0].dtype == tf.string


def test_from_tfds_splits_a_single_split_and_decodes_variable_size_images(tmp_path, no_network):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30):
        data = data_lib.from_tfds("tf_flowers", data_dir=tmp_path, split="train",
                                  download=True, image_size=(24, 24))

    assert data.input_kind == "encoded" and len(data.class_names) == 5
    assert sum(data.size(s) for s in data_lib.SPLITS) == 30
    assert all(x.shape == (24, 24, 3) and x.dtype == np.uint8 for x, _ in all_elements(data))


def test_from_tfds_refuses_to_download_unless_asked(tmp_path, no_network):
    with pytest.raises(DataError, match=f"not prepared in '{tmp_path}.*download=True"):
        data_lib.from_tfds("mnist", data_dir=tmp_path)
