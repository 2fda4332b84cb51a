"""Random augmentation of a classifier's preprocessed training input: images, and spectrograms of sound.

Both work on what the backbone sees (after the model's own preprocessing), so
they apply only where the bottom of the network is recomputed on every pass:
a frozen bottom is computed once (`kerasft.features`) and never augmented.

- images: random flips, rotations, zooms and shifts, reflecting at the borders.
- spectrograms (`kerasft.audio`): SpecAugment-style frequency and time masks
  (Park et al., 2019), random time and frequency shifts and a random gain (a dB offset).

Draws follow the order of the batches: map an augmenter over a dataset
without parallel calls so that a seed repeats a run.
"""

import keras
import numpy as np
import tensorflow as tf

from kerasft import audio, keras_internals, models


class AugmentationError(ValueError):
    """An augmentation strength, or a model that takes no augmentation."""


def augmenter(model, strength, seed=0):
    """Returns the random augmentation of a batch of a classifier's PREPROCESSED input, by its modality.

    Images: random flips, rotations (up to 0.1 s turns), zooms (0.3 s) and
    shifts (0.15 s), reflecting at the borders. Audio: `spectrogram_augmentation`
    on the spectrogram pixels (masks, time and frequency shifts, gain).

    Args:
        model: keras.Model. A kerasft image or audio classifier.
        strength: float. In [0, 1]; 0 changes nothing.
        seed: int. Seed of the random draws.

    Returns:
        A callable from a batch `(N, H, W, 3)` to an augmented batch of that shape. Its
        random draws follow the order of the calls: map it over a dataset without
        parallel calls to keep a run reproducible (`fine_tune` and `tune` do).

    Raises:
        TrainingError: a text model, or a strength outside [0, 1].
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise AugmentationError(f"augmentation is a strength in [0, 1]. Received: {strength!r}")
    modality = models.modality_of(model)
    if modality == "audio":
        # Black and white pixels as the backbone sees them: its normalization of 0 and 255.
        rescaling = [layer for layer in keras_internals.flatten_layers(model.get_layer("preprocessor"))
                     if isinstance(layer, keras.layers.Rescaling) and layer.name == "normalize"]
        scale, offset = (np.float32(rescaling[0].scale), np.float32(rescaling[0].offset)) if rescaling else (1, 0)
        return spectrogram_augmentation(strength, seed, black=offset, white=255 * np.asarray(scale) + offset)
    if modality != "image":
        raise AugmentationError(f"augmentation applies to image and audio models; this one takes {modality}.")
    layers = keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.1 * strength, fill_mode="reflect", seed=seed),
        keras.layers.RandomZoom(0.3 * strength, fill_mode="reflect", seed=seed),
        keras.layers.RandomTranslation(0.15 * strength, 0.15 * strength, fill_mode="reflect", seed=seed),
    ], name="augmentation")
    return lambda images: layers(images, training=True)


def spectrogram_augmentation(strength, seed, black=0.0, white=255.0):
    """Random SpecAugment masks, shifts and gain on a batch of preprocessed spectrograms `(N, H, W, C)`.

    With strength s in [0, 1]: the clip moves by up to `0.1 s` of its
    frames in time and by up to `0.05 s` of its mel rows in frequency (a
    higher or lower voice, as vocal tract length perturbation does), the
    gain changes by up to +-6 s dB (kept between black and white, as the
    front end clips), and one band of up to `0.2 s` of the mel rows and one
    of up to `0.2 s` of the frames are masked (Park et al., 2019). Masked and
    shifted-in cells are black: silence as the backbone sees it.

    The draws come from one seeded `tf.random.Generator`, in batch order:
    map the function over a dataset WITHOUT parallel calls to keep a run
    reproducible.

    Args:
        strength: float. In [0, 1].
        seed: int. Seed of the random draws.
        black: float or per-channel values. Pixel 0 (FLOOR_DB) after the
            backbone's preprocessing.
        white: float or per-channel values. Pixel 255 (FLOOR_DB + audio.RANGE_DB)
            after the backbone's preprocessing.
    """
    rng = tf.random.Generator.from_seed(seed)
    black = tf.reshape(tf.constant(black, tf.float32), [1, 1, 1, -1])
    white = tf.reshape(tf.constant(white, tf.float32), [1, 1, 1, -1])
    gain = 6.0 * strength * (white - black) / audio.RANGE_DB

    def uniform(batch, low=0.0, high=1.0):
        return rng.uniform([batch, 1], low, high)

    def shift(images, axis, fraction):
        """Moves each example along `axis` (1: frequency, 2: time) by a random number of cells."""
        size, batch = tf.shape(images)[axis], tf.shape(images)[0]
        limit = fraction * strength * tf.cast(size, tf.float32)
        source = tf.range(size)[tf.newaxis] - tf.cast(tf.round(uniform(batch, -1.0, 1.0) * limit), tf.int32)
        moved = tf.gather(images, tf.clip_by_value(source, 0, size - 1), axis=axis, batch_dims=1)
        inside = (source >= 0) & (source < size)
        inside = inside[:, :, tf.newaxis, tf.newaxis] if axis == 1 else inside[:, tf.newaxis, :, tf.newaxis]
        return tf.where(inside, moved, black)

    def band(size, batch):
        """One random band of up to 0.2 s of `size` cells per example, as a boolean mask (batch, size)."""
        width = tf.cast(tf.floor(uniform(batch) * (0.2 * strength * tf.cast(size, tf.float32) + 1)), tf.int32)
        start = tf.cast(tf.floor(uniform(batch) * tf.cast(size - width + 1, tf.float32)), tf.int32)
        index = tf.range(size)[tf.newaxis]
        return (index >= start) & (index < start + width)

    def augment(images):
        batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        images = shift(shift(images, 2, 0.1), 1, 0.05)
        change = uniform(batch, -1.0, 1.0)[:, :, tf.newaxis, tf.newaxis] * gain
        images = tf.clip_by_value(images + change, tf.minimum(black, white), tf.maximum(black, white))
        masked = band(height, batch)[:, :, tf.newaxis, tf.newaxis] | band(width, batch)[:, tf.newaxis, :, tf.newaxis]
        return tf.where(masked, black, images)

    return augment
