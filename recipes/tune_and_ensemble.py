"""
Title: Tune heads on a frozen MiniLM, then ensemble the best trials
Description: A KerasTuner search made cheap by a feature cache, then a mean ensemble and a greedy weight soup.

A frozen backbone computes the same features in every trial, so kerasft
computes them once and every trial trains only its head on them: ten trials
cost little more than one. The best trials are then combined two ways: a
mean ensemble (the three heads share one MiniLM inside the graph, so it costs
about one model) and a greedy soup (Wortsman et al., 2022: weights averaged
while validation accuracy does not drop).

Set `KERASFT_SMOKE=1` to run on a small subset in about a minute.
"""

import os

import kerasft as kft

SMOKE = os.environ.get("KERASFT_SMOKE") == "1"
OUTPUT = os.environ.get("KERASFT_OUTPUT", "saved_models/bbc_news_ensemble")
SEARCH_DIRECTORY = os.environ.get("KERASFT_SEARCH_DIR", "runs")

data = kft.samples.bbc_news(seed=0)
if SMOKE:
    data = data.subset(train=100, validation=40, test=60, seed=0)

"""
## The search

Random search over the head (depth, width, dropout), the learning rate,
weight decay, label smoothing and the batch size, with the backbone frozen.
One line per trial; `results.md`, `results.csv` and `results.png` land in
the search folder. Run it again and it resumes (finished trials are kept).
"""

search = kft.tune(data, backbone="minilm_l6", tuner="random", max_trials=3 if SMOKE else 10,
                  epochs=5 if SMOKE else 20, directory=SEARCH_DIRECTORY, project_name="bbc_news_frozen",
                  space={"trainable": "frozen"}, sequence_length=64 if SMOKE else 256)
print(search.summary())

"""
## Ensembles of the best trials

`best_models(3)` gives full raw-input classifiers. The mean ensemble
averages their probabilities; the greedy soup averages the weights of those
that share an architecture, best first, keeping a member only if validation
accuracy holds (members of another architecture are left out, with a warning).
"""

members = search.best_models(3)
candidates = {
    "best trial": members[0],
    "mean ensemble": kft.ensemble(members, method="mean"),
    "greedy soup": kft.ensemble(members, method="greedy_soup", validation=data),
}
scores = {name: kft.evaluate(model, data) for name, model in candidates.items()}
for name, result in scores.items():
    print(f"{name:>14}: test accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}")

"""
## Export the ensemble

One model from raw text to probabilities: `model.keras` loads with plain
Keras, the SavedModel version serves with TF Serving.
"""

exported = kft.export(candidates["mean ensemble"], OUTPUT, data=data, metrics=scores["mean ensemble"],
                      hyperparameters={"members": search.best_hyperparameters(3)})
print(f"test accuracy {scores['mean ensemble']['accuracy']:.4f}; exported {exported.path} "
      f"(SavedModel version {exported.version})")
