"""Every private name of Keras, KerasHub and KerasTuner that kerasft uses, in one place.

Each use says why the public API does not suffice and the version it was
checked on (`CHECKED_ON`). `tests/test_keras_internals.py` checks every name
still resolves and fails with a clear message when an installed version moves
away from `CHECKED_ON`, so a Keras upgrade breaks here, in a list, not in five
modules at once.
"""

import contextlib
import json
import warnings

import keras
import keras_tuner
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer
from keras.src.saving import saving_lib
from keras_tuner.src import utils as keras_tuner_utils
from keras_tuner.src.backend import io as keras_tuner_io
from keras_tuner.src.distribute import utils as keras_tuner_distribute
from keras_tuner.src.engine import tuner_utils

# The versions these internals were read from and tested on.
CHECKED_ON = {"keras": "3.15.1", "keras_hub": "0.32.0", "keras_tuner": "1.4.8", "tensorflow": "2.21.0"}


# === Layers and graphs (Keras) ===


def flatten_layers(layer, include_self=False):
    """Every layer nested in `layer`, depth first, including those held as attributes (a KerasHub
    preprocessor's tokenizer) that `Model.layers` does not list.

    Public `Model.layers` lists only the direct children of a functional model.
    """
    return list(layer._flatten_layers(include_self=include_self))


def producer(tensor):
    """`(operation, node_index)` that produced a symbolic KerasTensor of a functional graph.

    Keras 3 exposes no public graph walk below `Model.get_layer`; `_keras_history` is how its
    own `Functional` finds a tensor's producer.
    """
    operation, node_index, _ = tensor._keras_history
    return operation, node_index


def node_inputs(operation, node_index):
    """The symbolic tensors a layer's `node_index`-th call took (positional and keyword)."""
    return operation._inbound_nodes[node_index].input_tensors


def call_keyword(layer, name, node_index=0):
    """The symbolic tensor passed as keyword `name` in a layer's call (e.g. a pooling's `mask`), or None."""
    return layer._inbound_nodes[node_index].arguments.kwargs.get(name)


# === KerasHub tokenizers ===


def carry_vocabulary(layer):
    """Makes every KerasHub WordPiece tokenizer in a layer kerasft itself built write its vocabulary
    into its config, for good (see `vocabulary_in_config`; use that on a caller's model).

    Returns:
        The tokenizers patched now (those already patched are left out).
    """
    patched = [tokenizer for tokenizer in flatten_layers(layer, include_self=True)
               if hasattr(tokenizer, "get_vocabulary") and "get_config" not in vars(tokenizer)]
    for tokenizer in patched:
        base_get_config = tokenizer.get_config

        def get_config(tokenizer=tokenizer, base_get_config=base_get_config):
            config = base_get_config()
            if config.get("vocabulary", "") is None:
                config["vocabulary"] = list(tokenizer.get_vocabulary())
            return config

        object.__setattr__(tokenizer, "get_config", get_config)
    return patched


@contextlib.contextmanager
def vocabulary_in_config(layer):
    """While inside, every KerasHub WordPiece tokenizer in `layer` writes its vocabulary into its config.

    KerasHub saves vocabularies as assets, which `keras.models.load_model` restores only after it
    has rebuilt the graph; rebuilding a graph whose input is raw strings runs the tokenizer, which then
    has no vocabulary. With the vocabulary in the config, the `.keras` file (or a clone made from the
    config) reloads with plain Keras. `get_config` is replaced on the instance (the saved class stays
    KerasHub's own) and put back on exit, so a caller's model is left as it was.

    Args:
        layer: keras.Layer. A classifier, an ensemble or a text preprocessor.
    """
    patched = carry_vocabulary(layer)
    try:
        yield
    finally:
        for tokenizer in patched:
            object.__delattr__(tokenizer, "get_config")


# === Training ===


def start_next_fit_at(model, epoch):
    """Makes the model's next `fit` start at `epoch` (None: where its caller says), as a callback that restores
    a checkpoint must.

    `fit(initial_epoch=)` belongs to the caller; Keras' own `BackupAndRestore` sets the private
    `_initial_epoch`, which `fit` reads after `on_train_begin`.
    """
    model._initial_epoch = epoch


# === KerasTuner ===


def has_chief_oracle():
    """True in a worker of KerasTuner's distributed search (`KERASTUNER_*` environment); no public accessor."""
    return keras_tuner_distribute.has_chief_oracle()


def hyperband_schedule_size(max_epochs, factor):
    """The number of trials in one full Hyperband iteration of `max_epochs` and `factor`.

    KerasTuner computes bracket sizes only in private oracle methods.
    """
    oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=max_epochs, factor=factor)
    return sum(oracle._get_size(bracket, round_)
               for bracket in range(oracle._get_num_brackets()) for round_ in range(bracket + 1))


