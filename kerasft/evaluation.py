"""Held-out evaluation of a classifier or an ensemble: accuracy, macro-F1, per-class metrics, confusion matrix,
expected calibration error; per target for a multi-task model."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from kerasft import features, heads, models
from kerasft.data.targets import present

# Equal-width bins of the top probability for the expected calibration error (Guo et al., 2017 use 15).
CALIBRATION_BINS = 15


class EvaluationError(ValueError):
    """The data to evaluate on is empty or does not fit the model."""


@dataclasses.dataclass
class Evaluation:
    """Held-out metrics of a classifier.

    Attributes:
        metrics: dict. `accuracy`, `macro_f1` (classification), `ece`
            (multiclass and binary: expected calibration error, see
            `calibration_error`) or `mae`, `rmse` (regression), and `num_examples`.
        per_class: dict. Class name -> `{"precision", "recall", "f1", "support"}`.
        confusion_matrix: np.ndarray or None. Rows: true class, columns: predicted.
        class_names: list of str.
        probabilities: np.ndarray. The model's outputs, in dataset order.
        labels: np.ndarray. The true labels, in dataset order.
    """

    metrics: dict
    per_class: dict
    confusion_matrix: np.ndarray
    class_names: list
    probabilities: np.ndarray
    labels: np.ndarray

    def __getitem__(self, key):
        return self.metrics[key]

    def summary(self):
        """Returns the metrics and the per-class table as text."""
        lines = ["  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items())]
        if self.per_class:
            width = max(len(n) for n in self.per_class)
            lines.append(f"{'class':<{width}}  precision  recall  f1      support")
            for name, row in self.per_class.items():
                lines.append(f"{name:<{width}}  {row['precision']:<9.3f}  {row['recall']:<6.3f}  "
                             f"{row['f1']:<6.3f}  {row['support']}")
        return "\n".join(lines)

    def headline(self):
        """Returns the figures a one-line log names: `accuracy 0.9412, ECE 0.0123` or `mae 0.1234` (regression)."""
        if "accuracy" not in self.metrics:
            return f"mae {self.metrics['mae']:.4f}"
        ece = f", ECE {self.metrics['ece']:.4f}" if "ece" in self.metrics else ""
        return f"accuracy {self.metrics['accuracy']:.4f}{ece}"

    def __str__(self):
        return self.summary()


@dataclasses.dataclass
class MultiTaskEvaluation:
    """Held-out metrics of a multi-task model: one `Evaluation` per target, of the examples that carry it.

    Attributes:
        targets: dict. Target -> `Evaluation`, in the model's order.
        metrics: dict. Target -> its metrics (JSON-able, for a model card).
    """

    targets: dict

    @property
    def metrics(self):
        return {name: evaluation.metrics for name, evaluation in self.targets.items()}

    def __getitem__(self, target):
        return self.targets[target]

    def summary(self):
        """Returns each target's metrics and per-class table as text."""
        return "\n".join(f"target {name!r}:\n" + "\n".join("  " + line for line in evaluation.summary().splitlines())
                         for name, evaluation in self.targets.items())

    def headline(self):
        """Returns each target's one-line figures: `word: accuracy 0.9312, ECE 0.0210; speaker: mae 0.1234`."""
        return "; ".join(f"{name}: {evaluation.headline()}" for name, evaluation in self.targets.items())

    def __str__(self):
        return self.summary()


def evaluate(model, data, class_names=None, batch_size=64):
    """Evaluates a classifier on held-out data: accuracy, macro-F1, per-class metrics, confusion matrix, ECE.

    A multi-task model is evaluated per target, each on the examples that
    carry its label (`MultiTaskEvaluation`).

    Args:
        model: keras.Model. A kerasft classifier or ensemble (any model from
            raw input to outputs).
        data: TaskData (its test split is used) or a tf.data.Dataset of
            unbatched `(raw input, label)`.
        class_names: list of str, dict or None. Names for the per-class table
            (taken from a TaskData); a multi-task model's `{target: names}`.
        batch_size: int. Examples per prediction batch.

    Returns:
        An `Evaluation`; `result["accuracy"]` reads one metric. A multi-task
        model gives a `MultiTaskEvaluation`: `result["word"]["accuracy"]`.
    """
    models.check_clips(model, data)
    dataset = data.test if hasattr(data, "test") else data
    tasks = heads.tasks_of(model)
    targets = getattr(data, "targets", None)
    if (tasks is None) != (targets is None) and hasattr(data, "targets"):
        raise EvaluationError(
            f"The model has {'the targets ' + str(list(tasks)) if tasks else 'one target'} but the data "
            f"({data.name}) has {'the targets ' + str(list(targets)) if targets else 'one target'}"
            + (": evaluate it on data.for_target(<its target>)." if targets else "."))
    probabilities, labels = _outputs(model, dataset, batch_size)
    if tasks is None:
        return _evaluation(heads.task_of(model), probabilities, labels,
                           class_names or getattr(data, "class_names", None))
    if targets is not None and list(targets) != list(tasks):
        raise EvaluationError(f"The model's targets are {list(tasks)} but the data's ({data.name}) are "
                              f"{list(targets)}.")
    class_names = class_names or ({name: list(t.class_names) for name, t in targets.items()} if targets
                                  else models.class_names_of(model)) or {}
    evaluations = {}
    for name, task in tasks.items():
        carried = present(labels[name], task)
        if not carried.any():
            raise EvaluationError(f"No example of the data carries a label of target {name!r}.")
        evaluations[name] = _evaluation(task, probabilities[name][carried], labels[name][carried],
                                        class_names.get(name))
    return MultiTaskEvaluation(evaluations)


