"""Measures kerasft's input pipeline against plain tokenization, in one run, and writes BENCHMARKS.md.

1. Preprocessed examples/s on BBC News with the MiniLM tokenizer (sequence 128):
   KerasHub's preprocessor on the full articles (the baseline) against kerasft's
   head cut with exact fallback (`kerasft.tokenizing`), both batched in tf.data;
   ids are checked identical. bench/tokenizer_speed.py measures it in depth.
2. The share of `fine_tune`'s phase-2 wall time spent outside train steps
   (input pipeline, callbacks, validation excluded), on a BBC News subset.

Usage: .venv/bin/python bench/input_pipeline.py [--train 320]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasft as kft  # noqa: E402
from kerasft import tokenizing  # noqa: E402
from bench_report import write_section  # noqa: E402


def tokenize_rate(texts, fn, batch=64):
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(batch).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    start = time.perf_counter()
    out = [b["token_ids"].numpy() for b in ds]
    return len(texts) / (time.perf_counter() - start), np.concatenate(out)


class StepTimer(keras.callbacks.Callback):
    """Sums the time spent inside train steps of one fit()."""

    def on_train_begin(self, logs=None):
        self.inside, self.first, self.fit_start = 0.0, None, time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        spent = time.perf_counter() - self.t
        self.first = spent if self.first is None else self.first
        self.inside += spent

    def on_test_begin(self, logs=None):
        self.test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.fit_start += time.perf_counter() - self.test_start  # validation is not input-pipeline time

    def on_train_end(self, logs=None):
        self.wall = time.perf_counter() - self.fit_start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=320)
    args = parser.parse_args()

    data = kft.samples.bbc_news(seed=0)
    texts = [x.numpy().decode() for x, _ in data.train]
    model = kft.build_classifier("minilm_l6", data=data, trainable="top:1")
    preprocessor = model.get_layer("preprocessor")
    full_rate, full_ids = tokenize_rate(texts, preprocessor)
    cut_rate, cut_ids = tokenize_rate(texts, tokenizing.head_preprocessor(preprocessor))
    identical = np.array_equal(full_ids, cut_ids)

    small = data.subset(train=args.train, validation=64, test=64, seed=0)
    timer = StepTimer()
    start = time.perf_counter()
    kft.fine_tune(model, small, epochs=3, warmup_epochs=1, batch_size=16, patience=0, callbacks=[timer], verbose=0)
    total = time.perf_counter() - start
    outside = 1 - timer.inside / timer.wall
    outside_no_trace = 1 - (timer.inside - timer.first) / (timer.wall - timer.first)

    rows = [
        "| measure | value |",
        "|---|---|",
        f"| KerasHub preprocessor, full articles (baseline) | {full_rate:.0f} examples/s |",
        f"| kerasft pipeline (head cut + exact fallback) | {cut_rate:.0f} examples/s |",
        f"| speed-up | **{cut_rate / full_rate:.2f}x** |",
        f"| token ids identical on all {len(texts)} training articles | {identical} |",
        f"| phase-2 fit wall time outside train steps ({args.train} examples, 2 epochs, batch 16) "
        f"| **{outside:.1%}** ({outside_no_trace:.1%} without the first, tracing step) |",
        f"| first step (tracing) | {timer.first:.1f} s of {timer.wall:.1f} s |",
        f"| whole fine_tune call | {total:.1f} s |",
    ]
    write_section("Input pipeline (bench/input_pipeline.py)", "\n".join(rows),
                  "MiniLM-L6, BBC News training split, sequence length 128, 2-core CPU, one run.")
    print("\n".join(rows))
    if not identical:
        raise SystemExit("token ids differ between the cut and the full articles")


if __name__ == "__main__":
    main()
