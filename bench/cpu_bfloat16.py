"""oneDNN's bfloat16 rewrite on this CPU, per backbone: what `cpu_bfloat16="auto"` decides from.

For MiniLM-L6 (sequence 128, BBC News articles) and EfficientNet-Lite0 (224x224,
Fashion-MNIST images), every layer trainable, AdamW: seconds of 4 train steps of 16
examples (`fit`) and of `predict` on 64 examples, in float32 and with the rewrite
(`kft.distribute.cpu_bfloat16_scope(True)`), interleaved over rounds in one process
(the fastest round of each: the least disturbed on this shared machine). Also the
largest difference of the predicted probabilities, before any step (the pretrained
backbone and a fresh head, the same weights both ways). Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/cpu_bfloat16.py [--rounds 4]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402
from timing import raw_batch, timed  # noqa: E402

SETTINGS = {
    "minilm_l6": dict(load=lambda: kft.samples.bbc_news(seed=0), build={"sequence_length": 128}),
    "efficientnet_lite0": dict(load=lambda: kft.samples.fashion_mnist(seed=0), build={"image_size": (224, 224)}),
}


def measure(name, rounds):
    setting = SETTINGS[name]
    data = setting["load"]()
    inputs, labels = raw_batch(data.train, data.modality, 64)
    model = kft.build_classifier(name, num_classes=data.num_classes, trainable="all", seed=0, **setting["build"])
    model.compile(optimizer=keras.optimizers.AdamW(5e-5), loss="sparse_categorical_crossentropy")
    batches = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(16)
    scopes = {"float32": lambda: kft.distribute.cpu_bfloat16_scope(False),
              "bfloat16 rewrite": lambda: kft.distribute.cpu_bfloat16_scope(True)}
    probabilities = {}
    for label, scope in scopes.items():  # the same weights both ways (before any step)
        with scope():
            probabilities[label] = model.predict(inputs, batch_size=32, verbose=0)
    for scope in scopes.values():  # traces both ways, once
        with scope():
            model.fit(batches.take(1), verbose=0)
    times = {label: {"fit": [], "predict": []} for label in scopes}
    for _ in range(rounds):
        for label, scope in scopes.items():
            with scope():
                times[label]["predict"].append(timed(model.predict, inputs, batch_size=32, verbose=0)[1])
                times[label]["fit"].append(timed(model.fit, batches, verbose=0)[1])
    best = {label: {kind: min(values) for kind, values in kinds.items()} for label, kinds in times.items()}
    drift = float(np.abs(probabilities["float32"] - probabilities["bfloat16 rewrite"]).max())
    return best, drift, kft.distribute.cpu_bfloat16("auto", model)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rows = ["| backbone | 4 train steps of 16, float32 / rewrite | predict 64, float32 / rewrite | largest probability "
            "difference | `cpu_bfloat16=\"auto\"` |", "|---|---|---|---|---|"]
    for name in SETTINGS:
        best, drift, auto = measure(name, args.rounds)
        f32, bf16 = best["float32"], best["bfloat16 rewrite"]
        rows.append(f"| {name} | {f32['fit']:.2f} s / {bf16['fit']:.2f} s: **{f32['fit'] / bf16['fit']:.2f}x** | "
                    f"{f32['predict']:.2f} s / {bf16['predict']:.2f} s: **{f32['predict'] / bf16['predict']:.2f}x** | "
                    f"{drift:.1e} | {'on' if auto else 'off'} |")
        print("\n".join(rows), flush=True)
    write_section("oneDNN bfloat16 rewrite by backbone (bench/cpu_bfloat16.py)", "\n".join(rows),
                  f"every layer trainable, AdamW 5e-5, fastest of {args.rounds} interleaved rounds; this CPU has AMX "
                  f"bfloat16 units: {kft.distribute.has_amx_bfloat16()}")


if __name__ == "__main__":
    main()
