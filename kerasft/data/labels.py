"""Label encoding: raw labels (names, ids, multi-hot rows, tag lists, numbers) -> encoded labels, classes, task."""

import math
import re

import numpy as np

from kerasft.data.errors import DataError, first_items
from kerasft.heads import TASKS

_MISSING_LABELS = ("", "nan")
_INTEGER = re.compile(r"[+-]?\d+")


def check_task(task):
    if task not in (None, *TASKS):
        raise DataError(f"task must be None or one of {TASKS}. Received: task={task!r}")


# === Labels ===


def encode_labels(y, *, class_names=None, task=None, where=str):
    """Turns raw labels into (encoded labels, class names, task).

    Integer numpy labels are class ids; Python/JSON values and strings are class
    names, sorted (numerically when all are integers); a 2-D 0/1 array is
    multi-hot and lists of names are multilabel; a 1-D float array, or any
    labels with `task="regression"`, are float targets.

    Args:
        y: list or np.ndarray. Raw labels, one per example.
        class_names: list of str or None. Known class names in index order.
        task: str or None. The task asked for, or None to infer it.
        where: callable. Maps an example index to a name for messages
            ("row 5", "y[4]").
    """
    check_task(task)
    array = y if isinstance(y, np.ndarray) else None
    if array is not None and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]  # Keras' own loaders give class ids as (N, 1), e.g. CIFAR-10.
    if task == "regression" or (array is not None and array.ndim == 1
                                and array.dtype.kind == "f" and task is None):
        return _regression_labels(y if array is None else array, where), [], "regression"
    if array is not None and array.ndim == 2:
        labels, names = _multi_hot_labels(array, class_names, where)
    elif array is not None and array.dtype.kind in "iu":
        labels, names = _id_labels(array, class_names, where)
    else:
        values = list(y)
        _check_missing(values, where)
        if any(isinstance(v, (list, tuple)) for v in values):
            labels, names = _tag_labels(values, class_names, where)
        else:
            labels, names = _name_labels(values, class_names, where)
    inferred = "multilabel" if labels.ndim == 2 else "binary" if len(names) == 2 else "multiclass"
    if task is not None and (task == "multilabel") != (inferred == "multilabel"):
        raise DataError(
            f"The labels make a {inferred} task, not {task!r}. Multilabel needs a 2-D "
            "multi-hot array, lists of class names, or label_separator=. "
            f"Received: labels such as {list(y[:3])}"
        )
    if len(names) < 2:
        raise DataError(f"A classification task needs at least 2 classes. Received: only {names}.")
    return labels, list(names), inferred


def _show(values, indices, where):
    """Formats the first few offending labels as "row 3 ('cat'), ..."."""
    shown = [values[i].item() if isinstance(values[i], np.generic) else values[i]
             for i in indices]
    return first_items(f"{where(i)} ({value!r})" for i, value in zip(indices, shown))


def _check_missing(values, where):
    missing = [i for i, v in enumerate(values)
               if v is None or (isinstance(v, float) and math.isnan(v))
               or (isinstance(v, str) and v.strip().lower() in _MISSING_LABELS)]
    if missing:
        raise DataError(
            f"{len(missing)} examples have an empty or NaN label: "
            f"{first_items(where(i) for i in missing)}. Expected a label on every example."
        )


def _regression_labels(y, where):
    values = list(y)
    targets = np.array([_to_float(v) for v in values], np.float64)
    bad = np.flatnonzero(~np.isfinite(targets))
    if len(bad):
        raise DataError(f"Regression labels must be finite numbers. Received: "
                        f"{_show(values, bad, where)}.")
    return targets.astype(np.float32)


def _to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _multi_hot_labels(array, class_names, where):
    bad = (np.flatnonzero(~np.isin(array, (0, 1)).all(axis=1)) if array.dtype.kind in "iubf"
           else np.arange(len(array)))
    if len(bad):
        raise DataError("A 2-D label array must be multi-hot (0 or 1 everywhere). Received "
                        f"other values at {first_items(where(i) for i in bad)}.")
    names = class_names or [str(i) for i in range(array.shape[1])]
    if len(names) != array.shape[1]:
        raise DataError(f"class_names has {len(names)} names but the multi-hot labels have "
                        f"{array.shape[1]} columns.")
    return array.astype(np.float32), names


def _tag_labels(values, class_names, where):
    not_lists = [i for i, v in enumerate(values) if not isinstance(v, (list, tuple))]
    if not_lists:
        raise DataError("Multilabel labels must all be lists of class names. Received "
                        f"non-lists at {_show(values, not_lists, where)}.")
    tags = [[str(t).strip() for t in v if str(t).strip()] for v in values]
    _check_missing([row or None for row in tags], where)
    names = _check_known(class_names or sorted({t for row in tags for t in row}), tags)
    index = {n: i for i, n in enumerate(names)}
    labels = np.zeros((len(tags), len(names)), np.float32)
    for row, row_tags in enumerate(tags):
        labels[row, [index[t] for t in row_tags]] = 1
    return labels, names


def _id_labels(array, class_names, where):
    if array.ndim != 1:
        raise DataError(f"Labels must be 1-D (or 2-D multi-hot). Received shape {array.shape}.")
    names = class_names or [str(i) for i in range(int(array.max()) + 1)]
    outside = np.flatnonzero((array < 0) | (array >= len(names)))
    if len(outside):
        raise DataError(f"Integer labels are class ids and must be in [0, {len(names)}). "
                        f"Received: {_show(array, outside, where)}.")
    return array.astype(np.int32), names


def _name_labels(values, class_names, where):
    bad = [i for i, v in enumerate(values)
           if isinstance(v, bool) or not isinstance(v, (str, int, np.integer))]
    if bad:
        raise DataError("Labels must be class names (str) or integers (for numeric targets "
                        f"pass task='regression'). Received: {_show(values, bad, where)}.")
    strings = [str(v).strip() for v in values]
    is_int = np.array([bool(_INTEGER.fullmatch(s)) for s in strings])
    if is_int.any() and not is_int.all():
        raise DataError(
            f"Labels mix integers and text: {_show(values, np.flatnonzero(is_int)[:3], where)} vs "
            f"{_show(values, np.flatnonzero(~is_int)[:3], where)}. Expected labels of one kind "
            "(for numeric targets pass task='regression')."
        )
    if not class_names and not is_int.all() and np.isfinite([_to_float(s) for s in strings]).all():
        raise DataError("Labels are non-integer numbers: pass task='regression' for a numeric "
                        f"target. Received: {_show(values, range(min(3, len(values))), where)}.")
    names = class_names or sorted(set(strings), key=int if is_int.all() else None)
    names = _check_known(names, [[s] for s in strings])
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[s] for s in strings], np.int32), names


def _check_known(class_names, tags):
    unknown = sorted({t for row in tags for t in row} - set(class_names))
    if unknown:
        raise DataError(f"Labels {first_items(unknown)} are not in class_names={list(class_names)}.")
    return list(class_names)


# === Splitting ===
