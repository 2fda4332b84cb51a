"""TFRecord shards: TaskData.to_tfrecord -> from_tfrecord keeps every example, label and split; other shards scan."""

import os

import numpy as np
import pytest
import tensorflow as tf

import kerasft as kft
from kerasft.data import DataError, SPLITS
from kerasft.data import tfrecord


def _elements(data, split):
    return [(x.numpy(), y.numpy()) for x, y in getattr(data, split)]


def _assert_same_examples(read, original):
    assert read.class_names == original.class_names and read.task == original.task
    assert read.modality == original.modality and read.image_size == original.image_size
    for split in SPLITS:
        np.testing.assert_array_equal(read.labels(split), original.labels(split))
        elements, expected = _elements(read, split), _elements(original, split)
        assert len(elements) == len(expected) == read.size(split)
        for (x, y), (x_expected, y_expected) in zip(elements, expected):
            np.testing.assert_array_equal(x, x_expected)
            np.testing.assert_array_equal(y, y_expected)


@pytest.mark.parametrize("kind", ["pixels", "folder", "text", "audio", "multilabel", "regression"])
def test_to_tfrecord_and_back_keeps_every_example_label_and_split(kind, tiny_image_data, tiny_text_data, tmp_path):
    from PIL import Image

    import conftest

    if kind == "pixels":
        original = tiny_image_data
    elif kind == "folder":
        for i, image in enumerate(tiny_image_data.inputs("train")[:40]):
            (tmp_path / "photos" / str(i % 2)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(tmp_path / "photos" / str(i % 2) / f"{i}.png")
        original = kft.data.from_directory(tmp_path / "photos", image_size=(16, 16))
    elif kind == "text":
        original = tiny_text_data
    elif kind == "audio":
        clips = [conftest.tone(None if i % 2 else 300.0, seed=i) for i in range(24)]
        original = kft.data.from_arrays(clips, ["hiss", "hum"] * 12, sample_rate=conftest.RATE, duration=0.5)
    elif kind == "multilabel":
        tags = [["cat"], ["dog"], ["cat", "dog"]] * 14
        original = kft.data.from_arrays([f"text {i}" for i in range(42)], tags)
    else:
        original = kft.data.from_arrays([f"value {i}" for i in range(40)], np.linspace(0, 1, 40), task="regression")
    folder = original.to_tfrecord(tmp_path / "shards", shards=2)
    read = kft.data.from_tfrecord(folder)
    assert read.input_kind == "records" and read.name == original.name
    assert all(np.asarray(read._splits[s].inputs).dtype.kind == "i" for s in SPLITS)  # record numbers, no inputs
    _assert_same_examples(read, original)
    assert read.summary().splitlines()[:-3] == original.summary().splitlines()[:-3]  # header and class table
    small = read.subset(train=10, seed=1)
    np.testing.assert_array_equal(small.labels("train"), [y for _, y in _elements(small, "train")])
    assert len(read.inputs("test")) == read.size("test")
    # The shards read again give the same data, and so the same fingerprint (caches keyed on it are reused).
    assert kft.data.from_tfrecord(folder).fingerprint() == read.fingerprint()


def test_shards_split_by_file_and_the_folder_appears_whole(tiny_image_data, tmp_path):
    folder = tiny_image_data.to_tfrecord(tmp_path / "shards", shards=4)
    manifest = kft.paths.read_json(folder / tfrecord.MANIFEST)
    assert [name.split("-")[0] for name in manifest["files"]] == ["train"] * 4 + ["validation"] * 4 + ["test"] * 4
    assert sum(f["records"] for f in manifest["files"].values()) == sum(tiny_image_data.size(s) for s in SPLITS)
    assert sorted(os.listdir(tmp_path)) == ["shards"]  # no staging folder left
    with pytest.raises(DataError, match="already exists and is not an empty folder"):
        tiny_image_data.to_tfrecord(folder)
    with pytest.raises(DataError, match="shards must be a positive integer"):
        tiny_image_data.to_tfrecord(tmp_path / "other", shards=0)
    options = kft.data.from_tfrecord(folder).train.options()
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.FILE


def test_a_shard_holds_whole_files_as_tf_distribute_shares_them_and_the_shards_partition_each_split(
        tiny_image_data, tmp_path):
    data = kft.data.from_tfrecord(tiny_image_data.to_tfrecord(tmp_path / "shards", shards=4))
    for split in SPLITS:
        numbers = data._examples(split).inputs  # the records' numbers, in the order the split is read
        files = data.source.file_of(numbers)
        rank = {file: i for i, file in enumerate(sorted(set(files)))}  # the split's files, in order
        parts = [data.shard_positions(split, 3, i) for i in range(3)]
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(data.size(split)))
        for i, part in enumerate(parts):  # worker i of 3: files i, i + 3, ... whole
            assert {rank[f] % 3 for f in files[part]} <= {i} and set(files[part]) == {
                f for f in files if rank[f] % 3 == i}
    mine = data.shard(3, 1)
    assert mine.size("train") == len(data.shard_positions("train", 3, 1)) > 0
    np.testing.assert_array_equal(mine.labels("train"), data.labels("train")[data.shard_positions("train", 3, 1)])
    assert [int(y) for _, y in mine.train] == list(mine.labels("train"))  # its pipeline reads its records
    in_memory = tiny_image_data.shard(2, 1)  # not read from files: every other example
    np.testing.assert_array_equal(in_memory.labels("validation"), tiny_image_data.labels("validation")[1::2])
    with pytest.raises(DataError, match=r"index in \[0, count\). Received: count=2, index=2"):
        tiny_image_data.shard(2, 2)


