"""Ensembles of kerasft classifiers: probability averages and stacking over shared bottoms, and weight soups.

```
mean / weighted     raw input -> each distinct preprocessor once -> each distinct backbone once
                    -> every member's pooling + head -> (weighted) average of probabilities
                    weighted: weights on the simplex fitted on the validation split (log-likelihood;
                    squared error for regression)
stacking            the same, up to every member's log-probabilities (outputs for regression), joined
                    -> one "predictions" Dense fitted on the validation split: logistic (ridge) regression
                    whose regularization 5-fold cross-validation on that split chooses
uniform_soup        one classifier whose weights are the mean of the members' weights
greedy_soup         the same, adding members best-first only while validation accuracy does not drop
                    (members whose architecture differs from the best one's are left out, with a warning)
```
Members may be of different backbones and kinds (model fusion: a classic
TF-IDF model beside a transformer; two image backbones of different input
sizes) as long as they solve one task with the same classes. Members "share"
a preprocessor or a backbone when config and weights are identical (e.g.
several heads tuned on one frozen MiniLM): the ensemble then computes it
once, so three heads on one frozen backbone cost about one model.
`calibrate=True` folds a temperature fitted on validation into the result
(`kerasft.calibration`): one for all members of a mean or weighted ensemble,
in copies of their heads; the combiner's own for stacking (fitted on its
cross-validated predictions, not on the ones it was fitted to).
Every result is a plain functional `keras.Model` from raw input to
probabilities that `keras.models.load_model` reads without kerasft.

Multi-task members (one head per target, `kerasft.multitask`) combine per
output: the result outputs `{target: outputs}` like its members. `"mean"` and
`"weighted"` average each target's outputs (weighted: each target's own
weights), `"stacking"` fits one combiner per target, and `calibrate=True` one
temperature per multiclass or binary target, each on the validation rows that
carry that target; the soups average weights as for one target
(`"greedy_soup"` scores a soup by the mean of its targets' validation scores).
"""

import contextlib
import hashlib
import json
import warnings

import keras
import numpy as np
import scipy.optimize

from kerasft import audio, calibration, distribute, evaluation, features, heads, keras_internals, models, multitask
from kerasft.data.targets import present

METHODS = ("mean", "weighted", "stacking", "uniform_soup", "greedy_soup")
# Stacking chooses its combiner's regularization by cross-validation over this many folds of the validation split,
FOLDS = 5
# which needs this many validation examples of every class (regression: in all).
MIN_PER_CLASS = FOLDS
MIN_REGRESSION = 4 * FOLDS
_CLASSES = ("multiclass", "binary")  # tasks whose members output softmax probabilities


class EnsembleError(ValueError):
    """The members cannot be combined as asked."""


def ensemble(members, method="mean", validation=None, name="ensemble", strategy=None, calibrate=False):
    """Combines classifiers of the same task and classes, of any backbones and kinds, into one model.

    Args:
        members: list of keras.Model. kerasft classifiers (from
            `build_classifier`, `fine_tune`, `Search.best_models`) with the
            same input kind, task and classes.
        method: str. `"mean"`, `"weighted"` (weights fitted on validation),
            `"stacking"` (a combiner fitted on validation), `"uniform_soup"` or
            `"greedy_soup"` (Wortsman et al., 2022; members must share one
            architecture).
        validation: TaskData or tf.data.Dataset or None. Held-out data (a
            TaskData's validation split, or unbatched `(raw input, label)`);
            required by `"weighted"`, `"stacking"`, `"greedy_soup"` and
            `calibrate=True`.
        name: str. Name of the returned model.
        strategy: tf.distribute.Strategy or None. The ensemble's variables are
            created under it (to fine-tune or distill from it there).
        calibrate: bool. Fold a temperature fitted on validation into the
            result (multiclass and binary tasks).

    Returns:
        A `keras.Model` from raw input to probabilities. It shares the
        members' layers, except the head copies that `calibrate` and
        `"stacking"` make.

    Example:
    >>> ens = kft.ensemble([tfidf_model, minilm_model], method="stacking", validation=data, calibrate=True)
    """
    members = _check_members(members, method, validation, calibrate)
    with contextlib.ExitStack() as stack:
        for member in members:  # members loaded from disk or cloned lost it; the copies made here need it
            stack.enter_context(keras_internals.vocabulary_in_config(member))
        with distribute.training_scope(strategy):
            combined = _combine(members, method, validation, name, calibrate)
    if models.class_names_of(members[0]):
        combined.class_names = models.class_names_of(members[0])
    return combined


