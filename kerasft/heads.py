"""Classification and regression heads that sit on a backbone's pooled features."""

import dataclasses
import itertools

import keras
import numpy as np

from kerasft import keras_internals

TASKS = ("multiclass", "binary", "multilabel", "regression")

# The output layer of each task; "binary" is a two-class softmax so every
# classifier outputs one probability per class.
_OUTPUT_ACTIVATION = {"multiclass": "softmax", "binary": "softmax", "multilabel": "sigmoid", "regression": None}
_TASK_OF_ACTIVATION = {"softmax": "multiclass", "sigmoid": "multilabel", "linear": "regression"}


@dataclasses.dataclass(frozen=True)
class Head:
    """A small MLP head: hidden Dense layers, dropout, and the task's output layer.

    Args:
        units: tuple of int. Width of each hidden layer; `()` gives a linear head.
        dropout: float. Dropout rate before each Dense layer, in [0, 1).
        activation: str. Activation of the hidden layers.

    Example:
    >>> head = kft.Head(units=(256,), dropout=0.2)
    """

    units: tuple = ()
    dropout: float = 0.1
    activation: str = "relu"

    def __post_init__(self):
        units = (self.units,) if isinstance(self.units, int) else tuple(self.units)
        if any(not isinstance(u, int) or u < 1 for u in units):
            raise ValueError(f"Head units must be positive integers. Received: units={self.units!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Head dropout must be in [0, 1). Received: dropout={self.dropout!r}")
        object.__setattr__(self, "units", units)

    @classmethod
    def of(cls, head_model):
        """The `Head` that builds a head model like `head_model` (a classifier's `"head"` layer)."""
        dense = [layer for layer in head_model.layers if isinstance(layer, keras.layers.Dense)]
        dropout = [layer.rate for layer in head_model.layers if isinstance(layer, keras.layers.Dropout)]
        hidden = dense[:-1]
        return cls(units=tuple(layer.units for layer in hidden), dropout=dropout[0] if dropout else 0.0,
                   activation=keras.activations.serialize(hidden[0].activation) if hidden else cls.activation)

    def build(self, feature_dim, num_outputs, task, seed=None, name="head"):
        """Returns the head as a functional `keras.Model` named `"head"`: features -> outputs.

        Args:
            feature_dim: int. Size of the pooled feature vector.
            num_outputs: int. Classes (or 1 for regression).
            task: str. One of `"multiclass"`, `"binary"`, `"multilabel"`, `"regression"`.
            seed: int or None. Seeds every initializer and dropout of the head (layer i
                draws from `seed + i`), without touching any global random state; the
                same seed builds the same head wherever it is built.
            name: str. The model's name (a multi-task head names each target's `"<target>_head"`).
        """
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}.")
        seeds = itertools.count(seed) if seed is not None else itertools.repeat(None)
        # === Functional Model ===
        features = keras.Input(shape=(feature_dim,), name="features")
        x = features
        for i, width in enumerate(self.units):
            if self.dropout:
                x = keras.layers.Dropout(self.dropout, seed=next(seeds), name=f"head_dropout_{i}")(x)
            x = keras.layers.Dense(width, activation=self.activation, name=f"head_dense_{i}",
                                   kernel_initializer=keras.initializers.GlorotUniform(next(seeds)))(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, seed=next(seeds), name="head_dropout_out")(x)
        # The output layer stays float32 under mixed precision.
        outputs = keras.layers.Dense(
            num_outputs, activation=_OUTPUT_ACTIVATION[task], dtype="float32", name="predictions",
            kernel_initializer=keras.initializers.GlorotUniform(next(seeds)))(x)
        return keras.Model(features, outputs, name=name)


# Seeds of the heads of a multi-task model: target i's head draws from `seed + i * _SEED_STRIDE`.
_SEED_STRIDE = 1000


def build_multi_head(heads, feature_dim, targets, seed=None):
    """Returns the heads of a multi-task model under one `keras.Model` named `"head"`: features -> {target: outputs}.

    Each target gets its own head model, named `"<target>_head"`, whose output
    layer is the Dense `"predictions"` of its task, as `Head.build` makes it;
    the dict of outputs keeps the targets' order (the first target first).

    Args:
        heads: dict. Target -> `Head`.
        feature_dim: int. Size of the pooled feature vector.
        targets: dict. Target -> `(task, num_outputs)`, in order.
        seed: int or None. Seeds the heads (each target's from its own range).
    """
    features = keras.Input(shape=(feature_dim,), name="features")
    outputs = {}
    for i, (target, (task, num_outputs)) in enumerate(targets.items()):
        head_seed = None if seed is None else seed + i * _SEED_STRIDE
        outputs[target] = heads[target].build(feature_dim, num_outputs, task, seed=head_seed,
                                              name=f"{target}_head")(features)
    return keras.Model(features, outputs, name="head")


