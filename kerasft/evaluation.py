"""Held-out evaluation of a classifier or an ensemble: accuracy, macro-F1, per-class metrics, confusion matrix."""

import dataclasses

import keras
import numpy as np

from kerasft import features, heads, models


class EvaluationError(ValueError):
    """The data to evaluate on is empty or does not fit the model."""


@dataclasses.dataclass
class Evaluation:
    """Held-out metrics of a classifier.

    Attributes:
        metrics: dict. `accuracy`, `macro_f1` (classification) or `mae`,
            `rmse` (regression), and `num_examples`.
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

    def __str__(self):
        return self.summary()


def evaluate(model, data, class_names=None, batch_size=64):
    """Evaluates a classifier on held-out data: accuracy, macro-F1, per-class metrics, confusion matrix.

    Args:
        model: keras.Model. A kerasft classifier or ensemble (any model from
            raw input to outputs).
        data: TaskData (its test split is used) or a tf.data.Dataset of
            unbatched `(raw input, label)`.
        class_names: list of str or None. Names for the per-class table
            (taken from a TaskData).
        batch_size: int. Examples per prediction batch.

    Returns:
        An `Evaluation`; `result["accuracy"]` reads one metric.
    """
    models.check_clips(model, data)
    dataset = data.test if hasattr(data, "test") else data
    class_names = class_names or getattr(data, "class_names", None)
    probabilities, labels = [], []
    if models.is_classifier(model):  # preprocessing in tf.data (text: the fast word-cut tokenizer)
        network = model.get_layer("network")
        for x, y in features.preprocess(model, dataset, batch_size, cache=False):  # one pass: nothing kept
            probabilities.append(keras.ops.convert_to_numpy(network(x, training=False)))
            labels.append(y.numpy())
    else:  # an ensemble, or any model on raw input: its compiled predict function, not op-by-op calls
        batches = dataset.batch(batch_size)
        if batches.cardinality() != 0:
            probabilities.append(model.predict(batches.map(lambda x, y: x), verbose=0))
            labels.extend(y.numpy() for _, y in batches)
    if not probabilities:
        raise EvaluationError("evaluate() received an empty dataset.")
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    task = heads.task_of(model)
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
    metrics = {"accuracy": accuracy, "macro_f1": float(f1.mean()), "num_examples": len(labels)}
    return Evaluation(metrics, per_class, confusion, class_names, probabilities, labels)
