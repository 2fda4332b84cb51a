"""Measures what the feature cache buys `kft.tune`, in one run, and writes BENCHMARKS.md.

1. Memory: peak and current RSS after each trial of a cached frozen search
   (30 trials), run first so nothing before it sets the peak.
2. A 10-trial random search over the head's learning rate on a frozen MiniLM-L6,
   on a BBC News subset: `kft.tune` (frozen features computed once for every
   trial) against the plain KerasTuner search a user would write without it
   (a `HyperModel` whose trials fit the whole classifier on raw strings, so the
   frozen backbone and the tokenizer run again on every epoch): wall time of
   each whole search and the best validation accuracy of each.
3. Checkpoint bytes per trial, frozen and top:2, against the backbone's weights.
(Seconds per epoch of cached `top:N` training: bench/fine_tune_speed.py.)

Usage: .venv/bin/python bench/tune_cache.py [--train 320 --validation 80 --trials 10 --epochs 4 --rss-trials 30]
"""

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402

FROZEN = {"trainable": "frozen", "learning_rate": (1e-3, 3e-2, "log"), "depth": 0, "dropout": 0.1,
          "weight_decay": 0.0, "label_smoothing": 0.0, "batch_size": 16}
FIXED = {"depth": 0, "dropout": 0.1, "learning_rate": 1e-3, "fine_tune_learning_rate": 1e-4, "weight_decay": 0.0,
         "label_smoothing": 0.0, "batch_size": 16}


class Probe(keras.callbacks.Callback):
    """Appends each epoch's seconds and the process's RSS to a file (KerasTuner deep-copies callbacks)."""

    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": epoch, "seconds": time.perf_counter() - self.start}) + "\n")

    def on_train_end(self, logs=None):
        pages = int(open("/proc/self/statm").read().split()[1])
        with open(self.path, "a") as f:
            f.write(json.dumps({"rss_mb": pages * os.sysconf("SC_PAGE_SIZE") / 2**20,
                                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}) + "\n")


def records(path, key):
    return [r[key] for r in map(json.loads, Path(path).read_text().splitlines()) if key in r]


def timed_search(data, directory, probe, **kwargs):
    start = time.perf_counter()
    search = kft.tune(data, "minilm_l6", directory=directory, callbacks=[Probe(probe)], seed=0, **kwargs)
    return search, time.perf_counter() - start


class PlainHyperModel(keras_tuner.HyperModel):
    """The search without kerasft's cache: each trial fits a frozen-MiniLM classifier on raw strings."""

    def __init__(self, data, epochs):
        super().__init__()
        self.data, self.epochs = data, epochs

    def build(self, hp):
        model = kft.build_classifier("minilm_l6", data=self.data, head=kft.Head(dropout=0.1), seed=0)
        model.compile(keras.optimizers.Adam(hp.Float("learning_rate", 1e-3, 3e-2, sampling="log")),
                      "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp, model, **kwargs):
        return model.fit(self.data.train.shuffle(self.data.size("train"), seed=0).batch(16),
                         validation_data=self.data.validation.batch(64), epochs=self.epochs, verbose=0, **kwargs)


def plain_search(data, directory, trials, epochs):
    start = time.perf_counter()
    tuner = keras_tuner.RandomSearch(PlainHyperModel(data, epochs), objective="val_accuracy", max_trials=trials,
                                     seed=0, directory=str(directory), project_name="plain")
    tuner.search()
    best = tuner.oracle.get_best_trials(1)[0].score
    return best, time.perf_counter() - start


def top2_search(data, work):
    search, _ = timed_search(data, work / "top2", work / "top2.jsonl", tuner="random", max_trials=1, epochs=2,
                             space={"trainable": "top:2", **FIXED})
    return search


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--validation", type=int, default=80)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rss-trials", type=int, default=30)
    args = parser.parse_args()
    data = kft.samples.bbc_news(seed=0).subset(train=args.train, validation=args.validation, test=0, seed=0)
    work = Path(tempfile.mkdtemp(prefix="tune_cache_"))

    # === 1. Memory over a long cached search (first, so the peak is its own) ===
    rss, _ = timed_search(data, work / "rss", work / "rss.jsonl", tuner="random", max_trials=args.rss_trials,
                          epochs=2, project_name="rss", space={"trainable": "frozen"})
    peaks = [row["peak_rss_mb"] for row in rss.results()]
    currents = records(work / "rss.jsonl", "rss_mb")

    # === 2. The same frozen search, with kerasft's cache and as a plain KerasTuner search ===
    cached, cached_seconds = timed_search(data, work / "cached", work / "cached.jsonl", tuner="random",
                                          max_trials=args.trials, epochs=args.epochs, space=FROZEN)
    best = {"cached": max(row["val_accuracy"] for row in cached.results())}
    best["plain"], plain_seconds = plain_search(data, work / "plain", args.trials, args.epochs)

    # === 3. Checkpoints ===
    top2 = top2_search(data, work)
    backbone = cached.hypermodel.reference.get_layer("network").get_layer("backbone")
    backbone_mb = sum(w.numpy().nbytes for w in backbone.weights) / 2**20
    frozen_kb = np.mean([p.stat().st_size for p in cached.directory.glob("trial_*/checkpoint.weights.h5")]) / 1024
    top2_mb = next(top2.directory.glob("trial_*/checkpoint.weights.h5")).stat().st_size / 2**20

    fifth = min(4, len(peaks) - 1)
    rows = [
        "| measure | value |",
        "|---|---|",
        f"| data | BBC News subset: {data.size('train')} train, {data.size('validation')} validation; "
        f"MiniLM-L6, sequence 128 |",
        f"| {args.trials}-trial random search over the head's learning rate, plain KerasTuner (baseline: the "
        f"classifier fitted on raw strings, {args.epochs} epochs a trial) | {plain_seconds:.0f} s, "
        f"best val_accuracy {best['plain']:.3f} |",
        f"| same space, kft.tune (features computed once; the recipe stops each trial when validation stops "
        f"improving, at most {args.epochs} epochs) | {cached_seconds:.0f} s, best val_accuracy {best['cached']:.3f} |",
        f"| speed-up of the whole search | **{plain_seconds / cached_seconds:.1f}x** |",
        f"| best val_accuracy, kft.tune - plain | {100 * (best['cached'] - best['plain']):+.1f} points |",
        f"| peak RSS over a {len(peaks)}-trial cached search, trial 5 -> {len(peaks)} | {peaks[fifth]:.0f} -> "
        f"{peaks[-1]:.0f} MB (**{100 * (peaks[-1] / peaks[fifth] - 1):+.1f}%**) |",
        f"| RSS after trials 5, 10, 20, {len(currents)} | "
        f"{', '.join(f'{currents[i - 1]:.0f}' for i in (5, 10, 20, len(currents)) if i <= len(currents))} MB |",
        f"| checkpoint per trial: frozen / top:2 / the backbone's weights | {frozen_kb:.0f} KB / {top2_mb:.1f} MB / "
        f"{backbone_mb:.0f} MB |",
    ]
    write_section("Tuning with the feature cache (bench/tune_cache.py)", "\n".join(rows),
                  "MiniLM-L6 on a BBC News subset, random search, wall time of each whole search "
                  "(backbone load, tokenizing and feature computing included), one run.")
    print("\n".join(rows))
    print("RSS curve (MB, after each trial):", [round(c) for c in currents])


if __name__ == "__main__":
    main()
