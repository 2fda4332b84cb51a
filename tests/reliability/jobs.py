"""Processes the reliability tests kill: `python jobs.py <job> <args...>`.

  fine_tune <checkpoint_dir> <out.json> [slow]  fine-tune the tiny CNN with a checkpoint folder (slow: 0.4 s
                                                 more per epoch, so a test can kill it mid-way); write history
  export <folder> <count>                        export the tiny CNN <count> times into one folder
  spill <examples>                               cache the tiny CNN's top:1 features of <examples> images in
                                                 kerasft's user cache ($KERASFT_CACHE_DIR; a memory budget
                                                 of 0 spills them), from a pipeline slowed so a test can kill
                                                 it mid-write; print where the cache went
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import conftest  # noqa: E402
import kerasft as kft  # noqa: E402

conftest.tiny_cnn_spec()


class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.4)


def model_for(data):
    keras.utils.set_random_seed(0)
    return kft.build_classifier("tiny_cnn", data=data, trainable="top:1", head=kft.Head(dropout=0.0))


job = sys.argv[1]
if job == "fine_tune":
    checkpoint_dir, out = sys.argv[2], sys.argv[3]
    data = conftest.brightness_data(120, dark=90, bright=150, noise=40.0)
    model = model_for(data)
    history = kft.fine_tune(model, data, epochs=6, warmup_epochs=8, batch_size=16, learning_rate=3e-3,
                            fine_tune_learning_rate=1e-3, patience=3, verbose=0,
                            callbacks=[Slow()] if "slow" in sys.argv[4:] else None,
                            checkpoint_dir=None if checkpoint_dir == "-" else checkpoint_dir)
    with open(out, "w") as f:
        json.dump({"history": history.history, "accuracy": kft.evaluate(model, data)["accuracy"]}, f)
elif job == "export":
    folder, count = sys.argv[2], int(sys.argv[3])
    data = conftest.brightness_data(120, dark=90, bright=150, noise=40.0)
    model = model_for(data)
    for _ in range(count):
        kft.export(model, folder, data=data)
elif job == "spill":
    data = conftest.brightness_data(int(sys.argv[2]))
    model = model_for(data)

    def slowly(x, y):
        def wait(*batch):
            time.sleep(0.05)
            return batch

        slow_x, slow_y = tf.numpy_function(wait, [x, y], [x.dtype, y.dtype], stateful=True)
        slow_x.set_shape(x.shape)
        slow_y.set_shape(y.shape)
        return slow_x, slow_y

    preprocessed = {split: kft.features.preprocess(model, getattr(data, split), 16, cache=False).map(slowly)
                    for split in ("train", "validation")}
    cache = kft.features.FeatureCache(model, data, cuts=["top:1"], preprocessed=preprocessed, memory_budget=0)
    print(cache.locations["top:1"])
