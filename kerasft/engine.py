"""The one training routine: `fine_tune` and every `tune` trial run the same recipe through it.

```
Recipe          every training hyperparameter, with its default; the names are fine_tune's arguments
Inputs          where a phase's batches come from: the frozen bottom's outputs at a cut, computed once
                (FeatureCache), or the preprocessed pipeline (augmentation, or trainable="all")
run_phase       one phase: fit the part of the classifier above a cut, with early stopping that
                restores the best weights, a time budget, class weights and per-block learning rates
train           the recipe: phase 1 warms the head up on frozen features; phase 2 trains the unfrozen
                blocks and the head on the inputs at their cut, and is rolled back if it made
                validation worse
```
A multi-task model runs the same routine: its targets are dicts per target,
with sample weights that mask missing labels, and one loss per target, weighted
(`kerasft.multitask`).
A phase trains a part model that SHARES its layers with the classifier
(`kerasft.features.split_network`), so the classifier holds the result with
no copying back; a `tune` trial model is itself such a part (the top above the
trial's cut), built so that its weights equal those of
`split_network(build_classifier(..., seed=seed), cut)` before training.
"""

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf

from kerasft import augment, backbones, distribute, features, heads, models, multitask
from kerasft.data.targets import present

# Caps on the epochs of a phase when the recipe leaves them to early stopping (see `Recipe`).
HEAD_EPOCHS = 200
UNFROZEN_EPOCHS = 10
# "auto" patience: epochs without a better validation loss worth about this much work (trainable parameters x
# training examples, a deterministic stand-in for an epoch's cost, so a seed repeats a run), within the bounds:
# a head on cached features waits 20 epochs of milliseconds, MiniLM's top block 2 epochs of seconds.
PATIENCE_WORK = 5e9
PATIENCE_BOUNDS = (2, 20)
# An epoch improves on the best only by lowering the validation loss by this fraction of it.
MIN_IMPROVEMENT = 1e-3
# Seconds between two progress lines of a phase.
PROGRESS_SECONDS = 5.0


class RecipeError(ValueError):
    """A training hyperparameter is out of its domain, or does not fit the model or the data."""