def output_copy(head, name, temperature=1.0, activation=None, output_name="predictions"):
    """Returns a head sharing `head`'s hidden layers, with its own copy of the output layer, logits divided by T.

    Dividing the output layer's kernel and bias by `temperature` divides its
    logits: a softmax output is then temperature-scaled (`kerasft.calibration`)
    with no extra layer. `head` itself is left as it was.

    Args:
        head: keras.Model. A head (features -> outputs) whose output layer is
            the Dense named `"predictions"`, as `Head.build` makes it.
        name: str. Name of the returned head.
        temperature: float. Divides the logits.
        activation: str or None. Output activation of the copy (default: the
            original's), e.g. `"log_softmax"` for log-probabilities.
        output_name: str. Name of the copied output layer; a copy that does not
            output the task's probabilities must not be called `"predictions"`
            (see `task_of`).
    """
    output = head.get_layer("predictions")
    copies = []

    def clone(layer):
        if layer is not output:
            return layer
        config = {**output.get_config(), "name": output_name}
        copies.append(keras.layers.Dense.from_config({**config, "activation": activation} if activation else config))
        return copies[-1]

    cloned = keras.models.clone_model(head, clone_function=clone)
    copies[0].set_weights([w / temperature for w in output.get_weights()])
    return keras.Model(cloned.input, cloned.output, name=name)


def targets(task, num_classes, labels):
    """Returns a TaskData's labels as what `loss_and_metrics` takes: a float32 array.

    Class ids become one-hot rows (so labels can be smoothed); multi-hot rows and
    regression values stay as they are.

    Args:
        task: str. One of `TASKS`.
        num_classes: int. Outputs of the model.
        labels: np.ndarray. Labels as `TaskData.labels(split)` gives them.
    """
    labels = np.asarray(labels)
    if task in ("multiclass", "binary"):
        return np.eye(num_classes, dtype="float32")[labels.astype("int64")]
    return labels.astype("float32").reshape(len(labels), -1)


def loss_and_metrics(task, label_smoothing=0.0, reduction="sum_over_batch_size"):
    """Returns the `(loss, metrics)` that fit the output layer of `task`, on targets from `targets(task, ...)`.

    The one definition of kerasft's training loss: `fine_tune`, every `tune`
    trial, distillation's hard term and each target of a multi-task model
    (`kerasft.multitask`) use it. To `fit` a classifier yourself on
    a TaskData's integer labels, `"sparse_categorical_crossentropy"` fits too.

    Args:
        task: str. One of `TASKS`.
        label_smoothing: float. In [0, 1): mixes the targets with the uniform
            distribution (classification only).
        reduction: str. The loss's Keras reduction (`"mean_with_sample_weight"`:
            the mean over the rows a sample weight keeps).
    """
    if task in ("multiclass", "binary"):
        return (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction=reduction),
                [keras.metrics.CategoricalAccuracy(name="accuracy")])
    if task == "multilabel":
        return (keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing, reduction=reduction),
                [keras.metrics.BinaryAccuracy(name="accuracy")])
    if task == "regression":
        if label_smoothing:
            raise ValueError(f"label_smoothing applies to classification; a regression model takes none. "
                             f"Received: label_smoothing={label_smoothing}")
        return keras.losses.MeanSquaredError(reduction=reduction), [keras.metrics.MeanAbsoluteError(name="mae")]
    raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}.")


def task_of(model):
    """Reads the task back from a model's output layers (for models loaded from disk, and ensembles).

    Every Dense layer named `"predictions"` (one per member of an ensemble)
    is read; a model without one is taken to output class probabilities.

    Raises:
        ValueError: the model mixes heads of different tasks, or is a multi-task model (see `tasks_of`).
    """
    if tasks_of(model) is not None:
        raise ValueError(f"Model {model.name!r} is a multi-task model with the targets {list(model.output)}: it has "
                         "one task per target (kerasft.heads.tasks_of), not one task.")
    return _task_of_layers(model)


def tasks_of(model):
    """Reads each target's task back from a multi-task model: `{target: task}` in output order, else None.

    A multi-task model (`build_classifier(data=multi_task_data)`) outputs a dict
    of one tensor per target, each from the `"<target>_head"` inside its `"head"`
    (see `build_multi_head`); any other model gives None.
    """
    heads = target_heads(model)
    return None if heads is None else {target: _task_of_layers(head) for target, head in heads.items()}


def target_heads(model):
    """A multi-task model's `{target: its "<target>_head" model}` in output order, else None (see `tasks_of`)."""
    if not isinstance(getattr(model, "output", None), dict):
        return None
    head = next((layer for layer in keras_internals.flatten_layers(model)
                 if layer.name == "head" and isinstance(layer, keras.Model)), None)
    if head is None:
        raise ValueError(f"Model {model.name!r} outputs a dict {list(model.output)} but holds no 'head' model with "
                         "one '<target>_head' per output: not a kerasft multi-task model.")
    return {target: head.get_layer(f"{target}_head") for target in model.output}


def _task_of_layers(model):
    found = {(_TASK_OF_ACTIVATION.get(keras.activations.serialize(layer.activation), "multiclass"), layer.units)
             for layer in keras_internals.flatten_layers(model)
             if isinstance(layer, keras.layers.Dense) and layer.name == "predictions"}
    tasks = {task for task, _ in found}
    if len(tasks) > 1:
        raise ValueError(f"The model mixes heads of different tasks: {sorted(tasks)}. Expected one task.")
    if not found:
        return "multiclass"
    task, units = found.pop()
    return "binary" if task == "multiclass" and units == 2 else task
