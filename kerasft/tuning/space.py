"""The search space of `kft.tune`: hyperparameter names (`kft.fine_tune`'s arguments), rules, defaults, checks.

A rule is a value (fixed), a list (one of these values) or a tuple `(min, max)`
/ `(min, max, "log")` (a range).
"""

import numpy as np

from kerasft import models


class TuningError(ValueError):
    """An argument to `tune`, the search space or the search directory is wrong."""


# Each entry: default rule, check of one value, what the check wants.
_HYPERPARAMETERS = {
    "trainable": (["frozen", "top:1", "top:2"], lambda v: _is_trainable(v), '"frozen", "top:N" with N >= 1, or "all"'),
    "depth": ([0, 1, 2], lambda v: is_int(v) and v >= 0, "hidden layers of the head, an integer >= 0"),
    "units": ([64, 128, 256, 512], lambda v: is_int(v) and v >= 1, "width of the head, an integer >= 1"),
    "dropout": ((0.0, 0.5), lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "learning_rate": ((1e-4, 1e-2, "log"), lambda v: is_number(v) and v > 0, "a number > 0"),
    "fine_tune_learning_rate": ((1e-5, 1e-3, "log"), lambda v: is_number(v) and v > 0, "a number > 0"),
    "weight_decay": ([0.0, 1e-4, 1e-3, 1e-2], lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "label_smoothing": ([0.0, 0.1, 0.2], lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "batch_size": ([16, 32, 64], lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "augmentation": ([0.0, 0.1, 0.2, 0.3], lambda v: is_number(v) and 0 <= v <= 1,
                     "a strength in [0, 1]"),
}
_INTEGER = ("depth", "units", "batch_size")


def is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_trainable(value):
    try:
        models.parse_trainable(value)
    except models.ClassifierError:
        return False
    return True


def is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _applicable(modality, task):
    """The hyperparameters a search of this kind tunes, and why the others do not apply."""
    excluded = {}
    if modality not in ("image", "audio"):
        excluded["augmentation"] = "augmentation applies to images and audio only"
    if task == "regression":
        excluded["label_smoothing"] = "label smoothing applies to classification only"
    return [name for name in _HYPERPARAMETERS if name not in excluded], excluded


def search_space(space=None, modality="text", task="multiclass", num_blocks=None):
    """Returns the search space as `{name: rule}`: the defaults, narrowed or replaced by `space`.

    A rule is a value (fixed), a list (one of these values) or a tuple
    `(min, max)` / `(min, max, "log")` (a range). `units` applies when
    `depth > 0`; `fine_tune_learning_rate` and `augmentation` when blocks
    unfreeze (`trainable` is `"top:N"` or `"all"`). The names are `kft.fine_tune`'s
    arguments (and `depth`, `units`, `dropout` make its `kft.Head`).

    Args:
        space: dict or None. Rules that replace the defaults, e.g.
            `{"trainable": "frozen", "learning_rate": (1e-3, 3e-2, "log"), "units": [128, 256]}`.
        modality: str. `"text"`, `"image"` or `"audio"` (`augmentation` is for images and audio).
        task: str. The data's task (`label_smoothing` is for classification).
        num_blocks: int or None. Blocks of the backbone, to check `"top:N"`.

    Raises:
        TuningError: an unknown name, an empty list, a range whose min exceeds
            its max, or a value out of its domain.
    """
    space = {} if space is None else space
    if not isinstance(space, dict):
        raise TuningError(f"space must be a dict of name -> value, list or (min, max) tuple. "
                          f"Received: {type(space).__name__}")
    names, excluded = _applicable(modality, task)
    for name in space:
        if name in excluded:
            raise TuningError(f"space[{name!r}] does not apply here: {excluded[name]}.")
        if name not in _HYPERPARAMETERS:
            raise TuningError(f"Unknown hyperparameter {name!r} in space=. Known: {', '.join(names)}.")
    rules = {name: space.get(name, _HYPERPARAMETERS[name][0]) for name in names}
    if num_blocks == 0 and "trainable" not in space:  # a backbone with nothing to unfreeze (the classic member)
        rules["trainable"] = "frozen"
    for name, rule in rules.items():
        rules[name] = _checked_rule(name, rule, num_blocks)
    return rules


def _checked_rule(name, rule, num_blocks):
    _, check, expected = _HYPERPARAMETERS[name]
    where = f"space[{name!r}]"
    if isinstance(rule, tuple):
        if name == "trainable":
            raise TuningError(f"{where} takes a value or a list of values, not a range. Received: {rule!r}")
        if len(rule) not in (2, 3) or (len(rule) == 3 and rule[2] not in ("linear", "log")):
            raise TuningError(f"{where} as a range is (min, max) or (min, max, 'log'). Received: {rule!r}")
        low, high = rule[:2]
        for value in (low, high):
            if not check(value) or (name in _INTEGER and not is_int(value)):
                raise TuningError(f"{where} must be {expected}. Received: {rule!r}")
        if low > high:
            raise TuningError(f"{where} is contradictory: its min {low} exceeds its max {high}. Received: {rule!r}")
        if rule[2:] == ("log",) and low <= 0:
            raise TuningError(f"{where} samples on a log scale, so its min must be > 0. Received: {rule!r}")
        return (*_plain(name, [low, high]), *rule[2:])
    values = rule if isinstance(rule, list) else [rule]
    if not values:
        raise TuningError(f"{where} is an empty list: give at least one value.")
    for value in values:
        if not check(value):
            raise TuningError(f"{where} must be {expected}. Received: {value!r}")
        if name == "trainable" and num_blocks is not None and value.startswith("top:") and int(value[4:]) > num_blocks:
            raise TuningError(f"{where} asks for {value!r} but the backbone has {num_blocks} blocks: "
                              f"use top:1 .. top:{num_blocks}.")
    values = _plain(name, values)
    return values if isinstance(rule, list) else values[0]


def _plain(name, values):
    """Python ints or floats (KerasTuner wants one type per Choice; JSON takes no numpy scalars)."""
    if name == "trainable":
        return list(values)
    return [int(v) if name in _INTEGER else float(v) for v in values]


def discrete(rule):
    """The values a discrete rule can take (a list for an integer range)."""
    if isinstance(rule, tuple):
        return list(range(rule[0], rule[1] + 1))
    return rule if isinstance(rule, list) else [rule]


def sample(rng, name, rule):
    """One value of a rule, drawn as KerasTuner's random search would (log ranges uniformly in log)."""
    if isinstance(rule, list):
        return rule[rng.integers(len(rule))]
    if not isinstance(rule, tuple):
        return rule
    low, high = rule[:2]
    if name in _INTEGER:
        return int(rng.integers(low, high + 1))
    if rule[2:] == ("log",):
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def declare(hp, name, rule):
    if isinstance(rule, list):
        return hp.Choice(name, rule)
    if isinstance(rule, tuple):
        sampling = rule[2] if len(rule) == 3 else "linear"
        if name in _INTEGER:
            return hp.Int(name, rule[0], rule[1], sampling=sampling)
        return hp.Float(name, float(rule[0]), float(rule[1]), sampling=sampling)
    return hp.Fixed(name, rule)
