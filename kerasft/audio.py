"""Audio: reading clips, and the spectrogram front end through which image backbones hear.

No pretrained audio backbone installs offline, but a proven transfer-learning
route does: turn each clip into a log-mel spectrogram and fine-tune an
ImageNet-pretrained CNN on it as if it were a picture. An audio classifier is
an image classifier whose "preprocessor" starts with this front end, so
`predict` and every export take raw waveforms.

A clip is a mono float32 waveform in [-1, 1] at the data's `sample_rate`,
cut to its first `duration` seconds or zero-padded to that length. Loaders
mix channels to mono (their mean) and resample with `resample`, the same
function the SavedModel's `wav_bytes` signature runs, so a file gives the
same clip in training and in serving.

The front end, stock Keras layers only (so a `.keras` file loads without
kerasft), and THE place where sound becomes an image:
```
waveform (clip_samples,)
  -> keras.layers.MelSpectrogram   25 ms Hann windows every 10 ms (FFT: the next power of 2,
                                   512 points at 16 kHz), 64 mel bands from 40 Hz to
                                   sample_rate / 2, power in dB
  -> pixels = (dB - FLOOR_DB) * 255 / RANGE_DB, clipped to 0..255
                                   FLOOR_DB (-60 dB) is black, FLOOR_DB + RANGE_DB (+40 dB) white;
                                   a full-scale tone reaches about +39 dB
  -> (64 mel rows, low frequencies on top) x (frames) x 3 equal channels
  -> the image backbone's own preprocessing: resize to image_size, its scaling
```
MelSpectrogram's own `top_db` clip is relative to the loudest value of the
whole BATCH, which would make a clip's prediction depend on its batch-mates;
it is disabled and the fixed dB floor above takes its place.

Augmentation of spectrograms lives with image augmentation in `kerasft.augment`.
"""

import io
import re

import keras
import numpy as np
import tensorflow as tf

from kerasft import keras_internals

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SAMPLE_RATE = 16000
DURATION = 1.0
IMAGE_SIZE = (128, 128)
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MIN_FREQUENCY = 40.0
FLOOR_DB = -60.0
RANGE_DB = 100.0
# Peak amplitude under which a clip counts as silent (about -80 dBFS; 16-bit dither is -90 dBFS).
SILENCE = 1e-4
_PIXELS_PER_DB = 255.0 / RANGE_DB


class AudioError(ValueError):
    """An audio clip or an audio setting is unusable: says which and why."""


def clip_samples(sample_rate, duration):
    """The number of samples in a clip of `duration` seconds."""
    return int(round(sample_rate * duration))


def window_samples(sample_rate):
    """The samples in one STFT window: a clip must hold at least this many."""
    return int(round(WINDOW_SECONDS * sample_rate))


def fft_length(sample_rate):
    """The FFT size: the smallest power of 2 that holds one window."""
    return 1 << (window_samples(sample_rate) - 1).bit_length()


def check_settings(sample_rate, duration):
    """Raises AudioError unless `sample_rate` (Hz) and `duration` (seconds) make a usable clip."""
    if (not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool)
            or not 4000 <= sample_rate <= 96000):
        raise AudioError(f"sample_rate must be an integer number of Hz in [4000, 96000]. Received: {sample_rate!r}")
    if (not isinstance(duration, (int, float, np.number)) or isinstance(duration, bool)
            or not 4 * WINDOW_SECONDS <= duration <= 60):
        raise AudioError(f"duration must be a number of seconds in [{4 * WINDOW_SECONDS}, 60]. Received: {duration!r}")
    return int(sample_rate), float(duration)


# === Reading clips ===