def _combine(members, method, validation, name, calibrate):
    if method in ("uniform_soup", "greedy_soup"):
        soup = _uniform_soup(members, name) if method == "uniform_soup" else _greedy_soup(members, validation, name)
        return calibration.calibrate(soup, validation, verbose=0) if calibrate else soup
    weights = np.full(len(members), 1 / len(members))
    tasks = heads.tasks_of(members[0])
    if method == "mean" and not calibrate:
        return _average(members, {target: weights for target in tasks} if tasks else weights, name)
    task = tasks or heads.task_of(members[0])
    if method == "stacking":
        return _stack(members, validation, task, name, calibrate)
    _, _, outputs, labels = _validation_outputs(members, validation, task)
    if tasks:
        return _average_targets(members, method, outputs, labels, name, calibrate)
    if task in _CLASSES:
        outputs = [np.exp(o) for o in outputs]
    if method == "weighted":
        weights = _fit_weights(outputs, labels, task)
    temperature = calibration.fit_temperature(outputs, labels, weights) if calibrate else 1.0
    return _average(members, weights, name, temperature)


def _check_members(members, method, validation, calibrate):
    if method not in METHODS:
        raise EnsembleError(f"Unknown method {method!r}; expected one of {METHODS}.")
    members = list(members) if isinstance(members, (list, tuple)) else None
    if not members:
        raise EnsembleError("ensemble() needs a non-empty list of classifiers.")
    for i, member in enumerate(members):
        if not isinstance(member, keras.Model) or not models.is_classifier(member):
            raise EnsembleError(
                f"Member {i} is not a kerasft classifier (a keras.Model with 'preprocessor' and 'network' "
                f"layers, from kft.build_classifier). Received: {type(member).__name__}"
            )
    _check_inputs(members)
    if any(heads.tasks_of(member) is not None for member in members):
        return _check_multi_task_members(members, method, validation, calibrate)
    multitask.refuse("kft.ensemble's validation data", data=validation)
    first = members[0]
    for i, member in enumerate(members[1:], start=1):
        if member.output.shape[-1] != first.output.shape[-1]:
            raise EnsembleError(f"Member {i} has {member.output.shape[-1]} outputs; member 0 has "
                                f"{first.output.shape[-1]}. Members must solve the same task.")
        if heads.task_of(member) != heads.task_of(first):
            raise EnsembleError(f"Member {i} is a {heads.task_of(member)} model; member 0 is "
                                f"{heads.task_of(first)}. Members must solve the same task.")
    _check_classes(members, validation)
    task = heads.task_of(first)
    if method in ("weighted", "stacking", "greedy_soup") or calibrate:
        if validation is None:
            needs = f"method={method!r}" if method in ("weighted", "stacking", "greedy_soup") else "calibrate=True"
            raise EnsembleError(f"{needs} needs validation= data (a TaskData or a dataset of (input, label)) to fit "
                                "on. Received: validation=None")
    if calibrate:
        try:
            calibration.check_calibratable(task, "the ensemble")
        except calibration.CalibrationError as error:
            raise EnsembleError(str(error)) from None
    if method == "stacking":
        if task == "multilabel":
            raise EnsembleError("method='stacking' fits a multiclass, binary or regression combiner; the members "
                                "are multilabel models. Use method='mean' or 'weighted'.")
        _check_stacking_size(_labels(validation), task, first.output.shape[-1],
                             getattr(validation, "class_names", None))
    return members


