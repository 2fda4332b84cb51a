"""`TransferHyperModel`: a trial is `kft.fine_tune`'s recipe (`kerasft.engine`) on inputs computed once."""

import math
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from kerasft import backbones, distribute, engine, features, heads, keras_internals, models, multitask
from kerasft.tuning.space import TuningError, declare, discrete, sample, search_space


# Active only once blocks unfreeze.
_UNFROZEN_ONLY = ("fine_tune_learning_rate", "augmentation")


class TransferHyperModel(keras_tuner.HyperModel):
    """The KerasTuner HyperModel of a transfer-learning search on one backbone and one TaskData.

    `build(hp)` declares the whole space and returns the trial model: the part of
    a classifier (built as `kft.build_classifier(..., head=<the trial's>,
    seed=seed)` builds it, with the search's backbone weights) above the trial's
    cut. `fit(hp, model, ...)` runs `kft.fine_tune`'s recipe on it with the
    trial's hyperparameters, on inputs computed once for every trial, passes
    the other callbacks through, and returns the final model's validation
    (and training) metrics. `full_model(hp, model)` puts a trained trial model
    back on the backbone.

    The backbone is built once, here; every trial starts from its weights.

    Args:
        data: TaskData. Trials train on `train` and report on `validation`.
        backbone: str or BackboneSpec. As `kft.build_classifier` takes it.
        space: dict or None. Narrows or replaces the default space (see `search_space`).
        cache_features: bool, str or Path. True: the frozen bottoms' outputs are
            kept in memory (a cut too big for memory goes to `spill_directory`);
            a folder: on disk there, reused by later searches whose key matches.
        spill_directory: str, Path or None. Where a cut too big for memory goes
            (default `kerasft.paths.user_cache_dir("features")`).
        epochs: int or None. Most epochs of a trial's last phase (None: until
            validation stops improving, as `fine_tune`); Hyperband sets its own.
        seed: int. Seeds the classifiers' initialization, the shuffles and the augmentation.
        pretrained: bool. Load the backbone's pretrained weights.
        image_size: tuple or None. As `kft.build_classifier`.
        sequence_length: int or None. As `kft.build_classifier`.
        strategy: tf.distribute.Strategy or None. Models are built and
            trained under it; trial batch sizes are global.
        precision: str. Dtype policy of the models (see `kft.build_classifier`).
        scale_batch: bool. Multiply each trial's batch size by the replica count.
        deadline: float or None. A `time.monotonic()` time no trial epoch should run past.
        verbose: int. 1 prints how the feature cache was made; 2 also every trial's epochs.
        cpu_bfloat16: "auto", True or False. As `kft.fine_tune`.
    """

    def __init__(self, data, backbone, space=None, cache_features=True, spill_directory=None, epochs=None, seed=0,
                 pretrained=True, image_size=None, sequence_length=None, strategy=None, precision="auto",
                 scale_batch=False, deadline=None, verbose=0, cpu_bfloat16="auto"):
        super().__init__(name="transfer")
        self.data, self.epochs, self.seed, self.verbose, self.deadline = data, epochs, seed, verbose, deadline
        self.tasks = multitask.targets_of(data)  # a multi-task search: {target: task}
        self.spec = backbones.get(backbone)
        self.cache_directory = None if isinstance(cache_features, bool) else Path(cache_features)
        self.spill_directory = spill_directory
        self.strategy, self.precision, self.scale_batch = strategy, precision, scale_batch
        self.cpu_bfloat16 = cpu_bfloat16
        self._build_args = dict(image_size=image_size, sequence_length=sequence_length, strategy=strategy,
                                precision=precision, seed=seed)
        self.reference = models.build_classifier(self.spec, data=data, pretrained=pretrained, **self._build_args)
        self.description = models.describe(self.reference)
        self.rules = search_space(space, data.modality, data.task, len(self.description.blocks))
        self.cuts = sorted(discrete(self.rules["trainable"]), key=_cost_order)
        self._inputs = None

    # --- the space ---

    def declare_hyperparameters(self, hp):
        self.values(hp)

    def values(self, hp):
        """Declares the space on `hp` and returns this trial's `{name: value}` (inactive ones are None).

        Args:
            hp: HyperParameters.
        """
        rules = self.rules
        values = {"trainable": declare(hp, "trainable", rules["trainable"]),
                  "depth": declare(hp, "depth", rules["depth"])}
        wide = [d for d in discrete(rules["depth"]) if d > 0]
        values["units"] = None
        if wide:
            with hp.conditional_scope("depth", wide):
                values["units"] = declare(hp, "units", rules["units"])
        for name in ("dropout", "learning_rate", "weight_decay", "label_smoothing", "batch_size"):
            values[name] = declare(hp, name, rules[name]) if name in rules else None
        unfrozen = [c for c in discrete(rules["trainable"]) if c != "frozen"]
        for name in _UNFROZEN_ONLY:
            values[name] = None
            if unfrozen and name in rules:
                with hp.conditional_scope("trainable", unfrozen):
                    values[name] = declare(hp, name, rules[name])
        return values

    def sample(self, rng, trainable):
        """A random configuration at depth `trainable` (for `kerasft.tuning.halving`)."""
        values = {"trainable": trainable, "depth": sample(rng, "depth", self.rules["depth"])}
        if values["depth"]:
            values["units"] = sample(rng, "units", self.rules["units"])
        for name in ("dropout", "learning_rate", "weight_decay", "label_smoothing", "batch_size"):
            if name in self.rules:
                values[name] = sample(rng, name, self.rules[name])
        return self.deepen(rng, values, trainable)

    def deepen(self, rng, values, trainable):
        """A configuration moved to depth `trainable`: the values only unfrozen recipes take drawn when missing."""
        values = {**values, "trainable": trainable}
        for name in _UNFROZEN_ONLY:
            if trainable == "frozen":
                values.pop(name, None)
            elif name in self.rules and name not in values:
                values[name] = sample(rng, name, self.rules[name])
        return values

    def head(self, values):
        """The trial's `kft.Head`."""
        return heads.Head(units=(values["units"],) * values["depth"], dropout=values["dropout"])

    def hyperparameters(self, hp):
        """The trial's recipe as `kft.fine_tune`'s keyword arguments, plus `backbone` and `head` (checked there)."""
        values = self.values(hp)
        recipe = self.recipe(values)
        fit = {name: getattr(recipe, name) for name in ("trainable", "epochs", "batch_size", "learning_rate",
                                                         "weight_decay", "label_smoothing", "seed")}
        if recipe.unfrozen:
            fit.update(fine_tune_learning_rate=recipe.fine_tune_learning_rate, augmentation=recipe.augmentation)
        return {"backbone": self.spec.name, "head": self.head(values), **fit}

    def recipe(self, values, epochs=None, warm=False):
        """The `engine.Recipe` a trial of these values runs.

        Args:
            values: dict. From `values(hp)`.
            epochs: int or None. Overrides the search's epochs (Hyperband's budget).
            warm: bool. The trial continues a trained one (Hyperband): no head warm-up.
        """
        batch_size = distribute.scaled_batch_size(values["batch_size"], self.strategy, self.scale_batch)
        return engine.Recipe(trainable=values["trainable"], epochs=epochs or self.epochs,
                             warmup_epochs=0 if warm else None, batch_size=batch_size,
                             learning_rate=values["learning_rate"],
                             fine_tune_learning_rate=values["fine_tune_learning_rate"],
                             weight_decay=values["weight_decay"], label_smoothing=values["label_smoothing"] or 0.0,
                             augmentation=values["augmentation"] or 0.0, seed=self.seed)

    # --- the trial model ---

    def classifier(self, values):
        """The classifier a trial trains: as `kft.build_classifier` builds it, with the search's backbone weights."""
        recipe = self.recipe(values)
        classifier = models.build_classifier(self.spec, data=self.data, head=self.head(values), pretrained=False,
                                             **self._build_args)
        classifier.get_layer("network").get_layer("backbone").set_weights(self.description.backbone.get_weights())
        models.set_trainable(classifier, recipe.trainable, self.description.block_pattern,
                             batchnorm=recipe.batchnorm_for(self.data.modality))
        return classifier

    def _part(self, classifier, cut):
        if cut == "all":
            return classifier.get_layer("network")
        with distribute.training_scope(self.strategy):  # a model made outside a strategy cannot fit under it
            return features.split_network(classifier, cut, self.description.block_pattern)[1]

    def build(self, hp):
        """Declares the space and returns the trial model: the part of its classifier above its cut.

        Args:
            hp: HyperParameters.
        """
        values = self.values(hp)
        return self._part(self.classifier(values), values["trainable"])

    def full_model(self, hp, model):
        """Returns the raw-input classifier a trained trial model stands for.

        Args:
            hp: HyperParameters. The trial's.
            model: keras.Model. The trial model, trained (or loaded from its checkpoint).

        Returns:
            A classifier as `kft.build_classifier` makes it (same structure
            and trainable setting), with the search's backbone weights and the
            trial's trained part.
        """
        values = self.values(hp)
        classifier = self.classifier(values)
        self._part(classifier, values["trainable"]).set_weights(model.get_weights())
        return classifier

    # --- training ---

    @property
    def inputs(self):
        """The `engine.Inputs` every trial reads: each cut of the space computed once (on first use)."""
        if self._inputs is None:
            augmented = any(discrete(self.rules.get("augmentation", 0.0)))
            self._inputs = engine.Inputs(self.reference, self.data, cuts=["frozen", *self.cuts], augmented=augmented,
                                         cache_directory=self.cache_directory, spill_directory=self.spill_directory,
                                         block_pattern=self.description.block_pattern, verbose=self.verbose,
                                         class_weight=engine.class_weight("auto", self.data) if self.tasks else None)
        return self._inputs

    def fit(self, hp, model, *args, **kwargs):
        """Runs the trial's recipe on its model and returns the final model's metrics.

        Args:
            hp: HyperParameters. The trial's.
            model: keras.Model. From `build(hp)`.
            *args: none: the data comes from the TaskData.
            **kwargs: `callbacks` (KerasTuner's own are handled here, the others
                reach every phase), and Hyperband's `epochs`/`initial_epoch`.

        Returns:
            A dict: `val_loss`, `val_<metric>` of the final (restored) model on the
            validation split, and `loss`, `<metric>` of its best epoch.
        """
        if args:
            raise TuningError("TransferHyperModel.fit takes its data from the TaskData it was made with; "
                              f"pass only keyword arguments (callbacks, epochs, ...). Received {len(args)} "
                              "positional arguments.")
        values = self.values(hp)
        warm = "tuner/trial_id" in hp.values  # Hyperband continues a trained trial
        budget = kwargs["epochs"] - kwargs.get("initial_epoch", 0) if "tuner/epochs" in hp.values else None
        recipe = self.recipe(values, epochs=budget, warm=warm)
        callbacks, save = keras_internals.tuner_callbacks(kwargs.get("callbacks", []))
        loss, metrics = (multitask.losses_and_metrics(self.tasks, recipe.label_smoothing) if self.tasks
                         else heads.loss_and_metrics(self.data.task, recipe.label_smoothing))
        history, self.notes = engine.train(  # a multi-task search's class weights are in its Inputs
            model, self.inputs, recipe, self.data.modality, self.tasks or self.data.task,
            block_pattern=self.description.block_pattern,
            class_weight=None if self.tasks else engine.class_weight(recipe.class_weight, self.data),
            loss=loss, metrics=metrics, callbacks=callbacks, deadline=self.deadline, strategy=self.strategy,
            log=engine.print_line if self.verbose > 1 else None, cpu_bfloat16=self.cpu_bfloat16)
        if save is not None:
            save(model)
        self.epochs_run = len(history.history.get("phase", []))
        if self.tasks:
            return _final_target_metrics(model, self.inputs, recipe, loss, metrics, history, self.tasks)
        return _final_metrics(model, self.inputs, recipe, loss, metrics, history)


