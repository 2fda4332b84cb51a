"""tf.distribute strategies, mixed precision and KerasTuner's chief/worker mode, for kerasft's training calls.

kerasft never creates a strategy behind the user's back: `strategy()` makes
one, and `build_classifier`, `fine_tune`, `tune`, `ensemble` and `distill`
take it as `strategy=` and build and train under its scope.

```python
strategy = kft.distribute.strategy()            # TPU, several GPUs, TF_CONFIG cluster, or default
model = kft.build_classifier("minilm_l6", data=data, strategy=strategy)
kft.fine_tune(model, data, strategy=strategy, batch_size=32, scale_batch=True)
```
Batch sizes are global (split across replicas); `scale_batch=True` multiplies
them by the replica count. Precision is chosen per device ("auto": float32 on
CPU, where mixed precision is slower, mixed_float16 on GPU, mixed_bfloat16 on
TPU) and set only while a classifier is built. On a CPU with AMX bfloat16 units,
training a transformer runs oneDNN's bfloat16 rewrite of the training graph
(`cpu_bfloat16`): the weights, the saved files and every prediction stay float32.
"""

import contextlib
import functools
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from kerasft import keras_internals

KINDS = ("auto", "default", "cpu", "gpu", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


class DistributeError(ValueError):
    """A strategy or precision was asked for that this machine or this call cannot give."""


# === Strategies ===


def strategy(kind="auto", tpu=None, devices=None):
    """Returns the `tf.distribute.Strategy` to train under.

    Args:
        kind: str. `"auto"` picks, in order: `TPUStrategy` when a TPU cluster
            resolves (`tpu=` or the `TPU_NAME` environment), `MultiWorkerMirroredStrategy`
            when `TF_CONFIG` names a cluster of several tasks, `MirroredStrategy` for
            several GPUs, else the default strategy. Explicit kinds: `"default"`
            (no distribution), `"cpu"` (one CPU device), `"gpu"` (one GPU),
            `"mirrored"` (all local GPUs, or `devices=`), `"multi_worker"`
            (the cluster `TF_CONFIG` names), `"tpu"`.
        tpu: str or None. TPU address or name for `"tpu"` (`"local"` on a TPU VM).
        devices: list of str or None. Devices for `"mirrored"`, e.g. two
            logical CPUs `["/cpu:0", "/cpu:1"]`.

    Returns:
        A `tf.distribute.Strategy`. Its `num_replicas_in_sync` is the number
        of replicas a global batch is split over.

    Example:
    >>> strategy = kft.distribute.strategy("mirrored")
    >>> strategy.num_replicas_in_sync
    2
    """
    gpus = len(tf.config.list_physical_devices("GPU"))  # logical devices would start the runtime too early
    chosen = resolve_kind(kind, tf_config=os.environ.get("TF_CONFIG"), num_gpus=gpus,
                          tpu=tpu or os.environ.get("TPU_NAME"))
    if chosen == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or os.environ.get("TPU_NAME"))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            if kind == "auto":  # TPU_NAME set on a machine that cannot reach it: fall back
                warnings.warn(f"kerasft: no TPU resolved ({error}); using the default strategy.")
                return tf.distribute.get_strategy()
            raise DistributeError(f"No TPU could be resolved from tpu={tpu!r}: {error}") from error
        return tf.distribute.TPUStrategy(resolver)
    if chosen == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:  # "Collective ops must be configured at program startup"
            raise DistributeError(
                "A multi-worker strategy must be created before TensorFlow runs anything in this process "
                f"({error}): call kft.distribute.strategy() first thing in the script.") from error
    if chosen == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if chosen == "gpu":
        if not gpus:
            raise DistributeError("strategy('gpu') needs a GPU, and TensorFlow sees none on this machine.")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if chosen == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    return tf.distribute.get_strategy()


