"""Training several targets together: per-target targets and masks, losses, loss weights, and what refuses them.

A multi-task classifier (`build_classifier(data=multi_task_data)`) outputs
`{target: outputs}` from one head per target on a shared backbone. The
engine trains it as any classifier (the same phases, cuts and feature cache:
they cut the backbone, not the heads), with:

```
targets       {target: heads.targets(...)}: a missing label becomes a row of zeros
weights       {target: 0 where the label is missing, else 1}, times the row's class weight in training:
              Keras' per-output sample weights, so losses and metrics see only the rows that carry a target
losses        each target's task loss (heads.loss_and_metrics), the mean over the rows that carry it
loss weights  1 each (the default, Keras' own for a model of several outputs), given (`loss_weights=`,
              targets left out weigh 1), or `"balanced"` on the first training batch: each target's weight
              is inversely proportional to its loss there, so every target starts with an equal share of the
              total (a 10-class softmax starts near ln 10 = 2.3, a binary one near ln 2 = 0.69); the
              weights average 1
```
Equal weights are the default because they score better where it was measured:
on the two-target spoken words, balanced weights left the word and speaker-sex
heads 5.6 and 4.4 points below single-task models (seed 0), equal weights -0.7
and +1.0 points (mean of 3 seeds; bench/multi_task.py, bench/BENCHMARKS.md).
Where a model of one target meets multi-task data (or the other way round),
`refuse` says so before any work.
"""

import math

import keras
import numpy as np

from kerasft import heads
from kerasft.data.targets import present

# Batches read at most to see a label of every target when balancing the loss weights.
_BALANCING_BATCHES = 20


class MultiTaskError(ValueError):
    """A multi-task model or data went where only one target is supported, or a per-target setting is wrong."""


def targets_of(data):
    """A multi-task TaskData's `{target: task}`, in order; None for data with one target."""
    targets = getattr(data, "targets", None)
    return {name: target.task for name, target in targets.items()} if targets else None


def refuse(what, model=None, data=None):
    """Raises `MultiTaskError` when `model` or `data` is multi-task: `what` takes one target only.

    Args:
        what: str. The call or option that takes one target here, e.g. "kft.calibrate of a model with one target".
        model: keras.Model or None.
        data: TaskData or None.
    """
    tasks = (heads.tasks_of(model) if model is not None else None) or targets_of(data)
    if tasks:
        raise MultiTaskError(f"{what} takes models and data with one target; this one is multi-task, with the "
                             f"targets {list(tasks)}. Give one target's data (data.for_target(name)), or a "
                             "multi-task model built on this data.")


def targets_and_weights(data, split, class_weight=None):
    """`(targets, sample weights)` of a multi-task split: dicts of float32 arrays per target, in the data's order.

    Args:
        data: TaskData. Multi-task.
        split: str. "train", "validation" or "test".
        class_weight: dict or None. Target -> `{class id: weight}` or None: multiplies the weights of the
            rows of each class (training only).
    """
    targets, weights = {}, {}
    for name, target in data.targets.items():
        labels = data.labels(split, name)
        carried = present(labels, target.task)
        filled = np.where(carried, labels, 0) if labels.ndim == 1 else np.where(carried[:, None], labels, 0)
        targets[name] = heads.targets(target.task, target.num_outputs, filled)
        weights[name] = carried.astype("float32")
        per_class = (class_weight or {}).get(name)
        if per_class:
            table = np.array([per_class.get(c, 1.0) for c in range(target.num_outputs)], "float32")
            weights[name] *= table[filled.astype("int64")]
    return targets, weights


def losses_and_metrics(tasks, label_smoothing=0.0):
    """`(losses, metrics)`: dicts per target of `heads.loss_and_metrics`, each loss a mean over the rows that carry
    the target (the metrics go to `compile(weighted_metrics=...)`, so they skip missing rows too).

    Args:
        tasks: dict. Target -> task.
        label_smoothing: float. For the classification targets (a regression target takes none).
    """
    losses, metrics = {}, {}
    for name, task in tasks.items():
        losses[name], metrics[name] = heads.loss_and_metrics(
            task, label_smoothing if task != "regression" else 0.0, reduction="mean_with_sample_weight")
    return losses, metrics


def check_loss_weights(loss_weights, tasks):
    """Returns `{target: weight}` (1 each by default, targets left out weigh 1), `"balanced"`, or raises.

    Args:
        loss_weights: dict, "balanced" or None. Target -> weight > 0; None weighs each target 1.
        tasks: dict or None. The model's `{target: task}` (None: one target; its weights are then None).
    """
    if loss_weights is None:
        return None if tasks is None else dict.fromkeys(tasks, 1.0)
    if tasks is None:
        raise MultiTaskError("loss_weights weigh the targets of a multi-task model; this model has one target. "
                             f"Received: loss_weights={loss_weights!r}")
    if loss_weights == "balanced":
        return loss_weights
    unknown = [name for name in loss_weights if name not in tasks]
    if unknown:
        raise MultiTaskError(f"loss_weights names targets the model does not have: {unknown}. Expected some of "
                             f"{list(tasks)}. Received: loss_weights={loss_weights!r}")
    return {name: float(loss_weights.get(name, 1.0)) for name in tasks}


def balanced_loss_weights(part, batches, losses):
    """Weights each target inversely to its loss on the first training batch(es), averaging 1 (module docstring).

    Reads batches until every target has a label in one (at most `_BALANCING_BATCHES`); a target still without
    one weighs 1 before the averaging.

    Args:
        part: keras.Model. What the first phase trains (outputs `{target: outputs}`), before training.
        batches: tf.data.Dataset. That phase's training batches `(x, targets, sample weights)`.
        losses: dict. Target -> loss (`losses_and_metrics`).

    Returns:
        `({target: weight}, {target: initial loss})`.
    """
    totals, counts = dict.fromkeys(losses, 0.0), dict.fromkeys(losses, 0.0)
    for x, y, weight in batches.take(_BALANCING_BATCHES):
        predicted = part(x, training=False)
        for name, loss in losses.items():
            count = float(keras.ops.sum(weight[name]))
            totals[name] += float(loss(y[name], predicted[name], sample_weight=weight[name])) * count
            counts[name] += count
        if all(counts.values()):
            break
    initial = {name: totals[name] / counts[name] if counts[name] else math.nan for name in losses}
    inverse = {name: 1.0 / max(value, 1e-8) if counts[name] else 1.0 for name, value in initial.items()}
    mean = sum(inverse.values()) / len(inverse)
    return {name: value / mean for name, value in inverse.items()}, initial
