"""Latency as the benchmarks measure it: the median of repeated `predict` calls after one tracing call."""

import time

import numpy as np


def median_latency(model, batch, repeats=5):
    """Seconds of one `model.predict(batch)`, the median of `repeats` calls after a first (tracing) one."""
    model.predict(batch, verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(batch, verbose=0)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
