"""kerasft.distribute: strategy resolution, precision, and real multi-process training and tuning on loopback."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasft as kft
from kerasft import distribute

JOB = Path(__file__).parent / "distribute_job.py"
TWO_WORKERS = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}'


# === Resolution logic (pure: every branch, GPUs and TPUs included) ===


@pytest.mark.parametrize("kind, tf_config, gpus, tpu, expected", [
    ("auto", None, 0, None, "default"),
    ("auto", None, 1, None, "default"),
    ("auto", None, 4, None, "mirrored"),
    ("auto", TWO_WORKERS, 0, None, "multi_worker"),
    ("auto", TWO_WORKERS, 4, None, "multi_worker"),
    ("auto", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', 0, None, "default"),
    ("auto", '{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}', 0, None,
     "multi_worker"),
    ("auto", TWO_WORKERS, 4, "local", "tpu"),
    ("cpu", TWO_WORKERS, 4, None, "cpu"),
    ("mirrored", None, 0, None, "mirrored"),
    ("multi_worker", TWO_WORKERS, 0, None, "multi_worker"),
])
def test_auto_resolution_follows_the_machine(kind, tf_config, gpus, tpu, expected):
    assert distribute.resolve_kind(kind, tf_config=tf_config, num_gpus=gpus, tpu=tpu) == expected


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "horovod"}, "Unknown strategy kind 'horovod'"),
    ({"kind": "multi_worker"}, "needs TF_CONFIG naming the cluster"),
    ({"kind": "auto", "tf_config": "{not json"}, "TF_CONFIG is not a valid cluster description"),
    ({"kind": "auto", "tf_config": '{"task": {}}'}, "TF_CONFIG is not a valid cluster description"),
])
def test_bad_strategy_requests_are_refused(kwargs, message):
    with pytest.raises(distribute.DistributeError, match=message):
        distribute.resolve_kind(**kwargs)


def test_strategy_on_this_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert distribute.strategy() is tf.distribute.get_strategy()
    assert isinstance(distribute.strategy("cpu"), tf.distribute.OneDeviceStrategy)
    with pytest.raises(distribute.DistributeError, match="needs a GPU"):
        distribute.strategy("gpu")


@pytest.mark.parametrize("devices, expected", [
    (["CPU"], "float32"),
    (["/cpu:0", "/cpu:1"], "float32"),
    (["/job:localhost/replica:0/task:0/device:GPU:0", "/job:localhost/replica:0/task:0/device:GPU:1"],
     "mixed_float16"),
    (["/job:worker/replica:0/task:0/device:TPU:0"], "mixed_bfloat16"),
])
def test_auto_precision_follows_the_devices(devices, expected):
    assert distribute.precision_policy("auto", devices=devices) == expected


def test_precision_on_this_cpu_and_explicit_choices():
    assert distribute.precision_policy() == "float32"
    assert distribute.precision_policy(strategy=distribute.strategy("cpu")) == "float32"
    assert distribute.precision_policy("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(distribute.DistributeError, match="Unknown precision 'fp8'"):
        distribute.precision_policy("fp8")


def test_mixed_precision_is_scoped_to_the_build_and_the_output_stays_float32(tiny_cnn, tiny_image_data):
    keras.utils.set_random_seed(0)
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # restored after the call
    backbone = model.get_layer("network").get_layer("backbone")
    assert backbone.get_layer("block1_conv").dtype_policy.name == "mixed_bfloat16"
    assert backbone.get_layer("block1_conv").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    history = kft.fine_tune(model, tiny_image_data, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(np.zeros((2, 32, 32, 3), "uint8"), verbose=0).dtype == np.float32
    with pytest.raises(kft.models.ClassifierError):  # a failed build restores the policy too
        kft.build_classifier("tiny_cnn", data=tiny_image_data, precision="mixed_float16", image_size=4)
    assert keras.config.dtype_policy().name == "float32"


def _bfloat16_option():
    return tf.config.optimizer.get_experimental_options().get("auto_mixed_precision_onednn_bfloat16", False)


class _OptionAtEachFit(keras.callbacks.Callback):
    """Records whether the bfloat16 rewrite is on when each fit (phase) begins."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_begin(self, logs=None):
        self.seen.append(_bfloat16_option())


