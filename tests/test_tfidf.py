"""The classic TF-IDF backbone: scikit-learn's weighting in stock Keras layers, adapted on the training split only."""

import re
import string

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

import kerasft as kft
from kerasft import litert, tfidf


def _keras_words(text):
    """The word analyzer of the TF-IDF backbone, in Python: lowercase, strip punctuation, split on whitespace."""
    return re.sub(f"[{re.escape(string.punctuation)}]", "", text.lower()).split()


def test_the_word_vector_is_scikit_learns_tfidf():
    texts = ["The cat sat on the mat.", "A dog sat; the dog ran!", "cats and dogs", "the mat, the mat"]
    preprocessor, backbone = tfidf.adapt(texts, char_ngrams=())
    keras_vectors = backbone(preprocessor(np.array(texts, dtype=object))).numpy()
    sklearn = TfidfVectorizer(analyzer=lambda t: [" ".join(w) for n in (1, 2) for w in zip(*[_keras_words(t)[i:]
                                                                                         for i in range(n)])])
    expected = sklearn.fit_transform(texts).toarray()
    # Same n-grams, in each vectorizer's own order (slot 0 of Keras' is out-of-vocabulary).
    vocabulary = preprocessor.get_layer("words").get_vocabulary()[1:]
    order = [sklearn.vocabulary_[token] for token in vocabulary]
    np.testing.assert_allclose(keras_vectors[:, 1:], expected[:, order], atol=1e-6)


def test_vocabulary_comes_from_the_training_split_only(tiny_text_data):
    model = kft.build_classifier("tfidf", data=tiny_text_data)
    words = set(model.get_layer("preprocessor").get_layer("words").get_vocabulary())
    train_only = {w for t in tiny_text_data.inputs("train") for w in t.split()}
    assert {w for t in tiny_text_data.inputs("test") for w in t.split()} - train_only  # the numbers differ
    assert not {w for w in words if " " not in w} - train_only - {"[UNK]"}


def test_adapting_twice_gives_the_same_vocabulary_and_idf(tiny_text_data):
    """A search rebuilds its best models with data=: their heads must fit the same feature order."""
    texts = tiny_text_data.inputs("train")
    first, second = (tfidf.adapt(texts)[0].get_config() for _ in range(2))
    assert first == second


def test_character_ngrams_classify_text_without_spaces():
    rng = np.random.default_rng(0)
    topics = {"cats": "我的猫喜欢睡觉", "stocks": "股票市场今天下跌"}
    filler = "今天天气很好我们去公园散步"
    texts, labels = [], []
    for i in range(80):
        name = list(topics)[i % 2]
        start = int(rng.integers(0, len(filler) - 4))
        texts.append(filler[start:start + 4] + topics[name] + str(i))
        labels.append(name)
    data = kft.data.from_arrays(texts, labels, seed=0)
    model = kft.build_classifier("tfidf", data=data, seed=0)
    kft.fine_tune(model, data, epochs=10, learning_rate=1e-2, verbose=0)
    assert kft.evaluate(model, data)["accuracy"] == 1.0


def test_bad_settings_are_refused_before_adapting(tiny_text_data):
    with pytest.raises(kft.models.ClassifierError, match="pass data="):
        kft.build_classifier("tfidf", num_classes=2)
    with pytest.raises(tfidf.TfidfError, match=r"word_ngrams must be a tuple .* Received: 2"):
        tfidf.adapt(["a text"], word_ngrams=2)
    with pytest.raises(tfidf.TfidfError, match="non-empty list of training texts"):
        tfidf.adapt([])


def test_litert_export_is_refused_with_a_clear_error(tiny_text_data, tmp_path):
    model = kft.build_classifier("tfidf", data=tiny_text_data)
    with pytest.raises(litert.LiteRTError, match=r"classic TF-IDF model.*formats=\('keras', 'saved_model'\)"):
        kft.export(model, tmp_path / "export", data=tiny_text_data, formats=("litert",))
    assert not (tmp_path / "export").exists()


@pytest.mark.slow
def test_on_bbc_news_the_classic_member_is_as_accurate_as_scikit_learn():
    """The end-to-end truth on real data (bench/fusion.py measures it with C chosen on validation, and wall times)."""
    data = kft.samples.bbc_news(seed=0)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    baseline = LogisticRegression(C=10.0, max_iter=3000).fit(vectorizer.fit_transform(data.inputs("train")),
                                                              data.labels("train"))
    expected = baseline.score(vectorizer.transform(data.inputs("test")), data.labels("test"))
    model = kft.build_classifier("tfidf", data=data, seed=0)
    kft.fine_tune(model, data, epochs=30, learning_rate=1e-2, patience=5, verbose=0)
    assert kft.evaluate(model, data)["accuracy"] >= expected - 0.01
