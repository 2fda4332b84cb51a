"""Calibration: the expected calibration error, and temperature scaling folded into the weights of every artefact."""

import keras
import numpy as np
import pytest

import kerasft as kft
from conftest import run_fresh
from kerasft import calibration, evaluation


def _nll(probabilities, labels):
    return float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels])))


def test_ece_is_the_count_weighted_gap_between_accuracy_and_confidence_per_bin():
    # Bin (0.8667, 0.9333]: 0.9 and 0.9, one right -> gap 0.4; bin (0.5333, 0.6]: 0.6, right -> gap 0.4.
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    labels = np.array([0, 0, 0])
    confidence, accuracy, counts = evaluation.calibration_bins(probabilities, labels)
    assert counts.sum() == 3 and counts[13] == 2 and counts[8] == 1
    np.testing.assert_allclose([confidence[13], accuracy[13], confidence[8], accuracy[8]], [0.9, 0.5, 0.6, 1.0])
    assert evaluation.calibration_error(probabilities, labels) == pytest.approx((2 * 0.4 + 1 * 0.4) / 3)
    assert evaluation.calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 4))
    true = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(-1, keepdims=True)  # the labels follow logits / 2.5
    labels = np.array([rng.choice(4, p=p) for p in true])
    overconfident = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert calibration.fit_temperature([overconfident], labels) == pytest.approx(2.5, rel=0.1)


@pytest.fixture(scope="module")
def calibrated(tiny_cnn, tiny_image_data):
    """A tiny CNN trained to over-confidence, and a calibrated twin of it (same weights, then calibrated)."""
    keras.utils.set_random_seed(0)
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, image_size=(32, 32))
    kft.fine_tune(model, tiny_image_data, epochs=30, learning_rate=3e-2, patience=0, verbose=0)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return model, kft.calibrate(twin, tiny_image_data, verbose=0)


def test_calibrate_lowers_the_validation_loss_and_keeps_every_prediction(calibrated, tiny_image_data):
    model, twin = calibrated
    before, after = (kft.evaluate(m, tiny_image_data.validation) for m in (model, twin))
    assert _nll(after.probabilities, after.labels) < _nll(before.probabilities, before.labels)
    np.testing.assert_array_equal(after.probabilities.argmax(-1), before.probabilities.argmax(-1))
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]  # folded, nothing added


def test_the_calibrated_keras_saved_model_and_litert_files_agree_with_the_model(calibrated, tiny_image_data,
                                                                                 tmp_path):
    _, twin = calibrated
    exported = kft.export(twin, tmp_path / "export", data=tiny_image_data, formats=("keras", "saved_model", "litert"))
    images = np.stack([x.numpy() for x, _ in tiny_image_data.test]).astype("uint8")  # 32x32: the model's own size
    np.save(tmp_path / "images.npy", images)
    run_fresh(f"""
        import sys, numpy as np, keras, tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter
        images = np.load({str(tmp_path / "images.npy")!r})
        keras_file = keras.models.load_model({exported.keras!r}, safe_mode=True).predict(images, verbose=0)
        serve = tf.saved_model.load({exported.saved_model!r}).signatures["predict_pixels"]
        saved_model = serve(images=tf.constant(images))["probabilities"].numpy()
        runner = Interpreter(model_path={exported.litert["float32"]!r}).get_signature_runner("serving_default")
        lite = runner(images=images.astype("float32"))["probabilities"]
        np.savez({str(tmp_path / "out.npz")!r}, keras=keras_file, saved_model=saved_model, litert=lite)
        assert "kerasft" not in sys.modules
    """)
    expected = twin.predict(images, verbose=0)
    outputs = np.load(tmp_path / "out.npz")
    for artefact in ("keras", "saved_model", "litert"):
        np.testing.assert_allclose(outputs[artefact], expected, atol=1e-5, err_msg=artefact)


def test_calibrate_refuses_regression_and_mean_ensembles(tiny_bert, tiny_text_data):
    with pytest.raises(calibration.CalibrationError, match="regression model, whose outputs are values"):
        kft.calibrate(kft.build_classifier("tiny_bert", task="regression"), tiny_text_data)
    members = [kft.build_classifier("tiny_bert", data=tiny_text_data, seed=seed) for seed in (0, 1)]
    with pytest.raises(calibration.CalibrationError, match=r"calibrate=True"):
        kft.calibrate(kft.ensemble(members), tiny_text_data)


def test_the_report_draws_the_reliability_diagram(calibrated, tiny_image_data, tmp_path):
    evaluated = kft.evaluate(calibrated[1], tiny_image_data)
    kft.report.write_report(tmp_path, evaluation=evaluated)
    assert "<h2>Calibration</h2>" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "reliability.png").stat().st_size > 0
