"""Time as the benchmarks measure it: one call's wall seconds, latency as the median of repeated `predict`
calls after one tracing call, and the raw batches those calls take."""

import time

import numpy as np


def timed(function, *args, **kwargs):
    """Runs `function(*args, **kwargs)`; returns its result and the wall seconds it took."""
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def median_latency(model, batch, repeats=5):
    """Seconds of one `model.predict(batch)`, the median of `repeats` calls after a first (tracing) one."""
    model.predict(batch, verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(batch, verbose=0)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def raw_batch(split, modality, count):
    """The first `count` examples of a `TaskData` split as one `predict` batch of raw input (a string array for
    text, stacked arrays otherwise) and their labels."""
    pairs = list(split.take(count))
    inputs = [x.numpy() for x, _ in pairs]
    inputs = np.array([x.decode() for x in inputs], dtype=object) if modality == "text" else np.stack(inputs)
    return inputs, np.array([int(y.numpy()) for _, y in pairs])
