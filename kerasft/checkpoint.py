"""Resumable `fine_tune` runs: each epoch's state in a folder, finished phases kept, a killed run resumed.

A run's folder:
```
checkpoint_dir/
  run.json                      what the run is (refuses another run's folder), each phase's epoch logs, and
                                the size and SHA-256 of every weights file below; its own checksum
  phase<N>.last-<k>.weights.h5  the last finished epoch: weights + optimizer state (the epoch is in run.json)
  phase<N>-<k>.weights.h5       a finished phase's final weights (phase 2: the network's)
  phase<N>.best-<k>.weights.h5  the best epoch so far, so a resumed early stopping can restore it
```
Every file is written under a temporary name, flushed and renamed into
place, and only then recorded in `run.json` (itself written the same way);
the file it replaces goes after. A kill at any moment leaves `run.json`
naming whole files, so the run resumes from its last recorded epoch. A
weights file or `run.json` altered on disk is refused (`CheckpointError`
naming it), never loaded. A full disk raises `kerasft.paths.DiskFullError`
naming the folder and the space needed; the files recorded before stay whole.
"""

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from kerasft import keras_internals, paths


class CheckpointError(ValueError):
    """A checkpoint folder holds another run's state, or a file in it is damaged."""


class Checkpoint:
    """The resumable state of one `fine_tune` call in a folder (see the module docstring).

    Args:
        directory: str or Path. The run's folder (created when missing).
        key: dict. What the run is; a folder holding another key is refused.

    Example:
    >>> checkpoint = Checkpoint("runs/photos", {"model": ..., "data": data.fingerprint(), "epochs": 5})
    >>> model.fit(..., callbacks=checkpoint.callbacks(phase=2))  # resumes at the last recorded epoch
    >>> checkpoint.finish(2, model)
    """

    def __init__(self, directory, key):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._state_path = self.directory / "run.json"
        for leftover in self.directory.glob(".tmp-*"):  # a write a kill interrupted; never recorded
            leftover.unlink()
        key = json.loads(json.dumps(key, default=str))
        if self._state_path.exists():
            self.state = self._read_state()
            if self.state.get("key") != key:
                changed = sorted(k for k in key if self.state.get("key", {}).get(k) != key[k])
                raise CheckpointError(
                    f"{self.directory} holds the checkpoint of another fine_tune run (it differs in {changed}). "
                    "Pass another checkpoint_dir, or delete that folder to start over.")
        else:
            self.state = {"key": key, "phases": {}, "files": {}, "written": 0}
            self._save()

    # === run.json ===

    def _read_state(self):
        try:
            state = paths.read_json(self._state_path)
        except paths.CorruptFileError as error:
            raise self._refused(error) from None
        if not isinstance(state, dict) or state.get("checksum") != _checksum(state):
            raise self._refused(paths.CorruptFileError(
                f"{self._state_path} is corrupt: its checksum does not match its content.", self._state_path))
        return state

    def _refused(self, error):
        return CheckpointError(f"{error} The checkpoint in {self.directory} is refused rather than resumed from "
                               "damaged state; delete that folder to start the run over.")

    def _save(self):
        self.state["checksum"] = _checksum(self.state)
        paths.write_atomic(self._state_path, json.dumps(self.state, indent=1))

    def _phase(self, phase):
        return self.state["phases"].setdefault(str(phase), {"finished": False, "epochs": []})

    # === Weights files ===

    def save_weights(self, model, role):
        """Writes `model`'s weights (and optimizer state, when it has one) as the file of `role`, then records it.

        The new file gets a new name, is renamed into place and recorded in
        `run.json` before the previous file of that role is removed, so a kill
        at any moment leaves a recorded, whole file.

        Args:
            model: keras.Model.
            role: str. What the file is (e.g. `"phase1"`, `"phase2.best"`, `"phase2.last"`).
        """
        self.state["written"] += 1
        name = f"{role}-{self.state['written']}.weights.h5"
        needed = sum(np.prod(v.shape, dtype=np.int64) * np.dtype(v.dtype).itemsize
                     for v in (*model.weights, *getattr(model.optimizer, "variables", ())))
        with paths.staged(self.directory / name, needed=int(needed), what=f"the {role} checkpoint") as temporary:
            model.save_weights(temporary)
        previous = self.state["files"].get(role)
        self.state["files"][role] = {"file": name, **paths.checksums(self.directory, [name])[name]}
        try:
            self._save()
        except BaseException:
            (self.directory / name).unlink(missing_ok=True)  # never recorded: the previous file stays the one
            self.state["files"][role] = previous
            raise
        if previous:
            (self.directory / previous["file"]).unlink(missing_ok=True)

    def has_weights(self, role):
        """True when a weights file of `role` was recorded."""
        return role in self.state["files"]

    def load_weights(self, model, role):
        """Loads the recorded weights file of `role` into `model` after checking its size and SHA-256.

        Raises:
            CheckpointError: the file is missing, truncated or altered (named in the message).
        """
        entry = self.state["files"][role]
        try:
            paths.check_checksums(self.directory, {entry["file"]: entry})
        except paths.CorruptFileError as error:
            raise self._refused(error) from None
        model.load_weights(self.directory / entry["file"])

    def drop_weights(self, role):
        """Forgets the weights file of `role` and removes it."""
        entry = self.state["files"].pop(role, None)
        self._save()
        if entry:
            (self.directory / entry["file"]).unlink(missing_ok=True)

    # === Phases ===

    def callbacks(self, phase):
        """The callbacks that make a phase's `fit` resumable: `[EpochCheckpoint]`."""
        return [EpochCheckpoint(self, phase)]

    def log_epoch(self, phase, epoch, logs, model):
        """Records a finished epoch: its logs, and the model's state to resume after it."""
        self.save_weights(model, f"phase{phase}.last")
        epochs = self._phase(phase)["epochs"]
        del epochs[epoch:]  # an epoch run again after a resume replaces its earlier record
        epochs.append({k: float(v) for k, v in (logs or {}).items()})
        self._save()

    def epochs(self, phase):
        return self._phase(phase)["epochs"]

    def finished(self, phase):
        return self._phase(phase)["finished"] and self.has_weights(f"phase{phase}")

    def finish(self, phase, model):
        """Keeps the phase's final weights; returns its whole history (every attempt's epochs, in order)."""
        self.save_weights(model, f"phase{phase}")
        self._phase(phase)["finished"] = True
        self.drop_weights(f"phase{phase}.last")
        self.drop_weights(f"phase{phase}.best")
        return self.history(phase)

    def restore(self, phase, model):
        self.load_weights(model, f"phase{phase}")

    def history(self, phase):
        """The phase's epochs, from every attempt, as a `keras.callbacks.History`."""
        history = keras.callbacks.History()
        history.history, history.epoch = {}, list(range(len(self.epochs(phase))))
        for epoch in self.epochs(phase):
            for key, value in epoch.items():
                history.history.setdefault(key, []).append(value)
        return history


def _checksum(state):
    content = {k: v for k, v in state.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the model's state after every epoch and, when a run is resumed, restores it and starts `fit` after it.

    Does what `keras.callbacks.BackupAndRestore` does, through `Checkpoint`'s
    checked files (a damaged one is refused, not loaded) and with the epoch's
    logs, which BackupAndRestore does not keep.
    """

    def __init__(self, checkpoint, phase):
        super().__init__()
        self.checkpoint, self.phase = checkpoint, phase

    def on_train_begin(self, logs=None):
        done = len(self.checkpoint.epochs(self.phase))
        if done and self.checkpoint.has_weights(f"phase{self.phase}.last"):
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)  # its state is in the file too
            self.checkpoint.load_weights(self.model, f"phase{self.phase}.last")
            keras_internals.start_next_fit_at(self.model, done)

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoint.log_epoch(self.phase, epoch, logs, self.model)

    def on_train_end(self, logs=None):
        keras_internals.start_next_fit_at(self.model, None)  # a later fit of this model starts where told
