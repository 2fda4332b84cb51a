"""Hyperparameter search over transfer-learning choices with KerasTuner, made fast by a feature cache.

```python
search = kft.tune(data, backbone="minilm_l6", tuner="hyperband", max_trials=20, directory="runs/bbc")
print(search.summary())
model = search.best_models(1)[0]   # a raw-input classifier, as build_classifier makes it
```

A trial trains only the part of the classifier above its cut
(`kerasft.features.split_network`): the head when `unfreeze="frozen"`, the
top N blocks + pooling + head when `unfreeze="top:N"`. Below the cut nothing
trains, so what the bottom outputs is computed once for every trial
(`cache_features=True`) or again on every pass (`cache_features=False`, the
only path where image augmentation can apply, since it changes the input of
the bottom). KerasTuner checkpoints that trial model, so no checkpoint holds
the frozen backbone (a head is kilobytes; a 22M-parameter backbone would be
~90 MB per trial), and `best_models()` puts a trial's weights back on the
search's backbone: the full classifier, computing the same function.

The search directory keeps KerasTuner's layout (so `overwrite=False` resumes
and KerasTuner's chief/worker mode works) plus kerasft's files:
```
<directory>/<project_name>.lock      held (flock) while a process searches; names its pid
<directory>/<project_name>/
    oracle.json  tuner0.json          KerasTuner's state
    trial_<id>/  trial.json  checkpoint.weights.h5 (the trial model only)  kerasft_trial.json
    kerasft_search.json               what the search is for; another setup is refused
    results.md  results.csv  results.png
    features/                         the feature cache, when it is on disk
```
"""

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import re
import resource
import shutil
import socket
import time
import warnings
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from kerasft import augment, backbones, distribute, features, heads, keras_internals, models, paths, report, training


class TuningError(ValueError):
    """An argument to `tune`, the search space or the search directory is wrong."""


