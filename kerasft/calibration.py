"""Calibrated probabilities: temperature scaling fitted on the validation split, folded into the weights.

A fine-tuned softmax head is often over- (or under-) confident: among the
examples it gives 0.9, far more (or fewer) than 90% are right. Temperature
scaling (Guo et al., 2017) divides the logits by one scalar T that minimizes
the negative log-likelihood on held-out data; no prediction (argmax) changes.
kerasft folds 1/T into the Dense layer that makes the logits (its kernel and
bias divided by T), so `.keras`, SavedModel and LiteRT files return calibrated
probabilities with no extra layer and no runtime code:

```
classifier, soup     the head's "predictions" Dense                      kft.calibrate(model, data)
stacking ensemble    the combiner's "predictions" Dense                  kft.calibrate, or ensemble(calibrate=True)
mean / weighted      one T for all members, in each member's head copy   kft.ensemble(..., calibrate=True)
multi-task model     one T per multiclass or binary target, in its head  kft.calibrate(model, multi_task_data)
multi-task ensemble  one T per such target, in the members' head copies  kft.ensemble(..., calibrate=True)
```
`kft.evaluate` reports the expected calibration error (`ece`), and the run
report draws the reliability diagram.
"""

import numpy as np
import scipy.optimize

from kerasft import evaluation, heads, keras_internals, multitask

# The temperatures searched: beyond them a validation split is too small or too easy to say more.
TEMPERATURE_RANGE = (0.05, 20.0)


class CalibrationError(ValueError):
    """The model or the data cannot be calibrated as asked."""


def calibrate(model, data, verbose=1):
    """Fits a temperature on the validation split and folds it into the model's output layer, in place.

    The model's softmax output layer (the Dense named `"predictions"`) gets
    its kernel and bias divided by T, so every artefact exported afterwards
    returns the calibrated probabilities. Predicted classes do not change.

    Args:
        model: keras.Model. A multiclass or binary kerasft classifier, soup or
            stacking ensemble (one softmax output layer). A mean or weighted
            ensemble averages several heads: calibrate it with
            `kft.ensemble(..., calibrate=True)`. A multi-task model gets one
            temperature per multiclass or binary target, each fitted on the
            validation examples that carry that target (the others are left as
            they are).
        data: TaskData (its validation split is used) or a tf.data.Dataset of
            unbatched `(raw input, label)`.
        verbose: int. 1 prints the temperature and the validation ECE before
            and after.

    Returns:
        `model`, calibrated.

    Example:
    >>> model = kft.calibrate(model, data)
    >>> kft.evaluate(model, data)["ece"]
    >>> kft.evaluate(multi_task_model, multi_task_data)["speaker_sex"]["ece"]
    """
    targets = _target_outputs(model, data)
    validation = _validation(data)
    try:
        result = evaluation.evaluate(model, validation)
    except evaluation.EvaluationError as error:
        raise CalibrationError(str(error)) from None
    results = result.targets if targets else {None: result}
    for target, output in (targets or {None: _softmax_output(model)}).items():
        scores = results[target]
        temperature = fit_temperature([scores.probabilities], scores.labels)
        output.set_weights([w / temperature for w in output.get_weights()])
        if verbose:
            after = evaluation.calibration_error(scaled([scores.probabilities], temperature), scores.labels)
            print(f"kerasft: {f'target {target!r}: ' if target else ''}temperature {temperature:.3f} fitted on "
                  f"{len(scores.labels)} validation examples; validation ECE {scores['ece']:.4f} -> {after:.4f}",
                  flush=True)
    return model


def _target_outputs(model, data):
    """A multi-task model's `{target: its "predictions" Dense}` for the targets with softmax outputs; None for a
    one-target model (refused with multi-task data)."""
    try:
        heads_of = heads.target_heads(model)
    except ValueError as error:
        raise CalibrationError(str(error)) from None
    if heads_of is None:
        multitask.refuse("kft.calibrate of a model with one target", data=data)
        return None
    if hasattr(data, "targets") and list(data.targets or []) != list(heads_of):
        raise CalibrationError(f"The model's targets are {list(heads_of)} but the data ({data.name}) has "
                               f"{'the targets ' + str(list(data.targets)) if data.targets else 'one target'}.")
    tasks = heads.tasks_of(model)
    softmax = {target: head.get_layer("predictions") for target, head in heads_of.items()
               if tasks[target] in ("multiclass", "binary")}
    if not softmax:
        raise CalibrationError(f"Temperature scaling calibrates softmax probabilities; none of model {model.name!r}'s "
                               f"targets has them: {tasks}.")
    return softmax


def check_calibratable(task, what):
    """Refuses a task whose outputs are not softmax probabilities."""
    if task not in ("multiclass", "binary"):
        raise CalibrationError(
            f"Temperature scaling calibrates softmax probabilities (multiclass and binary models); {what} is a "
            f"{task} model" + (", whose outputs are values, not probabilities" if task == "regression" else "")
            + ".")


def _softmax_output(model):
    try:
        task = heads.task_of(model)
    except ValueError as error:
        raise CalibrationError(str(error)) from None
    check_calibratable(task, f"model {model.name!r}")
    outputs = [layer for layer in keras_internals.flatten_layers(model)
               if layer.name == "predictions" and hasattr(layer, "kernel")]
    if len(outputs) != 1:
        raise CalibrationError(
            f"Model {model.name!r} has {len(outputs)} output layers named 'predictions' (a mean or weighted "
            "ensemble averages its members' heads); calibrate a classifier, a soup or a stacking ensemble, or build "
            "the ensemble with kft.ensemble(members, method=..., validation=data, calibrate=True).")
    return outputs[0]


def _validation(data):
    validation = data.validation if hasattr(data, "validation") else data
    if hasattr(data, "size") and data.size("validation") == 0:
        raise CalibrationError(f"The validation split of {data.name} is empty: a temperature is fitted on it.")
    return validation


def scaled(probabilities, temperature, weights=None):
    """`sum_k w_k * softmax(log p_k / T)`: the probabilities once each softmax's logits are divided by T.

    Args:
        probabilities: list of np.ndarray. `(N, C)` outputs of each softmax.
        temperature: float.
        weights: sequence of float or None. Weight of each softmax (default: equal weights summing to 1).
    """
    weights = np.full(len(probabilities), 1 / len(probabilities)) if weights is None else weights
    total = 0.0
    for weight, p in zip(weights, probabilities):
        logits = np.log(np.clip(np.asarray(p, dtype="float64"), 1e-300, None)) / temperature
        logits -= logits.max(-1, keepdims=True)
        exp = np.exp(logits)
        total = total + weight * exp / exp.sum(-1, keepdims=True)
    return total


def fit_temperature(probabilities, labels, weights=None):
    """Returns the temperature T that minimizes the negative log-likelihood of `scaled(probabilities, T, weights)`.

    Args:
        probabilities: list of np.ndarray. `(N, C)` outputs of each softmax whose
            logits T will divide (one for a classifier; one per member of a
            mean or weighted ensemble).
        labels: np.ndarray. `(N,)` true classes.
        weights: sequence of float or None. The members' weights (summing to 1).
    """
    labels = np.asarray(labels, dtype="int64")

    def loss(log_temperature):
        p = scaled(probabilities, np.exp(log_temperature), weights)
        return -np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-300, None)))

    bounds = np.log(TEMPERATURE_RANGE)
    return float(np.exp(scipy.optimize.minimize_scalar(loss, bounds=bounds, method="bounded").x))
