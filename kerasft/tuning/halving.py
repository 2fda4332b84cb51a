"""Successive halving over unfreeze depths, as a KerasTuner oracle: cheap cached trials first.

```
rung 0   n0 trials at the cheapest depth ("frozen": a head on cached features, seconds each)
rung 1   the best n0 / reduction of rung 0, again, one depth deeper ("top:1": the top block too)
rung 2   the best of rung 1, deeper still ("top:2") ...
```
Each rung re-runs its parents' whole recipe at the deeper depth (a fresh trial,
not a continued one), so every trial is a plain `kft.fine_tune` recipe that
`Search.best_hyperparameters` can hand back. The first result comes after
one cheap trial; the expensive depths go only to configurations that earned
them. A rung waits (`IDLE`) while its parents' rung still runs on other workers.
"""

import json
import math

import keras_tuner
import numpy as np

# Trial values that carry the schedule (hidden from result tables, as KerasTuner's own `tuner/` values).
RUNG, PARENT = "tuner/rung", "tuner/parent"


def rung_sizes(max_trials, rungs, reduction=3):
    """Trials per rung: rung r holds ceil(n0 / reduction**r) (at least 1), all of them fitting `max_trials`.

    Args:
        max_trials: int. Trials in all.
        rungs: int. Depths to climb.
        reduction: int. How much each rung thins the one below.

    Returns:
        A list of ints, one per rung (fewer rungs when `max_trials` cannot reach them all).
    """
    rungs = min(rungs, max_trials)
    sizes = [1] * rungs
    for first in range(max_trials, 0, -1):
        candidate = [max(1, math.ceil(first / reduction**r)) for r in range(rungs)]
        if sum(candidate) <= max_trials:
            sizes = candidate
            break
    sizes[0] += max_trials - sum(sizes)
    return sizes


class SuccessiveHalvingOracle(keras_tuner.Oracle):
    """Proposes trials rung by rung (see the module docstring).

    Args:
        objective: keras_tuner.Objective. What ranks a rung's trials.
        max_trials: int. Trials in all.
        depths: list of str. The `trainable` values to climb, cheapest first.
        sample: callable. `sample(rng, trainable)` -> a dict of values for a new
            configuration at depth `trainable` (the search space's other hyperparameters).
        deepen: callable. `deepen(rng, values, trainable)` -> a parent's values
            made ready for the deeper depth (e.g. a fine-tuning learning rate drawn).
        reduction: int. Each rung keeps the best 1/reduction of the one below.
        seed: int. Seeds the draws.
        **kwargs: passed to `keras_tuner.Oracle`.
    """

    def __init__(self, objective, max_trials, depths, sample, deepen, reduction=3, seed=0, **kwargs):
        super().__init__(objective=objective, max_trials=max_trials, seed=seed, **kwargs)
        self.depths, self.sample, self.deepen, self.reduction = list(depths), sample, deepen, reduction
        self.sizes = rung_sizes(max_trials, len(self.depths), reduction)

    def populate_space(self, trial_id):
        trials = [self.trials[i] for i in self.start_order]
        rng = np.random.default_rng([self.seed, len(trials)])
        for rung, size in enumerate(self.sizes):
            members = [t for t in trials if t.hyperparameters.values.get(RUNG) == rung]
            if len(members) >= size:
                continue
            if rung == 0:
                values = self._new_configuration(rng, trials)
                return {"status": "RUNNING", "values": {**values, RUNG: 0}} if values else {"status": "STOPPED"}
            parents = [t for t in trials if t.hyperparameters.values.get(RUNG) == rung - 1]
            if any(t.status == "RUNNING" for t in parents):
                return {"status": "IDLE"}  # the rung below is not ranked yet (another worker runs it)
            done = sorted((t for t in parents if t.status == "COMPLETED" and t.score is not None),
                          key=lambda t: t.score, reverse=self.objective.direction == "max")
            promoted = {t.hyperparameters.values.get(PARENT) for t in members}
            waiting = [t for t in done[:size] if t.trial_id not in promoted]
            if waiting:
                parent = waiting[0]
                values = {k: v for k, v in parent.hyperparameters.values.items() if not k.startswith("tuner/")}
                values = self.deepen(rng, values, self.depths[rung])
                return {"status": "RUNNING", "values": {**values, RUNG: rung, PARENT: parent.trial_id}}
        return {"status": "STOPPED"}

    def _new_configuration(self, rng, trials):
        """A configuration no trial has tried yet (None after 100 draws that all repeat one)."""
        seen = {_key(t.hyperparameters.values) for t in trials}
        for _ in range(100):
            values = self.sample(rng, self.depths[0])
            if _key(values) not in seen:
                return values
        return None


def _key(values):
    return json.dumps({k: v for k, v in values.items() if not k.startswith("tuner/")}, sort_keys=True, default=str)