# === The search space ===
#
# A rule is a value (fixed), a list (one of these) or a tuple (min, max) or
# (min, max, "log") (a range). Each entry: default rule, check of one value,
# what the check wants.
_HYPERPARAMETERS = {
    "unfreeze": (["frozen", "top:1", "top:2"], lambda v: v == "frozen" or re.fullmatch(r"top:[1-9]\d*", str(v)),
                 '"frozen" or "top:N" with N >= 1'),
    "depth": ([0, 1, 2], lambda v: _is_int(v) and v >= 0, "hidden layers of the head, an integer >= 0"),
    "units": ([64, 128, 256, 512], lambda v: _is_int(v) and v >= 1, "width of the head, an integer >= 1"),
    "dropout": ((0.0, 0.5), lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "learning_rate": ((1e-4, 1e-2, "log"), lambda v: _is_number(v) and v > 0, "a number > 0"),
    "block_learning_rate": ((1e-5, 1e-3, "log"), lambda v: _is_number(v) and v > 0, "a number > 0"),
    "weight_decay": ([0.0, 1e-4, 1e-3, 1e-2], lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "label_smoothing": ([0.0, 0.1, 0.2], lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "batch_size": ([16, 32, 64], lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "augmentation": ([0.0, 0.1, 0.2, 0.3], lambda v: _is_number(v) and 0 <= v <= 1,
                     "a strength in [0, 1]"),
}
_INTEGER = ("depth", "units", "batch_size")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _applicable(modality, task, cached):
    """The hyperparameters a search of this kind tunes, and why the others do not apply."""
    excluded = {}
    if modality not in ("image", "audio"):
        excluded["augmentation"] = "augmentation applies to images and audio only"
    elif cached:
        excluded["augmentation"] = ("augmentation changes the backbone's input on every pass, so it cannot use "
                                    "the feature cache: pass cache_features=False to tune it")
    if task == "regression":
        excluded["label_smoothing"] = "label smoothing applies to classification only"
    return [name for name in _HYPERPARAMETERS if name not in excluded], excluded


def search_space(space=None, modality="text", task="multiclass", cached=True, num_blocks=None):
    """Returns the search space as `{name: rule}`: the defaults, narrowed or replaced by `space`.

    A rule is a value (fixed), a list (one of these values) or a tuple
    `(min, max)` / `(min, max, "log")` (a range). `units` applies when
    `depth > 0`, `block_learning_rate` when `unfreeze` is `"top:N"`.

    Args:
        space: dict or None. Rules that replace the defaults, e.g.
            `{"unfreeze": "frozen", "learning_rate": (1e-3, 3e-2, "log"), "units": [128, 256]}`.
        modality: str. `"text"`, `"image"` or `"audio"` (`augmentation` is for images and audio).
        task: str. The data's task (`label_smoothing` is for classification).
        cached: bool. Whether trials use the feature cache (then no `augmentation`).
        num_blocks: int or None. Blocks of the backbone, to check `"top:N"`.

    Raises:
        TuningError: an unknown name, an empty list, a range whose min exceeds
            its max, or a value out of its domain.
    """
    space = {} if space is None else space
    if not isinstance(space, dict):
        raise TuningError(f"space must be a dict of name -> value, list or (min, max) tuple. "
                          f"Received: {type(space).__name__}")
    names, excluded = _applicable(modality, task, cached)
    for name in space:
        if name in excluded:
            raise TuningError(f"space[{name!r}] does not apply here: {excluded[name]}.")
        if name not in _HYPERPARAMETERS:
            raise TuningError(f"Unknown hyperparameter {name!r} in space=. Known: {', '.join(names)}.")
    rules = {name: space.get(name, _HYPERPARAMETERS[name][0]) for name in names}
    for name, rule in rules.items():
        rules[name] = _checked_rule(name, rule, num_blocks)
    return rules


def _checked_rule(name, rule, num_blocks):
    _, check, expected = _HYPERPARAMETERS[name]
    where = f"space[{name!r}]"
    if isinstance(rule, tuple):
        if name == "unfreeze":
            raise TuningError(f"{where} takes a value or a list of values, not a range. Received: {rule!r}")
        if len(rule) not in (2, 3) or (len(rule) == 3 and rule[2] not in ("linear", "log")):
            raise TuningError(f"{where} as a range is (min, max) or (min, max, 'log'). Received: {rule!r}")
        low, high = rule[:2]
        for value in (low, high):
            if not check(value) or (name in _INTEGER and not _is_int(value)):
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
        if name == "unfreeze" and num_blocks is not None and value != "frozen" and int(value[4:]) > num_blocks:
            raise TuningError(f"{where} asks for {value!r} but the backbone has {num_blocks} blocks: "
                              f"use top:1 .. top:{num_blocks}.")
    values = _plain(name, values)
    return values if isinstance(rule, list) else values[0]


def _plain(name, values):
    """Python ints or floats (KerasTuner wants one type per Choice; JSON takes no numpy scalars)."""
    if name == "unfreeze":
        return list(values)
    return [int(v) if name in _INTEGER else float(v) for v in values]


def _discrete(rule):
    """The values a discrete rule can take (a list for an integer range)."""
    if isinstance(rule, tuple):
        return list(range(rule[0], rule[1] + 1))
    return rule if isinstance(rule, list) else [rule]


def _declare(hp, name, rule):
    if isinstance(rule, list):
        return hp.Choice(name, rule)
    if isinstance(rule, tuple):
        sampling = rule[2] if len(rule) == 3 else "linear"
        if name in _INTEGER:
            return hp.Int(name, rule[0], rule[1], sampling=sampling)
        return hp.Float(name, float(rule[0]), float(rule[1]), sampling=sampling)
    return hp.Fixed(name, rule)


# === The hypermodel ===


class TransferHyperModel(keras_tuner.HyperModel):
    """The KerasTuner HyperModel of a transfer-learning search on one backbone and one TaskData.

    `build(hp)` declares the whole space and returns the trial model,
    compiled: the classifier above the trial's cut (`features.split_network`)
    with a fresh head of the trial's shape, taking what the frozen bottom
    outputs. `fit(hp, model, ...)` trains it on those outputs, cached or
    recomputed, passing `callbacks` and the other keyword arguments through
    to `model.fit` (KerasTuner's contract), and returns the History.
    `full_model(hp, model)` puts a trained trial model back on the backbone.

    The backbone is built once, here; every trial starts from its weights.

    Args:
        data: TaskData. Trials train on `train` and report on `validation`.
        backbone: str or BackboneSpec. As `kft.build_classifier` takes it.
        space: dict or None. Narrows or replaces the default space (see
            `search_space`).
        cache_features: bool, str or Path. True: the bottom's outputs at every
            cut in the space are computed once, in memory; a folder: the
            same, on disk there, reused by later searches whose key matches;
            False: recomputed on every pass (the only path with image
            augmentation).
        spill_directory: str, Path or None. Where a cut too big for memory
            goes (default `kerasft.paths.user_cache_dir("features")`).
        epochs: int. Epochs of a trial unless the tuner says otherwise.
        seed: int. Seeds the backbone's random initialization (pretrained=False),
            the heads and the shuffling.
        pretrained: bool. Load the backbone's pretrained weights.
        image_size: tuple or None. As `kft.build_classifier`.
        sequence_length: int or None. As `kft.build_classifier`.
        strategy: tf.distribute.Strategy or None. Models are built and
            trained under it; trial batch sizes are global.
        precision: str. Dtype policy of the models (see `kft.build_classifier`).
        scale_batch: bool. Multiply each trial's batch size by the replica count.
        verbose: int. 1 prints how the feature cache was made.
    """

    def __init__(self, data, backbone, space=None, cache_features=True, spill_directory=None, epochs=10, seed=0,
                 pretrained=True, image_size=None, sequence_length=None, strategy=None, precision="auto",
                 scale_batch=False, verbose=0):
        super().__init__(name="transfer")
        self.data, self.epochs, self.seed, self.verbose = data, epochs, seed, verbose
        self.spec = backbones.get(backbone)
        self.cached = cache_features is not False
        self.cache_directory = None if isinstance(cache_features, bool) else Path(cache_features)
        self.spill_directory = spill_directory
        self.strategy, self.precision, self.scale_batch = strategy, precision, scale_batch
        self._build_args = dict(pretrained=False, image_size=image_size, sequence_length=sequence_length,
                                strategy=strategy, precision=precision)
        # Seeded, so a random-init backbone is the same in every process (resumed and distributed searches).
        keras.utils.set_random_seed(seed)
        self.reference = models.build_classifier(self.spec, data=data, **{**self._build_args, "pretrained": pretrained})
        backbone_model = self.reference.get_layer("network").get_layer("backbone")
        num_blocks = len(backbones.blocks(backbone_model, self.spec.block_pattern)[1])
        self.rules = search_space(space, data.modality, data.task, self.cached, num_blocks)
        self.cuts = sorted(_discrete(self.rules["unfreeze"]), key=lambda c: (c != "frozen", c))
        self._tops, self._bottoms, self._preprocessed = {}, {}, {}
        self._cache = None

    # --- the space ---

    def declare_hyperparameters(self, hp):
        self.values(hp)

    def values(self, hp):
        """Declares the space on `hp` and returns this trial's `{name: value}` (inactive ones are None).

        Args:
            hp: HyperParameters.
        """
        rules = self.rules
        values = {"unfreeze": _declare(hp, "unfreeze", rules["unfreeze"]),
                  "depth": _declare(hp, "depth", rules["depth"])}
        wide = [d for d in _discrete(rules["depth"]) if d > 0]
        values["units"] = None
        if wide:
            with hp.conditional_scope("depth", wide):
                values["units"] = _declare(hp, "units", rules["units"])
        values["dropout"] = _declare(hp, "dropout", rules["dropout"])
        values["learning_rate"] = _declare(hp, "learning_rate", rules["learning_rate"])
        unfrozen = [c for c in _discrete(rules["unfreeze"]) if c != "frozen"]
        values["block_learning_rate"] = None
        if unfrozen:
            with hp.conditional_scope("unfreeze", unfrozen):
                values["block_learning_rate"] = _declare(hp, "block_learning_rate", rules["block_learning_rate"])
        for name in ("weight_decay", "label_smoothing", "batch_size", "augmentation"):
            values[name] = _declare(hp, name, rules[name]) if name in rules else None
        return values

    # --- the trial model ---

    def _top(self, cut):
        """The reference classifier above `cut`, sharing its layers: the template trial models copy."""
        if cut not in self._tops:
            self._tops[cut] = features.split_network(self.reference, cut, self.spec.block_pattern)[1]
        return self._tops[cut]

    def _head(self, values):
        return heads.Head(units=(values["units"],) * values["depth"], dropout=values["dropout"])

    def build(self, hp):
        """Declares the space and returns the trial model, compiled.

        Args:
            hp: HyperParameters.

        Returns:
            A `keras.Model` from the inputs at the trial's cut (a dict, as
            `datasets` gives them) to outputs: a copy of the backbone's top N
            blocks with their pretrained weights (`"backbone"`), `"pooling"`,
            and a new head (`"head"`). It holds no frozen weight, so its
            checkpoint is small.
        """
        values = self.values(hp)
        with distribute.precision_scope(self.precision, self.strategy):
            return self._trial_model(values)

    def _trial_model(self, values):
        keras.utils.set_random_seed(self.seed)
        cut = values["unfreeze"]
        template = self._top(cut)
        head = self._head(values).build(template.get_layer("head").input.shape[-1], self.data.num_classes,
                                        self.data.task)

        def clone(layer):
            return head if layer.name == "head" else layer.__class__.from_config(layer.get_config())

        model = keras.models.clone_model(template, clone_function=clone)
        learning_rate, weight_decay = values["learning_rate"], values["weight_decay"]
        if cut == "frozen":
            optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
        else:
            upper = model.get_layer("backbone")
            upper.set_weights(template.get_layer("backbone").get_weights())
            upper.trainable = True
            for layer in keras_internals.flatten_layers(upper):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False  # as in every kerasft classifier
            factor = values["block_learning_rate"] / learning_rate
            optimizer = training.DiscriminativeAdam({id(v): factor for v in upper.trainable_weights},
                                                    learning_rate=learning_rate, weight_decay=weight_decay)
        loss, metrics = _loss_and_metrics(self.data.task, values["label_smoothing"] or 0.0)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        # Slots made eagerly here, not lazily inside the traced train step, where TensorFlow keeps each
        # variable's initializer graph alive after the model is gone (~1.5 MB a trial).
        optimizer.build(model.trainable_variables)
        return model

    def full_model(self, hp, model):
        """Returns the raw-input classifier a trained trial model stands for.

        Args:
            hp: HyperParameters. The trial's.
            model: keras.Model. The trial model, trained (or loaded from its checkpoint).

        Returns:
            A classifier as `kft.build_classifier` makes it (same structure
            and trainable setting), with the search's backbone weights and the
            trial's top blocks and head.
        """
        values = self.values(hp)
        classifier = models.build_classifier(self.spec, data=self.data, head=self._head(values),
                                             trainable=values["unfreeze"], **self._build_args)
        network = classifier.get_layer("network")
        backbone_model = network.get_layer("backbone")
        backbone_model.set_weights(self.reference.get_layer("network").get_layer("backbone").get_weights())
        if values["unfreeze"] != "frozen":
            for layer in model.get_layer("backbone").layers:
                if layer.weights:
                    backbone_model.get_layer(layer.name).set_weights(layer.get_weights())
        network.get_layer("head").set_weights(model.get_layer("head").get_weights())
        return classifier

    # --- training ---

    def fit(self, hp, model, *args, **kwargs):
        """Trains a trial model on the train split's inputs at its cut and scores it on validation.

        Args:
            hp: HyperParameters. The trial's.
            model: keras.Model. From `build(hp)`.
            *args: none: the data comes from the TaskData.
            **kwargs: passed to `model.fit` (`callbacks`, `epochs`,
                `initial_epoch`, `verbose`, ...).

        Returns:
            The `keras.callbacks.History`.
        """
        if args:
            raise TuningError("TransferHyperModel.fit takes its data from the TaskData it was made with; "
                              f"pass only keyword arguments (callbacks, epochs, ...). Received {len(args)} "
                              "positional arguments.")
        values = self.values(hp)
        batch_size = distribute.scaled_batch_size(values["batch_size"], self.strategy, self.scale_batch)
        train, validation = self.datasets(values["unfreeze"], batch_size, values["augmentation"] or 0.0)
        kwargs.setdefault("epochs", self.epochs)
        kwargs.setdefault("verbose", 0)
        with distribute.training_scope(self.strategy):
            return model.fit(train, validation_data=validation, shuffle=False, **kwargs)

    @property
    def feature_cache(self):
        """The `FeatureCache` of every cut in the space, computed on first use (None when uncached)."""
        if self.cached and self._cache is None:
            self._cache = features.FeatureCache(self.reference, self.data, cuts=self.cuts,
                                                directory=self.cache_directory,
                                                spill_directory=self.spill_directory,
                                                block_pattern=self.spec.block_pattern, verbose=self.verbose)
        return self._cache

    def datasets(self, cut, batch_size, augmentation=0.0):
        """Returns the `(train, validation)` datasets a trial fits on: inputs at its cut, and targets.

        Args:
            cut: str. The trial's `unfreeze` value.
            batch_size: int. Training batch size (validation batches hold 64).
            augmentation: float. Image or audio augmentation strength (uncached path only).
        """
        if self.cached:
            train = self.feature_cache.dataset(cut, "train", batch_size, shuffle=True, seed=self.seed)
            validation = self.feature_cache.dataset(cut, "validation", 64)
        else:
            if cut not in self._bottoms:
                self._bottoms[cut] = features.Bottom(self.reference, [cut], self.spec.block_pattern)
            bottom = self._bottoms[cut]
            size = self.data.size("train")
            # Same order as the cached path: a seeded shuffle of the whole split.
            train = (self._preprocessed_split("train").unbatch()
                     .apply(tf.data.experimental.assert_cardinality(size))
                     .shuffle(size, seed=self.seed).batch(batch_size))
            if augmentation:
                augmenter = augment.augmenter(self.reference, augmentation, self.seed)
                train = train.map(lambda x, y: (augmenter(x), y))  # sequential: a seed repeats a run
            train = bottom.map(train, cut).prefetch(tf.data.AUTOTUNE)
            validation = bottom.map(self._preprocessed_split("validation"), cut).prefetch(tf.data.AUTOTUNE)
        return self._targets(train), self._targets(validation)

    def _preprocessed_split(self, split):
        """A split preprocessed once for every trial (tf.data's cache is shared by datasets built on it)."""
        if split not in self._preprocessed:
            self._preprocessed[split] = features.preprocess(self.reference, getattr(self.data, split), 64,
                                                            num_examples=self.data.size(split))
        return self._preprocessed[split]

    def _targets(self, dataset):
        task, num_classes = self.data.task, self.data.num_classes
        if task in ("multiclass", "binary"):
            return dataset.map(lambda x, y: (x, tf.one_hot(tf.cast(y, "int32"), num_classes)))
        return dataset.map(lambda x, y: (x, tf.cast(y, "float32")))


def _loss_and_metrics(task, label_smoothing):
    """The trial's loss: one-hot targets for classification, so labels can be smoothed."""
    if task in ("multiclass", "binary"):
        return (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                [keras.metrics.CategoricalAccuracy(name="accuracy")])
    if task == "multilabel":
        return (keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
                [keras.metrics.BinaryAccuracy(name="accuracy")])
    return heads.loss_and_metrics(task)


# === The tuners ===


class _TransferTuner(keras_internals.TunerHooks):
    """What kerasft adds to a KerasTuner tuner: full classifiers back, a line per trial, result files,
    best-epoch checkpoints without optimizer slots."""

    def __init__(self, *args, verbose=1, **kwargs):
        self._verbose = verbose
        self._started, self._epochs = {}, {}
        super().__init__(*args, **kwargs)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._started[trial.trial_id] = time.time()

    def run_trial(self, trial, *args, **kwargs):
        histories = super().run_trial(trial, *args, **kwargs)
        self._epochs[trial.trial_id] = sum(len(h.epoch) for h in histories)
        return histories

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        record = {
            "seconds": round(time.time() - self._started.pop(trial.trial_id, time.time()), 3),
            "epochs": self._epochs.pop(trial.trial_id, 0),
            "features": "cached" if self.hypermodel.cached else "recomputed",
            "tuner_id": self.tuner_id,  # which worker of a distributed search ran it
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        paths.write_atomic(Path(self.get_trial_dir(trial.trial_id)) / "kerasft_trial.json", json.dumps(record))
        rows = _rows(self.project_dir, self.hypermodel.rules, self.oracle.objective.name)
        if self._verbose:
            print(_trial_line(rows, trial, self.oracle.objective), flush=True)
        _write_tables(self.project_dir, rows)

    def building(self):
        return _no_optimizer_slots_warning()  # Hyperband loads the checkpoint of the trial it continues here

    def load_model(self, trial):
        with _no_optimizer_slots_warning():
            model = super().load_model(trial)
        return self.hypermodel.full_model(trial.hyperparameters, model)


@contextlib.contextmanager
def _no_optimizer_slots_warning():
    """Silences Keras' note that a checkpoint holds no optimizer slots (`keras_internals.SaveBestWeights`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        yield


class _Hyperband(_TransferTuner, keras_tuner.Hyperband):
    pass


class _RandomSearch(_TransferTuner, keras_tuner.RandomSearch):
    pass


class _BayesianOptimization(_TransferTuner, keras_tuner.BayesianOptimization):
    pass


_TUNERS = {"hyperband": _Hyperband, "random": _RandomSearch, "bayesian": _BayesianOptimization}


# === Results ===


def _rows(project_dir, rules, objective):
    """One row per trial found in the directory: id, status, hyperparameters, objective, epochs, time."""
    rows = []
    trials = [keras_tuner.engine.trial.Trial.load(str(p)) for p in Path(project_dir).glob("trial_*/trial.json")]
    # Ids are numbers, zero-padded to the digits of max_trials, which a resumed search may change.
    for trial in sorted(trials, key=lambda t: int(t.trial_id)):
        extra_path = Path(project_dir) / f"trial_{trial.trial_id}" / "kerasft_trial.json"
        extra = json.loads(extra_path.read_text()) if extra_path.exists() else {}
        hps = trial.hyperparameters
        row = {"trial": trial.trial_id, "status": trial.status}
        for name in rules:
            row[name] = hps.values.get(name) if name in hps.values and hps.is_active(name) else None
        row[objective] = trial.score
        row.update({key: extra.get(key) for key in ("epochs", "seconds", "features", "peak_rss_mb")})
        rows.append(row)
    return rows


def _format(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _trial_line(rows, trial, objective):
    trial_id = trial.trial_id
    row = next(r for r in rows if r["trial"] == trial_id)
    names = [k for k in row if k not in ("trial", "status", objective.name, "epochs", "seconds", "features",
                                         "peak_rss_mb") and row[k] is not None]
    settings = " ".join(f"{k}={_format(row[k])}" for k in names)
    time_taken = f"{row['epochs']} epochs, {row['seconds']:.1f}s, {row['features']} features"
    if row["status"] != "COMPLETED" or row[objective.name] is None:
        reason = (trial.message or "").strip().splitlines()[-1:] or ["no objective value"]
        return f"trial {trial_id} {row['status']} | {settings} | {time_taken} | {reason[0]}"
    scores = [r[objective.name] for r in rows if r[objective.name] is not None and r["status"] == "COMPLETED"]
    best = max(scores) if objective.direction == "max" else min(scores)
    return (f"trial {trial_id} | {settings} | {objective.name}={row[objective.name]:.4f} (best {best:.4f}) "
            f"| {time_taken}")


def _markdown(rows):
    if not rows:
        return "(no trials yet)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _write_tables(project_dir, rows):
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths.write_atomic(Path(project_dir) / "results.csv", buffer.getvalue())
    paths.write_atomic(Path(project_dir) / "results.md", _markdown(rows))


def _write_plot(project_dir, rows, objective):
    """results.png: the objective of each completed trial, and the best so far."""
    done = [r for r in rows if r["status"] == "COMPLETED" and r[objective.name] is not None]
    figure = report.new_figure((7, 4))
    axes = figure.add_subplot()
    trials = [r["trial"] for r in done]
    scores = [r[objective.name] for r in done]
    best = np.maximum.accumulate(scores) if objective.direction == "max" else np.minimum.accumulate(scores)
    axes.plot(range(len(done)), scores, "o", label=objective.name)
    axes.step(range(len(done)), best, where="post", label="best so far")
    axes.set_xticks(range(len(done)), trials, rotation=90 if len(done) > 15 else 0)
    axes.set_xlabel("trial")
    axes.set_ylabel(objective.name)
    axes.legend()
    figure.tight_layout()
    report.save_figure(figure, Path(project_dir) / "results.png")


class Search:
    """A search made by `tune`: its trials, their results and their models.

    Attributes:
        tuner: keras_tuner.Tuner. The KerasTuner tuner underneath (its oracle, trials, directory).
        hypermodel: TransferHyperModel.
        directory: Path. The search's project folder (KerasTuner's layout plus results files).
        objective: keras_tuner.Objective.
    """

    def __init__(self, tuner):
        self.tuner = tuner
        self.hypermodel = tuner.hypermodel
        self.directory = Path(tuner.project_dir)
        self.objective = tuner.oracle.objective

    def _best_trials(self, k):
        done = sum(r["status"] == "COMPLETED" for r in self.results())
        if not _is_int(k) or not 1 <= k <= max(done, 1) or not done:
            raise TuningError(f"k must be an integer from 1 to the number of completed trials ({done}). "
                              f"Received: k={k!r}")
        return self.tuner.oracle.get_best_trials(k)

    def best_models(self, k=1):
        """Returns the k best trials' classifiers, best first.

        Each is a full raw-input classifier, as `kft.build_classifier` makes it
        (same structure, its trial's trainable setting), with the search's
        backbone weights and the trial's best-epoch top blocks and head.
        Models are independent: no two share a layer.

        Args:
            k: int. How many (at most the completed trials).
        """
        return [self.tuner.load_model(trial) for trial in self._best_trials(k)]

    def best_hyperparameters(self, k=1):
        """Returns the k best trials' hyperparameters as dicts (active ones only), best first.

        Args:
            k: int. How many (at most the completed trials).
        """
        return [{name: value for name, value in trial.hyperparameters.values.items()
                 if not name.startswith("tuner/") and trial.hyperparameters.is_active(name)}
                for trial in self._best_trials(k)]

    def results(self):
        """Returns one dict per trial, in trial order.

        Keys: `trial`, `status`, every hyperparameter of the space (None when
        inactive), the objective (best epoch's value), `epochs` (run in this
        trial), `seconds`, `features` (`"cached"` or `"recomputed"`) and
        `peak_rss_mb` (the process's peak memory when the trial ended).
        """
        return _rows(self.directory, self.hypermodel.rules, self.objective.name)

    def summary(self):
        """Returns the results table (Markdown) with the best trial and where the files are."""
        rows = self.results()
        done = [r for r in rows if r["status"] == "COMPLETED" and r[self.objective.name] is not None]
        lines = [f"Search in {self.directory}: {len(done)} of {len(rows)} trials completed, "
                 f"objective {self.objective.name} ({self.objective.direction})."]
        if done:
            best = self.tuner.oracle.get_best_trials(1)[0]
            lines.append(f"Best: trial {best.trial_id}, {self.objective.name}={best.score:.4f}.")
        lines += ["", _markdown(rows), f"Files: results.md, results.csv, results.png in {self.directory}."]
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


# === tune() ===


def _hyperband_factor(epochs, max_trials):
    """Hyperband's reduction factor whose full schedule fits `max_trials` with the most halving rounds.

    KerasTuner's Hyperband starts with its most aggressive bracket, so with
    factor 3 and 10 epochs its first 12 trials all run 2 epochs: a search of
    10 trials would never halve. Returns `(factor, trials in one schedule)`;
    a schedule shorter than `max_trials` is repeated (Hyperband iterations).
    """
    counts = {factor: keras_internals.hyperband_schedule_size(epochs, factor)
              for factor in range(2, max(epochs, 2) + 1)}
    fitting = [factor for factor, count in counts.items() if count <= max_trials]
    factor = min(fitting) if fitting else min(counts, key=counts.get)
    return factor, counts[factor]


def _objective(objective, task):
    """Checks that a trial logs the objective; returns it as KerasTuner takes it."""
    metric = "mae" if task == "regression" else "accuracy"
    logged = ["loss", "val_loss", metric, f"val_{metric}"]
    if isinstance(objective, keras_tuner.Objective):
        names = [objective.name]
    elif isinstance(objective, (list, tuple)):
        names = [getattr(o, "name", o) for o in objective]
    else:
        names = [objective]
    unknown = [name for name in names if name not in logged]
    if unknown:
        raise TuningError(f"objective={objective!r} is not logged by a trial of a {task} search; "
                          f"a trial logs {', '.join(logged)}.")
    return objective


@contextlib.contextmanager
def _search_lock(path, verbose):
    """Holds `path` locked while a search runs; a second process gets a clear refusal.

    The kernel drops a flock when its process dies (even by kill -9), so a
    lock file left behind by a dead search is stale by construction: it is
    taken over, and the pid it names is reported.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown process"
        handle.close()
        raise TuningError(
            f"Another process is searching {path.with_suffix('')} ({holder}). Two searches writing one directory "
            "would corrupt it. Wait for it to finish, pick another directory or project_name, or share one "
            "search between processes with KerasTuner's distributed mode (KERASTUNER_TUNER_ID, "
            "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT)."
        ) from None
    handle.seek(0)
    stale = handle.read().strip()
    if stale and verbose:
        print(f"kerasft: taking over a stale lock ({stale}; that process has ended)", flush=True)
    handle.truncate(0)
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    handle.flush()
    try:
        yield
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _check_directory(project_dir, key):
    """Refuses a search directory made for another setup; records the key of a new one."""
    path = project_dir / "kerasft_search.json"
    if path.exists():
        stored = json.loads(path.read_text())
        differs = [f"{name}: {stored.get(name)!r} there, {value!r} here" for name, value in key.items()
                   if stored.get(name) != value]
        if differs:
            raise TuningError(
                f"{project_dir} holds a search for another setup ({'; '.join(differs)}). Resuming would mix "
                "trials of different searches. Pass overwrite=True to delete it and start fresh, or pick another "
                "directory or project_name."
            )
    elif (project_dir / "oracle.json").exists():
        raise TuningError(
            f"{project_dir} holds a KerasTuner search that kerasft.tune did not make (no kerasft_search.json). "
            "Pass overwrite=True to delete it and start fresh, or pick another directory or project_name."
        )


def tune(data, backbone, tuner="hyperband", max_trials=10, directory="runs", project_name=None, overwrite=False,
         cache_features=True, space=None, objective="val_accuracy", epochs=10, seed=0, strategy=None,
         precision="auto", scale_batch=False, pretrained=True, image_size=None, sequence_length=None,
         callbacks=None, verbose=1):
    """Searches heads, unfreeze depths and training settings of a backbone on a TaskData with KerasTuner.

    Each trial trains the classifier above its cut (`unfreeze`) on what the
    frozen bottom outputs; with `cache_features` that is computed once for
    all trials (see the module docstring). The default space: `unfreeze`
    (`frozen`, `top:1`, `top:2`), head `depth` (0-2) and `units`, `dropout`,
    `learning_rate` (log), `block_learning_rate` (log, for `top:N`),
    `weight_decay`, `label_smoothing`, `batch_size`, and for images with
    `cache_features=False` only, `augmentation` strength.

    Args:
        data: TaskData. Trials train on `train` and are scored on `validation`.
        backbone: str or BackboneSpec. A name from `kft.backbones.names()`, etc.
        tuner: str. `"hyperband"` (at most `max_trials` trials, of up to
            `epochs` epochs; its reduction factor is chosen so that its
            schedule fits `max_trials`), `"random"` or `"bayesian"`.
        max_trials: int. Trials to run, in total over resumed runs.
        directory: str or Path. Where searches are kept.
        project_name: str or None. The search's folder in `directory`
            (default: `<backbone>_<tuner>`).
        overwrite: bool. Delete an existing search there first; False resumes
            it (completed trials are kept, an interrupted one runs again).
        cache_features: bool, "disk", str or Path. True: compute the frozen
            bottom's outputs once, in memory (a cut too big for memory goes to
            `<search>/features`); "disk": on disk in `<search>/features`, so a
            resumed search reuses them; a folder: on disk there; False:
            recompute them in every epoch (needed for image augmentation).
        space: dict or None. Narrows or replaces the default space, e.g.
            `{"unfreeze": "frozen", "units": [128, 256], "learning_rate": (1e-3, 1e-1, "log")}`.
        objective: str or keras_tuner.Objective. A logged metric:
            `val_accuracy`, `val_loss`, `accuracy`, `loss` (regression:
            `val_mae`, `mae`, ...).
        epochs: int. Epochs of a trial (Hyperband: its most).
        seed: int. Seeds the tuner, random initialization and shuffling.
        strategy: tf.distribute.Strategy or None. Trials build and train under
            it (`kft.distribute.strategy()`); batch sizes are global. To
            spread trials over machines instead, use KerasTuner's chief/worker
            mode: `kft.distribute.tuning_env`.
        precision: str. Dtype policy of the models (see `kft.build_classifier`).
        scale_batch: bool. Multiply each trial's batch size by the replica count.
        pretrained: bool. Load the backbone's pretrained weights.
        image_size: tuple or None. As `kft.build_classifier`.
        sequence_length: int or None. As `kft.build_classifier`.
        callbacks: list or None. Extra Keras callbacks for every trial.
        verbose: int. 0 silent; 1 a line per trial; 2 also KerasTuner's and
            Keras' own progress output.

    Returns:
        A `Search`: `best_models(k)`, `best_hyperparameters(k)`, `results()`, `summary()`.

    Example:
    >>> search = kft.tune(data, backbone="minilm_l6", tuner="random", max_trials=10,
    ...                   directory="runs/bbc", space={"unfreeze": "frozen"})
    >>> print(search.summary())
    """
    # === Arguments, before any work ===
    if tuner not in _TUNERS:
        raise TuningError(f"tuner must be one of {', '.join(_TUNERS)}. Received: tuner={tuner!r}")
    for name, value in (("max_trials", max_trials), ("epochs", epochs)):
        if not _is_int(value) or value < 1:
            raise TuningError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
    if not hasattr(data, "fingerprint"):
        raise TuningError(f"tune needs a kft TaskData (from kft.data or kft.samples). Received: {type(data).__name__}")
    if data.size("validation") == 0:
        raise TuningError(f"tune scores trials on the validation split, and {data.name!r} has none. "
                          "Load the data with a validation_split > 0.")
    spec = backbones.get(backbone)
    if not backbones.takes(spec, data.modality):
        raise TuningError(f"Backbone {spec.name!r} takes {spec.modality} input but the data is {data.modality}. "
                          f"Pick one of kft.backbones.names({data.modality!r}).")
    objective = _objective(objective, data.task)
    if not (isinstance(cache_features, (bool, str)) or isinstance(cache_features, os.PathLike)):
        raise TuningError('cache_features must be True, False, "disk" or a folder. '
                          f"Received: cache_features={cache_features!r}")
    rules = search_space(space, data.modality, data.task, cache_features is not False)  # blocks: checked once built
    project_name = project_name or f"{models.short_name(spec.name)}_{tuner}"
    project_dir = Path(directory) / project_name
    distributed = keras_internals.has_chief_oracle()

    lock = contextlib.nullcontext() if distributed else _search_lock(Path(directory) / f"{project_name}.lock", verbose)
    with lock:
        if overwrite and not distributed:
            shutil.rmtree(project_dir, ignore_errors=True)
        key = {"backbone": spec.name, "data": data.fingerprint(), "task": data.task, "classes": data.class_names,
               "tuner": tuner, "objective": str(getattr(objective, "name", objective)), "epochs": epochs,
               "space": json.loads(json.dumps(rules))}
        _check_directory(project_dir, key)  # before the backbone loads

        # === The backbone, once; then the full key ===
        hypermodel = TransferHyperModel(
            data, spec, space=space,
            cache_features=project_dir / "features" if cache_features == "disk" else cache_features,
            spill_directory=project_dir / "features", epochs=epochs, seed=seed, pretrained=pretrained,
            image_size=image_size, sequence_length=sequence_length, strategy=strategy, precision=precision,
            scale_batch=scale_batch, verbose=verbose)
        bottom_key = features.cache_key(hypermodel.reference, data, "frozen")
        key.update({name: bottom_key[name] for name in ("architecture", "weights", "preprocessing")})
        _check_directory(project_dir, key)
        project_dir.mkdir(parents=True, exist_ok=True)
        if not (project_dir / "kerasft_search.json").exists():
            paths.write_atomic(project_dir / "kerasft_search.json", json.dumps(key, indent=1))

        # === KerasTuner ===
        kwargs = dict(hypermodel=hypermodel, objective=objective, seed=seed, directory=str(directory),
                      project_name=project_name, overwrite=False, distribution_strategy=strategy, verbose=verbose)
        if tuner == "hyperband":
            factor, planned = _hyperband_factor(epochs, max_trials)
            search_tuner = _TUNERS[tuner](max_epochs=epochs, factor=factor,
                                          hyperband_iterations=math.ceil(max_trials / planned), **kwargs)
            search_tuner.oracle.max_trials = max_trials  # Hyperband has no max_trials of its own
            if verbose and planned > max_trials:
                print(f"kerasft: Hyperband's schedule for {epochs} epochs has {planned} trials at best (factor "
                      f"{factor}); max_trials={max_trials} stops it early", flush=True)
        else:
            search_tuner = _TUNERS[tuner](max_trials=max_trials, **kwargs)
        done = sum(t.status == "COMPLETED" for t in getattr(search_tuner.oracle, "trials", {}).values())
        if verbose and done:
            print(f"kerasft: resuming {project_dir}: {done} trials completed, up to {max_trials} in all", flush=True)
        search_tuner.search(callbacks=list(callbacks or []), verbose=0 if verbose < 2 else 1)

    search = Search(search_tuner)
    rows = search.results()
    _write_tables(project_dir, rows)
    _write_plot(project_dir, rows, search.objective)
    return search
