"""Several targets per example (multi-task data): names, labels with gaps, and what splits and masks them.

A multi-task TaskData holds one label array per named target, in the order
the targets were given. A row that lacks a target's label is kept for the
others and marked missing in that target's array:

```
task                  encoded label          missing
multiclass / binary   int32 class id         -1
multilabel            float32 multi-hot row  a row of NaN
regression            float32 value          NaN
```
A raw label is missing when it is None, NaN, an empty string (or "nan"),
or an empty list of tags. Training masks missing labels out of the loss
(`kerasft.multitask`); evaluation leaves them out of the metrics.
"""

import dataclasses
import math
import re

import numpy as np

from kerasft.data.errors import DataError, first_items
from kerasft.data.labels import check_task, encode_labels

# Target names become layer names and serving output names (`<target>_probabilities`).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_MISSING_TEXT = ("", "nan")


@dataclasses.dataclass(frozen=True)
class Target:
    """One target of a multi-task TaskData.

    Args:
        task: str. `"multiclass"`, `"binary"`, `"multilabel"` or `"regression"`.
        class_names: tuple of str. Class names in index order (`()` for regression).
    """

    task: str
    class_names: tuple

    @property
    def num_outputs(self):
        """Outputs of the target's head: classes, or 1 for regression."""
        return 1 if self.task == "regression" else len(self.class_names)


def check_names(names, what):
    """Returns target names as a list, or raises when one is repeated or cannot name a model output.

    Args:
        names: sequence of str. The target names, in order.
        what: str. The argument they came from, for messages (e.g. "label_column").
    """
    names = list(names)
    if not names:
        raise DataError(f"{what} names no target. Expected at least one. Received: {what}={names!r}")
    repeated = sorted({n for n in names if names.count(n) > 1}, key=names.index)
    if repeated:
        raise DataError(f"{what} lists {first_items(repr(n) for n in repeated)} more than once. Expected each "
                        f"target once. Received: {what}={names!r}")
    bad = [n for n in names if not isinstance(n, str) or not _NAME.fullmatch(n)]
    if bad:
        raise DataError(f"Target names become model output names: a letter, then letters, digits or '_'. Rename "
                        f"{first_items(repr(n) for n in bad)} (e.g. the column). Received: {what}={names!r}")
    return names


def per_target(value, names, what):
    """`{target: value}`: a dict is checked against the targets, anything else applies to every target.

    Args:
        value: object or dict. One setting for all targets, or one per target (targets left out get None).
        names: list of str. The targets.
        what: str. The argument's name, for messages.
    """
    if not isinstance(value, dict):
        return {name: value for name in names}
    unknown = [key for key in value if key not in names]
    if unknown:
        raise DataError(f"{what} names targets the data does not have: {first_items(repr(k) for k in unknown)}. "
                        f"Expected some of {names}. Received: {what}={value!r}")
    return {name: value.get(name) for name in names}


def check_stratify(stratify, names):
    """Returns the target the splits are stratified on: `stratify`, or the first target when None."""
    if stratify is None:
        return names[0]
    if stratify not in names:
        raise DataError(f"stratify names a target the data does not have. Expected one of {names}. "
                        f"Received: stratify={stratify!r}")
    return stratify


def encode_targets(raw_targets, *, class_names=None, task=None, where=str):
    """Encodes every target's raw labels, keeping rows that lack one (see the module docstring).

    Args:
        raw_targets: dict. Target name -> raw labels (list or np.ndarray), one per example, all of one length.
        class_names: dict or None. Target -> class names in index order (None: inferred).
        task: str, dict or None. The task of every target, or one per target (None: inferred).
        where: callable. Example index -> name for messages.

    Returns:
        `(labels, targets)`: `{name: encoded labels}` and `{name: Target}`, in the given order.
    """
    names = check_names(raw_targets, "the targets")
    lengths = {name: len(raw) for name, raw in raw_targets.items()}
    if len(set(lengths.values())) > 1:
        raise DataError("Every target needs one label per example (missing ones as None, NaN or ''). Received "
                        f"targets of different lengths: {lengths}")
    class_names = per_target(class_names, names, "class_names")
    tasks = per_target(task, names, "task")
    labels, targets = {}, {}
    for name, raw in raw_targets.items():
        check_task(tasks[name])
        missing = _missing(raw)
        present = np.flatnonzero(~missing)
        if not len(present):
            raise DataError(f"Target {name!r} has no label on any example. Expected labels on some. Received: "
                            f"{first_items(repr(v) for v in list(raw[:3]))}")
        values = raw[present] if isinstance(raw, np.ndarray) else _as_array([raw[i] for i in present])
        try:
            encoded, names_of_classes, inferred = encode_labels(
                values, class_names=class_names[name], task=tasks[name], where=lambda i: where(present[i]))
        except DataError as error:
            raise DataError(f"Target {name!r}: {error}") from None
        labels[name] = _with_gaps(encoded, present, len(raw), inferred)
        targets[name] = Target(inferred, tuple(names_of_classes))
    return labels, targets


def _as_array(values):
    """Python numbers are class ids (int) or values (float), as numpy's are; anything else stays a list."""
    if values and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        return np.asarray(values)
    return values


def _missing(raw):
    """A boolean mask of the examples whose raw label is missing."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "iub":
        return np.zeros(len(raw), bool)
    if isinstance(raw, np.ndarray) and raw.dtype.kind == "f":
        return ~present(raw, "regression")
    return np.array([_is_missing(v) for v in raw], bool)


def _is_missing(value):
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_TEXT
    if isinstance(value, (list, tuple)):
        return not any(str(tag).strip() for tag in value)
    return False


def _with_gaps(encoded, present, count, task):
    """The encoded labels of the present rows spread over all `count` rows, missing ones marked."""
    if task in ("multiclass", "binary"):
        full = np.full(count, -1, np.int32)
    else:
        full = np.full((count, *encoded.shape[1:]), np.nan, np.float32)
    full[present] = encoded
    return full


def present(labels, task):
    """A boolean mask of the rows that carry a label (see the module docstring).

    Args:
        labels: np.ndarray. One target's encoded labels.
        task: str. Its task.
    """
    labels = np.asarray(labels)
    if task in ("multiclass", "binary"):
        return labels >= 0
    nan = np.isnan(labels)
    return ~(nan.any(axis=tuple(range(1, nan.ndim))) if nan.ndim > 1 else nan)


def stratification_labels(labels, target):
    """Labels to stratify splits and samples on: missing class ids become one more group, NaN becomes 0.

    Args:
        labels: np.ndarray. The stratifying target's encoded labels.
        target: Target. Its task and classes.
    """
    if target.task in ("multiclass", "binary"):
        return np.where(labels < 0, len(target.class_names), labels).astype(np.int32)
    return np.nan_to_num(labels, nan=0.0)
