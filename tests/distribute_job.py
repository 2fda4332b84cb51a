"""One process of test_distribute's multi-process tests: a strategy must be set up before TensorFlow starts.

Usage: python tests/distribute_job.py <job> <output folder> [index]
  mirrored   fine-tune the tiny CNN under the default strategy and under a MirroredStrategy over two
             logical CPUs; save both loss curves to <out>/mirrored.json
  worker     one worker of a MultiWorkerMirroredStrategy (TF_CONFIG set by the caller): fine-tune the
             tiny CNN on its uneven share of the examples, save its weights to <out>/weights_<index>.npz,
             export to <out>/export; then a two-target tiny CNN (a class, and a regression level that
             some rows miss), its weights to <out>/multi_task_weights_<index>.npz
  tune       one process of a KerasTuner chief/worker search (KERASTUNER_* set by the caller) over
             <out>/runs; the chief writes <out>/chief.json with the best model's predictions
  records    one worker of a MultiWorkerMirroredStrategy fine-tuning the tiny CNN (`top:1`: the feature cache of
             its own shard in both phases) on the TFRecord shards in <out>/shards; save its weights to
             <out>/weights_<index>.npz
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

job, out = sys.argv[1], sys.argv[2]
if job == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import conftest  # noqa: E402
import kerasft as kft  # noqa: E402

strategy = kft.distribute.strategy()  # first thing: a multi-worker strategy must come before any TF work


def train(data, strategy, checkpoint_dir=None):
    keras.utils.set_random_seed(0)  # the same initial weights in every run and on every worker
    model = kft.build_classifier("tiny_cnn", data=data, trainable="top:1", head=kft.Head(dropout=0.0),
                                 strategy=strategy)
    history = kft.fine_tune(model, data, epochs=2, warmup_epochs=2, batch_size=16, patience=0, verbose=0,
                            strategy=strategy, checkpoint_dir=checkpoint_dir)
    return model, history.history


conftest.tiny_cnn_spec()
if job == "mirrored":
    data = conftest.brightness_data(96)
    mirrored = kft.distribute.strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    _, default_curve = train(data, None)
    _, mirrored_curve = train(data, mirrored)
    with open(os.path.join(out, "mirrored.json"), "w") as f:
        json.dump({"replicas": mirrored.num_replicas_in_sync, "default": default_curve, "mirrored": mirrored_curve,
                   "batch": [kft.distribute.scaled_batch_size(16, mirrored, scale_batch=s) for s in (False, True)]},
                  f)
elif job == "worker":
    index = int(sys.argv[3])
    # 65 train examples: worker 0 caches 33 (5 batches of 8), worker 1 32 (4) and repeats one to keep in step
    single = conftest.brightness_data(93)
    model, history = train(single, strategy, checkpoint_dir=os.path.join(out, "checkpoint"))
    np.savez(os.path.join(out, f"weights_{index}.npz"), *model.get_weights())
    exported = kft.export(model, os.path.join(out, "export"), formats=("keras",))
    # Multi-task: a class and a brightness level (missing on every fifth image) from one backbone, two heads.
    images = np.concatenate([single.inputs(split) for split in kft.data.SPLITS])
    means = images.mean(axis=(1, 2, 3))
    level = np.where(np.arange(len(images)) % 5 == 0, np.nan, means / 255)
    tasks = kft.data.from_arrays(images, {"bright": (means > 115).astype(int), "level": level},
                                 task={"level": "regression"}, seed=0)
    keras.utils.set_random_seed(0)
    multi = kft.build_classifier("tiny_cnn", data=tasks, trainable="top:1", head=kft.Head(dropout=0.0),
                                 strategy=strategy)
    multi_history = kft.fine_tune(multi, tasks, epochs=2, warmup_epochs=2, batch_size=16, patience=0, verbose=0,
                                  strategy=strategy).history
    np.savez(os.path.join(out, f"multi_task_weights_{index}.npz"), *multi.get_weights())
    with open(os.path.join(out, f"worker_{index}.json"), "w") as f:
        json.dump({"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                   "chief": kft.distribute.is_chief(strategy), "history": history, "multi_task": multi_history}, f)
elif job == "records":
    index = int(sys.argv[3])
    data = kft.data.from_tfrecord(os.path.join(out, "shards"))
    keras.utils.set_random_seed(0)
    model = kft.build_classifier("tiny_cnn", data=data, trainable="top:1", head=kft.Head(dropout=0.0),
                                 strategy=strategy)
    history = kft.fine_tune(model, data, epochs=2, warmup_epochs=2, batch_size=16, patience=0, verbose=1,
                            class_weight={0: 1.0, 1: 2.0})  # the strategy: the model's; weights ride in the batches
    np.savez(os.path.join(out, f"weights_{index}.npz"), *model.get_weights())
    with open(os.path.join(out, f"worker_{index}.json"), "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync, "history": history.history}, f)
elif job == "tune":
    conftest.tiny_bert_spec("tiny_bert", conftest.TINY_VOCAB)
    texts = [f"the {'cat' if i % 2 else 'dog'} {conftest.TINY_VOCAB[5 + i % 15]} sat {i}" for i in range(80)]
    data = kft.data.from_arrays(texts, ["cats" if i % 2 else "dogs" for i in range(80)], seed=0)
    class Slow(keras.callbacks.Callback):  # a trial takes seconds, so one worker cannot take all six alone
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(1.0)

    search = kft.tune(data, "tiny_bert", tuner="random", max_trials=6, epochs=3, directory=os.path.join(out, "runs"),
                      space={"trainable": "frozen"}, callbacks=[Slow()], verbose=1)
    if os.environ["KERASTUNER_TUNER_ID"] == "chief":
        best = search.best_models(1)[0]
        with open(os.path.join(out, "chief.json"), "w") as f:
            json.dump({"trials": len(search.results()),
                       "accuracy": kft.evaluate(best, data)["accuracy"]}, f)
