"""Input pipelines: a classifier's own preprocessing mapped over tf.data once, and frozen-feature caches.

Preprocessing (tokenizing, resizing) runs in parallel inside `tf.data`,
batched, then the result is cached so later epochs reuse it instead of
recomputing it serially inside every train step. Long texts are cut to a word
budget before tokenizing, with a check that keeps token ids identical to
tokenizing the full text.
"""

import keras
import numpy as np
import tensorflow as tf

# Preprocessed splits up to this size are cached after preprocessing; larger
# ones cache the raw input and preprocess in parallel every epoch.
CACHE_LIMIT_BYTES = 2 * 1024**3


def preprocess(model, dataset, batch_size=32, shuffle=False, seed=None, num_examples=None):
    """Maps a classifier's preprocessor over an unbatched `(raw, label)` dataset.

    Args:
        model: keras.Model. A kerasft classifier.
        dataset: tf.data.Dataset. Unbatched `(raw input, label)` elements.
        batch_size: int. Batch size of the returned dataset.
        shuffle: bool. Reshuffle every epoch (training).
        seed: int or None. Shuffle seed.
        num_examples: int or None. Size of the dataset, to choose what to cache.

    Returns:
        A batched, prefetched `tf.data.Dataset` of `(preprocessed, label)`
        that `model.get_layer("network")` takes.
    """
    preprocessor = model.get_layer("preprocessor")
    transform = _text_transform(preprocessor) if _is_text(model) else _image_transform(preprocessor)
    num_examples = num_examples or int(dataset.cardinality())
    # Token ids are small; a float32 image at the backbone's size is not.
    per_example = 0 if _is_text(model) else 4 * int(np.prod(preprocessor.output_shape[1:]))
    cache_preprocessed = per_example * max(num_examples, 0) <= CACHE_LIMIT_BYTES

    def apply(x, y):
        return transform(x), y

    if cache_preprocessed:
        ds = dataset.batch(64).map(apply, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        if num_examples > 0:  # unbatch() forgets the size; Keras' progress bar needs it
            ds = ds.apply(tf.data.experimental.assert_cardinality(num_examples))
        ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(max(num_examples, 1), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    else:
        ds = dataset.cache()
        if shuffle:
            ds = ds.shuffle(min(max(num_examples, 1), 10_000), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _is_text(model):
    return model.input.dtype == "string"


def _image_transform(preprocessor):
    def transform(images):
        return preprocessor(tf.cast(images, "float32"))

    return transform


def _text_transform(preprocessor):
    """Tokenizes with the model's own preprocessor, cutting long texts first when that is exact."""
    import keras_hub

    tokenizer = getattr(preprocessor, "tokenizer", None)
    sequence_length = getattr(preprocessor, "sequence_length", None)
    if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer) or not sequence_length:
        return preprocessor

    def transform(texts):
        return truncated_tokenize(preprocessor, texts, sequence_length)

    return transform


def truncated_tokenize(preprocessor, texts, max_words):
    """Tokenizes a batch of texts from their first `max_words` words, with ids identical to the full text.

    WordPiece splits on whitespace first, so the tokens of the first words are
    the first tokens of the text; a word gives at least one token except in
    rare cases (a word of control characters only). Rows whose cut text gives
    fewer tokens than the sequence holds are tokenized again in full, so the
    ids never differ. Tokenizing a 400-word article costs ~3x a 128-word cut.

    Args:
        preprocessor: keras.Layer. A KerasHub text classifier preprocessor.
        texts: tf.Tensor. A batch of strings.
        max_words: int. Words kept before tokenizing (the sequence length).
    """
    words = tf.strings.split(texts)
    cut = words.row_lengths() > max_words
    short = tf.strings.reduce_join(words[:, :max_words], axis=-1, separator=" ")
    features = preprocessor(short)
    incomplete = tf.logical_and(cut, tf.reduce_sum(tf.cast(features["padding_mask"], "int32"), axis=-1)
                                < preprocessor.sequence_length)

    def with_full_rows():
        full = preprocessor(texts)
        return {k: tf.where(incomplete[:, None], full[k], features[k]) for k in features}

    return tf.cond(tf.reduce_any(incomplete), with_full_rows, lambda: features)


def bottom_and_head(model):
    """Splits a classifier's network at the pooled features.

    Returns:
        `(bottom, head)`: `bottom` maps preprocessed input to pooled features
        (the frozen backbone); `head` is the classifier's own head, sharing
        its weights with `model`.
    """
    network = model.get_layer("network")
    bottom = keras.Model(network.input, network.get_layer("pooling").output, name="bottom")
    return bottom, network.get_layer("head")


def frozen_features(model, preprocessed):
    """Runs the frozen bottom once over a preprocessed dataset.

    Args:
        model: keras.Model. A kerasft classifier.
        preprocessed: tf.data.Dataset. Output of `preprocess`.

    Returns:
        `(features, labels)` numpy arrays, for training the head alone.
    """
    bottom, _ = bottom_and_head(model)
    features, labels = [], []
    predict = tf.function(lambda x: bottom(x, training=False))
    for x, y in preprocessed:
        features.append(predict(x).numpy())
        labels.append(y.numpy())
    return np.concatenate(features), np.concatenate(labels)