def _check_inputs(members):
    """Members take one kind of raw input (and audio members one clip length and rate)."""
    first = members[0]
    for i, member in enumerate(members[1:], start=1):
        if member.input.dtype != first.input.dtype:
            raise EnsembleError(f"Member {i} takes {member.input.dtype} input; member 0 takes {first.input.dtype}. "
                                "Members must solve the same task.")
        if models.modality_of(first) == "audio" and audio.sample_rate_of(member) != audio.sample_rate_of(first):
            (rate, samples), (first_rate, first_samples) = audio.sample_rate_of(member), audio.sample_rate_of(first)
            raise EnsembleError(f"Member {i} takes clips of {samples} samples at {rate} Hz; member 0 takes "
                                f"{first_samples} at {first_rate} Hz. Audio members must take one length and rate.")


def _check_multi_task_members(members, method, validation, calibrate):
    """Multi-task members: the same targets, tasks, outputs and classes; validation data with those targets."""

    def described(model):
        tasks = heads.tasks_of(model)
        return tasks and {t: (tasks[t], model.output[t].shape[-1]) for t in tasks}

    first, names = described(members[0]), models.class_names_of(members[0])
    for i, member in enumerate(members[1:], start=1):
        if described(member) != first:
            raise EnsembleError(f"Member {i} has the targets (task, outputs) {described(member) or 'one target'}; "
                                f"member 0 has {first or 'one target'}. Members must solve the same tasks.")
        if names and models.class_names_of(member) and models.class_names_of(member) != names:
            raise EnsembleError(f"Member {i} was built for the classes {models.class_names_of(member)}; member 0 "
                                f"for {names}. Members must predict the same classes in the same order.")
    if hasattr(validation, "targets"):  # a TaskData: the same targets (and classes, when the members know them)
        targets = validation.targets or {}
        held = {t: list(target.class_names) for t, target in targets.items()}
        if list(held) != list(first) or (names and {t: list(n) for t, n in names.items()} != held):
            raise EnsembleError(f"The members' targets are {list(first)} (classes {names}); the validation data "
                                f"({validation.name}) has " + (f"the targets {held}." if held else "one target."))
    if method == "greedy_soup" and validation is None:
        raise EnsembleError("method='greedy_soup' needs validation= data (a TaskData) to score soups on. "
                            "Received: validation=None")
    if method in ("weighted", "stacking") or (calibrate and method != "greedy_soup"):
        needs = f"method={method!r}" if method in ("weighted", "stacking") else "calibrate=True"
        if not getattr(validation, "targets", None):
            raise EnsembleError(f"{needs} needs validation= data with the members' targets {list(first)} (a "
                                f"multi-task TaskData) to fit on. Received: validation={type(validation).__name__}")
    tasks = {target: task for target, (task, _) in first.items()}
    if calibrate and not set(tasks.values()) & set(_CLASSES):
        raise EnsembleError(f"calibrate=True fits a temperature per multiclass or binary target; the members' "
                            f"targets are {tasks}.")
    if method == "stacking":
        for target, (task, outputs) in first.items():
            if task == "multilabel":
                raise EnsembleError(f"method='stacking' fits a multiclass, binary or regression combiner per "
                                    f"target; the target {target!r} is multilabel. Use method='mean' or 'weighted'.")
            labels = validation.labels("validation", target)
            _check_stacking_size(labels[present(labels, task)], task, outputs,
                                 validation.targets[target].class_names, f"target {target!r}: ")
    return members


def _check_classes(members, validation):
    """Members built for other classes (or another order) than each other or the validation data are refused."""
    known = [(i, models.class_names_of(m)) for i, m in enumerate(members) if models.class_names_of(m)]
    for i, names in known[1:]:
        if tuple(names) != tuple(known[0][1]):
            raise EnsembleError(f"Member {i} was built for the classes {list(names)}; member {known[0][0]} for "
                                f"{list(known[0][1])}. Members must predict the same classes in the same order.")
    data_names = getattr(validation, "class_names", None)
    if known and data_names and tuple(data_names) != tuple(known[0][1]):
        raise EnsembleError(f"The members were built for the classes {list(known[0][1])}; the validation data "
                            f"({validation.name}) has {list(data_names)}.")
    outputs = members[0].output.shape[-1]
    if data_names and len(data_names) != outputs:
        raise EnsembleError(f"The members output {outputs} classes; the validation data ({validation.name}) has "
                            f"{len(data_names)}: {list(data_names)}.")


