"""Resident memory over a long fine-tuning run: many small epochs, as a 2-hour run on real hardware would take.

EfficientNet-Lite0 (top block unfrozen, 32x32) on 256 Fashion-MNIST images,
batch 32: 8 train steps and one validation pass per epoch, for 900 epochs
(7200 steps, about what 2 hours of MiniLM fine-tuning at ~1 s/step do). The
RSS (from /proc/self/statm) is read after every epoch. Writes a section of
bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/memory.py [--epochs 900]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rss = []

    def on_epoch_end(self, epoch, logs=None):
        self.rss.append(rss_mb())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=900)
    args = parser.parse_args()
    data = kft.samples.fashion_mnist(seed=0).subset(train=256, validation=64, test=64, seed=0)
    model = kft.build_classifier("efficientnet_lite0", data=data, image_size=(32, 32), trainable="top:1", seed=0)
    recorder = Recorder()
    start = time.perf_counter()
    kft.fine_tune(model, data, epochs=args.epochs, warmup_epochs=0, batch_size=32, patience=0, verbose=0,
                  callbacks=[recorder])
    seconds = time.perf_counter() - start
    rss = recorder.rss
    marks = sorted({m for m in (10, 50, 100, 300, 600, len(rss)) if m <= len(rss)})
    base = rss[min(49, len(rss) - 1)]
    rows = ["| epoch | RSS |", "|---|---|"] + [f"| {m} | {rss[m - 1]:.0f} MB |" for m in marks]
    rows += ["", f"{len(rss)} epochs ({len(rss) * 8} train steps) in {seconds:.0f} s. RSS from epoch 50 to the end: "
             f"{base:.0f} -> {rss[-1]:.0f} MB (**{100 * (rss[-1] - base) / base:+.1f}%**); peak {max(rss):.0f} MB."]
    write_section("Memory over a long run (bench/memory.py)", "\n".join(rows),
                  "EfficientNet-Lite0 top:1 at 32x32, 256 Fashion-MNIST images, batch 32, one fine_tune call")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
