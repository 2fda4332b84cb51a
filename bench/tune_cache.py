"""Measures what the feature cache buys `kft.tune`, in one run, and writes BENCHMARKS.md.

1. Memory: peak and current RSS after each trial of a cached frozen search
   (30 trials), run first so nothing before it sets the peak.
2. The same frozen-backbone random search (10 trials, same seed, so the same
   hyperparameters) on a BBC News subset with MiniLM-L6, with the cache and
   without it (the frozen backbone recomputed on every pass, as a plain
   KerasTuner search does): wall time of each whole `tune()` call, their
   ratio, and the best validation accuracy of each.
3. `top:1` and `top:2` trials, cached (only the top N blocks run) and
   uncached: seconds per epoch after the first (tracing) epoch, against the
   bound the block count sets: an uncached epoch runs 6 blocks forward and N
   backward (~2x a forward), a cached one N forward and N backward, so the
   speed-up cannot pass (6 + 2N) / 3N (2.67x for top:1, 1.67x for top:2).
4. Checkpoint bytes per trial, frozen and top:2, against the backbone's weights.

Usage: .venv/bin/python bench/tune_cache.py [--train 320 --validation 80 --trials 10 --epochs 4 --rss-trials 30]
       .venv/bin/python bench/tune_cache.py --per-epoch   (part 3 alone, its own section)
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
import numpy as np  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402

FROZEN = {"trainable": "frozen", "learning_rate": (1e-3, 3e-2, "log")}
FIXED = {"depth": 0, "dropout": 0.1, "learning_rate": 1e-3, "fine_tune_learning_rate": 1e-4, "weight_decay": 0.0,
         "label_smoothing": 0.0, "batch_size": 16}
BLOCKS = 6  # MiniLM-L6's transformer blocks


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


def per_epoch_section(data, work):
    """Seconds per epoch of a top:1 and a top:2 trial, cached and uncached; writes its own section."""
    per_epoch, searches = {}, {}
    for cut in ("top:1", "top:2"):
        per_epoch[cut] = {}
        for name, cache in (("cached", True), ("uncached", False)):
            probe = work / f"{cut.replace(':', '')}_{name}.jsonl"
            searches[cut, name], _ = timed_search(data, work / f"{cut.replace(':', '')}_{name}", probe,
                                                  tuner="random", max_trials=1, epochs=3,
                                                  space={"trainable": cut, **FIXED}, cache_features=cache)
            per_epoch[cut][name] = float(np.mean(records(probe, "seconds")[1:]))
    rows = ["| trial | uncached s/epoch | cached s/epoch | speed-up | bound (6 + 2N) / 3N |", "|---|---|---|---|---|"]
    for cut, seconds in per_epoch.items():
        n = int(cut.split(":")[1])
        rows.append(f"| {cut} | {seconds['uncached']:.1f} | {seconds['cached']:.1f} | "
                    f"**{seconds['uncached'] / seconds['cached']:.2f}x** | {(BLOCKS + 2 * n) / (3 * n):.2f}x |")
    write_section("Seconds per epoch by unfreeze depth (bench/tune_cache.py)", "\n".join(rows),
                  f"MiniLM-L6, sequence 128, BBC News subset ({data.size('train')} train, {data.size('validation')} "
                  "validation), batch 16; mean over epochs 2-3 of one trial, one run")
    print("\n".join(rows))
    return per_epoch, searches["top:2", "cached"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--validation", type=int, default=80)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rss-trials", type=int, default=30)
    parser.add_argument("--per-epoch", action="store_true", help="only part 3 (seconds per epoch of top:N)")
    args = parser.parse_args()
    data = kft.samples.bbc_news(seed=0).subset(train=args.train, validation=args.validation, test=0, seed=0)
    work = Path(tempfile.mkdtemp(prefix="tune_cache_"))
    if args.per_epoch:
        per_epoch_section(data, work)
        return

    # === 1. Memory over a long cached search (first, so the peak is its own) ===
    rss, _ = timed_search(data, work / "rss", work / "rss.jsonl", tuner="random", max_trials=args.rss_trials,
                          epochs=2, project_name="rss", space={"trainable": "frozen"})
    peaks = [row["peak_rss_mb"] for row in rss.results()]
    currents = records(work / "rss.jsonl", "rss_mb")

    # === 2. The same frozen search, cached and recomputed ===
    common = dict(tuner="random", max_trials=args.trials, epochs=args.epochs, space=FROZEN)
    cached, cached_seconds = timed_search(data, work / "cached", work / "cached.jsonl", **common)
    uncached, uncached_seconds = timed_search(data, work / "uncached", work / "uncached.jsonl",
                                              cache_features=False, **common)
    best = {name: max(row["val_accuracy"] for row in search.results())
            for name, search in (("cached", cached), ("uncached", uncached))}
    same_trials = ([r["learning_rate"] for r in cached.results()] == [r["learning_rate"] for r in uncached.results()])

    # === 3. Seconds per epoch of top:N trials ===
    per_epoch, top2 = per_epoch_section(data, work)

    # === 4. Checkpoints ===
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
        f"| {args.trials}-trial frozen random search, recomputed backbone (baseline) | {uncached_seconds:.0f} s, "
        f"best val_accuracy {best['uncached']:.3f} |",
        f"| same search, feature cache | {cached_seconds:.0f} s, best val_accuracy {best['cached']:.3f} |",
        f"| speed-up of the whole search | **{uncached_seconds / cached_seconds:.1f}x** "
        f"(same hyperparameters in both: {same_trials}) |",
        f"| best val_accuracy, cached - uncached | {100 * (best['cached'] - best['uncached']):+.1f} points |",
        f"| top:2 trial, seconds per epoch, uncached -> cached | {per_epoch['top:2']['uncached']:.1f} -> "
        f"{per_epoch['top:2']['cached']:.1f} s (see the per-epoch section) |",
        f"| peak RSS over a {len(peaks)}-trial cached search, trial 5 -> {len(peaks)} | {peaks[fifth]:.0f} -> "
        f"{peaks[-1]:.0f} MB (**{100 * (peaks[-1] / peaks[fifth] - 1):+.1f}%**) |",
        f"| RSS after trials 5, 10, 20, {len(currents)} | "
        f"{', '.join(f'{currents[i - 1]:.0f}' for i in (5, 10, 20, len(currents)) if i <= len(currents))} MB |",
        f"| checkpoint per trial: frozen / top:2 / the backbone's weights | {frozen_kb:.0f} KB / {top2_mb:.1f} MB / "
        f"{backbone_mb:.0f} MB |",
    ]
    write_section("Tuning with the feature cache (bench/tune_cache.py)", "\n".join(rows),
                  "MiniLM-L6 on a BBC News subset, random search, wall time of each whole tune() call "
                  "(backbone load, tokenizing and feature computing included), one run.")
    print("\n".join(rows))
    print("RSS curve (MB, after each trial):", [round(c) for c in currents])


if __name__ == "__main__":
    main()
