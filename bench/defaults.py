"""Do fine_tune's defaults converge? A frozen MiniLM on BBC News against logistic regression on the same features.

`kft.fine_tune(model, data)` with nothing else trains the head of a frozen
MiniLM-L6 until validation stops improving; scikit-learn's LogisticRegression
(C chosen on the validation split) on the very same mean-pooled features is
what a practitioner would fit instead. Both in one run; writes BENCHMARKS.md.

Usage: .venv/bin/python bench/defaults.py
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402


def pooled_features(model, data, split):
    """The frozen backbone's pooled features of a split, in the data's order."""
    bottom = kft.features.Bottom(model, ["frozen"])
    return np.concatenate([bottom(x)["frozen"]["features"].numpy()
                           for x, _ in kft.features.preprocess(model, getattr(data, split), 64)])


def main():
    data = kft.samples.bbc_news()
    start = time.perf_counter()
    model = kft.build_classifier("minilm_l6", data=data, seed=0)
    history = kft.fine_tune(model, data)
    ours_seconds = time.perf_counter() - start
    ours = kft.evaluate(model, data)["accuracy"]

    start = time.perf_counter()
    x = {split: pooled_features(model, data, split) for split in ("train", "validation", "test")}
    y = {split: data.labels(split) for split in x}
    scores = {}
    for c in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0):
        classifier = LogisticRegression(C=c, max_iter=5000).fit(x["train"], y["train"])
        scores[c] = (classifier.score(x["validation"], y["validation"]), classifier)
    best_c = max(scores, key=lambda c: scores[c][0])
    baseline = scores[best_c][1].score(x["test"], y["test"])
    baseline_seconds = time.perf_counter() - start

    rows = ["| model | test accuracy | seconds |", "|---|---|---|",
            f"| LogisticRegression on the pooled features, C={best_c:g} chosen on validation (baseline) | "
            f"{baseline:.4f} | {baseline_seconds:.0f} (features included) |",
            f"| kft.fine_tune(model, data), frozen MiniLM-L6, defaults ({len(history.history['loss'])} head epochs) "
            f"| {ours:.4f} | {ours_seconds:.0f} (build, features, training) |",
            "", f"kerasft minus the baseline: **{100 * (ours - baseline):+.1f} points** (target: within 0.5)."]
    write_section("fine_tune defaults against logistic regression (bench/defaults.py)", "\n".join(rows),
                  f"BBC News (kft.samples.bbc_news(): {data.size('train')} train, {data.size('validation')} "
                  f"validation, {data.size('test')} test), frozen MiniLM-L6 sequence 128, one run")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
