"""Resumable `fine_tune` runs: each epoch's state in a folder, finished phases kept, a killed run resumed.

A run's folder:
```
checkpoint_dir/
  run.json              what the run is (refuses another run's folder) and each phase's epoch logs
  phase1/ phase2/       Keras BackupAndRestore: last epoch's weights + optimizer state + epoch number
  phase1.weights.h5     a finished phase's final weights (phase 2: the network's)
  phase<N>.best.weights.h5  the best epoch so far, so a resumed EarlyStopping can restore it
```
"""

import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from kerasft import paths


class CheckpointError(ValueError):
    """A checkpoint folder holds another run's state."""


class Checkpoint:
    """The resumable state of one `fine_tune` call in a folder.

    ```
    checkpoint_dir/
      run.json              what the run is (refuses another run's folder) and each phase's epoch logs
      phase1/ phase2/       Keras BackupAndRestore: last epoch's weights + optimizer state + epoch number
      phase1.weights.h5     a finished phase's final weights (phase 2: the network's)
      phase<N>.best.weights.h5  the best epoch so far, so a resumed EarlyStopping can restore it
    ```
    """

    def __init__(self, directory, key):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._state_path = self.directory / "run.json"
        key = json.loads(json.dumps(key, default=str))
        if self._state_path.exists():
            self.state = json.loads(self._state_path.read_text())
            if self.state.get("key") != key:
                changed = sorted(k for k in key if self.state.get("key", {}).get(k) != key[k])
                raise CheckpointError(
                    f"{self.directory} holds the checkpoint of another fine_tune run (it differs in {changed}). "
                    "Pass another checkpoint_dir, or delete that folder to start over.")
        else:
            self.state = {"key": key, "phases": {}}
            self._save()

    def _phase(self, phase):
        return self.state["phases"].setdefault(str(phase), {"finished": False, "epochs": []})

    def _save(self):
        paths.write_atomic(self._state_path, json.dumps(self.state, indent=1))

    def save_weights(self, model, path):
        """`model.save_weights` through a temporary name: a kill mid-write leaves the previous file whole."""
        temporary = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
        model.save_weights(temporary)
        os.replace(temporary, path)

    def callbacks(self, phase):
        return [keras.callbacks.BackupAndRestore(str(self.directory / f"phase{phase}"), delete_checkpoint=False),
                EpochLog(self, phase)]

    def log_epoch(self, phase, epoch, logs):
        epochs = self._phase(phase)["epochs"]
        del epochs[epoch:]  # an epoch run again after a resume replaces its earlier record
        epochs.append({k: float(v) for k, v in (logs or {}).items()})
        self._save()

    def epochs(self, phase):
        return self._phase(phase)["epochs"]

    def weights_path(self, phase, kind="final"):
        return self.directory / (f"phase{phase}.weights.h5" if kind == "final" else f"phase{phase}.best.weights.h5")

    def finished(self, phase):
        return self._phase(phase)["finished"] and self.weights_path(phase).exists()

    def finish(self, phase, model):
        """Keeps the phase's final weights; returns its whole history (every attempt's epochs, in order)."""
        self.save_weights(model, self.weights_path(phase))
        self._phase(phase)["finished"] = True
        self._save()
        shutil.rmtree(self.directory / f"phase{phase}", ignore_errors=True)
        return self.history(phase)

    def restore(self, phase, model):
        model.load_weights(self.weights_path(phase))

    def history(self, phase):
        """The phase's epochs, from every attempt, as a `keras.callbacks.History`."""
        history = keras.callbacks.History()
        history.history, history.epoch = {}, list(range(len(self.epochs(phase))))
        for epoch in self.epochs(phase):
            for key, value in epoch.items():
                history.history.setdefault(key, []).append(value)
        return history


class EpochLog(keras.callbacks.Callback):
    """Records each epoch's logs in the checkpoint (BackupAndRestore keeps only the epoch number)."""

    def __init__(self, checkpoint, phase):
        super().__init__()
        self.checkpoint, self.phase = checkpoint, phase

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoint.log_epoch(self.phase, epoch, logs)


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that picks up where a killed run left it: best value, patience count, best weights."""

    def __init__(self, checkpoint, phase, **kwargs):
        super().__init__(**kwargs)
        self.checkpoint, self.phase = checkpoint, phase

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        losses = [e.get(self.monitor, np.inf) for e in self.checkpoint.epochs(self.phase)]
        best_path = self.checkpoint.weights_path(self.phase, "best")
        if losses and best_path.exists():
            best = int(np.argmin(losses))
            self.best, self.best_epoch, self.wait = losses[best], best, len(losses) - 1 - best
            current = self.model.get_weights()
            self.model.load_weights(best_path)
            self.best_weights = self.model.get_weights()
            self.model.set_weights(current)

    def on_epoch_end(self, epoch, logs=None):
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best is not None and self.best != before:
            self.checkpoint.save_weights(self.model, self.checkpoint.weights_path(self.phase, "best"))