def tuner_callbacks(callbacks):
    """Splits the callbacks KerasTuner hands to `HyperModel.fit` into the user's and a function that saves the
    trial model where KerasTuner reloads it from.

    KerasTuner adds two private callbacks: `SaveBestEpoch` (the trial model at its best epoch, by the
    objective) and `TunerCallback` (epoch metrics to the oracle). A kerasft trial runs a two-phase recipe
    whose result is its final, restored model, so that model is saved once, at the end, without the
    optimizer's slots (they would triple the file; KerasTuner never reads them back), and the oracle gets
    its final metrics from `fit`'s return value.

    Returns:
        `(callbacks, save)`: the other callbacks, and `save(model)` (None when KerasTuner passed no checkpoint).
    """
    checkpoints = [c for c in callbacks if isinstance(c, tuner_utils.SaveBestEpoch)]
    others = [c for c in callbacks if not isinstance(c, (tuner_utils.SaveBestEpoch, tuner_utils.TunerCallback))]
    if not checkpoints:
        return others, None

    def save(model):
        # As KerasTuner's own: non-chief workers of a multi-worker strategy write to a temporary path.
        path = keras_tuner_io.write_filepath(checkpoints[0].filepath, model.distribute_strategy)
        optimizer = getattr(model, "optimizer", None)  # set only once the model was compiled
        saving_lib.save_weights_only(model, path, objects_to_skip=[optimizer] if optimizer else None)
        keras_tuner_io.remove_temp_dir_with_filepath(path, model.distribute_strategy)

    return others, save


@contextlib.contextmanager
def atomic_tuner_state():
    """While inside, KerasTuner's JSON state files (oracle.json, each trial.json) on a local disk are written
    beside and renamed into place.

    KerasTuner writes them in place through its private `utils.save_json`, so a search killed while it writes
    leaves an empty oracle.json that no resume can read (seen: a search killed with SIGKILL on a loaded
    machine; the resume failed in json.loads). Remote paths (`gs://...`) keep KerasTuner's own writer.
    """
    from kerasft import paths

    original = keras_tuner_utils.save_json

    def save_json(path, obj):
        if "://" in str(path):
            return original(path, obj)
        text = json.dumps(obj)
        paths.write_atomic(path, text)
        return text

    keras_tuner_utils.save_json = save_json
    try:
        yield
    finally:
        keras_tuner_utils.save_json = original


class TunerHooks:
    """Mixin for a KerasTuner `Tuner`: a public hook, `building()`, entered while KerasTuner builds (or reloads)
    a trial model in its private `_build_hypermodel`."""

    @contextlib.contextmanager
    def building(self):
        yield

    def _build_hypermodel(self, hp):
        with self.building():
            return super()._build_hypermodel(hp)


# === tf.distribute and the Keras 3 multi-worker fix ===


def in_multi_worker_mode(strategy):
    """True for a strategy that spans several workers; TensorFlow exposes it only on `extended`'s private method."""
    return strategy.extended._in_multi_worker_mode()


# MultiWorkerMirroredStrategy fails in Keras 3 `fit` (https://github.com/keras-team/keras/issues/20585):
# 1. `_maybe_symbolic_build` reduces the first distributed batch with `strategy.reduce(..., axis=None)`,
#    which CollectiveAllReduce cannot do for a structure of PerReplica inputs ("Attempt to convert a
#    value (PerReplica...)"). The symbolic build only needs shapes and dtypes: the local first replica's
#    batch gives them.
# 2. `reduce_per_replica` reduces every metric with `strategy.reduce("MEAN", v, axis=0)`, which fails on
#    scalar metrics ("Invalid reduction dimension 0 for input with 0 dimensions"): scalars reduce with
#    axis=None.
# The patch is applied only while kerasft trains under such a strategy, and undone after.


@contextlib.contextmanager
def multi_worker_fix():
    """Patches Keras' TensorFlow trainer for `MultiWorkerMirroredStrategy` while inside (see above)."""
    if keras.__version__ != CHECKED_ON["keras"]:
        warnings.warn(f"kerasft: the MultiWorkerMirroredStrategy fix was written for Keras {CHECKED_ON['keras']}; "
                      f"Keras {keras.__version__} is installed and may not need it "
                      "(https://github.com/keras-team/keras/issues/20585). Applying it anyway.")
    original_reduce = tf_trainer.reduce_per_replica
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and in_multi_worker_mode(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0), values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not in_multi_worker_mode(self.distribute_strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tf.nest.map_structure(
                lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, batch)
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original_reduce
        tf_trainer.TensorFlowTrainer._maybe_symbolic_build = original_build