def test_cpu_bfloat16_trains_a_transformer_as_well_and_leaves_the_model_float32(tiny_bert, tiny_text_data,
                                                                                 tiny_cnn, capsys):
    def trained(setting):
        model = kft.build_classifier("tiny_bert", data=tiny_text_data, trainable="all", seed=0)
        option = _OptionAtEachFit()
        history = kft.fine_tune(model, tiny_text_data, epochs=10, warmup_epochs=2, learning_rate=3e-2,
                                fine_tune_learning_rate=3e-3, patience=0, cpu_bfloat16=setting, callbacks=[option])
        return model, history, option.seen

    bert, history, seen = trained(True)
    assert seen == [True, True]  # the head phase and the blocks' phase
    assert "phase 2 computes in bfloat16 on the CPU's AMX units" in capsys.readouterr().out
    assert not _bfloat16_option()  # put back after the call
    assert {w.dtype for w in bert.weights} <= {"float32", "int32", "int64", "bool"}
    assert bert.get_layer("network").get_layer("backbone").dtype_policy.name == "float32"
    float32_model, _, seen = trained(False)
    assert seen == [False, False] and "bfloat16" not in capsys.readouterr().out
    float32 = kft.evaluate(float32_model, tiny_text_data)["accuracy"]
    assert kft.evaluate(bert, tiny_text_data)["accuracy"] >= min(0.7, float32 - 0.1)
    assert history.history["loss"][-1] < history.history["loss"][2]  # phase 2 learned
    # "auto": never for the head alone; for the blocks of a transformer when this CPU has AMX.
    assert trained("auto")[2] == [False, distribute.has_amx_bfloat16()]
    cnn = kft.build_classifier("tiny_cnn", num_classes=2, seed=0)
    assert distribute.cpu_bfloat16("auto", cnn) is False  # convolutions train slower with it
    assert distribute.cpu_bfloat16(True, cnn) is True and distribute.cpu_bfloat16(False, bert) is False
    with pytest.raises(kft.training.TrainingError, match="cpu_bfloat16 is \"auto\", True or False. Received: "
                                                         "cpu_bfloat16='yes'"):
        kft.fine_tune(bert, tiny_text_data, cpu_bfloat16="yes")


def test_cpu_bfloat16_true_on_a_cpu_without_amx_warns_before_any_work_and_is_honoured(tiny_bert, tiny_text_data,
                                                                                       monkeypatch):
    bert = kft.build_classifier("tiny_bert", num_classes=2, seed=0)
    monkeypatch.setattr(distribute, "has_amx_bfloat16", lambda: False)  # a CPU this machine cannot be
    with pytest.warns(RuntimeWarning, match=r"cpu_bfloat16=True on a CPU without AMX bfloat16 units.*usually slower"):
        with pytest.raises(kft.training.TrainingError, match="epochs"):  # the warning came before the bad epochs
            kft.fine_tune(bert, tiny_text_data, cpu_bfloat16=True, epochs=0)
    assert distribute.cpu_bfloat16(True, bert) is True
    assert distribute.cpu_bfloat16("auto", bert) is False  # a transformer, yet float32 without AMX


# === Batch sizes, scopes, KerasTuner's environment ===


def test_batch_sizes_are_checked():
    # Scaling over 2 replicas is checked in the mirrored process (test_mirrored_over_two_logical_cpus_...).
    with pytest.raises(distribute.DistributeError, match="batch_size must be a positive integer"):
        distribute.scaled_batch_size(0)


def test_a_model_built_outside_the_strategy_is_refused_with_the_fix(tiny_cnn, tiny_image_data):
    strategy = distribute.strategy("cpu")
    outside = kft.build_classifier("tiny_cnn", data=tiny_image_data)
    with pytest.raises(distribute.DistributeError, match=r"built under _DefaultDistributionStrategy but is asked to "
                                                         r"train under OneDeviceStrategy.*Leave strategy= out"):
        kft.fine_tune(outside, tiny_image_data, epochs=1, strategy=strategy, verbose=0)
    inside = kft.build_classifier("tiny_cnn", data=tiny_image_data, strategy=strategy, trainable="top:1")
    history = kft.fine_tune(inside, tiny_image_data, epochs=1, warmup_epochs=1, strategy=strategy, verbose=0)
    assert history.history["phase"] == [1, 2]