def _check_stacking_size(labels, task, num_classes, class_names, prefix=""):
    if task == "regression":
        if len(labels) < MIN_REGRESSION:
            raise EnsembleError(f"{prefix}The validation split has {len(labels)} examples; stacking needs at least "
                                f"{MIN_REGRESSION} to cross-validate its combiner over {FOLDS} folds.")
        return
    counts = np.bincount(np.asarray(labels, dtype="int64"), minlength=num_classes)
    if counts.min() < MIN_PER_CLASS:
        names = list(class_names or range(num_classes))
        few = {str(names[c]): int(counts[c]) for c in np.flatnonzero(counts < MIN_PER_CLASS)}
        raise EnsembleError(
            f"{prefix}The validation split has {len(labels)} examples, and too few of some classes: {few}; stacking "
            f"needs at least {MIN_PER_CLASS} of every class ({MIN_PER_CLASS * num_classes} for {num_classes} "
            f"classes) to cross-validate its combiner over {FOLDS} folds.")


def _validation_dataset(validation):
    return validation.validation if hasattr(validation, "validation") else validation


def _labels(validation):
    if hasattr(validation, "labels"):
        return validation.labels("validation")
    return np.array([y.numpy() for _, y in validation])


def validation_score(model, validation):
    """A model's validation accuracy, or minus its mean absolute error for regression: higher is better (greedy
    soups, `kft.auto`). A multi-task model: the mean of its targets' scores, as `kft.tune`'s objective."""
    result = evaluation.evaluate(model, _validation_dataset(validation))
    scores = [metrics.get("accuracy", -metrics.get("mae", 0.0)) for metrics in (
        result.metrics.values() if isinstance(result, evaluation.MultiTaskEvaluation) else [result.metrics])]
    return float(np.mean(scores))


# === Probability averages and stacking ===


def _config(layer, ignore=("name",)):
    """A layer's config without the keys in `ignore` (names are made unique per instance)."""
    return features.unnamed_config(keras.saving.serialize_keras_object(layer), ignore)


def _digest(layer):
    """Identity of a layer for sharing: its config and its weights."""
    digest = hashlib.sha256(json.dumps(_config(layer), sort_keys=True, default=str).encode())
    for weight in layer.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def _renamed(model, new_name):
    """The same layers under a new name, so several members' sub-models fit in one graph."""
    return keras.Model(model.input, model.output, name=new_name)


def _graph(members, member_head):
    """Raw input, and each member's `member_head(i, head)` applied to its pooled features.

    Each distinct preprocessor and each distinct bottom (backbone + pooling)
    is computed once, whatever the members' kinds and sizes.
    """
    first = members[0]
    raw = keras.Input(shape=first.input.shape[1:], dtype=first.input.dtype, name=first.input.name)
    preprocessed, pooled, outputs = {}, {}, []
    for i, member in enumerate(members):
        preprocessor = member.get_layer("preprocessor")
        network = member.get_layer("network")
        backbone = network.get_layer("backbone")
        p_key = _digest(preprocessor)
        if p_key not in preprocessed:
            preprocessed[p_key] = _call_renamed(preprocessor, raw, f"preprocessor_{len(preprocessed)}")
        b_key = (p_key, _digest(backbone))
        if b_key not in pooled:
            bottom = keras.Model(network.input, network.get_layer("pooling").output)
            pooled[b_key] = _renamed(bottom, f"bottom_{len(pooled)}")(preprocessed[p_key])
        outputs.append(member_head(i, network.get_layer("head"))(pooled[b_key]))
    return raw, outputs


def _log_probability_head(i, head):
    """A copy of a softmax head that outputs log-probabilities (not named "predictions": not the task's output)."""
    return heads.output_copy(head, f"head_{i}", activation="log_softmax", output_name="log_probabilities")


