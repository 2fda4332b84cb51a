"""
Title: The same fine-tuning on one CPU, several GPUs, a TPU or several machines
Description: tf.distribute strategies, global batch sizes, mixed precision and a KerasTuner cluster, with one script.

kerasft trains on TensorFlow's own distributed engine. This script fine-tunes
all-MiniLM-L6-v2 on BBC News; what it runs on is decided by the machine and
the environment, not by the code:

| where | how to start it |
|---|---|
| this CPU, or one GPU | `python recipes/distributed_training.py` |
| all GPUs of one machine | the same: `strategy()` finds them (MirroredStrategy) |
| a TPU VM | `TPU_NAME=local python recipes/distributed_training.py` |
| two machines | on each, `TF_CONFIG` naming both and this one's index (MultiWorkerMirroredStrategy) |
| a tuning cluster | `KERASTUNER_*` variables: one chief, any number of workers (KerasTuner's own mode) |

The README's "Distribution" section gives the exact command lines. Set
`KERASFT_SMOKE=1` to run on a small subset in about a minute.
"""

import os

import kerasft as kft

"""
## The strategy, first

A multi-worker strategy must exist before TensorFlow runs anything, so it is
the first thing made. `strategy()` picks TPUStrategy when a TPU resolves,
MultiWorkerMirroredStrategy when `TF_CONFIG` names a cluster, MirroredStrategy
for several GPUs, and TensorFlow's default strategy otherwise.
"""

strategy = kft.distribute.strategy()
print(f"strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s); "
      f"precision: {kft.distribute.precision_policy(strategy=strategy)}; chief: {kft.distribute.is_chief(strategy)}")

SMOKE = os.environ.get("KERASFT_SMOKE") == "1"
OUTPUT = os.environ.get("KERASFT_OUTPUT", "saved_models/bbc_news_distributed")
SEARCH_DIRECTORY = os.environ.get("KERASFT_SEARCH_DIR", "runs")  # shared storage in a tuning cluster

data = kft.samples.bbc_news(seed=0)
if SMOKE:
    data = data.subset(train=64, validation=32, test=32, seed=0)

"""
## A tuning cluster (when `KERASTUNER_TUNER_ID` is set)

In KerasTuner's chief/worker mode the chief serves trials and trains
nothing, and each worker asks it for trials, computes the frozen features
once, and trains its trials; every process runs this same call on a shared
`directory`. `kft.distribute.tuning_env("worker", host, port, worker_index=i)`
returns the variables to set.
"""

if "KERASTUNER_TUNER_ID" in os.environ:
    search = kft.tune(data, backbone="minilm_l6", tuner="random", max_trials=4 if SMOKE else 20, epochs=10,
                      directory=SEARCH_DIRECTORY, space={"trainable": "frozen"},
                      sequence_length=64 if SMOKE else 128, strategy=strategy)
    if os.environ["KERASTUNER_TUNER_ID"] == "chief":
        print(search.summary())
    raise SystemExit

"""
## Build under the strategy, train with a global batch

Variables must be created under the strategy's scope: `build_classifier`
does that when given `strategy=`. Precision follows the devices (`"auto"`:
mixed_float16 on GPUs, mixed_bfloat16 on TPUs, float32 on CPU, where mixed
precision is slower); the output layer stays float32.

`batch_size` is the global batch, split over the replicas; `scale_batch=True`
keeps 32 examples per replica however many there are.
"""

model = kft.build_classifier("minilm_l6", data=data, trainable="top:1", sequence_length=64 if SMOKE else 128,
                             strategy=strategy, precision="auto")
kft.fine_tune(model, data, epochs=1, warmup_epochs=5 if SMOKE else 10, batch_size=32, scale_batch=True,
              strategy=strategy)
result = kft.evaluate(model, data)
print(result.summary())

"""
## Export: every worker calls it, the chief's copy is kept

Saving runs collective operations, so every worker must call `export`; the
non-chief workers write to a scratch folder that is removed after
(TensorFlow's documented pattern).
"""

exported = kft.export(model, OUTPUT, data=data, metrics=result)
if kft.distribute.is_chief(strategy):
    print(f"test accuracy {result['accuracy']:.4f}; exported {exported.keras} and SavedModel version "
          f"{exported.version}")