def test_the_keras_idiom_trains_under_the_strategy_the_model_was_built_in(tiny_cnn, tiny_image_data):
    """`with strategy.scope(): build` then `fine_tune(model, data)`: the strategy comes from the model."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = kft.build_classifier("tiny_cnn", data=tiny_image_data, trainable="top:1", seed=0)
    history = kft.fine_tune(model, tiny_image_data, epochs=1, warmup_epochs=1, verbose=0)
    assert history.history["phase"] == [1, 2]
    assert distribute.strategy_of(model) is strategy


def test_tuning_env_names_chief_and_workers():
    assert distribute.tuning_env("chief", "10.0.0.1", 8000) == {
        "KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert distribute.tuning_env("worker", worker_index=3)["KERASTUNER_TUNER_ID"] == "tuner3"
    with pytest.raises(distribute.DistributeError, match="role must be 'chief' or 'worker'"):
        distribute.tuning_env("ps")
    with pytest.raises(distribute.DistributeError, match="oracle_port must be a port number"):
        distribute.tuning_env("chief", oracle_port=70000)


# === Real processes on loopback ===


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run(processes, logs, timeout):
    """Waits for every process; kills them all on timeout; fails with the logs of any that failed."""
    deadline = time.time() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, log in zip(processes, logs):
        assert process.returncode == 0, f"{log.name} (exit {process.returncode}):\n" + log.read_text()[-4000:]


def _start(args, env, log):
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, str(JOB), *args], env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT)


def test_mirrored_over_two_logical_cpus_follows_the_default_loss_curve(tmp_path):
    log = tmp_path / "mirrored.log"
    _run([_start(["mirrored", str(tmp_path)], {}, log)], [log], timeout=240)
    result = json.loads((tmp_path / "mirrored.json").read_text())
    assert result["replicas"] == 2
    assert result["batch"] == [16, 32]  # global unless scale_batch=True, then per replica
    assert result["mirrored"]["phase"] == result["default"]["phase"] == [1, 1, 2, 2]
    # Tolerance: a partial last batch is split unevenly over the replicas, whose mean losses are then averaged.
    np.testing.assert_allclose(result["mirrored"]["loss"], result["default"]["loss"], rtol=1e-3)
    np.testing.assert_allclose(result["mirrored"]["val_loss"], result["default"]["val_loss"], rtol=1e-3)


def test_two_workers_train_to_identical_weights_and_only_the_chief_exports(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    logs = [tmp_path / f"worker_{i}.log" for i in range(2)]
    processes = [_start(["worker", str(tmp_path), str(i)],
                        {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
                        logs[i]) for i in range(2)]
    _run(processes, logs, timeout=300)
    reports = [json.loads((tmp_path / f"worker_{i}.json").read_text()) for i in range(2)]
    assert [r["strategy"] for r in reports] == ["CollectiveAllReduceStrategy"] * 2
    assert [r["replicas"] for r in reports] == [2, 2]
    assert [r["chief"] for r in reports] == [True, False]
    assert reports[0]["history"]["loss"] == reports[1]["history"]["loss"]
    assert reports[0]["history"]["phase"] == [1, 1, 2, 2]
    first, second = np.load(tmp_path / "weights_0.npz"), np.load(tmp_path / "weights_1.npz")
    assert len(first.files) > 0
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])
    # Checkpoints: the chief's where asked, the other worker's in its own sub-folder.
    assert (tmp_path / "checkpoint" / "run.json").exists()
    assert (tmp_path / "checkpoint" / "workers" / "worker_1" / "run.json").exists()
    # One export: the chief's; the other worker wrote to a scratch folder and removed it.
    assert sorted(os.listdir(tmp_path / "export")) == ["labels.txt", "model.keras", "model_card.json"]
    reloaded = keras.models.load_model(tmp_path / "export" / "model.keras")
    np.testing.assert_allclose(reloaded.get_weights()[-1], first[first.files[-1]], atol=0)
    # Multi-task (a class and a regression level some rows miss): the same weights on both workers, each target
    # trained and scored.
    assert reports[0]["multi_task"] == reports[1]["multi_task"]
    assert {"val_bright_accuracy", "val_level_mae"} <= set(reports[0]["multi_task"])
    assert reports[0]["multi_task"]["loss"][-1] < reports[0]["multi_task"]["loss"][0]
    first, second = np.load(tmp_path / "multi_task_weights_0.npz"), np.load(tmp_path / "multi_task_weights_1.npz")
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])


@pytest.mark.extended
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to record the files each worker opens")
def test_two_workers_on_tfrecord_shards_each_read_only_their_files_and_end_identical(tmp_path):
    import conftest

    conftest.brightness_data(128).to_tfrecord(tmp_path / "shards", shards=2)  # equal halves: 44 + 44 train
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    logs = [tmp_path / f"worker_{i}.log" for i in range(2)]
    traces = [tmp_path / f"openat_{i}.trace" for i in range(2)]
    processes = []
    for i in range(2):  # strace records every file the worker (any of its threads) opens
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        with open(logs[i], "w") as out:
            processes.append(subprocess.Popen(
                ["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(traces[i]), sys.executable, str(JOB),
                 "records", str(tmp_path), str(i)],
                env={**os.environ, "TF_CONFIG": tf_config}, stdout=out, stderr=subprocess.STDOUT))
    _run(processes, logs, timeout=300)
    opened = [sorted({os.path.basename(line.split('"')[1]) for line in trace.read_text().splitlines()
                      if ".tfrecord" in line and "= -1" not in line}) for trace in traces]
    assert opened == [["train-00000-of-00002.tfrecord", "validation-00000-of-00002.tfrecord"],
                      ["train-00001-of-00002.tfrecord", "validation-00001-of-00002.tfrecord"]]
    for i, log in enumerate(logs):  # fine_tune's feature cache (both phases' cuts) holds each worker's own shard
        text = log.read_text()
        assert f"worker {i} of 2 reads its shard: 44 of 88 train, 10 of 20 validation" in text
        assert re.search(r"computed the features at frozen \(.*\), top:1 \(.*\) over 44 train \+ 10 validation", text)
    reports = [json.loads((tmp_path / f"worker_{i}.json").read_text()) for i in range(2)]
    assert [r["replicas"] for r in reports] == [2, 2]
    assert reports[0]["history"]["phase"] == [1, 1, 2, 2]
    for key in ("loss", "val_loss"):  # reduced across the workers
        assert reports[0]["history"][key] == reports[1]["history"][key]
    first, second = np.load(tmp_path / "weights_0.npz"), np.load(tmp_path / "weights_1.npz")
    assert len(first.files) > 0
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])


@pytest.mark.extended
def test_keras_tuner_chief_and_two_workers_share_one_search(tmp_path):
    port = _free_ports(1)[0]
    logs = [tmp_path / name for name in ("chief.log", "worker_0.log", "worker_1.log")]
    chief = _start(["tune", str(tmp_path)], distribute.tuning_env("chief", "127.0.0.1", port), logs[0])
    deadline = time.time() + 180  # the oracle listens before the workers ask it for trials
    while True:
        assert chief.poll() is None, logs[0].read_text()[-3000:]
        assert time.time() < deadline, "the chief did not listen in 3 minutes"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    workers = [_start(["tune", str(tmp_path)], distribute.tuning_env("worker", "127.0.0.1", port, worker_index=i),
                      logs[i + 1]) for i in range(2)]
    _run([chief, *workers], logs, timeout=900)  # under a loaded CI it took over 400 s once
    trials = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/trial_*/kerasft_trial.json")]
    assert len(trials) == 6
    assert {t["tuner_id"] for t in trials} == {"tuner0", "tuner1"}  # both workers trained trials
    for log in logs[1:]:  # each worker computed the feature cache once
        assert log.read_text().count("kerasft: computed the features") == 1
    result = json.loads((tmp_path / "chief.json").read_text())
    assert result["trials"] == 6
    assert result["accuracy"] > 0.5  # the chief's best_models() works and learned 'cat' vs 'dog'
