"""Model fusion on BBC News: a classic TF-IDF member and frozen MiniLM, fused by mean, weighted, stacking; calibrated.

All in one run, on each of several stratified 70/15/15 splits (`kft.samples.bbc_news(seed=s)`, `--seeds`; one
test article is 0.31 points, so one split alone cannot tell +0.5 points from noise):
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
scaled in numpy with the same fit), the sampling floor of that ECE (what perfectly calibrated probabilities
would show on so small a test split), and the wall time of what the row adds
(ensembles: on top of their trained members): the first split's table in full, then every split's accuracy and
calibrated ECE per row and the targets per split and on the mean. Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/fusion.py [--sequence-length 256] [--seeds 0,1,2]
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
from timing import timed  # noqa: E402
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


def ece_floor(probabilities, draws=500, seed=0):
    """(mean, 90th percentile) of the ECE that perfectly calibrated probabilities show on this many examples: labels
    drawn from `probabilities` themselves, `draws` times. A measured ECE inside that band is sampling noise."""
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(probabilities, axis=-1)
    eces = [evaluation.calibration_error(probabilities, np.minimum(
        (cumulative < rng.random((len(probabilities), 1))).sum(-1), probabilities.shape[-1] - 1)) for _ in range(draws)]
    return float(np.mean(eces)), float(np.percentile(eces, 90))


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
    labels, calibrated = data.labels("test"), calibration.scaled([test], temperature)
    return {"accuracy": float(np.mean(test.argmax(-1) == labels)), "macro_f1": macro_f1(test, labels, data.num_classes),
            "ece": evaluation.calibration_error(test, labels),
            "ece_calibrated": evaluation.calibration_error(calibrated, labels), "floor": ece_floor(calibrated),
            "seconds": seconds, "note": f"C={best.C:g}, {x_train.shape[1]} features"}


def scored(model, data, seconds, note=""):
    result = kft.evaluate(model, data)
    return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "ece": result["ece"],
            "seconds": seconds, "note": note}


def split_rows(seed, sequence_length):
    """Every row of the table on the split `kft.samples.bbc_news(seed=seed)`."""
    data = kft.samples.bbc_news(seed=seed)
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
    minilm = kft.build_classifier("minilm_l6", data=data, sequence_length=sequence_length, seed=0)
    kft.fine_tune(minilm, data, verbose=0, **MINILM_FIT)
    rows["MiniLM-L6 frozen + linear head"] = scored(minilm, data, time.perf_counter() - start,
                                                    f"sequence {sequence_length}")
    print(rows, flush=True)

    members = [classic, minilm]
    for method in ("mean", "weighted", "stacking"):
        ens, seconds = timed(kft.ensemble, members, method=method, validation=data)
        calibrated, calibrating = timed(kft.ensemble, members, method=method, validation=data, calibrate=True)
        rows[f"fused: {method}"] = scored(ens, data, seconds)
        result = kft.evaluate(calibrated, data)
        rows[f"fused: {method}"].update(ece_calibrated=result["ece"], floor=ece_floor(result.probabilities))
        rows[f"fused: {method}"]["note"] = f"calibrate=True: {calibrating:.0f} s"
        print(rows, flush=True)
    for name, member in (("kerasft classic member (tfidf)", classic), ("MiniLM-L6 frozen + linear head", minilm)):
        _, seconds = timed(kft.calibrate, member, data)  # in place, after the ensembles used the members
        result = kft.evaluate(member, data)
        rows[name].update(ece_calibrated=result["ece"], floor=ece_floor(result.probabilities))
        rows[name]["note"] += f"; kft.calibrate {seconds:.0f} s"
    return rows, data.size("test")


def targets(rows):
    """(classic member minus scikit-learn, best fused minus scikit-learn, best fused minus the best single member,
    the largest calibrated ECE of a kerasft row, of a fused row, and the 90th percentile of that fused row's
    sampling floor), in points and ECE; the best fused and best single chosen by test accuracy."""
    baseline = rows["scikit-learn TF-IDF (1-2 grams, sublinear tf) + LR"]["accuracy"]
    singles = [r["accuracy"] for n, r in rows.items() if n.startswith(("kerasft", "MiniLM"))]
    fused = [r["accuracy"] for n, r in rows.items() if n.startswith("fused")]
    return (100 * (rows["kerasft classic member (tfidf)"]["accuracy"] - baseline), 100 * (max(fused) - baseline),
            100 * (max(fused) - max(singles)),
            max(r["ece_calibrated"] for n, r in rows.items() if not n.startswith("scikit")),
            *max((r["ece_calibrated"], r["floor"][1]) for n, r in rows.items() if n.startswith("fused")))


def figures(target):
    return [f"{v:+.2f}" for v in target[:3]] + [f"{v:.4f}" for v in target[3:]]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequence-length", type=int, default=256)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds; the first one's table in full")
    args = parser.parse_args()
    script_start = time.perf_counter()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs = {seed: split_rows(seed, args.sequence_length) for seed in seeds}
    rows, test_size = runs[seeds[0]]

    table = [f"Split seed {seeds[0]}:", "",
             "| model | test accuracy | macro-F1 | ECE | ECE calibrated | its sampling floor | wall time | notes |",
             "|---|---|---|---|---|---|---|---|"]
    table += [f"| {name} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['ece']:.4f} | {r['ece_calibrated']:.4f} "
              f"| {r['floor'][0]:.4f} / {r['floor'][1]:.4f} | {r['seconds']:.0f} s | {r['note']} |"
              for name, r in rows.items()]
    table += ["", f"Every split seed ({len(seeds)}; test accuracy, then ECE after calibration):", "",
              "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
              "|---|" + "---|" * (len(seeds) + 1)]
    for name in rows:
        accuracies = [runs[s][0][name]["accuracy"] for s in seeds]
        eces = [runs[s][0][name]["ece_calibrated"] for s in seeds]
        table.append(f"| {name} | " + " | ".join(f"{a:.4f} / {e:.4f}" for a, e in zip(accuracies, eces))
                     + f" | {np.mean(accuracies):.4f} / {np.mean(eces):.4f} |")
    per_seed = {s: targets(runs[s][0]) for s in seeds}
    mean = np.mean([per_seed[s] for s in seeds], axis=0)
    table += [
        "",
        "Classic member minus scikit-learn (points; target: at most 0.5 below), best fused minus scikit-learn, minus "
        "the best single member (points; target >= +0.5 for both), largest ECE after calibration of a kerasft row, "
        "of a fused row (target <= 0.02), and the 90th percentile of that row's sampling floor: "
        + "; ".join(f"seed {s}: " + ", ".join(figures(t)) for s, t in per_seed.items())
        + f"; **mean of {len(seeds)}: {', '.join(figures(mean))}**. Test split: {test_size} articles (one article = "
        f"{100 / test_size:.2f} points); best fused and best single chosen on test accuracy per seed. Sampling "
        "floor: the ECE (mean / 90th percentile of 500 draws) that perfectly calibrated probabilities show on this "
        "test split, labels drawn from the calibrated probabilities themselves; a measured ECE below its 90th "
        "percentile cannot be told from perfect calibration on so few articles. Whole script: "
        f"{time.perf_counter() - script_start:.0f} s; load average at its end (1, 5, 15 min): "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores.",
        "",
        f"Training settings: classic `fine_tune(**{CLASSIC_FIT})`, MiniLM `fine_tune(**{MINILM_FIT})`. Ensemble wall "
        "times count building (and the fits on the validation split), not the members' training.",
    ]
    write_section("Model fusion on BBC News (bench/fusion.py)", "\n".join(table),
                  f"stratified 70/15/15 splits of 2127 articles (duplicates dropped), split seeds {args.seeds}, "
                  f"MiniLM sequence length {args.sequence_length}, one run")
    print("\n".join(table))


if __name__ == "__main__":
    main()
