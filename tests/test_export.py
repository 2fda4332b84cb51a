"""Export and load: `.keras` + SavedModel versions for TF Serving, labels, model card, atomic writes.

Fresh-process tests run each artefact where kerasft is never imported, as a
server or a Keras 2 code base would. The image tests use a 2-block CNN
registered below (random init, a few hundred weights), not ResNet50, whose
export writes ~190 MB per test.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

import kerasft as kft
from conftest import FRESH_PROCESS_TIMEOUT, run_fresh

from kerasft import exporting

TOLERANCE = 1e-5


def _snapshot(folder):
    """{relative path: sha256} of every file below a folder."""
    digests = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as file:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(file.read()).hexdigest()
    return digests


def _assert_outputs_match(outputs, expected, class_names):
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=TOLERANCE)
    labels = [label.decode() if isinstance(label, bytes) else str(label) for label in outputs["label"]]
    assert labels == [class_names[i] for i in expected.argmax(-1)]
    np.testing.assert_allclose(outputs["score"], expected.max(-1), atol=TOLERANCE)


@pytest.fixture(scope="module")
def text_export(tiny_bert, tiny_text_data, tmp_path_factory):
    """A tiny BERT classifier exported once; its inputs and in-memory predictions saved beside."""
    work = tmp_path_factory.mktemp("text_export")
    model = kft.build_classifier("tiny_bert", data=tiny_text_data, head=kft.Head(units=(4,)))
    # The long text is cut to its head in the serving signature (kerasft.tokenizing): same outputs.
    texts = [x.numpy().decode() for x, _ in tiny_text_data.test.take(6)] + ["zebra quantum", "", "the cat sat " * 40]
    expected = model.predict(np.array(texts, dtype=object), verbose=0)
    assert np.ptp(expected[:, 0]) > 1e-4  # inputs give different outputs, so a mix-up would show
    exported = exporting.export(model, work / "model", data=tiny_text_data, metrics={"accuracy": np.float32(0.5)},
                                hyperparameters={"head_units": [4]})
    np.save(work / "texts.npy", np.array(texts, dtype=object))
    return types.SimpleNamespace(work=work, model=model, exported=exported, texts=texts, expected=expected,
                                 class_names=tiny_text_data.class_names)


def _encode(image, image_format):
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_export(tiny_cnn, tiny_image_data, tmp_path_factory):
    """A tiny CNN classifier exported once; images of several sizes and formats, and expected outputs."""
    work = tmp_path_factory.mktemp("image_export")
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, pretrained=False, image_size=(32, 32))
    rng = np.random.default_rng(0)
    sized = [(32, 32, "PNG"), (48, 40, "JPEG"), (20, 28, "PNG"), (64, 24, "GIF"), (33, 35, "BMP"), (30, 50, "JPEG")]
    encoded = [_encode(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), fmt) for h, w, fmt in sized]
    paths = []
    for i, (content, (_, _, fmt)) in enumerate(zip(encoded, sized)):
        paths.append(str(work / f"image_{i}.{fmt.lower()}"))
        with open(paths[-1], "wb") as file:
            file.write(content)
    # Each image predicted alone at its own size, from the pixels TensorFlow decodes.
    decoded = [tf.io.decode_image(c, channels=3, expand_animations=False).numpy() for c in encoded]
    expected_bytes = np.concatenate([model.predict(image[None], verbose=0) for image in decoded])
    pixels = rng.integers(0, 256, size=(5, 36, 36, 3), dtype=np.uint8)
    expected_pixels = model.predict(pixels, verbose=0)
    assert np.ptp(expected_bytes[:, 0]) > 1e-4 and np.ptp(expected_pixels[:, 0]) > 1e-4
    exported = exporting.export(model, work / "model", data=tiny_image_data)
    np.save(work / "encoded.npy", np.array(encoded, dtype=object))
    np.save(work / "pixels.npy", pixels)
    return types.SimpleNamespace(work=work, model=model, exported=exported, encoded=encoded, paths=paths,
                                 pixels=pixels, expected_bytes=expected_bytes, expected_pixels=expected_pixels,
                                 class_names=tiny_image_data.class_names)


# === Fresh processes: the artefacts without kerasft ===


@pytest.mark.parametrize("which", ["text_export", "image_export"])
def test_keras_file_loads_with_plain_keras_in_safe_mode_without_kerasft(which, request):
    case = request.getfixturevalue(which)
    inputs = "texts.npy" if which == "text_export" else "pixels.npy"
    run_fresh(f"""
        import sys, numpy as np, keras, keras_hub
        model = keras.models.load_model({case.exported.keras!r}, safe_mode=True)
        inputs = np.load({str(case.work / inputs)!r}, allow_pickle=True)
        np.save({str(case.work / "keras_out.npy")!r}, model.predict(inputs, verbose=0))
        assert "kerasft" not in sys.modules, "the .keras file imported kerasft"
    """)
    expected = case.expected if which == "text_export" else case.expected_pixels
    np.testing.assert_allclose(np.load(case.work / "keras_out.npy"), expected, atol=TOLERANCE)


def test_text_saved_model_serves_raw_strings_in_a_fresh_process(text_export):
    run_fresh(f"""
        import sys, numpy as np, tensorflow as tf
        import tensorflow_text  # registers the tokenizer ops the graph holds
        serve = tf.saved_model.load({text_export.exported.saved_model!r}).signatures["serving_default"]
        texts = np.load({str(text_export.work / "texts.npy")!r}, allow_pickle=True).astype(str)
        out = serve(text=tf.constant(texts))
        save_outputs({str(text_export.work / "sm_out.npz")!r}, out)
        assert "kerasft" not in sys.modules
    """)
    _assert_outputs_match(np.load(text_export.work / "sm_out.npz"), text_export.expected, text_export.class_names)


def test_image_saved_model_decodes_bytes_of_any_size_and_takes_uint8_pixels(image_export):
    run_fresh(f"""
        import sys, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({image_export.exported.saved_model!r})
        encoded = np.load({str(image_export.work / "encoded.npy")!r}, allow_pickle=True)
        from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant(list(encoded)))
        pixels = np.load({str(image_export.work / "pixels.npy")!r})
        from_pixels = loaded.signatures["predict_pixels"](images=tf.constant(pixels))
        save_outputs({str(image_export.work / "sm_bytes.npz")!r}, from_bytes)
        save_outputs({str(image_export.work / "sm_pixels.npz")!r}, from_pixels)
        assert "kerasft" not in sys.modules
    """)
    names = image_export.class_names
    _assert_outputs_match(np.load(image_export.work / "sm_bytes.npz"), image_export.expected_bytes, names)
    _assert_outputs_match(np.load(image_export.work / "sm_pixels.npz"), image_export.expected_pixels, names)


def test_a_session_loads_each_version_as_tf_serving_does(text_export, image_export):
    """TF Serving's loader: the version's MetaGraph in a TensorFlow session, its checkpoint restored by the
    graph's own restore op, then the signatures' tensors run (no object graph, unlike tf.saved_model.load)."""
    run_fresh(f"""
        import numpy as np, tensorflow as tf
        import tensorflow_text
        tf.compat.v1.disable_eager_execution()

        def serve(folder, signature, values):
            with tf.compat.v1.Session(graph=tf.Graph()) as session:
                definition = tf.compat.v1.saved_model.loader.load(session, ["serve"], folder).signature_def
                inputs, outputs = definition[signature].inputs, definition[signature].outputs
                (name,) = inputs
                return session.run({{key: outputs[key].name for key in outputs}}, {{inputs[name].name: values}})

        def save(path, outputs):  # strings as bytes, not pickled objects
            np.savez(path, **{{key: value.astype("S") if value.dtype == object else value
                               for key, value in outputs.items()}})

        texts = np.load({str(text_export.work / "texts.npy")!r}, allow_pickle=True)
        text_folder, image_folder = {text_export.exported.saved_model!r}, {image_export.exported.saved_model!r}
        save({str(text_export.work / "session_out.npz")!r}, serve(text_folder, "serving_default", texts))
        encoded = np.load({str(image_export.work / "encoded.npy")!r}, allow_pickle=True)
        save({str(image_export.work / "session_bytes.npz")!r}, serve(image_folder, "serving_default", encoded))
        pixels = np.load({str(image_export.work / "pixels.npy")!r})
        save({str(image_export.work / "session_pixels.npz")!r}, serve(image_folder, "predict_pixels", pixels))
    """)
    _assert_outputs_match(np.load(text_export.work / "session_out.npz"), text_export.expected,
                          text_export.class_names)
    names = image_export.class_names
    _assert_outputs_match(np.load(image_export.work / "session_bytes.npz"), image_export.expected_bytes, names)
    _assert_outputs_match(np.load(image_export.work / "session_pixels.npz"), image_export.expected_pixels, names)


@pytest.mark.parametrize("which, signatures", [
    ("text_export", {"serving_default": "text"}),
    ("image_export", {"serving_default": "image_bytes", "predict_pixels": "images"}),
], ids=["text", "image"])
def test_saved_model_cli_lists_the_signatures(which, signatures, request):
    folder = request.getfixturevalue(which).exported.saved_model
    cli = ("import tensorflow_text, sys; from tensorflow.python.tools.saved_model_cli import main; "
           "sys.exit(main())")
    result = subprocess.run([sys.executable, "-c", cli, "show", "--dir", folder, "--all"], capture_output=True,
                            text=True, timeout=FRESH_PROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr[-4000:]
    for name, input_name in signatures.items():
        assert f"signature_def['{name}']" in result.stdout
        assert f"inputs['{input_name}']" in result.stdout
    for output in ("probabilities", "label", "score"):
        assert f"outputs['{output}']" in result.stdout


def test_keras2_code_loads_the_versions_with_tf_keras(text_export, image_export):
    run_fresh(f"""
        import numpy as np, tensorflow as tf
        import tensorflow_text
        assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
        text = tf.keras.models.load_model({text_export.exported.saved_model!r}).signatures["serving_default"]
        texts = np.load({str(text_export.work / "texts.npy")!r}, allow_pickle=True).astype(str)
        out = text(text=tf.constant(texts))
        save_outputs({str(text_export.work / "tfk_out.npz")!r}, out)
        image = tf.keras.models.load_model({image_export.exported.saved_model!r}).signatures["serving_default"]
        encoded = np.load({str(image_export.work / "encoded.npy")!r}, allow_pickle=True)
        out = image(image_bytes=tf.constant(list(encoded)))
        save_outputs({str(image_export.work / "tfk_out.npz")!r}, out)
    """, env={"TF_USE_LEGACY_KERAS": "1"})
    _assert_outputs_match(np.load(text_export.work / "tfk_out.npz"), text_export.expected, text_export.class_names)
    _assert_outputs_match(np.load(image_export.work / "tfk_out.npz"), image_export.expected_bytes,
                          image_export.class_names)


# === Layout, labels and model card ===


def test_layout_labels_and_model_card(text_export):
    root = text_export.exported.path
    assert sorted(os.listdir(root)) == ["1", "labels.txt", "model.keras", "model_card.json"]
    with open(os.path.join(root, "labels.txt")) as file:
        assert file.read().splitlines() == text_export.class_names
    with open(os.path.join(root, "model_card.json")) as file:
        card = json.load(file)
    assert card["model"]["task"] == "binary" and card["model"]["sequence_length"] == 16
    assert card["backbones"][0]["class"] == "BertBackbone" and card["backbones"][0]["config"]["num_layers"] == 2
    assert card["data"]["class_counts"]["train"] == {"cats": 42, "dogs": 42}
    assert card["metrics"] == {"accuracy": 0.5} and card["hyperparameters"] == {"head_units": [4]}
    assert set(card["libraries"]) == {"kerasft", "keras", "keras_hub", "tensorflow", "tensorflow_text", "python"}
    assert card["signatures"]["serving_default"]["inputs"] == {"text": "string[None]"}
    assert card["export"]["version"] == 1
    # The version carries its own copies, so it stays self-describing after newer exports.
    extra = os.path.join(root, "1", "assets.extra")
    assert {k: v for k, v in _snapshot(extra).items() if k != "checksums.json"} == {
        name: digest for name, digest in _snapshot(root).items() if name in ("labels.txt", "model_card.json")}
    # Every other file of the version, and every file beside it, is recorded for kerasft.load to check.
    with open(os.path.join(extra, "checksums.json")) as file:
        recorded = json.load(file)
    assert {"saved_model.pb", "assets.extra/model_card.json", "assets.extra/labels.txt"} <= set(recorded)
    assert set(card["files"]) == {"model.keras", "labels.txt"}


def test_image_model_card_records_the_image_size_and_both_signatures(image_export):
    with open(image_export.exported.model_card) as file:
        card = json.load(file)
    assert card["model"]["image_size"] == [32, 32]
    assert card["signatures"]["predict_pixels"]["inputs"] == {"images": "uint8[None, None, None, 3]"}
    assert card["signatures"]["serving_default"]["outputs"]["probabilities"] == "float32[None, 2]"


# === Atomic, non-destructive versions ===


def test_a_second_export_adds_version_2_and_leaves_version_1_and_the_keras_file_byte_identical(text_export, tmp_path):
    root = tmp_path / "model"
    shutil.copytree(text_export.exported.path, root)
    before = _snapshot(root)
    exported = exporting.export(text_export.model, root, class_names=["cat", "dog"], formats=("saved_model",))
    assert exported.version == 2 and exported.saved_model == str(root / "2") and exported.keras is None
    after = _snapshot(root)
    assert {name: after[name] for name in before if name.startswith("1/") or name == "model.keras"} == {
        name: digest for name, digest in before.items() if name.startswith("1/") or name == "model.keras"}
    # The top-level labels and card describe the newest export, which load() follows past the older .keras.
    assert (root / "labels.txt").read_text() == "cat\ndog\n"
    assert json.loads((root / "model_card.json").read_text())["export"]["version"] == 2
    assert kft.load(root).source == str(root / "2")

    everything = _snapshot(root)
    with pytest.raises(exporting.ExportError, match="Version 1 already exists"):
        exporting.export(text_export.model, root, version=1)
    assert _snapshot(root) == everything


def test_keep_prunes_older_versions_but_never_the_one_written_a_newer_one_or_one_being_written(text_export,
                                                                                            tmp_path):
    root = tmp_path / "model"
    shutil.copytree(text_export.exported.path, root)
    shutil.copytree(root / "1", root / "7")  # renamed into place by a concurrent export: TF Serving may be loading it
    (root / ".tmp-7-0123456789abcdef").mkdir()  # another export, mid-write
    with pytest.raises(exporting.ExportError, match="keep must be an integer >= 1"):
        exporting.export(text_export.model, root, keep=0)
    assert exporting.versions(root) == [1, 7]

    exporting.export(text_export.model, root, version=2, formats=("saved_model",), keep=1)
    assert exporting.versions(root) == [2, 7]  # 1 deleted; 7 is newer than the version written, so it stays
    exported = exporting.export(text_export.model, root, formats=("saved_model",), keep=2)
    assert exported.version == 8 and exporting.versions(root) == [7, 8]
    assert (root / "8" / "saved_model.pb").is_file()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [".tmp-7-0123456789abcdef"]


@pytest.mark.parametrize("version", ["3", 2.5, 0, -1, True])
def test_a_version_that_is_not_a_positive_integer_is_refused(text_export, tmp_path, version):
    with pytest.raises(exporting.ExportError, match="version must be an integer >= 1"):
        exporting.export(text_export.model, tmp_path / "model", version=version)
    assert not (tmp_path / "model").exists()


def test_a_crash_mid_export_leaves_earlier_versions_whole_and_no_partial_version(text_export, tmp_path,
                                                                                   monkeypatch):
    root = tmp_path / "model"
    shutil.copytree(text_export.exported.path, root)
    before = _snapshot(root)
    written = []

    def crash(folder, *args):
        written.extend(os.listdir(folder))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(exporting, "_write_extra", crash)
    with pytest.raises(OSError, match="disk full"):
        exporting.export(text_export.model, root)
    assert "saved_model.pb" in written  # the crash came after the SavedModel was on disk
    assert _snapshot(root) == before
    assert sorted(os.listdir(root)) == ["1", "labels.txt", "model.keras", "model_card.json"]


def test_class_names_that_do_not_fit_the_outputs_are_refused_before_writing(text_export, tmp_path):
    with pytest.raises(exporting.ExportError, match="name each of the model's 2 outputs.*Received 3"):
        exporting.export(text_export.model, tmp_path / "model", class_names=["a", "b", "c"])
    with pytest.raises(exporting.ExportError, match="distinct, non-empty strings"):
        exporting.export(text_export.model, tmp_path / "model", class_names=["a", "a"])
    with pytest.raises(exporting.ExportError, match="formats must be"):
        exporting.export(text_export.model, tmp_path / "model", formats=("onnx",))
    with pytest.raises(exporting.ExportError, match="JSON values"):
        exporting.export(text_export.model, tmp_path / "model", hyperparameters={"head": object()})
    assert not (tmp_path / "model").exists()


# === Tasks other than single-label classification ===


def test_regression_serves_the_value_as_probabilities_score_and_label(tiny_bert, text_export, tmp_path):
    model = kft.build_classifier("tiny_bert", task="regression")
    exported = exporting.export(model, tmp_path / "model", formats=("saved_model",))
    assert (tmp_path / "model" / "labels.txt").read_text() == "value\n"
    import tensorflow_text  # noqa: F401

    serve = tf.saved_model.load(exported.saved_model).signatures["serving_default"]
    out = serve(text=tf.constant(text_export.texts))
    values = model.predict(np.array(text_export.texts, dtype=object), verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), values, atol=TOLERANCE)
    np.testing.assert_allclose(out["score"].numpy(), values[:, 0], atol=TOLERANCE)
    np.testing.assert_allclose([float(v) for v in out["label"].numpy()], values[:, 0], atol=TOLERANCE)


def test_multilabel_labels_the_most_probable_class(tiny_bert, text_export, tmp_path):
    model = kft.build_classifier("tiny_bert", num_classes=3, task="multilabel")
    exported = exporting.export(model, tmp_path / "model", class_names=["a", "b", "c"], formats=("keras",))
    assert exported.version is None and not exporting.versions(exported.path)
    predictor = kft.load(exported.path)
    probabilities = predictor.predict(text_export.texts)
    labels, scores = predictor.predict_labels(text_export.texts)
    assert labels == [["a", "b", "c"][i] for i in probabilities.argmax(-1)]
    np.testing.assert_allclose(scores, probabilities.max(-1), atol=TOLERANCE)


# === kerasft.load ===


def test_load_gives_the_same_predictions_from_every_text_artefact(text_export, tmp_path):
    root = text_export.exported.path
    without_keras = tmp_path / "versions_only"
    shutil.copytree(root, without_keras, ignore=shutil.ignore_patterns("model.keras"))
    for source in (root, os.path.join(root, "1"), os.path.join(root, "model.keras"), without_keras):
        predictor = kft.load(source)
        assert predictor.class_names == text_export.class_names and predictor.modality == "text"
        np.testing.assert_allclose(predictor.predict(text_export.texts, batch_size=3), text_export.expected,
                                   atol=TOLERANCE)
        labels, scores = predictor.predict_labels(text_export.texts)
        _assert_outputs_match({"probabilities": text_export.expected, "label": labels, "score": scores},
                              text_export.expected, text_export.class_names)


def test_load_takes_pixels_file_paths_and_bytes_for_every_image_artefact(image_export):
    root = image_export.exported.path
    for source in (root, os.path.join(root, "1"), os.path.join(root, "model.keras")):
        predictor = kft.load(source)
        assert predictor.class_names == image_export.class_names and predictor.modality == "image"
        np.testing.assert_allclose(predictor.predict(image_export.pixels), image_export.expected_pixels,
                                   atol=TOLERANCE)
        np.testing.assert_allclose(predictor.predict(image_export.pixels.astype("float32")),
                                   image_export.expected_pixels, atol=TOLERANCE)
        np.testing.assert_allclose(predictor.predict(image_export.paths), image_export.expected_bytes,
                                   atol=TOLERANCE)
        np.testing.assert_allclose(predictor.predict(image_export.encoded, batch_size=4),
                                   image_export.expected_bytes, atol=TOLERANCE)


def test_load_refuses_what_it_cannot_read(image_export, tmp_path):
    with pytest.raises(exporting.ExportError, match="Nothing to load"):
        kft.load(tmp_path)
    predictor = kft.load(os.path.join(image_export.exported.path, "1"))
    with pytest.raises(exporting.ExportError, match="whole-number pixels 0..255"):
        predictor.predict(np.full((1, 8, 8, 3), 0.5, "float32"))
    with pytest.raises(exporting.ExportError, match=r"\(N, H, W, 3\)"):
        predictor.predict(np.zeros((8, 8, 3), "uint8"))
