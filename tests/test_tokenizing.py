"""The head cut gives KerasHub's own token ids and padding masks: crafted Unicode cases, every BBC News article."""

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import kerasft as kft
from kerasft import backbones, heads, serving, tokenizing

# Short cases; each also runs repeated past the head size, behind 0, 1, 2, ... tabs (delimiters that give no
# token), so the cut falls at every byte of the repeated case.
CRAFTED = [
    # accents and combining marks (composed, decomposed, stacked, after a space)
    "Café résumé naïve Ångström", "cafe\u0301 re\u0301sume\u0301", "Tiếng Việt có dấu", "a\u0300\u0301\u0302\u0303b",
    " \u0301leading mark", "नमस्ते दुनिया", "مرحبا بالعالم", "שָׁלוֹם", "Привет мир, Ελληνικά κείμενα",
    # CJK without spaces, kana, Hangul (not in the CJK ranges), an extension-B ideograph
    "中文文本没有空格也能分词", "日本語のテキストです。", "한국어텍스트입니다", "\U00020000\U00020001字",
    # emoji: modifiers, zero-width-joiner families, flags, variation selectors
    "I love it 😀👍🏽", "family 👨\u200d👩\u200d👧\u200d👦 here", "🇬🇧🇫🇷 flags", "❤\ufe0f heart",
    # zero-width and format characters, control characters
    "zero\u200bwidth\u200cnon\u200djoiner", "\ufeffbom and\u2060word joiner", "null\x00bell\x07esc\x1b[31mred\x7f",
    "next\x85line\x0bvertical\x0cfeed",
    # non-breaking and other Unicode spaces (not ASCII whitespace, so not split by KerasHub)
    "non\u00a0breaking", "en\u2002space thin\u2009space", "ideographic\u3000space", "narrow\u202fnbsp\u1680ogham",
    "line\u2028separator\u2029paragraph",
    # words beyond WordPiece's 100-byte word limit
    "x" * 150, "é" * 60, "supercalifragilisticexpialidocious" * 5, "https://example.com/" + "path/" * 40,
    # empty, whitespace only, punctuation only
    "", "   \n\t  ", "!!!???...,,,;;;", "\u00a0\u2002\u3000",
    # case folding with NFKC: sharp s, ligatures, titlecase digraphs, roman numerals, full width
    "STRASSE Straße", "ﬁne ﬂow", "ǅemal", "Ⅻ chapters", "ＦＵＬＬ ｗｉｄｔｈ",
    # words that give no token (variation selector, combining grapheme joiner, Hangul filler), special tokens
    "\ufe0f \u034f \u3164", "[CLS] [SEP] [PAD] [MASK] [UNK] tokens",
    # no space at all: a head without a space is tokenized whole
    "word\nword\tword\rword", "a.b.c.d,e;f",
]
# Invalid UTF-8 is passed through as bytes by both paths.
CRAFTED_BYTES = [b"bad \xff\xfe bytes", b"cut \xc3 mid character", b"\xe2\x82"]


def _crafted(min_chars=0, shifts=(0,)):
    """The crafted cases, each repeated (space-separated) to at least `min_chars` characters behind each shift."""
    cases = [text.encode() for text in CRAFTED] + CRAFTED_BYTES
    return [b"\t" * shift + (case + b" ") * -(-min_chars // len(case + b" ")) for case in cases for shift in shifts] + [
        # the head's words give fewer tokens than the sequence holds, then more
        "\ufe0f ".encode() * 2000 + b"hidden after words without tokens",
        "\u200b ".encode() * 2000 + b"hidden after zero-width spaces", b"a" + b" \n\t " * 2000 + b"b",
        b" " * 5000 + b"after spaces",
        b"!!!! " * 2000, "unbelievably ".encode() * 500,
        # no space at all
        "中文没有空格".encode() * 500, b"word\n" * 1000,
    ]


def _assert_identical(preprocessor, texts, head_chars=None):
    full = tf.function(lambda t: preprocessor(t))(tf.constant(texts))
    cut = tokenizing.head_preprocessor(preprocessor, head_chars=head_chars)(tf.constant(texts))
    for name in ("token_ids", "padding_mask"):
        mismatched = np.flatnonzero((cut[name].numpy() != full[name].numpy()).any(-1))
        assert not len(mismatched), (name, [texts[i][:80] for i in mismatched[:5]])


@pytest.fixture(scope="module")
def wordpiece_vocabulary():
    """Whole words, suffix pieces and characters, so words split into several pieces (or [UNK])."""
    letters = list("abcdefghijklmnopqrstuvwxyzé中文日本語😀!?.,;[]/:")
    words = ["the", "cat", "word", "space", "un", "believ", "able", "super", "fine", "flow", "strasse", "bad"]
    return (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + letters
            + [f"##{piece}" for piece in letters + ["ably", "ing"]])


@pytest.mark.parametrize("options", [{"lowercase": True},
                                     {"lowercase": False, "strip_accents": True, "split_on_cjk": False}],
                         ids=["uncased", "cased-accents-stripped-no-cjk"])
def test_heads_give_the_ids_of_whole_texts_on_crafted_cases(wordpiece_vocabulary, options):
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=wordpiece_vocabulary, **options)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    _assert_identical(preprocessor, _crafted() + _crafted(80, shifts=range(41)), head_chars=40)


def test_head_preprocessor_leaves_preprocessors_it_cannot_cut_exactly(wordpiece_vocabulary):
    for options in ({"split": False}, {"special_tokens_in_strings": True}):
        tokenizer = keras_hub.models.BertTokenizer(vocabulary=wordpiece_vocabulary, **options)
        preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
        assert tokenizing.head_preprocessor(preprocessor) is preprocessor
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=wordpiece_vocabulary)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    with pytest.raises(ValueError, match="head_chars must be a positive integer. Received: head_chars=0"):
        tokenizing.head_preprocessor(preprocessor, head_chars=0)


def test_serving_signature_and_training_pipeline_cut_long_texts_to_the_same_outputs(tiny_bert, tiny_text_data):
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, head=kft.Head(units=(4,)))
    texts = ["the cat sat on the mat " * 40, "the dog ran " + "\u00a0" * 300 + " fast", "big red dog", ""]
    expected = model.predict(np.array(texts, dtype=object), verbose=0)
    serve = serving.serving_endpoints(model, tiny_text_data.class_names, heads.task_of(model))["serving_default"]
    np.testing.assert_allclose(serve(tf.constant(texts))["probabilities"].numpy(), expected, atol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices((texts, [0] * len(texts)))
    (x, _), = kft.features.preprocess(model, dataset, batch_size=len(texts))
    whole = model.get_layer("preprocessor")(tf.constant(texts))
    for name in whole:
        np.testing.assert_array_equal(x[name].numpy(), whole[name].numpy())


@pytest.mark.slow
def test_heads_give_the_ids_of_whole_texts_on_every_bbc_news_article_and_crafted_case():
    data = kft.samples.bbc_news(seed=0)
    articles = [x.numpy() for split in (data.train, data.validation, data.test) for x, _ in split]
    assert len(articles) == 2127
    preprocessor = backbones.get("minilm_l6").text_preprocessor(128)
    _assert_identical(preprocessor, articles)
    _assert_identical(preprocessor, _crafted() + _crafted(2500, shifts=range(0, 200, 3)))