def resolve_kind(kind="auto", tf_config=None, num_gpus=0, tpu=None):
    """Decides which strategy `strategy(kind)` builds, from what the machine shows (pure; no devices touched).

    Args:
        kind: str. One of `KINDS`.
        tf_config: str or None. The `TF_CONFIG` environment value.
        num_gpus: int. GPUs TensorFlow sees.
        tpu: str or None. A TPU address or name, if any.

    Returns:
        One of `"tpu"`, `"multi_worker"`, `"mirrored"`, `"gpu"`, `"cpu"`, `"default"`.
    """
    if kind not in KINDS:
        raise DistributeError(f"Unknown strategy kind {kind!r}; expected one of {KINDS}.")
    cluster_tasks = _cluster_tasks(tf_config)
    if kind == "multi_worker" and cluster_tasks < 1:
        raise DistributeError("strategy('multi_worker') needs TF_CONFIG naming the cluster, e.g. "
                              '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                              '"task": {"type": "worker", "index": 0}}')
    if kind != "auto":
        return kind
    if tpu:
        return "tpu"
    if cluster_tasks > 1:
        return "multi_worker"
    if num_gpus > 1:
        return "mirrored"
    return "default"


def _cluster_tasks(tf_config):
    if not tf_config:
        return 0
    try:
        cluster = json.loads(tf_config)["cluster"]
        return sum(len(tasks) for job, tasks in cluster.items() if job in ("chief", "worker"))
    except (ValueError, KeyError, TypeError) as error:
        raise DistributeError(f"TF_CONFIG is not a valid cluster description ({error}): {tf_config!r}") from None


def is_multi_worker(strategy):
    """True for a `MultiWorkerMirroredStrategy` that spans several workers."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and keras_internals.in_multi_worker_mode(strategy))


def is_chief(strategy=None):
    """True on the one worker that writes checkpoints and exports (always True off a cluster)."""
    strategy = strategy or tf.distribute.get_strategy()
    # The chief, else worker 0 of a cluster without one: the first input pipeline (`worker_share`).
    return not is_multi_worker(strategy) or (strategy.cluster_resolver.task_type in ("chief", "worker")
                                             and worker_share(strategy)[1] == 0)


@contextlib.contextmanager
def chief_path(path, strategy=None):
    """Yields where this worker writes `path`: the path itself on the chief, a scratch folder elsewhere.

    TensorFlow's documented multi-worker pattern: every worker runs the same
    save (collective ops inside it need all of them) but only the chief's
    copy is kept; the others write beside a temporary folder, removed after.
    """
    if is_chief(strategy):
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="kerasft-worker-")
    try:
        yield os.path.join(scratch, os.path.basename(os.path.normpath(path)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def worker_path(path, strategy=None):
    """Where this worker keeps files it alone reads back (checkpoints): `path` on the chief, a sub-folder elsewhere.

    Every worker of a multi-worker strategy holds the same synchronized state
    and must be able to resume from its own copy; the chief's copy stays where
    the user looks, the others go to `<path>/workers/<task type>_<index>`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return Path(path)
    resolver = strategy.cluster_resolver
    return Path(path) / "workers" / f"{resolver.task_type}_{resolver.task_id}"


def worker_share(strategy):
    """`(workers, this worker's index)`: how a multi-worker strategy shares input, as `tf.distribute` numbers the
    input pipelines (the chief first, then the workers); `(1, 0)` off a cluster."""
    if not is_multi_worker(strategy):
        return 1, 0
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    return chiefs + workers, (0 if resolver.task_type == "chief" else chiefs + resolver.task_id)


