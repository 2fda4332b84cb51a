"""Interruption: `kill -9` at a random point must never cost finished work (fine_tune, tune, export)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

JOBS = Path(__file__).with_name("jobs.py")


def _epochs_logged(run_json):
    try:
        state = json.loads(run_json.read_text())
    except (OSError, ValueError):
        return 0
    return sum(len(phase["epochs"]) for phase in state["phases"].values())


def _run(*args, timeout=300):
    result = subprocess.run([sys.executable, str(JOBS), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


def test_fine_tune_resumes_after_kill_9_with_the_same_epochs_and_as_good(tmp_path):
    _run("fine_tune", "-", tmp_path / "uninterrupted.json")
    reference = json.loads((tmp_path / "uninterrupted.json").read_text())

    checkpoint = tmp_path / "checkpoint"
    kill_after = random.Random().randint(2, 12)  # 8 head epochs, then 6 with the top block: either phase
    process = subprocess.Popen([sys.executable, str(JOBS), "fine_tune", str(checkpoint), str(tmp_path / "x.json"),
                                "slow"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while _epochs_logged(checkpoint / "run.json") < kill_after:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    logged = _epochs_logged(checkpoint / "run.json")
    assert 2 <= logged < 14, f"killed after {logged} epochs"

    _run("fine_tune", checkpoint, tmp_path / "resumed.json")
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["history"]["phase"] == reference["history"]["phase"] == [1] * 8 + [2] * 6
    # As good: the same validation-loss curve up to the reshuffled epochs after the restart.
    assert resumed["history"]["val_loss"][-1] <= reference["history"]["val_loss"][-1] + 0.01
    assert resumed["history"]["val_loss"][:logged] == pytest.approx(reference["history"]["val_loss"][:logged],
                                                                    abs=1e-6)


def test_a_checkpoint_folder_of_another_run_is_refused(tiny_cnn, tiny_image_data, tmp_path):
    import kerasft as kft

    model = kft.build_classifier("tiny_cnn", data=tiny_image_data)
    kft.fine_tune(model, tiny_image_data, epochs=1, verbose=0, checkpoint_dir=tmp_path)
    with pytest.raises(kft.checkpoint.CheckpointError,
                       match=r"holds the checkpoint of another fine_tune run .*'epochs'"):
        kft.fine_tune(model, tiny_image_data, epochs=2, verbose=0, checkpoint_dir=tmp_path)


def test_export_killed_mid_write_leaves_earlier_versions_whole_and_no_partial_one(tmp_path):
    folder = tmp_path / "export"
    _run("export", folder, 1)
    first = sorted(p.name for p in folder.iterdir())
    process = subprocess.Popen([sys.executable, str(JOBS), "export", str(folder), "50"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not any(p.name.startswith(".tmp-") for p in folder.iterdir()):  # mid-write of version 2 or later
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.01)
        time.sleep(random.Random().uniform(0, 0.5))
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    versions = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    assert versions == list(range(1, len(versions) + 1))
    for version in versions:  # every visible version is complete and loads
        assert (folder / str(version) / "saved_model.pb").exists()
        assert (folder / str(version) / "assets.extra" / "labels.txt").exists()
    assert {"1", "model.keras", "labels.txt", "model_card.json"} <= set(first)

    import kerasft as kft

    predictor = kft.load(folder / str(versions[-1]))  # the newest visible version serves
    assert predictor.predict(__import__("numpy").zeros((1, 32, 32, 3), "uint8")).shape == (1, 2)


def test_a_phase_interrupted_after_its_best_epoch_stops_and_restores_as_the_uninterrupted_one(tiny_cnn, tmp_path):
    import keras
    import numpy as np

    import kerasft as kft

    # Random labels: the head overfits, so validation loss is best early and early stopping ends the phase.
    rng = np.random.default_rng(1)
    data = kft.data.from_arrays(rng.integers(0, 256, (96, 32, 32, 3), dtype="uint8"), rng.integers(0, 2, 96), seed=0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # before the checkpoint records the epoch
            if epoch == at:
                raise KeyboardInterrupt

    def run(checkpoint_dir=None, callbacks=None):
        model = kft.build_classifier("tiny_cnn", data=data, seed=0)
        history = kft.fine_tune(model, data, trainable="frozen", epochs=100, learning_rate=0.05, patience=4, verbose=0,
                                checkpoint_dir=checkpoint_dir, callbacks=callbacks)
        return history.history["val_loss"], model.get_weights()

    reference, expected = run()
    assert 5 <= len(reference) < 100, "the reference run must stop early (its best epoch, then 4 without progress)"
    for at in (len(reference) - 3, len(reference) - 1):  # waiting mid-way; the stopping epoch run but not recorded
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / f"at{at}", [Interrupt()])
        resumed, weights = run(tmp_path / f"at{at}")
        # It stops at the same epoch (the epochs after the restart see another shuffle, so their losses differ),
        assert len(resumed) == len(reference) and resumed[:at] == pytest.approx(reference[:at], abs=1e-6)
        for w, w_expected in zip(weights, expected, strict=True):  # and restores the best one, recorded before
            np.testing.assert_allclose(w, w_expected, atol=1e-6)
