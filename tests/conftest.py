"""Shared test set-up: quiet TensorFlow, an isolated kerasft cache, tiny fixtures."""

import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

FRESH_PROCESS_TIMEOUT = 240

# Prelude of fresh-process scripts that call it: signature outputs -> .npz (strings as bytes, not pickled objects).
_SAVE_OUTPUTS = """
import numpy as np, tensorflow as tf
def save_outputs(path, outputs):
    np.savez(path, **{k: v.numpy().astype("S") if v.dtype == tf.string else v.numpy() for k, v in outputs.items()})
"""


def run_fresh(script, env=None):
    """Runs a (dedented) script in a fresh interpreter, time-bounded; fails with its stderr, returns its stdout.

    A script that calls `save_outputs(path, outputs)` gets that helper defined first.
    """
    script = textwrap.dedent(script)
    script = (_SAVE_OUTPUTS if "save_outputs(" in script else "") + script
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=FRESH_PROCESS_TIMEOUT, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never write into the user's real cache; converted presets are shared per session."""
    monkeypatch.setenv("KERASFT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kerasft-cache"))


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "ran",
              "on", "mat", "fast", "slow", "big", "small", "red", "blue", "green"]


def tiny_bert_spec(name, vocabulary, **tokenizer_kwargs):
    """A 2-layer, hidden-size-8 BERT (random weights) over `vocabulary`, registered as `name`."""
    import functools

    from kerasft import backbones

    return backbones.register(backbones.BackboneSpec(
        name=name, modality="text", build=functools.partial(_tiny_bert, len(vocabulary)),
        block_pattern=r"^(transformer_layer_\d+)$",
        text_preprocessor=functools.partial(_tiny_bert_preprocessor, vocabulary, tokenizer_kwargs),
        sequence_length=16, source="random (tests)"))


def _tiny_bert(vocabulary_size, pretrained, image_size=None):
    import keras_hub

    return keras_hub.models.BertBackbone(vocabulary_size=vocabulary_size, num_layers=2, num_heads=2,
                                         hidden_dim=8, intermediate_dim=16, max_sequence_length=16,
                                         name="backbone")


def _tiny_bert_preprocessor(vocabulary, tokenizer_kwargs, sequence_length):
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, **tokenizer_kwargs)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length,
                                                           name="preprocessor")


@pytest.fixture(scope="session")
def tiny_bert():
    """A 2-layer, hidden-size-8 BERT registered as 'tiny_bert' (random weights)."""
    return tiny_bert_spec("tiny_bert", TINY_VOCAB)


@pytest.fixture(scope="module")
def tiny_bert4(tiny_bert):
    """tiny_bert with 4 transformer layers, registered as 'tiny_bert4': a teacher backbone to cut students from."""
    import dataclasses

    import keras_hub

    from kerasft import backbones

    def build(pretrained, image_size=None):
        return keras_hub.models.BertBackbone(vocabulary_size=len(TINY_VOCAB), num_layers=4, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=16, name="backbone")

    yield backbones.register(dataclasses.replace(tiny_bert, name="tiny_bert4", build=build))
    backbones.unregister("tiny_bert4")


def _tiny_cnn(pretrained, image_size):
    import keras

    pixels = keras.Input(shape=(*image_size, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="block1_conv")(pixels)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block2_conv")(x)
    return keras.Model(pixels, x, name="backbone")


def tiny_cnn_spec():
    """A 2-block CNN registered as 'tiny_cnn' (random weights): exports in a second, not ResNet50's ten."""
    from kerasft import backbones

    return backbones.register(backbones.BackboneSpec(
        name="tiny_cnn", modality="image", build=_tiny_cnn, block_pattern=r"^(block\d+)_",
        image_size=(32, 32), min_image_size=8, scale=1 / 255, source="random (tests)"))


@pytest.fixture(scope="session")
def tiny_cnn():
    """The tiny CNN of `tiny_cnn_spec`."""
    return tiny_cnn_spec()


@pytest.fixture(scope="session")
def tiny_text_data():
    """120 short texts, 2 classes told apart by the words 'cat' and 'dog'."""
    import numpy as np

    from kerasft import data

    rng = np.random.default_rng(0)
    filler = TINY_VOCAB[11:]
    texts, labels = [], []
    for i in range(120):
        label = i % 2
        words = list(rng.choice(filler, size=5)) + ["cat" if label == 0 else "dog"]
        rng.shuffle(words)
        texts.append(" ".join(["the"] + words + [str(i)]))
        labels.append(["cats", "dogs"][label])
    return data.from_arrays(texts, labels, seed=0)


RATE = 16000
# Class -> frequency of its tone; None is a hiss (white noise). A hum and a hiss differ in texture, which even
# a random CNN under global pooling tells apart (two tones differ only in position, which pooling discards).
TONES = {"hiss": None, "hum": 300.0}


def tone(frequency, seconds=0.6, rate=RATE, amplitude=0.5, seed=0):
    """A tone (or white noise when `frequency` is None) with a little noise, at a seeded random offset."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    if frequency is None:
        wave = amplitude * np.clip(rng.standard_normal(len(t)) / 3, -1, 1)
    else:
        wave = amplitude * np.sin(2 * np.pi * frequency * (1 + 0.05 * rng.standard_normal()) * t)
    wave = np.pad(wave, (int(rng.integers(0, rate // 4)), 0))
    return (wave + 0.01 * rng.standard_normal(len(wave))).astype(np.float32)


def wav_bytes(waveform, rate=RATE, fmt="WAV", subtype="PCM_16"):
    """The bytes of a sound file (WAV 16-bit PCM unless told) holding `waveform`."""
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def write_tones(root, per_class=24, rates=(RATE,)):
    """A class folder of tone WAVs; clip i of a class is written at rates[i % len(rates)]."""
    for name, frequency in TONES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            rate = rates[i % len(rates)]
            clip = tone(frequency, rate=rate, amplitude=0.2 + 0.6 * (i % 5) / 4, seed=i)
            (root / name / f"{i}.wav").write_bytes(wav_bytes(clip, rate))
    return root


def brightness_data(n=160, dark=60, bright=170, noise=25.0):
    """`n` RGB 32x32 uint8 images in 2 classes told apart by brightness, as a TaskData (seeded)."""
    import numpy as np

    from kerasft import data

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    base = np.where(labels[:, None, None, None] == 1, bright, dark)
    images = np.clip(base + rng.normal(0, noise, size=(n, 32, 32, 3)), 0, 255).astype("uint8")
    return data.from_arrays(images, labels, class_names=["dark", "bright"], seed=0)


@pytest.fixture(scope="session")
def tiny_image_data():
    """160 RGB 32x32 images, 2 classes told apart by brightness, uint8."""
    return brightness_data()
