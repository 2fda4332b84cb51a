"""`kft.tune`: KerasTuner tuners over a `TransferHyperModel`, with a time budget, and the `Search` they leave."""

import contextlib
import fcntl
import json
import math
import os
import resource
import shutil
import socket
import time
import warnings
from pathlib import Path

import keras_tuner
import numpy as np

from kerasft import backbones, distribute, features, keras_internals, multitask, paths, report
from kerasft.tuning import halving
from kerasft.tuning.hypermodel import TransferHyperModel
from kerasft.tuning.space import TuningError, is_int, is_number, search_space


# === The tuners ===


class _TransferTuner(keras_internals.TunerHooks):
    """What kerasft adds to a KerasTuner tuner: full classifiers back, a line per trial with what remains,
    a time budget, result files, trial checkpoints without optimizer slots."""

    def __init__(self, *args, deadline=None, verbose=1, **kwargs):
        self._verbose, self._deadline = verbose, deadline
        self._started, self._seconds = {}, {}
        self._search_started = time.monotonic()
        super().__init__(*args, **kwargs)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._started[trial.trial_id] = time.monotonic()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        seconds = time.monotonic() - self._started.pop(trial.trial_id, time.monotonic())
        self._seconds[trial.trial_id] = seconds
        record = {
            "seconds": round(seconds, 3),
            "epochs": getattr(self.hypermodel, "epochs_run", None),
            "features": "cached" if self.hypermodel.inputs.cached_cuts else "recomputed",
            "tuner_id": self.tuner_id,  # which worker of a distributed search ran it
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        paths.write_atomic(Path(self.get_trial_dir(trial.trial_id)) / "kerasft_trial.json", json.dumps(record))
        rows = report.search_rows(self.project_dir, self.hypermodel.rules, self.oracle.objective.name)
        self._stop_if_out_of_time()
        if self._verbose:
            print(_trial_line(rows, trial, self.oracle.objective) + " | " + self._eta(rows), flush=True)
        report.write_search_tables(self.project_dir, rows)

    def _stop_if_out_of_time(self):
        """No trial starts that would likely overrun the time limit (estimated from the trials done)."""
        if self._deadline is None or not self._seconds:
            return
        if time.monotonic() + float(np.mean(list(self._seconds.values()))) > self._deadline:
            self.oracle.max_trials = len(self.oracle.trials)  # the oracle then stops the search
            self.stopped_for_time = True

    def _eta(self, rows):
        elapsed = time.monotonic() - self._search_started
        planned = self.oracle.max_trials or len(rows)
        left = max(0, planned - len(rows)) * float(np.mean(list(self._seconds.values())))
        if self._deadline is not None:
            left = min(left, max(0.0, self._deadline - time.monotonic()))
        return f"{len(rows)}/{planned} trials, {elapsed:.0f} s elapsed, about {left:.0f} s left"

    def building(self):
        return _no_optimizer_slots_warning()  # Hyperband loads the checkpoint of the trial it continues here

    def load_model(self, trial):
        with _no_optimizer_slots_warning():
            model = super().load_model(trial)
        return self.hypermodel.full_model(trial.hyperparameters, model)


@contextlib.contextmanager
def _no_optimizer_slots_warning():
    """Silences Keras' note that a checkpoint holds no optimizer slots (`keras_internals.tuner_callbacks`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        yield


class _Tuner(_TransferTuner, keras_tuner.Tuner):
    """A tuner over any oracle (kerasft's successive halving, KerasTuner's random search or Bayesian optimization)."""


class _Hyperband(_TransferTuner, keras_tuner.Hyperband):
    pass


TUNERS = ("halving", "hyperband", "random", "bayesian")


def _trial_line(rows, trial, objective):
    trial_id = trial.trial_id
    row = next(r for r in rows if r["trial"] == trial_id)
    names = [k for k in row if k not in ("trial", "status", objective.name, "epochs", "seconds", "features",
                                         "peak_rss_mb") and row[k] is not None]
    settings = " ".join(f"{k}={report.format_value(row[k])}" for k in names)
    time_taken = f"{row['seconds']:.1f}s, {row['features']} features"
    if row["status"] != "COMPLETED" or row[objective.name] is None:
        reason = (trial.message or "").strip().splitlines()[-1:] or ["no objective value"]
        return f"trial {trial_id} {row['status']} | {settings} | {time_taken} | {reason[0]}"
    scores = [r[objective.name] for r in rows if r[objective.name] is not None and r["status"] == "COMPLETED"]
    best = max(scores) if objective.direction == "max" else min(scores)
    return (f"trial {trial_id} | {settings} | {objective.name}={row[objective.name]:.4f} (best {best:.4f}) "
            f"| {time_taken}")


# === Results ===


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
        if not is_int(k) or not 1 <= k <= max(done, 1) or not done:
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
        """Returns the k best trials' recipes, best first, as `kft.fine_tune`'s keyword arguments.

        Each dict also names the `backbone` and the `head` (`kft.Head`) the recipe was
        found for, which `fine_tune` checks against the model it is given:

        ```python
        hp = search.best_hyperparameters(1)[0]
        model = kft.build_classifier(hp["backbone"], data=data, head=hp["head"], seed=hp["seed"])
        kft.fine_tune(model, data, **hp)   # the same recipe as the trial: the same validation score
        ```

        Args:
            k: int. How many (at most the completed trials).
        """
        return [self.hypermodel.hyperparameters(trial.hyperparameters) for trial in self._best_trials(k)]

    def results(self):
        """Returns one dict per trial, in trial order.

        Keys: `trial`, `status`, every hyperparameter of the space (None when
        inactive), the objective (best epoch's value), `epochs` (run in this
        trial), `seconds`, `features` (`"cached"` or `"recomputed"`) and
        `peak_rss_mb` (the process's peak memory when the trial ended).
        """
        return report.search_rows(self.directory, self.hypermodel.rules, self.objective.name)

    def summary(self):
        """Returns the results table (Markdown) with the best trial and where the files are."""
        rows = self.results()
        done = [r for r in rows if r["status"] == "COMPLETED" and r[self.objective.name] is not None]
        lines = [f"Search in {self.directory}: {len(done)} of {len(rows)} trials completed, "
                 f"objective {self.objective.name} ({self.objective.direction})."]
        if done:
            best = self.tuner.oracle.get_best_trials(1)[0]
            lines.append(f"Best: trial {best.trial_id}, {self.objective.name}={best.score:.4f}.")
        lines += ["", report.markdown_rows(rows), f"Files: results.md, results.csv, results.png in {self.directory}."]
        return "\n".join(lines)

    def __str__(self):
        return self.summary()




# === tune() ===


def tune(data, backbone, tuner="halving", max_trials=10, time_limit=None, directory="runs", project_name=None,
         overwrite=False, cache_features=True, space=None, objective="val_accuracy", epochs=None, seed=0,
         strategy=None, precision="auto", scale_batch=False, pretrained=True, image_size=None, sequence_length=None,
         callbacks=None, verbose=1, cpu_bfloat16="auto"):
    """Searches heads, unfreeze depths and training settings of a backbone on a TaskData with KerasTuner.

    Every trial runs `kft.fine_tune`'s recipe with its hyperparameters, on the
    frozen bottoms' outputs computed once for all trials (see the module
    docstring). The default space: `trainable` (`frozen`, `top:1`, `top:2`),
    head `depth` (0-2) and `units`, `dropout`, `learning_rate` (log),
    `fine_tune_learning_rate` (log, for unfrozen trials), `weight_decay`,
    `label_smoothing`, `batch_size`, and for images and audio `augmentation`
    (unfrozen trials; their phase 2 recomputes the bottom per pass).

    Args:
        data: TaskData. Trials train on `train` and are scored on `validation`.
        backbone: str or BackboneSpec. A name from `kft.backbones.names()`, etc.
        tuner: str. `"halving"` (successive halving over unfreeze depths, cheap
            frozen trials first: `kerasft.tuning.halving`), `"hyperband"` (its reduction
            factor is chosen so that its schedule fits `max_trials`), `"random"`
            or `"bayesian"`.
        max_trials: int. Trials to run, in total over resumed runs.
        time_limit: float or None. Seconds the search may take: no trial starts
            that would likely overrun it (estimated from the trials done), the
            running one stops its epochs in time, and the trials done are kept.
        directory: str or Path. Where searches are kept.
        project_name: str or None. The search's folder in `directory`
            (default: `<data>_<backbone>_<tuner>`).
        overwrite: bool. Delete an existing search there first; False resumes
            it (completed trials are kept, an interrupted one runs again).
        cache_features: bool, "disk", str or Path. True: keep the frozen
            bottoms' outputs in memory (a cut too big for memory goes to
            `<search>/features`); "disk": on disk in `<search>/features`, so a
            resumed search reuses them; a folder: on disk there.
        space: dict or None. Narrows or replaces the default space, e.g.
            `{"trainable": "frozen", "units": [128, 256], "learning_rate": (1e-3, 1e-1, "log")}`.
        objective: str or keras_tuner.Objective. A logged metric:
            `val_accuracy`, `val_loss`, `accuracy`, `loss` (regression:
            `val_mae`, `mae`, ...).
        epochs: int or None. Most epochs of a trial's last phase (None: until
            validation stops improving, as `fine_tune`); Hyperband's most (default 10).
        seed: int. Seeds the tuner, the classifiers' initialization and the shuffles.
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
        verbose: int. 0 silent; 1 a line per trial with what remains of the
            search; 2 also every trial's epochs.
        cpu_bfloat16: "auto", True or False. Trials train with oneDNN's
            bfloat16 rewrite, as in `kft.fine_tune`.

    Returns:
        A `Search`: `best_models(k)`, `best_hyperparameters(k)`, `results()`, `summary()`.

    Example:
    >>> search = kft.tune(data, backbone="minilm_l6", time_limit=300, directory="runs/bbc")
    >>> print(search.summary())
    """
    # === Arguments, before any work ===
    start = time.monotonic()
    if tuner not in TUNERS:
        raise TuningError(f"tuner must be one of {', '.join(TUNERS)}. Received: tuner={tuner!r}")
    if not is_int(max_trials) or max_trials < 1:
        raise TuningError(f"max_trials must be an integer >= 1. Received: max_trials={max_trials!r}")
    if epochs is not None and (not is_int(epochs) or epochs < 1):
        raise TuningError(f"epochs must be None or an integer >= 1. Received: epochs={epochs!r}")
    if time_limit is not None and (not is_number(time_limit) or not time_limit > 0):
        raise TuningError(f"time_limit is a number of seconds > 0. Received: time_limit={time_limit!r}")
    try:
        distribute.check_cpu_bfloat16(cpu_bfloat16)
    except distribute.DistributeError as error:
        raise TuningError(str(error)) from None
    if not hasattr(data, "fingerprint"):
        raise TuningError(f"tune needs a kft TaskData (from kft.data or kft.samples). Received: {type(data).__name__}")
    if data.size("validation") == 0:
        raise TuningError(f"tune scores trials on the validation split, and {data.name!r} has none. "
                          "Load the data with a validation_split > 0.")
    spec = backbones.get(backbone)
    if not backbones.takes(spec, data.modality):
        raise TuningError(f"Backbone {spec.name!r} takes {spec.modality} input but the data is {data.modality}. "
                          f"Pick one of kft.backbones.names({data.modality!r}).")
    objective = _objective(objective, data.task, multitask.targets_of(data))
    if cache_features is False or not (isinstance(cache_features, (bool, str))
                                       or isinstance(cache_features, os.PathLike)):
        raise TuningError('cache_features must be True, "disk" or a folder (trials that augment recompute their '
                          f"inputs by themselves). Received: cache_features={cache_features!r}")
    rules = search_space(space, data.modality, data.task)  # blocks: checked once built
    project_name = project_name or f"{backbones.short_name(data.name)}_{backbones.short_name(spec.name)}_{tuner}"
    project_dir = Path(directory) / project_name
    distributed = keras_internals.has_chief_oracle()
    deadline = None if time_limit is None else start + time_limit

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
            scale_batch=scale_batch, deadline=deadline, verbose=verbose, cpu_bfloat16=cpu_bfloat16)
        bottom_key = features.cache_key(hypermodel.reference, data, "frozen")
        key.update({name: bottom_key[name] for name in ("architecture", "weights", "preprocessing")})
        _check_directory(project_dir, key)
        project_dir.mkdir(parents=True, exist_ok=True)
        if not (project_dir / "kerasft_search.json").exists():
            paths.write_atomic(project_dir / "kerasft_search.json", json.dumps(key, indent=1))

        # === KerasTuner (its state files written whole: a killed search resumes) ===
        with keras_internals.atomic_tuner_state():
            search_tuner = _make_tuner(tuner, hypermodel, objective, max_trials, epochs, seed, directory,
                                       project_name, strategy, deadline, verbose)
            done = sum(t.status == "COMPLETED" for t in getattr(search_tuner.oracle, "trials", {}).values())
            if verbose and done:
                print(f"kerasft: resuming {project_dir}: {done} trials completed, up to {max_trials} in all",
                      flush=True)
            search_tuner.search(callbacks=list(callbacks or []), verbose=0 if verbose < 2 else 1)

    search = Search(search_tuner)
    rows = search.results()
    report.write_search_tables(project_dir, rows)
    report.plot_search(project_dir, rows, search.objective)
    if verbose and deadline is not None:
        finished = sum(r["status"] == "COMPLETED" for r in rows)
        cut = " (the time limit stopped it)" if getattr(search_tuner, "stopped_for_time", False) else ""
        print(f"kerasft: search ended after {time.monotonic() - start:.0f} s of {time_limit:g}: {finished} of "
              f"{max_trials} trials completed{cut}", flush=True)
    return search


def _make_tuner(tuner, hypermodel, objective, max_trials, epochs, seed, directory, project_name, strategy, deadline,
                verbose):
    kwargs = dict(hypermodel=hypermodel, directory=str(directory), project_name=project_name, overwrite=False,
                  distribution_strategy=strategy, deadline=deadline, verbose=verbose)
    if tuner == "hyperband":
        epochs = epochs or 10
        factor, planned = _hyperband_factor(epochs, max_trials)
        search_tuner = _Hyperband(objective=objective, seed=seed, max_epochs=epochs, factor=factor,
                                  hyperband_iterations=math.ceil(max_trials / planned), **kwargs)
        search_tuner.oracle.max_trials = max_trials  # Hyperband has no max_trials of its own
        if verbose and planned > max_trials:
            print(f"kerasft: Hyperband's schedule for {epochs} epochs has {planned} trials at best (factor "
                  f"{factor}); max_trials={max_trials} stops it early", flush=True)
        return search_tuner
    if tuner == "halving":
        depths = hypermodel.cuts
        oracle = halving.SuccessiveHalvingOracle(objective=objective, max_trials=max_trials, depths=depths,
                                                 sample=hypermodel.sample, deepen=hypermodel.deepen, seed=seed)
        if verbose:
            print("kerasft: successive halving over " + ", ".join(
                f"{size} trials at {depth}" for size, depth in zip(oracle.sizes, depths)), flush=True)
    elif tuner == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(objective=objective, max_trials=max_trials, seed=seed)
    else:
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(objective=objective, max_trials=max_trials, seed=seed)
    return _Tuner(oracle=oracle, **kwargs)


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


def _objective(objective, task, tasks=None):
    """Checks that a trial logs the objective; returns it as KerasTuner takes it.

    A multi-task search (`tasks`: `{target: task}`) logs each target's metric (`val_<target>_accuracy`,
    `val_<target>_mae`) and `val_accuracy`, the mean of its classification targets' accuracies (`val_mae`, the
    mean of the regression targets' errors, when none is a classification target).
    """
    metric = "mae" if task == "regression" else "accuracy"
    logged = ["loss", "val_loss", metric, f"val_{metric}"]
    if tasks:
        metric = "accuracy" if any(t != "regression" for t in tasks.values()) else "mae"
        logged = ["loss", "val_loss", metric, f"val_{metric}"] + [
            f"{prefix}{target}_{'mae' if t == 'regression' else 'accuracy'}" for target, t in tasks.items()
            for prefix in ("val_", "")]
    if isinstance(objective, keras_tuner.Objective):
        names = [objective.name]
    elif isinstance(objective, (list, tuple)):
        names = [getattr(o, "name", o) for o in objective]
    else:
        names = [objective]
    unknown = [name for name in names if name not in logged]
    if unknown:
        raise TuningError(f"objective={objective!r} is not logged by a trial of a "
                          f"{'multi-task' if tasks else task} search; a trial logs {', '.join(logged)}.")
    if tasks and isinstance(objective, str):  # KerasTuner knows no direction for a target's metric name
        return keras_tuner.Objective(objective, "max" if objective.endswith("accuracy") else "min")
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