def _output_head(task):
    """`_graph`'s `member_head` giving what combiners fit on: log-probabilities for multiclass and binary heads,
    outputs otherwise; for multi-task members (`task` is `{target: task}`), a dict of them per target."""
    if not isinstance(task, dict):
        return _log_probability_head if task in _CLASSES else (lambda i, head: _renamed(head, f"head_{i}"))
    return lambda i, head: _per_target(head, f"head_{i}", lambda target, own: heads.output_copy(
        own, own.name, activation="log_softmax", output_name="log_probabilities") if task[target] in _CLASSES else own)


def _validation_outputs(members, validation, task):
    """The members' graph (`_graph` with `_output_head`), its outputs on the validation split (over shared bottoms,
    in one pass) and the labels.

    Returns `(raw, outputs, predicted, labels)`: `predicted` a list of arrays,
    one per member; for multi-task members (`task` is `{target: task}`),
    `{target: that list}` and labels `{target: (task, labels)}`, the labels of
    rows without a target marked missing (`kerasft.data.targets`).
    """
    raw, outputs = _graph(members, _output_head(task))
    if not isinstance(task, dict):
        return raw, outputs, _predict(keras.Model(raw, outputs), validation), _labels(validation)
    predicted = _predict(keras.Model(raw, [o[target] for o in outputs for target in task]), validation)
    return (raw, outputs, {target: predicted[j::len(task)] for j, target in enumerate(task)},
            {target: (kind, validation.labels("validation", target)) for target, kind in task.items()})


def _predict(model, validation):
    """A multi-output model's outputs on the validation split, as a list of arrays."""
    batches = features.prefetched(_validation_dataset(validation).batch(64).map(lambda x, y: x))
    predicted = model.predict(batches, verbose=0)
    return list(predicted) if isinstance(predicted, (list, tuple)) else [predicted]


def _average(members, weights, name, temperature=1.0):
    """The (weighted) average of the members' outputs, logits divided by `temperature` in copies of their heads.

    Multi-task members: `weights` and `temperature` are `{target: ...}`, and
    each target's outputs are averaged under the target's name.
    """
    tasks = heads.tasks_of(members[0])
    if tasks and not isinstance(temperature, dict):
        temperature = dict.fromkeys(tasks, temperature)

    def member_head(i, head):
        # Member 0's head keeps its name "head": the ensemble reads as multi-task (heads.tasks_of).
        name = "head" if tasks and i == 0 else f"head_{i}"
        if tasks and any(t != 1.0 for t in temperature.values()):
            return _per_target(head, name, lambda target, own: own if temperature[target] == 1.0 else (
                heads.output_copy(own, own.name, temperature=temperature[target])))
        if tasks or temperature == 1.0:
            return head if name == "head" else _renamed(head, name)
        return heads.output_copy(head, name, temperature=temperature)

    def combine(outputs, weights, prefix=""):
        if len(outputs) == 1:
            return outputs[0]
        if np.allclose(weights, weights[0]):
            return keras.layers.Average(name=f"{prefix}mean")(outputs)
        return keras.layers.Add(name=f"{prefix}weighted_sum")(
            [keras.layers.Rescaling(float(w), name=f"{prefix}weight_{i}")(o)
             for i, (w, o) in enumerate(zip(weights, outputs))])

    raw, outputs = _graph(members, member_head)
    if tasks:
        return keras.Model(raw, {target: combine([o[target] for o in outputs], weights[target], f"{target}_")
                                 for target in tasks}, name=name)
    return keras.Model(raw, combine(outputs, weights), name=name)


def _per_target(head, name, rebuild):
    """A multi-task head rebuilt from `rebuild(target, its "<target>_head")` for every target, under `name`."""
    features = keras.Input(shape=head.input.shape[1:], name="features")
    return keras.Model(features, {target: rebuild(target, head.get_layer(f"{target}_head"))(features)
                                  for target in head.output}, name=name)


def _average_targets(members, method, outputs, labels, name, calibrate):
    """Multi-task members: each target's weights and temperature fitted on the validation rows that carry it."""
    weights, temperature = {}, {}
    for target, (task, target_labels) in labels.items():
        rows = present(target_labels, task)
        held = [np.exp(o[rows]) if task in _CLASSES else o[rows] for o in outputs[target]]
        weights[target] = (_fit_weights(held, target_labels[rows], task) if method == "weighted"
                           else np.full(len(members), 1 / len(members)))
        temperature[target] = (calibration.fit_temperature(held, target_labels[rows], weights[target])
                               if calibrate and task in _CLASSES else 1.0)
    return _average(members, weights, name, temperature)