def decode(content):
    """Decodes WAV, FLAC or OGG bytes into `(waveform float32 (samples, channels), sample rate)`.

    Raises:
        AudioError: the bytes are not an audio file libsndfile reads.
    """
    import soundfile

    if not content:
        raise AudioError("empty file (0 bytes)")
    try:
        waveform, rate = soundfile.read(io.BytesIO(content), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        # libsndfile's message names the in-memory file object; keep only what it says is wrong.
        why = re.sub(r"^Error opening <[^>]*>: ", "", str(error)).strip() or type(error).__name__
        raise AudioError(f"not a readable WAV/FLAC/OGG file ({why})") from None
    return waveform, int(rate)


def as_float(waveform):
    """A waveform array as float32 `(samples, channels)`: integer PCM scaled by its type's range.

    Raises:
        AudioError: not numeric, not 1-D or 2-D, channels first, or floats far outside [-1, 1].
    """
    waveform = np.asarray(waveform)
    if waveform.dtype.kind not in "iuf" or waveform.ndim not in (1, 2):
        raise AudioError(f"expected a numeric array (samples,) or (samples, channels). Received "
                         f"{waveform.dtype} of shape {waveform.shape}.")
    if waveform.ndim == 2 and waveform.shape[0] <= 8 < waveform.shape[1]:
        raise AudioError(f"shape {waveform.shape} looks channels-first; expected (samples, channels). "
                         "Transpose it (librosa and torchaudio give channels first).")
    if waveform.dtype.kind in "iu":
        info = np.iinfo(waveform.dtype)
        waveform = (waveform.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    elif waveform.size and np.isfinite(waveform).all() and np.abs(waveform).max() > 2.0:
        raise AudioError(f"float samples must lie in [-1, 1]; these reach {np.abs(waveform).max():.4g}. "
                         "Integer PCM stored as floats? Divide by 32768 (16-bit) or pass the integer array.")
    return waveform.astype(np.float32).reshape(len(waveform), -1)


def problem(waveform, rate):
    """Why a decoded waveform `(samples, channels)` cannot be a clip, or None when it can."""
    if waveform.size == 0:
        return "empty (0 samples)"
    if len(waveform) < window_samples(rate):
        return (f"shorter than one STFT window ({len(waveform)} samples < {window_samples(rate)} at {rate} Hz, "
                f"{WINDOW_SECONDS * 1000:g} ms)")
    if not np.isfinite(waveform).all():
        return "holds NaN or infinite samples"
    if np.abs(waveform).max() < SILENCE:
        return f"silent (peak amplitude {np.abs(waveform).max():.1e} < {SILENCE:g})"
    return None


def to_mono(waveform, rate, sample_rate):
    """Mixes `(samples, channels)` to mono (the channels' mean) and resamples it to `sample_rate`: float32 numpy.

    Only resampling runs TensorFlow (`resample`, the serving graph's own op);
    a clip already at `sample_rate` stays in numpy, so loading thousands is fast.
    """
    mono = (waveform.mean(axis=1) if waveform.ndim == 2 else waveform).astype(np.float32)
    return resample(tf.constant(mono), rate, sample_rate).numpy() if rate != sample_rate else mono


def to_clip(waveform, rate, sample_rate, duration):
    """`to_mono`, then cut to its first `duration` seconds or zero-padded to them (as `fit_length` in graphs)."""
    mono = to_mono(waveform, rate, sample_rate)[:clip_samples(sample_rate, duration)]
    return np.pad(mono, (0, clip_samples(sample_rate, duration) - len(mono)))


def resample(waveform, rate, sample_rate):
    """Resamples a 1-D waveform from `rate` to `sample_rate` Hz (TensorFlow ops, so serving graphs run it too).

    Linear interpolation with an antialiasing (triangle) filter when
    downsampling: `tf.image.resize` over the time axis.
    """
    rate = tf.cast(rate, tf.float32)
    length = tf.cast(tf.round(tf.cast(tf.shape(waveform)[0], tf.float32) * sample_rate / rate), tf.int32)
    image = tf.reshape(tf.cast(waveform, tf.float32), [1, -1, 1, 1])
    return tf.reshape(tf.image.resize(image, tf.stack([tf.maximum(length, 1), 1]), antialias=True), [-1])


def fit_length(waveforms, length):
    """Cuts a batch of waveforms `(N, samples)` to its first `length` samples or pads it with zeros."""
    waveforms = waveforms[:, :length]
    return tf.pad(waveforms, [[0, 0], [0, length - tf.shape(waveforms)[1]]])


# === The front end ===


def front_end(sample_rate, duration):
    """Returns the layers that turn a waveform batch `(N, clip_samples)` into spectrogram pixels `(N, 64, T, 3)`.

    Args:
        sample_rate: int. Hz of the waveforms.
        duration: float. Seconds per clip.

    Returns:
        `(inputs, outputs)`: a `keras.Input` named "audio" and the symbolic
        pixels, 0..255, for the image backbone's preprocessing to take over.
    """
    samples = clip_samples(sample_rate, duration)
    waveform = keras.Input(shape=(samples,), dtype="float32", name="audio")
    spectrogram = keras.layers.MelSpectrogram(
        fft_length=fft_length(sample_rate), sequence_stride=int(round(HOP_SECONDS * sample_rate)),
        sequence_length=window_samples(sample_rate), sampling_rate=sample_rate,
        num_mel_bins=NUM_MEL_BINS, min_freq=MIN_FREQUENCY, max_freq=sample_rate / 2, power_to_db=True,
        top_db=1e9, min_power=1e-10, name="mel_spectrogram")(waveform)
    frames = spectrogram.shape[-1]
    x = keras.layers.Reshape((NUM_MEL_BINS, frames, 1), name="as_image")(spectrogram)
    x = keras.layers.Rescaling(_PIXELS_PER_DB, -FLOOR_DB * _PIXELS_PER_DB, name="decibels_to_pixels")(x)
    x = keras.layers.ReLU(max_value=255.0, name="clip_pixels")(x)
    # One grey channel repeated to the 3 an ImageNet backbone expects: a frozen 1 -> 3 Dense of ones.
    to_rgb = keras.layers.Dense(3, use_bias=False, trainable=False, name="grey_to_rgb")
    x = to_rgb(x)
    to_rgb.set_weights([np.ones((1, 3), np.float32)])
    return waveform, x


def sample_rate_of(model):
    """The `(sample_rate, clip_samples)` an audio classifier or ensemble takes, from its front end."""
    layers = [layer for layer in keras_internals.flatten_layers(model)
              if isinstance(layer, keras.layers.MelSpectrogram)]
    rates = {layer.sampling_rate for layer in layers}
    if len(rates) != 1:
        raise AudioError(f"Model {model.name!r} has {len(rates)} sample rates in its spectrogram front ends "
                         f"({sorted(rates)}); expected one.")
    return rates.pop(), model.inputs[0].shape[-1]
