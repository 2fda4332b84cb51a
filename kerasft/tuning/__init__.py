"""Hyperparameter search over transfer-learning recipes with KerasTuner, made fast by a feature cache.

```
space        the hyperparameters (kft.fine_tune's arguments), their rules and checks
hypermodel   TransferHyperModel: a trial is fine_tune's recipe on inputs computed once
halving      successive halving over unfreeze depths, as a KerasTuner oracle
search       tune(), the tuners (time budget, a line per trial), Search
```

```python
search = kft.tune(data, backbone="minilm_l6", time_limit=600, directory="runs/bbc")
print(search.summary())
model = search.best_models(1)[0]              # a raw-input classifier, as build_classifier makes it
hp = search.best_hyperparameters(1)[0]        # kft.fine_tune's arguments: retrain that recipe
model = kft.build_classifier(hp["backbone"], data=data, head=hp["head"], seed=hp["seed"])
kft.fine_tune(model, data, **hp)
```

A trial IS `kft.fine_tune`'s recipe (`kerasft.engine.train`) with the trial's
hyperparameters, whose names are fine_tune's arguments: the head warms up on
frozen features, then the blocks its `trainable` value unfreezes train on the
activations entering them. Both inputs are computed once for every trial
(`engine.Inputs`, a `FeatureCache` of every cut in the space), so a frozen
trial costs seconds and a `top:N` trial only its N blocks. The trial model
KerasTuner checkpoints is the part above the trial's cut (no frozen backbone
in it: a head is kilobytes), and `best_models()` puts it back on the search's
backbone: the full classifier, computing the same function.

The default tuner, `"halving"`, is successive halving over unfreeze depths
(`kerasft.tuning.halving`): many cheap frozen trials first, then the best of them one
depth deeper, and so on; `time_limit` stops starting trials that would not
finish in time and cuts the running one's epochs.

The search directory keeps KerasTuner's layout (so `overwrite=False` resumes
and KerasTuner's chief/worker mode works) plus kerasft's files:
```
<directory>/<project_name>.lock      held (flock) while a process searches; names its pid
<directory>/<project_name>/
    oracle.json  tuner0.json          KerasTuner's state
    trial_<id>/  trial.json  checkpoint.weights.h5 (the trial model only)  kerasft_trial.json
    kerasft_search.json               what the search is for; another setup is refused
    results.md  results.csv  results.png
    features/                         the feature cache, when it is on disk
```
"""

from kerasft.tuning.hypermodel import TransferHyperModel
from kerasft.tuning.search import TUNERS, Search, tune
from kerasft.tuning.space import TuningError, search_space

__all__ = ["TUNERS", "Search", "TransferHyperModel", "TuningError", "search_space", "tune"]