def per_worker_dataset(strategy, dataset, largest, batch_size):
    """A distributed dataset in which each worker reads its own `dataset` (batches for one replica each) and
    every worker takes the same number of steps.

    The all-reduce of a step needs every worker: a worker whose share is smaller than `largest`, the most
    examples any worker holds, repeats its first batches up to the steps the largest share takes.

    Args:
        strategy: tf.distribute.Strategy. A multi-worker one.
        dataset: tf.data.Dataset. This worker's batches of `batch_size`, in the order to read them.
        largest: int. The most examples any worker's share holds.
        batch_size: int. Examples per batch (per replica).
    """
    replicas = strategy.num_replicas_in_sync // worker_share(strategy)[0]  # on this worker: one batch each a step
    steps = max(1, -(-largest // (batch_size * replicas)))
    local = dataset.repeat().take(steps * replicas).prefetch(tf.data.AUTOTUNE)
    return strategy.distribute_datasets_from_function(lambda context: local)


def scaled_batch_size(batch_size, strategy=None, scale_batch=False):
    """The global batch size: `batch_size`, times the replica count when `scale_batch`."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DistributeError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    replicas = (strategy or tf.distribute.get_strategy()).num_replicas_in_sync
    if scale_batch:
        return batch_size * replicas
    if batch_size < replicas:
        raise DistributeError(f"The global batch size {batch_size} is smaller than the {replicas} replicas it is "
                              "split over; pass a larger batch_size or scale_batch=True.")
    return batch_size


def strategy_of(model, strategy=None):
    """The strategy to train `model` under: `strategy`, else the one its variables were created under.

    A Keras user builds under `with strategy.scope():` and calls `fine_tune(model, data)`; the model
    remembers its strategy (`model.distribute_strategy`), so it is taken from there.

    Raises:
        DistributeError: `strategy` is not the one the model was built under.
    """
    built_under = model.distribute_strategy
    if strategy is None:
        return None if built_under is tf.distribute.get_strategy() else built_under
    check_built_under(model, strategy)
    return strategy


def check_built_under(model, strategy):
    """Raises unless `model`'s variables were created under `strategy` (a strategy cannot adopt them later)."""
    if strategy is None or not model.weights:
        return
    if not strategy.extended.variable_created_in_scope(model.weights[0].value):  # the tf.Variable inside
        built_under = type(model.distribute_strategy).__name__
        raise DistributeError(
            f"{model.name} was built under {built_under} but is asked to train under {type(strategy).__name__} "
            "(a strategy cannot adopt variables created outside it). Leave strategy= out to train under the "
            "model's own, or build the model under the other: kft.build_classifier(..., strategy=strategy) or "
            "`with strategy.scope(): model = kft.build_classifier(...)`.")


@contextlib.contextmanager
def training_scope(strategy=None):
    """Enters `strategy.scope()` (if any) and, for several workers, the Keras 3 fix
    (`kerasft.keras_internals.multi_worker_fix`, keras-team/keras#20585)."""
    if strategy is None:
        yield
        return
    fix = keras_internals.multi_worker_fix() if is_multi_worker(strategy) else contextlib.nullcontext()
    with strategy.scope(), fix:
        yield


# === Precision ===


def precision_policy(precision="auto", strategy=None, devices=None):
    """The Keras dtype policy name `precision` means on the devices that will train.

    `"auto"`: `mixed_bfloat16` on TPUs, `mixed_float16` on GPUs, else
    `float32` (on CPU mixed precision runs slower: a MobileNetV3 step took
    0.24 s in bfloat16 against 0.13 s in float32).

    Args:
        precision: str. One of `PRECISIONS`.
        strategy: tf.distribute.Strategy or None. Its replicas' devices decide.
        devices: list of str or None. Device names that decide instead (for
            the default strategy: the GPUs TensorFlow sees, else the CPU).
    """
    if precision not in PRECISIONS:
        raise DistributeError(f"Unknown precision {precision!r}; expected one of {PRECISIONS}.")
    if precision != "auto":
        return precision
    if devices is None:
        strategy = strategy or tf.distribute.get_strategy()
        try:
            devices = list(strategy.extended.worker_devices)  # the replicas' device names ("...TPU:0", "/gpu:0")
        except RuntimeError:  # the default strategy has none: whatever TensorFlow places on
            devices = [d.name for d in tf.config.list_physical_devices("GPU")] or ["CPU"]
    names = " ".join(devices).upper()  # "/job:worker/replica:0/task:0/device:GPU:0", "/gpu:0", ...
    if "TPU" in names:
        return "mixed_bfloat16"
    return "mixed_float16" if "GPU" in names else "float32"


def cpu_bfloat16(setting, model, strategy=None):
    """Whether training `model` runs oneDNN's bfloat16 rewrite of the training graph.

    The rewrite (TensorFlow's `auto_mixed_precision_onednn_bfloat16`) computes
    matmuls and the ops around them in bfloat16 on the CPU's AMX units and keeps
    the variables in float32, so nothing of the model changes but how fast it
    trains. Measured on this project's 2-core Xeon (bench/cpu_bfloat16.py): MiniLM-L6
    training steps 1.45x faster, its forward pass 1.54x; EfficientNet-Lite0
    (depthwise convolutions) trains 0.57x as fast, so "auto" leaves convolution
    networks alone.

    Args:
        setting: "auto", True or False (checked by `check_cpu_bfloat16` where
            the work starts). "auto": on when every replica is a CPU with AMX
            bfloat16 units (Linux `amx_bf16`) and `model` is a transformer (has
            attention layers).
        model: keras.Model. What trains.
        strategy: tf.distribute.Strategy or None. Its devices decide.
    """
    if setting != "auto":
        return setting
    return (has_amx_bfloat16() and precision_policy("auto", strategy) == "float32"
            and any(isinstance(layer, keras.layers.MultiHeadAttention)
                    for layer in keras_internals.flatten_layers(model)))


def check_cpu_bfloat16(setting):
    """Refuses a `cpu_bfloat16` setting that is not "auto", True or False, and warns once, before any work, when
    True asks for the rewrite on a CPU without AMX bfloat16 units (it is honoured; see `cpu_bfloat16`)."""
    if not (isinstance(setting, bool) or setting == "auto"):
        raise DistributeError(f'cpu_bfloat16 is "auto", True or False. Received: cpu_bfloat16={setting!r}')
    if setting is True and not has_amx_bfloat16():
        warnings.warn("cpu_bfloat16=True on a CPU without AMX bfloat16 units (no amx_bf16 among /proc/cpuinfo's "
                      "flags): oneDNN then emulates bfloat16, which is usually slower than float32. "
                      'cpu_bfloat16="auto" trains in float32 here.', RuntimeWarning, stacklevel=3)


@functools.cache
def has_amx_bfloat16():
    """Whether this machine's CPU has AMX bfloat16 units (Linux `/proc/cpuinfo` flag `amx_bf16`)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:  # not Linux: no way to tell, so float32
        return False


@contextlib.contextmanager
def cpu_bfloat16_scope(enabled):
    """Runs TensorFlow functions executed inside with oneDNN's bfloat16 rewrite when `enabled`, then puts the
    previous setting back (the option is process-wide; a function runs with the setting of its call)."""
    if not enabled:
        yield
        return
    option = "auto_mixed_precision_onednn_bfloat16"
    previous = tf.config.optimizer.get_experimental_options().get(option, False)
    tf.config.optimizer.set_experimental_options({option: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({option: previous})


@contextlib.contextmanager
def precision_scope(precision="auto", strategy=None):
    """Sets the Keras dtype policy while layers are built, then puts the previous one back."""
    policy = precision_policy(precision, strategy)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


# === KerasTuner's chief/worker mode ===


def tuning_env(role, oracle_ip="127.0.0.1", oracle_port=8000, worker_index=0):
    """The environment variables that make `kft.tune()` a chief or a worker of a distributed search.

    KerasTuner's own mode: the chief runs the oracle (it trains nothing) and
    serves trials on `oracle_ip:oracle_port`; each worker asks it for trials
    and trains them, all on one shared `directory`. Start the chief first.

    Args:
        role: str. `"chief"` or `"worker"`.
        oracle_ip: str. The chief's address, as the workers reach it.
        oracle_port: int. The chief's port.
        worker_index: int. Makes each worker's id (`tuner<index>`) unique.

    Returns:
        A dict to merge into `os.environ` (or a subprocess's `env`).

    Example:
    >>> env = {**os.environ, **kft.distribute.tuning_env("worker", "10.0.0.1", 8000, worker_index=1)}
    >>> subprocess.Popen(["python", "recipes/tune_and_ensemble.py"], env=env)
    """
    if role not in ("chief", "worker"):
        raise DistributeError(f"role must be 'chief' or 'worker'. Received: {role!r}")
    if not isinstance(oracle_port, int) or not 0 < oracle_port < 65536:
        raise DistributeError(f"oracle_port must be a port number. Received: {oracle_port!r}")
    tuner_id = "chief" if role == "chief" else f"tuner{worker_index}"
    return {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": str(oracle_ip),
            "KERASTUNER_ORACLE_PORT": str(oracle_port)}
