"""LiteRT export: files that run in a fresh interpreter process, parity reports, the accuracy guard, token ids.

Tolerances, stated once: a float32 file matches the Keras model to 1e-5 in
every probability; an int8 file (activations quantized to 256 levels) to
0.05, with the same top-1 class on the test split. The fresh-process tests
run a file with `ai_edge_litert` and numpy only (no TensorFlow, no kerasft),
as a device-side Python would.
"""

import io
import json
import os
import shutil
import textwrap
import types

import keras
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

import kerasft as kft
from conftest import TINY_VOCAB, run_fresh, tiny_bert_spec
from kerasft import litert

from kerasft import exporting

FLOAT32_TOLERANCE = 1e-5
INT8_TOLERANCE = 0.05

# Run in a fresh interpreter: ai_edge_litert and numpy, nothing else of the stack.
_DEVICE_PRELUDE = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
def run(path, inputs):
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return runner(**inputs)["probabilities"]
"""
_DEVICE_CHECK = """
assert "tensorflow" not in sys.modules and "kerasft" not in sys.modules, sorted(sys.modules)
"""


def _run_fresh(script):
    """Runs a script in a fresh interpreter with the device prelude, and checks TensorFlow stayed out."""
    run_fresh(_DEVICE_PRELUDE + textwrap.dedent(script) + _DEVICE_CHECK)


def _test_images(data):
    return np.stack([x.numpy() for x, _ in data.test]).astype("float32")


@pytest.fixture(scope="module")
def image_litert(tiny_cnn, tiny_image_data, tmp_path_factory):
    """A trained tiny CNN exported as .keras + LiteRT float32 and int8, once."""
    work = tmp_path_factory.mktemp("image_litert")
    keras.utils.set_random_seed(0)
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, pretrained=False, image_size=(32, 32))
    kft.fine_tune(model, tiny_image_data, epochs=20, learning_rate=1e-2, verbose=0)
    assert kft.evaluate(model, tiny_image_data)["accuracy"] >= 0.9  # the guard test needs a model worth guarding
    exported = exporting.export(model, work / "model", data=tiny_image_data, formats=("keras", "litert"),
                                quantize="int8")
    images = _test_images(tiny_image_data)
    np.save(work / "images.npy", images)
    return types.SimpleNamespace(work=work, model=model, exported=exported, images=images,
                                 expected=model.predict(images, verbose=0), data=tiny_image_data)


# Words the tricky texts below reach only through case folding, accent stripping and CJK splitting.
FOLDED_WORDS = ["strasse", "cafe", "naive", "unicode", "istanbul", "中", "文"]
UNCASED_VOCAB = TINY_VOCAB + FOLDED_WORDS


@pytest.fixture(scope="module")
def tiny_bert_uncased():
    """The tiny BERT with a lowercasing, accent-stripping tokenizer (as MiniLM's), registered as 'tiny_bert_uncased'."""
    return tiny_bert_spec("tiny_bert_uncased", UNCASED_VOCAB, lowercase=True, strip_accents=True)


@pytest.fixture(scope="module")
def text_litert(tiny_bert_uncased, tiny_text_data, tmp_path_factory):
    """A tiny uncased BERT classifier exported as LiteRT (float32), once."""
    work = tmp_path_factory.mktemp("text_litert")
    keras.utils.set_random_seed(0)
    model = kft.build_classifier("tiny_bert_uncased", data=tiny_text_data, head=kft.Head(units=(4,)))
    exported = exporting.export(model, work / "model", data=tiny_text_data, formats=("litert",))
    return types.SimpleNamespace(work=work, model=model, exported=exported, data=tiny_text_data)


# === Images: pixels in, probabilities out ===


def test_image_files_run_in_a_fresh_process_and_match_keras(image_litert):
    files = image_litert.exported.litert
    _run_fresh(f"""
        images = np.load({str(image_litert.work / "images.npy")!r})
        for name, path in {files!r}.items():
            np.save({str(image_litert.work)!r} + f"/{{name}}_out.npy", run(path, {{"images": images}}))
    """)
    expected = image_litert.expected
    float32 = np.load(image_litert.work / "float32_out.npy")
    np.testing.assert_allclose(float32, expected, atol=FLOAT32_TOLERANCE)
    int8 = np.load(image_litert.work / "int8_out.npy")
    np.testing.assert_allclose(int8, expected, atol=INT8_TOLERANCE)
    np.testing.assert_array_equal(int8.argmax(-1), expected.argmax(-1))


def _encode(image):
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_load_resizes_images_of_any_size_and_decodes_bytes_like_the_keras_model(image_litert):
    predictor = kft.load(image_litert.exported.litert["float32"])
    assert predictor.modality == "image" and predictor.class_names == image_litert.data.class_names
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 45, 27, 3), dtype=np.uint8)  # not the file's 32x32
    np.testing.assert_allclose(predictor.predict(pixels), image_litert.model.predict(pixels, verbose=0),
                               atol=FLOAT32_TOLERANCE)
    sized = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in ((20, 28), (64, 40))]
    expected = np.concatenate([image_litert.model.predict(image[None], verbose=0) for image in sized])
    np.testing.assert_allclose(predictor.predict([_encode(image) for image in sized]), expected,
                               atol=FLOAT32_TOLERANCE)
    labels, scores = predictor.predict_labels(pixels)
    expected = image_litert.model.predict(pixels, verbose=0)
    assert labels == [image_litert.data.class_names[i] for i in expected.argmax(-1)]
    np.testing.assert_allclose(scores, expected.max(-1), atol=FLOAT32_TOLERANCE)


