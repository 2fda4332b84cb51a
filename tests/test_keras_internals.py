"""The private Keras / KerasHub / KerasTuner names kerasft relies on still exist, at the versions checked."""

import importlib.metadata
import json
import os

import keras
import keras_tuner
import pytest
import tensorflow as tf

import kerasft as kft
from kerasft import keras_internals

DISTRIBUTIONS = {"keras": "keras", "keras_hub": "keras-hub", "keras_tuner": "keras-tuner", "tensorflow": "tensorflow"}


@pytest.mark.parametrize("module", sorted(keras_internals.CHECKED_ON))
def test_installed_versions_are_the_ones_the_internals_were_checked_on(module):
    installed = importlib.metadata.version(DISTRIBUTIONS[module])
    checked = keras_internals.CHECKED_ON[module]
    assert installed == checked, (
        f"{module} is {installed} here but kerasft/keras_internals.py was checked on {checked}. Re-check every "
        "private name used there against the new version (this file's other tests list them), then update "
        "keras_internals.CHECKED_ON.")


def test_every_private_name_still_resolves():
    from keras.src.backend.tensorflow import trainer
    from keras.src.saving import saving_lib
    from keras_tuner.src import utils as keras_tuner_utils
    from keras_tuner.src.backend import io
    from keras_tuner.src.distribute import utils
    from keras_tuner.src.engine import stateful, tuner_utils

    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2)(inputs)
    model = keras.Model(inputs, outputs)
    missing = [name for owner, name in [
        (model, "_flatten_layers"), (outputs, "_keras_history"), (model.layers[1], "_inbound_nodes"),
        (saving_lib, "save_weights_only"), (io, "write_filepath"), (io, "remove_temp_dir_with_filepath"),
        (utils, "has_chief_oracle"), (tuner_utils, "SaveBestEpoch"), (tuner_utils, "TunerCallback"),
        (keras_tuner.Tuner, "_build_hypermodel"),
        (keras_tuner.oracles.HyperbandOracle, "_get_size"), (keras_tuner.oracles.HyperbandOracle, "_get_num_brackets"),
        (trainer, "reduce_per_replica"), (trainer.TensorFlowTrainer, "_maybe_symbolic_build"),
        (tf.distribute.get_strategy().extended, "_in_multi_worker_mode"), (model, "_initial_epoch"),
        (keras_tuner_utils, "save_json"), (stateful, "utils"),
    ] if not hasattr(owner, name)]
    assert not missing, f"private names gone from the installed versions: {missing}"


def test_graph_walk_finds_a_layers_inputs_and_keywords():
    tokens = keras.Input((4, 2), name="tokens")
    mask = keras.Input((4,), dtype="bool", name="mask")
    pooled = keras.layers.GlobalAveragePooling1D(name="pooling")(tokens, mask=mask)
    operation, node_index = keras_internals.producer(pooled)
    assert operation.name == "pooling"
    assert [t.name for t in keras_internals.node_inputs(operation, node_index)] == ["tokens", "mask"]
    assert keras_internals.producer(keras_internals.call_keyword(operation, "mask"))[0].name == "mask"
    assert keras_internals.hyperband_schedule_size(max_epochs=9, factor=3) > 1


def test_tuner_callbacks_keeps_the_users_and_saves_where_keras_tuner_reloads(tmp_path):
    from keras_tuner.src.engine import tuner_utils

    user = keras.callbacks.History()
    checkpoint = tuner_utils.SaveBestEpoch(keras_tuner.Objective("val_loss", "min"), str(tmp_path / "w.weights.h5"))
    others, save = keras_internals.tuner_callbacks([user, checkpoint])
    assert others == [user]
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    save(model)
    copy = keras.Model.from_config(model.get_config())
    copy.load_weights(tmp_path / "w.weights.h5")
    assert all((a == b).all() for a, b in zip(copy.get_weights(), model.get_weights()))


def test_vocabulary_in_config_leaves_the_callers_tokenizer_as_it_was(tiny_bert):
    model = kft.build_classifier("tiny_bert", num_classes=2)
    tokenizer = model.get_layer("preprocessor").tokenizer
    object.__delattr__(tokenizer, "get_config")  # as a model loaded from disk: KerasHub's own get_config
    assert tokenizer.get_config().get("vocabulary") is None
    with keras_internals.vocabulary_in_config(model):
        assert tokenizer.get_config()["vocabulary"][:3] == ["[PAD]", "[UNK]", "[CLS]"]
    assert "get_config" not in vars(tokenizer)
    assert tokenizer.get_config().get("vocabulary") is None


def test_kerastuner_state_is_written_whole_while_a_search_runs(tmp_path):
    from keras_tuner.src import utils as keras_tuner_utils
    from keras_tuner.src.engine import stateful

    original = keras_tuner_utils.save_json
    state = tmp_path / "oracle.json"
    with keras_internals.atomic_tuner_state():
        assert stateful.utils.save_json is not original  # what Oracle.save and Trial.save call
        stateful.utils.save_json(str(state), {"trials": [1, 2]})
    assert json.loads(state.read_text()) == {"trials": [1, 2]} and os.listdir(tmp_path) == ["oracle.json"]
    assert keras_tuner_utils.save_json is original
