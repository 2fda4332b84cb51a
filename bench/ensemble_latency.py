"""Latency of a 3-member MiniLM ensemble that shares its frozen bottom, against one member and a naive ensemble.

Three heads on the same frozen all-MiniLM-L6-v2 (as a frozen-backbone search
gives) are combined by `kft.ensemble(method="mean")`, which computes the
tokenizer and the backbone once. The naive ensemble calls the three whole
members. Latency is the median of repeated `predict` calls on one batch of 32
BBC News articles, measured in one run. Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/ensemble_latency.py [--repeats 5]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402
from timing import median_latency  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = kft.samples.bbc_news(seed=0)
    batch = np.array([x.numpy().decode() for x, _ in data.test.take(32)], dtype=object)
    members = [kft.build_classifier("minilm_l6", data=data, head=kft.Head(units=units))
               for units in [(), (64,), (256,)]]
    shared = kft.ensemble(members, method="mean")
    raw = keras.Input(shape=(), dtype="string")
    naive = keras.Model(raw, keras.layers.Average()(
        [keras.Model(m.input, m.output, name=f"member_{i}")(raw) for i, m in enumerate(members)]))
    np.testing.assert_allclose(shared.predict(batch, verbose=0), naive.predict(batch, verbose=0), atol=1e-5)

    one = median_latency(members[0], batch, args.repeats)
    shared_t = median_latency(shared, batch, args.repeats)
    naive_t = median_latency(naive, batch, args.repeats)
    rows = [
        "| model | latency, batch 32 | ratio to one member |",
        "|---|---|---|",
        f"| one member | {one:.2f} s | 1.00x |",
        f"| kft.ensemble, 3 members sharing the frozen MiniLM | {shared_t:.2f} s | **{shared_t / one:.2f}x** |",
        f"| naive ensemble, 3 whole members | {naive_t:.2f} s | {naive_t / one:.2f}x |",
    ]
    write_section("Ensemble latency (bench/ensemble_latency.py)", "\n".join(rows),
                  "all-MiniLM-L6-v2 (sequence 128), three heads, raw BBC News articles in, median of "
                  f"{args.repeats} predict calls")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
