"""The classic text backbone: TF-IDF of word and character n-grams, made of stock Keras layers.

A TF-IDF backbone is not loaded but adapted: its vocabularies and inverse
document frequencies are computed from the training texts
(`kft.build_classifier("tfidf", data=data)` adapts them on `data.train`) and
kept in the layers' configs, so a `.keras` file of the classifier reloads with
plain Keras (`safe_mode=True`). It fills the same places as a network:

```
"preprocessor"  raw strings -> {"words": TF-IDF of word n-grams, "chars": TF-IDF of character n-grams}
                (two TextVectorization layers in "tf_idf" mode; vocabulary and idf in their configs)
"network"
  ├─ "backbone"  L2-normalizes each vector and joins them: one unit vector per text (no weights, no blocks)
  ├─ "pooling"   Identity: the features already are one vector per text
  └─ "head"      a linear (or one hidden layer) head, as on any backbone
```
Character n-grams let it read text written without spaces (Chinese, Japanese,
Thai), where a whitespace "word" is a whole sentence. The term frequency is
the raw count: Keras has no stock layer for scikit-learn's `sublinear_tf`, and
on BBC News it made no difference beyond one test article either way (measured
with scikit-learn on the same split). The idf is scikit-learn's smooth idf,
`ln((1 + n) / (1 + df)) + 1`; out-of-vocabulary n-grams weigh 0.

Having no blocks, it trains only at `trainable="frozen"`: the feature cache and
`fine_tune`'s head phase see the TF-IDF vector as the frozen feature.
"""

import keras
import numpy as np
import tensorflow as tf

# The two vectors, in the order the backbone joins them: name -> TextVectorization settings.
_ANALYZERS = {
    "words": {"split": "whitespace", "standardize": "lower_and_strip_punctuation"},
    "chars": {"split": "character", "standardize": "lower"},
}


class TfidfError(ValueError):
    """The texts or settings a TF-IDF backbone is adapted from are wrong."""


def adapt(texts, word_ngrams=(1, 2), char_ngrams=(2, 3, 4), max_words=20_000, max_chars=20_000, batch_size=256):
    """Adapts a TF-IDF preprocessor and backbone on training texts.

    Args:
        texts: sequence of str. The training texts (vocabularies and document
            frequencies come from them only).
        word_ngrams: tuple of int. Sizes of the word n-grams, e.g. `(1, 2)`.
        char_ngrams: tuple of int. Sizes of the character n-grams (spaces
            included), e.g. `(2, 3, 4)`; `()` leaves characters out.
        max_words: int. Most frequent word n-grams kept (the out-of-vocabulary
            slot included).
        max_chars: int. Most frequent character n-grams kept.
        batch_size: int. Texts per batch while adapting.

    Returns:
        `(preprocessor, backbone)`: `preprocessor` maps raw strings to a dict of
        TF-IDF vectors (`"words"`, and `"chars"` unless `char_ngrams=()`);
        `backbone` maps that dict to one L2-normalized vector per text.

    Example:
    >>> preprocessor, backbone = kft.tfidf.adapt(data.inputs("train"))
    >>> backbone(preprocessor(tf.constant(["a short text"]))).shape
    TensorShape([1, 40000])
    """
    texts = np.asarray(texts, dtype=object)
    if texts.ndim != 1 or not len(texts) or not all(isinstance(t, str) for t in texts):
        raise TfidfError(f"A TF-IDF backbone adapts on a non-empty list of training texts. Received "
                         f"{type(texts).__name__} of shape {texts.shape}.")
    settings = {"words": (_check_ngrams("word_ngrams", word_ngrams, allow_none=False), max_words),
                "chars": (_check_ngrams("char_ngrams", char_ngrams, allow_none=True), max_chars)}
    for name, (_, max_tokens) in settings.items():
        if not isinstance(max_tokens, int) or max_tokens < 2:
            raise TfidfError(f"max_{name} must be an integer >= 2 (the out-of-vocabulary slot and one n-gram). "
                             f"Received: {max_tokens!r}")
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string)).batch(batch_size)
    raw = keras.Input(shape=(), dtype="string", name="text")
    vectors = {name: _vectorizer(name, dataset, len(texts), ngrams, max_tokens)(raw)
               for name, (ngrams, max_tokens) in settings.items() if ngrams}
    preprocessor = keras.Model(raw, vectors, name="preprocessor")
    return preprocessor, _backbone({name: vector.shape[-1] for name, vector in vectors.items()})


def _check_ngrams(name, ngrams, allow_none):
    sizes = tuple(ngrams) if isinstance(ngrams, (tuple, list)) else None
    if sizes is None or (not sizes and not allow_none) or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise TfidfError(f"{name} must be a tuple of n-gram sizes >= 1, e.g. (1, 2)"
                         + (" or () to leave them out" if allow_none else "") + f". Received: {ngrams!r}")
    return sizes


def _vectorizer(name, dataset, num_texts, ngrams, max_tokens):
    """A TextVectorization in "tf_idf" mode whose vocabulary and idf, adapted on `dataset`, are in its config."""
    settings = dict(ngrams=ngrams, **_ANALYZERS[name])
    counter = keras.layers.TextVectorization(max_tokens=max_tokens, output_mode="multi_hot", **settings)
    counter.adapt(dataset)
    documents = sum(counter(batch).numpy().sum(axis=0) for batch in dataset)  # texts holding each n-gram
    idf = np.log((1 + num_texts) / (1 + documents)) + 1
    idf[0] = 0.0  # the out-of-vocabulary slot: n-grams never seen in training carry no weight
    # Passed to the constructor (not adapted in place), the vocabulary and idf stay in the config.
    return keras.layers.TextVectorization(vocabulary=counter.get_vocabulary(), idf_weights=idf,
                                          output_mode="tf_idf", name=name, **settings)


def _backbone(sizes):
    """{name: vector size} -> a weightless model: each vector L2-normalized, joined, scaled back to unit norm."""
    # === Functional Model ===
    inputs = {name: keras.Input(shape=(size,), name=name) for name, size in sizes.items()}
    normalized = [keras.layers.UnitNormalization(name=f"{name}_l2")(inputs[name]) for name in inputs]
    if len(normalized) == 1:
        return keras.Model(inputs, normalized[0], name="backbone")
    joined = keras.layers.Concatenate(name="joined")(normalized)
    # Each part has norm 1 (or 0 for a text without any known n-gram): scale the whole back to norm <= 1.
    features = keras.layers.Rescaling(1 / np.sqrt(len(normalized)), name="tfidf")(joined)
    return keras.Model(inputs, features, name="backbone")
