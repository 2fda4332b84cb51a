"""Fast exact text preprocessing: a KerasHub WordPiece preprocessor that tokenizes only the head of long texts.

KerasHub's WordPiece tokenizer splits, case-folds and tokenizes the whole
text although a classifier keeps only its first `sequence_length` tokens, so
its cost grows with the text (mostly in the regex split and WordPiece).
`head_preprocessor` runs the same preprocessor on the first `head_chars`
characters of each long text, cut just before a space, and tokenizes again
in full only the rows whose head does not fill the sequence. Measured in
bench/tokenizer_speed.py at sequence 128: 86 instead of 176 us CPU per BBC
News article (2265 characters), 140 instead of 1528 per document of 22600;
setting up a `tf.data` pipeline or a `tf.function` (tracing, kernels) costs
0.8 s CPU (1.1 s with the cut), more than tokenizing all 2127 articles.

Why the ids are identical: the tokenizer splits the text into words at
delimiters of one character each (whitespace, punctuation, control and CJK
characters; a space is one of them), and every other step works within one
word (case folding, WordPiece) or within a character and the combining marks
that follow it (accent stripping), which a space ends. So a text cut just
before a space gives the first words of the whole text, whose tokens are the
first tokens of the whole text. When they fill the sequence, packing keeps
exactly those; when they do not (a head of spaces or of words that give no
token), the row is tokenized again whole. A head without a space (CJK text)
or with invalid UTF-8 after its last space is not cut. tests/test_tokenizing.py
checks ids and padding masks on every BBC News article and on crafted
Unicode cases.

The cut needs only TensorFlow string ops, so it runs in `tf.data` and in an
exported SavedModel without kerasft. A `.keras` model keeps KerasHub's own
preprocessor (a custom layer would make kerasft a load-time dependency):
`model.predict` on raw strings tokenizes whole texts, which costs under 1%
of a MiniLM forward pass.
"""

import tensorflow as tf

# Characters of each long text tokenized per token of the sequence. On BBC News, 373 of 2127 heads fall short
# at 5, none at 6 (bench/tokenizer_speed.py); a head that falls short is tokenized again in full.
CHARS_PER_TOKEN = 8
_STRINGS = tf.TensorSpec([None], tf.string, name="texts")


def head_preprocessor(preprocessor, head_chars=None):
    """Returns a function that computes `preprocessor(texts)` from the head of long texts, with the same ids.

    Args:
        preprocessor: keras.Layer. A KerasHub `TextClassifierPreprocessor`
            (e.g. BERT's) whose tokenizer is a WordPiece tokenizer that
            splits its input (`split=True`). For any other preprocessor the
            cut is not known to be exact, and `preprocessor` itself is
            returned.
        head_chars: int or None. Characters of a long text tokenized first
            (default: `CHARS_PER_TOKEN` per token of the sequence).

    Returns:
        A `tf.function` from a batch of strings `[None]` to the
        preprocessor's features (`token_ids`, `padding_mask`, ...), identical
        to `preprocessor(texts)`. It runs in graph mode also when called
        eagerly, where KerasHub runs its pure-Python path (~40x slower).

    Example:
    >>> preprocess = kft.tokenizing.head_preprocessor(model.get_layer("preprocessor"))
    >>> model.get_layer("network")(preprocess(tf.constant(["A long article ..."])))
    """
    if not exact_on_heads(preprocessor):
        return preprocessor
    head_chars = CHARS_PER_TOKEN * preprocessor.sequence_length if head_chars is None else head_chars
    if not isinstance(head_chars, int) or head_chars < 1:
        raise ValueError(f"head_chars must be a positive integer. Received: head_chars={head_chars!r}")
    sequence_length = preprocessor.sequence_length
    # One preprocessor in the graph, run once or twice by a loop: every copy adds ~0.2 s CPU to each tf.data
    # pipeline that holds it (kernel set-up), and every trace ~0.5 s.
    tokenize = tf.function(preprocessor, input_signature=[_STRINGS])  # traced once, here
    outputs = tokenize.get_concrete_function().structured_outputs

    @tf.function(input_signature=[_STRINGS])
    def preprocess(texts):
        cut, was_cut = cut_heads(texts, head_chars)

        def tokenize_rows(whole, features, again):
            features = tokenize(tf.where(whole, texts, cut))
            unfilled = tf.reduce_sum(tf.cast(features["padding_mask"], "int32"), axis=-1) < sequence_length
            short_heads = tf.logical_and(tf.logical_and(was_cut, tf.logical_not(whole)), unfilled)
            return tf.logical_or(whole, short_heads), features, tf.reduce_any(short_heads)

        # The first round tokenizes the heads; a second one, only when some fell short, their whole texts.
        batch = tf.shape(texts)[:1]
        start = {name: tf.zeros(tf.concat([batch, spec.shape[1:]], 0), spec.dtype) for name, spec in outputs.items()}
        _, features, _ = tf.while_loop(lambda whole, features, again: again, tokenize_rows,
                                       (tf.zeros_like(was_cut), start, tf.constant(True)))
        return features

    return preprocess


def exact_on_heads(preprocessor):
    """True when `head_preprocessor` can cut the texts for `preprocessor` (see the module docstring)."""
    import keras_hub

    tokenizer = getattr(preprocessor, "tokenizer", None)
    return (isinstance(preprocessor, keras_hub.models.TextClassifierPreprocessor)
            and isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer)
            and tokenizer.split and not tokenizer.special_tokens_in_strings  # words end at 1-character delimiters
            and getattr(preprocessor, "truncate", None) in ("round_robin", "waterfall")  # keep the first tokens
            and isinstance(preprocessor.sequence_length, int))


def cut_heads(texts, head_chars):
    """Cuts each text longer than `head_chars` characters just before the last space of its first `head_chars`.

    Args:
        texts: tf.Tensor. A batch of strings `[None]`.
        head_chars: int. Characters kept at most.

    Returns:
        `(cut, was_cut)`: the texts, cut where they were long and their head
        holds a space, and a boolean `[None]` marking the rows cut.
    """
    head = tf.strings.substr(texts, 0, head_chars, unit="UTF8_CHAR")
    cut = tf.strings.regex_replace(head, r" [^ ]*\z", "")  # the last space and what follows it
    # RE2 matches no invalid UTF-8: where the tail held some, nothing was removed, and the row stays whole.
    kept = tf.strings.length(cut)
    at_space = tf.logical_and(kept < tf.strings.length(head), tf.strings.substr(head, kept, tf.ones_like(kept)) == " ")
    was_cut = tf.logical_and(tf.strings.length(texts) > tf.strings.length(head), at_space)
    return tf.where(was_cut, cut, texts), was_cut
