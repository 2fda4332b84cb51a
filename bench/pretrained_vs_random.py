"""EfficientNet-Lite0 from ImageNet weights against random initialization, same data and budget.

Two data sets, each with its recipe's settings, differing only in `pretrained=`:
- Fashion-MNIST: a stratified 2000/500/2000 subset, 96x96, a 128-unit head,
  10 head epochs on frozen features then 3 epochs with the top 3 blocks unfrozen.
- Spoken words (audio, log-mel spectrograms at 128x128): all 2560 clips, test
  speakers never heard in training, 20 head epochs then up to 10 with every
  layer unfrozen (`trainable="all"`, blocks at layer-decayed rates from 1e-3)
  and the spectrograms augmented (strength 0.5). Spectrograms are not photos:
  with only the top 4 blocks unfrozen (rate 3e-4) the same run reached 0.9281
  (2026-11-30), every layer 0.9938.
Where the recipe unfreezes less, a second random-init run unfreezes the whole network (`trainable="all"`).
kerasft's default BatchNorm mode is "auto": frozen (inference mode, pretrained
statistics) for images, adapting in the unfrozen blocks for audio, where
frozen ImageNet statistics hold spectrograms back; each kerasft run says which
mode it used, and on speech the pretrained run is made with both. Two more runs
train the network as one would from scratch, once from random and once from
the ImageNet weights: plain Keras `fit`, every layer trainable, BatchNorm in
training mode, Adam at 1e-3, the same (augmented) inputs, as many epochs as the
pretrained run's phase 2 plus 5. Writes one section of bench/BENCHMARKS.md per data set.

Usage: .venv/bin/python bench/pretrained_vs_random.py [--data fashion_mnist|spoken_words]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402
from kerasft import augment, features, keras_internals  # noqa: E402

SETTINGS = {
    "fashion_mnist": dict(
        load=lambda: kft.samples.fashion_mnist(seed=0).subset(train=2000, validation=500, test=2000, seed=0),
        image_size=(96, 96), trainable="top:3", fit=dict(epochs=3, warmup_epochs=10, fine_tune_learning_rate=3e-4),
        title="Pretrained vs random initialization (bench/pretrained_vs_random.py)",
        note="EfficientNet-Lite0, Fashion-MNIST stratified subset 2000 train / 500 validation / 2000 test "
             "(official test split), 28x28 upscaled to 96x96"),
    "spoken_words": dict(
        load=lambda: kft.samples.spoken_words(seed=0),
        image_size=(128, 128), trainable="all",
        fit=dict(epochs=10, warmup_epochs=20, fine_tune_learning_rate=1e-3, patience=3, augmentation=0.5),
        title="Pretrained vs random initialization on speech (bench/pretrained_vs_random.py)",
        note="EfficientNet-Lite0 on 64-band log-mel spectrograms resized to 128x128, kft.samples.spoken_words(): "
             "10 words, 1920 train / 320 validation / 320 test clips, the 2 test speakers never heard in "
             "training, phase 2 on augmented spectrograms (strength 0.5), every layer from 1e-3 (layer-decayed)"),
}


def run(data, setting, pretrained, trainable, batchnorm="auto"):
    start = time.perf_counter()
    model = kft.build_classifier("efficientnet_lite0", data=data, image_size=setting["image_size"],
                                 trainable=trainable, pretrained=pretrained, head=kft.Head(units=(128,), dropout=0.2),
                                 seed=0)
    kft.fine_tune(model, data, batch_size=32, verbose=0, batchnorm=batchnorm, **setting["fit"])
    return kft.evaluate(model, data)["accuracy"], time.perf_counter() - start


def plain_fit(data, setting, pretrained):
    """The whole network trained as from scratch: every layer, BatchNorm in training mode, plain Keras fit."""
    start = time.perf_counter()
    reference = kft.build_classifier("efficientnet_lite0", data=data, image_size=setting["image_size"],
                                     pretrained=pretrained, seed=0)
    backbone = reference.get_layer("network").get_layer("backbone")
    backbone.trainable = True
    for layer in keras_internals.flatten_layers(backbone, include_self=True):
        layer.trainable = True
    pixels = keras.Input(shape=backbone.input.shape[1:])
    outputs = keras.layers.Dense(data.num_classes, activation="softmax")(
        keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(backbone(pixels))))
    model = keras.Model(pixels, outputs)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = features.preprocess(reference, data.train, 32, shuffle=True, seed=0, num_examples=data.size("train"))
    strength = setting["fit"].get("augmentation", 0.0)
    if strength:
        augmenter = augment.augmenter(reference, strength, seed=0)
        train = train.map(lambda x, y: (augmenter(x), y))
    validation = features.preprocess(reference, data.validation, 32)
    model.fit(train, validation_data=validation, epochs=setting["fit"]["epochs"] + 5, verbose=0,
              callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
    _, accuracy = model.evaluate(features.preprocess(reference, data.test, 32), verbose=0)
    return accuracy, time.perf_counter() - start


def compare(name):
    setting = SETTINGS[name]
    data = setting["load"]()
    default_mode = "train" if data.modality == "audio" else "frozen"
    pretrained, t_pre = run(data, setting, True, setting["trainable"])
    other_mode = {"train": "frozen", "frozen": "train"}[default_mode]
    pretrained_other, t_pre_other = run(data, setting, True, setting["trainable"], batchnorm=other_mode)
    random_top, t_top = run(data, setting, False, setting["trainable"])
    random_all, t_all = (random_top, t_top) if setting["trainable"] == "all" else run(data, setting, False, "all")
    scratch, t_scratch = plain_fit(data, setting, pretrained=False)
    plain, t_plain = plain_fit(data, setting, pretrained=True)
    rows = [
        "| initialization | trainable | BatchNorm of unfrozen blocks | test accuracy | seconds |",
        "|---|---|---|---|---|",
        f"| ImageNet (pretrained), kerasft default | {setting['trainable']} | {default_mode} | **{pretrained:.4f}** | "
        f"{t_pre:.0f} |",
        f"| ImageNet (pretrained) | {setting['trainable']} | {other_mode} | {pretrained_other:.4f} | "
        f"{t_pre_other:.0f} |",
        f"| random | {setting['trainable']} | {default_mode} | {random_top:.4f} | {t_top:.0f} |",
        *([f"| random | all | {default_mode} | {random_all:.4f} | {t_all:.0f} |"]
          if setting["trainable"] != "all" else []),
        f"| random, plain fit | all | train | {scratch:.4f} | {t_scratch:.0f} |",
        f"| ImageNet (pretrained), plain fit | all | train | {plain:.4f} | {t_plain:.0f} |",
        "",
        "kerasft's pretrained run minus the best random run: "
        f"**{100 * (pretrained - max(random_top, random_all, scratch)):+.1f} points**; with the same plain fit, "
        f"pretrained minus random: **{100 * (plain - scratch):+.1f} points**.",
    ]
    if default_mode == "train":
        met = pretrained >= 0.97 and t_pre < t_scratch
        rows.append(f"The pretrained network with adaptable BatchNorm: {pretrained:.4f} in {t_pre:.0f} s, the "
                    f"from-scratch plain fit {t_scratch:.0f} s (target >= 0.97 in less wall time: "
                    f"{'met' if met else 'NOT met'}).")
    write_section(setting["title"], "\n".join(rows), setting["note"])
    print("\n".join(rows))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=sorted(SETTINGS), help="one data set (default: both)")
    args = parser.parse_args()
    for name in [args.data] if args.data else sorted(SETTINGS):
        compare(name)


if __name__ == "__main__":
    main()