def _outputs(model, dataset, batch_size):
    """`(outputs, labels)` of a model over an unbatched `(raw input, label)` dataset: arrays, or dicts of them."""
    probabilities, labels = [], []
    if models.is_classifier(model):  # preprocessing in tf.data (text: the fast word-cut tokenizer)
        network = model.get_layer("network")
        for x, y in features.preprocess(model, dataset, batch_size, cache=False):  # one pass: nothing kept
            probabilities.append(tf.nest.map_structure(keras.ops.convert_to_numpy, network(x, training=False)))
            labels.append(tf.nest.map_structure(lambda t: t.numpy(), y))
    else:  # an ensemble, or any model on raw input: its compiled predict function, not op-by-op calls
        batches = features.prefetched(dataset.batch(batch_size))
        if batches.cardinality() != 0:
            probabilities.append(model.predict(batches.map(lambda x, y: x), verbose=0))
            labels.extend(tf.nest.map_structure(lambda t: t.numpy(), y) for _, y in batches)
    if not probabilities:
        raise EvaluationError("evaluate() received an empty dataset.")
    return (tf.nest.map_structure(lambda *parts: np.concatenate(parts), *probabilities),
            tf.nest.map_structure(lambda *parts: np.concatenate(parts), *labels))


def _evaluation(task, probabilities, labels, class_names):
    """The `Evaluation` of one target's outputs against its labels."""
    class_names = list(class_names or [str(i) for i in range(probabilities.shape[-1])])
    if task == "regression":
        error = probabilities[:, 0] - labels.astype("float64")
        metrics = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean())),
                   "num_examples": len(labels)}
        return Evaluation(metrics, {}, None, [], probabilities, labels)
    if task == "multilabel":
        predicted = probabilities >= 0.5
        truth = labels.astype(bool)
        tp, fp, fn = (predicted & truth).sum(0), (predicted & ~truth).sum(0), (~predicted & truth).sum(0)
        support = truth.sum(0)
        accuracy = float((predicted == truth).all(axis=1).mean())
        confusion = None
    else:
        predicted = probabilities.argmax(-1)
        confusion = np.zeros((len(class_names),) * 2, dtype="int64")
        np.add.at(confusion, (labels.astype("int64"), predicted), 1)
        tp = np.diag(confusion)
        fp, fn, support = confusion.sum(0) - tp, confusion.sum(1) - tp, confusion.sum(1)
        accuracy = float(tp.sum() / confusion.sum())
    precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(len(tp)), where=(tp + fn) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(tp)),
                   where=(precision + recall) > 0)
    per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for name, p, r, f, s in zip(class_names, precision, recall, f1, support)}
    metrics = {"accuracy": accuracy, "macro_f1": float(f1.mean())}
    if confusion is not None:
        metrics["ece"] = calibration_error(probabilities, labels)
    metrics["num_examples"] = len(labels)
    return Evaluation(metrics, per_class, confusion, class_names, probabilities, labels)


def calibration_bins(probabilities, labels, bins=CALIBRATION_BINS):
    """Confidence against accuracy in equal-width bins of the top probability: a reliability diagram's data.

    An example falls in bin `b` when its top probability is in `(b / bins, (b + 1) / bins]`.

    Args:
        probabilities: np.ndarray. `(N, C)` class probabilities.
        labels: np.ndarray. `(N,)` true class indices.
        bins: int. Number of bins over [0, 1].

    Returns:
        `(confidence, accuracy, counts)`, each of length `bins`: the mean top
        probability and the accuracy of the examples in each bin (NaN where
        it is empty), and their number.
    """
    probabilities, labels = np.asarray(probabilities, dtype="float64"), np.asarray(labels)
    confidence, correct = probabilities.max(-1), probabilities.argmax(-1) == labels
    index = np.clip(np.ceil(confidence * bins).astype("int64") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):  # empty bins give NaN
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return mean_confidence, accuracy, counts


def calibration_error(probabilities, labels, bins=CALIBRATION_BINS):
    """Returns the expected calibration error: the examples' mean gap between accuracy and confidence, bin by bin.

    `sum_b (n_b / N) * |accuracy_b - confidence_b|` over the bins of
    `calibration_bins` (Guo et al., 2017); 0 for perfectly calibrated
    probabilities.
    """
    confidence, accuracy, counts = calibration_bins(probabilities, labels, bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - confidence[filled])) / counts.sum())
