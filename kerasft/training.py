"""Fine-tuning in two phases (head warm-up, then the unfrozen blocks at discriminative rates), and distillation.

```
phase 1  the head on the frozen backbone's features, computed once
phase 2  the blocks the `trainable` setting names, trained on the activations entering them, also
         computed once (or recomputed per pass under augmentation); the top block learns at
         `fine_tune_learning_rate`, each block below at `layer_decay` times the one above
```
Both phases stop early on validation loss and restore the best weights; a
phase 2 that makes validation worse is rolled back. The routine is
`kerasft.engine.train`, which every `kft.tune` trial runs too, with the trial's
hyperparameters: `kft.fine_tune(model, data, **hyperparameters)` retrains a trial's recipe.
"""

import time

import keras

from kerasft import checkpoint as checkpoint_lib
from kerasft import augment, backbones, distribute, engine, features, heads, models, multitask


class TrainingError(ValueError):
    """The model and the data, or a training argument, do not fit together."""


def fine_tune(model, data, trainable=None, epochs=None, warmup_epochs=None, batch_size=32, learning_rate=1e-3,
              fine_tune_learning_rate=None, layer_decay=0.7, weight_decay=0.0, label_smoothing=0.0, patience="auto",
              class_weight="auto", batchnorm="auto", augmentation=0.0, time_limit=None, seed=0, callbacks=None,
              verbose=1, teacher=None, temperature=2.0, alpha=0.5, strategy=None, scale_batch=False,
              checkpoint_dir=None, backbone=None, head=None, loss_weights=None, cpu_bfloat16="auto"):
    """Trains a classifier on a `TaskData`: the head on frozen features, then the unfrozen blocks.

    Phase 1 trains the head on the frozen backbone's features, computed once, so
    its epochs cost milliseconds; by default it runs until validation stops
    improving. Phase 2 (for `"top:N"` and `"all"`) trains the unfrozen blocks
    and the head at discriminative learning rates, on the activations entering
    the first unfrozen block, also computed once (`kft.features.FeatureCache`),
    so an epoch costs only the unfrozen blocks. Both phases stop early on
    validation loss and keep the best weights.

    A multi-task model (built on multi-task data) trains every head together
    with the backbone, through the same phases: the loss is the weighted sum
    of each target's loss over the rows that carry that target (missing labels
    are masked out), see `kerasft.multitask`.

    Args:
        model: keras.Model. From `kft.build_classifier`.
        data: TaskData. Train and validation splits are used.
        trainable: str or None. `"frozen"`, `"top:N"` or `"all"`; None keeps
            the model's own setting (a model loaded from disk whose backbone is a
            KerasHub model comes back all-trainable, so pass it there).
        epochs: int or None. Most epochs of the last phase (the head's for a
            frozen backbone, else phase 2's); None: until validation stops
            improving (at most 200 head epochs, or 10 phase-2 epochs).
        warmup_epochs: int or None. Most head epochs before phase 2 (None: until
            validation stops improving; 0 skips the warm-up).
        batch_size: int. Examples per step.
        learning_rate: float. Learning rate of the head in phase 1.
        fine_tune_learning_rate: float or None. Learning rate of the head and
            the top unfrozen block in phase 2; default 5e-5 for text
            backbones, 1e-4 for image and audio backbones.
        layer_decay: float. Each lower block learns at this times the rate of
            the block above it (1.0: one rate for all).
        weight_decay: float. Decoupled weight decay (AdamW) in both phases.
        label_smoothing: float. In [0, 1): classification targets mixed with the uniform distribution.
        patience: int or "auto". Epochs without a better validation loss before
            a phase stops (the best weights are restored); "auto" scales it to
            the cost of an epoch, deterministically (trainable parameters x
            examples: 20 epochs of a head, 2 of MiniLM's top block); 0
            disables early stopping and the phase-2 rollback.
        class_weight: "auto", None or dict. "auto" weights classes inversely
            to their frequency when the largest is 1.5x the smallest or more
            (per target of a multi-task model; a dict then maps targets to
            `{class id: weight}`).
        batchnorm: str. `"auto"`, `"frozen"` or `"train"`: whether the
            BatchNormalization layers of unfrozen blocks adapt their statistics
            and scale/offset in phase 2 ("auto": they do for audio, where frozen
            ImageNet statistics hold spectrograms back; not for images and text).
            BatchNorm in frozen blocks never changes.
        augmentation: float. Strength in [0, 1] of random augmentation of the
            training input in phase 2 (images and audio; `kerasft.augment`). It
            changes the frozen bottom's input on every pass, so phase 2 then
            recomputes the bottom per epoch instead of reading it from the cache.
        time_limit: float or None. Seconds this call may take: no epoch starts
            that would likely overrun it (estimated from the epochs done), the
            best weights so far are kept, and what was cut is said.
        seed: int. Seeds the shuffles and the augmentation (the model's own
            initialization was seeded by `build_classifier(seed=...)`); no global
            random state is touched.
        callbacks: list or None. Extra Keras callbacks for both phases.
        verbose: int. 0 silent; 1 a line per phase and per epoch with estimates
            of what remains; 2 also Keras' own progress bars.
        teacher: keras.Model or None. A classifier or ensemble on raw input
            whose probabilities the model learns to match (distillation;
            see `distill`). Its outputs are computed once per split; with
            `augmentation` on images, it also labels every augmented training
            batch of phase 2, seeing the very images the student sees (audio
            is augmented as spectrograms, after each model's own front end:
            there the teacher's outputs are those of the clean clip).
        temperature: float. Softens teacher and student alike (Hinton et
            al., 2015); the soft term is scaled by `temperature**2`.
        alpha: float. Weight of the hard labels; `1 - alpha` goes to the
            teacher's soft probabilities.
        strategy: tf.distribute.Strategy or None. Trains under it; None takes
            the strategy the model was built under (`with strategy.scope():`
            or `build_classifier(..., strategy=)`). `batch_size` is global.
        scale_batch: bool. Multiply `batch_size` by the strategy's replica
            count (keeps the per-replica batch as given).
        checkpoint_dir: str, Path or None. Makes the call resumable: every
            epoch's weights, optimizer state and logs go there (Keras
            `BackupAndRestore`), and a finished phase is kept. Calling
            `fine_tune` again with the same model, data, arguments and folder
            after a crash or a kill resumes at the last finished epoch. A folder
            holding another run's checkpoint is refused. Under a multi-worker
            strategy the chief writes there and each other worker in `workers/<task>/`.
        backbone: str or None. The backbone a search's hyperparameters were
            found for (`Search.best_hyperparameters`): checked against the model's.
        head: kft.Head or None. Likewise, the head shape: checked against the model's.
        loss_weights: dict, "balanced" or None. A multi-task model's
            `{target: weight}` (targets left out weigh 1); None weighs each
            target 1; "balanced" weighs each inversely to its loss on the
            first training batch, so each starts with an equal share (the
            weights average 1). The weights used: `history.loss_weights`.
        cpu_bfloat16: "auto", True or False. Trains with oneDNN's bfloat16
            rewrite of the training graph: matmuls in bfloat16 on the CPU's AMX
            units, variables and saved model float32 ("auto": for the blocks of
            a transformer on a CPU that has AMX; 1.4x faster MiniLM steps here,
            while convolution networks train slower with it). See
            `kft.distribute.cpu_bfloat16`.

    Returns:
        A `keras.callbacks.History` whose `history` holds both phases'
        metrics epoch by epoch (a multi-task model's per target, e.g.
        `val_word_accuracy`) and `history["phase"]` (1 or 2) for each; its
        `notes` list says what a time limit cut or a rollback undid.

    Example:
    >>> model = kft.build_classifier("minilm_l6", data=data, trainable="top:2", seed=0)
    >>> kft.fine_tune(model, data, epochs=2)
    >>> hp = search.best_hyperparameters(1)[0]   # retrain a search's best recipe
    >>> model = kft.build_classifier(hp["backbone"], data=data, head=hp["head"], seed=hp["seed"])
    >>> kft.fine_tune(model, data, **hp)
    >>> kft.fine_tune(multi_task_model, multi_task_data, loss_weights={"word": 1.0, "speaker_sex": 0.5})
    """
    # === Everything that can be wrong is refused before any work ===
    _check_task_data(data)
    _check_fits(model, data)
    description = models.describe(model)
    _check_recipe_source(model, description, backbone, head)
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise TrainingError(f"time_limit is a number of seconds > 0. Received: time_limit={time_limit!r}")
    if verbose not in (0, 1, 2):
        raise TrainingError(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
    try:
        distribute.check_cpu_bfloat16(cpu_bfloat16)
    except distribute.DistributeError as error:
        raise TrainingError(str(error)) from None
    deadline = None if time_limit is None else time.monotonic() + time_limit
    strategy = distribute.strategy_of(model, strategy)
    setting = trainable or description.trainable
    try:
        recipe = engine.Recipe(trainable=setting, epochs=epochs, warmup_epochs=warmup_epochs,
                               batch_size=distribute.scaled_batch_size(batch_size, strategy, scale_batch),
                               learning_rate=learning_rate, fine_tune_learning_rate=fine_tune_learning_rate,
                               layer_decay=layer_decay, weight_decay=weight_decay, label_smoothing=label_smoothing,
                               patience=patience, class_weight=class_weight, batchnorm=batchnorm,
                               augmentation=augmentation, seed=seed, loss_weights=loss_weights)
        if multitask.check_loss_weights(recipe.loss_weights, description.tasks) == "balanced" and (
                distribute.is_multi_worker(strategy)):
            raise multitask.MultiTaskError(
                'loss_weights="balanced" is measured on the first training batch, which differs per worker; under '
                "several workers pass the weights as a dict (the default weighs each target 1).")
        weights = engine.class_weight(recipe.class_weight, data)
    except (engine.RecipeError, models.ClassifierError, multitask.MultiTaskError) as error:
        raise TrainingError(str(error)) from None
    if recipe.augmentation:
        augment.augmenter(model, recipe.augmentation, seed)  # refuses text models before any work
    loss = metrics = soft = None
    if teacher is not None:
        loss, metrics = _check_teacher(teacher, data, temperature, alpha)
        if data.targets and recipe.augmentation and data.modality == "image":
            raise TrainingError("Distilling a multi-task teacher labels the training images once, so it takes no "
                                "augmentation (augmented distillation has one target). Received: augmentation="
                                f"{recipe.augmentation}")
    models.set_trainable(model, setting, description.block_pattern, batchnorm=recipe.batchnorm_for(
        description.modality))
    if teacher is not None:
        soft = {split: teacher.predict(features.prefetched(getattr(data, split).map(lambda x, y: x).batch(64)),
                                       verbose=0) for split in ("train", "validation")}
        soft = {split: ({t: p.astype("float32") for t, p in probabilities.items()
                         if data.targets[t].task in ("multiclass", "binary")}  # the distilled targets
                        if data.targets else probabilities.astype("float32")) for split, probabilities in soft.items()}
        weights = None  # the soft targets already carry the teacher's view of the classes
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = checkpoint_lib.Checkpoint(distribute.worker_path(checkpoint_dir, strategy), {
            "model": features.architecture_digest(model), "data": data.fingerprint(),
            **{k: v for k, v in vars(recipe).items()}, "teacher": teacher is not None})
    log = engine.print_line if verbose else None

    # === The recipe ===
    cuts = (["frozen"] if recipe.head_epochs != 0 else []) + ([setting] if recipe.unfrozen else [])
    multi = description.tasks is not None
    inputs = engine.Inputs(model, data, cuts=cuts, augmented=bool(recipe.augmentation),
                           block_pattern=description.block_pattern, soft_targets=soft, teacher=teacher,
                           class_weight=weights if multi else None, verbose=verbose, strategy=strategy)
    with distribute.training_scope(strategy):  # a model made outside a strategy cannot fit under it
        part = (description.network if setting == "all"
                else features.split_network(model, setting, description.block_pattern)[1])
    history, notes = engine.train(part, inputs, recipe, description.modality, description.tasks or description.task,
                                  block_pattern=description.block_pattern, class_weight=None if multi else weights,
                                  loss=loss,
                                  metrics=metrics, callbacks=list(callbacks or []), checkpoint=checkpoint,
                                  deadline=deadline, strategy=strategy, log=log, keras_verbose=1 if verbose == 2 else 0,
                                  cpu_bfloat16=cpu_bfloat16)
    history.notes = notes
    return history


def _check_recipe_source(model, description, backbone, head):
    """A search's hyperparameters name the backbone and head they were found for: the model must have them."""
    if backbone is not None and (description.spec is None or description.spec.name != backbone):
        raise TrainingError(
            f"These hyperparameters come from a search of backbone {backbone!r}, but the model's backbone is "
            f"{description.spec.name if description.spec else description.backbone.name!r}. Build it with "
            f"kft.build_classifier({backbone!r}, data=data, head=hyperparameters['head'], "
            "seed=hyperparameters['seed']).")
    if head is None:
        return
    found = {target: heads.Head.of(part) for target, part in (heads.target_heads(model) or {
        None: description.head}).items()}  # a multi-task model: each target's head
    for target, shape in found.items():
        if shape != head:
            raise TrainingError(
                f"These hyperparameters are for a head {head}, but the model's head "
                f"{'' if target is None else f'of target {target!r} '}is {shape}. Build the model with "
                "kft.build_classifier(..., head=...) of that head.")


def _check_task_data(data):
    for attribute in ("train", "validation", "class_names", "task", "modality"):
        if not hasattr(data, attribute):
            raise TrainingError(f"fine_tune needs a kft TaskData (from kft.data or kft.samples). "
                                f"Received: {type(data).__name__}")


def _check_fits(model, data):
    modality = models.modality_of(model)
    if modality != data.modality:
        raise TrainingError(f"The model takes {modality} input but the data is {data.modality} ({data.name}).")
    models.check_clips(model, data)
    if heads.tasks_of(model) is not None or data.targets is not None:
        _check_targets(model, data)
    else:
        outputs = model.output.shape[-1]
        expected = 1 if data.task == "regression" else data.num_classes
        if outputs != expected:
            raise TrainingError(
                f"The model outputs {outputs} values but the data has {expected} "
                f"{'target' if data.task == 'regression' else 'classes'} ({data.class_names}). "
                f"Build it with kft.build_classifier(..., data=data)."
            )
        task = heads.task_of(model)
        if not _same_task(task, data.task):
            raise TrainingError(f"The model was built for task {task!r} but the data is {data.task!r}.")
    if data.size("train") == 0:
        raise TrainingError(f"The training split of {data.name} is empty.")


def _same_task(a, b):
    return a == b or {a, b} == {"multiclass", "binary"}


def _check_targets(model, data):
    """A multi-task model trains on multi-task data with the same targets, tasks and outputs."""
    tasks, targets = heads.tasks_of(model), data.targets
    if tasks is None or targets is None:
        raise TrainingError(
            f"The model has {'the targets ' + str(list(tasks)) if tasks else 'one target'} but the data "
            f"({data.name}) has {'the targets ' + str(list(targets)) if targets else 'one target'}. Build it with "
            "kft.build_classifier(..., data=data).")
    found = {name: (tasks[name], output.shape[-1]) for name, output in model.output.items()}
    expected = {name: (target.task, target.num_outputs) for name, target in targets.items()}
    if list(found) != list(expected) or any(found[n][1] != expected[n][1] or not _same_task(found[n][0], expected[n][0])
                                            for n in expected):
        raise TrainingError(f"The model's targets (task, outputs) are {found} but the data's are {expected} "
                            f"({data.name}). Build it with kft.build_classifier(..., data=data).")


# === Distillation ===


def distill(teacher, student_backbone, data, temperature=2.0, alpha=0.5, head=None, trainable="frozen",
            student_layers=None, image_size=None, sequence_length=None, strategy=None, precision="auto",
            **fine_tune_kwargs):
    """Trains a smaller student classifier to match a teacher's probabilities (and the true labels).

    The student is a plain kerasft classifier: a smaller registered backbone
    (`"minilm_l3"` for MiniLM teachers; `"efficientnet_lite0"` or
    `"mobilenet_v2"` for EfficientNet-Lite2 ones), or, with `student_layers`,
    the teacher's own transformer backbone with fewer layers. It learns from
    the teacher's probabilities on the training split, and with
    `augmentation=` (images; `trainable` not `"frozen"`) on every augmented
    batch too, the teacher seeing the very images the student sees. On long
    texts, `data.with_text_windows()` adds windows of each training text,
    which the teacher labels like any training example.

    Args:
        teacher: keras.Model. A classifier or an ensemble on raw input, of the data's task and classes.
        student_backbone: str or BackboneSpec. The student's backbone (see
            `kft.backbones.names()`); with `student_layers`, the teacher's own backbone.
        data: TaskData. The teacher's task.
        temperature: float. Softening of both distributions.
        alpha: float. Weight of the hard labels in the loss.
        head: kft.Head or None. The student's head.
        trainable: str. The student's trainable setting.
        student_layers: int or None. Cuts the student from the teacher's own
            backbone (its first member's, for an ensemble), which
            `student_backbone` names: this many of its transformer layers, the
            first and the last and evenly spaced ones between, with the
            teacher's weights and embeddings (DistilBERT's initialization; see
            `kft.backbones.fewer_layers`).
        image_size, sequence_length: the student's input size.
        strategy: tf.distribute.Strategy or None. The student is built and
            trained under it.
        precision: str. The student's dtype policy (see `build_classifier`).
        **fine_tune_kwargs: passed to `fine_tune` (epochs, learning rates, augmentation...); its `seed`
            (default 0) seeds the student's new weights too, so a call repeats.

    Returns:
        The trained student: a kerasft classifier that exports like any other.

    Raises:
        TrainingError: before any work, when the teacher does not solve the data's task and classes, or
            `student_layers` does not fit the teacher's backbone.

    Example:
    >>> student = kft.distill(ens, "minilm_l3", data.with_text_windows(copies=2), trainable="all", epochs=8)
    >>> student = kft.distill(ens, "minilm_l6", data, student_layers=3, trainable="all", epochs=8)
    >>> student = kft.distill(ens, "efficientnet_lite0", images, trainable="top:3", augmentation=0.5)
    """
    _check_task_data(data)
    _check_teacher(teacher, data, temperature, alpha)  # before the student loads any weights
    spec = backbones.get(student_backbone)
    if student_layers is not None:
        found = models.backbones_of(teacher)
        if not found:
            raise TrainingError("student_layers cuts the student from the teacher's own backbone, but the teacher "
                                "holds no layer named 'backbone' (kerasft classifiers and their mean or weighted "
                                f"ensembles do). Received: {type(teacher).__name__} {teacher.name!r}")
        try:
            spec = backbones.fewer_layers(spec, found[0], student_layers)
        except backbones.BackboneError as error:
            raise TrainingError(str(error)) from None
    student = models.build_classifier(spec, data=data, head=head, trainable=trainable, image_size=image_size,
                                      sequence_length=sequence_length, strategy=strategy, precision=precision,
                                      seed=fine_tune_kwargs.get("seed", 0))
    fine_tune(student, data, teacher=teacher, temperature=temperature, alpha=alpha, strategy=strategy,
              **fine_tune_kwargs)
    return student


def _check_teacher(teacher, data, temperature, alpha):
    """The distillation loss and metrics, once the teacher is known to solve the data's task and classes.

    Multi-task data and teacher: `{target: loss}` and `{target: metrics}`; each multiclass or binary target
    learns from the teacher's probabilities, the others from their labels alone.
    """
    if data.targets is not None or heads.tasks_of(teacher) is not None:
        return _check_multi_task_teacher(teacher, data, temperature, alpha)
    if data.task not in ("multiclass", "binary"):
        raise TrainingError(f"Distillation needs a multiclass or binary task. Received: {data.task!r}")
    _check_teacher_input(teacher, data)
    if teacher.output.shape[-1] != data.num_classes:
        raise TrainingError(f"The teacher outputs {teacher.output.shape[-1]} classes but the data has "
                            f"{data.num_classes} ({data.class_names}): a student learns the teacher's task, so "
                            "distil on data of that task and its classes.")
    if heads.task_of(teacher) not in ("multiclass", "binary"):
        raise TrainingError(f"The teacher is a {heads.task_of(teacher)} model but the data is {data.task}: a student "
                            "learns the teacher's task.")
    _check_softening(temperature, alpha)
    return _Distillation(data.num_classes, temperature, alpha), [_distilled_accuracy(data.num_classes)]


def _check_multi_task_teacher(teacher, data, temperature, alpha):
    _check_teacher_input(teacher, data)
    tasks = heads.tasks_of(teacher)
    expected = {name: (target.task, target.num_outputs) for name, target in (data.targets or {}).items()}
    found = tasks and {name: (task, teacher.output[name].shape[-1]) for name, task in tasks.items()}
    if found != expected:
        raise TrainingError(f"The teacher's targets (task, outputs) are {found or 'one target'} but the data's are "
                            f"{expected or 'one target'} ({data.name}): a student learns the teacher's targets.")
    distilled = [name for name, (task, _) in expected.items() if task in ("multiclass", "binary")]
    if not distilled:
        raise TrainingError(f"Distillation needs a multiclass or binary target; the data's are {expected}.")
    _check_softening(temperature, alpha)
    losses, metrics = multitask.losses_and_metrics(tasks)
    for name in distilled:
        outputs = expected[name][1]
        losses[name] = _Distillation(outputs, temperature, alpha,  # over the rows that carry the target
                                     reduction="mean_with_sample_weight", name=f"{name}_distillation")
        metrics[name] = [_distilled_accuracy(outputs)]
    return losses, metrics


def _check_teacher_input(teacher, data):
    try:
        modality = models.modality_of(teacher)  # refuses anything but a keras.Model on one raw input
        models.check_clips(teacher, data)
    except ValueError as error:  # models.ClassifierError too
        raise TrainingError(f"The teacher must be a keras.Model on the data's raw {data.modality} input. "
                            f"{error}") from None
    if modality != data.modality:
        raise TrainingError(f"The teacher takes {modality} input but the data is {data.modality} ({data.name}).")


def _check_softening(temperature, alpha):
    if not temperature > 0 or not 0.0 <= alpha <= 1.0:
        raise TrainingError(f"temperature must be > 0 and alpha in [0, 1]. Received: temperature={temperature}, "
                            f"alpha={alpha}")


class _Distillation(keras.losses.Loss):
    """The loss on targets `[one-hot labels, teacher probabilities]` (`classes` columns each): alpha x the
    labels' cross-entropy + (1 - alpha) x temperature^2 x the softened distributions' (Hinton et al., 2015).
    Used while the student trains only (the classifier keeps no loss)."""

    def __init__(self, classes, temperature, alpha, reduction="sum_over_batch_size", name="distillation"):
        super().__init__(name=name, reduction=reduction)
        self.classes, self.temperature, self.alpha = classes, temperature, alpha

    def call(self, y_true, y_pred):
        # Both models output probabilities; log-probabilities are logits up to a constant.
        classes, temperature = self.classes, self.temperature
        hard, teacher_probabilities = y_true[:, :classes], y_true[:, classes:]
        log_student = keras.ops.log(keras.ops.clip(y_pred, 1e-7, 1.0))
        hard_term = -keras.ops.sum(hard * log_student, axis=-1)
        soft_teacher = keras.ops.softmax(keras.ops.log(keras.ops.clip(teacher_probabilities, 1e-7, 1.0)) / temperature)
        soft_student = keras.ops.log_softmax(log_student / temperature, axis=-1)
        soft_term = -keras.ops.sum(soft_teacher * soft_student, axis=-1) * temperature**2
        return self.alpha * hard_term + (1 - self.alpha) * soft_term


def _distilled_accuracy(classes):
    """Accuracy against the one-hot labels in the first `classes` columns of distillation targets."""

    def accuracy(y_true, y_pred):
        return keras.ops.cast(keras.ops.argmax(y_true[:, :classes], -1) == keras.ops.argmax(y_pred, -1), "float32")

    return accuracy