def _fit_weights(outputs, labels, task):
    """Weights on the simplex minimizing the weighted average's validation loss, lightly pulled toward equal weights.

    Args:
        outputs: list of np.ndarray. Each member's validation probabilities
            (regression: values), `(N, C)`.
        labels: np.ndarray. The validation targets.
        task: str.
    """
    labels = np.asarray(labels)
    scale = max(float(np.var(labels)), 1e-12) if task == "regression" else 1.0

    def loss(logits):
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        mixed = sum(w * o for w, o in zip(weights, outputs))
        if task == "regression":
            fit = np.mean((mixed[:, 0] - labels) ** 2) / scale
        elif task == "multilabel":
            p = np.clip(mixed, 1e-12, 1 - 1e-12)
            fit = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
        else:
            fit = -np.mean(np.log(np.clip(mixed[np.arange(len(labels)), labels.astype("int64")], 1e-300, None)))
        return fit + 1e-3 * np.sum(logits**2)  # keeps the weights defined when one member is best everywhere

    logits = scipy.optimize.minimize(loss, np.zeros(len(outputs)), method="L-BFGS-B").x
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def _stack(members, validation, task, name, calibrate):
    """Member outputs joined -> a "predictions" Dense fitted on the validation split (see `_fit_combiner`).

    Multi-task members: one such combiner per target, fitted on the rows that
    carry it, each in its `"<target>_head"` inside a `"head"` (`heads.tasks_of`).
    """
    raw, outputs, predicted, labels = _validation_outputs(members, validation, task)
    if not isinstance(task, dict):
        return keras.Model(raw, _combiner(outputs, np.concatenate(predicted, axis=-1), labels, task, calibrate),
                           name=name)
    joined, combined = {}, {}
    for target, (kind, target_labels) in labels.items():
        rows = present(target_labels, kind)
        inputs = np.concatenate([o[rows] for o in predicted[target]], axis=-1)
        joined[target] = keras.Input(shape=(inputs.shape[-1],), name=f"{target}_member_outputs")
        combined[target] = keras.Model(joined[target], _combiner(
            [joined[target]], inputs, target_labels[rows], kind, calibrate), name=f"{target}_head")(joined[target])
    head = keras.Model(joined, combined, name="head")
    return keras.Model(raw, head({target: keras.layers.Concatenate(name=f"{target}_member_outputs")(
        [o[target] for o in outputs]) if len(outputs) > 1 else outputs[0][target] for target in task}), name=name)


def _combiner(outputs, inputs, labels, task, calibrate):
    """The "predictions" Dense fitted on `inputs` (the validation values of `outputs`), applied to `outputs` joined."""
    kernel, bias = _fit_combiner(inputs, labels, task, calibrate)
    joined = keras.layers.Concatenate(name="member_outputs")(outputs) if len(outputs) > 1 else outputs[0]
    combiner = keras.layers.Dense(len(bias), activation="softmax" if task in _CLASSES else None, dtype="float32",
                                  name="predictions")
    combined = combiner(joined)
    combiner.set_weights([kernel, bias])
    return combined