def _cost_order(cut):
    """Cheapest first: frozen, top:1, top:2, ..., all."""
    depth = models.parse_trainable(cut)
    return math.inf if depth is None else depth


def _final_validation(part, inputs, recipe, history):
    """The model as it ends (restored, maybe rolled back; the head alone when that is what trained last) and its
    validation split: `(targets, predictions, sample weights or None)`, arrays (dicts of them per target)."""
    _, validation = inputs.datasets(recipe.trainable, recipe.batch_size, recipe.seed)
    if not recipe.unfrozen or history.history["phase"][-1] == 1:
        part = engine.head_part(part)
        _, validation = inputs.datasets("frozen", recipe.batch_size, recipe.seed)
    targets, predictions, weights = [], [], []
    for batch in validation:
        predictions.append(tf.nest.map_structure(keras.ops.convert_to_numpy, part(batch[0], training=False)))
        targets.append(tf.nest.map_structure(lambda t: t.numpy(), batch[1]))
        weights.append(tf.nest.map_structure(lambda t: t.numpy(), batch[2]) if len(batch) > 2 else None)
    joined = [tf.nest.map_structure(lambda *parts: np.concatenate(parts), *values) if values[0] is not None
              else None for values in (targets, predictions, weights)]
    return tuple(joined)


def _final_target_metrics(part, inputs, recipe, losses, metrics, history, tasks):
    """`_final_metrics` of a multi-task trial: each target's, on the rows that carry it, and their mean
    (`val_accuracy`: the classification targets' accuracies; else `val_mae`: the regression targets' errors)."""
    targets, predictions, weights = _final_validation(part, inputs, recipe, history)
    final, loss = {}, 0.0
    for target in tasks:  # weighted as the run weighed them (fine_tune's default: 1 each)
        value = losses[target](targets[target], predictions[target], sample_weight=weights[target])
        loss += history.loss_weights[target] * float(keras.ops.convert_to_numpy(value))
        metric = metrics[target][0]
        metric.reset_state()
        metric.update_state(targets[target], predictions[target], sample_weight=weights[target])
        final[f"val_{target}_{metric.name}"] = float(keras.ops.convert_to_numpy(metric.result()))
    final["val_loss"] = loss
    losses_seen = history.history.get("val_loss", [])
    best = int(np.nanargmin(losses_seen)) if losses_seen else -1
    for key, values in history.history.items():
        if not key.startswith("val_") and key != "phase":
            final[key] = float(values[best])
    mean = "accuracy" if any(t != "regression" for t in tasks.values()) else "mae"
    for prefix in ("val_", ""):
        scores = [final.get(f"{prefix}{t}_{mean}", math.nan) for t, task in tasks.items()
                  if (task == "regression") == (mean == "mae")]
        final[f"{prefix}{mean}"] = float(np.mean(scores))
    return final


def _final_metrics(part, inputs, recipe, loss, metrics, history):
    """The validation metrics of the model as it ends (restored, maybe rolled back) and its best epoch's training
    metrics: what KerasTuner ranks, and what `kft.fine_tune` with the same recipe ends with."""
    targets, predictions, _ = _final_validation(part, inputs, recipe, history)
    metric = metrics[0]
    metric.reset_state()
    metric.update_state(targets, predictions)
    name = metric.name
    final = {"val_loss": float(keras.ops.convert_to_numpy(loss(targets, predictions))),
             f"val_{name}": float(keras.ops.convert_to_numpy(metric.result()))}
    losses = history.history.get("val_loss", [])
    best = int(np.nanargmin(losses)) if losses else -1
    for key in ("loss", name):
        final[key] = float(history.history[key][best]) if history.history.get(key) else float("nan")
    return final
