"""Fine-tuning in two phases (head warm-up, then top blocks at discriminative rates), and distillation.

```
phase 1  backbone frozen: the frozen features are computed once, the head trains on them
phase 2  the blocks the model's `trainable` setting names unfreeze; the top block learns at
         `fine_tune_learning_rate`, each block below at `layer_decay` times the one above
```
Both phases stop early on validation loss and restore the best weights.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from kerasft import checkpoint as checkpoint_lib
from kerasft import augment, backbones, distribute, features, heads, models


class TrainingError(ValueError):
    """The model and the data, or a training argument, do not fit together."""


class DiscriminativeAdam(keras.optimizers.AdamW):
    """AdamW whose learning rate is scaled per variable (lower blocks learn slower).

    Used only inside `fine_tune`; the classifier itself stays compiled with a
    built-in optimizer so its `.keras` file needs no kerasft to load.

    Args:
        factors: dict. `id(variable)` -> learning-rate multiplier (default 1).
        **kwargs: passed to `keras.optimizers.AdamW`.
    """

    def __init__(self, factors, **kwargs):
        super().__init__(**kwargs)
        self._factors = factors

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors.get(id(variable), 1.0)
        super().update_step(gradient, variable, learning_rate * factor)


def fine_tune(model, data, epochs=5, warmup_epochs=5, trainable=None, batch_size=32, learning_rate=1e-3,
              fine_tune_learning_rate=None, layer_decay=0.7, weight_decay=0.0, patience=2,
              class_weight="auto", seed=0, callbacks=None, verbose="auto", teacher=None, temperature=2.0,
              alpha=0.5, strategy=None, scale_batch=False, checkpoint_dir=None, augmentation=0.0):
    """Trains a classifier on a `TaskData`: the head on frozen features, then the unfrozen blocks.

    Phase 1 computes the frozen backbone's features once and trains only the
    head on them, so its epochs cost little. Phase 2 (for `"top:N"` and
    `"all"`) unfreezes the blocks at discriminative learning rates. Both
    phases stop early on validation loss and keep the best weights.

    Args:
        model: keras.Model. From `kft.build_classifier`; its `trainable`
            setting (`"frozen"`, `"top:N"`, `"all"`) decides phase 2.
        data: TaskData. Train and validation splits are used.
        epochs: int. Epochs at the model's trainable setting: of the head
            for a frozen backbone, else of phase 2.
        warmup_epochs: int. Head-only epochs before phase 2 (unused when the
            backbone stays frozen: phase 1 then runs `epochs`).
        trainable: str or None. Overrides the model's setting (`"frozen"`,
            `"top:N"`, `"all"`); a model loaded from disk whose backbone is
            a KerasHub model comes back all-trainable, so pass it there.
        batch_size: int. Examples per step.
        learning_rate: float. Learning rate of the head in phase 1.
        fine_tune_learning_rate: float or None. Learning rate of the head and
            the top unfrozen block in phase 2; default 5e-5 for text
            backbones, 1e-4 for image backbones.
        layer_decay: float. Each lower block learns at this times the rate of
            the block above it (1.0: one rate for all).
        weight_decay: float. Decoupled weight decay (AdamW) in both phases.
        patience: int. Epochs without a better validation loss before a
            phase stops; the best weights are restored. 0 disables.
        class_weight: "auto", None or dict. "auto" weights classes inversely
            to their frequency when the largest is 1.5x the smallest or more.
        seed: int. Seeds shuffling and initialization.
        callbacks: list or None. Extra Keras callbacks for both phases.
        verbose: "auto", 0, 1 or 2. Keras progress output.
        teacher: keras.Model or None. A classifier or ensemble on raw input
            whose probabilities the model learns to match (distillation;
            see `distill`). Its outputs are computed once per split.
        temperature: float. Softens teacher and student alike (Hinton et
            al., 2015); the soft term is scaled by `temperature**2`.
        alpha: float. Weight of the hard labels; `1 - alpha` goes to the
            teacher's soft probabilities.
        strategy: tf.distribute.Strategy or None. Compiles and trains under
            it; the model must have been built under it
            (`build_classifier(..., strategy=strategy)`). `batch_size` is
            global: split over the replicas.
        scale_batch: bool. Multiply `batch_size` by the strategy's replica
            count (keeps the per-replica batch as given).
        checkpoint_dir: str, Path or None. Makes the call resumable: every
            epoch's weights, optimizer state and logs go there (Keras
            `BackupAndRestore`), and a finished phase is kept. Calling
            `fine_tune` again with the same model, data, arguments and folder
            after a crash or a kill resumes at the last finished epoch and
            ends with the same number of epochs. A folder holding another
            run's checkpoint is refused. Under a multi-worker strategy the
            chief writes there and each other worker in `workers/<task>/`.
        augmentation: float. Strength in [0, 1] of random augmentation of
            the preprocessed training input in phase 2 (see `augmenter`);
            phase 1 trains on features computed once, so never augmented.

    Returns:
        A `keras.callbacks.History` whose `history` holds both phases'
        metrics epoch by epoch, and `history["phase"]` (1 or 2) for each.

    Example:
    >>> model = kft.build_classifier("minilm_l6", data=data, trainable="top:2")
    >>> kft.fine_tune(model, data, epochs=2, warmup_epochs=10)
    """
    _check_fits(model, data)
    augmenter = augmentation and augment.augmenter(model, augmentation, seed)
    if augmenter and (trainable or models.trainable_setting(model)) == "frozen":
        raise TrainingError("augmentation applies to phase 2 (an unfrozen backbone); a frozen backbone trains "
                            "only the head on features computed once. Pass trainable='top:N' or 'all'.")
    for name, value in (("epochs", epochs), ("warmup_epochs", warmup_epochs)):
        if not isinstance(value, int) or value < 0 or (name == "epochs" and value < 1):
            raise TrainingError(f"{name} must be a {'positive' if name == 'epochs' else 'non-negative'} "
                                f"integer. Received: {name}={value!r}")
    distribute.check_built_under(model, strategy)
    batch_size = distribute.scaled_batch_size(batch_size, strategy, scale_batch)
    keras.utils.set_random_seed(seed)
    setting = trainable or models.trainable_setting(model)
    models.set_trainable(model, setting)  # rejects a bad setting before any work
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = checkpoint_lib.Checkpoint(distribute.worker_path(checkpoint_dir, strategy), {
            "model": features.architecture_digest(model), "data": data.fingerprint(), "trainable": setting,
            "epochs": epochs, "warmup_epochs": warmup_epochs, "batch_size": batch_size,
            "learning_rate": learning_rate, "fine_tune_learning_rate": fine_tune_learning_rate,
            "layer_decay": layer_decay, "weight_decay": weight_decay, "patience": patience, "seed": seed,
            "teacher": teacher is not None, "augmentation": augmentation})
    task = heads.task_of(model)
    head_epochs = epochs if setting == "frozen" else warmup_epochs
    loss, metrics = heads.loss_and_metrics(task)
    train_raw, validation_raw = data.train, data.validation
    if teacher is not None:
        loss, metrics = _check_teacher(teacher, model, task, temperature, alpha)
        train_raw, validation_raw = (_with_teacher(teacher, data.train), _with_teacher(teacher, data.validation))
        class_weight = None  # the soft targets already carry the teacher's view of the classes
    weights = _class_weight(class_weight, data, task)
    merged = keras.callbacks.History()
    merged.history = {}
    # Preprocessed once, cached, reshuffled each epoch; phase 1 reads it once for features.
    train = features.preprocess(model, train_raw, batch_size, shuffle=True, seed=seed,
                                num_examples=data.size("train"))
    validation = features.preprocess(model, validation_raw, batch_size, num_examples=data.size("validation"))
    _, head = features.bottom_and_head(model)
    network = model.get_layer("network")

    # === Phase 1: the head on frozen features, computed once ===
    if head_epochs and checkpoint and checkpoint.finished(1):
        checkpoint.restore(1, head)
        _merge(merged, checkpoint.history(1), phase=1)
        _log(verbose, f"kerasft: phase 1 restored from {checkpoint.directory}")
    elif head_epochs:
        start = time.time()
        models.set_trainable(model, "frozen")
        (x_train, y_train), (x_val, y_val) = features.frozen_features(model, train, validation)
        _log(verbose, f"kerasft: phase 1, the head on frozen features ({len(x_train)} train, {len(x_val)} "
                      f"validation; features computed in {time.time() - start:.1f}s)")
        with distribute.training_scope(strategy):
            head.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay), loss=loss,
                         metrics=metrics)
            history = head.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=batch_size,
                               epochs=head_epochs, class_weight=weights, shuffle=True,
                               callbacks=_callbacks(patience, callbacks, checkpoint, 1), verbose=verbose)
        if checkpoint:
            history = checkpoint.finish(1, head)  # the epochs of every attempt, not only the last one's
        _merge(merged, history, phase=1)
        models.set_trainable(model, setting)

    # === Phase 2: the unfrozen blocks at discriminative rates ===
    if setting != "frozen":
        lr = fine_tune_learning_rate or _default_fine_tune_learning_rate(model)
        _log(verbose, f"kerasft: phase 2, {setting} of the backbone at learning rate {lr:g} "
                      f"(layer decay {layer_decay})")
        before = network.get_weights()
        if checkpoint and checkpoint.finished(2):
            checkpoint.restore(2, network)
            history = checkpoint.history(2)
        else:
            with distribute.training_scope(strategy):
                optimizer = DiscriminativeAdam(_layer_factors(model, layer_decay), learning_rate=lr,
                                               weight_decay=weight_decay)
                network.compile(optimizer=optimizer, loss=loss, metrics=metrics)
                if augmenter:  # sequential: the draws follow the batches, so a seed repeats a run
                    train = train.map(lambda x, *rest: (augmenter(x), *rest))
                history = network.fit(train, validation_data=validation, epochs=epochs, shuffle=False,
                                      class_weight=weights, verbose=verbose,
                                      callbacks=_callbacks(patience, callbacks, checkpoint, 2))
            if checkpoint:
                history = checkpoint.finish(2, network)
        _merge(merged, history, phase=2)
        if patience and _best(history.history["val_loss"]) > _best(merged.history["val_loss"]):
            # Unfreezing made validation worse than the warmed-up head alone: keep the head's weights.
            network.set_weights(before)
            _log(verbose, "kerasft: phase 2 did not improve the validation loss; kept the phase-1 weights")

    # Compiled nested models would put their optimizers (one of them kerasft's own) and losses into
    # the classifier's `.keras` file, which then needs kerasft and warns on load: keep none.
    for part in (head, network):
        part.compiled = False
    return merged


def _check_fits(model, data):
    for attribute in ("train", "validation", "class_names", "task", "modality"):
        if not hasattr(data, attribute):
            raise TrainingError(f"fine_tune needs a kft TaskData (from kft.data or kft.samples). "
                                f"Received: {type(data).__name__}")
    modality = models.modality_of(model)
    if modality != data.modality:
        raise TrainingError(f"The model takes {modality} input but the data is {data.modality} ({data.name}).")
    models.check_clips(model, data)
    outputs = model.output.shape[-1]
    expected = 1 if data.task == "regression" else data.num_classes
    if outputs != expected:
        raise TrainingError(
            f"The model outputs {outputs} values but the data has {expected} "
            f"{'target' if data.task == 'regression' else 'classes'} ({data.class_names}). "
            f"Build it with kft.build_classifier(..., data=data)."
        )
    task = heads.task_of(model)
    if task != data.task and {task, data.task} != {"multiclass", "binary"}:
        raise TrainingError(f"The model was built for task {task!r} but the data is {data.task!r}.")
    if data.size("train") == 0:
        raise TrainingError(f"The training split of {data.name} is empty.")


def _class_weight(class_weight, data, task):
    if class_weight != "auto":
        return class_weight
    if task not in ("multiclass", "binary"):
        return None
    counts = np.bincount(data.labels("train"), minlength=data.num_classes).astype("float64")
    if counts.min() == 0 or counts.max() / counts.min() < 1.5:
        return None
    return {i: float(counts.sum() / (len(counts) * c)) for i, c in enumerate(counts)}


def _default_fine_tune_learning_rate(model):
    # Transformers want gentler steps than CNNs.
    return 5e-5 if model.input.dtype == "string" else 1e-4


def _layer_factors(model, layer_decay):
    """Learning-rate multipliers: 1 for the head and top block, decaying block by block below it."""
    backbone = model.get_layer("network").get_layer("backbone")
    stem, found = backbones.blocks(backbone)
    factors = {}
    depth = 0
    for _, layers in reversed(found):
        for layer in layers:
            for variable in layer.trainable_weights:
                factors[id(variable)] = layer_decay**depth
        depth += 1
    for layer in stem:
        for variable in layer.trainable_weights:
            factors[id(variable)] = layer_decay**depth
    return factors


# === Distillation ===


def distill(teacher, student_backbone, data, temperature=2.0, alpha=0.5, head=None, trainable="frozen",
            image_size=None, sequence_length=None, strategy=None, precision="auto", **fine_tune_kwargs):
    """Trains a smaller student classifier to match a teacher's probabilities (and the true labels).

    Args:
        teacher: keras.Model. A classifier or an ensemble on raw input.
        student_backbone: str. The student's backbone name (see
            `kft.backbones.names()`), e.g. a smaller or faster one.
        data: TaskData. The teacher's task.
        temperature: float. Softening of both distributions.
        alpha: float. Weight of the hard labels in the loss.
        head: kft.Head or None. The student's head.
        trainable: str. The student's trainable setting.
        image_size, sequence_length: the student's input size.
        strategy: tf.distribute.Strategy or None. The student is built and
            trained under it.
        precision: str. The student's dtype policy (see `build_classifier`).
        **fine_tune_kwargs: passed to `fine_tune` (epochs, learning rates...).

    Returns:
        The trained student: a kerasft classifier that exports like any other.

    Example:
    >>> student = kft.distill(ens, "mobilenet_v3_small", data, epochs=5)
    """
    student = models.build_classifier(student_backbone, data=data, head=head, trainable=trainable,
                                      image_size=image_size, sequence_length=sequence_length, strategy=strategy,
                                      precision=precision)
    fine_tune(student, data, teacher=teacher, temperature=temperature, alpha=alpha, strategy=strategy,
              **fine_tune_kwargs)
    return student


def _check_teacher(teacher, student, task, temperature, alpha):
    if task not in ("multiclass", "binary"):
        raise TrainingError(f"Distillation needs a multiclass or binary task. Received: {task!r}")
    if not isinstance(teacher, keras.Model) or teacher.input.dtype != student.input.dtype:
        raise TrainingError("The teacher must be a keras.Model on the same raw input as the student "
                            f"({student.input.dtype}). Received: {type(teacher).__name__}")
    if teacher.output.shape[-1] != student.output.shape[-1]:
        raise TrainingError(f"The teacher outputs {teacher.output.shape[-1]} classes, the student "
                            f"{student.output.shape[-1]}.")
    if not temperature > 0 or not 0.0 <= alpha <= 1.0:
        raise TrainingError(f"temperature must be > 0 and alpha in [0, 1]. Received: temperature={temperature}, "
                            f"alpha={alpha}")
    classes = student.output.shape[-1]

    def distillation_loss(y_true, y_pred):
        # Both models output probabilities; log-probabilities are logits up to a constant.
        hard, teacher_probabilities = y_true[:, :classes], y_true[:, classes:]
        log_student = keras.ops.log(keras.ops.clip(y_pred, 1e-7, 1.0))
        hard_term = -keras.ops.sum(hard * log_student, axis=-1)
        soft_teacher = keras.ops.softmax(keras.ops.log(keras.ops.clip(teacher_probabilities, 1e-7, 1.0)) / temperature)
        soft_student = keras.ops.log_softmax(log_student / temperature, axis=-1)
        soft_term = -keras.ops.sum(soft_teacher * soft_student, axis=-1) * temperature**2
        return alpha * hard_term + (1 - alpha) * soft_term

    def accuracy(y_true, y_pred):
        return keras.ops.cast(keras.ops.argmax(y_true[:, :classes], -1) == keras.ops.argmax(y_pred, -1), "float32")

    return distillation_loss, [accuracy]


def _with_teacher(teacher, dataset):
    """`(x, y)` -> `(x, [one-hot y, teacher probabilities])`, the teacher run once over the split."""
    probabilities = teacher.predict(dataset.map(lambda x, y: x).batch(64), verbose=0).astype("float32")
    classes = probabilities.shape[-1]
    soft = tf.data.Dataset.from_tensor_slices(probabilities)
    return tf.data.Dataset.zip(dataset, soft).map(
        lambda xy, p: (xy[0], tf.concat([tf.one_hot(tf.cast(xy[1], "int32"), classes), p], axis=-1)))


def _best(losses):
    finite = [loss for loss in losses if np.isfinite(loss)]
    return min(finite) if finite else np.inf


def _callbacks(patience, extra, checkpoint=None, phase=None):
    callbacks = list(extra or []) + [keras.callbacks.TerminateOnNaN()]
    if checkpoint:
        callbacks += checkpoint.callbacks(phase)  # before EarlyStopping, which its restored state seeds
    if patience:
        settings = dict(monitor="val_loss", patience=patience, restore_best_weights=True)
        callbacks.append(checkpoint_lib.ResumedEarlyStopping(checkpoint, phase, **settings) if checkpoint
                         else keras.callbacks.EarlyStopping(**settings))
    return callbacks


def _merge(merged, history, phase):
    for key, values in history.history.items():
        merged.history.setdefault(key, []).extend(values)
    merged.history.setdefault("phase", []).extend([phase] * len(history.epoch))


def _log(verbose, message):
    if verbose:
        print(message, flush=True)
