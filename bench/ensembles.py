"""Best member, mean ensemble, uniform soup and greedy soup on BBC News and Fashion-MNIST; then distillation.

For each dataset, one run:
1. `kft.tune` (random search) with a fixed head architecture (a linear head), so
   every member can be souped: BBC News on the frozen all-MiniLM-L6-v2
   (sequence 128), Fashion-MNIST (2000/500/2000, 96x96) on EfficientNet-Lite0
   with its top block fine-tuned from the same ImageNet start (`top:1`).
2. The 3 best members: the best single one, their mean ensemble, their
   uniform soup and their greedy soup (Wortsman et al., 2022), each scored on
   validation and test. The greedy soup is checked not worse than the best
   member on validation.
3. Distillation of the mean ensemble into a cheaper student (the same
   backbone, frozen, on smaller inputs: 64 tokens / 64x64 pixels), against the
   same student trained on the labels alone: parameters, latency (median of 5
   `predict` calls on a batch of 32) and test accuracy.
Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/ensembles.py [--trials 6]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402
from timing import median_latency  # noqa: E402

DATASETS = {
    "BBC News": dict(backbone="minilm_l6", build={"sequence_length": 128}, student={"sequence_length": 64},
                     space={"trainable": "frozen", "depth": 0, "dropout": 0.1}, epochs=20),
    "Fashion-MNIST": dict(backbone="efficientnet_lite0", build={"image_size": (96, 96)},
                          student={"image_size": (64, 64)},
                          space={"trainable": "top:1", "depth": 0, "dropout": 0.1}, epochs=5),
}


def load(name):
    if name == "BBC News":
        return kft.samples.bbc_news(seed=0)
    return kft.samples.fashion_mnist(seed=0).subset(train=2000, validation=500, test=2000, seed=0)


def scores(model, data):
    return kft.evaluate(model, data.validation)["accuracy"], kft.evaluate(model, data)["accuracy"]


def run(name, setting, trials):
    data = load(name)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        search = kft.tune(data, backbone=setting["backbone"], tuner="random", max_trials=trials,
                          epochs=setting["epochs"], directory=directory, space=setting["space"], **setting["build"])
        members = search.best_models(3)
    searched = time.perf_counter() - start
    candidates = {
        "best single member": members[0],
        "mean ensemble of 3": kft.ensemble(members, method="mean"),
        "uniform soup of 3": kft.ensemble(members, method="uniform_soup"),
        "greedy soup of 3": kft.ensemble(members, method="greedy_soup", validation=data),
    }
    table = {label: scores(model, data) for label, model in candidates.items()}

    teacher = candidates["mean ensemble of 3"]
    students = {}
    for label, teacher_model in (("student distilled from the mean ensemble", teacher),
                                 ("student on the labels alone", None)):
        if teacher_model is None:
            student = kft.build_classifier(setting["backbone"], data=data, **setting["student"])
            kft.fine_tune(student, data, epochs=20, verbose=0)
        else:
            student = kft.distill(teacher_model, setting["backbone"], data, temperature=2.0, alpha=0.5, epochs=20,
                                  verbose=0, **setting["student"])
        students[label] = student
    inputs = [x.numpy() for x, _ in data.test.take(32)]
    batch = np.array([x.decode() for x in inputs], dtype=object) if data.modality == "text" else np.stack(inputs)
    sizes = {label: (model.count_params(), median_latency(model, batch), scores(model, data)[1])
             for label, model in {"teacher: mean ensemble of 3": teacher, **students}.items()}
    return table, sizes, searched


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    rows = ["| data | model | validation accuracy | test accuracy |", "|---|---|---|---|"]
    distill_rows = ["| data | model | parameters | latency, batch 32 | test accuracy |", "|---|---|---|---|---|"]
    notes = []
    for name, setting in DATASETS.items():
        table, sizes, searched = run(name, setting, args.trials)
        rows += [f"| {name} | {label} | {val:.4f} | {test:.4f} |" for label, (val, test) in table.items()]
        best_val, greedy_val = table["best single member"][0], table["greedy soup of 3"][0]
        notes.append(f"{name}: greedy soup validation {greedy_val:.4f} vs best member {best_val:.4f} "
                     f"({'not worse' if greedy_val >= best_val else '**worse**'}); search {searched:.0f} s")
        teacher_params, teacher_latency, _ = sizes["teacher: mean ensemble of 3"]
        distill_rows += [f"| {name} | {label} | {params / 1e6:.2f}M ({params / teacher_params:.2f}x) | "
                         f"{seconds * 1000:.0f} ms ({seconds / teacher_latency:.2f}x) | {accuracy:.4f} |"
                         for label, (params, seconds, accuracy) in sizes.items()]
    body = "\n".join(rows + [""] + [f"- {note}" for note in notes] + ["", "Distillation:", ""] + distill_rows)
    settings = "; ".join(f"{name}: {s['backbone']} {s['build']}, space {s['space']}, student {s['student']}"
                         for name, s in DATASETS.items())
    write_section("Ensembles, soups and distillation (bench/ensembles.py)", body,
                  f"{args.trials}-trial random searches with a linear head (so members can be souped), the 3 best "
                  f"members; {settings}")
    print(body)


if __name__ == "__main__":
    main()