def _fit_combiner(inputs, labels, task, calibrate):
    """The combiner Dense's `(kernel, bias)`: logistic (regression: ridge) regression on standardized member outputs.

    Its regularization is chosen by `FOLDS`-fold cross-validation on the
    validation split (log-loss; squared error for ridge), then it is refitted
    on the whole split. With `calibrate`, a temperature is fitted on the
    cross-validated predictions (each from a fit that did not see it) and
    folded in. The standardization is folded in too: one Dense does it all.
    """
    from sklearn import linear_model, model_selection, preprocessing

    scaler = preprocessing.StandardScaler().fit(inputs)
    x = scaler.transform(inputs)
    if task == "regression":
        folds = model_selection.KFold(FOLDS, shuffle=True, random_state=0)
        fitted = linear_model.RidgeCV(alphas=np.logspace(-3, 3, 13), cv=folds).fit(x, labels)
        coef, intercept, temperature = fitted.coef_.reshape(-1, 1), np.atleast_1d(fitted.intercept_), 1.0
    else:
        folds = model_selection.StratifiedKFold(FOLDS, shuffle=True, random_state=0)
        fitted = linear_model.LogisticRegressionCV(Cs=np.logspace(-3, 3, 13), l1_ratios=(0.0,), cv=folds,
                                                   scoring="neg_log_loss", max_iter=5000,
                                                   use_legacy_attributes=False).fit(x, labels)
        coef, intercept = fitted.coef_.T, fitted.intercept_
        if coef.shape[1] == 1:  # binary: scikit-learn keeps the logit of class 1 only; class 0's is 0
            coef, intercept = np.concatenate([np.zeros_like(coef), coef], axis=1), np.array([0.0, intercept[0]])
        temperature = 1.0
        if calibrate:
            held_out = model_selection.cross_val_predict(
                linear_model.LogisticRegression(C=fitted.C_, max_iter=5000), x, labels, cv=folds,
                method="predict_proba")
            temperature = calibration.fit_temperature([held_out], labels)
    kernel = coef / scaler.scale_[:, None]
    bias = intercept - (scaler.mean_ / scaler.scale_) @ coef
    return (kernel / temperature).astype("float32"), (bias / temperature).astype("float32")


def _call_renamed(preprocessor, raw, new_name):
    if isinstance(preprocessor, keras.Model):
        return _renamed(preprocessor, new_name)(raw)
    # A KerasHub preprocessor layer: wrap it in a small functional model of its own.
    inputs = keras.Input(shape=raw.shape[1:], dtype=raw.dtype)
    return keras.Model(inputs, preprocessor(inputs), name=new_name)(raw)


# === Weight soups ===


def _soup_mismatch(member, reference):
    """Why two classifiers cannot be souped, or None when they can."""
    shapes, expected = [w.shape for w in member.weights], [w.shape for w in reference.weights]
    if shapes != expected:
        where = next((j for j, (a, b) in enumerate(zip(expected, shapes)) if a != b), min(len(shapes), len(expected)))
        path = member.weights[where].path if where < len(shapes) else "missing"
        return (f"different architectures ({len(shapes)} vs {len(expected)} weights; weight {where} ({path}) has "
                f"shape {shapes[where] if where < len(shapes) else None}, the other's "
                f"{expected[where] if where < len(expected) else None})")
    # A member loaded from disk has no vocabulary in its config (KerasHub keeps it in assets); initializer and
    # dropout seeds (members built with other seeds) say nothing about the trained weights.
    ignore = ("name", "vocabulary", "seed")
    if _config(member, ignore=ignore) != _config(reference, ignore=ignore):
        return "same weight shapes but a different configuration (e.g. head activation, dropout or preprocessing)"
    return None


def _soup(members, name):
    """A copy of member 0 carrying the mean of all members' weights."""
    soup = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(members[0]))
    keras_internals.carry_vocabulary(soup)
    averaged = [np.mean([keras.ops.convert_to_numpy(m.weights[j]) for m in members], axis=0)
                for j in range(len(members[0].weights))]
    soup.set_weights(averaged)
    return keras.Model(soup.input, soup.output, name=name) if name != soup.name else soup


def _uniform_soup(members, name):
    for i, member in enumerate(members[1:], start=1):
        reason = _soup_mismatch(member, members[0])
        if reason:
            raise EnsembleError(
                f"Member {i} cannot be souped with member 0: {reason}. Soups need identical architectures "
                "fine-tuned from the same pretrained start; use method='mean' or 'weighted' instead."
            )
    return _soup(members, name)