def _write(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for features in records:
            feature = {}
            for key, value in features.items():
                values = value if isinstance(value, list) else [value]
                if isinstance(values[0], bytes):
                    feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
                elif isinstance(values[0], float):
                    feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                else:
                    feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_other_shards_are_scanned_for_labels_and_splits(tmp_path):
    words = ["alpha", "beta", "gamma", "delta"]
    for shard in range(2):
        _write(tmp_path / f"part-{shard}.tfrecord",
               [{"input": f"{words[i % 4]} text {shard} {i}".encode(), "label": [b"even", b"odd"][i % 2]}
                for i in range(20)] + [{"input": b"   ", "label": b"odd"}])
    data = kft.data.from_tfrecord(tmp_path / "*.tfrecord", validation_split=0.2, test_split=0.2, seed=3)
    assert data.modality == "text" and data.class_names == ["even", "odd"]  # read from the first record
    assert sum(data.size(s) for s in SPLITS) == 40 and data.report.empty == 2
    texts = [x.numpy().decode() for x, _ in data.train]
    np.testing.assert_array_equal([y.numpy() for _, y in data.train], data.labels("train"))
    assert all(int(t.split()[-1]) % 2 == label for t, label in zip(texts, data.labels("train")))

    (tmp_path / "tagged").mkdir()
    _write(tmp_path / "tagged" / "a.tfrecord",
           [{"input": f"t{i}".encode(), "label": [b"x", b"y"] if i % 3 else [b"x"], "split": b"test" if i < 4
             else b"train"} for i in range(20)])
    tagged = kft.data.from_tfrecord(tmp_path / "tagged", validation_split=0.0, task="multilabel")
    assert tagged.task == "multilabel" and tagged.size("test") == 4 and tagged.size("validation") == 0


@pytest.mark.parametrize("records, message", [
    ([{"label": 1}], r"a\.tfrecord record 0 has no 'input' feature"),
    ([{"input": b"a", "label": 0, "split": b"train"}, {"input": b"b", "label": 1}],
     "Some records carry a 'split' feature and others do not"),
    ([{"input": b"a", "label": 0, "split": b"dev"}], r"'split' features must be one of"),
])
def test_bad_shards_are_refused_naming_the_record(records, message, tmp_path):
    _write(tmp_path / "a.tfrecord", records)
    with pytest.raises(DataError, match=message):
        kft.data.from_tfrecord(tmp_path / "a.tfrecord", modality="text")


def test_damaged_or_mismatched_shards_are_refused(tiny_text_data, tmp_path):
    folder = tiny_text_data.to_tfrecord(tmp_path / "shards", shards=2)
    with pytest.raises(DataError, match=r"modality='image' disagrees with the shards' manifest, which says 'text'"):
        kft.data.from_tfrecord(folder, modality="image")
    with pytest.raises(DataError, match="No TFRecord files match"):
        kft.data.from_tfrecord(tmp_path / "nothing-*.tfrecord")
    shard = folder / "train-00001-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-7])  # truncated after it was written
    with pytest.raises(DataError, match=r"train-00001-of-00002\.tfrecord is truncated or altered"):
        kft.data.from_tfrecord(folder)
    with pytest.raises(DataError, match=r"train-00001-of-00002\.tfrecord is not a whole TFRecord file"):
        kft.data.from_tfrecord([shard])  # alone: scanned, and the damage is named