class DiscriminativeAdam(keras.optimizers.AdamW):
    """AdamW whose learning rate is scaled per variable (lower blocks learn slower).

    Used only while a phase trains; the classifier keeps no optimizer, so its
    `.keras` file needs no kerasft to load.

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


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every hyperparameter of kerasft's training recipe; the field names are `kft.fine_tune`'s arguments.

    Args:
        trainable: str. `"frozen"` (the head alone), `"top:N"` or `"all"`.
        epochs: int or None. Most epochs of the last phase (the head's for a
            frozen backbone, else the unfrozen blocks'); None: until validation
            stops improving, at most `HEAD_EPOCHS` (head) or `UNFROZEN_EPOCHS`.
        warmup_epochs: int or None. Most head epochs before the blocks unfreeze
            (None: until validation stops improving, at most `HEAD_EPOCHS`; 0
            skips the warm-up).
        batch_size: int. Examples per step (global, under a strategy).
        learning_rate: float. The head's learning rate while it warms up.
        fine_tune_learning_rate: float or None. The head's and the top block's
            rate once blocks unfreeze (None: 5e-5 for text, 1e-4 for images and audio).
        layer_decay: float. Each lower block learns at this times the rate of the block above.
        weight_decay: float. Decoupled weight decay (AdamW).
        label_smoothing: float. In [0, 1), classification only.
        patience: int or "auto". Epochs without a better validation loss before a
            phase stops (its best weights restored); "auto" allows about
            `PATIENCE_WORK` (trainable parameters x examples) of them, within
            `PATIENCE_BOUNDS`: many cheap head epochs, few costly block epochs;
            0 never stops early.
        class_weight: "auto", None or dict. "auto" weights classes inversely to
            their frequency when the largest is 1.5x the smallest or more.
        batchnorm: str. `"auto"`, `"frozen"` or `"train"` (see `models.set_trainable`):
            "auto" trains the BatchNorm layers of unfrozen blocks for audio (frozen ImageNet
            statistics hold spectrograms back, bench/BENCHMARKS.md) and keeps them frozen otherwise.
        augmentation: float. Strength in [0, 1] of augmentation of the unfrozen phase's
            training input (images and audio; see `kerasft.augment`).
        seed: int. Seeds the shuffles and the augmentation.
        loss_weights: dict, "balanced" or None. A multi-task model's `{target: weight}` (targets
            left out weigh 1); None weighs every target 1; "balanced" weighs them inversely to their
            losses on the first training batch (`kerasft.multitask`).
    """

    trainable: str = "frozen"
    epochs: int = None
    warmup_epochs: int = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = None
    layer_decay: float = 0.7
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    patience: object = "auto"
    class_weight: object = "auto"
    batchnorm: str = "auto"
    augmentation: float = 0.0
    seed: int = 0
    loss_weights: object = None

    def __post_init__(self):
        models.parse_trainable(self.trainable)
        for name in ("epochs", "warmup_epochs"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < (1 if name == "epochs" else 0)):
                raise RecipeError(f"{name} must be None or an integer >= {1 if name == 'epochs' else 0}. "
                                  f"Received: {name}={value!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise RecipeError(f"batch_size must be a positive integer. Received: batch_size={self.batch_size!r}")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            value = getattr(self, name)
            if (value is not None or name == "learning_rate") and (not _is_number(value) or value <= 0):
                raise RecipeError(f"{name} must be a number > 0. Received: {name}={value!r}")
        if not _is_number(self.layer_decay) or not 0 < self.layer_decay <= 1:
            raise RecipeError(f"layer_decay must be in (0, 1]. Received: layer_decay={self.layer_decay!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise RecipeError(f"weight_decay must be a number >= 0. Received: weight_decay={self.weight_decay!r}")
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise RecipeError(f"label_smoothing must be in [0, 1). Received: label_smoothing={self.label_smoothing!r}")
        if self.patience != "auto" and (not _is_int(self.patience) or self.patience < 0):
            raise RecipeError(f'patience must be "auto" or an integer >= 0. Received: patience={self.patience!r}')
        if self.batchnorm != "auto":
            models.check_batchnorm(self.batchnorm)
        if not _is_number(self.augmentation) or not 0 <= self.augmentation <= 1:
            raise RecipeError(f"augmentation is a strength in [0, 1]. Received: augmentation={self.augmentation!r}")
        weights = self.loss_weights  # `in (None, "balanced")` would compare an array elementwise
        if not (weights is None or (isinstance(weights, str) and weights == "balanced") or (
                isinstance(weights, dict) and all(isinstance(k, str) and _is_number(v) and math.isfinite(v) and v > 0
                                                  for k, v in weights.items()))):
            raise RecipeError('loss_weights maps target names to numbers > 0, or is "balanced" (or None: 1 each). '
                              f"Received: loss_weights={self.loss_weights!r}")
        if self.augmentation and self.trainable == "frozen":
            raise RecipeError("augmentation applies to phase 2 (an unfrozen backbone); a frozen backbone trains only "
                              "the head, on features computed once. Pass trainable='top:N' or 'all'.")

    @property
    def unfrozen(self):
        """True when blocks unfreeze (a second phase runs)."""
        return self.trainable != "frozen"

    @property
    def head_epochs(self):
        """Most epochs of the head phase: 0 skips it, None runs it until validation stops improving."""
        return self.warmup_epochs if self.unfrozen else self.epochs

    def batchnorm_for(self, modality):
        """The BatchNorm mode of the unfrozen phase for a model of `modality`."""
        if self.batchnorm != "auto":
            return self.batchnorm
        return "train" if modality == "audio" else "frozen"

    def block_learning_rate(self, modality):
        """The rate of the head and top block once blocks unfreeze."""
        return self.fine_tune_learning_rate or (5e-5 if modality == "text" else 1e-4)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


# === Inputs ===


class Inputs:
    """The batches every phase of a recipe trains and validates on, computed once where they can be.

    The frozen bottom below each cut never changes, so what it outputs over the
    train and validation splits is computed in ONE pass (`FeatureCache`) and read
    by every phase and every trial that needs that cut. The preprocessed
    pipeline (tokenized or decoded once, `kerasft.features.preprocess`) feeds
    what cannot be cached: augmented training input (through the bottom, per
    pass) and `trainable="all"`. Every split is read in the data's order and
    shuffled with the same seeded permutation whatever its source (while the
    split fits the memory budget), so a cut gives the same batches cached or recomputed. Distilling with
    augmentation on images, the RAW images are augmented instead, once for both models: the teacher labels
    each augmented batch as the student sees it.

    Args:
        model: keras.Model. The classifier whose bottoms are computed (its weights at the time).
        data: TaskData.
        cuts: sequence of str. The cuts phases will ask for (`"frozen"`, `"top:N"`, `"all"`); each one but
            "all" is computed once, in one pass over the splits.
        augmented: bool. Whether some phase will augment its training input (then the
            preprocessed pipeline is kept for it, and the feature cache is computed from it).
        cache_directory: str, Path or None. Keep the feature cache on disk there (reused when its key matches).
        spill_directory: str, Path or None. Where a cut too big for memory goes.
        block_pattern: str or None. The backbone's block regex.
        soft_targets: dict or None. Split -> `(N, C)` teacher probabilities in the data's order
            (distillation): the targets become `[one-hot labels, teacher probabilities]`. Multi-task data:
            split -> `{target: (N, C)}` for the distilled targets.
        class_weight: dict or None. Multi-task data: `{target: {class id: weight} or None}` (`class_weight`),
            folded into the training sample weights (Keras takes no class_weight for several outputs).
        teacher: keras.Model or None. The teacher of `soft_targets`, on raw input: on images it labels every
            augmented training batch (audio is augmented as spectrograms, after each model's own front end,
            so there the student's augmented clips keep the teacher's probabilities of the clean clip).
        verbose: int. 1 prints what the feature cache did.
        strategy: tf.distribute.Strategy or None. Under a `MultiWorkerMirroredStrategy` each worker reads,
            caches and trains on its own shard of every split (`TaskData.shard`: its own files of TFRecord
            data), and `datasets` gives distributed datasets in which every worker runs the same number of
            steps (a worker with fewer examples repeats its first ones: the all-reduce needs every worker at
            every step).

    Multi-task data gives batches of `(inputs, {target: targets}, {target: sample weights})`
    (`multitask.targets_and_weights`).
    """

    def __init__(self, model, data, cuts, augmented=False, cache_directory=None, spill_directory=None,
                 block_pattern=None, soft_targets=None, class_weight=None, teacher=None, verbose=0, strategy=None):
        self.model, self.data, self.teacher = model, data, teacher  # `data`: sizes every worker agrees on
        self.block_pattern = block_pattern
        self.distributed = strategy if distribute.is_multi_worker(strategy) else None
        self.local, self._largest = data, {}
        if self.distributed:
            count, index = distribute.worker_share(strategy)
            self.local = data.shard(count, index)
            shares = {split: [data.shard_positions(split, count, i) for i in range(count)]
                      for split in ("train", "validation")}
            self._largest = {split: max(map(len, rows)) for split, rows in shares.items()}
            if soft_targets is not None:
                soft_targets = {split: tf.nest.map_structure(lambda a, rows=shares[split][index]: a[rows],
                                                             soft_targets[split]) for split in soft_targets}
            if verbose:
                print_line(f"kerasft: worker {index} of {count} reads its shard: " + ", ".join(
                    f"{self.local.size(split)} of {data.size(split)} {split}" for split in ("train", "validation")))
        local = self.local
        if local.targets:
            self.targets = {split: multitask.targets_and_weights(local, split, class_weight if split == "train"
                                                                 else None) for split in ("train", "validation")}
        else:
            self.targets = {split: heads.targets(local.task, local.num_classes, local.labels(split))
                            for split in ("train", "validation")}
        if soft_targets is not None and local.targets:  # (targets, weights): each distilled target's widened
            self.targets = {split: ({t: np.concatenate([y, soft_targets[split][t]], axis=-1) if t in soft_targets[split]
                                     else y for t, y in targets.items()}, weights)
                            for split, (targets, weights) in self.targets.items()}
        elif soft_targets is not None:
            self.targets = {split: np.concatenate([self.targets[split], soft_targets[split]], axis=-1)
                            for split in self.targets}
        self._preprocessed = {}
        needs_pipeline = "all" in cuts or (augmented and any(c != "frozen" for c in cuts))
        cached = [c for c in dict.fromkeys(cuts) if c != "all"]
        self.cache = features.FeatureCache(
            model, local, cuts=cached, directory=cache_directory, spill_directory=spill_directory,
            block_pattern=block_pattern, verbose=verbose,
            preprocessed={s: self.preprocessed(s) for s in ("train", "validation")} if needs_pipeline else None,
        ) if cached else None
        self.cached_cuts = tuple(cached)

    def preprocessed(self, split):
        """A split tokenized or decoded once (cached by tf.data): batches of 64 `(input, label)` in order."""
        if split not in self._preprocessed:
            self._preprocessed[split] = features.preprocess(self.model, getattr(self.local, split), 64,
                                                            num_examples=self.local.size(split))
        return self._preprocessed[split]

    def datasets(self, cut, batch_size, seed, augmentation=0.0, class_weight=None):
        """`(train, validation)`: batches of `(inputs at the cut, targets)`; train reshuffled (seeded) per pass.

        Args:
            cut: str. `"frozen"`, `"top:N"` or `"all"` (the preprocessed input of the whole network).
            batch_size: int. Training examples per batch (validation batches hold 64); global under a strategy.
            seed: int. Seed of the shuffle and the augmentation.
            augmentation: float. Strength of the augmentation of the training input (not at "frozen").
            class_weight: dict or None. One target's `{class id: weight}`, folded into the training batches
                as sample weights (for a distributed dataset, which Keras' `fit` takes no class_weight for).
        """
        validation_batch = 64
        if self.distributed:  # each replica reads its own batches: per-replica sizes
            replicas = self.distributed.num_replicas_in_sync
            batch_size, validation_batch = max(1, batch_size // replicas), max(1, validation_batch // replicas)
        train, validation = self._batches(cut, batch_size, validation_batch, seed, augmentation)
        if class_weight:
            table = tf.constant([class_weight.get(i, 1.0) for i in range(self.local.num_classes)], "float32")
            train = train.map(lambda x, y: (x, y, tf.gather(table, tf.argmax(y, -1))))
        if self.distributed:
            train, validation = (distribute.per_worker_dataset(self.distributed, ds, self._largest[split], size)
                                 for ds, split, size in ((train, "train", batch_size),
                                                         (validation, "validation", validation_batch)))
        else:
            train, validation = features.prefetched(train), features.prefetched(validation)
        return train, validation

    def _batches(self, cut, batch_size, validation_batch, seed, augmentation):
        """This worker's `(train, validation)` batches (`datasets`)."""
        augmented = bool(augmentation) and cut != "frozen"
        if cut in self.cached_cuts and not augmented:
            train = self.cache.dataset(cut, "train", batch_size, shuffle=True, seed=seed, labels=self.targets["train"])
        else:
            if augmented and self.teacher is not None and self.local.modality == "image":
                train = self._taught_views(batch_size, seed, augmentation)
            else:
                pipeline = self._pipeline("train")
                buffer = features.shuffle_buffer(features.example_bytes(pipeline.element_spec, batched=False),
                                                 self.local.size("train"))  # the whole split when it fits in memory
                train = pipeline.shuffle(buffer, seed=seed).batch(batch_size)
                if augmented:  # sequential: the draws follow the batches, so a seed repeats a run
                    augmenter = augment.augmenter(self.model, augmentation, seed)
                    train = train.map(lambda x, y: (augmenter(x), y))
            if cut != "all":
                train = features.Bottom(self.model, [cut], self.block_pattern).map(train, cut)
        if cut in self.cached_cuts:  # validation is never augmented: computed once
            validation = self.cache.dataset(cut, "validation", validation_batch, labels=self.targets["validation"])
        else:
            validation = self._pipeline("validation").batch(validation_batch)
            if cut != "all":
                validation = features.Bottom(self.model, [cut], self.block_pattern).map(validation, cut)
        if self.local.targets:  # (inputs, (targets, weights)) -> (inputs, targets, weights), as Keras takes them
            train, validation = (ds.map(lambda x, y: (x, *y)) for ds in (train, validation))
        return train, validation

    def _taught_views(self, batch_size, seed, augmentation):
        """Shuffled training batches of raw images augmented once for both models: the student's preprocessed
        view, and as targets the one-hot labels beside the teacher's probabilities of that same view."""
        augmenter = augment.augmenter(self.model, augmentation, seed)
        preprocessor = self.model.get_layer("preprocessor")
        labels = tf.data.Dataset.from_tensor_slices(self.targets["train"][:, :self.local.num_classes])

        def view(images, labels):
            images = augmenter(tf.cast(images, "float32"))
            return preprocessor(images), tf.concat([labels, self.teacher(images, training=False)], axis=-1)

        return (features.filled_cache(tf.data.Dataset.zip(self.local.train.map(lambda x, y: x), labels))
                .shuffle(self.local.size("train"), seed=seed).batch(batch_size)
                .map(view))  # sequential: the draws follow the batches, so a seed repeats a run

    def _pipeline(self, split):
        """The preprocessed split, unbatched, with this recipe's targets in place of its labels."""
        size = self.local.size(split)
        inputs = self.preprocessed(split).unbatch().map(lambda x, y: x)
        return (tf.data.Dataset.zip(inputs, tf.data.Dataset.from_tensor_slices(self.targets[split]))
                .apply(tf.data.experimental.assert_cardinality(size)))


# === One phase ===


class _Deadline(keras.callbacks.Callback):
    """Stops a phase before an epoch that would likely overrun the time budget (estimated from the epochs
    done), and mid-epoch once the budget is spent; says what it cut."""

    def __init__(self, deadline, log):
        super().__init__()
        self.deadline, self.log = deadline, log
        self.cut = None

    def on_train_begin(self, logs=None):
        self.started, self.epochs = time.monotonic(), 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        per_epoch = (time.monotonic() - self.started) / self.epochs
        if not self.model.stop_training and time.monotonic() + per_epoch > self.deadline:
            self.model.stop_training = True
            self.cut = f"after {self.epochs} epochs ({per_epoch:.1f} s each, {self._left():.0f} s left)"

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() > self.deadline and not self.model.stop_training:
            self.model.stop_training = True
            self.cut = f"during epoch {self.epochs + 1} (time limit reached)"

    def _left(self):
        return max(0.0, self.deadline - time.monotonic())


class _Progress(keras.callbacks.Callback):
    """A line at the first epoch and then at most every `PROGRESS_SECONDS`: the metrics, the best validation
    loss, seconds per epoch and the most that remains; a line when the phase ends."""

    def __init__(self, name, epochs, log):
        super().__init__()
        self.name, self.epochs, self.log = name, epochs, log

    def on_train_begin(self, logs=None):
        self.started, self.best, self.best_epoch, self.printed = time.monotonic(), math.inf, 0, -math.inf
        self.done = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.done = epoch + 1
        if logs.get("val_loss", math.inf) < self.best:
            self.best, self.best_epoch = logs["val_loss"], epoch + 1
        now = time.monotonic()
        if epoch and now - self.printed < PROGRESS_SECONDS:
            return
        self.printed = now
        per_epoch = (now - self.started) / (epoch + 1)
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items()
                         if k in ("loss", "val_loss") or k.endswith(("accuracy", "mae")))
        self.log(f"kerasft: {self.name} epoch {epoch + 1}/{self.epochs} {shown} (best val_loss {self.best:.4f}) "
                 f"{per_epoch:.1f} s/epoch, at most ~{per_epoch * (self.epochs - epoch - 1):.0f} s left")

    def on_train_end(self, logs=None):
        self.log(f"kerasft: {self.name} ended after {self.done} epochs in {time.monotonic() - self.started:.0f} s; "
                 f"best val_loss {self.best:.4f} at epoch {self.best_epoch}")


class _EarlyStopping(keras.callbacks.Callback):
    """Stops when the validation loss has not improved by `MIN_IMPROVEMENT` (relative) for `patience` epochs, and
    puts the best epoch's weights back at the end.

    With a checkpoint it survives an interruption: it keeps the best epoch's
    weights in the checkpoint, and a resumed phase takes up its best loss and
    the epochs it has waited from the recorded epochs, so the run stops and
    restores exactly as the uninterrupted one would.

    Args:
        patience: int. Epochs to wait (see `auto_patience`).
        checkpoint: `kerasft.checkpoint.Checkpoint` or None.
        phase: int. The phase it watches in `checkpoint`.
    """

    def __init__(self, patience, checkpoint=None, phase=None):
        super().__init__()
        self.patience, self.checkpoint, self.phase = patience, checkpoint, phase

    @property
    def _recorded(self):
        """The epochs of this phase an interrupted run finished (none without a checkpoint)."""
        return self.checkpoint.epochs(self.phase) if self.checkpoint else []

    def _judge(self, current):
        """Counts an epoch; True when `current` is a better validation loss (then the new best)."""
        if np.isfinite(current) and current < self.best * (1 - MIN_IMPROVEMENT):
            self.best, self.wait = current, 0
            return True
        self.wait += 1
        return False

    def _replay(self):
        self.best, self.best_weights, self.wait = math.inf, None, 0
        for logs in self._recorded:
            self._judge(logs.get("val_loss", math.nan))

    def stopped_before_resume(self):
        """True when the recorded epochs already made the phase stop (a kill came before it was finished)."""
        self._replay()
        return bool(self._recorded) and self.wait >= self.patience

    def on_train_begin(self, logs=None):
        self._replay()

    def on_epoch_end(self, epoch, logs=None):
        if self._judge((logs or {}).get("val_loss", math.nan)):
            self.best_weights = self.model.get_weights()
            if self.checkpoint:
                self.checkpoint.save_weights(self.model, f"phase{self.phase}.best")
        if self.wait >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif self.checkpoint and self.checkpoint.has_weights(f"phase{self.phase}.best"):  # best before a resume
            self.checkpoint.load_weights(self.model, f"phase{self.phase}.best")


def auto_patience(part, num_examples):
    """The "auto" patience of a phase training `part` on `num_examples`: about `PATIENCE_WORK` of waiting."""
    work = max(1, sum(int(np.prod(w.shape)) for w in part.trainable_weights)) * max(1, num_examples)
    return int(np.clip(round(PATIENCE_WORK / work), *PATIENCE_BOUNDS))


@dataclasses.dataclass
class PhaseResult:
    """What one phase did: its History, whether the time budget cut it (and how), its best validation loss."""

    history: object
    cut_short: str
    best_val_loss: float


def run_phase(part, train, validation, epochs, optimizer, loss, metrics, class_weight=None, patience=0,
              callbacks=(), deadline=None, name="phase", strategy=None, log=None, keras_verbose=0, loss_weights=None,
              checkpoint=None, phase=None, cpu_bfloat16="auto"):
    """Fits `part` (a model sharing its layers with a classifier) for at most `epochs` with early stopping.

    Args:
        part: keras.Model. What trains: the head wrapper, the top above a cut, or the network.
        train, validation: tf.data.Dataset. Batches of `(inputs, targets)` that `part` takes.
        epochs: int. Most epochs.
        optimizer: callable. Makes the optimizer (inside the strategy's scope, where its slots must be made).
        loss, metrics: as `heads.loss_and_metrics` gives them (or distillation's).
        class_weight: dict or None.
        patience: int. Epochs without a better validation loss before it stops; 0 trains every epoch (no early
            stopping, no restore).
        callbacks: sequence of keras.callbacks.Callback. Extra ones (the user's).
        deadline: float or None. A `time.monotonic()` time no epoch should run past.
        name: str. Names the phase in progress lines.
        strategy: tf.distribute.Strategy or None. Compiles and fits under it.
        log: callable or None. Takes progress lines.
        keras_verbose: int. Keras' own progress output.
        loss_weights: dict or None. A multi-task part's `{target: weight}`; its metrics then skip the rows
            whose sample weight is 0 (missing labels).
        checkpoint: `kerasft.checkpoint.Checkpoint` or None. Makes the phase resumable: each epoch is recorded,
            and a resumed phase starts after its last recorded epoch with its early stopping where it was.
        phase: int. The phase's number in `checkpoint`.
        cpu_bfloat16: "auto", True or False. Fits with oneDNN's bfloat16 rewrite (`distribute.cpu_bfloat16`).

    Returns:
        A `PhaseResult`.
    """
    stop = [_EarlyStopping(patience, checkpoint, phase)] if patience else []
    if stop and stop[0].stopped_before_resume():
        epochs = len(checkpoint.epochs(phase))  # no epoch more: the phase only restores its best weights
    resume = checkpoint.callbacks(phase) if checkpoint else []
    timer = [_Deadline(deadline, log)] if deadline is not None else []
    progress = [_Progress(name, epochs, log)] if log else []
    bfloat16 = distribute.cpu_bfloat16(cpu_bfloat16, part, strategy)
    if bfloat16 and log:
        log(f"kerasft: {name} computes in bfloat16 on the CPU's AMX units (the weights stay float32)")
    with distribute.training_scope(strategy), distribute.cpu_bfloat16_scope(bfloat16):
        # Fresh metrics made here, under the strategy: Keras makes a metric's variables when it is constructed,
        # and ones made outside the scope are each worker's own under MultiWorkerMirroredStrategy (each would
        # report the accuracy of its shard alone). Functions (distillation's accuracy) Keras wraps in compile.
        metrics = keras.tree.map_structure(
            lambda metric: type(metric).from_config(metric.get_config())
            if isinstance(metric, keras.metrics.Metric) else metric, metrics)
        if loss_weights is None:
            part.compile(optimizer=optimizer(), loss=loss, metrics=metrics)
        else:
            part.compile(optimizer=optimizer(), loss=loss, loss_weights=loss_weights, weighted_metrics=metrics)
        # Built here, not lazily inside the traced train step: there each slot variable's creation leaves
        # conditional functions that TensorFlow never frees, about 5 MB a phase (keras-team/keras#20552).
        part.optimizer.build(part.trainable_variables)
        history = part.fit(train, validation_data=validation, epochs=epochs, class_weight=class_weight,
                           shuffle=False, verbose=keras_verbose,
                           callbacks=[*callbacks, keras.callbacks.TerminateOnNaN(), *stop, *resume, *timer,
                                      *progress])  # the best epoch's weights are kept before it is recorded
    # A compiled part would put its optimizer (one of them kerasft's own) and loss into the classifier's
    # `.keras` file, which then needs kerasft and warns on load: keep none.
    part.compiled = False
    losses = [v for v in history.history.get("val_loss", []) if np.isfinite(v)]
    return PhaseResult(history, timer[0].cut if timer else None, min(losses) if losses else math.inf)


def layer_factors(part, block_pattern, layer_decay):
    """Learning-rate multipliers of `part`'s backbone weights: 1 for the top block, `layer_decay` per block below.

    Args:
        part: keras.Model. A network, or the top above a cut (its "backbone" holds the unfrozen blocks).
        block_pattern: str. The backbone's block regex (`models.describe(model).block_pattern`).
        layer_decay: float.
    """
    stem, found = backbones.split_blocks(part.get_layer("backbone").layers, block_pattern)
    factors, depth = {}, 0
    for _, layers in reversed(found):
        for layer in layers:
            for variable in layer.trainable_weights:
                factors[id(variable)] = layer_decay**depth
        depth += 1
    for layer in stem:
        for variable in layer.trainable_weights:
            factors[id(variable)] = layer_decay**depth
    return factors


def head_part(part):
    """The head of a network or of a top above a cut, as a model from `{"features": pooled}` (phase 1)."""
    head = part.get_layer("head")
    features_input = keras.Input(shape=head.input.shape[1:], name="features")
    return keras.Model({"features": features_input}, head(features_input), name="head_part")


# === The recipe ===


def class_weight(setting, data):
    """Resolves a recipe's `class_weight` for a TaskData: "auto" weights classes inversely to their frequency
    when the largest is 1.5x the smallest or more (classification only); a dict or None as given.

    Multi-task data: `{target: weights or None}`, "auto" resolved per target over the rows carrying it; a dict
    names targets (each `{class id: weight}`)."""
    if data.targets:
        if setting != "auto":
            unknown = [name for name in setting or {} if name not in data.targets]
            if unknown:
                raise RecipeError(f"class_weight of multi-task data maps targets to {{class id: weight}}; "
                                  f"{unknown} are not among the targets {list(data.targets)}. "
                                  f"Received: class_weight={setting!r}")
            return setting
        return {name: _balanced(labels[present(labels, target.task)], target.num_outputs)
                if target.task in ("multiclass", "binary") else None
                for name, target in data.targets.items() for labels in [data.labels("train", name)]}
    if setting != "auto":
        return setting
    if data.task not in ("multiclass", "binary"):
        return None
    return _balanced(data.labels("train"), data.num_classes)


def _balanced(labels, num_classes):
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    if counts.min() == 0 or counts.max() / counts.min() < 1.5:
        return None
    return {i: float(counts.sum() / (len(counts) * c)) for i, c in enumerate(counts)}



def train(part, inputs, recipe, modality, task, block_pattern=None, class_weight=None, loss=None, metrics=None,
          callbacks=(), checkpoint=None, deadline=None, strategy=None, log=None, keras_verbose=0, cpu_bfloat16="auto"):
    """Runs the recipe on `part`: the head warm-up on frozen features, then the unfrozen blocks at their cut.

    Args:
        part: keras.Model. The network (`trainable="all"`) or the top above the recipe's cut
            (`features.split_network`, or a `tune` trial model): what phase 2 trains. Its
            trainable flags (and BatchNorm mode) are set by the caller; phase 1 trains its head.
        inputs: Inputs. Gives every phase its batches.
        recipe: Recipe.
        modality: str. Of the classifier (picks the default fine-tuning rate).
        task: str or dict. Of the classifier; a multi-task model's `{target: task}`.
        block_pattern: str or None. The backbone's block regex (per-block rates).
        class_weight: dict or None. Resolved class weights (None for a multi-task model: its `Inputs` hold them).
        loss, metrics: the loss and metrics (default `heads.loss_and_metrics(task, recipe.label_smoothing)`, or
            `multitask.losses_and_metrics` per target).
        callbacks: sequence of keras.callbacks.Callback. Extra callbacks for both phases.
        checkpoint: `kerasft.checkpoint.Checkpoint` or None. Makes the run resumable.
        deadline: float or None. A `time.monotonic()` time no epoch should run past.
        strategy: tf.distribute.Strategy or None. Fits under it.
        log: callable or None. Takes progress lines.
        keras_verbose: int. Keras' own progress output.
        cpu_bfloat16: "auto", True or False. Each phase's fits with oneDNN's bfloat16 rewrite
            (`distribute.cpu_bfloat16`; "auto": a transformer's blocks on a CPU with AMX, not a head alone).

    Returns:
        `(history, notes)`: a `keras.callbacks.History` of both phases (`history["phase"]`
        says 1 or 2 per epoch; a multi-task model's `history.loss_weights` the weights used) and a
        list of lines about what was cut or rolled back.
    """
    multi = isinstance(task, dict)
    if loss is None:
        loss, metrics = (multitask.losses_and_metrics(task, recipe.label_smoothing) if multi
                         else heads.loss_and_metrics(task, recipe.label_smoothing))
    merged, notes = keras.callbacks.History(), []
    merged.history = {}
    head_epochs = recipe.head_epochs
    phase1_best = math.inf
    if head_epochs != 0:
        with distribute.training_scope(strategy):  # a model made outside a strategy cannot fit under it
            head = head_part(part)
    loss_weights = merged.loss_weights = multitask.check_loss_weights(recipe.loss_weights, task) if multi else None
    # Keras' fit takes no class_weight for a distributed dataset: the weights then ride in the batches.
    folded, class_weight = (class_weight, None) if inputs.distributed else (None, class_weight)
    if loss_weights == "balanced":  # on the first phase's first batch, before any phase or restore
        first = (head, inputs.datasets("frozen", recipe.batch_size, recipe.seed)[0]) if head_epochs != 0 else (
            part, inputs.datasets(recipe.trainable, recipe.batch_size, recipe.seed, recipe.augmentation)[0])
        loss_weights, initial = multitask.balanced_loss_weights(*first, loss)
        merged.loss_weights = loss_weights
        _log(log, "kerasft: loss weights " + ", ".join(
            f"{name} {weight:.3g} (initial loss {initial[name]:.3g})" for name, weight in loss_weights.items())
            + ": each target starts with an equal share")
    if head_epochs != 0:
        epochs = head_epochs or HEAD_EPOCHS
        if checkpoint and checkpoint.finished(1):
            checkpoint.restore(1, head)
            history = checkpoint.history(1)
            _log(log, f"kerasft: phase 1 restored from {checkpoint.directory}")
        else:
            train_data, validation = inputs.datasets("frozen", recipe.batch_size, recipe.seed, class_weight=folded)
            _log(log, f"kerasft: phase 1, the head on frozen features (at most {epochs} epochs, learning rate "
                      f"{recipe.learning_rate:g})")
            result = run_phase(
                head, train_data, validation, epochs,
                lambda: keras.optimizers.AdamW(recipe.learning_rate, weight_decay=recipe.weight_decay), loss, metrics,
                class_weight=class_weight, patience=_patience(recipe, head, inputs),
                callbacks=callbacks, deadline=deadline, name="phase 1", strategy=strategy, log=log,
                keras_verbose=keras_verbose, loss_weights=loss_weights, checkpoint=checkpoint, phase=1,
                cpu_bfloat16=cpu_bfloat16)
            history = checkpoint.finish(1, head) if checkpoint else result.history
            if result.cut_short:
                notes.append(f"time limit: phase 1 stopped {result.cut_short}")
        _merge(merged, history, 1)
        phase1_best = _best(history.history.get("val_loss", []))
    if recipe.unfrozen and not (deadline is not None and time.monotonic() >= deadline):
        rate = recipe.block_learning_rate(modality)
        before = part.get_weights()
        if checkpoint and checkpoint.finished(2):
            checkpoint.restore(2, part)
            history = checkpoint.history(2)
        else:
            train_data, validation = inputs.datasets(recipe.trainable, recipe.batch_size, recipe.seed,
                                                     recipe.augmentation, class_weight=folded)
            epochs = recipe.epochs or UNFROZEN_EPOCHS
            _log(log, f"kerasft: phase 2, {recipe.trainable} of the backbone at learning rate {rate:g} (layer decay "
                      f"{recipe.layer_decay}, at most {epochs} epochs)")
            factors = layer_factors(part, block_pattern, recipe.layer_decay)

            def optimizer():
                return DiscriminativeAdam(factors, learning_rate=rate, weight_decay=recipe.weight_decay)
            result = run_phase(
                part, train_data, validation, epochs, optimizer, loss, metrics, class_weight=class_weight,
                patience=_patience(recipe, part, inputs),
                callbacks=callbacks, deadline=deadline, name="phase 2", strategy=strategy, log=log,
                keras_verbose=keras_verbose, loss_weights=loss_weights, checkpoint=checkpoint, phase=2,
                cpu_bfloat16=cpu_bfloat16)
            history = checkpoint.finish(2, part) if checkpoint else result.history
            if result.cut_short:
                notes.append(f"time limit: phase 2 stopped {result.cut_short}")
        _merge(merged, history, 2)
        if recipe.patience and _best(history.history.get("val_loss", [])) > phase1_best:
            part.set_weights(before)  # unfreezing made validation worse than the warmed-up head: keep the head's
            notes.append("phase 2 did not improve the validation loss; kept the phase-1 weights")
    elif recipe.unfrozen:
        notes.append("time limit: phase 2 did not start (no time left after phase 1)")
    for note in notes:
        _log(log, f"kerasft: {note}")
    return merged, notes


def _patience(recipe, part, inputs):
    return auto_patience(part, inputs.data.size("train")) if recipe.patience == "auto" else recipe.patience


def _merge(merged, history, phase):
    for key, values in history.history.items():
        merged.history.setdefault(key, []).extend(values)
    merged.history.setdefault("phase", []).extend([phase] * len(next(iter(history.history.values()), [])))


def _best(losses):
    finite = [loss for loss in losses if np.isfinite(loss)]
    return min(finite) if finite else math.inf


def _log(log, message):
    if log:
        log(message)


def print_line(message):
    """Prints a progress line at once: the `log` of kerasft's long calls when they are verbose."""
    print(message, flush=True)
