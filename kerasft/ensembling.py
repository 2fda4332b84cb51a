"""Ensembles of kerasft classifiers: probability averages that share identical bottoms, and weight soups.

```
mean / weighted     raw input -> each distinct preprocessor once -> each distinct backbone once
                    -> every member's pooling + head -> (weighted) average of probabilities
uniform_soup        one classifier whose weights are the mean of the members' weights
greedy_soup         the same, adding members best-first only while validation accuracy does not drop
                    (members whose architecture differs from the best one's are left out, with a warning)
```
Members "share" a preprocessor or a backbone when config and weights are
identical (e.g. several heads tuned on one frozen MiniLM): the ensemble then
computes it once, so three heads on one frozen backbone cost about one model.
Every result is a plain functional `keras.Model` from raw input to
probabilities that `keras.models.load_model` reads without kerasft.
"""

import contextlib
import hashlib
import json
import warnings

import keras
import numpy as np

from kerasft import audio, distribute, evaluation, features, heads, keras_internals, models

METHODS = ("mean", "weighted", "uniform_soup", "greedy_soup")


class EnsembleError(ValueError):
    """The members cannot be combined as asked."""


def ensemble(members, method="mean", validation=None, name="ensemble", strategy=None):
    """Combines classifiers of the same task into one model.

    Args:
        members: list of keras.Model. kerasft classifiers (from
            `build_classifier`, `fine_tune`, `Search.best_models`) with the
            same input kind and the same outputs.
        method: str. `"mean"`, `"weighted"` (weights proportional to each
            member's validation accuracy), `"uniform_soup"` or `"greedy_soup"`
            (Wortsman et al., 2022; members must share one architecture).
        validation: TaskData or tf.data.Dataset or None. Held-out data of
            unbatched `(raw input, label)`; required by `"weighted"` and
            `"greedy_soup"`.
        name: str. Name of the returned model.
        strategy: tf.distribute.Strategy or None. The ensemble's variables are
            created under it (to fine-tune or distill from it there).

    Returns:
        A `keras.Model` from raw input to probabilities.

    Example:
    >>> ens = kft.ensemble(search.best_models(3), method="greedy_soup", validation=data)
    """
    members = _check_members(members, method, validation)
    with contextlib.ExitStack() as stack:
        for member in members:  # members loaded from disk or cloned lost it; the copies made here need it
            stack.enter_context(keras_internals.vocabulary_in_config(member))
        with distribute.training_scope(strategy):
            return _combine(members, method, validation, name)


def _combine(members, method, validation, name):
    if method == "mean":
        return _average(members, [1.0] * len(members), name)
    scores = [_validation_accuracy(m, validation) for m in members] if validation is not None else None
    if method == "weighted":
        total = sum(scores)
        return _average(members, [s / total for s in scores], name)
    if method == "uniform_soup":
        for i, member in enumerate(members[1:], start=1):
            reason = _soup_mismatch(member, members[0])
            if reason:
                raise EnsembleError(
                    f"Member {i} cannot be souped with member 0: {reason}. Soups need identical architectures "
                    "fine-tuned from the same pretrained start; use method='mean' or 'weighted' instead."
                )
        return _soup(members, name)
    # Greedy soup: best member first, then each member of the same architecture, kept if validation holds.
    order = sorted(range(len(members)), key=lambda i: -scores[i])
    chosen, best = [order[0]], scores[order[0]]
    skipped = [i for i in order[1:] if _soup_mismatch(members[i], members[order[0]])]
    for i in order[1:]:
        if i in skipped:
            continue
        candidate = _soup([members[j] for j in chosen + [i]], name)
        score = _validation_accuracy(candidate, validation)
        if score >= best:
            chosen, best = chosen + [i], score
    if skipped:
        warnings.warn(f"greedy_soup left out members {skipped}: their architecture differs from the best "
                      f"member's ({order[0]}), so their weights cannot be averaged with it.", stacklevel=3)
    return _soup([members[j] for j in chosen], name)


def _check_members(members, method, validation):
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
    first = members[0]
    for i, member in enumerate(members[1:], start=1):
        if member.input.dtype != first.input.dtype or member.output.shape[-1] != first.output.shape[-1]:
            raise EnsembleError(
                f"Member {i} takes {member.input.dtype} input with {member.output.shape[-1]} outputs; member 0 "
                f"takes {first.input.dtype} with {first.output.shape[-1]}. Members must solve the same task."
            )
        if models.modality_of(first) == "audio" and audio.sample_rate_of(member) != audio.sample_rate_of(first):
            (rate, samples), (first_rate, first_samples) = audio.sample_rate_of(member), audio.sample_rate_of(first)
            raise EnsembleError(f"Member {i} takes clips of {samples} samples at {rate} Hz; member 0 takes "
                                f"{first_samples} at {first_rate} Hz. Audio members must take one length and rate.")
        if heads.task_of(member) != heads.task_of(first):
            raise EnsembleError(f"Member {i} is a {heads.task_of(member)} model; member 0 is "
                                f"{heads.task_of(first)}.")
    if method in ("weighted", "greedy_soup") and validation is None:
        raise EnsembleError(f"method={method!r} needs validation= data to score the members.")
    return members


def _validation_accuracy(model, validation):
    result = evaluation.evaluate(model, validation.validation if hasattr(validation, "validation") else validation)
    return result.metrics.get("accuracy", -result.metrics.get("mae", 0.0))


# === Probability averages ===


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


def _average(members, weights, name):
    first = members[0]
    raw = keras.Input(shape=first.input.shape[1:], dtype=first.input.dtype, name=first.input.name)
    preprocessed, pooled = {}, {}
    outputs = []
    for i, member in enumerate(members):
        preprocessor = member.get_layer("preprocessor")
        network = member.get_layer("network")
        backbone = network.get_layer("backbone")
        p_key = _digest(preprocessor)
        if p_key not in preprocessed:
            preprocessed[p_key] = _call_renamed(preprocessor, raw, f"preprocessor_{len(preprocessed)}")
        x = preprocessed[p_key]
        b_key = (p_key, _digest(backbone))
        if b_key not in pooled:
            bottom = keras.Model(network.input, network.get_layer("pooling").output)
            pooled[b_key] = _renamed(bottom, f"bottom_{len(pooled)}")(x)
        head = network.get_layer("head")
        probabilities = _renamed(head, f"head_{i}")(pooled[b_key])
        if len(members) > 1 and weights[i] != 1.0:
            probabilities = keras.layers.Rescaling(weights[i], name=f"weight_{i}")(probabilities)
        outputs.append(probabilities)
    if len(outputs) == 1:
        combined = outputs[0]
    elif all(w == 1.0 for w in weights):
        combined = keras.layers.Average(name="mean")(outputs)
    else:
        combined = keras.layers.Add(name="weighted_sum")(outputs)
    return keras.Model(raw, combined, name=name)


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
    # A member loaded from disk has no vocabulary in its config (KerasHub keeps it in assets).
    if _config(member, ignore=("name", "vocabulary")) != _config(reference, ignore=("name", "vocabulary")):
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
