"""Classification and regression heads that sit on a backbone's pooled features."""

import dataclasses

import keras

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

    def build(self, feature_dim, num_outputs, task):
        """Returns the head as a functional `keras.Model` named `"head"`: features -> outputs.

        Args:
            feature_dim: int. Size of the pooled feature vector.
            num_outputs: int. Classes (or 1 for regression).
            task: str. One of `"multiclass"`, `"binary"`, `"multilabel"`, `"regression"`.
        """
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}.")
        # === Functional Model ===
        features = keras.Input(shape=(feature_dim,), name="features")
        x = features
        for i, width in enumerate(self.units):
            if self.dropout:
                x = keras.layers.Dropout(self.dropout, name=f"head_dropout_{i}")(x)
            x = keras.layers.Dense(width, activation=self.activation, name=f"head_dense_{i}")(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, name="head_dropout_out")(x)
        # The output layer stays float32 under mixed precision.
        outputs = keras.layers.Dense(
            num_outputs, activation=_OUTPUT_ACTIVATION[task], dtype="float32", name="predictions"
        )(x)
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


def loss_and_metrics(task):
    """Returns the `(loss, metrics)` that fit the output layer of `task`."""
    if task in ("multiclass", "binary"):
        return keras.losses.SparseCategoricalCrossentropy(), [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if task == "multilabel":
        return keras.losses.BinaryCrossentropy(), [keras.metrics.BinaryAccuracy(name="accuracy")]
    if task == "regression":
        return keras.losses.MeanSquaredError(), [keras.metrics.MeanAbsoluteError(name="mae")]
    raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}.")


def task_of(model):
    """Reads the task back from a model's output layers (for models loaded from disk, and ensembles).

    Every Dense layer named `"predictions"` (one per member of an ensemble)
    is read; a model without one is taken to output class probabilities.

    Raises:
        ValueError: the model mixes heads of different tasks.
    """
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
