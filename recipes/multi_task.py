"""
Title: Multi-task learning: one spectrogram backbone tells the word and the speaker's sex
Description: Two heads on one pretrained EfficientNet-Lite0, trained together on spoken words with two labels
each, exported and served as one model that answers both questions in one pass.

A voice clip carries several labels: the word said, and who said it. Training one
model per label pays for the backbone once per label at every prediction; a
multi-task model shares it. Here every clip of `kft.samples.spoken_words` (10
command words spoken by espeak-ng in 8 accents x 16 speaker variants, half in
background noise) is labelled with its word and its speaker's sex (espeak-ng's
variants are male or female). The validation and test speakers are never heard
in training, so both scores are on unseen voices.

Set `KERASFT_SMOKE=1` for a one-minute run on a few hundred clips (the tests do).
"""

import os

import kerasft as kft

SMOKE = os.environ.get("KERASFT_SMOKE") == "1"
BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = (128, 128)  # the 64 mel bands x 101 frames of a clip are resized to this
EPOCHS = 1 if SMOKE else 8  # phase 2; phase 1 (the heads alone, on cached features) runs up to 20 cheap epochs
OUTPUT = os.environ.get("KERASFT_OUTPUT", "saved_models/spoken_words_multi_task")

"""
## The data: two targets per clip

`targets=("word", "speaker_sex")` makes multi-task data: `data.targets` names each
target with its own task and classes. `data.task` and `data.class_names` still
describe the first target (the word), which the splits are stratified on.
"""

data = kft.samples.spoken_words(seed=0, targets=("word", "speaker_sex"))
if SMOKE:
    data = data.subset(train=300, validation=100, test=100, seed=0)
print(data.summary())

"""
## One backbone, one head per target

Given multi-task data, `build_classifier` gives one `keras.Model` from raw
waveforms to a dict of outputs, `{"word": (N, 10), "speaker_sex": (N, 2)}`: the
log-mel front end and the backbone run once, then each target's head. A dict of
`kft.Head`s shapes each head; here both get one hidden layer.
"""

model = kft.build_classifier(BACKBONE, data=data, image_size=IMAGE_SIZE, trainable="top:4",
                             head=kft.Head(units=(128,), dropout=0.2), seed=0)
print({target: tuple(output.shape) for target, output in model.output.items()})

"""
## Training both heads together

`fine_tune` runs its usual two phases (the heads on frozen features computed
once, then the top four blocks at discriminative rates). The loss is a weighted
sum of each target's loss; by default each target's weight is inversely
proportional to its loss on the first batch, so the 10-way word and the 2-way
sex start with equal shares (pass `loss_weights={"word": ..., ...}` to choose).
A clip missing a label would simply not count in that target's loss.
"""

history = kft.fine_tune(model, data, epochs=EPOCHS, warmup_epochs=20, batch_size=32,
                        fine_tune_learning_rate=3e-4, patience=3, augmentation=0.5)
print("loss weights:", {target: round(weight, 3) for target, weight in history.loss_weights.items()})

"""
## Evaluation per target, export, and one prediction for both questions

The export holds `model.keras`, a SavedModel whose signatures return
`word_probabilities`, `word_label`, `word_score`, `speaker_sex_probabilities`,
... and `labels.json`, the class names of every target.
"""

result = kft.evaluate(model, data)
print(result.summary())
exported = kft.export(model, OUTPUT, data=data, metrics=result)

predictor = kft.load(exported.saved_model)
answers = predictor.predict_labels(list(data.inputs("test")[:4]))
for i in range(4):
    said = data.targets["word"].class_names[data.labels("test", "word")[i]]
    sex = data.targets["speaker_sex"].class_names[data.labels("test", "speaker_sex")[i]]
    print(f"{answers['word'][0][i]:>6} {answers['word'][1][i]:.3f}  {answers['speaker_sex'][0][i]:>6} "
          f"{answers['speaker_sex'][1][i]:.3f}  (said: {said} by a {sex} voice)")
print(f"test accuracy on unseen speakers: word {result['word']['accuracy']:.4f}, speaker sex "
      f"{result['speaker_sex']['accuracy']:.4f}; exported to {exported.path}")
