"""Tests for audio: reading clips, the spectrogram front end, augmentation, training and serving raw sound."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasft as kft
from conftest import FRESH_PROCESS_TIMEOUT, RATE, TONES, run_fresh, tone, wav_bytes, write_tones
from kerasft import audio, augment
from kerasft.data import DataError
from kerasft.ensembling import EnsembleError
from kerasft.exporting import ExportError
from kerasft.models import ClassifierError
from kerasft.training import TrainingError

@pytest.fixture(scope="module")
def tone_data(tmp_path_factory):
    return kft.data.from_directory(write_tones(tmp_path_factory.mktemp("tones")), seed=0)


# === The front end ===


def test_a_tone_lights_its_own_mel_band_and_a_clip_does_not_depend_on_its_batch():
    inputs, outputs = audio.front_end(RATE, 1.0)
    front = keras.Model(inputs, outputs)
    quiet, loud = tone(300.0, 1.3, amplitude=0.05)[:RATE], tone(2400.0, 1.3, amplitude=0.9)[:RATE]
    alone = front(quiet[None]).numpy()
    assert alone.shape == (1, audio.NUM_MEL_BINS, 101, 3)
    assert np.all(alone[..., 0] == alone[..., 2]) and 0 <= alone.min() and alone.max() <= 255
    rows = alone[0, :, :, 0].mean(axis=1)
    mel_of_300hz = int(np.argmax(rows))
    assert mel_of_300hz < audio.NUM_MEL_BINS // 4  # low frequencies are the top rows
    loud_rows = front(loud[None]).numpy()[0, :, :, 0].mean(axis=1)
    assert np.argmax(loud_rows) > audio.NUM_MEL_BINS // 2
    # Keras' MelSpectrogram clips relative to the loudest clip of the BATCH; kerasft's front end must not.
    np.testing.assert_allclose(front(np.stack([quiet, loud])).numpy()[:1], alone, atol=1e-4)


def test_resampling_keeps_a_tone_at_its_frequency():
    clip = audio.to_clip(tone(1000.0, 1.0, rate=44100)[:44100, None], 44100, RATE, 1.0)
    assert clip.shape == (RATE,)
    spectrum = np.abs(np.fft.rfft(clip))
    assert abs(np.argmax(spectrum) * RATE / len(clip) - 1000.0) < 60


def test_augmentation_is_the_identity_at_strength_0_and_fills_with_black_per_channel():
    black, white = np.array([-103.9, -116.8, -123.7], np.float32), np.array([151.1, 138.2, 131.3], np.float32)
    images = black + tf.random.stateless_uniform([4, 32, 40, 1], seed=[1, 2]) * (white - black)  # grey, 3 offsets
    np.testing.assert_allclose(augment.spectrogram_augmentation(0.0, seed=0, black=black, white=white)(images), images)
    augmented = augment.spectrogram_augmentation(1.0, seed=0, black=black, white=white)(images).numpy()
    assert augmented.shape == images.shape and not np.allclose(augmented, images)
    assert (augmented >= black - 1e-4).all() and (augmented <= white + 1e-4).all()  # gain stays within the clip
    fraction = (augmented - black) / (white - black)  # still one grey level across the 3 channels
    np.testing.assert_allclose(fraction[..., 0], fraction[..., 2], atol=1e-5)
    for example in augmented:  # a masked band of rows or of frames is black in every channel
        rows, frames = np.isclose(example, black).all(axis=(1, 2)), np.isclose(example, black).all(axis=(0, 2))
        assert rows.any() or frames.any()


def test_augmentation_over_a_dataset_repeats_with_its_seed_and_differs_from_batch_to_batch():
    batches = tf.data.Dataset.from_tensor_slices(tf.random.stateless_uniform([6, 4, 16, 20, 3], seed=[5, 6],
                                                                             maxval=255.0))

    def run(seed):
        augmenter = augment.spectrogram_augmentation(0.8, seed=seed)
        return np.stack([batch.numpy() for batch in batches.map(augmenter)])

    first = run(seed=1)
    np.testing.assert_array_equal(first, run(seed=1))
    assert not np.allclose(first, run(seed=2))
    plain = np.stack([batch.numpy() for batch in batches])
    assert all(not np.allclose(a, p) for a, p in zip(first, plain))


# === Reading ===


def test_from_directory_reads_wav_flac_and_ogg_and_resamples_other_rates_with_a_note(tmp_path):
    for name, frequency in TONES.items():
        (tmp_path / name).mkdir()
        for i, (fmt, subtype, rate) in enumerate([("WAV", "PCM_16", 16000), ("WAV", "PCM_24", 22050),
                                                  ("FLAC", "PCM_16", 44100), ("OGG", "VORBIS", 8000)] * 3):
            suffix = fmt.lower()
            (tmp_path / name / f"{i}.{suffix}").write_bytes(wav_bytes(tone(frequency, rate=rate, seed=i), rate,
                                                                      fmt, subtype))
    data = kft.data.from_directory(tmp_path, sample_rate=16000, duration=0.5, seed=0)
    assert (data.modality, data.input_kind, data.sample_rate, data.duration) == ("audio", "waveform", 16000, 0.5)
    assert sum(data.size(s) for s in ("train", "validation", "test")) == 24
    assert data.inputs("train").shape[1:] == (8000,) and data.inputs("train").dtype == np.float32
    x, _ = next(iter(data.train))
    assert x.shape == (8000,) and x.dtype == tf.float32
    summary = data.summary()
    assert "mono clips of 0.5 s at 16000 Hz" in summary
    assert "resampled to 16000 Hz: 6 clips from 8000 Hz, 6 clips from 22050 Hz, 6 clips from 44100 Hz" in summary


def test_bad_clips_are_skipped_and_each_named_or_refused_with_strict(tmp_path):
    root = write_tones(tmp_path / "clips", per_class=6)
    bad = {
        "silent.wav": wav_bytes(np.zeros(RATE, np.float32)),
        "empty.wav": b"",
        "header_only.wav": wav_bytes(np.zeros(0, np.float32)),
        "short.wav": wav_bytes(0.5 * np.sin(np.arange(160, dtype=np.float32))),  # 10 ms
        "corrupt.wav": wav_bytes(tone(300.0))[:30],
        "photo.wav": b"\x89PNG\r\n\x1a\n" + bytes(200),
    }
    for name, content in bad.items():
        (root / "hum" / name).write_bytes(content)
    with pytest.warns(kft.data.DataWarning, match="Skipped 6 unreadable files"):
        data = kft.data.from_directory(root, seed=0)
    reasons = dict((path.rsplit("/", 1)[-1], why) for path, why in data.report.skipped)
    assert set(reasons) == set(bad)
    assert reasons["silent.wav"].startswith("silent")
    assert reasons["empty.wav"] == "empty file (0 bytes)"
    assert reasons["header_only.wav"] == "empty (0 samples)"
    assert reasons["short.wav"].startswith("shorter than one STFT window (160 samples < 400")
    for name in ("corrupt.wav", "photo.wav"):
        assert reasons[name].startswith("not a readable WAV/FLAC/OGG file (") and "BytesIO" not in reasons[name]
    assert "silent.wav" in data.summary()
    with pytest.raises(DataError, match=r"6 files .* cannot be read \(strict=True\)"):
        kft.data.from_directory(root, strict=True)


def test_from_arrays_takes_waveforms_of_any_length_int16_and_stereo(tmp_path):
    stereo = np.stack([tone(300.0, seed=1), tone(300.0, seed=1)], axis=1)
    waves = [tone(300.0, seed=i) for i in range(10)] + [(tone(None, seed=i) * 32767).astype(np.int16)
                                                        for i in range(9)] + [stereo]
    labels = ["hum"] * 10 + ["hiss"] * 9 + ["hum"]
    data = kft.data.from_arrays(waves, labels, sample_rate=RATE, duration=0.75, seed=0)
    assert data.modality == "audio" and data.inputs("train").shape[1:] == (12000,)
    every = np.concatenate([data.inputs(s) for s in ("train", "validation", "test")])
    assert np.abs(every).max() <= 1.0 and len(every) == 19  # the stereo copy of clip 1 is a duplicate
    with pytest.raises(DataError, match=r"waveforms cannot be clips: x\[1\]: holds NaN"):
        kft.data.from_arrays([tone(300.0), np.full(RATE, np.nan, np.float32)], ["a", "b"], sample_rate=RATE)
    with pytest.raises(DataError, match="sample_rate must be an integer number of Hz"):
        kft.data.from_arrays(waves, labels, sample_rate=16000.5)


# === Classifiers ===


def test_audio_classifiers_need_an_image_backbone_and_consistent_clip_settings(tiny_cnn, tone_data):
    with pytest.raises(ClassifierError, match="heard through image backbones"):
        kft.build_classifier("minilm_l6", num_classes=2, sample_rate=RATE)
    with pytest.raises(ClassifierError, match="duration applies to audio classifiers"):
        kft.build_classifier("tiny_cnn", num_classes=2, duration=1.0)
    with pytest.raises(ClassifierError, match="disagree with the data's clips: 16000 Hz, 1 s"):
        kft.build_classifier("tiny_cnn", data=tone_data, sample_rate=8000)
    assert "tiny_cnn" in kft.backbones.names("audio") and "minilm_l6" not in kft.backbones.names("audio")


@pytest.fixture(scope="module")
def tone_export(tone_data, tmp_path_factory):
    """EfficientNet-Lite0 from its ImageNet weights, frozen, on 64x64 spectrograms (a random tiny CNN under
    global pooling hardly tells these clips apart: pretrained features are the point)."""
    model = kft.build_classifier("efficientnet_lite0", data=tone_data, image_size=(64, 64), seed=0)
    kft.fine_tune(model, tone_data, epochs=10, learning_rate=0.01, batch_size=8, verbose=0)
    folder = tmp_path_factory.mktemp("tone_export")
    exported = kft.export(model, folder / "tones", data=tone_data)
    return model, exported, folder


def test_a_classifier_on_spectrograms_tells_tones_apart(tone_export, tone_data):
    model, _, _ = tone_export
    assert kft.evaluate(model, tone_data)["accuracy"] >= 0.9


def test_exports_classify_wav_bytes_and_waveforms_in_a_fresh_process_like_the_model(tone_export, tone_data):
    model, exported, folder = tone_export
    clips = tone_data.inputs("test")
    expected = model.predict(clips, verbose=0)
    wavs = [wav_bytes(clip) for clip in clips]  # 16-bit PCM: what the model saw, to 1/32768
    np.save(folder / "wavs.npy", np.array(wavs, dtype=object))
    np.save(folder / "clips.npy", clips)
    run_fresh(f"""
        import sys, numpy as np, tensorflow as tf, keras, keras_hub
        model = keras.models.load_model({str(exported.keras)!r}, safe_mode=True)
        np.save({str(folder / "keras.npy")!r}, model.predict(np.load({str(folder / "clips.npy")!r}), verbose=0))
        loaded = tf.saved_model.load({exported.saved_model!r})
        wavs = tf.constant(list(np.load({str(folder / "wavs.npy")!r}, allow_pickle=True)))
        save_outputs({str(folder / "wav.npz")!r}, loaded.signatures["wav_bytes"](wav_bytes=wavs))
        clips = np.load({str(folder / "clips.npy")!r})
        save_outputs({str(folder / "audio.npz")!r}, loaded.signatures["serving_default"](audio=tf.constant(clips)))
        assert "kerasft" not in sys.modules
    """)
    np.testing.assert_allclose(np.load(folder / "keras.npy"), expected, atol=1e-5)
    np.testing.assert_allclose(np.load(folder / "audio.npz")["probabilities"], expected, atol=1e-5)
    served = np.load(folder / "wav.npz")
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-3)  # 16-bit rounding of the input
    assert [label.decode() for label in served["label"]] == [tone_data.class_names[i] for i in expected.argmax(-1)]


def test_the_serving_signatures_resample_and_cut_or_pad_any_clip(tone_export):
    model, exported, _ = tone_export
    predictor = kft.load(exported.saved_model)
    assert predictor.modality == "audio" and predictor.sample_rate == RATE
    clip = tone(300.0, seconds=0.5, seed=3)
    expected = model.predict(np.pad(clip, (0, RATE - len(clip)))[None], verbose=0)
    np.testing.assert_allclose(predictor.predict([clip]), expected, atol=1e-5)  # padded inside
    np.testing.assert_allclose(predictor.predict([np.concatenate([clip, np.ones(RATE, np.float32)])[:RATE]]),
                               predictor.predict([np.concatenate([clip, np.ones(2 * RATE, np.float32)])]),
                               atol=1e-6)  # cut to the first second
    at_44k = audio.resample(tf.constant(clip), RATE, 44100).numpy()
    served = tf.saved_model.load(exported.saved_model).signatures["wav_bytes"](
        wav_bytes=tf.constant([wav_bytes(at_44k, 44100)]))  # 16-bit PCM: what decode_wav reads
    assert served["label"].numpy()[0].decode() == "hum"
    labels, _ = kft.load(exported.keras).predict_labels([wav_bytes(at_44k, 44100, "FLAC")])
    assert labels == ["hum"]


def test_the_model_card_and_saved_model_cli_describe_the_audio_signatures(tone_export):
    _, exported, _ = tone_export
    with open(exported.model_card) as file:
        card = json.load(file)
    assert card["model"]["modality"] == "audio"
    assert (card["model"]["sample_rate"], card["model"]["duration"]) == (RATE, 1.0)
    assert card["signatures"]["wav_bytes"]["inputs"] == {"wav_bytes": "string[None]"}
    assert card["signatures"]["serving_default"]["inputs"] == {"audio": "float32[None, None]"}
    cli = "import sys; from tensorflow.python.tools.saved_model_cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", cli, "show", "--dir", exported.saved_model, "--all"],
                            capture_output=True, text=True, timeout=FRESH_PROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "signature_def['wav_bytes']" in result.stdout and "signature_def['serving_default']" in result.stdout


def test_a_stereo_44khz_wav_gives_the_same_prediction_through_python_and_the_serving_graph(tone_export):
    _, exported, _ = tone_export
    left = audio.resample(tf.constant(tone(300.0, seed=5)), RATE, 44100).numpy()
    stereo = wav_bytes(np.stack([left, 0.5 * left], axis=1), 44100)
    in_python = kft.load(exported.keras).predict([stereo])  # soundfile + kerasft.audio.to_mono
    served = tf.saved_model.load(exported.saved_model).signatures["wav_bytes"](wav_bytes=tf.constant([stereo]))
    np.testing.assert_allclose(served["probabilities"].numpy(), in_python, atol=1e-4)


def test_a_predictor_takes_int16_and_stereo_waveforms_and_refuses_unscaled_floats(tone_export):
    model, exported, _ = tone_export
    clip = tone(None, seed=7)[:RATE]
    predictor = kft.load(exported.keras)
    expected = predictor.predict([clip])
    np.testing.assert_allclose(predictor.predict([np.stack([clip, clip], axis=1)]), expected, atol=1e-5)
    np.testing.assert_allclose(predictor.predict([(clip * 32768).astype(np.int16)]), expected, atol=1e-3)
    with pytest.raises(ExportError, match=r"input 0: float samples must lie in \[-1, 1\]; these reach"):
        predictor.predict([clip * 32768])
    with pytest.raises(ExportError, match="looks channels-first"):
        predictor.predict([np.stack([clip, clip])])


def test_a_mean_ensemble_of_audio_members_serves_wav_bytes(tone_export, tone_data, tmp_path):
    model, _, _ = tone_export
    other = kft.build_classifier("efficientnet_lite0", data=tone_data, image_size=(64, 64), seed=1)
    kft.fine_tune(other, tone_data, epochs=6, learning_rate=0.01, batch_size=8, verbose=0)
    ensemble = kft.ensemble([model, other], method="mean")
    clips = tone_data.inputs("test")
    exported = kft.export(ensemble, tmp_path / "ensemble", data=tone_data)
    served = kft.load(exported.saved_model).predict([wav_bytes(clip) for clip in clips])
    np.testing.assert_allclose(served, ensemble.predict(clips, verbose=0), atol=1e-3)
    short = kft.build_classifier("efficientnet_lite0", num_classes=2, sample_rate=RATE, duration=0.5)
    with pytest.raises(EnsembleError, match="clips of 8000 samples at 16000 Hz; member 0 takes 16000 at 16000 Hz"):
        kft.ensemble([model, short], method="mean")


def test_a_predictor_names_an_unreadable_sound_file(tone_export, tmp_path):
    _, exported, _ = tone_export
    fake = tmp_path / "fake.wav"
    fake.write_text("not sound")
    with pytest.raises(ExportError, match="fake.wav: not a readable WAV/FLAC/OGG file"):
        kft.load(exported.keras).predict([str(fake)])
    with pytest.raises(ExportError, match="LiteRT files hold text and image models only"):
        kft.export(tone_export[0], tmp_path / "lite", formats=("litert",))


def test_augmentation_needs_an_unfrozen_backbone_and_audio_settings_must_match(tone_export, tone_data, tmp_path):
    model, _, _ = tone_export
    with pytest.raises(TrainingError, match="augmentation applies to phase 2"):
        kft.fine_tune(model, tone_data, epochs=1, trainable="frozen", augmentation=0.3, verbose=0)
    other_rate = kft.data.from_directory(write_tones(tmp_path / "clips", per_class=6), sample_rate=8000, seed=0)
    with pytest.raises(ClassifierError, match="takes clips of 16000 samples at 16000 Hz but the data's "
                                                         "are 1 s at 8000 Hz"):
        kft.evaluate(model, other_rate)


def test_fine_tune_augments_spectrograms_in_phase_2_and_still_learns(tone_data):
    def run(augmentation):
        model = kft.build_classifier("efficientnet_lite0", data=tone_data, image_size=(64, 64), trainable="top:1",
                                     seed=0)
        history = kft.fine_tune(model, tone_data, epochs=2, warmup_epochs=8, learning_rate=0.01, batch_size=8,
                                augmentation=augmentation, verbose=0).history
        return model, [loss for loss, phase in zip(history["loss"], history["phase"]) if phase == 2]

    model, augmented = run(0.5)
    _, plain = run(0.0)
    assert len(augmented) == 2
    # Same seed, same phase 1: only the augmented inputs can make phase 2's training loss differ.
    assert not np.allclose(augmented, plain, rtol=1e-3)
    assert kft.evaluate(model, tone_data)["accuracy"] >= 0.9


def test_tune_runs_every_trial_with_audio_augmentation_on_the_uncached_path(tiny_cnn, tone_data, tmp_path):
    search = kft.tune(tone_data, backbone="tiny_cnn", tuner="random", max_trials=2, epochs=2, directory=tmp_path,
                      image_size=(32, 32), verbose=0, seed=0,
                      space={"trainable": "top:1", "depth": 0, "augmentation": [0.5], "batch_size": 16})
    trials = list(search.tuner.oracle.trials.values())
    assert len(trials) == 2 and all(trial.status == "COMPLETED" for trial in trials)
    (best,) = search.best_models(1)
    assert best.predict(tone_data.inputs("test"), verbose=0).shape == (tone_data.size("test"), 2)
