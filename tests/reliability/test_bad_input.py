"""The bad-input catalogue of tests/reliability/README.md: each case is a clear error or a reported skip."""

import warnings

import numpy as np
import pytest
from PIL import Image

import kerasft as kft
from kerasft.data import DataError, DataWarning


def test_csv_with_mixed_encodings_names_the_rows_and_the_fix(tmp_path):
    path = tmp_path / "mixed.csv"
    rows = [b"text,label", '"caf\u00e9 ok",food'.encode("utf-8"), '"na\u00efve, but latin-1",food'.encode("latin-1"),
            b'"a sport story",sport', b'"another sport story",sport']
    path.write_bytes(b"\n".join(rows * 1) + b"\n")
    with pytest.raises(DataError, match=r"not valid utf-8: row 3 holds other bytes\. Pass encoding="):
        kft.data.from_csv(path)
    path.write_bytes("\n".join(["text,label", '"caf\u00e9 ok",food', '"na\u00efve",food', '"sport",sport',
                                '"sports",sport']).encode("latin-1") + b"\n")
    assert kft.data.from_csv(path, encoding="latin-1").size("train") > 0  # the fix it names works


def test_csv_with_embedded_newlines_keeps_each_quoted_text_whole(tmp_path):
    path = tmp_path / "newlines.csv"
    lines = ["text,label"] + [f'"line one of {i}\nline two, with a comma",{"a" if i % 2 else "b"}' for i in range(20)]
    path.write_text("\n".join(lines) + "\n")
    data = kft.data.from_csv(path, validation_split=0, test_split=0)
    texts = list(data.inputs("train"))
    assert len(texts) == 20 and all("\nline two, with a comma" in t for t in texts)


def test_image_folder_with_symlinks_hidden_empty_and_fake_files_reports_the_skips(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name, level in (("cats", 60), ("dogs", 190)):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.clip(level + rng.normal(0, 30, (24, 24, 3)), 0, 255).astype("uint8")).save(
                root / name / f"{i}.png")
    (root / "cats" / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored
    (root / ".thumbnails").mkdir()  # hidden folder: not a class
    (root / "cats" / "empty.jpg").write_bytes(b"")  # zero bytes
    (root / "dogs" / "notes.png").write_text("not an image at all")  # an image extension, text inside
    (root / "dogs" / "link.png").symlink_to(root / "dogs" / "0.png")  # a symlink to an image: followed
    (root / "dogs" / "dangling.png").symlink_to(tmp_path / "nowhere.png")  # a dangling symlink
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = kft.data.from_directory(root, image_size=(24, 24), validation_split=0.2, test_split=0.2)
    assert data.class_names == ["cats", "dogs"]
    summary = data.summary()
    for name in ("empty.jpg", "notes.png", "dangling.png"):
        assert name in summary or any(name in str(w.message) for w in caught)
    assert ".DS_Store" not in summary and ".thumbnails" not in summary
    assert sum(data.size(s) for s in ("train", "validation", "test")) == 20  # the symlink was a duplicate
    with pytest.raises(DataError, match="empty.jpg"):
        kft.data.from_directory(root, image_size=(24, 24), strict=True)


def test_labels_mixing_integers_and_text_are_refused():
    with pytest.raises(DataError, match=r"Labels mix integers and text: y\[0\] \(1\).* vs y\[1\] \('x'\)"):
        kft.data.from_arrays(["a b c"] * 20, [1, "x"] * 10)


def test_a_50k_class_label_column_is_refused_as_an_identifier():
    texts = [f"text number {i}" for i in range(50_000)]
    with pytest.raises(DataError, match=r"50000 classes for 50000 examples.*identifier or free text"):
        kft.data.from_arrays(texts, [f"id-{i}" for i in range(50_000)])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_in_arrays_are_refused_naming_the_examples(bad):
    images = np.random.default_rng(0).uniform(0, 255, (30, 8, 8, 3))
    images[4, 1, 1, 0] = bad
    with pytest.raises(DataError, match=r"must be finite.*x\[4\]"):
        kft.data.from_arrays(images, [0, 1] * 15)


def test_a_text_column_of_numbers_warns_that_it_is_probably_the_wrong_column(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("text,label\n" + "".join(f"{i * 1.5},{'up' if i % 2 else 'down'}\n" for i in range(30)))
    with pytest.warns(DataWarning, match="Every text in 'numbers' is a number"):
        kft.data.from_csv(path)
