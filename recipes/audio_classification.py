"""
Title: Spoken-word classification with an ImageNet EfficientNet-Lite0 that listens through spectrograms
Description: Log-mel spectrograms turn speech into pictures; a pretrained image backbone fine-tuned on them
recognizes 10 command words from speakers it never heard, offline on a laptop CPU.

No pretrained audio backbone installs offline here, but a proven transfer-learning
route does: each one-second clip becomes a 64-band log-mel spectrogram (inside
the model, with stock Keras layers), which an ImageNet-pretrained CNN reads as a
grey picture. The data are 2560 clips of yes/no/up/down/left/right/on/off/stop/go
spoken by Debian's `espeak-ng` in 8 accents x 16 speaker variants, half of them
in background noise; two speakers (one male, one female) are held out for
validation and two others for test, so the score is on unseen voices.

Set `KERASFT_SMOKE=1` for a one-minute run on a few hundred clips (the tests do).
"""

import os

import kerasft as kft

SMOKE = os.environ.get("KERASFT_SMOKE") == "1"
BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = (128, 128)  # the 64 mel bands x 101 frames are resized to this
EPOCHS = 1 if SMOKE else 10  # phase 2; phase 1 (the head alone) runs up to 20 cheap epochs
OUTPUT = os.environ.get("KERASFT_OUTPUT", "saved_models/spoken_words")

"""
## The data

Generated once into the user cache (about 10 s), resampled from espeak-ng's
22050 Hz to 16 kHz and cut or padded to one second.
"""

data = kft.samples.spoken_words(seed=0)
if SMOKE:
    data = data.subset(train=300, validation=100, test=100, seed=0)
print(data.summary())

"""
## The model

The classifier takes raw waveforms `(N, 16000)`: its preprocessor computes the
log-mel spectrogram, maps decibels to grey pixels, repeats them to 3 channels
and scales them as the backbone was trained (see `kerasft.audio`). After the
head has warmed up on frozen features, `trainable="all"` unfreezes every layer,
each block below the top at 0.7 times the rate of the one above (from 1e-3):
spectrograms are not photos, so even the first blocks and their BatchNorm
statistics must adapt (BatchNorm trains for sound: `batchnorm="auto"`). The
spectrograms are augmented in that phase (SpecAugment masks, time and frequency
shifts, gain), which helps on speakers the model never heard.
bench/pretrained_vs_random.py: 0.99 on the unseen speakers this way, 0.93 with
only the top 4 blocks unfrozen at 3e-4.
"""

model = kft.build_classifier(BACKBONE, data=data, image_size=IMAGE_SIZE, trainable="all",
                             head=kft.Head(units=(128,), dropout=0.2))
history = kft.fine_tune(model, data, epochs=EPOCHS, warmup_epochs=20, batch_size=32,
                        fine_tune_learning_rate=1e-3, patience=3, augmentation=0.5)

"""
## Evaluation on unseen speakers, and export

The export folder holds `model.keras` and a SavedModel whose `wav_bytes`
signature takes the bytes of 16-bit WAV files (any rate, mono or stereo) and
`serving_default` raw waveforms at 16 kHz.
"""

result = kft.evaluate(model, data)
print(result.summary())
exported = kft.export(model, OUTPUT, data=data, metrics=result)

test_clips = data.inputs("test")[:4]
predictor = kft.load(exported.saved_model)
labels, scores = predictor.predict_labels(list(test_clips))
for label, score, truth in zip(labels, scores, data.labels("test")[:4]):
    print(f"{label:>6} {score:.3f}  (said: {data.class_names[truth]})")
print(f"test accuracy on unseen speakers {result['accuracy']:.4f}; exported to {exported.path}")
