"""BBC News quality: kerasft's default tune + ensemble path against TF-IDF + logistic regression and a full fine-tune.

All in one run, on the same stratified 70/15/15 split (`kft.samples.bbc_news()`):
1. the classic baseline, TF-IDF (word 1-2 grams, sublinear tf) + logistic
   regression (scikit-learn), fitted on train;
2. kerasft: `kft.tune` over heads on the frozen all-MiniLM-L6-v2 (features
   computed once), then the 3 best members as a mean ensemble, a weighted
   ensemble and a greedy soup; each scored on the test split;
3. the wall time of a 2-epoch full fine-tune of MiniLM (`trainable="all"`),
   the budget the kerasft path must stay under.
Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/quality.py [--trials 10] [--sequence-length 256]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402


def tfidf_baseline(data):
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vectorizer.fit_transform(data.inputs("train"))
    classifier = LogisticRegression(C=10.0, max_iter=2000).fit(x_train, data.labels("train"))
    predicted = classifier.predict(vectorizer.transform(data.inputs("test")))
    return float(np.mean(predicted == data.labels("test"))), time.perf_counter() - start


def kerasft_path(data, trials, sequence_length, directory):
    """The default path, timed as a user runs it: search, mean ensemble of the 3 best, test evaluation."""
    start = time.perf_counter()
    search = kft.tune(data, backbone="minilm_l6", tuner="random", max_trials=trials, directory=directory,
                      space={"unfreeze": "frozen"}, sequence_length=sequence_length, epochs=20, verbose=1)
    members = search.best_models(3)
    tuned = time.perf_counter() - start
    mean = kft.ensemble(members, method="mean")
    mean_test = kft.evaluate(mean, data)["accuracy"]
    seconds = time.perf_counter() - start
    # Not timed: the other candidates, for the table.
    candidates = {
        "best single member": members[0],
        "mean ensemble of 3": mean,
        "weighted ensemble of 3": kft.ensemble(members, method="weighted", validation=data),
        "greedy soup of 3": kft.ensemble(members, method="greedy_soup", validation=data),
    }
    scores = {name: (kft.evaluate(model, data.validation)["accuracy"],
                     mean_test if model is mean else kft.evaluate(model, data)["accuracy"])
              for name, model in candidates.items()}
    return scores, tuned, seconds


def full_fine_tune_seconds(data, sequence_length):
    start = time.perf_counter()
    model = kft.build_classifier("minilm_l6", data=data, trainable="all", sequence_length=sequence_length)
    kft.fine_tune(model, data, epochs=2, warmup_epochs=0, batch_size=16, patience=0, verbose=0)
    return kft.evaluate(model, data)["accuracy"], time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--sequence-length", type=int, default=256)
    args = parser.parse_args()
    data = kft.samples.bbc_news(seed=0)
    baseline, baseline_s = tfidf_baseline(data)
    with tempfile.TemporaryDirectory() as directory:
        scores, tuned_s, kerasft_s = kerasft_path(data, args.trials, args.sequence_length, directory)
    full_accuracy, full_s = full_fine_tune_seconds(data, args.sequence_length)
    best = max(test for _, test in scores.values())
    rows = ["| model | validation accuracy | test accuracy | wall time |", "|---|---|---|---|",
            f"| TF-IDF 1-2 grams + logistic regression (baseline) | | {baseline:.4f} | {baseline_s:.0f} s |",
            f"| MiniLM full fine-tune, 2 epochs (time budget) | | {full_accuracy:.4f} | {full_s:.0f} s |"]
    rows += [f"| kerasft: {name} | {val:.4f} | {test:.4f} | |" for name, (val, test) in scores.items()]
    mean_test = scores["mean ensemble of 3"][1]
    rows += ["", f"kerasft's default path (tune {args.trials} frozen-backbone trials, mean ensemble of the 3 best, "
             f"test evaluation): {kerasft_s:.0f} s, **{kerasft_s / full_s:.2f}x** the full fine-tune's time "
             f"(build, 2 epochs, test evaluation: {full_s:.0f} s; the search alone {tuned_s:.0f} s). Mean ensemble "
             f"minus the baseline: **{100 * (mean_test - baseline):+.1f} points**; best kerasft row minus the "
             f"baseline: {100 * (best - baseline):+.1f} points."]
    write_section("BBC News quality (bench/quality.py)", "\n".join(rows),
                  f"stratified 70/15/15 split of 2127 articles (duplicates dropped), MiniLM sequence length "
                  f"{args.sequence_length}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
