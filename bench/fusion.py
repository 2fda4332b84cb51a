"""Model fusion on BBC News: a classic TF-IDF member and frozen MiniLM, fused by mean, weighted, stacking; calibrated.

All in one run, on the same stratified 70/15/15 split (`kft.samples.bbc_news()`):
1. scikit-learn: `TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)` +
   `LogisticRegression`, C chosen on the validation split (and the same with
   raw term frequencies, to see whether sublinear tf matters here);
2. kerasft's classic member: `build_classifier("tfidf", data=data)` (adapted
   on the training split) + `fine_tune` (frozen: the head on the TF-IDF vector);
3. MiniLM frozen: `build_classifier("minilm_l6")` + `fine_tune` of its head;
4. the fused ensembles of 2 and 3: mean, weighted, stacking, each also with
   `calibrate=True`; the members calibrated with `kft.calibrate`.
Every row: test accuracy, macro-F1, expected calibration error (15 bins) before
and after temperature scaling (fitted on validation; scikit-learn's probabilities
scaled in numpy with the same fit), and the wall time of what the row adds
(ensembles: on top of their trained members). Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/fusion.py [--sequence-length 256]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402
from kerasft import calibration, evaluation  # noqa: E402

C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
# The classic member's training settings: a linear head on unit-norm vectors wants a larger step than
# fine_tune's default (1e-3, 5 epochs), and more epochs.
CLASSIC_FIT = dict(epochs=30, learning_rate=1e-2, patience=5)
MINILM_FIT = dict(epochs=30, learning_rate=3e-3, patience=5)


def macro_f1(probabilities, labels, num_classes):
    predicted = probabilities.argmax(-1)
    f1 = []
    for c in range(num_classes):
        tp = np.sum((predicted == c) & (labels == c))
        precision, recall = tp / max(np.sum(predicted == c), 1), tp / max(np.sum(labels == c), 1)
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.mean(f1))


def sklearn_row(data, sublinear):
    """Fit on train for each C, keep the best on validation; test metrics, ECE before/after a temperature."""
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=sublinear)
    x_train = vectorizer.fit_transform(data.inputs("train"))
    x_validation, x_test = (vectorizer.transform(data.inputs(s)) for s in ("validation", "test"))
    fits = [LogisticRegression(C=c, max_iter=3000).fit(x_train, data.labels("train")) for c in C_GRID]
    best = max(fits, key=lambda f: f.score(x_validation, data.labels("validation")))
    test = best.predict_proba(x_test)
    seconds = time.perf_counter() - start
    temperature = calibration.fit_temperature([best.predict_proba(x_validation)], data.labels("validation"))
    labels = data.labels("test")
    return {"accuracy": float(np.mean(test.argmax(-1) == labels)), "macro_f1": macro_f1(test, labels, data.num_classes),
            "ece": evaluation.calibration_error(test, labels),
            "ece_calibrated": evaluation.calibration_error(calibration.scaled([test], temperature), labels),
            "seconds": seconds, "note": f"C={best.C:g}, {x_train.shape[1]} features"}


def scored(model, data, seconds, note=""):
    result = kft.evaluate(model, data)
    return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "ece": result["ece"],
            "seconds": seconds, "note": note}


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequence-length", type=int, default=256)
    args = parser.parse_args()
    script_start = time.perf_counter()
    data = kft.samples.bbc_news(seed=0)
    rows = {"scikit-learn TF-IDF (1-2 grams, sublinear tf) + LR": sklearn_row(data, sublinear=True),
            "scikit-learn TF-IDF (1-2 grams, raw tf) + LR": sklearn_row(data, sublinear=False)}
    print(rows, flush=True)

    start = time.perf_counter()
    classic = kft.build_classifier("tfidf", data=data, seed=0)
    adapted = time.perf_counter() - start
    kft.fine_tune(classic, data, verbose=0, **CLASSIC_FIT)
    features = classic.get_layer("network").get_layer("head").input.shape[-1]
    rows["kerasft classic member (tfidf)"] = scored(classic, data, time.perf_counter() - start,
                                                    f"{features} features, adapted in {adapted:.0f} s")
    print(rows, flush=True)

    start = time.perf_counter()
    minilm = kft.build_classifier("minilm_l6", data=data, sequence_length=args.sequence_length, seed=0)
    kft.fine_tune(minilm, data, verbose=0, **MINILM_FIT)
    rows["MiniLM-L6 frozen + linear head"] = scored(minilm, data, time.perf_counter() - start,
                                                    f"sequence {args.sequence_length}")
    print(rows, flush=True)

    members = [classic, minilm]
    for method in ("mean", "weighted", "stacking"):
        ens, seconds = timed(kft.ensemble, members, method=method, validation=data)
        calibrated, calibrating = timed(kft.ensemble, members, method=method, validation=data, calibrate=True)
        rows[f"fused: {method}"] = scored(ens, data, seconds)
        rows[f"fused: {method}"]["ece_calibrated"] = kft.evaluate(calibrated, data)["ece"]
        rows[f"fused: {method}"]["note"] = f"calibrate=True: {calibrating:.0f} s"
        print(rows, flush=True)
    for name, member in (("kerasft classic member (tfidf)", classic), ("MiniLM-L6 frozen + linear head", minilm)):
        _, seconds = timed(kft.calibrate, member, data)  # in place, after the ensembles used the members
        rows[name]["ece_calibrated"] = kft.evaluate(member, data)["ece"]
        rows[name]["note"] += f"; kft.calibrate {seconds:.0f} s"

    table = ["| model | test accuracy | macro-F1 | ECE | ECE calibrated | wall time | notes |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {name} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['ece']:.4f} | {r['ece_calibrated']:.4f} "
              f"| {r['seconds']:.0f} s | {r['note']} |" for name, r in rows.items()]
    baseline = rows["scikit-learn TF-IDF (1-2 grams, sublinear tf) + LR"]["accuracy"]
    singles = {n: r["accuracy"] for n, r in rows.items() if n.startswith(("kerasft", "MiniLM"))}
    fused = {n: r["accuracy"] for n, r in rows.items() if n.startswith("fused")}
    best_fused, best_single = max(fused, key=fused.get), max(singles, key=singles.get)
    worst_ece = max(r["ece_calibrated"] for n, r in rows.items() if not n.startswith("scikit"))
    table += [
        "",
        f"Classic member minus scikit-learn: **{100 * (singles['kerasft classic member (tfidf)'] - baseline):+.2f} "
        f"points** (target: at most 0.5 below). Best fused ({best_fused}) minus scikit-learn: "
        f"**{100 * (fused[best_fused] - baseline):+.2f} points**; minus the best single member ({best_single}): "
        f"**{100 * (fused[best_fused] - singles[best_single]):+.2f} points** (target >= +0.5 for both). Largest ECE "
        f"of a kerasft row after calibration: **{worst_ece:.4f}** (target <= 0.02). Test split: "
        f"{data.size('test')} articles (one article = {100 / data.size('test'):.2f} points). Whole script: "
        f"{time.perf_counter() - script_start:.0f} s; load average at its end (1, 5, 15 min): "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores.",
        "",
        f"Training settings: classic `fine_tune(**{CLASSIC_FIT})`, MiniLM `fine_tune(**{MINILM_FIT})`. Ensemble wall "
        "times count building (and the fits on the validation split), not the members' training.",
    ]
    write_section("Model fusion on BBC News (bench/fusion.py)", "\n".join(table),
                  f"stratified 70/15/15 split of 2127 articles (duplicates dropped), MiniLM sequence length "
                  f"{args.sequence_length}, one run")
    print("\n".join(table))


if __name__ == "__main__":
    main()