def test_the_card_holds_a_parity_report_for_every_file(image_litert):
    with open(image_litert.exported.model_card) as file:
        card = json.load(file)
    assert card["export"]["formats"] == ["keras", "litert"]
    section = card["litert"]
    assert section["inputs"] == {"images": "float32[batch, 32, 32, 3]"} and section["image_size"] == [32, 32]
    assert section["calibration"]["examples"] == 200 and section["max_accuracy_drop"] == 0.01
    assert set(section["files"]) == {"model.tflite", "model_int8.tflite"}
    for name, report in section["files"].items():
        path = os.path.join(image_litert.exported.path, name)
        assert report["size_bytes"] == os.path.getsize(path)
        assert report["examples"] == image_litert.data.size("test") and report["split"] == "test"
        assert report["keras_accuracy"] >= 0.9 and report["accuracy_drop"] <= 0.01
        assert report["top1_agreement"] == 1.0 and report["latency_ms"] > 0
    assert section["files"]["model.tflite"]["max_probability_difference"] < FLOAT32_TOLERANCE
    assert image_litert.exported.litert_reports["int8"] == section["files"]["model_int8.tflite"]


def test_int8_calibrated_on_constant_images_is_refused_and_nothing_is_written(image_litert, tmp_path, capsys):
    constant = np.full((16, 32, 32, 3), 0, dtype=np.uint8)
    with pytest.raises(litert.AccuracyDropError, match=r"model_int8.tflite \(int8\) is .* accuracy points below "
                                                       r"the Keras model.*Nothing was written.*calibration="):
        exporting.export(image_litert.model, tmp_path / "model", data=image_litert.data, formats=("keras", "litert"),
                         quantize="int8", calibration=constant)
    assert not (tmp_path / "model").exists() or not os.listdir(tmp_path / "model")
    assert "model_int8.tflite" in capsys.readouterr().out  # the parity table was printed before the refusal


def test_a_litert_only_export_loads_from_its_folder(image_litert, tmp_path):
    exported = exporting.export(image_litert.model, tmp_path / "model", data=image_litert.data, formats=("litert",))
    assert sorted(os.listdir(exported.path)) == ["labels.txt", "model.tflite", "model_card.json"]
    predictor = kft.load(exported.path)
    assert isinstance(predictor.model, litert.LiteRTModel) and predictor.model.quantization == "float32"
    np.testing.assert_allclose(predictor.predict(image_litert.images), image_litert.expected, atol=FLOAT32_TOLERANCE)


def test_an_image_ensemble_of_two_sizes_takes_the_larger_and_matches_keras(image_litert, tmp_path):
    keras.utils.set_random_seed(1)
    smaller = kft.build_classifier("tiny_cnn", data=image_litert.data, pretrained=False, image_size=(24, 24))
    ensemble = kft.ensemble([image_litert.model, smaller], method="mean")
    exported = exporting.export(ensemble, tmp_path / "model", data=image_litert.data, formats=("litert",))
    runner = litert.LiteRTModel(exported.litert["float32"])
    assert runner.metadata["inputs"] == {"images": "float32[batch, 32, 32, 3]"}
    np.testing.assert_allclose(runner.predict(image_litert.images), ensemble.predict(image_litert.images, verbose=0),
                               atol=FLOAT32_TOLERANCE)


# === Text: token ids in, the tokenizer beside ===


TRICKY_TEXTS = [
    "the cat sat on the mat",
    "The DOG ran FAST, on the big red mat!",
    "Ünïcödé café naïve Straße ǅ İstanbul",  # accents, case folding (ß, İ), a titlecase letter
    "中文 dog\u00a0cat\u200bsat \t\n emoji 🐈 [CLS] [SEP] [PAD] ##at",  # CJK, NBSP, zero-width, special-looking
    " ".join(["the big red dog ran on the mat"] * 6),  # longer than the 16-token sequence: truncated
    "",
]


def test_token_ids_from_the_file_are_the_keras_preprocessors(text_litert):
    runner = litert.LiteRTModel(text_litert.exported.litert["float32"])
    got = runner.preprocess(TRICKY_TEXTS)
    expected = text_litert.model.get_layer("preprocessor")(tf.constant(TRICKY_TEXTS))
    assert sorted(got) == ["padding_mask", "segment_ids", "token_ids"]
    for name, ids in got.items():
        assert ids.dtype == np.int32 and ids.shape == (len(TRICKY_TEXTS), 16)
        np.testing.assert_array_equal(ids, np.asarray(expected[name]).astype("int32"))
    assert (got["token_ids"] == 1).any()  # [UNK]: the tricky texts do reach the out-of-vocabulary path
    # ß -> ss, é -> e, İ -> i, 中文 -> 中 文: the folding really ran.
    folded = {UNCASED_VOCAB.index(word) for word in FOLDED_WORDS}
    assert folded <= set(got["token_ids"][2]) | set(got["token_ids"][3])