def _greedy_soup(members, validation, name):
    """Best member first, then each member of the same architecture, kept if validation does not get worse."""
    scores = [validation_score(m, validation) for m in members]
    order = sorted(range(len(members)), key=lambda i: -scores[i])
    chosen, best = [order[0]], scores[order[0]]
    skipped = [i for i in order[1:] if _soup_mismatch(members[i], members[order[0]])]
    for i in order[1:]:
        if i in skipped:
            continue
        score = validation_score(_soup([members[j] for j in chosen + [i]], name), validation)
        if score >= best:
            chosen, best = chosen + [i], score
    if skipped:
        warnings.warn(f"greedy_soup left out members {skipped}: their architecture differs from the best "
                      f"member's ({order[0]}), so their weights cannot be averaged with it.", stacklevel=4)
    return _soup([members[j] for j in chosen], name)


# === Choosing a fusion ===


def validation_scores(members, validation):
    """Scores each member and each way to fuse them on the validation split, honestly, in one pass of the members.

    A member, and the mean of members, are scored on the validation split as
    they are (nothing is fitted on it). `weighted` and `stacking` are fitted on
    validation, so their scores are cross-fitted: over `FOLDS` folds, each fold
    is predicted by weights or a combiner fitted on the other folds. The scores
    are comparable, and choosing the best does not favour what was fitted on it.
    Multi-task members are scored per target, on the rows that carry it, and
    each score is the mean over the targets (as `kft.tune`'s objective).

    Args:
        members: list of keras.Model. As `ensemble` takes them (classification).
        validation: TaskData or tf.data.Dataset.

    Returns:
        A dict: `"member <i>"`, `"mean"`, `"weighted"`, `"stacking"` -> validation accuracy
        (`stacking` is left out when the validation split is too small to stack).
    """
    members = _check_members(members, "mean", validation, False)
    task = heads.tasks_of(members[0]) or heads.task_of(members[0])
    other = {t: kind for t, kind in (task.items() if isinstance(task, dict) else [(None, task)])
             if kind not in _CLASSES}
    if other:
        raise EnsembleError("validation_scores ranks classifiers by accuracy; the members are "
                            + (f"{other[None]} models." if None in other else f"multi-task with the targets {other}."))
    with contextlib.ExitStack() as stack:
        for member in members:
            stack.enter_context(keras_internals.vocabulary_in_config(member))
        _, _, log_probabilities, labels = _validation_outputs(members, validation, task)
    if not isinstance(task, dict):
        return _fusion_scores(log_probabilities, np.asarray(labels).astype("int64"), task)
    per_target = []
    for target, (kind, target_labels) in labels.items():
        rows = present(target_labels, kind)
        per_target.append(_fusion_scores([o[rows] for o in log_probabilities[target]],
                                         target_labels[rows].astype("int64"), kind))
    return {key: float(np.mean([scores[key] for scores in per_target])) for key in per_target[0]
            if all(key in scores for scores in per_target)}


def _fusion_scores(log_probabilities, labels, task):
    """`validation_scores` of one target: its members' log-probabilities and labels."""
    from sklearn import model_selection

    probabilities = [np.exp(o) for o in log_probabilities]

    def accuracy(p, rows=slice(None)):
        return float((p.argmax(-1) == labels[rows]).mean())

    scores = {f"member {i}": accuracy(p) for i, p in enumerate(probabilities)}
    scores["mean"] = accuracy(np.mean(probabilities, axis=0))
    folds = model_selection.StratifiedKFold(FOLDS, shuffle=True, random_state=0)
    counts = np.bincount(labels)
    weighted, stacked = np.zeros_like(probabilities[0]), np.zeros_like(probabilities[0])
    stackable = counts.min() >= 2 * FOLDS  # every inner fit needs FOLDS examples of each class
    inputs = np.concatenate(log_probabilities, axis=-1)
    for fit, held in folds.split(inputs, labels):
        weights = _fit_weights([p[fit] for p in probabilities], labels[fit], task)
        weighted[held] = sum(w * p[held] for w, p in zip(weights, probabilities))
        if stackable:
            kernel, bias = _fit_combiner(inputs[fit], labels[fit], task, calibrate=False)
            stacked[held] = inputs[held] @ kernel + bias  # logits: argmax is all accuracy needs
    scores["weighted"] = accuracy(weighted)
    if stackable:
        scores["stacking"] = accuracy(stacked)
    return scores