def test_text_file_runs_in_a_fresh_process_from_token_ids_and_load_predicts_from_strings(text_litert):
    work = text_litert.work
    ids = litert.LiteRTModel(text_litert.exported.litert["float32"]).preprocess(TRICKY_TEXTS)
    np.savez(work / "ids.npz", **ids)
    _run_fresh(f"""
        ids = dict(np.load({str(work / "ids.npz")!r}))
        np.save({str(work / "text_out.npy")!r}, run({text_litert.exported.litert["float32"]!r}, ids))
    """)
    expected = text_litert.model.predict(np.array(TRICKY_TEXTS, dtype=object), verbose=0)
    assert np.ptp(expected[:, 0]) > 1e-4  # inputs give different outputs, so a mix-up would show
    np.testing.assert_allclose(np.load(work / "text_out.npy"), expected, atol=FLOAT32_TOLERANCE)

    # The file alone carries its tokenizer (embedded metadata): copied elsewhere, it still loads.
    alone = work / "alone" / "classifier.tflite"
    alone.parent.mkdir()
    shutil.copy(text_litert.exported.litert["float32"], alone)
    predictor = kft.load(alone)
    assert predictor.modality == "text" and predictor.class_names == text_litert.data.class_names
    np.testing.assert_allclose(predictor.predict(TRICKY_TEXTS, batch_size=4), expected, atol=FLOAT32_TOLERANCE)


def test_the_vocabulary_and_tokenizer_settings_are_written_beside(text_litert):
    root = text_litert.exported.path
    assert sorted(os.listdir(root)) == ["labels.txt", "model.tflite", "model_card.json", "tokenizer_settings.json",
                                        "vocab.txt"]
    tokenizer = text_litert.model.get_layer("preprocessor").tokenizer
    with open(os.path.join(root, "vocab.txt"), encoding="utf-8") as file:
        assert file.read().splitlines() == list(tokenizer.get_vocabulary())
    with open(os.path.join(root, "tokenizer_settings.json"), encoding="utf-8") as file:
        settings = json.load(file)
    assert settings["sequence_length"] == 16 and settings["lowercase"] == tokenizer.lowercase
    assert settings["special_tokens"]["start"] == {"tokens": ["[CLS]"], "ids": [2]}
    assert settings["special_tokens"]["pad"] == {"tokens": ["[PAD]"], "ids": [0]}
    assert settings["inputs"]["token_ids"] == "int32[batch, 16]"
    with open(text_litert.exported.model_card) as file:
        section = json.load(file)["litert"]
    assert section["sequence_length"] == 16 and section["vocabulary"] == "vocab.txt"
    assert section["files"]["model.tflite"]["top1_agreement"] == 1.0


# === Refused before any work ===


def test_bad_litert_arguments_are_refused_before_writing(image_litert, text_litert, tmp_path):
    model, data = image_litert.model, image_litert.data
    with pytest.raises(exporting.ExportError, match="applies to LiteRT files"):
        exporting.export(model, tmp_path / "m", data=data, quantize="int8")
    with pytest.raises(litert.LiteRTError, match="quantize must be None, or one or several of"):
        exporting.export(model, tmp_path / "m", data=data, formats=("litert",), quantize="int4")
    with pytest.raises(litert.LiteRTError, match="needs data="):
        exporting.export(model, tmp_path / "m", formats=("litert",))
    with pytest.raises(litert.LiteRTError, match="max_accuracy_drop must be a fraction"):
        exporting.export(model, tmp_path / "m", data=data, formats=("litert",), max_accuracy_drop=5)
    with pytest.raises(litert.LiteRTError, match=r"calibration for an image model .* Received: ndarray \(8, 8\)"):
        exporting.export(model, tmp_path / "m", data=data, formats=("litert",), quantize="int8",
                         calibration=np.zeros((8, 8)))
    with pytest.raises(litert.LiteRTError, match="takes image input but the data is text"):
        exporting.export(model, tmp_path / "m", data=text_litert.data, formats=("litert",))
    texts = [x.numpy().decode() for x, _ in text_litert.data.train.take(40)]
    values = kft.data.from_arrays(texts, np.linspace(0, 1, 40), task="regression", seed=0)
    regression = kft.build_classifier("tiny_bert_uncased", data=values)
    with pytest.raises(litert.LiteRTError, match="int8 needs an accuracy to guard it.*regression model"):
        exporting.export(regression, tmp_path / "m", data=values, formats=("litert",), quantize="int8")
    assert not (tmp_path / "m").exists()
